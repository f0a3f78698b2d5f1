"""One process or DDP under torchrun: ranks, devices and the values all ranks must share."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "shared_time_fraction"]

log = logging.getLogger("bqnet.train")


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(gpu_id: int | None) -> tuple[DistInfo, torch.device]:
    """DDP when launched by torchrun (WORLD_SIZE > 1), else one process on ``gpu_id`` or the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
        if torch.cuda.is_available():
            torch.cuda.set_device(info.local_rank)
            device = torch.device("cuda", info.local_rank)
            backend = "nccl"
        else:
            device = torch.device("cpu")
            backend = "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
        return info, device
    if torch.cuda.is_available():
        idx = 0 if gpu_id is None else gpu_id
        if not 0 <= idx < torch.cuda.device_count():
            raise ValueError(f"--gpu_id {idx} but only {torch.cuda.device_count()} CUDA device(s) are visible")
        torch.cuda.set_device(idx)
        return DistInfo(), torch.device("cuda", idx)
    if gpu_id is not None:
        log.warning("--gpu_id %s given but CUDA is not available: running on the CPU", gpu_id)
    return DistInfo(), torch.device("cpu")


def shared_time_fraction(elapsed: float, budget: float, info: DistInfo, device: torch.device) -> float:
    """Elapsed share of the time budget as rank 0 sees it, on every rank: all ranks stop at the same
    step (a rank that stopped alone would hang the others in their next all-reduce) and use the same lr."""
    frac = elapsed / budget
    if info.enabled and dist.is_initialized():
        t = torch.tensor([frac if info.main else 0.0], dtype=torch.float64, device=device)
        dist.broadcast(t, src=0)
        frac = float(t.item())
    return frac

