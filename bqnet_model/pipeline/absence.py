"""Honest "not found": refuse an answer when the object the sentence names is not in the map.

The decoder always ranks the map's objects, so a sentence naming something absent ("the
helicopter", "the bathtub" in a bedroom) gets the best-ranked object with a score much like a
real hit's. Three checks, each set by an ``inference`` key (``bqnet_model.model.config``):

* ``absent_class_points``: the sentence's target class (``bqnet_model.text.named_objects``) must
  be what the model's semantic head (``sem_cls_head``) predicts for at least this many points of
  the map; 0 turns it off. Only a class of the vocabulary can be checked: a known object outside
  it (``OTHER_CLASS``, "the pillow") and models without a semantic head are never refused by it.
* ``unknown_object``: a target noun that is in no object vocabulary ("the giraffe next to the
  door") is refused (``refuse``), answered with a warning (``warn``) or answered as is
  (``answer``): the model maps it to some object of the map in any case.
* ``absent_score``: objects scoring below it are dropped and none left is a refusal; 0 = off.

A refused answer has ``found`` False, no objects, ``reason`` saying which check refused it and
``score`` the best score it had (a client can still see how close it was).
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from bqnet_model.data.classes import CLASSES
from bqnet_model.text.named_objects import OTHER_CLASS, NamedObjects, named_objects

from .results import Result, SceneCache

__all__ = ["superpoint_classes", "class_points", "answer_share", "parse_named", "refusal", "apply_checks"]

_parse_lock = threading.Lock()  # spaCy pipelines are not safe to call from several threads at once


def superpoint_classes(model: Any, scene: Any) -> np.ndarray | None:
    """The semantic head's class per superpoint (S,) int64, or None for a model without the head."""
    if getattr(model, "sem_cls_head", None) is None:
        return None
    with torch.inference_mode():
        logits = model.semantic_logits(scene)
    return logits[0].argmax(dim=-1).cpu().numpy().astype(np.int64)


def class_points(cache: SceneCache) -> np.ndarray | None:
    """Points of the map per predicted class, float64 (OTHER_CLASS + 1,); None without the head."""
    if cache.sp_class is None:
        return None
    return np.bincount(cache.sp_class, weights=cache.sp_weights, minlength=OTHER_CLASS + 1).astype(np.float64)


def answer_share(cache: SceneCache, point_indices: np.ndarray, class_id: int) -> float:
    """Share of an answer's points (rows of the caller's cloud) whose superpoint the semantic head
    calls ``class_id``; 0 for an empty answer or a model without the head."""
    idx = np.asarray(point_indices, np.int64)
    if cache.sp_class is None or idx.size == 0:
        return 0.0
    rows = np.searchsorted(cache.point_index, idx)  # point_index is ascending (cleaning keeps the order)
    return float((cache.sp_class[cache.point_superpoint[rows]] == class_id).mean())


def parse_named(text: str) -> NamedObjects:
    """``named_objects`` under a lock (the node answers from a worker thread while tests call in)."""
    with _parse_lock:
        return named_objects(text)


def refusal(named: NamedObjects, cache: SceneCache, *, class_points_min: int, unknown: str) -> tuple[str, str]:
    """(reason to refuse or "", warning or "") from the named target alone (module docstring)."""
    target = named.target
    if target is None:
        return "", ""
    if target.class_id < 0:
        msg = f"unknown object word '{target.words}': in no class vocabulary of the model"
        return (msg, "") if unknown == "refuse" else ("", f"{msg}; the answer may be another object")
    if class_points_min > 0 and target.class_id < OTHER_CLASS:
        counts = class_points(cache)
        if counts is not None and counts[target.class_id] < class_points_min:
            return (f"named class '{CLASSES[target.class_id]}' not in the map (semantic head: "
                    f"{int(counts[target.class_id])} points, needs {class_points_min})"), ""
    return "", ""


def apply_checks(result: Result, cache: SceneCache, inference: Any) -> Result:
    """The answer after the ``inference.absent_*`` / ``unknown_object`` checks (module docstring)."""
    best = max((float(o.score) for o in result.objects), default=0.0)
    result.score = best
    if not result.found:
        return result
    reason, warning = "", ""
    if inference.absent_class_points > 0 or inference.unknown_object != "answer":
        reason, warning = refusal(parse_named(result.text), cache, class_points_min=inference.absent_class_points,
                                  unknown=inference.unknown_object)
    if warning:
        result.warnings.append(warning)
    if not reason and inference.absent_score > 0:
        kept = [o for o in result.objects if float(o.score) >= inference.absent_score]
        if not kept:
            reason = f"best score {best:.3f} below inference.absent_score {inference.absent_score:g}"
        elif len(kept) < len(result.objects):
            flag = np.zeros(cache.n_input, dtype=bool)
            for o in kept:
                flag[o.point_indices] = True
            return replace(result, objects=kept, point_indices=np.flatnonzero(flag))
    if reason:
        return replace(result, found=False, objects=[], point_indices=np.zeros(0, np.int64), reason=reason)
    return result
