"""The one place that turns a device name into the device the library runs on."""

from __future__ import annotations

import logging

import torch

__all__ = ["resolve_device"]

log = logging.getLogger(__name__)


def resolve_device(device: str | torch.device, warn: bool = True) -> torch.device:
    """``torch.device``; CUDA asked for but absent falls back to the CPU (with a warning unless
    ``warn`` is False: the ROS node reports it itself). Raises ``ValueError`` for anything else."""
    try:
        dev = torch.device(device.strip() if isinstance(device, str) else device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(f"invalid device {device!r} (use 'cpu', 'cuda' or 'cuda:N')") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            if warn:
                log.warning("device %r requested but CUDA is not available: running on the CPU", str(device))
            return torch.device("cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif dev.type != "cpu":
        raise ValueError(f"unsupported device {device!r} (use 'cpu' or 'cuda')")
    return dev
