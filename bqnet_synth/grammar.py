"""The words of the referring expressions: nouns and their synonyms per class (and per variant),
colour, relation, superlative and viewpoint phrases, plurals, and the sentence templates that turn
a class and its descriptors into text. Grammar only: whether a sentence is true is decided in
``relations.py``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from bqnet_synth.relations import Descriptor, SceneGeometry, _PAIR


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
