"""Which object a referring sentence names, as a class of the model's vocabulary.

The referring scores rank the map's objects against each other; they do not say whether the
object the sentence names is in the map at all ("the helicopter" still gets the best-scoring
object). Telling that needs the named class, read from the text here, and checked against what
the model's semantic head sees in the map (``bqnet_model.pipeline.absence``).

``named_objects`` parses a sentence with spaCy (already a requirement of the official text
pipeline) and returns every object noun it mentions, each as

* a class of ``bqnet_model.data.classes.CLASSES`` (``CLASS_NAMES``: the names the synthetic rooms
  use and common ScanNet names of the same things),
* ``OTHER_CLASS``: a known indoor object outside that vocabulary (the official parser's ScanNet /
  3RScan object lists, e.g. "pillow"): the semantic head cannot check it, so it is never refused,
* or an *unknown* noun: in no object list and no list of words that are not objects (scene and
  spatial nouns, "corner", "side", "room"). "the giraffe" names an unknown noun.

The *target* is the mention closest to the root of the dependency tree (ties: the first one):
in "the chair next to the desk" the chair (root) and not the desk (under "next to"), in "there is
a basin between the box and the bin" the basin (attribute of "is"). Multi-word names ("trash
can", "kitchen counter") are matched on the words first, whatever their part-of-speech tags, and
take the shallowest of their tokens; a single word counts only when spaCy does not tag it as an
adjective or a verb (so "light brown" is no lamp).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bqnet_model.data.classes import CLASS_ID, CLASSES
from bqnet_model.text.vocab import OBJECT_CLASSES, OBJECT_NOUNS, SCENE_NOUNS

__all__ = ["CLASS_NAMES", "NOT_OBJECTS", "OTHER_CLASS", "Mention", "NamedObjects", "named_objects", "name_class"]

OTHER_CLASS = len(CLASSES)  # a known object outside CLASSES (the semantic head's last output)

# Singular names per class: the synthetic rooms' nouns and their variants, and ScanNet's usual
# raw names of the same objects. A name of several words is matched whole.
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "floor": ("floor", "ground"),
    "wall": ("wall",),
    "chair": ("chair", "office chair", "desk chair", "swivel chair", "armchair", "arm chair", "lounge chair",
              "dining chair", "seat", "stool"),
    "table": ("table", "coffee table", "low table", "round table", "rectangular table", "dining table",
              "end table", "side table"),
    "desk": ("desk", "work desk", "writing desk", "office desk", "computer desk"),
    "bed": ("bed", "single bed", "double bed", "bunk bed"),
    "sofa": ("sofa", "couch", "loveseat", "sofa chair"),
    "cabinet": ("cabinet", "cupboard", "wardrobe", "closet", "dresser", "chest of drawers", "nightstand",
                "night stand", "bedside cabinet", "kitchen cabinet", "kitchen counter", "counter", "tv stand",
                "tv cabinet", "media console", "file cabinet", "filing cabinet", "drawer"),
    "bookshelf": ("bookshelf", "bookcase", "book shelf", "shelf"),
    "toilet": ("toilet", "toilet bowl"),
    "sink": ("sink", "washbasin", "wash basin", "basin"),
    "bathtub": ("bathtub", "tub", "bath tub", "bath"),
    "refrigerator": ("refrigerator", "fridge", "mini fridge"),
    "monitor": ("monitor", "screen", "computer monitor", "computer screen", "display", "tv", "television",
                "tv screen", "flat screen tv"),
    "lamp": ("lamp", "light", "floor lamp", "standing lamp", "desk lamp", "table lamp", "reading lamp"),
    "trash can": ("trash can", "trash bin", "garbage can", "garbage bin", "bin", "wastebasket", "waste bin",
                  "trashcan", "recycling bin"),
    "box": ("box", "carton"),
    "plant": ("plant", "potted plant", "houseplant"),
    "door": ("door",),
    "window": ("window",),
    "picture": ("picture", "painting", "poster", "framed picture", "artwork", "photo", "frame"),
    "curtain": ("curtain", "drape", "window curtain"),
}

# Words that are no object although spaCy may tag them as nouns: where things are, what they look
# like, sizes and comparisons, the room itself.
NOT_OBJECTS: frozenset[str] = frozenset("""
corner side left right front back middle center centre end top bottom edge part piece one ones color
colour shape size direction way area space row line set pair group kind type number position view face
rest half lot bunch couple inch foot feet meter metre distance spot place location entrance exit
wood metal plastic fabric leather glass stripe pattern design style facing order time
red green blue yellow white black brown grey gray orange pink purple beige tan silver golden gold dark light
big small short tall large long wide narrow high low near far close nearer closer farther further
nearest closest farthest furthest bigger smaller taller shorter larger longer biggest smallest tallest
shortest largest longest viewpoint perspective work slice
""".split()) | frozenset(w for w in SCENE_NOUNS if w not in {"closet", "shower", "bar", "door", "elevator",
                                                             "staircase", "balcony", "platform", "water"})

_NAME_TO_CLASS: dict[tuple[str, ...], int] = {
    tuple(name.split()): CLASS_ID[cls] for cls, names in CLASS_NAMES.items() for name in names
}
_MAX_WORDS = max(len(k) for k in _NAME_TO_CLASS)
_COMPARATIVE = {"JJR", "JJS", "RBR", "RBS"}
_NOT_A_NOUN = {"ADJ", "VERB", "AUX", "ADV", "ADP", "DET", "PRON", "CCONJ", "SCONJ", "NUM", "PART", "PUNCT"}


@dataclass(frozen=True)
class Mention:
    """One object noun of a sentence: its words, class (index into CLASSES, ``OTHER_CLASS``, or
    -1 = unknown noun) and depth in the dependency tree (0 = a sentence's root)."""

    words: str
    class_id: int
    depth: int
    start: int  # token index of its first word
    span: tuple[int, int] = (0, 0)  # its characters in the sentence

    @property
    def known(self) -> bool:
        return self.class_id >= 0


@dataclass
class NamedObjects:
    """Every object noun of a sentence and its target (module docstring); ``target`` None when the
    sentence names no object noun at all ("it is over there")."""

    mentions: list[Mention] = field(default_factory=list)

    @property
    def target(self) -> Mention | None:
        if not self.mentions:
            return None
        return min(self.mentions, key=lambda m: (m.depth, m.start))

    @property
    def classes(self) -> set[int]:
        """The vocabulary classes named anywhere in the sentence (``OTHER_CLASS`` and unknown left out)."""
        return {m.class_id for m in self.mentions if 0 <= m.class_id < OTHER_CLASS}


def name_class(words: tuple[str, ...]) -> int:
    """The class of a (singular, lower-case) name: a CLASSES index, ``OTHER_CLASS`` for a known
    object outside the vocabulary, or -1 when it names no known object."""
    if words in _NAME_TO_CLASS:
        return _NAME_TO_CLASS[words]
    joined = " ".join(words)
    if joined in OBJECT_CLASSES or (len(words) == 1 and joined in OBJECT_NOUNS):
        # "kitchen sink", "shower curtain": the last word's class, as the ScanNet loader labels them
        return _NAME_TO_CLASS.get(words[-1:], OTHER_CLASS)
    return -1


# A clause that qualifies the main one ("when facing the tub, look for the bin", "the chair that is
# near the desk") holds context objects, not the target: its edge counts as this many levels.
_CLAUSE_EDGES = {"advcl": 3, "relcl": 3, "acl": 3}


def _depths(doc: Any) -> list[int]:
    out = []
    for tok in doc:
        d, t, hops = 0, tok, 0
        while t.head.i != t.i and hops < len(doc):
            d += _CLAUSE_EDGES.get(t.dep_, 1)
            t, hops = t.head, hops + 1
        out.append(d)
    return out


def named_objects(text: str, nlp: Any | None = None) -> NamedObjects:
    """Parse one sentence (module docstring). ``nlp``: a spaCy pipeline (default ``load_spacy()``)."""
    if nlp is None:
        from bqnet_model.text.prepare import load_spacy

        nlp = load_spacy()
    doc = nlp(text.lower().replace("_", " "))
    depth = _depths(doc)
    words = [t.text for t in doc]
    lemmas = [t.lemma_ if t.pos_ in ("NOUN", "PROPN") else t.text for t in doc]
    used = [False] * len(doc)
    mentions: list[Mention] = []
    # Several words first, whatever spaCy tags them ("trash can": "can" is often an auxiliary).
    for n in range(_MAX_WORDS, 1, -1):
        for i in range(len(doc) - n + 1):
            if any(used[i:i + n]):
                continue
            key = (*words[i:i + n - 1], lemmas[i + n - 1])
            cid = name_class(key)
            if cid < 0 and key != tuple(words[i:i + n]):
                cid = name_class(tuple(words[i:i + n]))
            if cid >= 0:
                used[i:i + n] = [True] * n
                span = (doc[i].idx, doc[i + n - 1].idx + len(doc[i + n - 1].text))
                mentions.append(Mention(" ".join(words[i:i + n]), cid, min(depth[i:i + n]), i, span))
    for i, tok in enumerate(doc):
        # spaCy's small model tags some comparatives as nouns ("the one furthest from"); its fine tag
        # (JJR/JJS/RBR/RBS) often still says what they are
        if used[i] or tok.pos_ in _NOT_A_NOUN or tok.tag_ in _COMPARATIVE or not tok.text.isalpha():
            continue
        lemma = lemmas[i]
        cid = name_class((lemma,))
        if cid < 0 and lemma != tok.text:
            cid = name_class((tok.text,))
        if cid < 0:
            if tok.pos_ not in ("NOUN", "PROPN") or lemma in NOT_OBJECTS or tok.text in NOT_OBJECTS:
                continue
        mentions.append(Mention(tok.text, cid, depth[i], i, (tok.idx, tok.idx + len(tok.text))))
    mentions.sort(key=lambda m: m.start)
    return NamedObjects(mentions)
