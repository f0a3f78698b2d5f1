"""From the decoder's queries to answers: one selection rule for one map and for its turned copies.

Every query call ends here with, per view of the map (the map itself, then its copies turned
about the vertical axis when ``inference.tta_rotations`` > 1), every query's target probability
and thresholded superpoint mask. One map is the one-view case.

``group_queries``: per view, the candidate queries are those with a non-empty mask that are among
the ``candidates`` most probable of that view or that the indicator calls a target (probability
> 0.5). Taken by descending probability, each joins the group whose representative mask (the mask
of its most probable member) it overlaps most, if that point IoU exceeds ``match_iou``; else it
starts a group. A group's score is the mean over the views of its most probable member in that
view (0 for a view without one), so an object one turned copy alone believes in scores 1/K of it.

Why one rule serves both tasks (and equals the authors' post-processing on one map):
* RES answers the top group with its representative mask; on one map that is the most probable
  query's mask, the authors' argmax rule (except that a query with an empty mask is skipped, where
  the authors would answer nothing).
* GRES answers every group that scores above 0.5, each with the union of its members that are
  targets; on one map the union over the groups is the union of all target queries, the authors'
  rule, and "no target" when no query is a target or the union has fewer than ``min_points``
  points. Splitting the union into groups gives the separate objects a planner needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .results import Result, SceneCache

__all__ = ["Candidate", "group_queries", "answer"]

TARGET_PROBABILITY = 0.5  # indicator argmax == target  <=>  probability > 0.5


@dataclass
class Candidate:
    """One object candidate over the views: ``rep`` (S,) bool the mask of its most probable
    member, ``union`` (S,) bool the union of its target members (``rep`` when none is a target),
    ``score`` the mean over views of the best member probability, ``members`` ``view * Q + query``."""

    rep: np.ndarray
    union: np.ndarray
    score: float
    members: list[int]


def group_queries(probs: list[np.ndarray], masks: list[np.ndarray], weights: np.ndarray, candidates: int,
                  match_iou: float) -> list[Candidate]:
    """Group the queries of K views (module docstring). ``probs[v]`` (Q,) target probabilities,
    ``masks[v]`` (Q, S) bool superpoint masks, ``weights`` (S,) points per superpoint. Returns the
    candidates sorted by descending score."""
    if len(probs) != len(masks) or not probs:
        raise ValueError("group_queries needs one probability vector and one mask array per view")
    K = len(probs)
    pool: list[tuple[float, int, int]] = []
    for v, (p, m) in enumerate(zip(probs, masks)):
        if m.shape[0] != p.shape[0]:
            raise ValueError(f"view {v}: {p.shape[0]} probabilities but {m.shape[0]} masks")
        nonempty = np.flatnonzero(m.any(axis=1))
        ranked = nonempty[np.argsort(-p[nonempty], kind="stable")]
        keep = np.zeros(ranked.shape[0], dtype=bool)
        keep[:candidates] = True
        keep |= p[ranked] > TARGET_PROBABILITY
        pool.extend((float(p[q]), v, int(q)) for q in ranked[keep])
    pool.sort(key=lambda c: -c[0])
    reps: list[np.ndarray] = []
    unions: list[np.ndarray | None] = []
    best: list[np.ndarray] = []  # (K,) best probability per view
    members: list[list[int]] = []
    w = np.asarray(weights, np.float64)
    # The representatives as rows of one preallocated array, their weighted sizes beside them: each
    # query's IoU with every group then reads only the mask's own superpoints (point counts are
    # integers, so the sums are exact and the IoUs equal the whole-mask ones bit for bit).
    rows = np.zeros((len(pool), w.shape[0]), dtype=bool)
    rep_size = np.zeros(len(pool), np.float64)
    for p, v, q in pool:
        m = masks[v][q]
        j = -1
        if reps:
            n = len(reps)
            on = np.flatnonzero(m)
            if 4 * on.size < m.size:  # a small mask (a trained model's): its own columns only
                inter = rows[:n, on] @ w[on]
            else:
                inter = (rows[:n] & m) @ w
            iou = inter / np.maximum(rep_size[:n] + w[on].sum() - inter, 1e-9)
            j = int(np.argmax(iou))
            if iou[j] <= match_iou:
                j = -1
        if j < 0:
            rows[len(reps)] = m
            rep_size[len(reps)] = w[m].sum()
            reps.append(m)
            unions.append(None)
            best.append(np.zeros(K))
            members.append([])
        best[j][v] = max(best[j][v], p)
        members[j].append(v * masks[v].shape[0] + q)
        if p > TARGET_PROBABILITY:
            unions[j] = m.copy() if unions[j] is None else (unions[j] | m)
    out = [Candidate(r, r if u is None else u, float(b.mean()), mem)
           for r, u, b, mem in zip(reps, unions, best, members)]
    out.sort(key=lambda c: -c.score)
    return out


def answer(cache: SceneCache, text: str, task: str, groups: list[Candidate], min_points: int) -> Result:
    """The ``Result`` of one sentence from its candidates (module docstring)."""
    empty = Result(text, False, [], np.zeros(0, np.int64), {}, task)
    if task == "res":
        chosen = [(g.rep, g) for g in groups[:1]]
    else:
        chosen = [(g.union, g) for g in groups if g.score > TARGET_PROBABILITY]
        if chosen:
            covered = np.logical_or.reduce([m for m, _ in chosen])
            if float(cache.sp_weights[covered].sum()) < min_points:
                chosen = []
    objects = [o for o in (cache.make_object(np.flatnonzero(m), g.score, g.members) for m, g in chosen)
               if o is not None]
    if not objects:
        return empty
    objects.sort(key=lambda o: -o.score)
    if len(objects) == 1:
        union = objects[0].point_indices
    else:
        flag = np.zeros(cache.n_input, dtype=bool)
        for o in objects:
            flag[o.point_indices] = True
        union = np.flatnonzero(flag)
    return Result(text, True, objects, union, {}, task)
