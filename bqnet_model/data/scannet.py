"""ScanNet v2 scans -> the per-scene ``.npz`` of docs/architecture.md.

A ScanNet scan folder holds ``<scene>_vh_clean_2.ply`` (mesh vertices with rgb, then faces),
``<scene>.aggregation.json`` (or ``<scene>_vh_clean.aggregation.json``; ``segGroups`` with
``objectId``, ``label`` and the mesh ``segments`` of each object) and
``<scene>_vh_clean_2.0.010000.segs.json`` (``segIndices``: the mesh oversegmentation, one id per
vertex). ScanRefer/Multi3DRefer ``object_id`` = ``objectId`` of the aggregation, so instance ids are
kept as they are. ScanNet's segments (made dense) are the superpoints, as in the original; with
``superpoints='ours'`` the online oversegmentation of the point cloud is used instead, which is what
a robot has at run time.

The mesh is in the scanner's frame; ScanRefer / ReferIt3D boxes and sentences ("the chair left of
the door") are meant in the axis-aligned frame, so ``align`` applies ScanNet's ``axisAlignment``,
taken from ``<scene>.txt`` (the official layout), a JSON of matrices per scan, or a
``*.v2_vertex_labels.npz`` beside the mesh (its ``axis_align_matrix``). Raw labels map to
``CLASSES`` by name first and then, with ScanNet's ``scannetv2-labels.combined.tsv``, through the
NYU40 class of the raw category ("couch" -> sofa), so synonyms the rules miss still find their class.

The votenet-format 50k-point copies of scans (``<scan>_vert.npy``, ``_ins_label.npy``, labels per
object from ``objects_info_<scan>.npy``) are read into the same ``ScanNetScene`` by
``load_votenet_scene``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bqnet_model.data.classes import CLASS_ID, CLASSES
from bqnet_model.model.inputs import dense_labels
from bqnet_model.ply import read_ply

__all__ = [
    "OTHER_CLASS",
    "UNLABELLED",
    "ScanNetScene",
    "class_id_for",
    "load_label_map",
    "load_axis_alignments",
    "axis_alignment_for",
    "apply_transform",
    "scan_files",
    "load_scannet_scene",
    "save_scene_npz",
    "load_scene_npz",
    "preprocess_scannet",
    "load_objects_info",
    "load_votenet_scene",
]

OTHER_CLASS = len(CLASSES)  # a labelled object whose name matches none of CLASSES
UNLABELLED = -1  # points of no segGroup: semantic and instance -1


@dataclass
class ScanNetScene:
    """One scene as arrays (the content of the ``.npz``)."""

    scene_id: str
    xyz: np.ndarray  # float32 (N, 3)
    rgb: np.ndarray  # uint8 (N, 3)
    superpoint: np.ndarray  # int64 (N,), dense 0..S-1
    semantic: np.ndarray  # int64 (N,), index into CLASSES, OTHER_CLASS, or -1
    instance: np.ndarray  # int64 (N,), aggregation objectId or -1
    object_names: np.ndarray  # str (max objectId + 1,), raw ScanNet label per instance id ('' = unused)


def _normalise(name: str) -> str:
    return re.sub(r"\s+", " ", name.strip().lower().replace("_", " "))


def _class_by_rules(name: str) -> int:
    cands = [name, name[:-1] if name.endswith("s") else name]
    last = name.split(" ")[-1] if name else name
    cands += [last, last[:-1] if last.endswith("s") else last]
    for c in cands:
        if c in CLASS_ID:
            return CLASS_ID[c]
    return OTHER_CLASS


def class_id_for(raw_label: str, label_map: dict[str, str] | None = None) -> int:
    """Map a raw ScanNet label to a CLASSES index, or OTHER_CLASS.

    Tried in order: the name itself, its singular (trailing 's' dropped), its last word ("office
    chair" -> chair, "kitchen cabinets" -> cabinet), that word's singular; then, when
    ``label_map`` (``load_label_map``) knows the raw name, the same rules on its NYU40 class
    ("couch" -> "sofa"). The name comes first because NYU40 folds some of our classes into
    "otherprop" (trash can) that the name alone keeps.
    """
    name = _normalise(raw_label)
    cid = _class_by_rules(name)
    if cid == OTHER_CLASS and label_map:
        mapped = label_map.get(name)
        if mapped:
            cid = _class_by_rules(_normalise(mapped))
    return cid


def load_label_map(tsv_path: str | os.PathLike) -> dict[str, str]:
    """ScanNet's ``scannetv2-labels.combined.tsv`` as {normalised raw_category: nyu40class}."""
    p = Path(tsv_path)
    if not p.is_file():
        raise FileNotFoundError(f"ScanNet label table not found: {p} (scannetv2-labels.combined.tsv)")
    lines = p.read_text().splitlines()
    if not lines:
        raise ValueError(f"{p}: empty label table")
    head = lines[0].split("\t")
    missing = [k for k in ("raw_category", "nyu40class") if k not in head]
    if missing:
        raise ValueError(f"{p}: label table lacks columns {missing} (has {head[:8]}...); "
                         "expected ScanNet's scannetv2-labels.combined.tsv")
    ri, ni = head.index("raw_category"), head.index("nyu40class")
    out: dict[str, str] = {}
    for line in lines[1:]:
        cols = line.split("\t")
        if len(cols) > max(ri, ni) and cols[ri].strip():
            out[_normalise(cols[ri])] = cols[ni].strip()
    return out


def _as_matrix(values: Any, where: str) -> np.ndarray:
    m = np.asarray(values, dtype=np.float64)
    if m.size != 16:
        raise ValueError(f"{where}: axis alignment has {m.size} values, expected 16 (a 4x4 matrix)")
    m = m.reshape(4, 4)
    if not np.isfinite(m).all() or not np.allclose(m[3], (0, 0, 0, 1)):
        raise ValueError(f"{where}: axis alignment is not a finite rigid 4x4 (last row {m[3].tolist()})")
    return m


def load_axis_alignments(json_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A JSON object {scene_id: 16 numbers (row-major 4x4) or a 4x4 list} as 4x4 arrays."""
    p = Path(json_path)
    if not p.is_file():
        raise FileNotFoundError(f"axis alignment file not found: {p}")
    data = _read_json(p)
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a JSON object {{scene_id: 4x4 matrix}}, got {type(data).__name__}")
    return {str(k): _as_matrix(v, f"{p} [{k}]") for k, v in data.items()}


def apply_transform(xyz: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``xyz`` (N, 3) moved by the 4x4 ``m`` (computed in float64, returned float32)."""
    return (np.asarray(xyz, np.float64) @ m[:3, :3].T + m[:3, 3]).astype(np.float32)


def scan_files(scan_dir: str | os.PathLike, scene_id: str | None = None) -> dict[str, Path]:
    """The three input files of one scan folder; FileNotFoundError naming what is missing."""
    d = Path(scan_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"ScanNet scan folder not found: {d}")
    sid = scene_id or d.name
    ply = d / f"{sid}_vh_clean_2.ply"
    segs = d / f"{sid}_vh_clean_2.0.010000.segs.json"
    agg = d / f"{sid}.aggregation.json"
    if not agg.is_file():
        agg = d / f"{sid}_vh_clean.aggregation.json"
    missing = [p.name for p in (ply, segs, agg) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"scan {sid} in {d} lacks {missing}")
    return {"ply": ply, "segs": segs, "aggregation": agg}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


def axis_alignment_for(scan_dir: str | os.PathLike, scene_id: str,
                       matrices: dict[str, np.ndarray] | None = None) -> np.ndarray | None:
    """ScanNet's ``axisAlignment`` 4x4 of one scan, or None when no source has it.

    Sources, first found wins: ``<scene>.txt`` in the scan folder (ScanNet's own layout),
    ``matrices[scene_id]`` (``load_axis_alignments``), ``axis_align_matrix`` of a
    ``<scene>*.v2_vertex_labels.npz`` in the scan folder.
    """
    d = Path(scan_dir)
    meta = d / f"{scene_id}.txt"
    if meta.is_file():
        for line in meta.read_text().splitlines():
            if line.strip().startswith("axisAlignment"):
                return _as_matrix([float(v) for v in line.split("=", 1)[1].split()], str(meta))
    if matrices and scene_id in matrices:
        return _as_matrix(matrices[scene_id], f"axis alignment of {scene_id}")
    for npz in sorted(d.glob(f"{scene_id}*.v2_vertex_labels.npz")):
        with np.load(npz, allow_pickle=False) as z:
            if "axis_align_matrix" in z.files:
                return _as_matrix(z["axis_align_matrix"], str(npz))
    return None


def load_scannet_scene(
    scan_dir: str | os.PathLike,
    scene_id: str | None = None,
    *,
    superpoints: str = "scannet",
    align: bool = False,
    superpoint_params: dict[str, Any] | None = None,
    axis_alignments: dict[str, np.ndarray] | None = None,
    label_map: dict[str, str] | None = None,
) -> ScanNetScene:
    """Read one ScanNet scan folder into arrays.

    ``superpoints``: 'scannet' (the mesh segments, dense) or 'ours'
    (``bqnet_model.superpoints.oversegment`` on the vertices). ``align`` applies the scan's
    ``axisAlignment`` (``axis_alignment_for``: ``<scene>.txt``, ``axis_alignments``, the npz;
    ScanRefer's boxes and the sentences' left/right are in the aligned frame; masks do not care).
    ``label_map`` (``load_label_map``) lets NYU40 classes name objects the rules miss.
    Segments listed in several segGroups go to the last one (ScanNet has a few).
    """
    if superpoints not in ("scannet", "ours"):
        raise ValueError(f"superpoints must be 'scannet' or 'ours', got {superpoints!r}")
    d = Path(scan_dir)
    sid = scene_id or d.name
    files = scan_files(d, sid)
    cloud = read_ply(files["ply"])
    n = cloud.n_points
    if cloud.rgb is None:
        raise ValueError(f"{files['ply']}: the mesh has no vertex colours (red/green/blue)")
    segs_json = _read_json(files["segs"])
    if not isinstance(segs_json, dict) or "segIndices" not in segs_json:
        raise ValueError(f"{files['segs']}: no 'segIndices' list")
    seg = np.asarray(segs_json["segIndices"])
    if seg.ndim != 1 or seg.shape[0] != n:
        raise ValueError(f"{files['segs']}: {seg.shape[0] if seg.ndim == 1 else seg.shape} segIndices "
                         f"for {n} vertices of {files['ply'].name}")
    if seg.size and not np.issubdtype(seg.dtype, np.integer):
        raise ValueError(f"{files['segs']}: segIndices must be integers, got dtype {seg.dtype}")
    seg = seg.astype(np.int64)
    agg = _read_json(files["aggregation"])
    groups = agg.get("segGroups") if isinstance(agg, dict) else None
    if not isinstance(groups, list):
        raise ValueError(f"{files['aggregation']}: no 'segGroups' list")

    uniq, seg_dense = np.unique(seg, return_inverse=True)
    seg_dense = seg_dense.reshape(-1)
    seg_obj = np.full(len(uniq), -1, np.int64)
    seg_cls = np.full(len(uniq), UNLABELLED, np.int64)
    names: dict[int, str] = {}
    for gi, g in enumerate(groups):  # per object (tens), not per point
        try:
            oid = int(g["objectId"])
            label = str(g["label"])
            segments = np.asarray(g["segments"], dtype=np.int64).reshape(-1)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{files['aggregation']}: segGroup {gi} needs objectId, label and segments ({exc})") from exc
        if oid < 0:
            raise ValueError(f"{files['aggregation']}: segGroup {gi} has a negative objectId {oid}")
        names[oid] = label
        pos = np.searchsorted(uniq, segments)
        ok = (pos < len(uniq)) & (uniq[np.minimum(pos, len(uniq) - 1)] == segments)
        seg_obj[pos[ok]] = oid
        seg_cls[pos[ok]] = class_id_for(label, label_map)
    instance = seg_obj[seg_dense]
    semantic = seg_cls[seg_dense]
    object_names = np.full(max(names, default=-1) + 1, "", dtype=object)
    for oid, label in names.items():
        object_names[oid] = label
    object_names = object_names.astype(str) if len(object_names) else np.zeros(0, dtype="<U1")

    xyz = cloud.xyz.astype(np.float32)
    if align:
        m = axis_alignment_for(d, sid, axis_alignments)
        if m is None:
            raise FileNotFoundError(f"align=True but scan {sid} has no axisAlignment: neither {d / (sid + '.txt')}, "
                                    "an axis alignment JSON holding it, nor a *.v2_vertex_labels.npz in its folder")
        xyz = apply_transform(xyz, m)
    if superpoints == "ours":
        try:
            from bqnet_model.superpoints import oversegment
        except ImportError as exc:
            raise ImportError(f"superpoints='ours' needs bqnet_model.superpoints (run `make setup`): {exc}") from exc

        sp = np.asarray(oversegment(xyz, cloud.rgb, **(superpoint_params or {})), dtype=np.int64)
        sp, _ = dense_labels(sp)
    else:
        sp = seg_dense.astype(np.int64)
    return ScanNetScene(sid, np.ascontiguousarray(xyz), cloud.rgb, sp, semantic, instance, object_names)


def save_scene_npz(path: str | os.PathLike, scene: ScanNetScene) -> None:
    """Write the architecture's per-scene file (uncompressed: it is read every epoch)."""
    np.savez(path, xyz=scene.xyz.astype(np.float32), rgb=scene.rgb.astype(np.uint8),
             superpoint=scene.superpoint.astype(np.int64), semantic=scene.semantic.astype(np.int64),
             instance=scene.instance.astype(np.int64), object_names=np.asarray(scene.object_names, dtype=str))


_NPZ_KEYS = ("xyz", "rgb", "superpoint", "semantic", "instance", "object_names")


def load_scene_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read and check a per-scene ``.npz`` (synthetic or preprocessed ScanNet) into a dict of arrays."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"scene file not found: {p}")
    with np.load(p, allow_pickle=False) as z:
        missing = [k for k in _NPZ_KEYS if k not in z.files]
        if missing:
            raise ValueError(f"{p}: scene file lacks {missing} (has {sorted(z.files)})")
        out = {k: z[k] for k in _NPZ_KEYS}
    n = out["xyz"].shape[0]
    if out["xyz"].ndim != 2 or out["xyz"].shape[1] != 3:
        raise ValueError(f"{p}: xyz must be (N, 3), got {out['xyz'].shape}")
    for k in ("rgb",):
        if out[k].shape != (n, 3):
            raise ValueError(f"{p}: {k} must be ({n}, 3), got {out[k].shape}")
    for k in ("superpoint", "semantic", "instance"):
        if out[k].shape != (n,):
            raise ValueError(f"{p}: {k} must be ({n},), got {out[k].shape}")
    out["xyz"] = out["xyz"].astype(np.float32, copy=False)
    out["rgb"] = out["rgb"].astype(np.uint8, copy=False)
    for k in ("superpoint", "semantic", "instance"):
        out[k] = out[k].astype(np.int64, copy=False)
    out["object_names"] = out["object_names"].astype(str)
    return out


_MESH_SUFFIX = "_vh_clean_2.ply"


def _find_scans(root: Path) -> dict[str, Path]:
    """{scene id: scan folder} under ``root``: ``root/<scene>/<scene>_vh_clean_2.ply`` (ScanNet's
    layout), or ``root`` itself when it holds ``<scene>_vh_clean_2.ply`` (one scan copied alone,
    whatever the folder is called)."""
    own = sorted(root.glob(f"*{_MESH_SUFFIX}"))
    if own:
        return {q.name[: -len(_MESH_SUFFIX)]: root for q in own}
    return {q.name: q for q in sorted(root.iterdir()) if q.is_dir() and (q / f"{q.name}{_MESH_SUFFIX}").is_file()}


def preprocess_scannet(
    scans_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    scene_ids: list[str] | None = None,
    *,
    superpoints: str = "scannet",
    align: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    axis_alignments: str | os.PathLike | dict[str, np.ndarray] | None = None,
    label_map: str | os.PathLike | dict[str, str] | None = None,
) -> list[Path]:
    """Convert every scan folder under ``scans_root`` (or the listed ones) to ``out_dir/<scene>.npz``.

    ``scans_root`` is ScanNet's ``scans`` folder or one scan folder itself (``_find_scans``).
    ``axis_alignments`` / ``label_map``: a path (or the loaded dict) of a matrices JSON /
    ``scannetv2-labels.combined.tsv``. Existing outputs are kept unless ``overwrite``. Returns the
    written (or kept) paths.
    """
    root = Path(scans_root)
    if not root.is_dir():
        raise FileNotFoundError(f"ScanNet scans folder not found: {root}")
    found = _find_scans(root)
    if scene_ids is None:
        ids = list(found)
    else:
        ids = list(scene_ids)
        unknown = [s for s in ids if s not in found and not (root / s).is_dir()]
        if unknown:
            raise FileNotFoundError(f"scans {unknown[:3]} not found under {root} (found: {sorted(found)[:5]})")
    if not ids:
        raise ValueError(f"no ScanNet scan folders (<scene>/<scene>{_MESH_SUFFIX}) under {root}")
    mats = load_axis_alignments(axis_alignments) if isinstance(axis_alignments, (str, os.PathLike)) else axis_alignments
    labels = load_label_map(label_map) if isinstance(label_map, (str, os.PathLike)) else label_map
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    it: Any = ids
    if progress:
        from tqdm import tqdm

        it = tqdm(ids, desc="scannet", unit="scene")
    paths = []
    for sid in it:
        target = out / f"{sid}.npz"
        if overwrite or not target.is_file():
            scene = load_scannet_scene(found.get(sid, root / sid), sid, superpoints=superpoints, align=align,
                                       axis_alignments=mats, label_map=labels)
            save_scene_npz(target, scene)
        paths.append(target)
    return paths


# ---------------------------------------------------------------- votenet-format 50k-point scans
def load_objects_info(path: str | os.PathLike) -> list[dict[str, Any]]:
    """``objects_info_<scan>.npy``: a pickled object array of plain dicts (``id``, ``label``, box...).

    Unpickling runs code from the file: only read files you made or trust.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"objects_info file not found: {p}")
    arr = np.load(p, allow_pickle=True)
    objs = [o.item() if isinstance(o, np.ndarray) else o for o in np.asarray(arr, dtype=object).reshape(-1)]
    for i, o in enumerate(objs):
        if not isinstance(o, dict) or "id" not in o or "label" not in o:
            raise ValueError(f"{p}: entry {i} is not a dict with 'id' and 'label' ({type(o).__name__})")
    return objs


def load_votenet_scene(
    votenet_dir: str | os.PathLike,
    scan_id: str,
    objects_info: str | os.PathLike,
    label_map: dict[str, str] | None = None,
) -> ScanNetScene:
    """A votenet-format scan (``<scan>_vert.npy`` x y z r g b, axis-aligned; ``_ins_label.npy`` =
    v2 objectId + 1, 0 = none) as a ``ScanNetScene`` whose instance ids are the sentences' object ids.

    Object names come from ``objects_info`` (``load_objects_info``), classes from those names
    (``class_id_for``). Superpoints are left -1: these files carry no mesh segments, and
    ``ReferDataset`` / ``Segmenter`` compute the online ones.
    """
    d = Path(votenet_dir)
    vert_p, ins_p = d / f"{scan_id}_vert.npy", d / f"{scan_id}_ins_label.npy"
    missing = [q.name for q in (vert_p, ins_p) if not q.is_file()]
    if missing:
        raise FileNotFoundError(f"votenet scan {scan_id} in {d} lacks {missing}")
    vert = np.load(vert_p, allow_pickle=False)
    ins = np.load(ins_p, allow_pickle=False)
    if vert.ndim != 2 or vert.shape[1] < 6:
        raise ValueError(f"{vert_p}: expected (N, 6) x y z r g b, got {vert.shape}")
    if ins.shape != (vert.shape[0],) or not np.issubdtype(ins.dtype, np.integer):
        raise ValueError(f"{ins_p}: expected ({vert.shape[0]},) integer labels, got {ins.shape} {ins.dtype}")
    instance = ins.astype(np.int64) - 1  # uint32 on disk: widen before the shift so 0 becomes -1
    objs = load_objects_info(objects_info)
    names: dict[int, str] = {int(o["id"]): str(o["label"]) for o in objs}
    unknown = sorted(set(np.unique(instance[instance >= 0]).tolist()) - set(names))
    if unknown:
        raise ValueError(f"{scan_id}: instance ids {unknown[:5]} of {ins_p.name} are not in {objects_info}")
    n_names = max(names, default=-1) + 1
    object_names = np.asarray([names.get(i, "") for i in range(n_names)], dtype=str)
    cls = np.asarray([class_id_for(object_names[i], label_map) if object_names[i] else UNLABELLED
                      for i in range(n_names)], np.int64)
    semantic = np.where(instance >= 0, cls[np.maximum(instance, 0)] if n_names else UNLABELLED, UNLABELLED)
    rgb = np.clip(np.rint(vert[:, 3:6]), 0, 255).astype(np.uint8)
    return ScanNetScene(scan_id, np.ascontiguousarray(vert[:, :3], dtype=np.float32), rgb,
                        np.full(vert.shape[0], -1, np.int64), semantic.astype(np.int64), instance, object_names)
