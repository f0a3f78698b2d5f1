"""A cheap "is this English?" check for referring sentences.

The model's text encoder and training sentences are English only: French, Chinese or emoji text
still gets an answer (the encoder maps any string somewhere), and nothing in that answer says it
is noise. The node cannot reject such text (a robot's operator may mix in a proper name), so it
answers and attaches a warning. The check is deliberately simple and documented as such:

1. no letter at all (emoji, digits, punctuation) -> warning;
2. more than ``MAX_NON_ASCII_LETTERS`` of the letters outside a-z/A-Z (Chinese, Cyrillic,
   accented French) -> warning;
3. with at least ``MIN_WORDS`` ASCII words, fewer than ``MIN_KNOWN_SHARE`` of them in a short
   list of common English words (articles, prepositions, spatial words, colours, furniture) ->
   warning ("la chaise rouge" is all ASCII but has no English word).

It misses English-looking nonsense and flags terse English made only of rare words; it costs a
few microseconds per sentence.
"""

from __future__ import annotations

import re

__all__ = ["english_warning", "ENGLISH_WORDS", "MAX_NON_ASCII_LETTERS", "MIN_KNOWN_SHARE", "MIN_WORDS"]

MAX_NON_ASCII_LETTERS = 0.15
MIN_KNOWN_SHARE = 1 / 3
MIN_WORDS = 2

ENGLISH_WORDS: frozenset[str] = frozenset("""
a an the this that these those it its is are was be there here which who whose what where one ones
and or but not no with without of in on at to from by for near next beside behind front back between
among under below beneath above over on top bottom left right middle center centre side corner end
close closest nearest far farthest furthest against along across around inside outside into onto
facing opposite toward towards away up down first second third last other another both all each
every some any only big bigger biggest small smaller smallest large larger largest tall taller
tallest short long wide narrow high low round square flat open closed empty full old new
red green blue yellow white black brown grey gray orange pink purple dark light wooden metal
chair chairs table tables desk desks sofa couch bed cabinet shelf shelves bookshelf door window wall
floor ceiling lamp monitor screen tv television computer keyboard box boxes bin trash can sink
toilet bathtub shower counter kitchen fridge refrigerator stove oven microwave plant picture
curtain curtains pillow cushion rug carpet stool bench armchair nightstand dresser wardrobe closet
mirror book books bag backpack bottle cup mug clock printer whiteboard board radiator towel
room object thing item piece part near i you me my your please find show get pick look
""".split())

_WORD = re.compile(r"[a-z]+")


def english_warning(text: str) -> str | None:
    """A warning for text that does not look English (module docstring), or None."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return "text has no letters (the model reads English words only): the answer is noise"
    non_ascii = sum(1 for c in letters if not ("a" <= c.lower() <= "z"))
    if non_ascii / len(letters) > MAX_NON_ASCII_LETTERS:
        return (f"text does not look English ({100 * non_ascii / len(letters):.0f}% of its letters are not "
                "a-z; the model reads English only): the answer is likely noise")
    words = _WORD.findall(text.lower())
    if len(words) >= MIN_WORDS:
        known = sum(1 for w in words if w in ENGLISH_WORDS)
        if known / len(words) < MIN_KNOWN_SHARE:
            return (f"text does not look English (only {known} of its {len(words)} words are common English "
                    "words; the model reads English only): the answer is likely noise")
    return None
