"""What ``Segmenter`` hands out: answers (``Result``, ``TargetObject``) and the prepared map (``SceneCache``).

``answer_to_dict`` is the one JSON form of an answer: the CLI's per-sentence files and the ROS
node's ``~/result_json`` fallback both start from it and add only their own context (the cloud's
file name, the message header, request id and latencies).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bqnet_model.model.bqnet import SceneFeatures

__all__ = ["TargetObject", "Result", "SceneCache", "answer_to_dict"]

_DIGITS = 5  # coordinates and scores: 10 µm and 1e-5 are below anything a map or a model resolves
_MS_DIGITS = 3


@dataclass
class TargetObject:
    """One answer object: point indices into the caller's cloud, score, centroid and AABB."""

    point_indices: np.ndarray  # int64 (K,), sorted
    score: float
    centroid: np.ndarray  # float64 (3,)
    box_min: np.ndarray  # float64 (3,)
    box_max: np.ndarray  # float64 (3,)
    queries: list[int] = field(default_factory=list)  # decoder queries merged into this object

    @property
    def n_points(self) -> int:
        return int(self.point_indices.shape[0])


@dataclass
class Result:
    """The answer to one sentence. ``timings_ms`` are those of the batched call the sentence
    was part of (``text``, ``decoder``, ``post``, ``total``). ``reason``: why nothing was found
    when a check refused the answer (``pipeline.absence``), "" otherwise; ``score``: the best
    object's score before any refusal; ``warnings``: answered anyway, but the client should know."""

    text: str
    found: bool
    objects: list[TargetObject]
    point_indices: np.ndarray  # int64, union of the objects' points, sorted
    timings_ms: dict[str, float]
    task: str = "res"
    reason: str = ""
    score: float = 0.0
    warnings: list[str] = field(default_factory=list)
    # Only with ``Segmenter.query(..., keep_query_masks=True)`` (evaluation), else None: every
    # decoder query's superpoint mask as the selection saw it (sigmoid >= inference.mask_threshold,
    # bool (V*Q, S), row v*Q + q = query q of view v, views as ``SceneCache.views`` after the map
    # itself) and its target probability (float32 (V*Q,)).
    query_masks: np.ndarray | None = None
    query_probs: np.ndarray | None = None

    def to_dict(self, *, include_indices: bool = True) -> dict[str, Any]:
        """This answer as plain JSON types (``answer_to_dict``; ``reason`` only when there is one)."""
        return answer_to_dict(self.text, self.task, self.found, self.objects, self.point_indices, self.timings_ms,
                              reason=self.reason or None, include_indices=include_indices)


def _floats(a: Any) -> list[float]:
    return [round(float(v), _DIGITS) for v in np.asarray(a, np.float64).reshape(-1)]


def answer_to_dict(
    text: str,
    task: str,
    found: bool,
    objects: Sequence[TargetObject],
    point_indices: np.ndarray,
    timings_ms: Mapping[str, float],
    *,
    reason: str | None = None,
    include_indices: bool = True,
) -> dict[str, Any]:
    """An answer as plain JSON types: ``text``, ``task``, ``found``, ``reason`` (only when given),
    ``n_objects``, ``n_points`` (points of all objects together, ``point_indices`` being their
    sorted union), ``objects`` (best first: ``rank``, ``score``, ``n_points``, ``centroid``,
    ``box_min``, ``box_max`` and, with ``include_indices``, ``point_indices`` into the caller's
    cloud) and ``timings_ms``. Taking the parts rather than a ``Result`` lets a caller that keeps
    its own answer record (the ROS node's) share the form."""
    objs = []
    for k, obj in enumerate(objects):
        idx = np.asarray(obj.point_indices, np.int64)
        d: dict[str, Any] = {
            "rank": k,
            "score": round(float(obj.score), _DIGITS),
            "n_points": int(idx.size),
            "centroid": _floats(obj.centroid),
            "box_min": _floats(obj.box_min),
            "box_max": _floats(obj.box_max),
        }
        if include_indices:
            d["point_indices"] = idx.tolist()
        objs.append(d)
    out: dict[str, Any] = {"text": str(text), "task": str(task), "found": bool(found)}
    if reason is not None:
        out["reason"] = str(reason)
    out.update({
        "n_objects": len(objs),
        "n_points": int(np.asarray(point_indices).size),
        "objects": objs,
        "timings_ms": {str(k): round(float(v), _MS_DIGITS) for k, v in dict(timings_ms).items()},
    })
    return out


@dataclass
class SceneCache:
    """Everything ``query`` needs about one prepared map (tensors on the segmenter's device)."""

    scene: SceneFeatures
    point_index: np.ndarray  # int64 (M,): cleaned point -> row of the caller's cloud
    point_xyz: np.ndarray  # float32 (M, 3): cleaned points
    point_superpoint: np.ndarray  # int64 (M,): superpoint of each cleaned point, dense 0..S-1
    sp_order: np.ndarray  # int64 (M,): cleaned points sorted by superpoint
    sp_start: np.ndarray  # int64 (S+1,): sp s owns sp_order[sp_start[s]:sp_start[s+1]]
    n_input: int
    n_voxels: int
    timings_ms: dict[str, float]
    device: str
    # Per-superpoint geometry (float64, ``superpoint_table.superpoint_geometry``): coordinate sums and
    # AABB corners, so that an answer's centroid and box cost O(its superpoints), not O(its points).
    sp_sum: np.ndarray  # (S, 3)
    sp_min: np.ndarray  # (S, 3)
    sp_max: np.ndarray  # (S, 3)
    # inference.tta_rotations > 1: the scene features of the map turned by 360/K, 2*360/K, ...
    # degrees about the vertical axis (same superpoints as ``scene``, which is the map as given).
    views: tuple[SceneFeatures, ...] = ()
    # What cleaning removed from the caller's cloud (answers never contain these rows).
    n_nonfinite: int = 0
    n_duplicates: int = 0
    n_downsampled: int = 0
    # The semantic head's class per superpoint (int64 (S,), ``absence.semantic_maps``); None
    # for a model without the head.
    sp_class: np.ndarray | None = None
    # Its softmax per superpoint (float32 (S, classes), ``absence.semantic_maps``): the
    # probability class check (``inference.absent_class_prob``) reads it; None without the head.
    sp_prob: np.ndarray | None = None

    @property
    def n_points(self) -> int:
        return int(self.point_index.shape[0])

    @property
    def n_superpoints(self) -> int:
        return int(self.sp_start.shape[0] - 1)

    @property
    def sp_weights(self) -> np.ndarray:
        """Points per superpoint, float64 (S,): the weights of point IoUs between superpoint masks."""
        return np.diff(self.sp_start).astype(np.float64)

    def points_of(self, superpoints: np.ndarray) -> np.ndarray:
        """Cleaned-point rows of the given superpoints (vectorized CSR gather)."""
        sps = np.asarray(superpoints, np.int64)
        if sps.size == 0:
            return np.zeros(0, np.int64)
        starts = self.sp_start[sps]
        lens = self.sp_start[sps + 1] - starts
        total = int(lens.sum())
        offs = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
        return self.sp_order[offs + np.arange(total)]

    def sorted_points_of(self, superpoints: np.ndarray) -> np.ndarray:
        """``points_of`` in ascending order: a sort for small selections, a point mask
        (O(M), no sort) once they cover more than 1/16 of the map."""
        rows = self.points_of(superpoints)
        m = self.n_points
        if rows.size * 16 <= m:
            return np.sort(rows)
        mask = np.zeros(m, dtype=bool)
        mask[rows] = True
        return np.flatnonzero(mask)

    def make_object(self, sp_ids: np.ndarray, score: float, queries: list[int]) -> TargetObject | None:
        """The ``TargetObject`` of a set of superpoints (None when they hold no point)."""
        rows = self.sorted_points_of(sp_ids)
        if rows.size == 0:
            return None
        sp_ids = np.asarray(sp_ids, np.int64)
        sp_ids = sp_ids[self.sp_start[sp_ids + 1] > self.sp_start[sp_ids]]  # superpoints with points
        return TargetObject(
            point_indices=self.point_index[rows],  # ascending: cleaning keeps the input order
            score=float(score),
            centroid=self.sp_sum[sp_ids].sum(axis=0) / rows.size,
            box_min=self.sp_min[sp_ids].min(axis=0),
            box_max=self.sp_max[sp_ids].max(axis=0),
            queries=list(queries),
        )
