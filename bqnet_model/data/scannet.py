"""ScanNet v2 scans -> the per-scene ``.npz`` of docs/architecture.md.

A ScanNet scan folder holds ``<scene>_vh_clean_2.ply`` (mesh vertices with rgb, then faces),
``<scene>.aggregation.json`` (or ``<scene>_vh_clean.aggregation.json``; ``segGroups`` with
``objectId``, ``label`` and the mesh ``segments`` of each object) and
``<scene>_vh_clean_2.0.010000.segs.json`` (``segIndices``: the mesh oversegmentation, one id per
vertex). ScanRefer/Multi3DRefer ``object_id`` = ``objectId`` of the aggregation, so instance ids are
kept as they are. ScanNet's segments (made dense) are the superpoints, as in the original; with
``superpoints='ours'`` the online oversegmentation of the point cloud is used instead, which is what
a robot has at run time.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bqnet_model.data.synthetic import CLASS_ID, CLASSES
from bqnet_model.model.inputs import dense_labels
from bqnet_model.ply import read_ply

__all__ = [
    "OTHER_CLASS",
    "UNLABELLED",
    "ScanNetScene",
    "class_id_for",
    "scan_files",
    "load_scannet_scene",
    "save_scene_npz",
    "load_scene_npz",
    "preprocess_scannet",
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


def class_id_for(raw_label: str) -> int:
    """Map a raw ScanNet label to a CLASSES index, or OTHER_CLASS.

    Tried in order: the name itself, its singular (trailing 's' dropped), its last word ("office
    chair" -> chair, "kitchen cabinets" -> cabinet), that word's singular.
    """
    name = _normalise(raw_label)
    cands = [name, name[:-1] if name.endswith("s") else name]
    last = name.split(" ")[-1] if name else name
    cands += [last, last[:-1] if last.endswith("s") else last]
    for c in cands:
        if c in CLASS_ID:
            return CLASS_ID[c]
    return OTHER_CLASS


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


def _axis_alignment(scan_dir: Path, scene_id: str) -> np.ndarray | None:
    """ScanNet's ``axisAlignment`` 4x4 from ``<scene>.txt``, or None when the file or line is absent."""
    meta = scan_dir / f"{scene_id}.txt"
    if not meta.is_file():
        return None
    for line in meta.read_text().splitlines():
        if line.strip().startswith("axisAlignment"):
            vals = [float(v) for v in line.split("=", 1)[1].split()]
            if len(vals) != 16:
                raise ValueError(f"{meta}: axisAlignment has {len(vals)} values, expected 16")
            return np.asarray(vals, np.float64).reshape(4, 4)
    return None


def load_scannet_scene(
    scan_dir: str | os.PathLike,
    scene_id: str | None = None,
    *,
    superpoints: str = "scannet",
    align: bool = False,
    superpoint_params: dict[str, Any] | None = None,
) -> ScanNetScene:
    """Read one ScanNet scan folder into arrays.

    ``superpoints``: 'scannet' (the mesh segments, dense) or 'ours'
    (``bqnet_model.superpoints.oversegment`` on the vertices). ``align`` applies the scan's
    ``axisAlignment`` (ScanRefer's boxes are in the aligned frame; the original's masks are not, and
    masks do not care). Segments listed in several segGroups go to the last one (ScanNet has a few).
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
        seg_cls[pos[ok]] = class_id_for(label)
    instance = seg_obj[seg_dense]
    semantic = seg_cls[seg_dense]
    object_names = np.full(max(names, default=-1) + 1, "", dtype=object)
    for oid, label in names.items():
        object_names[oid] = label
    object_names = object_names.astype(str) if len(object_names) else np.zeros(0, dtype="<U1")

    xyz = cloud.xyz.astype(np.float32)
    if align:
        m = _axis_alignment(d, sid)
        if m is None:
            raise FileNotFoundError(f"align=True but {d / (sid + '.txt')} has no axisAlignment")
        xyz = (xyz.astype(np.float64) @ m[:3, :3].T + m[:3, 3]).astype(np.float32)
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


def preprocess_scannet(
    scans_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    scene_ids: list[str] | None = None,
    *,
    superpoints: str = "scannet",
    align: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Convert every scan folder under ``scans_root`` (or the listed ones) to ``out_dir/<scene>.npz``.

    Existing outputs are kept unless ``overwrite``. Returns the written (or kept) paths.
    """
    root = Path(scans_root)
    if not root.is_dir():
        raise FileNotFoundError(f"ScanNet scans folder not found: {root}")
    ids = scene_ids if scene_ids is not None else sorted(p.name for p in root.iterdir()
                                                       if p.is_dir() and (p / f"{p.name}_vh_clean_2.ply").is_file())
    if not ids:
        raise ValueError(f"no ScanNet scan folders (<scene>/<scene>_vh_clean_2.ply) under {root}")
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
            save_scene_npz(target, load_scannet_scene(root / sid, sid, superpoints=superpoints, align=align))
        paths.append(target)
    return paths
