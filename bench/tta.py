#!/usr/bin/env python3
"""What test-time augmentation (``inference.tta_rotations``) costs: ``prepare`` and ``query`` of the
same model on the same map with K = 1 (off) and more turned copies, in one process (medians, CUDA
synchronized), K = 1 measured in every round as the baseline of the ratios.

    python bench/tta.py                               # the shipped model, the demo room, CPU
    python bench/tta.py --device cuda --rotations 1 4 8 --batch 32

What it buys is measured on held-out rooms, not here (``tools/train.py --checkpoint ...
--set inference.tta_rotations=K``).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bqnet_synth import demo_room  # noqa: E402
from bqnet_model.pipeline import Segmenter  # noqa: E402
from sentences import sentences  # noqa: E402  (bench/sentences.py, next to this script)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "models" / "bqnet_tiny.pth"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rotations", type=int, nargs="+", default=[1, 2, 4], help="values of K to time (1 = off)")
    ap.add_argument("--batch", type=int, default=4, help="sentences per query call")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2, help="passes over all K, alternated (machine drift shows)")
    args = ap.parse_args(argv)
    if any(k < 1 for k in args.rotations):
        ap.error("--rotations must be >= 1")
    ks = sorted(set([1, *args.rotations]))

    seg = Segmenter.from_checkpoint(args.checkpoint, device=args.device)
    base_inf = seg.cfg.inference
    room = demo_room(seed=0)
    texts = sentences(args.batch)
    dev = torch.device(seg.device)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def timed(k: int) -> tuple[float, float]:
        seg.cfg.inference = dataclasses.replace(base_inf, tta_rotations=k)
        prep, query = [], []
        cache = seg.prepare(room.xyz, room.rgb)  # warm-up
        seg.query(cache, texts, task="res")
        for _ in range(args.repeats):
            sync()
            t0 = time.perf_counter()
            cache = seg.prepare(room.xyz, room.rgb)
            sync()
            t1 = time.perf_counter()
            seg.query(cache, texts, task="res")
            sync()
            prep.append(t1 - t0)
            query.append(time.perf_counter() - t1)
        return 1000 * statistics.median(prep), 1000 * statistics.median(query)

    print(f"device {dev}, demo room {len(room.xyz):,} points, {args.batch} sentences per query call, "
          f"median of {args.repeats}; model's own setting: tta_rotations {base_inf.tta_rotations}")
    for r in range(args.rounds):
        got = {k: timed(k) for k in ks}
        p1, q1 = got[1]
        for k in ks:
            p, q = got[k]
            print(f"  round {r + 1}: K={k}: prepare {p:8.1f} ms ({p / p1:4.2f}x K=1), "
                  f"query {q:7.1f} ms ({q / q1:4.2f}x K=1)")
    seg.cfg.inference = base_inf
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
