#!/usr/bin/env python3
"""The chance baseline of a RES split: answer each sentence with a random object of the named class.

    python tools/chance_baseline.py DATA_ROOT [--split val] [--by-relation]

DATA_ROOT holds scene ``.npz`` files and ``<split>_scanrefer.json`` (a synthetic set from
``tools/make_synthetic.sh`` or a preprocessed ScanNet one). The expectation is exact
(``metrics.chance_res``: the mean over the target's class of [IoU > k]), split like the model's
evaluation into unique (the target is the only object of its class) and multiple; with
``--by-relation`` also per ``relation`` (the field synthetic sentences carry: what decides the
target), to stand next to ``tools/eval_breakdown.py``'s accuracy per relation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bqnet_model.data.referit import load_annotations, same_class_ids  # noqa: E402
from bqnet_model.data.scannet import load_scene_npz  # noqa: E402
from bqnet_model.metrics import chance_res  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_root")
    ap.add_argument("--split", default="val")
    ap.add_argument("--by-relation", action="store_true", help="also one line per relation of the sentences")
    args = ap.parse_args(argv)
    root = Path(args.data_root)
    anns = load_annotations(root / f"{args.split}_scanrefer.json")
    groups: dict[str, list[dict[str, float]]] = {"overall": [], "unique": [], "multiple": []}
    scenes: dict[str, dict[str, np.ndarray]] = {}
    for a in anns:
        if a.scene_id not in scenes:
            hits = sorted(root.glob(f"{a.scene_id}.npz")) or sorted(root.glob(f"*{a.scene_id}*.npz"))
            if not hits:
                raise SystemExit(f"no scene file for {a.scene_id} under {root}")
            scenes[a.scene_id] = load_scene_npz(hits[0])
        s = scenes[a.scene_id]
        names = [str(x) for x in s.get("object_names", [])]
        target = int(a.object_ids[0])
        cands = same_class_ids(target, s["instance"], s["semantic"], names)
        r = chance_res(s["instance"], target, cands)
        groups["overall"].append(r)
        groups["unique" if len(cands) == 1 else "multiple"].append(r)
        if args.by_relation:
            groups.setdefault(f"rel {a.extra.get('relation') or '-'}", []).append(r)
    for g, rs in groups.items():
        if rs:
            m = {k: 100 * float(np.mean([r[k] for r in rs])) for k in rs[0]}
            print(f"{g:16s} chance  mIoU {m['mIoU']:5.1f}  Acc@0.25 {m['Acc@0.25']:5.1f}  Acc@0.5 {m['Acc@0.5']:5.1f}  (n={len(rs)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
