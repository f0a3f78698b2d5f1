"""The style layer: other surface forms for the grammar's verified sentences, claims unchanged.

A model trained only on the grammar's one style loses much of its accuracy on robot commands,
synonyms, typos and human text, so a share of the sentences (``ExpressionConfig.styles``) is
worded again from the expression's *descriptors* (not by editing its text), which keeps the
target, the anchors and every claim as checked:

- ``command`` / ``question``: "take me to the chair next to the desk", "pick up every box on the
  table", "where is the red lamp?", "is there a bathtub next to the sofa?" (zero-target sentences
  stay meaningful: the answer is "none");
- ``sr3d``: "choose the chair that is closest to the door", "looking at the front of the door,
  choose the chair that is to the left of it" (Sr3D's lowercase templates);
- ``multi``: ScanRefer's "this is a brown chair. it is next to the desk." The extra sentences
  only state descriptors the generator evaluates as TRUE for every target (``_Styler._extras``),
  added to ``Expression.descriptors`` so ``anchor_ids`` names their anchors too;
- ``passive``: "the chair which is placed next to the desk", "the chair, located beside the desk";
- ``casual``: Nr3D's article-less, lowercase text, and "..., not the one by the window" only when
  the generator evaluates that claim as FALSE for the target and TRUE for a distractor
  (``Expression.contrast``).

Every restyled sentence draws its nouns and colours from a wider vocabulary (``style_words``) and
varies case and punctuation. ``held_out`` rewords every sentence with a disjoint word pool (style
names prefixed ``heldout_``), for a check set of wordings no training sentence uses. Typos
(``typo_rate``) change one content word by a swap, drop or doubling of a letter, never into a
word of the vocabulary (so never into another class noun). Style and typo choices draw from two
generators of their own, seeded from the expression generator after it is done, so styles = 0
and typo_rate = 0 leave every sentence as the grammar wrote it.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from bqnet_synth import style_words as W
from bqnet_synth.grammar import NOUNS, _COLOUR_WORDS, _NUMBERS, _VARIANT_NOUNS, _article, class_nouns, pluralize
from bqnet_synth.parts import COLORS
from bqnet_synth.relations import FALSE, TRUE, Descriptor, _PAIR

if TYPE_CHECKING:
    from bqnet_synth.expressions import Expression, _Generator

STYLES: tuple[str, ...] = ("command", "question", "sr3d", "multi", "passive", "casual")
HELD_OUT_PREFIX = "heldout_"
_SIDES = ("left_of", "right_of")
_SUPERLATIVE = ("size", "closest", "farthest")
_CONTRAST_KINDS = (*_PAIR, "between", "colour")


def all_nouns(cls: str) -> frozenset[str]:
    """Every noun (singular and plural) the grammar or the style layer may use for ``cls``."""
    out = set(NOUNS[cls])
    for (c, _), ns in _VARIANT_NOUNS.items():
        if c == cls:
            out.update(ns)
    for pool in W.POOLS:
        out.update(W.EXTRA_NOUNS[pool].get(cls, ()))
        for (c, _), ns in W.EXTRA_VARIANT_NOUNS[pool].items():
            if c == cls:
                out.update(ns)
    return frozenset(out | {pluralize(n) for n in out})


def _lexicon() -> frozenset[str]:
    """The words a typo must never produce: every word of every class noun and colour word."""
    words: set[str] = {"floor", "floors", "wall", "walls"}
    phrases: list[str] = [n for cls in NOUNS for n in all_nouns(cls)]
    phrases += list(COLORS) + [w for ws in _COLOUR_WORDS.values() for w in ws]
    phrases += [w for pool in W.POOLS for ws in W.COLOUR_WORDS[pool].values() for w in ws]
    for p in phrases:
        words.update(re.split(r"[ \-]", p.lower()))
    return frozenset(w for w in words if w)


LEXICON = _lexicon()
_STOP = frozenset("the that which this there these those they them with from into onto room it's its "
                  "where have your thats".split())


class _Styler:
    """Rewords the expressions of one scene; ``gen`` is the expression generator that checked them."""

    def __init__(self, gen: "_Generator", rng: np.random.Generator, held_out: bool) -> None:
        self.gen = gen
        self.g = gen.g
        self.rng = rng
        self.pool = W.HELD_OUT if held_out else W.SEEN
        self.prefix = HELD_OUT_PREFIX if held_out else ""
        self.variants: dict[str, set[str]] = {}
        for o in self.g.objects:
            self.variants.setdefault(o.name, set()).add(o.variant)
        self._cands: dict[str, list[tuple[Descriptor, np.ndarray]]] = {}

    # -- words ------------------------------------------------------------------------------------
    def pick(self, seq: Sequence[str]) -> str:
        return seq[int(self.rng.integers(len(seq)))]

    def words(self, table: dict[str, dict[str, tuple[str, ...]]], key: str) -> tuple[str, ...]:
        return table[self.pool][key]

    def noun(self, cls: str, plural: bool = False, countable: bool = False) -> str:
        """A noun for ``cls``: the grammar's or one of this pool's extras (variant nouns only when the
        whole class in the room is one variant). The held-out pool prefers its own nouns. Plural or
        ``countable`` (after "a"): none of the nouns that only read well after "the" ("curtains")."""
        plural_or_a = plural or countable
        vs = self.variants.get(cls, set())
        extra = list(W.EXTRA_NOUNS[self.pool].get(cls, ()))
        if len(vs) == 1:
            extra += W.EXTRA_VARIANT_NOUNS[self.pool].get((cls, next(iter(vs))), ())
        base = [n for n in class_nouns(cls, tuple(vs)) if not plural_or_a or n not in W.SINGULAR_ONLY]
        extra = [n for n in extra if not plural_or_a or n not in W.SINGULAR_ONLY]
        if extra and self.pool == W.HELD_OUT and self.rng.random() < 0.6:
            n = self.pick(extra)
        else:
            n = self.pick(base + extra)
        return pluralize(n) if plural else n

    def colour(self, c: str) -> str:
        return self.pick(W.COLOUR_WORDS[self.pool][c])

    def anchor(self, a: int) -> str:
        o = self.g.objects[a]
        n = self.noun(o.name)
        return f"the {self.colour(o.color_name)} {n}" if self.gen.refs[a] else f"the {n}"

    def rel(self, d: Descriptor, side_it: bool = False) -> str:
        """A bare phrase for a relation or distance descriptor ("next to the desk")."""
        if d.kind in _SIDES and side_it:
            return self.pick(W.SIDE_OF_IT[self.pool][d.kind])
        if d.kind == "between":
            a, b = d.anchors if self.rng.random() < 0.5 else d.anchors[::-1]
            return self.pick(W.REL_WORDS[self.pool]["between"]).format(A=self.anchor(a), B=self.anchor(b))
        if d.kind in ("closest", "farthest"):
            return self.pick(W.DIST_WORDS[self.pool][d.kind]).format(A=self.anchor(d.anchors[0]))
        return self.pick(W.REL_WORDS[self.pool][d.kind]).format(A=self.anchor(d.anchors[0]))

    def view(self, v: int) -> str:
        return self.pick(W.VIEW_WORDS[self.pool]).format(V=self.anchor(v))

    # -- the generator's states ---------------------------------------------------------------------
    def candidates(self, cls: str) -> list[tuple[Descriptor, np.ndarray]]:
        if cls not in self._cands:
            self._cands[cls] = self.gen._candidates(cls) if cls in self.gen.by_class else []
        return self._cands[cls]

    def _positions(self, e: "Expression") -> tuple[np.ndarray, np.ndarray]:
        members = [int(m) for m in self.gen.by_class[e.object_name]]
        tgt = np.array([members.index(int(t)) for t in e.target_ids], np.int64)
        oth = np.array([k for k in range(len(members)) if k not in set(tgt.tolist())], np.int64)
        return tgt, oth

    def _extras(self, e: "Expression") -> list[Descriptor]:
        """Up to two more claims for a ``multi`` description: descriptors the generator evaluates as
        TRUE for every target, of kinds and anchors the sentence does not use yet."""
        if not e.target_ids or e.object_name not in self.gen.by_class:
            return []
        tgt, _ = self._positions(e)
        used_kinds = {d.kind for d in e.descriptors}
        used_anchors = {a for d in e.descriptors for a in (*d.anchors, d.viewpoint) if a >= 0}
        pool = []
        for d, st in self.candidates(e.object_name):
            if not (st[tgt] == TRUE).all() or d.kind in used_kinds:
                continue
            if (d.kind in _SUPERLATIVE and len(tgt) > 1) or set(d.anchors) & used_anchors:
                continue
            if d.kind in _SIDES and used_kinds & set(_SIDES):
                continue
            pool.append(d)
        out: list[Descriptor] = []
        want = 1 + int(self.rng.integers(2))
        if any(d.kind in _SUPERLATIVE for d in e.descriptors):  # one superlative per description
            pool = [d for d in pool if d.kind not in _SUPERLATIVE]
        for k in self.rng.permutation(len(pool)):
            d = pool[int(k)]
            kinds = {x.kind for x in out}
            if d.kind in kinds or (d.kind in _SIDES and kinds & set(_SIDES)) or (d.kind in _SUPERLATIVE and kinds & set(_SUPERLATIVE)):
                continue
            if set(d.anchors) & {a for x in out for a in x.anchors}:
                continue
            out.append(d)
            if len(out) == want:
                break
        return out

    def _contrast(self, e: "Expression") -> Descriptor | None:
        """A claim FALSE for the (single) target and TRUE for at least one distractor, with anchors the
        sentence does not name: "not the one by the window". None when the generator has none."""
        if e.eval_type != "st_w_d":
            return None
        tgt, oth = self._positions(e)
        named = {a for d in e.descriptors for a in (*d.anchors, d.viewpoint) if a >= 0}
        has_colour = any(d.kind == "colour" for d in e.descriptors)
        pool = [d for d, st in self.candidates(e.object_name)
                if d.kind in _CONTRAST_KINDS and st[tgt[0]] == FALSE and (st[oth] == TRUE).any()
                and not set(d.anchors) & named and not (d.kind == "colour" and has_colour)]
        return pool[int(self.rng.integers(len(pool)))] if pool else None

    # -- sentences ----------------------------------------------------------------------------------
    def restyle(self, e: "Expression") -> "Expression":
        plural = e.eval_type == "mt"
        has_tail = any(d.kind != "colour" and d.kind != "size" for d in e.descriptors)
        options = [s for s in STYLES if not (s == "multi" and not e.target_ids) and not (s == "passive" and not has_tail)]
        style = self.pick(options)
        extras: list[Descriptor] = []
        contrast: list[Descriptor] = []
        if style == "multi":
            extras = self._extras(e)
            text = self._multi(e, extras, plural)
        elif style == "casual" and not plural and self.rng.random() < 0.5 and (c := self._contrast(e)) is not None:
            contrast = [c]
            text = self._single(e, style, c)
        else:
            text = self._plural(e, style) if plural else self._single(e, style, None)
        text = self._surface(text, style)
        return replace(e, text=text, style=self.prefix + style, descriptors=list(e.descriptors) + extras,
                       contrast=contrast)

    def _parts(self, e: "Expression", plural: bool) -> dict[str, Any]:
        """The pieces every template combines: adjectives, noun, relation tail, viewpoint."""
        cls = e.object_name
        colour = next((d.value for d in e.descriptors if d.kind == "colour"), None)
        size = next((d.value for d in e.descriptors if d.kind == "size"), None)
        tail_d = [d for d in e.descriptors if d.kind not in ("colour", "size")]
        view_d = next((d for d in tail_d if d.kind in _SIDES), None)
        side_it = view_d is not None and view_d.anchors[0] == view_d.viewpoint and self.rng.random() < 0.6
        adj = self.colour(colour) + " " if colour else ""
        noun = self.noun(cls, plural)
        size_w = self.pick(W.SIZE_WORDS[self.pool][size]) if size else ""
        tail = " and ".join(self.rel(d, side_it) for d in tail_d)
        view = self.view(view_d.viewpoint) if view_d is not None else None
        return dict(adj=adj, noun=noun, size=size_w, tail=tail, view=view, side_it=side_it, colour=colour,
                    cls=cls)

    def _with_view(self, s: str, p: dict[str, Any]) -> str:
        if p["view"] is None:
            return s
        if p["side_it"] or self.rng.random() < 0.6:  # "it" must follow the viewpoint it refers to
            return f"{p['view']}, {s}"
        end = s[-1] if s[-1] in ".?" else ""
        return f"{s[:len(s) - len(end)]}, {p['view']}{end}"

    def _single(self, e: "Expression", style: str, contrast: Descriptor | None) -> str:
        p = self._parts(e, False)
        size = p["size"] + " " if p["size"] else ""
        n = f"{size}{p['adj']}{p['noun']}"
        r = p["tail"]
        np_ = f"the {n} {r}".rstrip()
        a_np = f"{_article(n)} {n} {r}".rstrip()
        if style in ("command", "question"):
            table = W.COMMAND if style == "command" else W.QUESTION
            frames = list(self.words(table, "any"))
            if style == "command" and p["cls"] in W.PORTABLE:
                frames += self.words(table, "portable")
            if (style == "question" and not any(d.kind in _SUPERLATIVE for d in e.descriptors)
                    and p["noun"] not in W.SINGULAR_ONLY):
                frames += self.words(table, "exists")
            s = self.pick(frames).format(np=np_, a_np=a_np)
        elif style == "sr3d":
            if not r and p["size"]:
                n, r = f"{p['adj']}{p['noun']}", f"the {p['size']}"
            elif not r and p["colour"]:
                n, r = p["noun"], self.colour(p["colour"])
            s = self.pick(self.words(W.SR3D, "rel" if r else "bare")).format(n=n, r=r)
        elif style == "passive":
            s = self.pick(self.words(W.PASSIVE, "one")).format(n=n, r=r)
        else:  # casual
            if contrast is not None:
                key = "contrast_colour" if contrast.kind == "colour" else "contrast"
                c = self.colour(contrast.value) if contrast.kind == "colour" else self.rel(contrast)
                s = self.pick(self.words(W.CASUAL, key)).format(n=n, r=r, c=c).replace("  ", " ").replace(" ,", ",")
            else:
                s = self.pick(self.words(W.CASUAL, "one" if r else "bare")).format(n=n, r=r).rstrip()
        return self._with_view(s, p)

    def _plural(self, e: "Expression", style: str) -> str:
        p = self._parts(e, True)
        nps_bare = f"{p['adj']}{p['noun']}"
        every = f"{p['adj']}{self.noun(p['cls'])}"
        r = p["tail"]
        nps, every = f"{nps_bare} {r}".rstrip(), f"{every} {r}".rstrip()
        if style == "command":
            frames = list(self.words(W.COMMAND, "plural"))
            if p["cls"] in W.PORTABLE:
                frames += self.words(W.COMMAND, "plural_portable")
            s = self.pick(frames)
        elif style == "question":
            s = self.pick(self.words(W.QUESTION, "plural"))
        elif style == "sr3d":
            s = self.pick(self.words(W.SR3D, "plural")) if r else "choose all the {nps_bare}"
        elif style == "passive":
            s = self.pick(self.words(W.PASSIVE, "plural"))
        else:
            s = self.pick(self.words(W.CASUAL, "plural"))
        return self._with_view(s.format(nps=nps, every=every, nps_bare=nps_bare, r=r), p)

    def _multi(self, e: "Expression", extras: list[Descriptor], plural: bool) -> str:
        """Opening sentence (class, colour, size), then one sentence per remaining claim."""
        descs = list(e.descriptors)
        colour = next((d for d in descs + extras if d.kind == "colour"), None)
        colour_in_open = colour is not None and (colour in descs or self.rng.random() < 0.5)
        noun = self.noun(e.object_name, plural, countable=True)
        adj = self.colour(colour.value) + " " if colour_in_open and colour is not None else ""
        claims = [d for d in descs + extras if d.kind != "colour" or (d is colour and not colour_in_open)]
        if plural:
            num = _NUMBERS.get(len(e.target_ids), str(len(e.target_ids)))
            main = [d for d in descs if d.kind != "colour"]
            tail = " and ".join(self.rel(d) for d in main)
            view = next((self.view(d.viewpoint) for d in main if d.kind in _SIDES), None)
            nps = f"{adj}{noun} {tail}".rstrip()
            s = self.pick(self.words(W.MULTI, "open_plural")).format(num=num, nps_bare=nps)
            out = [f"{view}, {s}" if view else s]
            claims = [d for d in claims if d not in main]
        else:
            size = next((d for d in claims if d.kind == "size"), None)
            if size is not None and size in descs:
                out = [f"this is the {self.pick(W.SIZE_WORDS[self.pool][size.value])} {adj}{noun}."]
                claims.remove(size)
            else:
                out = [self.pick(self.words(W.MULTI, "open")).format(a_n=f"{_article(adj or noun)} {adj}{noun}")]
        for d in claims:
            if d.kind == "colour":
                key = "colour_plural" if plural else "colour"
                s = self.pick(self.words(W.MULTI, key)).format(c=self.colour(d.value), noun=noun)
            elif d.kind == "size":
                s = f"it is the {self.pick(W.SIZE_WORDS[self.pool][d.value])} of the {self.noun(e.object_name, True)}."
            else:
                key = "claim_plural" if plural else "claim"
                frames = self.words(W.MULTI, key)
                if d.kind in ("closest", "farthest"):
                    frames = frames[:2]  # "it is closest to the door", not "it is placed closest to"
                s = self.pick(frames).format(r=self.rel(d), noun=noun, nouns=noun)
                if d.kind in _SIDES:
                    s = f"{self.view(d.viewpoint)}, {s}"
            out.append(s)
        return " ".join(out)

    def _surface(self, s: str, style: str) -> str:
        """Case and punctuation as people type them: Sr3D lowercase without a period, otherwise a
        mix of capitalised / lowercase, with or without the final period, sometimes "please"."""
        s = " ".join(s.split())
        if style == "sr3d":
            return s.lower().rstrip(".")
        if style == "command" and not s.endswith("?") and self.rng.random() < 0.12:
            s = s.rstrip(".") + ", please"
        u = self.rng.random()
        if not s.endswith("?"):
            s = s.rstrip(".") + ("." if u < 0.5 else "")
        if self.rng.random() < 0.35:
            s = re.sub(r"(^|[.?] )([a-z])", lambda m: m.group(1) + m.group(2).upper(), s)
        return s


def add_typo(text: str, rng: np.random.Generator) -> str | None:
    """``text`` with one content word misspelt (swap, drop or doubling of a letter, the first letter
    kept), never into a word of ``LEXICON``; None when no word allows it."""
    spans = [m for m in re.finditer(r"[A-Za-z]+", text) if len(m.group()) >= 4 and m.group().lower() not in _STOP]
    for k in rng.permutation(len(spans)):
        m = spans[int(k)]
        w = m.group()
        for op in rng.permutation(3):
            p = 1 + int(rng.integers(len(w) - 1))  # 1 .. len-1: keep the first letter
            if op == 0:
                if p == len(w) - 1 or w[p] == w[p + 1]:
                    continue
                new = w[:p] + w[p + 1] + w[p] + w[p + 2:]
            elif op == 1:
                new = w[:p] + w[p + 1:]
            else:
                new = w[:p] + w[p] + w[p:]
            if new.lower() != w.lower() and new.lower() not in LEXICON:
                return text[:m.start()] + new + text[m.end():]
    return None


def apply_styles(gen: "_Generator", exprs: list["Expression"], rng: np.random.Generator, styles: float,
                 typo_rate: float, held_out: bool) -> list["Expression"]:
    """Reword a share ``styles`` of ``exprs`` (all of them when ``held_out``) and misspell a share
    ``typo_rate``; the others are returned unchanged. Draws two seeds from ``rng``, nothing else."""
    style_seed, typo_seed = (int(s) for s in rng.integers(2**63 - 1, size=2))
    style_rng, typo_rng = np.random.default_rng(style_seed), np.random.default_rng(typo_seed)
    styler = _Styler(gen, style_rng, held_out)
    share = 1.0 if held_out else styles
    out = []
    for e in exprs:
        if style_rng.random() < share:
            e = styler.restyle(e)
        if typo_rng.random() < typo_rate:
            t = add_typo(e.text, typo_rng)
            if t is not None:
                e = replace(e, text=t, typo=True)
        out.append(e)
    return out
