"""The geometry behind every referring expression: ``Descriptor`` (a colour, a size superlative
or a spatial relation to one or two anchors), ``SceneGeometry`` (the objects' boxes, fronts and
class groups) and ``evaluate``, which returns ``TRUE``, ``FALSE`` or ``UNSURE`` per object
(the grey zone between the thresholds, so borderline cases are skipped rather than mislabelled).
The thresholds are listed in ``bqnet_synth.expressions``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from bqnet_synth.scene import SceneObject, SyntheticScene


TRUE, FALSE, UNSURE = 1, 0, -1
RELATIONS: tuple[str, ...] = ("category", "colour", "size", "next_to", "left_of", "right_of", "in_front_of",
                              "behind", "on", "under", "above", "between", "closest", "farthest")
EVAL_TYPES: tuple[str, ...] = ("zt_w_d", "zt_wo_d", "st_w_d", "st_wo_d", "mt")
_PAIR = ("next_to", "in_front_of", "behind", "on", "under", "above")
_SIZE = ("largest", "smallest", "tallest", "shortest")
_STRUCTURE = ("floor", "wall")
_SMALL = ("monitor", "lamp", "box", "plant")  # things that stand on furniture
_HOSTS = ("desk", "table", "cabinet", "bookshelf", "refrigerator")
_WALL_MOUNTED = ("door", "window", "picture", "curtain")


# ---- descriptors and expressions ------------------------------------------------------------------

@dataclass(frozen=True)
class Descriptor:
    """One checked claim of a sentence: its ``kind`` (one of RELATIONS but 'category'), the anchor
    instance ids, ``value`` (a colour name, or a size superlative) and, for left/right, the
    ``viewpoint`` instance id the observer faces."""

    kind: str
    anchors: tuple[int, ...] = ()
    value: str = ""
    viewpoint: int = -1


# ---- geometry -------------------------------------------------------------------------------------

class SceneGeometry:
    """Boxes, centres and fronts of a scene's objects as arrays, and the relation predicates."""

    def __init__(self, objects: Sequence["SceneObject"]) -> None:
        if len(objects) == 0:
            raise ValueError("scene has no objects")
        for k, o in enumerate(objects):
            if o.instance_id != k:
                raise ValueError(f"objects must be indexed by instance id; object {k} has id {o.instance_id}")
        self.objects = list(objects)
        self.names = np.array([o.name for o in objects])
        self.colors = np.array([o.color_name for o in objects])
        self.lo = np.stack([np.asarray(o.box_min, float) for o in objects])
        self.hi = np.stack([np.asarray(o.box_max, float) for o in objects])
        self.c = (self.lo + self.hi) / 2
        self.ext = self.hi - self.lo
        self.front = np.stack([np.asarray(o.front, float) if o.front is not None else np.full(2, np.nan)
                               for o in objects])
        self.area = np.maximum(self.ext[:, 0] * self.ext[:, 1], 1e-6)
        self.volume = np.maximum(self.ext.prod(1), 1e-9)

    # Pairwise helpers; i and a are broadcastable integer index arrays.
    def gap(self, i: np.ndarray, a: np.ndarray) -> np.ndarray:
        d = np.maximum(0.0, np.maximum(self.lo[a] - self.hi[i], self.lo[i] - self.hi[a]))
        return np.linalg.norm(d, axis=-1)

    def zgap(self, i: np.ndarray, a: np.ndarray) -> np.ndarray:
        return np.maximum(0.0, np.maximum(self.lo[a, 2] - self.hi[i, 2], self.lo[i, 2] - self.hi[a, 2]))

    def xy_overlap(self, i: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Overlap area of the footprints."""
        w = np.clip(np.minimum(self.hi[i, :2], self.hi[a, :2]) - np.maximum(self.lo[i, :2], self.lo[a, :2]), 0, None)
        return w[..., 0] * w[..., 1]

    def centre_outside(self, i: np.ndarray, a: np.ndarray) -> np.ndarray:
        """How far target i's centre lies outside anchor a's footprint (0 inside)."""
        d = np.maximum(0.0, np.maximum(self.lo[a, :2] - self.c[i, :2], self.c[i, :2] - self.hi[a, :2]))
        return np.linalg.norm(d, axis=-1)

    def pair(self, kind: str, i: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Tri-state of a two-object relation for every (i, a) (``i == a`` is FALSE)."""
        i, a = np.broadcast_arrays(np.asarray(i), np.asarray(a))
        if kind == "next_to":
            g = self.gap(i, a)
            ov = self.xy_overlap(i, a) / np.minimum(self.area[i], self.area[a])
            t = (g <= 0.45) & (ov < 0.15)
            f = (g > 0.9) | (ov > 0.5)
        elif kind in ("in_front_of", "behind"):
            n = self.front[a] * (1.0 if kind == "in_front_of" else -1.0)
            has = ~np.isnan(n[..., 0])
            n = np.nan_to_num(n)
            axis = np.argmax(np.abs(n), axis=-1)
            d = self.c[i, :2] - self.c[a, :2]
            along = (d * n).sum(-1)
            lat = np.abs(np.take_along_axis(d, (1 - axis)[..., None], -1)[..., 0])
            hd = (np.take_along_axis(self.ext[a, :2], axis[..., None], -1)[..., 0]
                  + np.take_along_axis(self.ext[i, :2], axis[..., None], -1)[..., 0]) / 2
            hw_a = np.take_along_axis(self.ext[a, :2], (1 - axis)[..., None], -1)[..., 0] / 2
            hw_i = np.take_along_axis(self.ext[i, :2], (1 - axis)[..., None], -1)[..., 0] / 2
            free = along - hd
            zg = self.zgap(i, a)
            t = has & (free >= -0.05) & (free <= 1.0) & (lat <= hw_a + 0.1) & (zg <= 0.2)
            f = ~has | (free < -0.3) | (free > 2.0) | (lat > hw_a + hw_i + 0.4) | (zg > 0.5)
        elif kind == "on":
            dz = self.lo[i, 2] - self.hi[a, 2]
            out = self.centre_outside(i, a)
            t = (np.abs(dz) <= 0.06) & (out == 0.0)
            f = (np.abs(dz) > 0.2) | (out > 0.1)
        elif kind == "under":
            ov = self.xy_overlap(i, a) / self.area[i]
            t = (ov >= 0.7) & (self.hi[i, 2] <= self.hi[a, 2] - 0.03) & (self.lo[i, 2] <= 0.05)
            f = (ov < 0.2) | (self.lo[i, 2] >= self.hi[a, 2] - 0.05)
        elif kind == "above":
            dz = self.lo[i, 2] - self.hi[a, 2]
            out = self.centre_outside(i, a)
            t = (dz >= 0.1) & (dz <= 1.5) & (out <= 0.05)
            f = (dz < -0.05) | (dz > 2.2) | (out > 0.4)
        else:
            raise ValueError(f"unknown pair relation {kind!r}; known: {_PAIR}")
        out_ = np.where(t, TRUE, np.where(f, FALSE, UNSURE)).astype(np.int8)
        out_[i == a] = FALSE
        return out_

    def side(self, kind: str, i: np.ndarray, a: np.ndarray, v: int) -> np.ndarray:
        """Tri-state of left_of / right_of anchor ``a`` for an observer facing object ``v``."""
        if kind not in ("left_of", "right_of"):
            raise ValueError(f"unknown side relation {kind!r}")
        if np.isnan(self.front[v, 0]):
            raise ValueError(f"viewpoint object {v} ({self.names[v]}) has no front")
        i, a = np.broadcast_arrays(np.asarray(i), np.asarray(a))
        f = -self.front[v]
        r = np.array([f[1], -f[0]])
        d = self.c[i, :2] - self.c[a, :2]
        lat = (d * r).sum(-1) * (1.0 if kind == "right_of" else -1.0)  # > 0: on the named side
        lon = np.abs((d * f).sum(-1))
        g = self.gap(i, a)
        ov = self.xy_overlap(i, a) / np.minimum(self.area[i], self.area[a])
        t = (lat >= 0.3) & (lon <= lat) & (g <= 1.0) & (ov < 0.15)
        fl = (lat <= -0.05) | (g > 2.0) | (lon > 2 * np.abs(lat) + 0.3)
        out = np.where(t, TRUE, np.where(fl, FALSE, UNSURE)).astype(np.int8)
        out[(i == a) | (i == v)] = FALSE
        return out

    def between(self, i: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        i, a, b = np.broadcast_arrays(np.asarray(i), np.asarray(a), np.asarray(b))
        seg = self.c[b, :2] - self.c[a, :2]
        L2 = np.maximum((seg ** 2).sum(-1), 1e-9)
        L = np.sqrt(L2)
        d = self.c[i, :2] - self.c[a, :2]
        s = (d * seg).sum(-1) / L2
        perp = np.abs(d[..., 0] * seg[..., 1] - d[..., 1] * seg[..., 0]) / L
        t = (s >= 0.2) & (s <= 0.8) & (perp <= np.minimum(0.5, 0.35 * L)) & (L >= 0.8)
        f = (s < -0.05) | (s > 1.05) | (perp > 1.0)
        out = np.where(t, TRUE, np.where(f, FALSE, UNSURE)).astype(np.int8)
        out[(i == a) | (i == b) | (a == b)] = FALSE
        return out

    def superlative(self, kind: str, value: str, ids: np.ndarray, anchor: int = -1) -> np.ndarray:
        """Tri-state of 'the <value>' among ``ids`` (size) or 'closest/farthest to anchor'."""
        ids = np.asarray(ids)
        if kind == "size":
            if value in ("largest", "smallest"):
                m = np.log(self.volume[ids])
                margin = np.log(1.3)
            elif value in ("tallest", "shortest"):
                m = self.ext[ids, 2]
                margin = None
            else:
                raise ValueError(f"unknown size value {value!r}; known: {_SIZE}")
            sign = 1.0 if value in ("largest", "tallest") else -1.0
        elif kind in ("closest", "farthest"):
            if anchor < 0:
                raise ValueError(f"{kind} needs an anchor")
            m = self.gap(ids, np.full(len(ids), anchor))
            margin = 0.4
            sign = -1.0 if kind == "closest" else 1.0
        else:
            raise ValueError(f"unknown superlative {kind!r}")
        out = np.full(len(ids), UNSURE, np.int8)
        if len(ids) == 0:
            return out
        if len(ids) == 1:
            out[0] = TRUE
            return out
        score = sign * m
        best = int(np.argmax(score))
        if margin is None:  # heights: 0.12 m and 12 %
            h = self.ext[ids, 2]
            beats = (np.abs(h[best] - h) >= 0.12) & (np.maximum(h[best], h) >= 1.12 * np.minimum(h[best], h))
        else:
            beats = score[best] - score >= margin
        out[:] = np.where(beats, FALSE, UNSURE)
        others = np.arange(len(ids)) != best
        out[best] = TRUE if beats[others].all() else UNSURE
        return out


def evaluate(scene: "SyntheticScene | Sequence[SceneObject] | SceneGeometry", descriptor: Descriptor,
             ids: Sequence[int], candidates: Sequence[int] | None = None) -> np.ndarray:
    """Tri-state (TRUE / FALSE / UNSURE, int8) of ``descriptor`` for each object in ``ids``.

    Superlatives compare within ``candidates`` (default: every object of the class of ``ids[0]``).
    """
    g = scene if isinstance(scene, SceneGeometry) else SceneGeometry(getattr(scene, "objects", scene))
    ids_a = np.asarray(list(ids), dtype=np.int64)
    if ids_a.size and (ids_a.min() < 0 or ids_a.max() >= len(g.objects)):
        raise ValueError(f"object ids {ids_a.tolist()} out of range 0..{len(g.objects) - 1}")
    for a in descriptor.anchors:
        if not 0 <= a < len(g.objects):
            raise ValueError(f"anchor id {a} out of range 0..{len(g.objects) - 1}")
    k = descriptor.kind
    if k == "colour":
        return np.where(g.colors[ids_a] == descriptor.value, TRUE, FALSE).astype(np.int8)
    if k in _PAIR:
        _need_anchors(descriptor, 1)
        return g.pair(k, ids_a, np.full(len(ids_a), descriptor.anchors[0]))
    if k in ("left_of", "right_of"):
        _need_anchors(descriptor, 1)
        if not 0 <= descriptor.viewpoint < len(g.objects):
            raise ValueError(f"{k} needs a viewpoint object id, got {descriptor.viewpoint}")
        return g.side(k, ids_a, np.full(len(ids_a), descriptor.anchors[0]), descriptor.viewpoint)
    if k == "between":
        _need_anchors(descriptor, 2)
        a, b = descriptor.anchors
        return g.between(ids_a, np.full(len(ids_a), a), np.full(len(ids_a), b))
    if k in ("size", "closest", "farthest"):
        if candidates is None:
            if ids_a.size == 0:
                return np.zeros(0, np.int8)
            candidates = np.flatnonzero(g.names == g.names[ids_a[0]])
        cand = np.asarray(list(candidates), dtype=np.int64)
        anchor = descriptor.anchors[0] if descriptor.anchors else -1
        st = g.superlative(k, descriptor.value, cand, anchor)
        lut = dict(zip(cand.tolist(), st.tolist()))
        missing = [i for i in ids_a.tolist() if i not in lut]
        if missing:
            raise ValueError(f"ids {missing} are not among the superlative's candidates")
        return np.array([lut[i] for i in ids_a.tolist()], np.int8)
    raise ValueError(f"unknown descriptor kind {k!r}; known: {RELATIONS[1:]}")


def _need_anchors(d: Descriptor, n: int) -> None:
    if len(d.anchors) != n:
        raise ValueError(f"{d.kind} needs {n} anchor(s), got {d.anchors}")
