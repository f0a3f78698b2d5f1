"""What an epoch visits and how the learning rate moves: the sampler and the schedule factors."""

from __future__ import annotations

import math
from typing import Any, Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["EpochSampler", "poly_factor", "lr_factor"]


class EpochSampler(Sampler[Any]):
    """Seeded per-epoch order, sharded over ranks, resumable mid-epoch.

    The order of epoch e is ``randperm(n)`` from seed ``seed + e`` (or 0..n-1 without shuffle),
    padded by wrapping so every rank gets ``ceil(n / world)`` items; rank r takes every world-th
    item from r; ``set_epoch(e, start)`` skips the first ``start`` items of this rank's share.
    ``with_epoch``: yield ``(epoch, index)`` pairs (``ReferDataset`` accepts them), so persistent
    workers draw each epoch's augmentation without being told the epoch.
    """

    def __init__(self, n: int, *, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1,
                 with_epoch: bool = False) -> None:
        if n < 1:
            raise ValueError("EpochSampler needs at least one item")
        self.n, self.shuffle, self.seed, self.rank, self.world = n, shuffle, seed, rank, world_size
        self.with_epoch = with_epoch
        self.epoch, self.start = 0, 0
        self.per_rank = math.ceil(n / world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def _order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank * self.world
        order = (order * math.ceil(total / self.n))[:total]
        return order[self.rank::self.world]

    def __iter__(self) -> Iterator[Any]:
        idx = self._order()[self.start:]
        return iter([(self.epoch, i) for i in idx] if self.with_epoch else idx)

    def __len__(self) -> int:
        return max(0, self.per_rank - self.start)


def poly_factor(step: int, total_steps: int, power: float) -> float:
    """Poly decay ``(1 - step / total) ** power``, 0 from ``total`` on."""
    if total_steps <= 0:
        return 1.0
    return max(0.0, 1.0 - min(step, total_steps) / total_steps) ** power


def lr_factor(step: int, total_steps: int, power: float, warmup_steps: int = 0, time_fraction: float = 0.0, *,
              steps_per_epoch: int = 0, poly_epochs: int = 0) -> float:
    """Schedule factor of optimizer step ``step`` (0-based): linear warm-up over ``warmup_steps``,
    times a poly decay, capped by the same decay of ``time_fraction`` (the elapsed share of a time
    budget), so a run stopped by its budget still ends at a low lr and not mid-schedule.

    The decay is ``poly_factor(step, total_steps)`` per step, or, with ``steps_per_epoch`` > 0 (the
    authors' ``PolyLR`` stepped once per epoch), ``poly_factor(epoch, poly_epochs)`` for the epoch
    ``step // steps_per_epoch`` the step belongs to: constant within an epoch."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    by_time = max(0.0, 1.0 - time_fraction) ** power
    if steps_per_epoch > 0:
        decay = poly_factor(step // steps_per_epoch, poly_epochs, power)
    else:
        decay = poly_factor(step, total_steps, power)
    return warm * min(decay, by_time)
