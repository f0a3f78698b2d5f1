"""Resumable training state: checkpoints with optimizer, schedule and RNG states, and the JSON-lines log."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["save_training_state", "load_training_state", "set_rng_state", "JsonLog"]


def _rng_state() -> dict[str, Any]:
    """RNG states as weights-only-loadable values (numpy's key array becomes a tensor)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    st: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, cached = st["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available() and len(st["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(st["cuda"])


def save_training_state(path: str | os.PathLike, raw_model: Any, cfg: Any, *, optimizer: torch.optim.Optimizer,
                        scheduler: Any, scaler: torch.amp.GradScaler | None, step: int, epoch: int,
                        best: float | None) -> Path:
    """A checkpoint in ``bqnet_model.checkpoint``'s format (``Segmenter.from_checkpoint`` and
    ``--checkpoint`` read it) whose top-level ``train_state`` holds what ``--resume`` needs:
    optimizer, scheduler, AMP scaler, step, epoch, best metric, RNG states."""
    from bqnet_model.checkpoint import save_checkpoint

    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": None if scaler is None else scaler.state_dict(),
        "step": int(step),
        "epoch": int(epoch),
        "best": best,
        "rng": _rng_state(),
    }
    return save_checkpoint(path, raw_model, cfg, meta={"step": int(step), "epoch": int(epoch)},
                           extra={"train_state": state})


def load_training_state(path: str | os.PathLike, raw_model: Any) -> dict[str, Any]:
    """Load a ``save_training_state`` checkpoint's weights into ``raw_model`` (strict) and return
    its ``train_state``."""
    from bqnet_model.checkpoint import FORMAT, is_our_format, load_state_dict_into, read_checkpoint

    obj = read_checkpoint(path)
    if not is_our_format(obj):
        raise ValueError(f"{path} is not a {FORMAT} checkpoint: cannot resume from it")
    st = obj.get("train_state")
    if st is None:
        raise ValueError(f"{path} holds no training state (not written by bqnet-train); "
                         "evaluate it with --checkpoint instead")
    del obj
    load_state_dict_into(raw_model, path)
    return st


class JsonLog:
    """Append-only JSON-lines metrics log (rank 0)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def write(self, **rec: Any) -> None:
        if self.path is None:
            return
        rec = {"time": round(time.time(), 3), **rec}
        with self.path.open("a") as fh:
            fh.write(json.dumps(rec, default=float) + "\n")

