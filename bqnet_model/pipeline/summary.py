"""The decoder's answer packed for one device -> host copy.

Per query call, everything the host needs leaves the device as one uint8 tensor: every query's
target probability (float32) and its superpoint mask thresholded at ``mask_threshold`` (bits).
Both tasks use the same layout; the selection (``selection.py``) runs on the host. The packing
uses device ops only, so it sits inside a captured CUDA graph.
"""

from __future__ import annotations

import numpy as np
import torch

from bqnet_model.model.decoder import LayerPrediction
from bqnet_model.model.heads import target_probability

__all__ = ["summarise", "summary_queries", "unpack_summary", "packbits"]


def packbits(mask: torch.Tensor) -> torch.Tensor:
    """bool (..., S) -> uint8 (..., ceil(S/8)), bit i of byte j = element 8j+i (numpy's 'little').

    Device ops only (no host tensor is made), so it can sit inside a CUDA graph.
    """
    S = mask.shape[-1]
    m = mask.to(torch.uint8)
    if S % 8:
        m = torch.nn.functional.pad(m, (0, 8 - S % 8))
    w = torch.bitwise_left_shift(torch.ones(8, dtype=torch.int32, device=mask.device),
                                 torch.arange(8, dtype=torch.int32, device=mask.device))
    return (m.reshape(*m.shape[:-1], -1, 8).to(torch.int32) * w).sum(-1).to(torch.uint8)


def _as_bytes(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous().view(torch.uint8).reshape(-1)


def summarise(pred: LayerPrediction, sp_pad: torch.Tensor, mask_threshold: float) -> torch.Tensor:
    """Target probabilities (T,Q) float32, then every query's mask ``sigmoid >= threshold`` off
    padding, (T,Q,S) bits. No host synchronisation."""
    T, Q, S = pred.masks.shape
    pad = sp_pad.expand(T, S)
    prob = target_probability(pred).float()
    on = (torch.sigmoid(pred.masks.float()) >= mask_threshold) & ~pad.unsqueeze(1)
    return torch.cat([_as_bytes(prob), packbits(on).reshape(-1)])


def _sizes(T: int, Q: int, S: int) -> tuple[int, int]:
    return T * Q * 4, T * Q * ((S + 7) // 8)


def summary_queries(size: int, T: int, S: int) -> int:
    """Q from the byte size of a summary (the host knows T and S, not the decoder's Q)."""
    per_q = sum(_sizes(T, 1, S))
    q, rem = divmod(size, per_q)
    if rem or q < 1:
        raise ValueError(f"summary of {size} bytes does not fit T={T}, S={S}")
    return q


def unpack_summary(buf: np.ndarray, T: int, S: int) -> tuple[np.ndarray, np.ndarray]:
    """Host views of ``summarise``'s parts: ``prob`` (T,Q) float32 and ``on`` (T,Q,S) bool."""
    Q = summary_queries(buf.size, T, S)
    n_prob, _ = _sizes(T, Q, S)
    prob = buf[:n_prob].view(np.float32).reshape(T, Q)
    nb = (S + 7) // 8
    on = np.unpackbits(buf[n_prob:].reshape(T, Q, nb), axis=-1, count=S, bitorder="little").astype(bool)
    return prob, on
