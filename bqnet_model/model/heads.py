"""Inference selection as the authors' ``predict_by_feat``: which queries answer the sentence.

* 3D-RES (``select_res``): softmax of the indicator logits; the query with the highest target
  probability (the first one on ties, as ``argmax``); its mask sigmoid over superpoints. Points
  inherit their superpoint's value; IoU binarises at sigmoid >= 0.5 (``official_iou``).
* 3D-GRES (``select_gres``): every query whose indicator argmax is "target" (a tie goes to "not
  target", as ``argmax``); the union is the max of their mask LOGITS; no such query, or fewer
  than ``min_points`` points with sigmoid strictly above the mask threshold (counted with the
  superpoint sizes the caller passes), means "no target".

Both are vectorized over sentences and queries; only the final per-sentence list of query ids
is built with a loop over sentences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from .decoder import LayerPrediction

__all__ = ["ResSelection", "GresSelection", "select_res", "select_gres", "target_probability", "official_iou"]


def _check_pred(pred: LayerPrediction) -> tuple[int, int, int]:
    if not isinstance(pred, LayerPrediction):
        raise TypeError(f"expected a LayerPrediction, got {type(pred).__name__}")
    if pred.masks.dim() != 3 or pred.indi.dim() != 3 or pred.indi.shape[-1] != 2:
        raise ValueError(
            f"expected masks (T,Q,S) and indi (T,Q,2), got {tuple(pred.masks.shape)} and {tuple(pred.indi.shape)}"
        )
    T, Q, S = pred.masks.shape
    if tuple(pred.indi.shape[:2]) != (T, Q):
        raise ValueError(f"masks {tuple(pred.masks.shape)} and indi {tuple(pred.indi.shape)} disagree on (T, Q)")
    return T, Q, S


def _check_pad(sp_pad: Tensor | None, T: int, S: int) -> Tensor | None:
    if sp_pad is None:
        return None
    if not isinstance(sp_pad, Tensor) or sp_pad.dtype != torch.bool or tuple(sp_pad.shape) != (T, S):
        raise ValueError(f"sp_pad must be a bool tensor of shape {(T, S)}")
    return sp_pad


def target_probability(pred: LayerPrediction) -> Tensor:
    """P(target) of every query, ``(T, Q)`` (softmax of the indicator logits)."""
    return pred.indi.float().softmax(-1)[..., 1]


class ResSelection(NamedTuple):
    """``query (T,)``: the chosen query; ``sp_prob (T,S)``: its mask sigmoid (0 on padding)."""

    query: Tensor
    sp_prob: Tensor


@torch.no_grad()
def select_res(pred: LayerPrediction, sp_pad: Tensor | None = None) -> ResSelection:
    """3D-RES: the query with the highest target probability and its superpoint probabilities."""
    T, Q, S = _check_pred(pred)
    sp_pad = _check_pad(sp_pad, T, S)
    best = target_probability(pred).argmax(dim=1)  # (T,)
    logits = pred.masks.gather(1, best.view(T, 1, 1).expand(T, 1, S)).squeeze(1)
    prob = torch.sigmoid(logits.float())
    if sp_pad is not None:
        prob = prob.masked_fill(sp_pad, 0.0)
    return ResSelection(query=best, sp_prob=prob)


@dataclass
class GresSelection:
    """One sentence's GRES answer: ``queries (K,)`` positive query ids (empty when not found),
    ``sp_prob (S,)`` union (max) of their mask sigmoids (zeros when not found), ``found``,
    ``num_points``: points strictly above the mask threshold (superpoints when no sizes were
    given); ``union_prob (S,)``: the union before the "found" decision (zeros when no query is
    positive; what the official code scores IoU on when too few points are on)."""

    queries: Tensor
    sp_prob: Tensor
    found: bool
    num_points: int
    union_prob: Tensor | None = None


@torch.no_grad()
def select_gres(
    pred: LayerPrediction,
    sp_pad: Tensor | None = None,
    sp_sizes: Tensor | None = None,
    min_points: int = 50,
    mask_threshold: float = 0.5,
) -> list[GresSelection]:
    """3D-GRES: every query whose indicator argmax is "target", the union of their masks.

    ``sp_sizes``: points per superpoint, ``(S,)`` or ``(T,S)``; with it the ``min_points`` rule
    counts points, without it superpoints. Fewer than ``min_points`` strictly above
    ``mask_threshold`` (or no positive query) gives ``found=False``, no queries and an all-zero
    ``sp_prob`` (``union_prob`` keeps the union).
    """
    T, Q, S = _check_pred(pred)
    sp_pad = _check_pad(sp_pad, T, S)
    if isinstance(min_points, bool) or not isinstance(min_points, int) or min_points < 0:
        raise ValueError(f"min_points must be a non-negative integer, got {min_points!r}")
    if not 0.0 < mask_threshold < 1.0:
        raise ValueError(f"mask_threshold must be in (0, 1), got {mask_threshold}")
    if sp_sizes is None:
        sizes = torch.ones(1, S, device=pred.masks.device)
    else:
        if not isinstance(sp_sizes, Tensor) or tuple(sp_sizes.shape) not in ((S,), (T, S)):
            raise ValueError(f"sp_sizes must have shape ({S},) or ({T}, {S})")
        sizes = sp_sizes.reshape(-1, S).to(pred.masks.device, torch.float32)

    positive = pred.indi.argmax(dim=-1) == 1  # (T, Q)
    logits = pred.masks.float().masked_fill(~positive.unsqueeze(-1), float("-inf"))
    union_all = torch.sigmoid(logits.amax(dim=1))  # (T, S): sigmoid of the max logit, 0 when none
    if sp_pad is not None:
        union_all = union_all.masked_fill(sp_pad, 0.0)
    npts = ((union_all > mask_threshold) * sizes).sum(-1)  # (T,)
    found = positive.any(dim=1) & (npts >= min_points)
    union = union_all * found.unsqueeze(-1)

    found_l = found.tolist()
    npts_l = npts.round().long().tolist()
    out = []
    for t in range(T):
        qs = torch.nonzero(positive[t] & found[t]).flatten()
        out.append(GresSelection(queries=qs, sp_prob=union[t], found=bool(found_l[t]), num_points=int(npts_l[t]),
                                 union_prob=union_all[t]))
    return out


def official_iou(prob: Tensor, target: Tensor) -> Tensor:
    """The authors' ``get_iou`` on probabilities: prediction ``prob >= 0.5``, target ``> 0.5``,
    intersection / (union + 1e-6) over the last axis."""
    pred = (prob >= 0.5).float()
    gt = (target > 0.5).float()
    inter = (pred * gt).sum(-1)
    return inter / (gt.sum(-1) + pred.sum(-1) - inter + 1e-6)
