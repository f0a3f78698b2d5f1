"""ScanRefer (3D-RES) and Multi3DRefer (3D-GRES) annotation loaders.

Both JSON formats become one list of ``Annotation`` (ReferIt3D's Sr3D / Nr3D CSV files too, through
``bqnet_model.data.referit3d``). ScanRefer files carry no unique/multiple
flag: it is computed from the scene's labels (``unique`` = no other instance of the target's class
in the scene), as ScanRefer's evaluation defines it, when the per-scene ``.npz`` files are given.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = [
    "Annotation",
    "load_scanrefer",
    "load_multi3drefer",
    "load_annotations",
    "read_annotation_list",
    "res_eval_type",
    "same_class_ids",
    "assign_res_eval_types",
    "save_annotations",
]


@dataclass
class Annotation:
    """One referring expression: the sentence and the instance ids it names (empty: no target).

    ``anchor_ids``: the other objects the sentence names ("the desk" of "the chair next to the
    desk"), from the JSON's optional ``anchor_ids`` (the synthetic writer records them; ScanRefer
    and Multi3DRefer files have none, so it stays empty); the anchor supervision of training reads it.
    """

    scene_id: str
    object_ids: list[int]
    object_name: str
    ann_id: str
    description: str
    eval_type: str | None = None  # 'unique' / 'multiple' (RES) or Multi3DRefer's types (GRES)
    extra: dict[str, Any] = field(default_factory=dict)  # other JSON fields, kept verbatim
    anchor_ids: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_annotation_list(json_path: str | os.PathLike) -> list[dict[str, Any]]:
    """The raw entries of an annotation JSON (a list of objects), with a clear error for a missing
    file, invalid JSON or anything else than a list of objects."""
    p = Path(json_path)
    if not p.is_file():
        raise FileNotFoundError(f"annotation file not found: {p}")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: not valid JSON ({exc})") from exc
    if not isinstance(data, list):
        raise ValueError(f"{p}: expected a JSON list of annotations, got {type(data).__name__}")
    for i, d in enumerate(data):
        if not isinstance(d, dict):
            raise ValueError(f"{p}: entry {i} is {type(d).__name__}, expected an object")
    return data


def _anchor_ids(p: str | os.PathLike, i: int, d: dict[str, Any]) -> list[int]:
    """The entry's optional ``anchor_ids`` list (empty when absent), checked like the target ids."""
    ids = d.get("anchor_ids", [])
    if not isinstance(ids, list):
        raise ValueError(f"{p}: entry {i} has anchor_ids {ids!r}, expected a list of instance ids")
    return [_as_id(p, i, v, "anchor id") for v in ids]


def _need(p: str | os.PathLike, i: int, d: dict[str, Any], keys: Sequence[str]) -> None:
    missing = [k for k in keys if k not in d]
    if missing:
        raise ValueError(f"{p}: entry {i} lacks {missing} (has {sorted(d)})")


def _as_id(p: str | os.PathLike, i: int, value: Any, what: str) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{p}: entry {i} has a non-integer {what} {value!r}") from exc
    if isinstance(value, float) and value != v:
        raise ValueError(f"{p}: entry {i} has a non-integer {what} {value!r}")
    if v < 0:
        raise ValueError(f"{p}: entry {i} has a negative {what} {v}")
    return v


_SCANREFER_KEYS = ("scene_id", "object_id", "object_name", "ann_id", "description")
_MULTI3DREFER_KEYS = ("scene_id", "object_ids", "object_name", "ann_id", "description", "eval_type")


def load_scanrefer(json_path: str | os.PathLike, scene_dir: str | os.PathLike | None = None) -> list[Annotation]:
    """Load a ScanRefer JSON list of ``{scene_id, object_id, object_name, ann_id, description}``.

    ``eval_type`` is taken from the entry when present ('unique'/'multiple'); otherwise it is computed
    from ``scene_dir/<scene_id>.npz`` when ``scene_dir`` is given, else left None.
    """
    data = read_annotation_list(json_path)
    anns: list[Annotation] = []
    for i, d in enumerate(data):
        _need(json_path, i, d, _SCANREFER_KEYS)
        et = d.get("eval_type")
        if et is not None and et not in ("unique", "multiple"):
            raise ValueError(f"{json_path}: entry {i} has eval_type {et!r}, expected 'unique' or 'multiple'")
        extra = {k: v for k, v in d.items() if k not in _SCANREFER_KEYS and k not in ("eval_type", "anchor_ids")}
        anns.append(Annotation(str(d["scene_id"]), [_as_id(json_path, i, d["object_id"], "object_id")],
                               str(d["object_name"]), str(d["ann_id"]), str(d["description"]), et, extra,
                               _anchor_ids(json_path, i, d)))
    if scene_dir is not None:
        assign_res_eval_types(anns, scene_dir)
    return anns


def load_multi3drefer(json_path: str | os.PathLike) -> list[Annotation]:
    """Load a Multi3DRefer JSON list of ``{scene_id, object_ids, object_name, ann_id, description,
    eval_type}``; ``object_ids`` may be empty (a zero-target description)."""
    data = read_annotation_list(json_path)
    anns: list[Annotation] = []
    for i, d in enumerate(data):
        _need(json_path, i, d, _MULTI3DREFER_KEYS)
        ids = d["object_ids"]
        if not isinstance(ids, list):
            raise ValueError(f"{json_path}: entry {i} has object_ids {ids!r}, expected a list")
        extra = {k: v for k, v in d.items() if k not in _MULTI3DREFER_KEYS and k != "anchor_ids"}
        anns.append(Annotation(str(d["scene_id"]), [_as_id(json_path, i, v, "object id") for v in ids],
                               str(d["object_name"]), str(d["ann_id"]), str(d["description"]),
                               str(d["eval_type"]), extra, _anchor_ids(json_path, i, d)))
    return anns


def load_annotations(json_path: str | os.PathLike, scene_dir: str | os.PathLike | None = None) -> list[Annotation]:
    """Any of the formats: a ``.csv`` is ReferIt3D (Sr3D / Nr3D); JSON is told apart by the first
    entry's keys (``object_ids`` = Multi3DRefer, else ScanRefer)."""
    if Path(json_path).suffix.lower() == ".csv":
        from bqnet_model.data.referit3d import load_referit3d

        anns = load_referit3d(json_path)
        if scene_dir is not None:
            assign_res_eval_types(anns, scene_dir)
        return anns
    data = read_annotation_list(json_path)
    if data and "object_ids" in data[0]:
        return load_multi3drefer(json_path)
    return load_scanrefer(json_path, scene_dir)


def save_annotations(path: str | os.PathLike, anns: Iterable[Annotation], fmt: str = "scanrefer") -> None:
    """Write annotations back as ScanRefer or Multi3DRefer JSON (used by tools and tests)."""
    if fmt not in ("scanrefer", "multi3drefer"):
        raise ValueError(f"fmt must be 'scanrefer' or 'multi3drefer', got {fmt!r}")
    out = []
    for a in anns:
        d: dict[str, Any] = {"scene_id": a.scene_id}
        if fmt == "scanrefer":
            if len(a.object_ids) != 1:
                raise ValueError(f"ScanRefer needs exactly one object id, {a.scene_id}/{a.ann_id} has {a.object_ids}")
            d["object_id"] = str(a.object_ids[0])
        else:
            d["object_ids"] = list(a.object_ids)
        d.update(object_name=a.object_name, ann_id=a.ann_id, description=a.description)
        if a.eval_type is not None:
            d["eval_type"] = a.eval_type
        if a.anchor_ids:  # written only when known, so files without anchors keep their shape
            d["anchor_ids"] = [int(k) for k in a.anchor_ids]
        d.update(a.extra)
        out.append(d)
    Path(path).write_text(json.dumps(out, indent=1))


def _instance_classes(instance: np.ndarray, semantic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(instance ids, the majority semantic class of each), vectorized over points."""
    valid = instance >= 0
    inst = instance[valid].astype(np.int64)
    sem = semantic[valid].astype(np.int64)
    if inst.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ids = np.unique(inst)
    shift = sem - sem.min()
    n_cls = int(shift.max()) + 1
    row = np.searchsorted(ids, inst)
    votes = np.zeros((len(ids), n_cls), np.int64)
    np.add.at(votes, (row, shift), 1)
    return ids, votes.argmax(axis=1) + sem.min()


def same_class_ids(object_id: int, instance: np.ndarray, semantic: np.ndarray, object_names: Sequence[str],
                   n_classes: int | None = None) -> np.ndarray:
    """Instance ids of the scene's objects of ``object_id``'s class, itself included (sorted).

    The class is the instance's majority semantic label when it is a named class (``0 <= c <
    n_classes``); for unmapped objects ("other" or unlabelled) the raw ``object_names`` are compared,
    so two unrelated "other" objects are not of one class. The one definition behind the
    unique/multiple split and the random-object-of-the-class chance baseline.
    """
    instance = np.asarray(instance)
    semantic = np.asarray(semantic)
    if instance.shape != semantic.shape or instance.ndim != 1:
        raise ValueError(f"instance and semantic must be (N,) arrays of one shape, got {instance.shape}, {semantic.shape}")
    ids, cls = _instance_classes(instance, semantic)
    where = np.flatnonzero(ids == object_id)
    if where.size == 0:
        raise ValueError(f"object id {object_id} has no points in the scene (instances: {ids.tolist()})")
    c = int(cls[where[0]])
    if c >= 0 and (n_classes is None or c < n_classes):
        return ids[cls == c]
    names = np.asarray([str(object_names[i]) if i < len(object_names) else "" for i in ids])
    return ids[names == names[where[0]]]


def res_eval_type(object_id: int, instance: np.ndarray, semantic: np.ndarray, object_names: Sequence[str],
                  n_classes: int | None = None) -> str:
    """'unique' when no other instance of the target's class is in the scene, else 'multiple'
    (ScanRefer's split; the class as ``same_class_ids`` defines it)."""
    same = same_class_ids(object_id, instance, semantic, object_names, n_classes)
    return "unique" if same.size == 1 else "multiple"


def assign_res_eval_types(anns: list[Annotation], scene_dir: str | os.PathLike,
                          n_classes: int | None = None) -> list[Annotation]:
    """Fill ``eval_type`` of RES annotations that lack it, from ``scene_dir/<scene_id>.npz`` labels.

    ``n_classes`` defaults to the synthetic/ScanNet class list (``bqnet_model.data.classes.CLASSES``): ids at or
    above it are the "other" class.
    """
    if n_classes is None:
        from bqnet_model.data.classes import CLASSES

        n_classes = len(CLASSES)
    todo: dict[str, list[Annotation]] = {}
    for a in anns:
        if a.eval_type is None:
            todo.setdefault(a.scene_id, []).append(a)
    for scene_id, group in todo.items():
        path = Path(scene_dir) / f"{scene_id}.npz"
        if not path.is_file():
            raise FileNotFoundError(f"scene file {path} needed for the unique/multiple split is missing")
        with np.load(path, allow_pickle=False) as z:
            inst, sem, names = z["instance"], z["semantic"], [str(s) for s in z["object_names"]]
        for a in group:
            if len(a.object_ids) != 1:
                raise ValueError(f"{scene_id}/{a.ann_id}: RES needs one target, got {a.object_ids}")
            a.eval_type = res_eval_type(a.object_ids[0], inst, sem, names, n_classes)
    return anns
