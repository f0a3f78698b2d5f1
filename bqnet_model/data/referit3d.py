"""ReferIt3D (Sr3D / Nr3D) CSV files -> ``Annotation``, beside the ScanRefer / Multi3DRefer loaders.

ReferIt3D ships its sentences as CSV, one row per utterance: ``scan_id``, ``target_id`` (ScanNet's
v2 ``objectId``, the same id ScanRefer calls ``object_id``), ``instance_type`` (the target's raw
ScanNet label) and ``utterance``. Sr3D rows add the anchors (``anchor_ids``, ``anchors_types``),
the same-class ``distractor_ids`` and the relation (``reference_type``); Nr3D rows add the
annotator flags (``correct_guess``, ``mentions_target_class``, ``uses_*_lang``). Which one a
file is comes from its header, so a renamed file still says what it holds; the result keeps it in
``extra['source']`` ('sr3d' / 'nr3d'), anchor ids as ints in ``extra['anchor_ids']``, and every
other column as parsed values.

``ann_id`` is the row's position in the file: ReferIt3D has no per-utterance id (``stimulus_id``
names a target and its distractors, shared by many utterances).
"""

from __future__ import annotations

import ast
import csv
import os
from pathlib import Path
from typing import Any

from bqnet_model.data.referit import Annotation

__all__ = ["REFERIT3D_KEYS", "detect_referit3d_source", "load_referit3d"]

REFERIT3D_KEYS: tuple[str, ...] = ("scan_id", "target_id", "instance_type", "utterance")
_ID_LISTS = ("anchor_ids", "distractor_ids")  # "[7]", "[0, 3]": lists of v2 object ids
_NAME_LISTS = ("anchors_types",)  # "['desk']"
_FLAGS = ("correct_guess", "mentions_target_class", "uses_object_lang", "uses_spatial_lang",
          "uses_color_lang", "uses_shape_lang")
_SOURCES = ("sr3d", "nr3d")


def detect_referit3d_source(header: list[str]) -> str | None:
    """'sr3d' when the columns carry anchors / a relation, 'nr3d' when they carry Nr3D's annotator
    flags, None when neither (a trimmed file: pass ``source`` to ``load_referit3d``)."""
    cols = set(header)
    if {"anchor_ids", "reference_type"} & cols:
        return "sr3d"
    if {"mentions_target_class", "correct_guess"} & cols:
        return "nr3d"
    return None


def _parse_list(path: Path, row: int, col: str, text: str) -> list[Any]:
    text = text.strip()
    if not text:
        return []
    try:
        value = ast.literal_eval(text)  # literals only: a CSV cell cannot run code
    except (ValueError, SyntaxError) as exc:
        raise ValueError(f"{path}: line {row} has {col} {text!r}, expected a list like [1, 2]") from exc
    if isinstance(value, (int, str)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{path}: line {row} has {col} {text!r}, expected a list like [1, 2]")
    return list(value)


def _parse_flag(path: Path, row: int, col: str, text: str) -> bool | None:
    t = text.strip().lower()
    if t in ("true", "1"):
        return True
    if t in ("false", "0"):
        return False
    if t == "":
        return None
    raise ValueError(f"{path}: line {row} has {col} {text!r}, expected True or False")


def _as_id(path: Path, row: int, col: str, value: Any) -> int:
    try:
        v = int(str(value).strip())
    except ValueError as exc:
        raise ValueError(f"{path}: line {row} has a non-integer {col} {value!r}") from exc
    if v < 0:
        raise ValueError(f"{path}: line {row} has a negative {col} {v}")
    return v


def load_referit3d(csv_path: str | os.PathLike, source: str | None = None) -> list[Annotation]:
    """Read a ReferIt3D CSV (Sr3D or Nr3D) into ``Annotation`` (one target each, RES).

    ``source`` overrides what the header says ('sr3d' / 'nr3d'). ``eval_type`` is left None:
    ``assign_res_eval_types`` fills ScanRefer's unique / multiple from the scene labels.
    """
    p = Path(csv_path)
    if not p.is_file():
        raise FileNotFoundError(f"ReferIt3D CSV not found: {p}")
    if source is not None and source not in _SOURCES:
        raise ValueError(f"source must be one of {_SOURCES} or None, got {source!r}")
    with open(p, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        missing = [k for k in REFERIT3D_KEYS if k not in header]
        if missing:
            raise ValueError(f"{p}: ReferIt3D CSV lacks columns {missing} (header: {header}); "
                             "expected Sr3D / Nr3D rows with scan_id, target_id, instance_type, utterance")
        src = source or detect_referit3d_source(header)
        if src is None:
            raise ValueError(f"{p}: cannot tell Sr3D from Nr3D by the header {header}; pass source='sr3d' or 'nr3d'")
        anns: list[Annotation] = []
        for i, row in enumerate(reader):
            line = i + 2  # header is line 1; what a user sees in an editor
            if None in row:  # more cells than header columns: a broken quote, not data to guess at
                raise ValueError(f"{p}: line {line} has {len(header) + len(row[None])} cells for {len(header)} columns")
            extra: dict[str, Any] = {"source": src}
            for col, text in row.items():
                if col in REFERIT3D_KEYS:
                    continue
                text = text or ""
                if col in _ID_LISTS:
                    extra[col] = [_as_id(p, line, col, v) for v in _parse_list(p, line, col, text)]
                elif col in _NAME_LISTS:
                    extra[col] = [str(v) for v in _parse_list(p, line, col, text)]
                elif col in _FLAGS:
                    extra[col] = _parse_flag(p, line, col, text)
                else:
                    extra[col] = text
            utterance = (row["utterance"] or "").strip()
            if not utterance:
                raise ValueError(f"{p}: line {line} has an empty utterance")
            anns.append(Annotation(
                scene_id=(row["scan_id"] or "").strip(),
                object_ids=[_as_id(p, line, "target_id", row["target_id"])],
                object_name=(row["instance_type"] or "").strip(),
                ann_id=str(i),
                description=utterance,
                eval_type=None,
                extra=extra,
            ))
    return anns
