"""Generated referring expressions for real labelled scans (ScanNet), checked on their geometry.

The synthetic grammar (``expressions.generate_expressions``) needs a scene of ``SceneObject``
boxes. A real scan has per-point instance and class labels instead, so ``real_scene_geometry``
builds the objects from the points: an axis-aligned box per instance (min / max of its points,
heights measured from the floor so ``under``'s "standing on the floor" test means what it says),
the class from the project's mapping, no front (ScanNet has none: no left/right/in front/behind
claims), and a colour name only where the object's mean colour is clearly one of the generator's
colour names (else '', which turns colour words off for the whole class in that scan).

Real scans hold objects the vocabulary does not name but a listener could take for one of its
classes ("storage bin" for a bin, "shelf" for a bookshelf, "tv" for a screen). Those, vocabulary
objects too small to be a fair target, and vocabulary objects the class's nouns do not fit (a
"doorframe" is of class door, but nobody calls it "the door": its door has a box of its own) join
the geometry as *proxies*: members of the
class they resemble, so every generated sentence must rule them out like any distractor, but
never named as a target or an anchor (``generate_real_expressions`` drops sentences that would).
Sentences come back with the scan's own instance ids (ScanNet v2 objectIds).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from bqnet_model.data.classes import CLASSES
from bqnet_synth import expressions as ex
from bqnet_synth.grammar import _VARIANT_NOUNS, NOUNS
from bqnet_synth.parts import COLORS
from bqnet_synth.relations import _STRUCTURE
from bqnet_synth.scene import SceneObject, SyntheticScene

__all__ = [
    "MIN_TARGET_POINTS",
    "RealGeometry",
    "colour_name",
    "confusable_class",
    "named_as",
    "real_scene_geometry",
    "generate_real_expressions",
]

MIN_TARGET_POINTS = 30  # fewer points than this: too little of the object for a fair mask target
_COLOUR_RATIO = 0.6  # nearest named colour must be this much closer than the second nearest
_COLOUR_MAX_DIST = 60.0  # and within this RGB distance of it (a scan's lighting shifts colours)
_PALETTE_NAMES = tuple(COLORS)
_PALETTE = np.asarray([COLORS[c] for c in _PALETTE_NAMES], np.float64)


def _class_heads() -> dict[str, set[str]]:
    """{class: head words of every noun the grammar may use for it (variants included)}."""
    heads: dict[str, set[str]] = {}
    for cls, nouns in NOUNS.items():
        heads.setdefault(cls, set()).update(n.split(" ")[-1] for n in nouns)
    for (cls, _), nouns in _VARIANT_NOUNS.items():
        heads.setdefault(cls, set()).update(n.split(" ")[-1] for n in nouns)
    return heads


_CLASS_HEADS = _class_heads()


def _head_forms(raw_label: str) -> tuple[str, ...]:
    """The raw label's last word and its singulars ("kitchen cabinets" -> cabinets, cabinet)."""
    words = re.sub(r"[_\s]+", " ", raw_label.strip().lower()).split(" ")
    head = words[-1] if words else ""
    if not head:
        return ()
    return tuple(dict.fromkeys((head, head[:-1] if head.endswith("s") else head,
                                head[:-2] if head.endswith("es") else head)))


def confusable_class(raw_label: str) -> str | None:
    """The vocabulary class whose nouns a raw label's head word shares ("storage bin" -> trash can),
    None when it shares none. Used for objects mapped to no class, which the grammar cannot name
    but a listener could mistake for one it does."""
    for h in _head_forms(raw_label):
        for cls, heads in _CLASS_HEADS.items():
            if h in heads:
                return cls
    return None


def named_as(raw_label: str, cls: str) -> bool:
    """Whether the grammar's nouns for ``cls`` fit an object labelled ``raw_label``: its head word is
    one of theirs ("office chair" is a chair; a "doorframe", mapped to door, is not called a door)."""
    return any(h in _CLASS_HEADS.get(cls, ()) for h in _head_forms(raw_label))


def colour_name(rgb: np.ndarray) -> str:
    """The generator's colour name for a mean colour, '' when no name is clearly nearest."""
    d = np.linalg.norm(_PALETTE - np.asarray(rgb, np.float64).reshape(1, 3), axis=1)
    order = np.argsort(d)
    best, second = d[order[0]], d[order[1]]
    if best <= _COLOUR_MAX_DIST and best <= _COLOUR_RATIO * second:
        return _PALETTE_NAMES[int(order[0])]
    return ""


@dataclass
class RealGeometry:
    """A real scan's objects as the grammar sees them.

    ``scene`` holds the ``SceneObject`` list (local ids 0..M-1); ``scan_ids[k]`` is object k's id
    in the scan; ``targetable[k]`` says whether sentences may name object k (False: a proxy).
    """

    scene: SyntheticScene
    scan_ids: np.ndarray  # (M,) int64
    targetable: np.ndarray  # (M,) bool
    floor_z: float


def _floor_height(xyz: np.ndarray, semantic: np.ndarray) -> float:
    floor = semantic == CLASSES.index("floor")
    z = xyz[floor, 2] if floor.sum() >= 20 else xyz[:, 2]
    return float(np.percentile(z, 50 if floor.sum() >= 20 else 1))


def real_scene_geometry(scene_id: str, xyz: np.ndarray, rgb: np.ndarray, semantic: np.ndarray,
                        instance: np.ndarray, object_names: Any, n_classes: int = len(CLASSES)) -> RealGeometry | None:
    """The grammar's objects for one labelled scan (arrays as in the per-scene ``.npz``); None when
    the scan has no object the grammar could name."""
    xyz = np.asarray(xyz, np.float64)
    semantic = np.asarray(semantic, np.int64)
    instance = np.asarray(instance, np.int64)
    names = [str(s) for s in object_names]
    floor_z = _floor_height(xyz, semantic)
    objs: list[SceneObject] = []
    scan_ids: list[int] = []
    targetable: list[bool] = []
    ids, counts = np.unique(instance[instance >= 0], return_counts=True)
    labelled = np.flatnonzero(instance >= 0)
    order = np.argsort(instance[labelled], kind="stable")
    starts = np.r_[0, np.cumsum(counts)]
    for k, oid in enumerate(ids.tolist()):
        pts = labelled[order[starts[k]:starts[k + 1]]]
        sem = semantic[pts]
        cid = int(np.argmax(np.bincount(np.where(sem >= 0, sem, n_classes + 1), minlength=n_classes + 2)))
        raw = names[oid] if oid < len(names) else ""
        if cid < n_classes:
            cls = CLASSES[cid]
            ok = bool(counts[k] >= MIN_TARGET_POINTS) and (not raw or named_as(raw, cls))
        else:
            cls, ok = confusable_class(raw) if raw else None, False
        if cls is None or cls in _STRUCTURE or cls not in NOUNS:
            continue
        p = xyz[pts]
        lo, hi = p.min(axis=0), p.max(axis=0)
        lo[2] -= floor_z
        hi[2] -= floor_z
        colour = colour_name(np.asarray(rgb, np.float64)[pts].mean(axis=0))
        objs.append(SceneObject(len(objs), cls, colour, lo, hi, None))
        scan_ids.append(int(oid))
        targetable.append(bool(ok))
    if not any(targetable):
        return None
    empty = np.zeros(0, np.int64)
    sc = SyntheticScene(scene_id, np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), empty, empty, objs)
    return RealGeometry(sc, np.asarray(scan_ids, np.int64), np.asarray(targetable, bool), floor_z)


def _names_only_targetable(e: ex.Expression, targetable: np.ndarray) -> bool:
    named = list(e.target_ids) + e.anchor_ids
    return all(bool(targetable[i]) for i in named)


def generate_real_expressions(geom: RealGeometry, rng: np.random.Generator,
                              config: ex.ExpressionConfig | None = None) -> list[ex.Expression]:
    """The grammar's verified sentences for a real scan, in the scan's instance ids.

    Every claim was checked by ``expressions.generate_expressions`` on the boxes; sentences that
    name a proxy (as target, anchor or viewpoint) are dropped; target and distractor ids are
    mapped to the scan's ids (distractors keep the proxies: they are what a listener must rule out).
    """
    out = []
    for e in ex.generate_expressions(geom.scene, rng, config):
        if not _names_only_targetable(e, geom.targetable):
            continue
        to_scan = geom.scan_ids
        descs, contrast = ([ex.Descriptor(d.kind, tuple(int(to_scan[a]) for a in d.anchors), d.value,
                                          int(to_scan[d.viewpoint]) if d.viewpoint >= 0 else -1) for d in ds]
                           for ds in (e.descriptors, e.contrast))
        out.append(ex.Expression(e.text, [int(to_scan[i]) for i in e.target_ids], e.eval_type, e.relation,
                                 e.object_name, descs, [int(to_scan[i]) for i in e.distractor_ids], e.style,
                                 e.typo, contrast))
    return out
