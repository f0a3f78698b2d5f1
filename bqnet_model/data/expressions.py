"""Referring expressions for synthetic scenes: a grammar whose every claim is checked geometrically.

An expression names a class (with synonyms) and zero, one or two *descriptors*: a colour, a size
superlative, or a spatial relation to one or two *anchors* (objects the sentence can name without
ambiguity: the only one of their class, or the only one of their class in their colour). A
descriptor is evaluated on objects with three outcomes, ``TRUE``, ``FALSE`` and ``UNSURE`` (the
grey zone between the thresholds below); a sentence is emitted only when every descriptor is
``TRUE`` for every target and every other object of the target class (a *distractor*) is ``FALSE``
for at least one descriptor. ``UNSURE`` never counts as either, so borderline cases are skipped
rather than mislabelled.

Relations (boxes are the objects' axis-aligned bounding boxes, distances in metres):

- ``next_to``: box gap <= 0.45 with little footprint overlap (< 15 %: side by side, not on/under);
  false when the gap is > 0.9 or the footprints overlap > 50 %.
- ``left_of`` / ``right_of`` *when facing V* (V: a uniquely named object with a front, typically
  the door, a window or the bed). The observer looks at V, so the viewing direction is
  ``f = -front(V)`` (V's front points into the room, towards the observer), and the observer's right
  is ``r = (f_y, -f_x)`` (``f`` turned 90 degrees clockwise seen from above). With
  ``d = centre(target) - centre(anchor)`` in the floor plane, ``lat = d . r`` and ``lon = d . f``:
  left is true when ``lat <= -0.3``, ``|lon| <= |lat|`` and the box gap is <= 1.0; false when
  ``lat >= 0.05``, the gap is > 2.0, or ``|lon| > 2 |lat| + 0.3``. Right mirrors it.
- ``in_front_of`` / ``behind`` (anchor with a front ``n``): the free distance between the anchor's
  front (back) face and the target along ``n`` is in [-0.05, 1.0], the lateral offset of the centres
  is at most half the anchor's width + 0.1, and their heights overlap (vertical gap <= 0.2); false
  when that distance is < -0.3 or > 2.0, the lateral offset exceeds the two half widths + 0.4, or
  the vertical gap is > 0.5.
- ``on``: the target's bottom is within 0.06 of the anchor's top and its centre is over the
  anchor's footprint; false when the height difference is > 0.2 or the centre is > 0.1 outside.
- ``under``: >= 70 % of the target's footprint is under the anchor and the target's top is below
  the anchor's top by 0.03 or more, standing on the floor; false when < 20 % overlaps or its
  bottom is not below the anchor's top.
- ``above``: the target's bottom is 0.1 - 1.5 above the anchor's top with its centre over the
  anchor's footprint (+0.05); false when it is lower, > 2.2 higher, or > 0.4 outside.
- ``between`` A and B: the target's centre projects onto the segment A-B at 20 - 80 % of its length
  and lies within min(0.5, 0.35 |AB|) of it (|AB| >= 0.8); false outside 5 % beyond either end or
  more than 1.0 away.
- ``closest`` / ``farthest`` to A, and the size superlatives ``largest`` / ``smallest`` (box
  volume) and ``tallest`` / ``shortest`` (box height) compare the objects of the target's class:
  the extreme one is true when it beats the runner-up by a margin (0.4 m; volume ratio 1.3; height
  0.12 m and ratio 1.12), the others are false when they trail the extreme one by that margin.
- ``colour``: the object's named colour.

Eval types follow Multi3DRefer: ``st_wo_d`` / ``st_w_d`` one target, without / with distractors of
its class; ``mt`` several targets; ``zt_wo_d`` / ``zt_w_d`` no target, the class absent / present.
ScanRefer's ``unique`` / ``multiple`` are ``st_wo_d`` / ``st_w_d``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:  # no runtime import: synthetic imports this module
    from bqnet_model.data.synthetic import SceneObject, SyntheticScene

__all__ = [
    "TRUE", "FALSE", "UNSURE", "RELATIONS", "EVAL_TYPES", "NOUNS", "Descriptor", "Expression",
    "ExpressionConfig", "SceneGeometry", "evaluate", "generate_expressions", "demo_expressions",
    "class_nouns", "pluralize",
]

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

# ---- vocabulary ---------------------------------------------------------------------------------
NOUNS: dict[str, tuple[str, ...]] = {
    "chair": ("chair",), "table": ("table",), "desk": ("desk", "work desk", "writing desk", "office desk"),
    "bed": ("bed",), "sofa": ("sofa", "couch"), "cabinet": ("cabinet", "cupboard"),
    "bookshelf": ("bookshelf", "bookcase", "book shelf", "shelf"), "toilet": ("toilet", "toilet bowl"),
    "sink": ("sink", "washbasin", "wash basin", "basin"), "bathtub": ("bathtub", "tub", "bath tub", "bath"),
    "refrigerator": ("refrigerator", "fridge"), "monitor": ("monitor", "screen"), "lamp": ("lamp", "light"),
    "trash can": ("trash can", "trash bin", "garbage can", "garbage bin", "bin", "wastebasket", "waste bin"),
    "box": ("box", "carton"), "plant": ("plant", "potted plant", "houseplant"), "door": ("door",),
    "window": ("window",), "picture": ("picture", "painting", "poster", "framed picture", "artwork"),
    "curtain": ("curtain", "drape", "window curtain"),
}
# Extra nouns for a variant, used only when every object of the class in the scene is that variant.
_VARIANT_NOUNS: dict[tuple[str, str], tuple[str, ...]] = {
    ("chair", "office"): ("office chair", "desk chair", "swivel chair"),
    ("chair", "armchair"): ("armchair", "arm chair", "lounge chair"),
    ("chair", "dining"): ("dining chair",),
    ("table", "coffee"): ("coffee table", "low table"), ("table", "round"): ("round table",),
    ("table", "rect"): ("rectangular table",),
    ("bed", "single"): ("single bed",), ("bed", "double"): ("double bed",),
    ("sofa", "loveseat"): ("loveseat",),
    ("cabinet", "wardrobe"): ("wardrobe", "closet"), ("cabinet", "dresser"): ("dresser", "chest of drawers"),
    ("cabinet", "nightstand"): ("nightstand", "night stand", "bedside cabinet"),
    ("cabinet", "kitchen"): ("kitchen cabinet", "kitchen counter", "counter"),
    ("cabinet", "tv_stand"): ("tv stand", "tv cabinet", "media console"),
    ("cabinet", "file"): ("file cabinet", "filing cabinet"),
    ("monitor", "monitor"): ("computer monitor", "computer screen", "display"),
    ("monitor", "tv"): ("tv", "television", "tv screen", "flat screen tv"),
    ("lamp", "floor"): ("floor lamp", "standing lamp"), ("lamp", "desk"): ("desk lamp", "table lamp", "reading lamp"),
}
_COLOUR_WORDS: dict[str, tuple[str, ...]] = {"grey": ("grey", "gray"), "beige": ("beige", "cream colored")}
_PLURAL_SPECIAL = {"shelf": "shelves", "bookshelf": "bookshelves", "book shelf": "book shelves",
                   "chest of drawers": "chests of drawers", "tv": "tvs", "flat screen tv": "flat screen tvs"}
_NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}

_REL_WORDS: dict[str, tuple[str, ...]] = {
    "next_to": ("next to {A}", "beside {A}", "near {A}", "by {A}", "close to {A}", "right next to {A}",
                "adjacent to {A}", "at the side of {A}"),
    "left_of": ("to the left of {A}", "on the left of {A}", "left of {A}", "on the left side of {A}"),
    "right_of": ("to the right of {A}", "on the right of {A}", "right of {A}", "on the right side of {A}"),
    "in_front_of": ("in front of {A}", "directly in front of {A}", "right in front of {A}"),
    "behind": ("behind {A}", "in back of {A}", "at the back of {A}", "right behind {A}"),
    "on": ("on {A}", "on top of {A}", "placed on {A}", "sitting on {A}", "standing on {A}", "resting on {A}"),
    "under": ("under {A}", "below {A}", "underneath {A}", "beneath {A}", "tucked under {A}"),
    "above": ("above {A}", "over {A}", "hanging above {A}"),
    "between": ("between {A} and {B}", "in between {A} and {B}", "located between {A} and {B}"),
}
_PLURAL_NEXT = ("around {A}", "next to {A}", "near {A}", "beside {A}", "close to {A}")
_VIEW = ("when facing {V}", "if you face {V}", "facing {V}", "looking at {V}", "as you face {V}",
         "from the viewpoint of someone facing {V}")
_SUP_WORDS = {"largest": ("largest", "biggest"), "smallest": ("smallest", "tiniest"),
              "tallest": ("tallest", "highest"), "shortest": ("shortest", "lowest")}
_CMP_WORDS = {"largest": ("bigger", "larger", "big"), "smallest": ("smaller", "small"), "tallest": ("taller", "tall"),
              "shortest": ("shorter", "lower", "short")}
_DIST_WORDS = {"closest": ("closest to {A}", "nearest to {A}", "nearest {A}"),
               "farthest": ("farthest from {A}", "furthest from {A}", "farthest away from {A}",
                            "most distant from {A}")}
_DIST_CMP = {"closest": ("closer to {A}", "nearer to {A}"), "farthest": ("farther from {A}", "further from {A}")}
_REL_WEIGHT = {"colour": 1.0, "size": 0.8, "next_to": 1.5, "left_of": 0.9, "right_of": 0.9, "in_front_of": 1.5,
               "behind": 2.0, "on": 2.5, "under": 2.5, "above": 2.0, "between": 0.7, "closest": 0.5, "farthest": 0.3}


def pluralize(noun: str) -> str:
    """English plural of a (possibly multi-word) noun as used here."""
    if noun in _PLURAL_SPECIAL:
        return _PLURAL_SPECIAL[noun]
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    return noun + "s"


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


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


@dataclass
class Expression:
    """A referring expression with its ground truth.

    ``target_ids``: instance ids named (empty: no target); ``eval_type``: Multi3DRefer's type;
    ``relation``: the main descriptor's kind ('category' when only the class is named);
    ``object_name``: the class the sentence names; ``distractor_ids``: the other objects of that
    class in the scene.
    """

    text: str
    target_ids: list[int]
    eval_type: str
    relation: str
    object_name: str
    descriptors: list[Descriptor] = field(default_factory=list)
    distractor_ids: list[int] = field(default_factory=list)

    @property
    def scanrefer_eval_type(self) -> str | None:
        """'unique' / 'multiple' for single-target sentences, None for the others."""
        return {"st_wo_d": "unique", "st_w_d": "multiple"}.get(self.eval_type)

    def to_scanrefer(self, scene_id: str, ann_id: int) -> dict[str, Any]:
        """A ScanRefer JSON entry (string ids as ScanRefer), plus ``eval_type`` and ``relation``."""
        et = self.scanrefer_eval_type
        if et is None:
            raise ValueError(f"ScanRefer entries need exactly one target; {self.text!r} is {self.eval_type}")
        return {"scene_id": scene_id, "object_id": str(self.target_ids[0]),
                "object_name": self.object_name.replace(" ", "_"), "ann_id": str(ann_id),
                "description": self.text, "token": _tokens(self.text), "eval_type": et, "relation": self.relation}

    def to_multi3drefer(self, scene_id: str, ann_id: int) -> dict[str, Any]:
        """A Multi3DRefer JSON entry (integer ids), plus ``relation``."""
        return {"scene_id": scene_id, "object_ids": [int(i) for i in self.target_ids],
                "object_name": self.object_name.replace(" ", "_"), "ann_id": int(ann_id),
                "description": self.text, "eval_type": self.eval_type, "relation": self.relation}


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    for w in text.split():
        core = w.rstrip(".,")
        if core:
            out.append(core)
        out.extend(ch for ch in w[len(core):])
    return out


@dataclass
class ExpressionConfig:
    """How many sentences of each kind a scene gets."""

    per_object: int = 2  # single-target sentences per object (at most)
    multi_per_scene: int = 5  # several-target sentences (at most)
    zero_per_scene: int = 4  # zero-target sentences: about half with distractors, half without
    p_plain_unique: float = 0.25  # unique targets named by their class alone
    p_extra_descriptor: float = 0.3  # add a second true descriptor to a disambiguated sentence
    max_viewpoints: int = 3

    def __post_init__(self) -> None:
        for k in ("per_object", "multi_per_scene", "zero_per_scene", "max_viewpoints"):
            v = getattr(self, k)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{k} must be a non-negative int, got {v!r}")
        for k in ("p_plain_unique", "p_extra_descriptor"):
            v = getattr(self, k)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{k} must be in [0, 1], got {v!r}")


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


# ---- the generator --------------------------------------------------------------------------------

def class_nouns(cls: str, variants: Sequence[str] = ()) -> tuple[str, ...]:
    """Nouns for a class; the variant's own nouns join when all objects share one variant."""
    base = NOUNS[cls]
    vs = set(variants)
    if len(vs) == 1:
        base = base + _VARIANT_NOUNS.get((cls, next(iter(vs))), ())
    return base


class _Grammar:
    """Word choice for one scene: nouns, anchor phrases, relation phrases, sentence frames."""

    def __init__(self, g: SceneGeometry, rng: np.random.Generator) -> None:
        self.g = g
        self.rng = rng
        self.variants: dict[str, list[str]] = {}
        for o in g.objects:
            self.variants.setdefault(o.name, []).append(o.variant)

    def pick(self, seq: Sequence[str]) -> str:
        return seq[int(self.rng.integers(len(seq)))]

    def noun(self, cls: str) -> str:
        return self.pick(class_nouns(cls, self.variants.get(cls, ())))

    def colour(self, c: str) -> str:
        return self.pick(_COLOUR_WORDS.get(c, (c,)))

    def anchor(self, a: int, with_colour: bool) -> str:
        o = self.g.objects[a]
        n = self.noun(o.name)
        return f"the {self.colour(o.color_name)} {n}" if with_colour else f"the {n}"

    def rel(self, d: Descriptor, refs: dict[int, bool], plural: bool = False) -> str:
        if d.kind == "between":
            a, b = d.anchors if self.rng.random() < 0.5 else d.anchors[::-1]
            return self.pick(_REL_WORDS["between"]).format(A=self.anchor(a, refs[a]), B=self.anchor(b, refs[b]))
        words = _PLURAL_NEXT if (plural and d.kind == "next_to") else _REL_WORDS[d.kind]
        return self.pick(words).format(A=self.anchor(d.anchors[0], refs[d.anchors[0]]))

    def view(self, v: int, refs: dict[int, bool]) -> str:
        return self.pick(_VIEW).format(V=self.anchor(v, refs[v]))


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:] if s else s


def _sentence(gr: _Grammar, cls: str, descs: list[Descriptor], refs: dict[int, bool], n_class: int) -> str:
    """One singular sentence naming an object of ``cls`` with the given (true) descriptors."""
    rng = gr.rng
    noun = gr.noun(cls)
    colour = next((d.value for d in descs if d.kind == "colour"), None)
    rels = [d for d in descs if d.kind in _PAIR or d.kind in ("left_of", "right_of", "between")]
    sup = next((d for d in descs if d.kind in ("size", "closest", "farthest")), None)
    adj = (gr.colour(colour) + " ") if colour else ""
    if sup is not None:
        two = n_class == 2 and rng.random() < 0.5
        if sup.kind == "size":
            if two:
                w = gr.pick(_CMP_WORDS[sup.value])
                frames = (f"the {w} {adj}{noun}", f"the {w} of the two {pluralize(noun)}",
                          f"it is the {w} {noun} of the two")
            else:
                w = gr.pick(_SUP_WORDS[sup.value])
                frames = (f"the {w} {adj}{noun}", f"the {adj}{noun} that is the {w}",
                          f"the {w} of the {pluralize(noun)}", f"of all the {pluralize(noun)}, the {w} one",
                          f"find the {w} {adj}{noun}")
        else:
            a = sup.anchors[0]
            words = _DIST_CMP[sup.kind] if two else _DIST_WORDS[sup.kind]
            r = gr.pick(words).format(A=gr.anchor(a, refs[a]))
            frames = (f"the {adj}{noun} {r}", f"the {adj}{noun} that is {r}",
                      f"of all the {pluralize(noun)}, the one {r}", f"find the {adj}{noun} {r}")
        return gr.pick(frames) + "."
    view = None
    for d in rels:
        if d.kind in ("left_of", "right_of"):
            view = gr.view(d.viewpoint, refs)
    if not rels:
        frames = (f"the {adj}{noun}.", f"there is {_article(adj or noun)} {adj}{noun} in the room.",
                  f"find the {adj}{noun}.", f"it is {_article(adj or noun)} {adj}{noun}.",
                  f"the {adj}{noun} in this room.")
        if colour and rng.random() < 0.3:
            frames = (f"the {noun} that is {gr.colour(colour)}.", f"find the {noun} which is {gr.colour(colour)}.")
        return gr.pick(frames)
    phrases = [gr.rel(d, refs) for d in rels]
    r = " and ".join(phrases)
    art = _article(adj or noun)
    frames = [f"the {adj}{noun} {r}.", f"there is {art} {adj}{noun} {r}.", f"find the {adj}{noun} that is {r}.",
              f"it is the {adj}{noun} {r}.", f"the {adj}{noun} is {r}.", f"select the {adj}{noun} {r}.",
              f"look for the {adj}{noun} {r}.", f"{art} {adj}{noun} {r}."]
    if len(phrases) == 1:
        frames += [f"{r}, there is {art} {adj}{noun}.", f"this is {art} {adj}{noun}. it is {r}."]
    else:
        frames += [f"this is {art} {adj}{noun} {phrases[0]}. it is also {phrases[1]}."]
    s = gr.pick(frames)
    if view is not None:
        s = f"{view}, {s}" if rng.random() < 0.6 else f"{s[:-1]}, {view}."
    return s


def _plural_sentence(gr: _Grammar, cls: str, descs: list[Descriptor], refs: dict[int, bool], n: int) -> str:
    noun = gr.noun(cls)
    nouns = pluralize(noun)
    colour = next((d.value for d in descs if d.kind == "colour"), None)
    adj = (gr.colour(colour) + " ") if colour else ""
    rels = [d for d in descs if d.kind != "colour"]
    num = _NUMBERS.get(n, str(n))
    if not rels:
        frames = [f"all the {adj}{nouns}.", f"all {adj}{nouns} in the room.", f"every {adj}{noun} in the room.",
                  f"the {num} {adj}{nouns}.", f"find all the {adj}{nouns}."]
        if n == 2:
            frames.append(f"both {adj}{nouns}.")
        return gr.pick(frames)
    r = " and ".join(gr.rel(d, refs, plural=True) for d in rels)
    frames = [f"all the {adj}{nouns} {r}.", f"the {num} {adj}{nouns} {r}.", f"every {adj}{noun} {r}.",
              f"find all {adj}{nouns} that are {r}.", f"there are {num} {adj}{nouns} {r}.", f"the {adj}{nouns} {r}."]
    if n == 2:
        frames.append(f"both {adj}{nouns} {r}.")
    s = gr.pick(frames)
    view = next((d.viewpoint for d in rels if d.kind in ("left_of", "right_of")), None)
    if view is not None:
        s = f"{gr.view(view, refs)}, {s}"
    return s


class _Generator:
    """Enumerates the true / false descriptors of a scene and turns choices into sentences."""

    def __init__(self, scene: "SyntheticScene", rng: np.random.Generator, cfg: ExpressionConfig) -> None:
        self.scene = scene
        self.rng = rng
        self.cfg = cfg
        g = self.g = SceneGeometry(scene.objects)
        self.gr = _Grammar(g, rng)
        self.ids = np.flatnonzero(~np.isin(g.names, _STRUCTURE))
        self.by_class: dict[str, np.ndarray] = {}
        for i in self.ids:
            self.by_class.setdefault(str(g.names[i]), []).append(int(i))  # type: ignore[arg-type]
        self.by_class = {k: np.asarray(v) for k, v in self.by_class.items()}
        # Referable anchors: the only one of their class, or the only one of their class in their colour.
        self.refs: dict[int, bool] = {}
        for cls, members in self.by_class.items():
            if len(members) == 1:
                self.refs[int(members[0])] = False
                continue
            if not _colourable(g, members):
                continue
            cols = g.colors[members]
            for m, c in zip(members, cols):
                if (cols == c).sum() == 1:
                    self.refs[int(m)] = True
        self.anchors = np.array(sorted(self.refs), dtype=np.int64)
        n_anchor = len(self.anchors)
        ii = self.ids[:, None]
        aa = self.anchors[None, :] if n_anchor else np.zeros((1, 0), np.int64)
        self.pair = {k: g.pair(k, ii, aa) for k in _PAIR}  # (len(ids), n_anchor)
        views = [int(a) for a in self.anchors if not np.isnan(g.front[a, 0])]
        pref = {"door": 0, "window": 1, "bed": 2, "sofa": 3, "monitor": 4}
        views.sort(key=lambda a: (pref.get(str(g.names[a]), 9), a))
        self.views = views[: cfg.max_viewpoints]
        self.side = {(k, v): g.side(k, ii, aa, v) for k in ("left_of", "right_of") for v in self.views}
        self.row = {int(i): r for r, i in enumerate(self.ids)}
        pairs = [(int(a), int(b)) for x, a in enumerate(self.anchors) for b in self.anchors[x + 1:]
                 if 0.8 <= np.linalg.norm(g.c[a, :2] - g.c[b, :2]) <= 5.0]
        self.between_pairs = pairs
        if pairs:
            pa = np.array(pairs)
            self.betw = g.between(ii, pa[None, :, 0], pa[None, :, 1])  # (len(ids), n_pairs)
        else:
            self.betw = np.zeros((len(self.ids), 0), np.int8)

    # -- descriptor states over a set of objects -------------------------------------------------
    def _candidates(self, cls: str) -> list[tuple[Descriptor, np.ndarray]]:
        """Every descriptor worth saying about objects of ``cls``, with its state per member."""
        g = self.g
        members = self.by_class[cls]
        rows = np.array([self.row[int(m)] for m in members])
        out: list[tuple[Descriptor, np.ndarray]] = []
        if _colourable(g, members):
            for c in sorted(set(g.colors[members].tolist())):
                st = np.where(g.colors[members] == c, TRUE, FALSE).astype(np.int8)
                out.append((Descriptor("colour", value=c), st))
        if len(members) >= 2:
            for v in _SIZE:
                out.append((Descriptor("size", value=v), g.superlative("size", v, members)))
        for j, a in enumerate(self.anchors):
            a = int(a)
            if g.names[a] == cls:
                continue
            for k in _PAIR:
                st = self.pair[k][rows, j]
                if (st == TRUE).any():
                    out.append((Descriptor(k, (a,)), st))
            if len(members) >= 2:
                for k in ("closest", "farthest"):
                    out.append((Descriptor(k, (a,)), g.superlative(k, "", members, a)))
            for v in self.views:
                if g.names[v] == cls:
                    continue
                for k in ("left_of", "right_of"):
                    st = self.side[(k, v)][rows, j]
                    if (st == TRUE).any():
                        out.append((Descriptor(k, (a,), viewpoint=v), st))
        for p, (a, b) in enumerate(self.between_pairs):
            if g.names[a] == cls or g.names[b] == cls:
                continue
            st = self.betw[rows, p]
            if (st == TRUE).any():
                out.append((Descriptor("between", (a, b)), st))
        return out

    def _weight(self, d: Descriptor) -> float:
        return _REL_WEIGHT.get(d.kind, 1.0)

    def _choose(self, items: list, weights: list[float], k: int) -> list:
        if not items:
            return []
        w = np.asarray(weights, float)
        idx = self.rng.choice(len(items), size=min(k, len(items)), replace=False, p=w / w.sum())
        return [items[int(i)] for i in idx]

    # -- sentence kinds ------------------------------------------------------------------------------
    def singles(self) -> list[Expression]:
        out: list[Expression] = []
        for cls, members in self.by_class.items():
            cands = self._candidates(cls)
            for t_pos, t in enumerate(members):
                others = [m for m in range(len(members)) if m != t_pos]
                true_t = [(d, st) for d, st in cands if st[t_pos] == TRUE]
                choices: list[list[Descriptor]] = []
                weights: list[float] = []
                if not others:  # unique: the class alone, or with something true about it
                    simple = [d for d, _ in true_t if d.kind not in ("size", "closest", "farthest")]
                    for d in simple:
                        choices.append([d])
                        weights.append(self._weight(d))
                    # The bare class comes first with probability p_plain_unique.
                    p = self.cfg.p_plain_unique
                    choices.append([])
                    weights.append(p / max(1e-9, 1 - p) * sum(weights) if simple else 1.0)
                    et = "st_wo_d"
                else:
                    single = [(d, st) for d, st in true_t if (st[others] == FALSE).all()]
                    for d, _ in single:
                        choices.append([d])
                        weights.append(self._weight(d))
                    if not single:  # two descriptors, each distractor false on one of them
                        plain = [(d, st) for d, st in true_t if d.kind not in ("size", "closest", "farthest")]
                        for x in range(len(plain)):
                            for y in range(x + 1, len(plain)):
                                d1, s1 = plain[x]
                                d2, s2 = plain[y]
                                if not _combinable(d1, d2):
                                    continue
                                if ((s1[others] == FALSE) | (s2[others] == FALSE)).all():
                                    choices.append([d1, d2])
                                    weights.append(0.5 * (self._weight(d1) + self._weight(d2)))
                    et = "st_w_d"
                for ch in self._choose(choices, weights, self.cfg.per_object):
                    ch = list(ch)
                    if (et == "st_w_d" and len(ch) == 1 and ch[0].kind not in ("size", "closest", "farthest")
                            and self.rng.random() < self.cfg.p_extra_descriptor):
                        extra = [d for d, _ in true_t if d.kind not in ("size", "closest", "farthest")
                                 and _combinable(ch[0], d)]
                        if extra:
                            ch.append(extra[int(self.rng.integers(len(extra)))])
                    ch.sort(key=lambda d: d.kind != "colour")
                    text = _sentence(self.gr, cls, ch, self.refs, len(members))
                    rel = next((d.kind for d in ch if d.kind != "colour"), ch[0].kind if ch else "category")
                    out.append(Expression(text, [int(t)], et, rel, cls, ch,
                                          [int(members[m]) for m in others]))
        return out

    def multis(self) -> list[Expression]:
        pool: list[tuple[str, list[Descriptor], np.ndarray]] = []
        weights: list[float] = []
        for cls, members in self.by_class.items():
            if len(members) < 2:
                continue
            pool.append((cls, [], members))
            weights.append(0.6)
            for d, st in self._candidates(cls):
                if d.kind in ("size", "closest", "farthest"):
                    continue
                if (st == TRUE).sum() >= 2 and ((st == TRUE) | (st == FALSE)).all():
                    pool.append((cls, [d], members[st == TRUE]))
                    weights.append(self._weight(d))
        out = []
        seen: set[tuple[int, ...]] = set()
        for cls, descs, tg in self._choose(pool, weights, len(pool)):
            key = tuple(int(t) for t in tg)
            if key in seen:  # one sentence per target set
                continue
            if len(out) >= self.cfg.multi_per_scene:
                break
            seen.add(key)
            members = self.by_class[cls]
            text = _plural_sentence(self.gr, cls, descs, self.refs, len(tg))
            rel = descs[0].kind if descs else "category"
            out.append(Expression(text, [int(t) for t in tg], "mt", rel, cls, list(descs),
                                  [int(m) for m in members if m not in set(tg.tolist())]))
        return out

    def zeros(self) -> list[Expression]:
        from bqnet_model.data.furniture import CLASS_PALETTE, COLORS

        rng = self.rng
        n = self.cfg.zero_per_scene
        n_wo = (n + int(rng.integers(2))) // 2
        out: list[Expression] = []
        absent = [c for c in NOUNS if c not in self.by_class]
        # Without distractors: a class the room does not have, maybe with a colour or a relation.
        for cls in self._choose(absent, [1.0] * len(absent), n_wo):
            descs: list[Descriptor] = []
            u = rng.random()
            if u < 0.35 and len(self.anchors):
                a = int(self.anchors[int(rng.integers(len(self.anchors)))])
                kinds = ["next_to"]
                host = str(self.g.names[a])
                if cls in _SMALL and host in _HOSTS:
                    kinds.append("on")
                if cls in ("box", "trash can") and host in ("desk", "table"):
                    kinds.append("under")
                if not np.isnan(self.g.front[a, 0]) and cls not in _WALL_MOUNTED:
                    kinds.append("in_front_of")
                if cls in ("picture",) and host in ("bed", "sofa", "desk"):
                    kinds.append("above")
                descs = [Descriptor(self.gr.pick(kinds), (a,))]
            elif u < 0.65:
                descs = [Descriptor("colour", value=self.gr.pick(CLASS_PALETTE.get(cls, tuple(COLORS))))]
            text = _sentence(self.gr, cls, descs, self.refs, 0)
            out.append(Expression(text, [], "zt_wo_d", descs[0].kind if descs else "category", cls, descs, []))
        # With distractors: the class is here, but no object of it fits the description.
        pool: list[tuple[str, Descriptor]] = []
        weights: list[float] = []
        for cls, members in self.by_class.items():
            if _colourable(self.g, members):
                present = set(self.g.colors[members].tolist())
                for c in CLASS_PALETTE.get(cls, ()):
                    if c not in present:
                        pool.append((cls, Descriptor("colour", value=c)))
                        weights.append(0.15)
            rows = np.array([self.row[int(m)] for m in members])
            for j, a in enumerate(self.anchors):
                a = int(a)
                host = str(self.g.names[a])
                if host == cls:
                    continue
                kinds = ["next_to"]
                if cls in _SMALL and host in _HOSTS:
                    kinds.append("on")
                if cls in ("box", "trash can", "chair") and host in ("desk", "table"):
                    kinds.append("under")
                for k in kinds:
                    if (self.pair[k][rows, j] == FALSE).all():
                        pool.append((cls, Descriptor(k, (a,))))
                        weights.append(0.05)
        for cls, d in self._choose(pool, weights, n - len(out)):
            members = self.by_class[cls]
            text = _sentence(self.gr, cls, [d], self.refs, len(members))
            out.append(Expression(text, [], "zt_w_d", d.kind, cls, [d], [int(m) for m in members]))
        return out


def _combinable(d1: Descriptor, d2: Descriptor) -> bool:
    """Two claims read well together: different kinds, different anchors, one viewpoint at most."""
    sides = ("left_of", "right_of")
    return (d1.kind != d2.kind and not (d1.kind in sides and d2.kind in sides)
            and not set(d1.anchors) & set(d2.anchors))


def _colourable(g: SceneGeometry, members: np.ndarray) -> bool:
    """Whether colour words apply to the class (plants are green whatever their pot)."""
    return all(g.colors[m] != "" for m in members) and str(g.names[members[0]]) != "plant"


def generate_expressions(scene: "SyntheticScene", rng: np.random.Generator | int | None = None,
                         config: ExpressionConfig | None = None) -> list[Expression]:
    """Verified referring expressions for a generated scene (deterministic for a given ``rng``).

    Single-target sentences for every object the grammar can single out, several-target ones
    (all chairs / the red ones / those next to the table), zero-target ones; shuffled.
    """
    if not hasattr(scene, "objects") or not hasattr(scene, "instance"):
        raise TypeError(f"scene must be a SyntheticScene, got {type(scene).__name__}")
    if config is not None and not isinstance(config, ExpressionConfig):
        raise TypeError(f"config must be an ExpressionConfig, got {type(config).__name__}")
    if rng is None or isinstance(rng, (int, np.integer)):
        rng = np.random.default_rng(0 if rng is None else int(rng))
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator or an int seed, got {type(rng).__name__}")
    cfg = config or ExpressionConfig()
    gen = _Generator(scene, rng, cfg)
    exprs = gen.singles() + gen.multis() + gen.zeros()
    order = rng.permutation(len(exprs))
    return [exprs[int(i)] for i in order]


def demo_expressions(scene: "SyntheticScene") -> list[Expression]:
    """The demo room's fixed sentences, checked against its geometry (RuntimeError if one fails).

    "the chair next to the desk" (one of four chairs), "all the chairs around the table" (three),
    "the bathtub next to the sofa" (no bathtub) and "the yellow chair" (no chair is yellow).
    """
    g = SceneGeometry(scene.objects)
    only = {}
    for cls in ("desk", "table", "sofa"):
        ids = np.flatnonzero(g.names == cls)
        if len(ids) != 1:
            raise RuntimeError(f"demo room must hold exactly one {cls}, has {len(ids)}")
        only[cls] = int(ids[0])
    chairs = np.flatnonzero(g.names == "chair")
    out = []
    nd = Descriptor("next_to", (only["desk"],))
    st = evaluate(g, nd, chairs)
    if (st == TRUE).sum() != 1 or ((st != TRUE) & (st != FALSE)).any():
        raise RuntimeError(f"demo room: 'the chair next to the desk' is not unambiguous (states {st.tolist()})")
    t = int(chairs[st == TRUE][0])
    out.append(Expression("the chair next to the desk", [t], "st_w_d", "next_to", "chair", [nd],
                          [int(c) for c in chairs if c != t]))
    nt = Descriptor("next_to", (only["table"],))
    st = evaluate(g, nt, chairs)
    if (st == TRUE).sum() < 2 or (st == UNSURE).any():
        raise RuntimeError(f"demo room: 'the chairs around the table' is not clear-cut (states {st.tolist()})")
    tg = [int(c) for c in chairs[st == TRUE]]
    out.append(Expression("all the chairs around the table", tg, "mt", "next_to", "chair", [nt],
                          [int(c) for c in chairs if int(c) not in tg]))
    if (g.names == "bathtub").any():
        raise RuntimeError("demo room must not hold a bathtub")
    out.append(Expression("the bathtub next to the sofa", [], "zt_wo_d", "next_to", "bathtub",
                          [Descriptor("next_to", (only["sofa"],))], []))
    cy = Descriptor("colour", value="yellow")
    if (evaluate(g, cy, chairs) != FALSE).any():
        raise RuntimeError("demo room: a chair is yellow")
    out.append(Expression("the yellow chair", [], "zt_w_d", "colour", "chair", [cy], [int(c) for c in chairs]))
    return out
