"""Referring-segmentation metrics: point IoU per description, mIoU and Acc@k (ScanRefer / Multi3DRefer).

Conventions (those of ScanRefer and Multi3DRefer evaluation):
- IoU is point-level, between the predicted and the ground-truth point masks of one description;
- mIoU is the mean over descriptions; Acc@k is the fraction of descriptions with IoU > k
  (strictly greater), k in {0.25, 0.5};
- 3D-RES (ScanRefer) splits: "unique" (the target's class occurs once in the scene), "multiple";
- 3D-GRES (Multi3DRefer): a description with zero targets scores IoU 1 when nothing is predicted,
  else 0; several targets are scored against their union; results are also given per eval_type.
Values are fractions in [0, 1]; ``format_summary`` prints percentages as papers do.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "ACC_THRESHOLDS",
    "RES_SPLITS",
    "GRES_EVAL_TYPES",
    "DescriptionResult",
    "point_iou",
    "union_mask",
    "res_record",
    "gres_record",
    "summarize_res",
    "summarize_gres",
    "format_summary",
    "chance_res",
]

ACC_THRESHOLDS: tuple[float, ...] = (0.25, 0.5)
RES_SPLITS: tuple[str, ...] = ("unique", "multiple")
# Multi3DRefer: zero / single target with / without distractors of the same class, multiple targets.
GRES_EVAL_TYPES: tuple[str, ...] = ("zt_w_d", "zt_wo_d", "st_w_d", "st_wo_d", "mt")


@dataclass
class DescriptionResult:
    """The score of one description: what the summaries average over."""

    scene_id: str
    ann_id: str
    iou: float
    eval_type: str
    object_ids: list[int] = field(default_factory=list)
    n_pred: int = 0  # predicted points
    n_gt: int = 0  # ground-truth points (0 for a zero-target GRES description)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_bool_mask(mask: Any, name: str) -> np.ndarray:
    """A 1-D boolean numpy view of a numpy array or a torch tensor (any device)."""
    if hasattr(mask, "detach") and hasattr(mask, "cpu"):  # torch.Tensor without importing torch here
        mask = mask.detach().cpu().numpy()
    arr = np.asarray(mask)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D point mask, got shape {arr.shape}")
    if arr.dtype != np.bool_:
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise TypeError(f"{name} must be a boolean (or 0/1) mask, got dtype {arr.dtype}")
        if arr.size and not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must hold only 0/1 values; threshold probabilities first")
        arr = arr.astype(bool)
    return arr


def point_iou(pred: Any, gt: Any) -> float:
    """|pred & gt| / |pred | gt| over points; 1.0 when both are empty (nothing to find, nothing found)."""
    p = _as_bool_mask(pred, "pred")
    g = _as_bool_mask(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred has {p.shape[0]} points but gt has {g.shape[0]}")
    inter = int(np.count_nonzero(p & g))
    union = int(np.count_nonzero(p | g))
    return 1.0 if union == 0 else inter / union


def union_mask(instance: np.ndarray, object_ids: Iterable[int]) -> np.ndarray:
    """Point mask of the union of the given instance ids (empty mask for no ids: a zero-target case)."""
    inst = np.asarray(instance)
    if inst.ndim != 1:
        raise ValueError(f"instance must have shape (N,), got {inst.shape}")
    ids = np.asarray(list(object_ids), dtype=np.int64)
    return np.isin(inst, ids) if ids.size else np.zeros(inst.shape[0], dtype=bool)


def res_record(pred: Any, gt: Any, *, scene_id: str, ann_id: str | int, eval_type: str,
               object_ids: Sequence[int] = ()) -> DescriptionResult:
    """Score one 3D-RES description (``eval_type`` 'unique' or 'multiple'); gt must not be empty."""
    if eval_type not in RES_SPLITS:
        raise ValueError(f"RES eval_type must be one of {RES_SPLITS}, got {eval_type!r}")
    p = _as_bool_mask(pred, "pred")
    g = _as_bool_mask(gt, "gt")
    if not g.any():
        raise ValueError(f"description {scene_id}/{ann_id}: the RES ground truth mask is empty")
    return DescriptionResult(str(scene_id), str(ann_id), point_iou(p, g), eval_type,
                             [int(i) for i in object_ids], int(p.sum()), int(g.sum()))


def gres_record(pred: Any, gt: Any, *, scene_id: str, ann_id: str | int, eval_type: str,
                object_ids: Sequence[int] = ()) -> DescriptionResult:
    """Score one 3D-GRES description: ``gt`` is the union mask of all targets (empty = zero targets).

    Zero-target rule: IoU 1 when no point is predicted, 0 otherwise.
    """
    p = _as_bool_mask(pred, "pred")
    g = _as_bool_mask(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred has {p.shape[0]} points but gt has {g.shape[0]}")
    if not g.any():
        iou = 1.0 if not p.any() else 0.0
    else:
        iou = point_iou(p, g)
    return DescriptionResult(str(scene_id), str(ann_id), iou, str(eval_type),
                             [int(i) for i in object_ids], int(p.sum()), int(g.sum()))


def _records(records: Iterable[DescriptionResult | Mapping[str, Any]]) -> tuple[np.ndarray, list[str]]:
    ious: list[float] = []
    types: list[str] = []
    for i, r in enumerate(records):
        if isinstance(r, DescriptionResult):
            iou, et = r.iou, r.eval_type
        elif isinstance(r, Mapping):
            if "iou" not in r or "eval_type" not in r:
                raise ValueError(f"record {i} needs 'iou' and 'eval_type', has {sorted(r)}")
            iou, et = r["iou"], r["eval_type"]
        else:
            raise TypeError(f"record {i} is {type(r).__name__}, expected DescriptionResult or dict")
        iou = float(iou)
        if not np.isfinite(iou) or iou < 0.0 or iou > 1.0:
            raise ValueError(f"record {i} has IoU {iou}, expected a value in [0, 1]")
        ious.append(iou)
        types.append(str(et))
    if not ious:
        raise ValueError("no records to summarize")
    return np.asarray(ious, dtype=np.float64), types


def _stats(ious: np.ndarray) -> dict[str, float]:
    out: dict[str, float] = {"mIoU": float(ious.mean()) if ious.size else float("nan")}
    for k in ACC_THRESHOLDS:
        out[f"Acc@{k}"] = float((ious > k).mean()) if ious.size else float("nan")
    out["count"] = int(ious.size)
    return out


def summarize_res(records: Iterable[DescriptionResult | Mapping[str, Any]]) -> dict[str, Any]:
    """3D-RES summary: ``{'mIoU', 'Acc@0.25', 'Acc@0.5', 'count', 'unique': {...}, 'multiple': {...}}``.

    A split with no description has NaN metrics and count 0.
    """
    ious, types = _records(records)
    bad = sorted(set(types) - set(RES_SPLITS))
    if bad:
        raise ValueError(f"RES records must have eval_type in {RES_SPLITS}, got {bad}")
    t = np.asarray(types)
    out: dict[str, Any] = _stats(ious)
    for split in RES_SPLITS:
        out[split] = _stats(ious[t == split])
    return out


def summarize_gres(records: Iterable[DescriptionResult | Mapping[str, Any]]) -> dict[str, Any]:
    """3D-GRES summary: overall mIoU / Acc@k plus one entry per eval_type present (Multi3DRefer's
    five types come first in their usual order, then any others sorted)."""
    ious, types = _records(records)
    t = np.asarray(types)
    out: dict[str, Any] = _stats(ious)
    present = set(types)
    order = [e for e in GRES_EVAL_TYPES if e in present] + sorted(present - set(GRES_EVAL_TYPES))
    out["per_type"] = {e: _stats(ious[t == e]) for e in order}
    return out


def format_summary(summary: Mapping[str, Any]) -> str:
    """Human-readable lines (percentages) of a ``summarize_res`` / ``summarize_gres`` dict."""
    def line(name: str, s: Mapping[str, Any]) -> str:
        accs = "  ".join(f"Acc@{k} {100 * s[f'Acc@{k}']:5.1f}" for k in ACC_THRESHOLDS)
        return f"{name:<10} mIoU {100 * s['mIoU']:5.1f}  {accs}  (n={s['count']})"

    lines = [line("overall", summary)]
    for split in RES_SPLITS:
        if split in summary:
            lines.append(line(split, summary[split]))
    for e, s in summary.get("per_type", {}).items():
        lines.append(line(e, s))
    return "\n".join(lines)


def chance_res(instance: np.ndarray, target_id: int, candidate_ids: Iterable[int]) -> dict[str, float]:
    """Expected RES scores of answering with a uniformly random object among ``candidate_ids``.

    A picked object is its ground-truth point mask, so the expectation is exact: the mean over the
    candidates of their point IoU with the target (``mIoU``) and of ``[IoU > k]`` (``Acc@k``, the
    rule the model is scored by). Instance masks do not overlap, so every candidate other than the
    target scores IoU 0 and the baseline is 1/len(candidates) when the target is among them; the
    IoUs are still computed, which keeps the function honest for any ``instance`` labelling.
    """
    inst = np.asarray(instance)
    if inst.ndim != 1:
        raise ValueError(f"instance must have shape (N,), got {inst.shape}")
    cands = [int(c) for c in candidate_ids]
    if not cands:
        raise ValueError("no candidate objects to pick from")
    gt = inst == int(target_id)
    if not gt.any():
        raise ValueError(f"target {target_id} has no points")
    ious = np.asarray([point_iou(inst == c, gt) for c in cands], dtype=np.float64)
    out = {"mIoU": float(ious.mean())}
    for k in ACC_THRESHOLDS:
        out[f"Acc@{k}"] = float((ious > k).mean())
    return out
