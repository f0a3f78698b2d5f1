"""DQF, Distance-aware Query Focusing: the query self-attention's receptive field narrows per layer.

BQNet's README names the module; the formula below is ours (bqnet-spec.md). IPDN's ``scg``
lets each query attend to its 8 nearest queries (by seed position) in every layer. DQF replaces
that fixed graph, in decoder layer i (i = 0..N-1), by

* a kNN graph over the queries' *current* positions c_q (the mask-weighted centres of
  ``psc.query_centres``, updated every layer) with a k that shrinks geometrically:

      k_i = round(k_end * (k_start / k_end) ** (1 - i / (N - 1)))     (k_0 = k_start, k_{N-1} = k_end)

  k_start defaults to all queries (global context in layer 1), k_end to a few (``k_end``);
* plus, optionally (``radius_end`` not None), a distance-decaying additive bias on the allowed
  pairs with a shrinking radius rho_i (same geometric schedule as PSC, from the scene diagonal
  or ``radius_start`` down to ``radius_end``):

      B_qp^i = -||c_q - c_p||^2 / (2 rho_i^2)

The allowed set always contains the query itself, so no row is empty. DQF has no learnable
parameters: it only decides which queries talk to each other and how loudly.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .psc import _pairwise_sq_dist, radius_schedule
from .query_sampling import knn_mask

__all__ = ["DistanceAwareQueryFocusing"]


class DistanceAwareQueryFocusing(nn.Module):
    """Per-layer kNN graph (shrinking k) and distance bias (shrinking radius) among queries."""

    def __init__(
        self,
        num_layers: int,
        k_end: int = 4,
        k_start: int | None = None,
        radius_end: float | None = 1.0,
        radius_start: float | None = None,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if k_end < 1 or (k_start is not None and k_start < 1):
            raise ValueError(f"DQF k must be >= 1, got start={k_start} end={k_end}")
        if (radius_end is not None and radius_end <= 0) or (radius_start is not None and radius_start <= 0):
            raise ValueError(f"DQF radii must be > 0, got start={radius_start} end={radius_end}")
        self.num_layers = num_layers
        self.k_end = k_end
        self.k_start = k_start
        self.radius_end = radius_end
        self.radius_start = radius_start

    def k_schedule(self, num_queries: int) -> list[int]:
        """k of every layer for ``num_queries`` queries (clamped to [1, num_queries])."""
        k0 = num_queries if self.k_start is None else min(self.k_start, num_queries)
        k1 = min(self.k_end, num_queries)
        out = []
        for i in range(self.num_layers):
            frac = i / max(self.num_layers - 1, 1)
            k = math.exp(math.log(k1) + (math.log(k0) - math.log(k1)) * (1.0 - frac))
            out.append(int(min(max(round(k), 1), num_queries)))
        return out

    def forward(self, layer: int, centres: Tensor, extent: Tensor) -> tuple[Tensor, Tensor | None]:
        """``allowed (T,Q,Q)`` bool and the additive ``bias (T,1,Q,Q)`` (None without radius)."""
        Q = centres.shape[1]
        k = self.k_schedule(Q)[layer]
        allowed = knn_mask(centres, k)
        if self.radius_end is None:
            return allowed, None
        start = extent if self.radius_start is None else torch.full_like(extent, self.radius_start)
        rho = radius_schedule(start, self.radius_end, layer, self.num_layers).float()
        d2 = _pairwise_sq_dist(centres, centres)
        bias = d2 * (-0.5 / rho.square()).view(-1, 1, 1)
        return allowed, bias.unsqueeze(1)
