"""Real ScanNet scans as training data: a real-data folder -> a training folder (``make_real_training``).

The model has only been trained on generated rooms. This writes the real scans of a folder laid out
as ``bqnet_model.eval_real.check_real_dir`` describes (votenet 50k-point subsets, objects_info,
ReferIt3D / ScanRefer sentences) in the training format of ``generate_dataset``:

* one ``<scan>.npz`` per scan: the 50k subset in the axis-aligned frame, instance = ScanNet v2
  objectId (-1 none), semantic through the project's class mapping (``load_votenet_scene``, as the
  real-scan benchmark reads it), superpoint -1 (``ReferDataset`` computes the online superpoints
  with the inference parameters, so training sees what a robot's run sees);
* ``train_scanrefer.json`` (RES, single target) and ``train_multi3drefer.json`` (GRES: every
  sentence, zero / one / several targets) with the real sentences whose target has points in the
  scan (single-target entries, eval_type unique / multiple by ``same_class_ids``, GRES
  st_wo_d / st_w_d likewise) and sentences of the synthetic grammar, checked on the scan's boxes
  (``real_scenes``);
* held-out scans (``leave_out``) get ``val_*.json`` with their real sentences only, and never appear
  in a training file; their ``.npz`` is written so evaluation can load them;
* ``repeat`` writes the training entries K times (new ann ids), to oversample real scans among
  many generated rooms; ``merge_real_into`` appends a written folder to a synthetic one.

Every entry carries ``source`` (sr3d / nr3d / scanrefer / generated) and ``relation`` (the grammar's
kind, 'real' for human sentences), which ``tools/eval_breakdown.py`` can split by.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bqnet_model.data.classes import CLASSES
from bqnet_model.data.referit import Annotation, read_annotation_list, same_class_ids
from bqnet_model.data.scannet import ScanNetScene, save_scene_npz
from bqnet_synth import expressions as ex
from bqnet_synth.real_scenes import generate_real_expressions, real_scene_geometry

__all__ = [
    "DEFAULT_LEAVE_OUT",
    "RealTrainingSummary",
    "real_entries",
    "generated_entries",
    "build_real_training",
    "merge_real_into",
    "format_summary",
    "inside_repository",
    "merge_for_cli",
]

DEFAULT_LEAVE_OUT: tuple[str, ...] = ("scene0002_00", "scene0002_01", "scene0005_00")
_N_CLASSES = len(CLASSES)
_NAMES = tuple(CLASSES) + ("other",)
_FILES = {"res": "{split}_scanrefer.json", "gres": "{split}_multi3drefer.json"}


@dataclass
class RealTrainingSummary:
    """What ``build_real_training`` wrote: scans per split, entries per split and source (before
    ``repeat``), targets per class, sentences skipped (target without points), files."""

    out_dir: str
    train_scans: list[str]
    val_scans: list[str]
    repeat: int
    sentences: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> source -> GRES entries
    res_sentences: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> source -> RES entries
    targets: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> target objects named
    skipped: int = 0
    files: list[str] = field(default_factory=list)


def _instance_class(scene: ScanNetScene, object_id: int) -> str:
    sem = scene.semantic[scene.instance == object_id]
    sem = sem[sem >= 0]
    return _NAMES[int(np.bincount(sem).argmax())] if sem.size else "other"


def real_entries(scene: ScanNetScene, anns: Sequence[Annotation]) -> tuple[list[tuple[dict, dict]], int]:
    """(RES entry, GRES entry) per real sentence of ``scene`` whose target has points there (ann ids
    left to the caller), and how many were skipped for a target without points."""
    out: list[tuple[dict, dict]] = []
    skipped = 0
    present = set(np.unique(scene.instance[scene.instance >= 0]).tolist())
    for a in anns:
        target = int(a.object_ids[0])
        if len(a.object_ids) != 1 or target not in present:
            skipped += 1
            continue
        same = same_class_ids(target, scene.instance, scene.semantic, scene.object_names, _N_CLASSES)
        unique = same.size == 1
        source = str(a.extra.get("source", "real"))
        common = {"scene_id": scene.scene_id, "object_name": a.object_name.replace(" ", "_"),
                  "description": a.description}
        res = dict(common, object_id=str(target), eval_type="unique" if unique else "multiple",
                   relation="real", source=source, real_ann_id=str(a.ann_id))
        gres = dict(common, object_ids=[target], eval_type="st_wo_d" if unique else "st_w_d",
                    relation="real", source=source, real_ann_id=str(a.ann_id))
        out.append((res, gres))
    return out, skipped


def generated_entries(scene: ScanNetScene, seed: int = 0,
                      config: ex.ExpressionConfig | None = None) -> list[tuple[dict | None, dict]]:
    """(RES entry or None, GRES entry) per grammar sentence of ``scene`` (RES only for single
    targets, as ``generate_dataset`` writes them); deterministic in (seed, scene id)."""
    geom = real_scene_geometry(scene.scene_id, scene.xyz, scene.rgb, scene.semantic, scene.instance,
                               scene.object_names)
    if geom is None:
        return []
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(scene.scene_id.encode()), 0xA1]))
    out: list[tuple[dict | None, dict]] = []
    for e in generate_real_expressions(geom, rng, config):
        gres = dict(e.to_multi3drefer(scene.scene_id, 0), source="generated")
        res = dict(e.to_scanrefer(scene.scene_id, 0), source="generated") if e.scanrefer_eval_type else None
        out.append((res, gres))
    return out


def _number(items: Sequence[tuple[dict | None, dict]], repeat: int) -> tuple[list[dict], list[dict]]:
    """The entries ``repeat`` times over with ann ids 0, 1, ... (one id per sentence, shared by its
    RES and GRES entry, as the synthetic writer does)."""
    res, gres = [], []
    k = 0
    for _ in range(repeat):
        for r, g in items:
            gres.append(dict(g, ann_id=k))
            if r is not None:
                res.append(dict(r, ann_id=str(k)))
            k += 1
    return res, gres


def _count(summary: RealTrainingSummary, split: str, scene: ScanNetScene,
           items: Sequence[tuple[dict | None, dict]]) -> None:
    by_src = summary.sentences.setdefault(split, {})
    res_src = summary.res_sentences.setdefault(split, {})
    tg = summary.targets.setdefault(split, {})
    for r, g in items:
        by_src[g["source"]] = by_src.get(g["source"], 0) + 1
        if r is not None:
            res_src[r["source"]] = res_src.get(r["source"], 0) + 1
        if not g["object_ids"]:
            tg["(no target)"] = tg.get("(no target)", 0) + 1
        for oid in g["object_ids"]:
            c = _instance_class(scene, int(oid))
            tg[c] = tg.get(c, 0) + 1


def build_real_training(real_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                        leave_out: Sequence[str] = DEFAULT_LEAVE_OUT, repeat: int = 1, seed: int = 0,
                        generate: bool = True, expr_config: ex.ExpressionConfig | None = None,
                        progress: bool = False) -> RealTrainingSummary:
    """Write the training folder of a real-data folder (see the module docstring).

    ``leave_out``: scans kept for evaluation (``val_*.json``, real sentences only); each must be a
    scan of the folder. ``repeat`` >= 1. ``generate=False`` writes the real sentences only.
    """
    from bqnet_model.eval_real import check_real_dir, load_real_scene, load_real_sentences

    if isinstance(repeat, bool) or not isinstance(repeat, (int, np.integer)) or repeat < 1:
        raise ValueError(f"repeat must be a positive integer, got {repeat!r}")
    layout = check_real_dir(real_dir)
    scans = layout.scans
    unknown = [s for s in leave_out if s not in scans]
    if unknown:
        raise ValueError(f"--leave-out scans {unknown} are not in {layout.root} (it has {scans})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_scan: dict[str, list[Annotation]] = collections.defaultdict(list)
    for a in load_real_sentences(layout):
        by_scan[a.scene_id].append(a)
    held = [s for s in scans if s in set(leave_out)]
    summary = RealTrainingSummary(str(out), [s for s in scans if s not in set(leave_out)], held, int(repeat))
    files = {split: ([], []) for split in ("train", "val")}
    it: Any = scans
    if progress:
        from tqdm import tqdm

        it = tqdm(scans, desc="real scans", unit="scan")
    for scan in it:
        scene = load_real_scene(layout, scan, points="votenet").scene
        save_scene_npz(out / f"{scan}.npz", scene)
        real, skipped = real_entries(scene, by_scan.get(scan, []))
        summary.skipped += skipped
        split = "val" if scan in held else "train"
        items: list[tuple[dict | None, dict]] = list(real)
        if split == "train" and generate:
            items += generated_entries(scene, seed, expr_config)
        _count(summary, split, scene, items)
        res, gres = _number(items, repeat if split == "train" else 1)
        files[split][0].extend(res)
        files[split][1].extend(gres)
    for split, (res, gres) in files.items():
        if split == "val" and not held:
            continue
        for fmt, entries in (("res", res), ("gres", gres)):
            p = out / _FILES[fmt].format(split=split)
            p.write_text(json.dumps(entries, indent=1))
            summary.files.append(str(p))
    return summary


def _read_entries(p: Path) -> list[dict[str, Any]]:
    """A folder's annotation entries, none when it has no such file."""
    return read_annotation_list(p) if p.is_file() else []


def merge_real_into(real_out: str | os.PathLike, synth_dir: str | os.PathLike) -> dict[str, int]:
    """Append a folder written by ``build_real_training`` to a synthetic data folder.

    The scans' ``.npz`` are copied into the synthetic folder's scene folder (``scenes/`` when it
    holds the scenes, as ``bqnet_model.train.data.scene_dir`` decides), ``train_*.json`` are extended
    with the real training entries, the synthetic ``val_*.json`` are left as they are and the real
    held-out sentences go to ``val_real_scanrefer.json`` / ``val_real_multi3drefer.json``.
    Refuses (ValueError, nothing written) when a real scan id is already a scene of the folder.
    Returns the number of entries per written file name.
    """
    from bqnet_model.train.data import scene_dir

    src, dst = Path(real_out), Path(synth_dir)
    if not dst.is_dir():
        raise FileNotFoundError(f"synthetic data folder not found: {dst} (write one with tools/make_synthetic.sh)")
    scenes = scene_dir(dst)
    npz = sorted(src.glob("*.npz"))
    if not npz:
        raise ValueError(f"{src} holds no scene file: write it with build_real_training first")
    taken = {p.stem for p in scenes.glob("*.npz")}
    for name in ("train_scanrefer.json", "train_multi3drefer.json"):
        taken |= {str(e.get("scene_id")) for e in _read_entries(dst / name)}
    clash = sorted({p.stem for p in npz} & taken)
    if clash:
        raise ValueError(f"scene ids {clash[:5]} are already in {dst}: merge into a folder without them "
                         "(a fresh synthetic folder, or one the real scans were not merged into before)")
    for p in npz:
        shutil.copyfile(p, scenes / p.name)
    counts: dict[str, int] = {}
    for fmt in ("res", "gres"):
        name = _FILES[fmt].format(split="train")
        merged = _read_entries(dst / name) + _read_entries(src / name)
        (dst / name).write_text(json.dumps(merged, indent=1))
        counts[name] = len(merged)
        val = _read_entries(src / _FILES[fmt].format(split="val"))
        if val:
            vname = _FILES[fmt].format(split="val_real")
            (dst / vname).write_text(json.dumps(val, indent=1))
            counts[vname] = len(val)
    return counts


def format_summary(s: RealTrainingSummary) -> str:
    """The summary as text: scans, sentences per split and source, targets per class."""
    lines = [f"wrote {len(s.train_scans) + len(s.val_scans)} scans to {s.out_dir}",
             f"  train scans ({len(s.train_scans)}): {' '.join(s.train_scans)}",
             f"  held-out scans ({len(s.val_scans)}): {' '.join(s.val_scans) or '-'}"]
    for split in ("train", "val"):
        if split not in s.sentences:
            continue
        gres, res = s.sentences[split], s.res_sentences.get(split, {})
        rep = s.repeat if split == "train" else 1
        lines.append(f"{split} sentences (GRES / RES entries, before repeat x{rep}):")
        for src in sorted(gres):
            lines.append(f"  {src:<10} {gres[src]:>6} / {res.get(src, 0):>6}")
        real = sum(v for k, v in gres.items() if k != "generated")
        lines.append(f"  {'real':<10} {real:>6}   generated {gres.get('generated', 0)}   "
                     f"total written {rep * sum(gres.values())} GRES / {rep * sum(res.values())} RES")
        tg = s.targets.get(split, {})
        lines.append(f"{split} targets per class: " + ", ".join(f"{c} {n}" for c, n in
                                                               sorted(tg.items(), key=lambda kv: -kv[1])))
    if s.skipped:
        lines.append(f"skipped {s.skipped} real sentences whose target has no points in the 50k subset")
    return "\n".join(lines)


def inside_repository(path: str | os.PathLike) -> bool:
    """Whether ``path`` lies inside this checkout: the real-data tools refuse to write there, since
    ScanNet's terms forbid redistributing what they write."""
    repo = Path(__file__).resolve().parents[1]
    try:
        Path(path).resolve().relative_to(repo)
    except ValueError:
        return False
    return True


def merge_for_cli(src: str | os.PathLike, dst: str | os.PathLike) -> int:
    """``merge_real_into(src, dst)`` for the tools' ``--merge-into``: prints the merged counts, or the
    error on stderr; returns the exit status (0, or 2 on a missing folder or a bad file)."""
    import sys

    try:
        counts = merge_real_into(src, dst)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"merged into {dst}: " + json.dumps(counts))
    return 0
