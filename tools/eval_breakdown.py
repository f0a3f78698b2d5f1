#!/usr/bin/env python3
"""Where a RES model goes wrong: accuracy by relation and by class, and the kind of each miss.

The overall scores (``tools/train.py --checkpoint``) say how often the answer is right; deciding
what to change next needs to know *why* it is wrong. For every sentence of a ScanRefer-style
split (through ``Segmenter``, as the product answers) this sorts the answer into:

* ``correct``: point IoU with the target > 0.5;
* ``target + same-class object``: covers most of the target (recall > 0.5) but runs over another
  object of its class (instances of one kind not told apart);
* ``target + other``: covers most of the target plus something else;
* ``part of target``: recall 0.1-0.5;
* ``same-class object``: the wrong instance of the right class (the relation / attribute failed);
* ``other class``: an object of another class (the category failed);
* ``nothing``: no point answered.

It prints counts per unique / multiple and Acc@0.5 per ``relation`` (a field the synthetic
expressions carry; "-" when absent), per relation over the *multiple* sentences only (there the
relation, not the class, decides the target), per ``object_name`` and per ``style`` (the wording
of ``bqnet_synth.styles``; "-" when absent), each next to the chance
baseline of the same sentences (a random object of the named class, ``metrics.chance_res``).
Then the oracle masks (``bqnet_model.mask_oracle``; ``--no-oracle`` leaves them out): the best
point IoU any decoder query's mask reaches with the target, overall, per split and per target
size, next to the plain scores: whether the masks or the selection fail.
``--json`` writes everything.

    python tools/eval_breakdown.py models/bqnet_tiny.pth --data-root data/synth --scenes 30
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np


def classify(inst: np.ndarray, sem: np.ndarray, target: int, pred: np.ndarray) -> tuple[str, float]:
    """The kind of answer (see the module docstring) and its point IoU; ``pred`` bool (N,)."""
    gt = inst == target
    inter = float((gt & pred).sum())
    iou = inter / max(1.0, float((gt | pred).sum()))
    if iou > 0.5:
        return "correct", iou
    if not pred.any():
        return "nothing", 0.0
    recall = inter / max(1.0, float(gt.sum()))
    ids, counts = np.unique(inst[pred & ~gt], return_counts=True)
    others = ids[counts > 0.2 * max(1, int(pred.sum()))]
    labels = sem[gt]
    labels = labels[labels >= 0]
    cls = np.bincount(labels).argmax() if labels.size else -1
    same = [i for i in others if i >= 0 and (sem[inst == i] == cls).mean() > 0.5]
    if recall > 0.5:
        return ("target + same-class object" if same else "target + other"), iou
    if recall > 0.1:
        return "part of target", iou
    return ("same-class object" if same else "other class"), iou


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--data-root", required=True, help="per-scene .npz files + <split>_scanrefer.json")
    ap.add_argument("--split", default="val")
    ap.add_argument("--annotations", default=None, help="annotation JSON (default: <root>/<split>_scanrefer.json)")
    ap.add_argument("--scenes", type=int, default=None, help="only the first N scenes (sorted by id)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--online-superpoints", action="store_true",
                    help="compute the superpoints from the points as the node does, instead of the scene file's")
    ap.add_argument("--no-oracle", action="store_true",
                    help="leave out the oracle mask figures (best query's mask per sentence)")
    ap.add_argument("--size-edges", type=int, nargs="+", default=None,
                    help="target size bucket edges in points for the oracle table (default: mask_oracle.SIZE_EDGES)")
    args = ap.parse_args(argv)

    from tqdm import tqdm

    from bqnet_model.data.referit import same_class_ids
    from bqnet_model.data.scannet import load_scene_npz
    from bqnet_model.mask_oracle import SIZE_EDGES, check_size_edges, format_oracle_table, oracle_fields, summarize_oracle
    from bqnet_model.metrics import chance_res
    from bqnet_model.pipeline import Segmenter
    from bqnet_model.train import scene_dir

    try:
        edges = check_size_edges(SIZE_EDGES if args.size_edges is None else args.size_edges)
    except ValueError as exc:
        ap.error(f"--size-edges: {exc}")
    oracle = not args.no_oracle
    root = Path(args.data_root)
    ann_path = Path(args.annotations) if args.annotations else root / f"{args.split}_scanrefer.json"
    if not ann_path.is_file():
        print(f"annotation file not found: {ann_path}", file=sys.stderr)
        return 2
    by_scene: dict[str, list[dict]] = collections.defaultdict(list)
    for row in json.loads(ann_path.read_text()):
        by_scene[row["scene_id"]].append(row)
    scene_ids = sorted(by_scene)[: args.scenes]
    seg = Segmenter.from_checkpoint(args.checkpoint, device=args.device)
    records = []
    scenes = scene_dir(root)
    for sid in tqdm(scene_ids, desc="scenes", unit="scene"):
        scene = load_scene_npz(scenes / f"{sid}.npz")
        cache = seg.prepare(scene["xyz"], scene["rgb"], None if args.online_superpoints else scene["superpoint"])
        rows = by_scene[sid]
        answers = seg.query(cache, [r["description"] for r in rows], task="res", keep_query_masks=oracle)
        for row, res in zip(rows, answers):
            pred = np.zeros(scene["xyz"].shape[0], bool)
            pred[res.point_indices] = True
            target = int(row["object_id"])
            gt = scene["instance"] == target
            kind, iou = classify(scene["instance"], scene["semantic"], target, pred)
            same = same_class_ids(target, scene["instance"], scene["semantic"],
                                  [str(x) for x in scene.get("object_names", [])])
            rec = dict(scene_id=sid, text=row["description"], eval_type=row.get("eval_type", "-"),
                       relation=row.get("relation", "-"), object_name=row.get("object_name", "-"),
                       style=row.get("style", "-"), kind=kind, iou=iou, n_gt=int(gt.sum()),
                       chance50=chance_res(scene["instance"], target, same)["Acc@0.5"])
            if oracle:
                rec.update(oracle_fields(res, cache, gt))
            records.append(rec)
    if not records:
        print("no sentences evaluated", file=sys.stderr)
        return 2

    ious = np.array([r["iou"] for r in records])
    print(f"{len(records)} sentences in {len(scene_ids)} scenes: Acc@0.5 {100 * (ious > 0.5).mean():.1f} %, "
          f"Acc@0.25 {100 * (ious > 0.25).mean():.1f} %, mIoU {100 * ious.mean():.1f} %; "
          f"chance Acc@0.5 {100 * np.mean([r['chance50'] for r in records]):.1f} %")
    oracle_summary = summarize_oracle(records, edges) if oracle else None
    if oracle_summary is not None:
        o = oracle_summary["groups"]["overall"]["oracle"]
        print(f"oracle (best query's mask): Acc@0.5 {100 * o['Acc@0.5']:.1f} %, Acc@0.25 {100 * o['Acc@0.25']:.1f} %, "
              f"mIoU {100 * o['mIoU']:.1f} %")
    kinds = collections.Counter((r["eval_type"], r["kind"]) for r in records)
    for et in sorted({r["eval_type"] for r in records}):
        n = sum(v for (e, _), v in kinds.items() if e == et)
        print(f"\n{et} ({n} sentences): kind of answer")
        for (e, k), v in sorted(kinds.items(), key=lambda kv: -kv[1]):
            if e == et:
                print(f"  {k:28s} {v:5d}  {100 * v / n:5.1f} %")
    tables = {}
    for key, title, keep in (("relation", "relation", None), ("relation", "relation, multiple sentences only", "multiple"),
                             ("object_name", "object_name", None), ("style", "style", None)):
        groups: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
        for r in records:
            if keep is None or r["eval_type"] == keep:
                groups[r[key]].append((r["iou"], r["chance50"]))
        print(f"\nAcc@0.5 by {title} (chance in brackets)")
        table = tables.setdefault(title.replace(", ", "/").replace(" ", "_"), {})
        for name, v in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            acc = float((np.array([i for i, _ in v]) > 0.5).mean())
            chance = float(np.mean([c for _, c in v]))
            table[name] = dict(n=len(v), acc50=acc, chance50=chance)
            print(f"  {name:16s} n={len(v):4d}  {100 * acc:5.1f} % ({100 * chance:5.1f} %)")
    if oracle_summary is not None:
        print("\noracle masks by split and target size (points); o = oracle (best query's mask), o-rec / o-prec: "
              "its recall / precision, IoU>0: any mask touches the target, masks: non-empty query masks per sentence")
        print(format_oracle_table(oracle_summary))
    if args.json:
        args.json.write_text(json.dumps(dict(checkpoint=args.checkpoint, kinds={f"{e}/{k}": v for (e, k), v in kinds.items()},
                                             tables=tables, oracle=oracle_summary, records=records), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
