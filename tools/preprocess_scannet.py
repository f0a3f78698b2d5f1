#!/usr/bin/env python3
"""Preprocess ScanNet v2 scans into per-scene ``.npz`` files for training and evaluation.

    python tools/preprocess_scannet.py --scans /data/scannet/scans --out data/scannet \
        [--scenes scene0000_00 scene0001_00 | --scene-list val.txt] [--superpoints scannet|ours] \
        [--align [--axis-alignment matrices.json]] [--label-map scannetv2-labels.combined.tsv]

``--scans`` is ScanNet's ``scans`` folder (one folder per scene) or a single scan folder holding
``<scene>_vh_clean_2.ply``, ``<scene>_vh_clean_2.0.010000.segs.json`` and
``<scene>.aggregation.json``. ``--align`` moves the mesh into the axis-aligned frame the
sentences speak in; the matrix comes from ``<scene>.txt``, ``--axis-alignment`` (JSON
{scene: 16 numbers}) or a ``*.v2_vertex_labels.npz`` beside the mesh. ``--label-map`` maps raw
labels our class rules miss through their NYU40 class. ScanRefer / Multi3DRefer JSON files go
next to the ``.npz`` files unchanged (``data.root``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    from bqnet_model.data.scannet import preprocess_scannet
except ModuleNotFoundError:  # run from a checkout that is not pip-installed: use the checkout itself
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bqnet_model.data.scannet import preprocess_scannet


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scans", required=True, help="ScanNet 'scans' folder holding one folder per scene")
    ap.add_argument("--out", required=True, help="output folder for <scene_id>.npz")
    ap.add_argument("--scenes", nargs="*", default=None, help="scene ids to convert (default: all)")
    ap.add_argument("--scene-list", default=None, help="text file with one scene id per line")
    ap.add_argument("--superpoints", choices=("scannet", "ours"), default="scannet",
                    help="ScanNet's mesh segments (as the original) or our online oversegmentation")
    ap.add_argument("--align", action="store_true", help="apply each scan's axisAlignment matrix")
    ap.add_argument("--axis-alignment", default=None, help="JSON {scene_id: row-major 4x4} of axisAlignment matrices")
    ap.add_argument("--label-map", default=None, help="ScanNet's scannetv2-labels.combined.tsv (raw label -> NYU40)")
    ap.add_argument("--overwrite", action="store_true", help="rewrite existing .npz files")
    args = ap.parse_args(argv)
    ids = args.scenes
    if args.scene_list:
        ids = (ids or []) + [s.strip() for s in Path(args.scene_list).read_text().splitlines() if s.strip()]
    try:
        paths = preprocess_scannet(args.scans, args.out, ids or None, superpoints=args.superpoints,
                                   align=args.align, overwrite=args.overwrite,
                                   axis_alignments=args.axis_alignment, label_map=args.label_map)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(paths)} scenes in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
