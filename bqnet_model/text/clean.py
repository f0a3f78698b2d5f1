"""Caption cleaning of the official BQNet/CFNet text pipeline (before the scene-graph parse).

The official dataset rewrites every caption with a fixed list of plain substring replacements,
each followed by a whitespace normalisation (split, join with one space). The replacements are
not word-aware, so they also fire inside words ("bed's" -> "bedis", "vacant" -> "vacan not",
"amid the" -> "am , the"); a checkpoint trained on the official text saw exactly those strings,
so they are reproduced as they are rather than fixed.

Two paths exist. The ScanRefer path gets an already tokenised, lower-case caption (the dataset's
``token`` field joined with spaces) and only the common rules. The raw path (Multi3DRefer, and
what a robot user types) adds the punctuation and contraction rules.
"""

from __future__ import annotations

__all__ = ["COMMON_RULES", "RAW_TEXT_RULES", "clean_caption", "normalise_spaces"]

# (old, new) in the order applied; order matters because later rules see earlier results.
COMMON_RULES: tuple[tuple[str, str], ...] = (
    ("'m", "am"),
    ("'s", "is"),
    ("2-tiered", "2 - tiered"),
    ("4-drawers", "4 - drawers"),
    ("5-drawer", "5 - drawer"),
    ("8-hole", "8 - hole"),
    ("7-shaped", "7 - shaped"),
    ("2-door", "2 - door"),
    ("3-compartment", "3 - compartment"),
    ("computer/", "computer /"),
    ("3-tier", "3 - tier"),
    ("3-seater", "3 - seater"),
    ("4-seat", "4 - seat"),
    ("theses", "these"),
)

# Only for text that is not ScanRefer's pre-tokenised field.
RAW_TEXT_RULES: tuple[tuple[str, str], ...] = (
    (".", " ."),
    (";", " ; "),
    ("-", " "),
    ('"', " "),
    ("?", " "),
    ("*", " "),
    (":", " "),
    ("$", " "),
    ("#", " "),
    ("/", " / "),
    ("you're", "you are"),
    ("isn't", "is not"),
    ("thats", "that is"),
    ("theres", "there is"),
    ("doesn't", "does not"),
    ("doesnt", "does not"),
    ("itis", "it is"),
    ("left-hand", "left - hand"),
    ("[", " [ "),
    ("]", " ] "),
    ("(", " ( "),
    (")", " ) "),
    ("wheel-chair", "wheel - chair"),
    (";s", "is"),
    ("tha=e", "the"),
    ("it\u2019s", "it is"),
    ("\u2019s", " is"),
    ("isnt", "is not"),
    ("Don't", "Do not"),
    ("arent", "are not"),
    ("cant", "can not"),
    ("you\u2019re", "you are"),
    ("!", " !"),
    ("id the", " , the"),
    ("youre", "you are"),
    ("'", " "),
    ("``", " "),
)


def normalise_spaces(text: str) -> str:
    """Every run of whitespace (tabs and newlines too) becomes one space; no leading/trailing space."""
    return " ".join(text.split())


def clean_caption(caption: str, scanrefer: bool = False) -> str:
    """The caption the official code hands to the scene-graph parser.

    One leading and one trailing apostrophe are then cut *after* normalisation, as the official
    code does, so on the ScanRefer path "' the lamp '" keeps a leading and a trailing space (the
    parser later fails on such a caption; see ``prepare_text``).

    Raises ``ValueError`` when nothing is left (the official code would fail on an empty caption).
    """
    text = normalise_spaces(caption.replace(",", " , "))
    rules = COMMON_RULES + (() if scanrefer else RAW_TEXT_RULES)
    for old, new in rules:
        text = normalise_spaces(text.replace(old, new))
    if text[:1] == "'":
        text = text[1:]
    if text[-1:] == "'":
        text = text[:-1]
    if not text:
        raise ValueError(f"no words are left of {caption!r} after the official caption cleaning")
    return text
