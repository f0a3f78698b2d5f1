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

The relations are evaluated in ``relations.py`` and worded in ``grammar.py``; this module draws
the sentences and keeps only those that pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bqnet_synth.grammar import NOUNS, _Grammar, _REL_WEIGHT, _plural_sentence, _sentence
from bqnet_synth.parts import CLASS_PALETTE, COLORS
from bqnet_synth.relations import Descriptor, FALSE, SceneGeometry, TRUE, UNSURE, _HOSTS, _PAIR, _SIZE, _SMALL, _STRUCTURE, _WALL_MOUNTED, evaluate
from bqnet_synth.scene import SyntheticScene
from bqnet_synth.styles import apply_styles


@dataclass
class Expression:
    """A referring expression with its ground truth.

    ``target_ids``: instance ids named (empty: no target); ``eval_type``: Multi3DRefer's type;
    ``relation``: the main descriptor's kind ('category' when only the class is named);
    ``object_name``: the class the sentence names; ``distractor_ids``: the other objects of that
    class in the scene; ``anchor_ids`` (derived from the descriptors): the other objects the
    sentence names, so training can supervise them too. ``style``: how the sentence is worded
    ('plain' = the grammar's own; the others come from ``bqnet_synth.styles``); ``typo``: whether
    a word was misspelt on purpose; ``contrast``: claims the sentence makes as *false* for the
    targets ("..., not the one by the window"), each checked FALSE for them.
    """

    text: str
    target_ids: list[int]
    eval_type: str
    relation: str
    object_name: str
    descriptors: list[Descriptor] = field(default_factory=list)
    distractor_ids: list[int] = field(default_factory=list)
    style: str = "plain"
    typo: bool = False
    contrast: list[Descriptor] = field(default_factory=list)

    @property
    def anchor_ids(self) -> list[int]:
        """Every object the descriptors name besides the targets, in order of first use, each once:
        the relations' anchors and the left/right viewpoint ("when facing the door"), which the
        sentence names just like an anchor, and the anchors of the contrasts. Empty for class,
        colour and size-only sentences.
        Derived rather than stored, so it cannot disagree with the descriptors."""
        out: list[int] = []
        for d in (*self.descriptors, *self.contrast):
            for a in (*d.anchors, *((d.viewpoint,) if d.viewpoint >= 0 else ())):
                if int(a) not in out:
                    out.append(int(a))
        return out

    @property
    def scanrefer_eval_type(self) -> str | None:
        """'unique' / 'multiple' for single-target sentences, None for the others."""
        return {"st_wo_d": "unique", "st_w_d": "multiple"}.get(self.eval_type)

    def to_scanrefer(self, scene_id: str, ann_id: int) -> dict[str, Any]:
        """A ScanRefer JSON entry (string ids as ScanRefer), plus ``eval_type``, ``relation``, ``style``,
        ``typo`` and ``anchor_ids`` (integers: not a ScanRefer field, so no string convention to follow)."""
        et = self.scanrefer_eval_type
        if et is None:
            raise ValueError(f"ScanRefer entries need exactly one target; {self.text!r} is {self.eval_type}")
        return {"scene_id": scene_id, "object_id": str(self.target_ids[0]),
                "object_name": self.object_name.replace(" ", "_"), "ann_id": str(ann_id),
                "description": self.text, "token": _tokens(self.text), "eval_type": et, "relation": self.relation,
                "anchor_ids": self.anchor_ids, "style": self.style, "typo": self.typo}

    def to_multi3drefer(self, scene_id: str, ann_id: int) -> dict[str, Any]:
        """A Multi3DRefer JSON entry (integer ids), plus ``relation``, ``anchor_ids``, ``style`` and ``typo``."""
        return {"scene_id": scene_id, "object_ids": [int(i) for i in self.target_ids],
                "object_name": self.object_name.replace(" ", "_"), "ann_id": int(ann_id),
                "description": self.text, "eval_type": self.eval_type, "relation": self.relation,
                "anchor_ids": self.anchor_ids, "style": self.style, "typo": self.typo}


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    for w in text.split():
        core = w.rstrip(".,?")
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
    styles: float = 0.0  # share of sentences reworded by bqnet_synth.styles (0: the grammar's text, bit for bit)
    typo_rate: float = 0.0  # share of sentences with one misspelt word
    held_out: bool = False  # reword every sentence with the held-out word pool (a check set; ignores styles)

    def __post_init__(self) -> None:
        for k in ("per_object", "multi_per_scene", "zero_per_scene", "max_viewpoints"):
            v = getattr(self, k)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{k} must be a non-negative int, got {v!r}")
        for k in ("p_plain_unique", "p_extra_descriptor", "styles", "typo_rate"):
            v = getattr(self, k)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{k} must be in [0, 1], got {v!r}")
        if not isinstance(self.held_out, (bool, np.bool_)):
            raise TypeError(f"held_out must be a bool, got {self.held_out!r}")


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
    (all chairs / the red ones / those next to the table), zero-target ones; shuffled; then a
    share reworded and misspelt as ``config.styles`` / ``typo_rate`` / ``held_out`` ask.
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
    exprs = [exprs[int(i)] for i in order]
    if cfg.styles > 0 or cfg.typo_rate > 0 or cfg.held_out:  # draws from rng only now: the rest stays as without
        exprs = apply_styles(gen, exprs, rng, cfg.styles, cfg.typo_rate, bool(cfg.held_out))
    return exprs


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
