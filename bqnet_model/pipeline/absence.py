"""Honest "not found": refuse an answer when the object the sentence names is not in the map.

The decoder always ranks the map's objects, so a sentence naming something absent ("the
helicopter", "the bathtub" in a bedroom) gets the best-ranked object with a score much like a
real hit's. Four checks, each set by an ``inference`` key (``bqnet_model.model.config``):

* ``absent_class_points``: the sentence's target class (``bqnet_model.text.named_objects``) must
  be what the model's semantic head (``sem_cls_head``) predicts for at least this many points of
  the map; 0 turns it off. Only a class of the vocabulary can be checked: a known object outside
  it (``OTHER_CLASS``, "the pillow") and models without a semantic head are never refused by it.
* ``absent_class_prob``: per class name, the least presence score the named class must reach in
  the map: the mean semantic-head probability of that class over the ``PRESENCE_TOP_POINTS``
  points most probable for it (``class_presence``). Probabilities see a present object that the
  argmax hands to a neighbouring class. The thresholds are calibrated per model
  (``tools/calibrate_absent.py --write``) and stored in its checkpoint; a class the head does not
  separate gets no entry and is never refused by it.
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

__all__ = ["semantic_maps", "class_points", "class_presence",
           "answer_share", "answer_probability", "parse_named", "presence_refusal", "refusal", "apply_checks",
           "PRESENCE_TOP_POINTS"]

# Points of the map the presence score averages over: about one small object (a lamp or a box) at
# the densities the model is run on. One library constant rather than a key: a model's thresholds
# are calibrated for this statistic, and 50 or 1000 points did no better
# (docs/experiments/2026-12-01_absent_objects.md).
PRESENCE_TOP_POINTS = 200

_parse_lock = threading.Lock()  # spaCy pipelines are not safe to call from several threads at once


def semantic_maps(model: Any, scene: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(argmax class (S,) int64, softmax (S, classes) float32) of the semantic head in one pass;
    (None, None) for a model without the head. ``prepare`` keeps both in the ``SceneCache``."""
    if getattr(model, "sem_cls_head", None) is None:
        return None, None
    with torch.inference_mode():
        logits = model.semantic_logits(scene)[0].float()
    prob = torch.softmax(logits, dim=-1)
    return logits.argmax(dim=-1).cpu().numpy().astype(np.int64), prob.cpu().numpy().astype(np.float32)


def class_presence(prob: np.ndarray, weights: np.ndarray, top_points: float) -> np.ndarray:
    """Per class, the mean probability over the ``top_points`` points of the map most probable for
    it (superpoints taken best first, weighted by their points, the last one in part), (classes,)
    float64. A present object lifts its class's probability on its own points however small a share
    of the map it is, so a top-k mean sees it where a map-wide mean or the argmax would not; a map
    with fewer points than ``top_points`` is averaged over all of them."""
    p = np.asarray(prob, np.float64)
    w = np.asarray(weights, np.float64)
    if p.ndim != 2 or w.shape != (p.shape[0],):
        raise ValueError(f"class_presence: prob must be (S, C) and weights (S,), got {p.shape} and {w.shape}")
    if top_points <= 0:
        raise ValueError(f"class_presence: top_points must be > 0, got {top_points}")
    if p.shape[0] == 0:
        return np.zeros(p.shape[1], np.float64)
    k = min(float(top_points), float(w.sum()))
    order = np.argsort(-p, axis=0, kind="stable")  # (S, C): superpoints best first, per class
    ws = w[order]
    before = np.cumsum(ws, axis=0) - ws
    take = np.clip(k - before, 0.0, ws)  # points of each superpoint inside the top k
    return (np.take_along_axis(p, order, axis=0) * take).sum(axis=0) / max(k, 1e-12)


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


def answer_probability(cache: SceneCache, point_indices: np.ndarray, class_id: int) -> float:
    """Mean semantic-head probability of ``class_id`` over an answer's points (rows of the caller's
    cloud); 0 for an empty answer or a model without the head."""
    idx = np.asarray(point_indices, np.int64)
    if cache.sp_prob is None or idx.size == 0:
        return 0.0
    rows = np.searchsorted(cache.point_index, idx)
    return float(cache.sp_prob[cache.point_superpoint[rows], class_id].mean())


def parse_named(text: str) -> NamedObjects:
    """``named_objects`` under a lock (the node answers from a worker thread while tests call in)."""
    with _parse_lock:
        return named_objects(text)


def presence_refusal(cache: SceneCache, class_id: int, thresholds: dict[str, float]) -> str:
    """Why the map lacks ``class_id`` by ``inference.absent_class_prob`` (module docstring), or "".

    A class without a threshold, a threshold of 0, a class outside the vocabulary and a model
    without a semantic head are never refused."""
    if not 0 <= class_id < OTHER_CLASS or cache.sp_prob is None or class_id >= cache.sp_prob.shape[1]:
        return ""
    tau = float(thresholds.get(CLASSES[class_id], 0.0))
    if tau <= 0.0:
        return ""
    presence = float(class_presence(cache.sp_prob[:, [class_id]], cache.sp_weights, PRESENCE_TOP_POINTS)[0])
    if presence >= tau:
        return ""
    return (f"named class '{CLASSES[class_id]}' not in the map (semantic head: presence {presence:.3f} "
            f"below inference.absent_class_prob {tau:.3f})")


def refusal(named: NamedObjects, cache: SceneCache, *, class_points_min: int, unknown: str,
            class_prob: dict[str, float] | None = None) -> tuple[str, str]:
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
    if class_prob:
        return presence_refusal(cache, target.class_id, class_prob), ""
    return "", ""


def apply_checks(result: Result, cache: SceneCache, inference: Any) -> Result:
    """The answer after the ``inference.absent_*`` / ``unknown_object`` checks (module docstring)."""
    best = max((float(o.score) for o in result.objects), default=0.0)
    result.score = best
    if not result.found:
        return result
    reason, warning = "", ""
    class_prob = inference.absent_class_prob
    if inference.absent_class_points > 0 or inference.unknown_object != "answer" or class_prob:
        reason, warning = refusal(parse_named(result.text), cache, class_points_min=inference.absent_class_points,
                                  unknown=inference.unknown_object, class_prob=class_prob)
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
