"""Oracle mask metric: how good the decoder's masks are, whatever query the sentence picks.

A RES answer is right when two things go right: one of the decoder's Q query masks covers the
target, and the selection picks that query. The plain scores (``metrics``) mix both. The oracle
IoU of a sentence is the best point IoU that ANY query's mask reaches with the target, so it
measures the masks alone (language-free: a perfect selection is assumed):

* ``oracle_iou``: max over every query (every view's, with ``inference.tta_rotations`` > 1) of
  the point IoU between its mask and the target, the same IoU the answer is scored by
  (``metrics.point_iou``: over the caller's points, the target's points dropped by cleaning
  included). Oracle IoU >= the answer's IoU always: a RES answer is one query's mask.
* Oracle Acc@k: share of sentences with oracle IoU > k, strictly, the rule of the plain Acc@k
  (``metrics``), so the two read side by side and Oracle Acc@k >= Acc@k.
* For the oracle query itself, its recall (share of the target it covers) and precision (share
  of its mask on the target): low recall on small targets = masks that miss them, low precision
  on large ones = masks that run into neighbours.

The masks are those the selection chose from (``Segmenter.query(..., keep_query_masks=True)``:
each query's ``sigmoid >= inference.mask_threshold`` superpoint mask), so the oracle binarises
exactly as the answer does. IoUs are computed per superpoint (points per superpoint, target points
per superpoint), in integers, which equals the point IoU of the expanded masks exactly.

Target size buckets (``SIZE_EDGES``, points of the target in the evaluated cloud): 200, 500,
1000, 5000. On the real 50k-point ScanNet subsets the ReferIt3D / ScanRefer targets have a median
of about 350 points (a quarter under 230, very few over 1000), so <200 / 200-499 / 500-999 hold the
small, typical and large real objects; the synthetic rooms are 2-4x denser (median target about
2300 points), where 1000-4999 and >=5000 split the bulk. Counts depend on the density of the
cloud, so buckets compare runs on the same kind of cloud; the per-record ``n_gt`` keeps the
exact size for any other split.
"""

from __future__ import annotations

import bisect
import collections
from typing import Any, Mapping, Sequence

import numpy as np

from bqnet_model.metrics import ACC_THRESHOLDS, RES_SPLITS

__all__ = [
    "SIZE_EDGES",
    "check_size_edges",
    "oracle_scores",
    "query_point_ious",
    "superpoint_target_points",
    "oracle_fields",
    "size_bucket",
    "oracle_stats",
    "summarize_oracle",
    "format_oracle_table",
]

SIZE_EDGES: tuple[int, ...] = (200, 500, 1000, 5000)


def query_point_ious(sp_masks: np.ndarray, sp_points: np.ndarray, sp_target: np.ndarray,
                     n_target: int) -> dict[str, np.ndarray]:
    """Point IoU of every query mask with the target, from superpoint counts.

    Parameters:
        sp_masks: bool (Q, S), query q's mask over the S superpoints.
        sp_points: int (S,), points of each superpoint (the points an answer of it holds).
        sp_target: int (S,), target points among them (<= ``sp_points``).
        n_target: all target points of the cloud (>= ``sp_target.sum()``: target points that no
            superpoint holds, e.g. dropped by cleaning, count in the union as misses).

    Returns ``{'iou', 'inter', 'pred'}``, each (Q,): IoU (float64; 0 for an empty mask), target
    points covered and points predicted (int64).
    """
    m = np.asarray(sp_masks)
    if m.ndim != 2 or m.dtype != np.bool_:
        raise ValueError(f"sp_masks must be a bool (Q, S) array, got {m.dtype} {m.shape}")
    pts = np.asarray(sp_points, dtype=np.int64)
    tgt = np.asarray(sp_target, dtype=np.int64)
    if pts.shape != (m.shape[1],) or tgt.shape != pts.shape:
        raise ValueError(f"sp_points {pts.shape} and sp_target {tgt.shape} must have one entry per superpoint "
                         f"({m.shape[1]})")
    if (tgt < 0).any() or (tgt > pts).any():
        raise ValueError("sp_target must lie in [0, sp_points] for every superpoint")
    if n_target < int(tgt.sum()) or n_target < 1:
        raise ValueError(f"n_target {n_target} must be >= 1 and >= the target points the superpoints hold "
                         f"({int(tgt.sum())})")
    mi = m.astype(np.int64)
    inter = mi @ tgt
    pred = mi @ pts
    union = pred + int(n_target) - inter
    return {"iou": inter / union, "inter": inter, "pred": pred}


def superpoint_target_points(cache: Any, gt: np.ndarray) -> np.ndarray:
    """Target points per superpoint of a prepared map: int64 (S,).

    ``cache``: a ``SceneCache`` (``point_index`` cleaned point -> caller's row, ``point_superpoint``
    its superpoint); ``gt``: bool (N,) target mask over the caller's cloud (the ``xyz`` given to
    ``prepare``)."""
    g = np.asarray(gt, dtype=bool)
    if g.ndim != 1 or g.shape[0] != cache.n_input:
        raise ValueError(f"gt must be a bool mask over the {cache.n_input} points given to prepare, got {g.shape}")
    on = g[cache.point_index]
    return np.bincount(cache.point_superpoint[on], minlength=cache.n_superpoints).astype(np.int64)


def oracle_fields(result: Any, cache: Any, gt: np.ndarray) -> dict[str, Any]:
    """The oracle of one RES sentence, as fields for its record.

    ``result``: the sentence's ``Result`` from ``Segmenter.query(..., keep_query_masks=True)``;
    ``cache``: the ``SceneCache`` it was answered over; ``gt``: bool (N,) target mask over the
    caller's cloud. Returns ``oracle_iou``, ``oracle_query`` (row of ``result.query_masks``, -1 when
    no mask touches the target), ``oracle_recall``, ``oracle_precision``, ``oracle_n_pred`` (of that
    query), ``n_queries`` and ``n_nonempty`` (queries with a non-empty mask).
    """
    masks = getattr(result, "query_masks", None)
    if masks is None:
        raise ValueError("the result carries no query masks: answer with Segmenter.query(..., keep_query_masks=True)")
    g = np.asarray(gt, dtype=bool)
    n_target = int(g.sum())
    if n_target == 0:
        raise ValueError("the target has no points: the oracle needs a RES target")
    q = query_point_ious(masks, np.diff(cache.sp_start), superpoint_target_points(cache, g), n_target)
    best = int(np.argmax(q["iou"])) if q["iou"].size else -1
    iou = float(q["iou"][best]) if best >= 0 else 0.0
    if iou <= 0.0:
        best = -1
    inter = int(q["inter"][best]) if best >= 0 else 0
    pred = int(q["pred"][best]) if best >= 0 else 0
    return dict(oracle_iou=iou, oracle_query=best, oracle_recall=inter / n_target,
                oracle_precision=inter / pred if pred else 0.0, oracle_n_pred=pred,
                n_queries=int(masks.shape[0]), n_nonempty=int(masks.any(axis=1).sum()))


def check_size_edges(edges: Sequence[int]) -> tuple[int, ...]:
    """``edges`` as ints, checked: increasing positive point counts (ValueError otherwise; the
    command lines report its message)."""
    e = tuple(int(x) for x in edges)
    if not e or any(b <= a for a, b in zip(e, e[1:])) or e[0] < 1:
        raise ValueError(f"size edges must be increasing positive point counts, e.g. 200 500 1000 5000; "
                         f"got {list(edges)}")
    return e


def _bucket_names(edges: Sequence[int]) -> list[str]:
    e = check_size_edges(edges)
    return [f"<{e[0]}"] + [f"{lo}-{hi - 1}" for lo, hi in zip(e, e[1:])] + [f">={e[-1]}"]


def size_bucket(n_points: int, edges: Sequence[int] = SIZE_EDGES) -> str:
    """The bucket name of a target of ``n_points`` points: '<200', '200-499', ..., '>=5000'."""
    return _bucket_names(edges)[bisect.bisect_right(check_size_edges(edges), n_points)]


def oracle_scores(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Oracle Acc@k (oracle IoU > k, the plain rule) and mIoU of records carrying ``oracle_iou``."""
    orc = np.asarray([r["oracle_iou"] for r in records], dtype=np.float64)
    return {**{f"Acc@{k}": float((orc > k).mean()) for k in ACC_THRESHOLDS}, "mIoU": float(orc.mean())}


def oracle_stats(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Plain and oracle figures of some sentences (each record needs ``iou`` and the
    ``oracle_fields``): count, ``model`` {Acc@k, mIoU}, ``oracle`` {Acc@k, mIoU}, ``touched``
    (share with oracle IoU > 0), ``recall`` / ``precision`` (means over the oracle queries),
    ``nonempty`` (mean non-empty query masks per sentence)."""
    if not records:
        raise ValueError("no records to summarize")
    iou = np.asarray([r["iou"] for r in records], dtype=np.float64)
    model = {**{f"Acc@{k}": float((iou > k).mean()) for k in ACC_THRESHOLDS}, "mIoU": float(iou.mean())}
    touched = float(np.mean([r["oracle_iou"] > 0 for r in records]))
    return dict(count=len(records), model=model, oracle=oracle_scores(records), touched=touched,
                recall=float(np.mean([r["oracle_recall"] for r in records])),
                precision=float(np.mean([r["oracle_precision"] for r in records])),
                nonempty=float(np.mean([r["n_nonempty"] for r in records])))


def summarize_oracle(records: Sequence[Mapping[str, Any]], edges: Sequence[int] = SIZE_EDGES) -> dict[str, Any]:
    """``{'size_edges', 'groups': {name: oracle_stats}}`` over 'overall', the RES splits present
    ('unique' / 'multiple', from ``eval_type``) and each target size bucket present
    ('size <200', ...; from ``n_gt``), in that order; empty groups are left out."""
    if not records:
        raise ValueError("no records to summarize")
    groups: dict[str, list[Mapping[str, Any]]] = collections.OrderedDict(overall=list(records))
    for split in RES_SPLITS:
        groups[split] = [r for r in records if r.get("eval_type") == split]
    by_size: dict[str, list[Mapping[str, Any]]] = collections.defaultdict(list)
    for r in records:
        by_size[size_bucket(int(r["n_gt"]), edges)].append(r)
    for name in _bucket_names(edges):
        groups[f"size {name}"] = by_size.get(name, [])
    return dict(size_edges=[int(e) for e in edges],
                groups={name: oracle_stats(recs) for name, recs in groups.items() if recs})


def format_oracle_table(summary: Mapping[str, Any]) -> str:
    """``summarize_oracle``'s groups as a table of percentages: plain vs oracle Acc@k and mIoU,
    then the oracle query's recall / precision, the share touched and the non-empty masks."""
    accs = [f"Acc@{k}" for k in ACC_THRESHOLDS] + ["mIoU"]
    head = (f"{'group':<16} {'n':>5}  " + "  ".join(f"{c:>8}" for c in accs) + "  |  "
            + "  ".join(f"{'o' + c:>9}" for c in accs) + f"  {'o-rec':>6} {'o-prec':>6} {'IoU>0':>6} {'masks':>6}")
    lines = [head, "-" * len(head)]
    for name, s in summary["groups"].items():
        plain = "  ".join(f"{100 * s['model'][c]:8.1f}" for c in accs)
        orc = "  ".join(f"{100 * s['oracle'][c]:9.1f}" for c in accs)
        lines.append(f"{name:<16} {s['count']:>5}  {plain}  |  {orc}  {100 * s['recall']:6.1f} "
                     f"{100 * s['precision']:6.1f} {100 * s['touched']:6.1f} {s['nonempty']:6.1f}")
    return "\n".join(lines)
