"""Real-scan RES benchmark: any checkpoint on real ScanNet scans with real sentences.

    python -m bqnet_model.eval_real --checkpoint models/bqnet_tiny.pth --real-dir REAL_DIR \
        [--scans scene0000_00 scene0002_00] [--limit 50] [--json out.json] [--device cuda] \
        [--superpoints online|mesh] [--points auto|votenet] [--no-asa]

Synthetic rooms say little about a robot's maps, so this scores the product's own answer
(``Segmenter.prepare`` + ``query(task='res')``, as the CLI and the node run it) on every scan of a
real-data folder with every sentence that names one of its objects. The folder (``check_real_dir``):

* ``scannet_votenet50k/<scan>_vert.npy`` / ``_ins_label.npy``: 50k mesh vertices per scan (axis-aligned);
* ``scannet_meta/objects_info/objects_info_<scan>.npy`` (object labels), ``axis_alignment_matrices.json``,
  ``scannetv2-labels.combined.tsv`` (optional: NYU40 classes for raw labels the name rules miss);
* any subfolder holding a full ScanNet scan (``<scan>_vh_clean_2.ply`` + ``segs.json`` +
  ``aggregation.json``): that scan is evaluated on all its mesh vertices, moved to the axis-aligned
  frame, instead of its 50k subset (``--points votenet`` keeps the subset everywhere);
* ``sentences/``: ``*.csv`` ReferIt3D files (Sr3D / Nr3D, told apart by their header) and ScanRefer
  ``*.json`` files.

Scores (``bqnet_model.metrics``): point IoU per sentence, Acc@0.25, Acc@0.5 (IoU > k), mIoU, split
by source (sr3d / nr3d / scanrefer) and by ScanRefer's unique / multiple (the target is the only
object of its class in the scan; ``same_class_ids``). Next to every figure: the chance of
answering with a uniformly random object of the target's class, a picked object being its
ground-truth points (``chance_res``; 1/k for k objects of the class). A superpoint table follows:
the achievable segmentation accuracy (ASA) of our online superpoints, ScanNet's mesh segments
(full scans only) and a 0.25 m grid on the same points.

Oracle masks (``bqnet_model.mask_oracle``; ``--no-oracle`` leaves them out): per sentence the best
point IoU any decoder query's mask reaches with the target (a perfect selection assumed), as
Oracle Acc@k / mIoU columns of the summary and a table split by target size (``--size-edges``),
so that mask quality can be told from selection quality.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from bqnet_model.data.referit import Annotation, load_scanrefer, same_class_ids
from bqnet_model.data.scannet import (
    ScanNetScene,
    load_axis_alignments,
    load_label_map,
    load_scannet_scene,
    load_votenet_scene,
)
from bqnet_model.data.classes import CLASSES
from bqnet_model.mask_oracle import (SIZE_EDGES, check_size_edges, format_oracle_table, oracle_fields, oracle_scores,
                                     summarize_oracle)
from bqnet_model.metrics import ACC_THRESHOLDS, RES_SPLITS, chance_res, res_record
from bqnet_model.superpoint_params import SuperpointParams

__all__ = [
    "GRID_CELL",
    "RealLayout",
    "RealScene",
    "check_real_dir",
    "load_real_scene",
    "load_real_sentences",
    "sentence_record",
    "summarize_real",
    "format_real_summary",
    "superpoint_asa",
    "format_asa_table",
    "evaluate_real",
    "main",
]

GRID_CELL = 0.25  # metres: the plain-grid baseline of the superpoint table
_MESH_SUFFIX = "_vh_clean_2.ply"
_N_CLASSES = len(CLASSES)


@dataclass
class RealLayout:
    """Where the parts of a real-data folder are (``check_real_dir``)."""

    root: Path
    votenet_dir: Path
    objects_info_dir: Path
    sentence_files: list[Path]
    fullres: dict[str, Path]  # scan id -> folder with its full ScanNet mesh
    axis_alignments: dict[str, np.ndarray] = field(default_factory=dict)
    label_map: dict[str, str] | None = None

    @property
    def scans(self) -> list[str]:
        """Scans that have points (50k subset or full mesh) and object labels."""
        vote = {p.name[: -len("_vert.npy")] for p in self.votenet_dir.glob("*_vert.npy")}
        labelled = {s for s in vote if (self.objects_info_dir / f"objects_info_{s}.npy").is_file()}
        return sorted(labelled | set(self.fullres))

    def select(self, scans: Sequence[str] | None) -> list[str]:
        """``scans`` (None: every scan of the folder), checked: ValueError naming any the folder lacks."""
        known = self.scans
        todo = list(known if scans is None else scans)
        unknown = [s for s in todo if s not in known]
        if unknown:
            raise ValueError(f"scans {unknown} are not in {self.root} (it has {known})")
        return todo


@dataclass
class RealScene:
    """One scan as evaluated: its arrays and which points they are."""

    scene: ScanNetScene
    points: str  # 'mesh' (all mesh vertices) or 'votenet50k'
    mesh_segments: np.ndarray | None  # (N,) ScanNet's mesh segments, dense; None for the 50k subset


def check_real_dir(real_dir: str | os.PathLike) -> RealLayout:
    """The layout of a real-data folder; FileNotFoundError / ValueError saying what is missing."""
    root = Path(real_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"real-data folder not found: {root} (expected scannet_votenet50k/, "
                                "scannet_meta/ and sentences/ inside)")
    vote, meta, sent = root / "scannet_votenet50k", root / "scannet_meta", root / "sentences"
    info = meta / "objects_info"
    missing = [str(p.relative_to(root)) for p in (vote, info, sent) if not p.is_dir()]
    if missing:
        raise FileNotFoundError(f"{root} is not a real-data folder: it lacks {missing}")
    files = sorted(sent.glob("*.csv")) + sorted(sent.glob("*.json"))
    if not files:
        raise ValueError(f"{sent} holds no sentence file (*.csv ReferIt3D, *.json ScanRefer)")
    fullres: dict[str, Path] = {}
    for d in sorted(q for q in root.iterdir() if q.is_dir()):
        for mesh in d.glob(f"*{_MESH_SUFFIX}"):
            fullres[mesh.name[: -len(_MESH_SUFFIX)]] = d
    mats_p = meta / "axis_alignment_matrices.json"
    mats = load_axis_alignments(mats_p) if mats_p.is_file() else {}
    tsv = meta / "scannetv2-labels.combined.tsv"
    labels = load_label_map(tsv) if tsv.is_file() else None
    layout = RealLayout(root, vote, info, files, fullres, mats, labels)
    if not layout.scans:
        raise ValueError(f"{root}: no scan has both points ({vote.name}/<scan>_vert.npy or a full mesh) and "
                         f"object labels ({info.relative_to(root)}/objects_info_<scan>.npy)")
    return layout


def load_real_scene(layout: RealLayout, scan_id: str, points: str = "auto") -> RealScene:
    """A scan in the axis-aligned frame: its full mesh when the folder has it (``points='auto'``),
    else (or with ``points='votenet'``) its 50k subset."""
    if points not in ("auto", "votenet"):
        raise ValueError(f"points must be 'auto' or 'votenet', got {points!r}")
    if points == "auto" and scan_id in layout.fullres:
        sc = load_scannet_scene(layout.fullres[scan_id], scan_id, superpoints="scannet", align=True,
                                axis_alignments=layout.axis_alignments, label_map=layout.label_map)
        return RealScene(sc, "mesh", sc.superpoint)
    info = layout.objects_info_dir / f"objects_info_{scan_id}.npy"
    return RealScene(load_votenet_scene(layout.votenet_dir, scan_id, info, layout.label_map), "votenet50k", None)


def load_real_sentences(layout: RealLayout) -> list[Annotation]:
    """Every sentence file of the folder; ``extra['source']`` is 'sr3d', 'nr3d' or 'scanrefer'."""
    from bqnet_model.data.referit3d import load_referit3d

    anns: list[Annotation] = []
    for p in layout.sentence_files:
        if p.suffix == ".csv":
            anns += load_referit3d(p)
        else:
            for a in load_scanrefer(p):
                a.extra["source"] = "scanrefer"
                anns.append(a)
    return anns


def sentence_record(scene: ScanNetScene, ann: Annotation, pred_indices: np.ndarray, *,
                    points: str = "", text: str | None = None) -> dict[str, Any]:
    """Score of one answer (point indices into ``scene.xyz``) with its chance baseline and split."""
    inst = scene.instance
    target = int(ann.object_ids[0])
    same = same_class_ids(target, inst, scene.semantic, scene.object_names, _N_CLASSES)
    eval_type = "unique" if same.size == 1 else "multiple"
    pred = np.zeros(inst.shape[0], dtype=bool)
    pred[np.asarray(pred_indices, dtype=np.int64)] = True
    rec = res_record(pred, inst == target, scene_id=ann.scene_id, ann_id=ann.ann_id, eval_type=eval_type,
                     object_ids=[target]).to_dict()
    rec.update(source=str(ann.extra.get("source", "-")), object_name=ann.object_name,
               text=ann.description if text is None else text, points=points, n_same_class=int(same.size),
               chance=chance_res(inst, target, same.tolist()))
    return rec


def _group_stats(recs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    ious = np.asarray([r["iou"] for r in recs], dtype=np.float64)
    model: dict[str, float] = {"mIoU": float(ious.mean())}
    chance: dict[str, float] = {"mIoU": float(np.mean([r["chance"]["mIoU"] for r in recs]))}
    for k in ACC_THRESHOLDS:
        model[f"Acc@{k}"] = float((ious > k).mean())
        chance[f"Acc@{k}"] = float(np.mean([r["chance"][f"Acc@{k}"] for r in recs]))
    out: dict[str, Any] = {"count": len(recs), "model": model, "chance": chance}
    if all("oracle_iou" in r for r in recs):  # the best query's mask (mask_oracle), same rules
        out["oracle"] = oracle_scores(recs)
    return out


def summarize_real(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """{group: {count, model: {Acc@k, mIoU}, chance: {...}[, oracle: {...}]}} for 'overall', each
    split, each source and each source/split present (groups with no sentence are left out);
    ``oracle`` when the records carry ``mask_oracle.oracle_fields``."""
    if not records:
        raise ValueError("no records to summarize")
    groups: dict[str, list[dict[str, Any]]] = collections.OrderedDict()
    groups["overall"] = list(records)
    for split in RES_SPLITS:
        groups[split] = [r for r in records if r["eval_type"] == split]
    for src in sorted({r["source"] for r in records}):
        mine = [r for r in records if r["source"] == src]
        groups[src] = mine
        for split in RES_SPLITS:
            groups[f"{src}/{split}"] = [r for r in mine if r["eval_type"] == split]
    return {name: _group_stats(recs) for name, recs in groups.items() if recs}


def format_real_summary(summary: dict[str, Any]) -> str:
    """The summary as a table of percentages, chance in brackets after each figure, then the
    oracle figures (best query's mask) when the summary has them."""
    cols = [f"Acc@{k}" for k in ACC_THRESHOLDS] + ["mIoU"]
    oracle = all("oracle" in s for s in summary.values())
    head = f"{'group':<20} {'n':>5}  " + "  ".join(f"{c + ' (chance)':>20}" for c in cols)
    if oracle:
        head += "  |" + "".join(f"{'oracle ' + c:>16}" for c in cols)
    lines = [head, "-" * len(head)]
    for name, s in summary.items():
        cells = "  ".join(f"{100 * s['model'][c]:9.1f} ({100 * s['chance'][c]:5.1f})   " for c in cols)
        if oracle:
            cells += "  |" + "".join(f"{100 * s['oracle'][c]:16.1f}" for c in cols)
        lines.append(f"{name:<20} {s['count']:>5}  {cells}")
    return "\n".join(lines)


def _grid_labels(xyz: np.ndarray, cell: float) -> np.ndarray:
    keys = np.floor((xyz - xyz.min(axis=0)) / cell).astype(np.int64)
    return np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1)


def superpoint_asa(rs: RealScene, superpoint_params: SuperpointParams | None = None) -> list[dict[str, Any]]:
    """ASA rows for one scan: ours (``oversegment_detailed`` with the model's ``inference.superpoints``,
    None = the defaults), ScanNet's mesh segments when the scan has them, a ``GRID_CELL`` grid. Over
    labelled points only."""
    from bqnet_model.superpoints import achievable_segmentation_accuracy, oversegment_detailed

    sc = rs.scene
    t0 = time.perf_counter()
    ours = oversegment_detailed(sc.xyz, sc.rgb, params=superpoint_params).labels
    ms = {"ours": 1000.0 * (time.perf_counter() - t0)}  # wall time of the online superpoints on this machine
    methods: list[tuple[str, np.ndarray]] = [("ours", ours)]
    if rs.mesh_segments is not None:
        methods.append(("scannet mesh", rs.mesh_segments))
    methods.append((f"grid {GRID_CELL:g} m", _grid_labels(sc.xyz, GRID_CELL)))
    rows = []
    for name, labels in methods:
        labels = np.asarray(labels, dtype=np.int64)
        sizes = np.unique(labels, return_counts=True)[1]
        rows.append(dict(scan=sc.scene_id, points=rs.points, n_points=int(labels.size),
                         n_labelled=int((sc.instance >= 0).sum()), method=name, segments=int(sizes.size),
                         under_5=int((sizes < 5).sum()), ms=ms.get(name),
                         asa=float(achievable_segmentation_accuracy(labels, sc.instance))))
    return rows


def format_asa_table(rows: Iterable[dict[str, Any]]) -> str:
    """One line per scan and method, then per method over every scan (ASA weighted by labelled points)."""
    rows = list(rows)
    head = (f"{'scan':<14} {'points':<16} {'method':<14} {'segments':>9} {'pts/seg':>8} {'<5 pts':>7} {'ASA':>6} "
            f"{'ms':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        pts = f"{r['points']} {r['n_points']}"
        ms = "" if r.get("ms") is None else f"{r['ms']:.0f}"
        lines.append(f"{r['scan']:<14} {pts:<16} {r['method']:<14} {r['segments']:>9} "
                     f"{r['n_points'] / max(r['segments'], 1):>8.1f} {r['under_5']:>7} {r['asa']:6.3f} {ms:>7}")
    if len({r["scan"] for r in rows}) > 1:
        lines.append("-" * len(head))
        for method in dict.fromkeys(r["method"] for r in rows):
            mine = [r for r in rows if r["method"] == method]
            w = np.asarray([r["n_labelled"] for r in mine], dtype=np.float64)
            asa = float((w * np.asarray([r["asa"] for r in mine])).sum() / w.sum())
            scans = f"{len(mine)} scan" + ("s" if len(mine) > 1 else "")
            segs, pts = sum(r["segments"] for r in mine), sum(r["n_points"] for r in mine)
            lines.append(f"{'all':<14} {scans:<16} {method:<14} {segs:>9} {pts / max(segs, 1):>8.1f} "
                         f"{sum(r['under_5'] for r in mine):>7} {asa:6.3f} {'':>7}  min {min(r['asa'] for r in mine):.3f}")
    return "\n".join(lines)


def evaluate_real(segmenter: Any, layout: RealLayout, scans: Sequence[str] | None = None, *,
                  limit: int | None = None, points: str = "auto", superpoints: str = "online",
                  asa: bool = True, progress: bool = True, chunk: int = 16, oracle: bool = True,
                  size_edges: Sequence[int] = SIZE_EDGES) -> dict[str, Any]:
    """Run ``segmenter`` on the folder's sentences; returns records, summary, ASA rows, skips and,
    with ``oracle``, the oracle mask summary (``mask_oracle.summarize_oracle``, target size
    buckets at ``size_edges`` points).

    ``superpoints='mesh'`` hands ScanNet's mesh segments to ``prepare`` where a scan has them (the
    paper's setting); 'online' lets the product compute its own, as on a robot. ``limit`` keeps the
    first sentences in scan order. ``oracle`` asks ``query`` for every query's mask
    (``keep_query_masks``) and adds ``mask_oracle.oracle_fields`` to each record.
    """
    if superpoints not in ("online", "mesh"):
        raise ValueError(f"superpoints must be 'online' or 'mesh', got {superpoints!r}")
    todo = layout.select(scans)
    by_scan: dict[str, list[Annotation]] = collections.defaultdict(list)
    for a in load_real_sentences(layout):
        if a.scene_id in todo:
            by_scan[a.scene_id].append(a)
    order = [(s, a) for s in todo for a in by_scan.get(s, [])]
    if limit is not None:
        order = order[:limit]
    if not order:
        raise ValueError(f"no sentence names an object of the scans {todo}")
    from tqdm import tqdm

    bar = tqdm(total=len(order), desc="sentences", unit="sentence", disable=not progress)
    records: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    asa_rows: list[dict[str, Any]] = []
    scan_points: dict[str, str] = {}
    sp_params = getattr(getattr(segmenter, "inference", None), "superpoints", None)
    for scan in dict.fromkeys(s for s, _ in order):
        rs = load_real_scene(layout, scan, points)
        sc = rs.scene
        scan_points[scan] = f"{rs.points} ({sc.xyz.shape[0]} points)"
        anns = []
        for s, a in order:
            if s != scan:
                continue
            if not (sc.instance == a.object_ids[0]).any():
                skipped.append(dict(scene_id=scan, ann_id=a.ann_id, source=a.extra.get("source"),
                                    reason=f"target {a.object_ids[0]} has no points in the {rs.points} points"))
                bar.update(1)
            else:
                anns.append(a)
        if anns:
            given = rs.mesh_segments if (superpoints == "mesh" and rs.mesh_segments is not None) else None
            cache = segmenter.prepare(sc.xyz, sc.rgb, given)
            for i in range(0, len(anns), chunk):
                part = anns[i:i + chunk]
                kw = {"keep_query_masks": True} if oracle else {}
                for a, res in zip(part, segmenter.query(cache, [a.description for a in part], task="res", **kw)):
                    rec = sentence_record(sc, a, res.point_indices, points=rs.points)
                    if oracle:
                        rec.update(oracle_fields(res, cache, sc.instance == a.object_ids[0]))
                    records.append(rec)
                bar.update(len(part))
        if asa:
            asa_rows += superpoint_asa(rs, sp_params)
    bar.close()
    if not records:
        raise ValueError(f"every sentence was skipped: {skipped[:3]}")
    out = dict(records=records, summary=summarize_real(records), asa=asa_rows, skipped=skipped,
               scan_points=scan_points, superpoints=superpoints)
    if oracle:
        out["oracle"] = summarize_oracle(records, size_edges)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bqnet_model.eval_real",
                                 description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="model file (.pth) to evaluate (required unless --asa-only)")
    ap.add_argument("--real-dir", required=True, help="real-data folder (scannet_votenet50k/, scannet_meta/, sentences/)")
    ap.add_argument("--scans", nargs="*", default=None, help="only these scan ids (default: every scan of the folder)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N sentences (in scan order)")
    ap.add_argument("--json", type=Path, default=None, help="write records, summary and the ASA table here")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--points", choices=("auto", "votenet"), default="auto",
                    help="auto: all mesh vertices where the folder has the full scan, else the 50k subset")
    ap.add_argument("--superpoints", choices=("online", "mesh"), default="online",
                    help="online: the product's own (as on a robot); mesh: ScanNet's segments where present")
    ap.add_argument("--no-asa", action="store_true", help="skip the superpoint ASA table")
    ap.add_argument("--asa-only", action="store_true",
                    help="only the superpoint ASA table (default superpoint parameters, or the checkpoint's when given)")
    ap.add_argument("--no-oracle", action="store_true",
                    help="leave out the oracle mask figures (best query's mask per sentence, bqnet_model.mask_oracle)")
    ap.add_argument("--size-edges", type=int, nargs="+", default=list(SIZE_EDGES),
                    help="target size bucket edges in points for the oracle table (default: %(default)s)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        ap.error("--limit must be a positive number of sentences")
    try:
        check_size_edges(args.size_edges)
    except ValueError as exc:
        ap.error(f"--size-edges: {exc}")
    try:
        layout = check_real_dir(args.real_dir)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.asa_only and args.no_asa:
        ap.error("--asa-only and --no-asa contradict each other")
    if args.checkpoint is None and not args.asa_only:
        ap.error("--checkpoint is required (or --asa-only for the superpoint table alone)")
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        print(f"error: checkpoint not found: {args.checkpoint}", file=sys.stderr)
        return 2
    if args.asa_only:
        return _asa_only(layout, args)
    from bqnet_model.pipeline import Segmenter

    seg = Segmenter.from_checkpoint(args.checkpoint, device=args.device)
    try:
        out = evaluate_real(seg, layout, args.scans, limit=args.limit, points=args.points,
                            superpoints=args.superpoints, asa=not args.no_asa, progress=not args.quiet,
                            oracle=not args.no_oracle, size_edges=args.size_edges)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\n{args.checkpoint} on {len(out['scan_points'])} real scans, {len(out['records'])} sentences "
          f"(superpoints: {args.superpoints}); chance = a random object of the target's class, in brackets")
    for scan, pts in out["scan_points"].items():
        print(f"  {scan}: {pts}")
    print(format_real_summary(out["summary"]))
    if "oracle" in out:
        print("\noracle masks: the best query's mask per sentence (o = oracle; o-rec / o-prec: that mask's recall /"
              " precision; IoU>0: any mask touches the target; masks: non-empty query masks per sentence)")
        print(format_oracle_table(out["oracle"]))
    if out["skipped"]:
        print(f"skipped {len(out['skipped'])} sentences whose target has no points (see --json)")
    if out["asa"]:
        print("\nsuperpoints: achievable segmentation accuracy over labelled points")
        print(format_asa_table(out["asa"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dict(checkpoint=str(args.checkpoint), real_dir=str(layout.root), **out), indent=1))
        print(f"records written to {args.json}")
    return 0


def _asa_only(layout: RealLayout, args: argparse.Namespace) -> int:
    """``--asa-only``: the superpoint table of every (or each ``--scans``) scan, no model run."""
    params = None
    if args.checkpoint is not None:
        from bqnet_model.checkpoint import load_checkpoint

        params = load_checkpoint(args.checkpoint, "cpu")[1].inference.superpoints
    try:
        todo = layout.select(args.scans)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = [r for scan in todo for r in superpoint_asa(load_real_scene(layout, scan, args.points), params)]
    print("superpoints: achievable segmentation accuracy over labelled points (ms: wall time of ours)")
    print(format_asa_table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dict(real_dir=str(layout.root), asa=rows), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
