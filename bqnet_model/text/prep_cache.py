"""A file of ``prepare_text`` results, for training where spaCy cannot be installed.

Why: the contrastive alignment loss needs each training sentence's parse (``PreparedText`` spans),
and the machine that trains may have no spaCy. The sentences are known beforehand (annotation
files, or synthetic rooms regenerated deterministically), so they are parsed once where spaCy is
(``tools/pack_text_prep.py``) and the results travel as one small file.

Format: gzip-compressed JSON (no pickle: the file is data, never code), one object::

    {"format": "bqnet-text-prep-cache", "version": 1, "spacy": {...}, "pipeline": "<sha256>",
     "columns": [...], "rows": [[...], ...]}

keyed by (text, scanrefer flag), the arguments the datasets call ``prepare`` with. ``spacy``
records the spaCy and model versions the parses came from; ``pipeline`` fingerprints this
package's text-pipeline sources, so a cache made by other parsing rules is reported when loaded.
``CachedPreparer`` serves the file with ``prepare_text``'s signature; a sentence it does not hold
is parsed when spaCy is importable, and is otherwise an error naming the tool that builds the
cache: training never goes on silently without a sentence's parse.
"""

from __future__ import annotations

import dataclasses
import datetime
import gzip
import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Iterable

from . import prepare as _prep
from .prepare import SPAN_KINDS, SUFFIX, PreparedText

__all__ = ["CACHE_FORMAT", "CACHE_VERSION", "TextPrepCacheMiss", "CachedPreparer", "write_cache", "read_cache",
           "load_cached_preparer", "spacy_info", "pipeline_fingerprint", "PACK_TOOL"]

log = logging.getLogger("bqnet.text")

CACHE_FORMAT = "bqnet-text-prep-cache"
CACHE_VERSION = 1
PACK_TOOL = "python tools/pack_text_prep.py DATA_ROOT [DATA_ROOT ...] --out FILE"
# One row per entry, in this order; model_input is not stored (always positive_map_string + SUFFIX).
_COLUMNS = ("text", "scanrefer", "utterance", "positive_map_string", "prefix_added", "spans", "context_classes",
            "problem")
# Sources whose rules decide a parse: the fingerprint changes when any of them does.
_PIPELINE_SOURCES = ("prepare.py", "scene_graph.py", "clean.py", "vocab.py")


class TextPrepCacheMiss(RuntimeError):
    """A sentence the cache does not hold, on a machine where it cannot be parsed."""


def pipeline_fingerprint() -> str:
    """sha256 of the text-pipeline sources this package parses with (see ``_PIPELINE_SOURCES``)."""
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in _PIPELINE_SOURCES:
        h.update(name.encode())
        h.update((here / name).read_bytes())
    return h.hexdigest()


def spacy_info() -> dict[str, str]:
    """Versions of spaCy and of the loaded English model (loads it; ImportError without spaCy)."""
    nlp = _prep.load_spacy()
    import spacy

    meta = getattr(nlp, "meta", {}) or {}
    return {"spacy": str(spacy.__version__), "model": f"{meta.get('lang', 'en')}_{meta.get('name', '?')}",
            "model_version": str(meta.get("version", "?"))}


def _row(p: PreparedText) -> list[Any]:
    if p.model_input != p.positive_map_string + SUFFIX:
        raise ValueError(f"PreparedText of {p.raw!r}: model_input is not positive_map_string + {SUFFIX!r}; "
                         "the cache format cannot hold it")
    spans = [[int(v) for be in p.spans.get(k, []) for v in be] for k in SPAN_KINDS]
    return [p.raw, bool(p.scanrefer), p.utterance, p.positive_map_string, bool(p.prefix_added), spans,
            list(p.context_classes), p.problem]


def _entry(row: Any, where: str) -> PreparedText:
    """A ``PreparedText`` from one stored row, every field type-checked (the file may be foreign)."""
    if not isinstance(row, list) or len(row) != len(_COLUMNS):
        raise ValueError(f"{where}: expected a list of {len(_COLUMNS)} fields {list(_COLUMNS)}")
    text, scanrefer, utterance, map_string, prefix_added, spans, classes, problem = row
    if not all(isinstance(v, str) for v in (text, utterance, map_string)):
        raise ValueError(f"{where}: text, utterance and positive_map_string must be strings")
    if not isinstance(scanrefer, bool) or not isinstance(prefix_added, bool):
        raise ValueError(f"{where}: scanrefer and prefix_added must be true/false")
    if problem is not None and not isinstance(problem, str):
        raise ValueError(f"{where}: problem must be a string or null")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"{where}: context_classes must be a list of strings")
    if not isinstance(spans, list) or len(spans) != len(SPAN_KINDS):
        raise ValueError(f"{where}: spans must be {len(SPAN_KINDS)} lists, one per kind {list(SPAN_KINDS)}")
    out: dict[str, list[tuple[int, int]]] = {}
    for kind, flat in zip(SPAN_KINDS, spans):
        if not isinstance(flat, list) or len(flat) % 2 or not all(type(v) is int for v in flat):
            raise ValueError(f"{where}: spans of {kind!r} must be a flat list of begin/end integer pairs")
        pairs = [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
        if any(not 0 <= b <= e <= len(map_string) for b, e in pairs):
            raise ValueError(f"{where}: a span of {kind!r} lies outside positive_map_string")
        out[kind] = pairs
    return PreparedText(raw=text, utterance=utterance, model_input=map_string + SUFFIX,
                        positive_map_string=map_string, prefix_added=prefix_added, spans=out,
                        context_classes=classes, scanrefer=scanrefer, problem=problem)


def write_cache(path: str | os.PathLike, prepared: Iterable[PreparedText], *,
                spacy: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> int:
    """Write ``prepared`` (one entry per (raw, scanrefer); later duplicates must be equal) to
    ``path`` (gzip JSON; ``.json`` without ``.gz`` is written uncompressed). ``spacy``: the versions
    the parses came from (default ``spacy_info()``); ``extra``: free metadata (e.g. the sources).
    Returns the number of entries."""
    rows: dict[tuple[str, bool], list[Any]] = {}
    for p in prepared:
        if not isinstance(p, PreparedText):
            raise TypeError(f"write_cache expects PreparedText items, got {type(p).__name__}")
        if p.problem == "not parsed (parse=False)":
            raise ValueError(f"{p.raw!r} was prepared with parse=False: the cache holds parses only")
        row = _row(p)
        key = (p.raw, bool(p.scanrefer))
        if rows.setdefault(key, row) != row:
            raise ValueError(f"two different parses of {p.raw!r} (scanrefer={p.scanrefer})")
    obj = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "spacy": spacy if spacy is not None else spacy_info(),
           "pipeline": pipeline_fingerprint(), "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
               timespec="seconds"), "extra": extra or {}, "columns": list(_COLUMNS), "rows": list(rows.values())}
    data = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    # mtime=0: the same parses give the same bytes (the file can be compared or hashed)
    tmp.write_bytes(data if out.suffix == ".json" else gzip.compress(data, compresslevel=9, mtime=0))
    tmp.replace(out)
    return len(rows)


def read_cache(path: str | os.PathLike) -> tuple[dict[tuple[str, bool], PreparedText], dict[str, Any]]:
    """(entries keyed by (text, scanrefer), metadata without the rows) of a cache file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"text-prep cache {p} not found; build it where spaCy is: {PACK_TOOL}")
    raw = p.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{p} is not a text-prep cache (not JSON: {exc}); build one with {PACK_TOOL}") from None
    if not isinstance(obj, dict) or obj.get("format") != CACHE_FORMAT:
        raise ValueError(f"{p} is not a text-prep cache (format is not {CACHE_FORMAT!r}); build one with {PACK_TOOL}")
    if obj.get("version") != CACHE_VERSION:
        raise ValueError(f"{p}: text-prep cache version {obj.get('version')!r}, this code reads version "
                         f"{CACHE_VERSION}; rebuild it with {PACK_TOOL}")
    if obj.get("columns") != list(_COLUMNS) or not isinstance(obj.get("rows"), list):
        raise ValueError(f"{p}: columns must be {list(_COLUMNS)} with a list of rows; rebuild it with {PACK_TOOL}")
    entries: dict[tuple[str, bool], PreparedText] = {}
    for i, row in enumerate(obj["rows"]):
        e = _entry(row, f"{p} row {i}")
        entries[(e.raw, e.scanrefer)] = e
    meta = {k: v for k, v in obj.items() if k != "rows"}
    meta["entries"] = len(entries)
    return entries, meta


def _copy(p: PreparedText) -> PreparedText:
    """A private copy: callers keep and may change what they get; the cache must not change."""
    return dataclasses.replace(p, spans={k: list(v) for k, v in p.spans.items()},
                               context_classes=list(p.context_classes))


class CachedPreparer:
    """``prepare_text`` from a cache file: same call, ``(text, scanrefer=False, strict=False, parse=True)``.

    A hit returns (a copy of) the stored parse. ``parse=False`` needs no spaCy and is computed;
    ``strict=True`` is not what the cache holds (it stores the lenient parse) and goes to
    ``prepare_text``. A miss is parsed with spaCy when it is importable (counted in ``misses``);
    without spaCy it raises ``TextPrepCacheMiss`` naming the tool that builds the cache.
    """

    def __init__(self, entries: dict[tuple[str, bool], PreparedText], meta: dict[str, Any] | None = None,
                 source: str = "") -> None:
        self.entries = dict(entries)
        self.meta = dict(meta or {})
        self.source = source
        self.hits = 0
        self.misses = 0

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "CachedPreparer":
        entries, meta = read_cache(path)
        here = pipeline_fingerprint()
        if meta.get("pipeline") != here:
            log.warning("text-prep cache %s was made by other text-pipeline sources than this checkout's: its parses "
                        "may differ from prepare_text here; rebuild it with %s", path, PACK_TOOL)
        return cls(entries, meta, str(path))

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def __call__(self, text: str, scanrefer: bool = False, strict: bool = False, parse: bool = True) -> PreparedText:
        if not parse or strict:
            return _prep.prepare_text(text, scanrefer=scanrefer, strict=strict, parse=parse)
        hit = self.entries.get((text, bool(scanrefer)))
        if hit is not None:
            self.hits += 1
            return _copy(hit)
        try:
            _prep.load_spacy()
        except ImportError as exc:
            mode = "ScanRefer token" if scanrefer else "raw-text"
            raise TextPrepCacheMiss(
                f"the sentence {text!r} ({mode} mode) is not in the text-prep cache {self.source or '(in memory)'} "
                f"and spaCy cannot parse it here ({exc}). Rebuild the cache where spaCy is, from the same data: "
                f"{PACK_TOOL} (--scanrefer-tokens for train.dataset: scanrefer; --synth for synthetic rooms "
                "generated on the training machine); or set model.loss.align: 0 and model.text.official_prep: false"
            ) from None
        self.misses += 1
        return _prep.prepare_text(text, scanrefer=scanrefer)


_loaded: dict[tuple[str, int, int], CachedPreparer] = {}
_loaded_lock = threading.Lock()


def load_cached_preparer(path: str | os.PathLike) -> CachedPreparer:
    """``CachedPreparer.from_file``, read once per file version (the train and eval sets and the
    text encoder of one run share it)."""
    p = Path(path).resolve()
    if not p.is_file():
        raise FileNotFoundError(f"text-prep cache {path} not found (train.text_prep_cache); build it where spaCy is: "
                                f"{PACK_TOOL}")
    st = p.stat()
    key = (str(p), st.st_mtime_ns, st.st_size)
    with _loaded_lock:
        if key not in _loaded:
            _loaded[key] = CachedPreparer.from_file(p)
        return _loaded[key]
