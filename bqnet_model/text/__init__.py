"""The official BQNet/CFNet text pipeline: caption cleaning, scene-graph parse, loss token maps.

``prepare_text`` gives the exact string the official model reads and the char spans of its
contrastive loss; ``positive_maps`` turns the spans into per-token maps for any fast tokenizer.
"""

from .prepare import (
    PREFIX,
    SPACY_INSTALL_HINT,
    SPAN_KINDS,
    SUFFIX,
    PreparedText,
    load_spacy,
    positive_maps,
    prepare_text,
)

__all__ = [
    "PREFIX",
    "SPACY_INSTALL_HINT",
    "SPAN_KINDS",
    "SUFFIX",
    "PreparedText",
    "load_spacy",
    "positive_maps",
    "prepare_text",
]
