"""The words of the style layer (``bqnet_synth.styles``), in two disjoint pools.

``SEEN`` is what training sets may use; ``HELD_OUT`` is kept apart for a check set whose wordings
no training sentence uses (command verbs, question forms, templates, relation and colour words,
a few class nouns), so generalisation to new wordings can be measured apart from the grammar's
own. ``test_sentence_styles`` checks that the pools share no template. Class nouns extend the
grammar's (``grammar.NOUNS``) in ScanNet's raw-label style; a variant's nouns apply only when every
object of the class in the room is that variant, as in the grammar.

Templates are ``str.format`` strings. Singular fields: ``{np}`` "the red chair next to the desk",
``{a_np}`` "a red chair next to the desk", ``{n}`` "red chair" (noun with its adjectives),
``{r}`` the relation tail "next to the desk" (may be empty), ``{c}`` a contrast phrase. Plural:
``{nps}`` "red chairs next to the desk", ``{every}`` "red chair next to the desk" (after
"every"/"each"), ``{num}`` "two".
"""

from __future__ import annotations

SEEN, HELD_OUT = "seen", "held_out"
POOLS = (SEEN, HELD_OUT)

# Classes a robot can carry: "pick up" / "bring me" only name these.
PORTABLE = ("box", "lamp", "plant", "trash can", "chair", "monitor", "picture")

# ---- nouns -----------------------------------------------------------------------------------------
EXTRA_NOUNS: dict[str, dict[str, tuple[str, ...]]] = {
    SEEN: {
        "trash can": ("recycling bin", "trashcan", "dustbin"), "cabinet": ("storage cabinet",),
        "bookshelf": ("shelving unit", "bookshelves"), "plant": ("pot plant", "plant pot"),
        "picture": ("photo", "picture frame"), "curtain": ("curtains", "window drape"),
        "refrigerator": ("fridge freezer",), "sofa": ("sofa couch",),
        "toilet": ("commode",), "box": ("storage box",), "door": ("doorway",),
    },
    HELD_OUT: {
        "chair": ("seat",), "sofa": ("settee",), "trash can": ("rubbish bin",), "bookshelf": ("book rack",),
        "refrigerator": ("icebox",), "picture": ("wall art",), "plant": ("flower pot",), "lamp": ("light fixture",),
        "cabinet": ("storage unit",), "window": ("windowpane",), "sink": ("hand basin",), "box": ("crate",),
        "toilet": ("wc",), "desk": ("workstation",), "curtain": ("window covering",),
    },
}
EXTRA_VARIANT_NOUNS: dict[str, dict[tuple[str, str], tuple[str, ...]]] = {
    SEEN: {
        ("chair", "office"): ("computer chair", "rolling chair"), ("chair", "armchair"): ("club chair",),
        ("cabinet", "kitchen"): ("kitchen cabinets",), ("cabinet", "nightstand"): ("bedside unit",),
        ("cabinet", "wardrobe"): ("clothes closet",), ("monitor", "tv"): ("flatscreen",), ("lamp", "floor"): ("floor light",),
    },
    HELD_OUT: {
        ("chair", "office"): ("task chair",), ("chair", "armchair"): ("easy chair",),
        ("cabinet", "nightstand"): ("bedside drawer",), ("monitor", "tv"): ("telly",),
        ("cabinet", "wardrobe"): ("armoire",),
    },
}
# Nouns that read as one object but have no clean plural: never used for several targets.
SINGULAR_ONLY = frozenset({"curtains", "bookshelves", "kitchen cabinets", "wc", "window covering", "telly"})

# ---- colours -----------------------------------------------------------------------------------------
# Shade words follow the palette's RGB (``parts.COLORS``): beige is a light brown, black is dark.
COLOUR_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    SEEN: {"red": ("red",), "green": ("green",), "blue": ("blue",), "white": ("white", "off white"),
           "black": ("black", "dark"), "brown": ("brown", "dark brown"),
           "grey": ("grey", "gray", "silver grey"), "yellow": ("yellow",), "orange": ("orange",),
           "pink": ("pink",), "purple": ("purple", "violet"), "beige": ("beige", "light brown", "tan", "cream")},
    HELD_OUT: {"red": ("reddish",), "green": ("greenish",), "blue": ("bluish",), "white": ("whitish",),
               "black": ("jet black",), "brown": ("brownish",), "grey": ("greyish",), "yellow": ("yellowish",),
               "orange": ("orangey",), "pink": ("pinkish",), "purple": ("purplish",), "beige": ("sand coloured",)},
}

# ---- relations (bare phrases: they follow "is", "located", "which is placed") ------------------------
REL_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    SEEN: {
        "next_to": ("next to {A}", "beside {A}", "near {A}", "by {A}", "close to {A}", "adjacent to {A}",
                    "right by {A}", "near to {A}", "close by {A}"),
        "left_of": ("to the left of {A}", "on the left of {A}", "left of {A}", "on the left side of {A}",
                    "on the left hand side of {A}"),
        "right_of": ("to the right of {A}", "on the right of {A}", "right of {A}", "on the right side of {A}",
                     "on the right hand side of {A}"),
        "in_front_of": ("in front of {A}", "directly in front of {A}", "just in front of {A}"),
        "behind": ("behind {A}", "in back of {A}", "at the back of {A}", "right behind {A}", "just behind {A}"),
        "on": ("on {A}", "on top of {A}", "on the top of {A}"),
        "under": ("under {A}", "below {A}", "underneath {A}", "beneath {A}"),
        "above": ("above {A}", "over {A}", "up above {A}"),
        "between": ("between {A} and {B}", "in between {A} and {B}", "in the middle of {A} and {B}",
                    "in the center of {A} and {B}"),
    },
    HELD_OUT: {
        "next_to": ("alongside {A}", "neighbouring {A}", "in the vicinity of {A}"),
        "left_of": ("to the left-hand side of {A}", "off to the left of {A}"),
        "right_of": ("to the right-hand side of {A}", "off to the right of {A}"),
        "in_front_of": ("out in front of {A}", "ahead of {A}"),
        "behind": ("at the rear of {A}", "back behind {A}"),
        "on": ("atop {A}", "up on {A}"),
        "under": ("down under {A}", "down below {A}"),
        "above": ("high above {A}", "up over {A}"),
        "between": ("in the space between {A} and {B}", "somewhere between {A} and {B}"),
    },
}
# Left/right when the anchor is the viewpoint itself ("looking at the front of the door, ... to the left of it").
SIDE_OF_IT: dict[str, dict[str, tuple[str, ...]]] = {
    SEEN: {"left_of": ("to the left of it", "on the left of it", "on its left", "on the left"),
           "right_of": ("to the right of it", "on the right of it", "on its right", "on the right")},
    HELD_OUT: {"left_of": ("off to its left",), "right_of": ("off to its right",)},
}
VIEW_WORDS: dict[str, tuple[str, ...]] = {
    SEEN: ("facing {V}", "looking at {V}", "looking at the front of {V}", "facing the front of {V}",
           "if you stand in front of {V} and look at it", "when you face {V}"),
    HELD_OUT: ("with {V} in front of you", "while looking towards {V}", "turned towards {V}"),
}
SIZE_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    SEEN: {"largest": ("largest", "biggest"), "smallest": ("smallest", "tiniest"),
           "tallest": ("tallest", "highest"), "shortest": ("shortest", "lowest")},
    HELD_OUT: {"largest": ("hugest", "most massive"), "smallest": ("littlest", "most compact"),
               "tallest": ("loftiest",), "shortest": ("least tall",)},
}
DIST_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    SEEN: {"closest": ("closest to {A}", "nearest to {A}", "nearest {A}"),
           "farthest": ("farthest from {A}", "furthest from {A}", "farthest away from {A}")},
    HELD_OUT: {"closest": ("at the shortest distance from {A}", "least far from {A}"),
               "farthest": ("at the greatest distance from {A}", "most remote from {A}")},
}

# ---- sentence templates per style ------------------------------------------------------------------
COMMAND: dict[str, dict[str, tuple[str, ...]]] = {
    SEEN: {
        "any": ("take me to {np}", "go to {np}", "find {np}", "navigate to {np}", "please go to {np}",
                "move to {np}", "i'm looking for {np}", "show me {np}", "go over to {np}"),
        "portable": ("pick up {np}", "bring me {np}", "hand me {np}", "pick {np} up"),
        "plural": ("find all the {nps}", "show me all the {nps}", "go to each of the {nps}",
                   "take me to all the {nps}", "find every {every}", "navigate to each {every}"),
        "plural_portable": ("pick up every {every}", "bring me all the {nps}", "pick up all the {nps}"),
    },
    HELD_OUT: {
        "any": ("head over to {np}", "walk to {np}", "approach {np}", "locate {np}", "point out {np}",
                "i need to get to {np}", "drive up to {np}"),
        "portable": ("fetch {np}", "grab {np}", "get me {np}"),
        "plural": ("locate each {every}", "point out all the {nps}", "head to every {every}"),
        "plural_portable": ("fetch all the {nps}", "grab every {every}"),
    },
}
QUESTION: dict[str, dict[str, tuple[str, ...]]] = {
    SEEN: {
        "any": ("where is {np}?", "can you show me {np}?", "can you find {np}?", "do you see {np}?",
                "could you take me to {np}?"),
        "exists": ("is there {a_np}?", "is there {a_np} in this room?"),  # not for superlatives
        "plural": ("where are the {nps}?", "can you find all the {nps}?", "can you show me every {every}?"),
    },
    HELD_OUT: {
        "any": ("where can i find {np}?", "have you seen {np}?", "could you tell me where {np} is?"),
        "exists": ("does this room have {a_np}?",),
        "plural": ("which ones are the {nps}?", "where can i find the {nps}?"),
    },
}
SR3D: dict[str, dict[str, tuple[str, ...]]] = {
    SEEN: {"rel": ("the {n} that is {r}", "choose the {n} that is {r}", "find the {n} that is {r}",
                   "select the {n} that is {r}", "pick the {n} that is {r}"),
           "bare": ("choose the {n}", "select the {n}", "pick the {n}"),
           "plural": ("the {nps_bare} that are {r}", "choose the {nps_bare} that are {r}",
                      "select all the {nps_bare} that are {r}")},
    HELD_OUT: {"rel": ("identify the {n} that is {r}", "tell me which {n} is {r}", "the {n} which happens to be {r}"),
               "bare": ("identify the {n}", "spot the {n}"),
               "plural": ("identify the {nps_bare} that are {r}", "spot all the {nps_bare} that are {r}")},
}
PASSIVE: dict[str, dict[str, tuple[str, ...]]] = {
    SEEN: {"one": ("the {n} which is placed {r}", "the {n}, located {r}", "the {n} that is positioned {r}",
                   "the {n} which is situated {r}", "the {n}, which can be found {r}", "the {n} that is located {r}"),
           "plural": ("the {nps_bare} which are placed {r}", "all the {nps_bare} located {r}",
                      "the {nps_bare}, which can be found {r}")},
    HELD_OUT: {"one": ("the {n} that has been put {r}", "the {n} that was set {r}", "the {n}, found {r}",
                       "the {n} which one can see {r}"),
               "plural": ("the {nps_bare} that have been put {r}", "the {nps_bare}, found {r}")},
}
# ScanRefer-style descriptions: an opening sentence, then one sentence per claim.
MULTI: dict[str, dict[str, tuple[str, ...]]] = {
    SEEN: {"open": ("this is {a_n}.", "it is {a_n}.", "there is {a_n}.", "{a_n}."),
           "claim": ("it is {r}.", "the {noun} is {r}.", "it is located {r}.", "it is placed {r}."),
           "colour": ("it is {c}.", "the {noun} is {c}.", "it is {c} in color."),
           "colour_plural": ("they are {c}.", "they are all {c}."),
           "open_plural": ("there are {num} {nps_bare}.", "these are {num} {nps_bare}."),
           "claim_plural": ("they are {r}.", "the {nouns} are {r}.", "they are all {r}.")},
    HELD_OUT: {"open": ("you are looking for {a_n}.", "the object is {a_n}."),
               "claim": ("you can find it {r}.", "it can be seen {r}."),
               "colour": ("its colour is {c}.",), "colour_plural": ("their colour is {c}.",),
               "open_plural": ("you are looking for {num} {nps_bare}.",),
               "claim_plural": ("you can find them {r}.",)},
}
# Nr3D-style casual text; "{c}" is a contrast the generator checked (false for the target).
CASUAL: dict[str, dict[str, tuple[str, ...]]] = {
    SEEN: {"one": ("{n} {r}", "the {n} {r}", "its the {n} {r}", "the {n} thats {r}", "the {n} {r}."),
           "bare": ("{n}", "the {n}", "its the {n}"),
           "contrast": ("the {n} {r}, not the one {c}", "{n} {r} not the one {c}", "the {n} {r}. not the one {c}"),
           "contrast_colour": ("the {n} {r}, not the {c} one", "{n} {r}, not the {c} one"),
           "plural": ("{nps}", "the {nps}", "all {nps}")},
    HELD_OUT: {"one": ("ok so the {n} {r}", "umm the {n} {r}"),
               "bare": ("ok so the {n}",),
               "contrast": ("the {n} {r}, the one that isn't {c}", "{n} {r} (not the one {c})"),
               "contrast_colour": ("the {n} {r} (the one that isn't {c})",),
               "plural": ("ok so all {nps}",)},
}
