"""Sentences the query benchmarks ask (``bench/rel_pos.py``, ``bench/tta.py``): the demo room's
kind of sentence, made distinct past the list so the text cache cannot answer from a repeat."""

from __future__ import annotations

TEXTS = ["the chair next to the desk", "the red chair", "all the chairs around the table", "the lamp on the desk",
         "the cabinet left of the door", "the plant in the corner", "the bin under the desk", "the window"]


def sentences(n: int) -> list[str]:
    """``n`` distinct sentences: the list, then the list again with a number appended."""
    return [TEXTS[i % len(TEXTS)] + ("" if i < len(TEXTS) else f" ({i})") for i in range(n)]
