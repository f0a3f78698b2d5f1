#!/usr/bin/env python3
"""Measure how often a checkpoint refuses sentences naming absent objects, and what it costs.

    PYTHONPATH=. python tools/calibrate_absent.py --checkpoint models/bqnet_tiny.pth \
        [--synth-dir DIR] [--rooms 30] [--real-dir ../shared/real] [--scans ...] [--json out.json]

Answers every sentence once with the refusal checks off (``inference.absent_class_points`` 0,
``unknown_object`` answer, ``absent_score`` 0) and records what each check looks at: the best
score, the named target (``bqnet_model.text.named_objects``), the points the semantic head gives
that class in the map, the answer's IoU with the ground truth. Every setting of the table is then
the library's rule (``bqnet_model.pipeline.absence``) applied to those records.

Sentences, all built deterministically from the held-out ones:

* ``present``: the held-out sentence as written (synthetic ScanRefer-style RES sentences and
  Multi3DRefer-style GRES sentences with at least one target; real Sr3D / Nr3D / ScanRefer);
* ``absent-class``: the target noun swapped for a vocabulary class absent from the room (the
  ground truth's classes; floor and wall never), e.g. "the chair next to the desk" -> "the bathtub
  next to the desk";
* ``absent-oov``: the target noun swapped for an object no vocabulary holds ("the giraffe next to
  the desk"), and two fixed sentences per map ("the helicopter", "the giraffe next to the door");
* ``absent-zero`` (GRES, synthetic): Multi3DRefer's own zero-target sentences.

Per setting: ``refused`` = share of absent sentences answered found=false; ``found`` = share of
present sentences still found; ``Acc@0.5`` = share of present sentences found with IoU > 0.5
(RES: the answer's point IoU with the target; GRES: the union's IoU with the targets' union).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import sys
import zlib
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from bqnet_model.data.classes import CLASS_ID, CLASSES
from bqnet_model.model.config import InferenceConfig
from bqnet_model.pipeline.absence import answer_share, class_points, parse_named
from bqnet_model.text.named_objects import CLASS_NAMES, OTHER_CLASS

OOV_NOUNS = ("giraffe", "helicopter", "elephant", "submarine", "tractor", "canoe", "dinosaur", "rocket")
FIXED_OOV = ("the helicopter", "the giraffe next to the door")
NEVER_SWAPPED = {CLASS_ID["floor"], CLASS_ID["wall"]}
SCORES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
CLASS_POINTS = (0, 1, 50, 200, 1000)
_INF = InferenceConfig()
_DEFAULT = (_INF.absent_score, _INF.absent_class_points, _INF.unknown_object)  # the library's defaults


def _pick(key: str, options: Sequence[Any]) -> Any:
    """A deterministic choice among ``options`` for one sentence."""
    return options[zlib.crc32(key.encode()) % len(options)]


def _swap(text: str, key: str, absent: Sequence[int]) -> list[tuple[str, str]]:
    """(kind, sentence) variants of ``text`` with its parsed target noun swapped (module docstring)."""
    target = parse_named(text).target
    if target is None:
        return []
    a, b = target.span
    out = [("absent-oov", text[:a] + _pick(key, OOV_NOUNS) + text[b:])]
    if absent:
        out.append(("absent-class", text[:a] + CLASS_NAMES[CLASSES[_pick(key, absent)]][0] + text[b:]))
    return out


def _iou(pred: np.ndarray, gt: np.ndarray) -> float:
    union = int((pred | gt).sum())
    return 1.0 if union == 0 else float((pred & gt).sum()) / union


def _records(seg: Any, cache: Any, items: Iterable[tuple[str, str, str, np.ndarray | None]], n: int,
             where: str) -> list[dict[str, Any]]:
    """Answer (task, kind, text, gt mask or None) items over one prepared map."""
    items = list(items)
    counts = class_points(cache)
    out = []
    for task in ("res", "gres"):
        mine = [it for it in items if it[0] == task]
        if not mine:
            continue
        for (task_, kind, text, gt), r in zip(mine, seg.query(cache, [it[2] for it in mine], task=task)):
            pred = np.zeros(n, dtype=bool)
            pred[r.point_indices] = True
            target = parse_named(text).target
            cid = -2 if target is None else target.class_id
            out.append(dict(
                where=where, task=task, kind=kind, text=text, found=bool(r.found),
                score=max((float(o.score) for o in r.objects), default=0.0),
                iou=None if gt is None else _iou(pred, gt), target_class=cid,
                class_points=(None if counts is None or not 0 <= cid < OTHER_CLASS else float(counts[cid])),
                share=(answer_share(cache, r.point_indices, cid) if 0 <= cid < OTHER_CLASS else None),
            ))
    return out


def synthetic_records(seg: Any, synth_dir: Path, rooms: int) -> list[dict[str, Any]]:
    """Records of the held-out synthetic rooms (the first ``rooms`` of the folder)."""
    files = sorted(synth_dir.glob("*.npz"))[:rooms]
    res = json.loads((synth_dir / "val_scanrefer.json").read_text())
    gres = json.loads((synth_dir / "val_multi3drefer.json").read_text())
    out: list[dict[str, Any]] = []
    for k, f in enumerate(files):
        room = f.stem
        z = np.load(f)
        inst, sem = z["instance"], z["semantic"]
        absent = [c for c in range(len(CLASSES)) if c not in NEVER_SWAPPED and not (sem == c).any()]
        items: list[tuple[str, str, str, np.ndarray | None]] = []
        for a in (a for a in res if a["scene_id"] == room):
            gt = inst == int(a["object_id"])
            items.append(("res", "present", a["description"], gt))
            items += [("res", kind, t, None) for kind, t in _swap(a["description"], f"{room}/{a['ann_id']}", absent)]
        for a in (a for a in gres if a["scene_id"] == room):
            ids = [int(i) for i in a["object_ids"]]
            gt = np.isin(inst, ids)
            if not ids:
                items.append(("gres", "absent-zero", a["description"], gt))
                continue
            items.append(("gres", "present", a["description"], gt))
            items += [("gres", kind, t, None)
                      for kind, t in _swap(a["description"], f"{room}/g{a['ann_id']}", absent)]
        items += [(task, "absent-oov", t, None) for t in FIXED_OOV for task in ("res", "gres")]
        cache = seg.prepare(z["xyz"], z["rgb"])
        out += _records(seg, cache, items, len(inst), "synthetic")
        print(f"  synthetic {k + 1}/{len(files)} {room}: {len(items)} sentences", file=sys.stderr, flush=True)
    return out


def real_records(seg: Any, real_dir: Path, scans: Sequence[str] | None) -> list[dict[str, Any]]:
    """Records of the real scans (points as ``eval_real`` takes them, online superpoints)."""
    from bqnet_model.eval_real import check_real_dir, load_real_scene, load_real_sentences

    layout = check_real_dir(real_dir)
    by_scan: dict[str, list[Any]] = collections.defaultdict(list)
    for a in load_real_sentences(layout):
        by_scan[a.scene_id].append(a)
    todo = [s for s in (scans or layout.scans) if by_scan.get(s)]
    out: list[dict[str, Any]] = []
    for k, scan in enumerate(todo):
        sc = load_real_scene(layout, scan).scene
        present_cls = set(np.unique(sc.semantic[sc.semantic >= 0]).tolist())
        absent = [c for c in range(len(CLASSES)) if c not in NEVER_SWAPPED and c not in present_cls]
        items: list[tuple[str, str, str, np.ndarray | None]] = []
        for a in by_scan[scan]:
            gt = sc.instance == int(a.object_ids[0])
            if not gt.any():
                continue
            key = f"{scan}/{a.extra.get('source')}/{a.ann_id}"
            for task in ("res", "gres"):
                items.append((task, "present", a.description, gt))
                items += [(task, kind, t, None) for kind, t in _swap(a.description, key, absent)]
        items += [(task, "absent-oov", t, None) for t in FIXED_OOV for task in ("res", "gres")]
        cache = seg.prepare(sc.xyz, sc.rgb)
        out += _records(seg, cache, items, len(sc.xyz), "real")
        print(f"  real {k + 1}/{len(todo)} {scan}: {len(items)} sentences", file=sys.stderr, flush=True)
    return out


def refused(r: dict[str, Any], score: float, points: int, unknown: str) -> bool:
    """Would the library refuse this record under the setting? (``absence.apply_checks``'s order.)"""
    if not r["found"]:
        return True
    cid = r["target_class"]
    if cid == -1 and unknown == "refuse":
        return True
    if points > 0 and r["class_points"] is not None and r["class_points"] < points:
        return True
    return score > 0 and r["score"] < score


def table(records: Sequence[dict[str, Any]], settings: Iterable[tuple[float, int, str]]) -> list[dict[str, Any]]:
    """One row per (where, task, setting): refused share per absent kind, found and Acc@0.5 of present."""
    rows = []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = collections.defaultdict(list)
    for r in records:
        groups[(r["where"], r["task"])].append(r)
    for (where, task), recs in sorted(groups.items()):
        present = [r for r in recs if r["kind"] == "present"]
        kinds = sorted({r["kind"] for r in recs} - {"present"})
        for score, points, unknown in settings:
            row: dict[str, Any] = dict(where=where, task=task, score=score, points=points, unknown=unknown)
            for kind in kinds:
                mine = [r for r in recs if r["kind"] == kind]
                row[f"refused {kind}"] = float(np.mean([refused(r, score, points, unknown) for r in mine]))
                row[f"n {kind}"] = len(mine)
            kept = [not refused(r, score, points, unknown) for r in present]
            row["found"] = float(np.mean(kept)) if present else float("nan")
            row["Acc@0.5"] = float(np.mean([k and r["iou"] > 0.5 for k, r in zip(kept, present)])) if present \
                else float("nan")
            row["n present"] = len(present)
            rows.append(row)
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown, one block per (where, task)."""
    lines: list[str] = []
    last = None
    for row in rows:
        key = (row["where"], row["task"])
        kinds = sorted(k[len("refused "):] for k in row if k.startswith("refused "))
        if key != last:
            counts = ", ".join(f"{row[f'n {k}']} {k}" for k in kinds)
            lines += ["", f"{row['where']} {row['task'].upper()} ({row['n present']} present, {counts})", "",
                      "| absent_score | absent_class_points | unknown_object | "
                      + " | ".join(f"refused {k}" for k in kinds) + " | found (present) | Acc@0.5 (present) |",
                      "|---|---|---|" + "---|" * (len(kinds) + 2)]
            last = key
        mark = " (default)" if (row["score"], row["points"], row["unknown"]) == _DEFAULT else ""
        cells = [f"{row['score']:g}{mark}", str(row["points"]), row["unknown"]]
        cells += [f"{100 * row[f'refused {k}']:.1f} %" for k in kinds]
        cells += [f"{100 * row['found']:.1f} %", f"{100 * row['Acc@0.5']:.1f} %"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def default_settings() -> list[tuple[float, int, str]]:
    """Each check alone over its range, then the class check with each score threshold."""
    out = [_DEFAULT, *((s, 0, "answer") for s in SCORES)]
    out += [(0.0, p, "answer") for p in CLASS_POINTS[1:]]
    out += [(s, 0, "refuse") for s in SCORES]
    out += [(s, p, "refuse") for p in (50, 200) for s in SCORES]
    return list(dict.fromkeys(out))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--synth-dir", type=Path, default=None, help="held-out synthetic rooms (npz + val_*.json)")
    ap.add_argument("--rooms", type=int, default=30, help="first N rooms of --synth-dir")
    ap.add_argument("--real-dir", type=Path, default=None, help="real-data folder (bqnet_model.eval_real)")
    ap.add_argument("--scans", nargs="*", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--records", type=Path, default=None, help="write the per-sentence records (JSON) here")
    ap.add_argument("--from-records", type=Path, nargs="+", default=None,
                    help="tabulate saved records (one or more files) instead of running")
    args = ap.parse_args(argv)
    if args.from_records is not None:
        records = [r for p in args.from_records for r in json.loads(p.read_text())]
    else:
        if args.synth_dir is None and args.real_dir is None:
            ap.error("give --synth-dir and/or --real-dir (or --from-records)")
        from bqnet_model.pipeline import Segmenter

        seg = Segmenter.from_checkpoint(args.checkpoint, device=args.device, absent_class_points=0,
                                        unknown_object="answer", absent_score=0.0)
        if seg.model.sem_cls_head is None:
            print("note: this model has no semantic head; the class check never refuses", file=sys.stderr)
        records = []
        if args.synth_dir is not None:
            records += synthetic_records(seg, args.synth_dir, args.rooms)
        if args.real_dir is not None:
            records += real_records(seg, args.real_dir, args.scans)
        if args.records is not None:
            args.records.write_text(json.dumps(records))
    present = [r for r in records if r["kind"] == "present" and r["where"] == "synthetic"]
    print(f"# absent-object calibration, {datetime.date.today().isoformat()}, checkpoint {args.checkpoint}")
    if present:
        known = np.mean([0 <= r["target_class"] < OTHER_CLASS for r in present])
        print(f"synthetic present sentences whose parsed target is a vocabulary class: {100 * known:.1f} %")
    print(format_table(table(records, default_settings())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
