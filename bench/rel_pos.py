#!/usr/bin/env python3
"""What ``decoder.rel_pos`` costs per query: the Segmenter's ``query`` with the relative-position
bias on and off, on one prepared synthetic room, in one process (medians, CUDA synchronized).

The same model answers both ways: "off" drops the bias modules (``decoder.rel_pos = None``), so
only their cost differs (the answers differ too, unless the weights are still zero).

    python bench/rel_pos.py                                   # the shipped model, CPU
    python bench/rel_pos.py --config config/res.yaml --set model.text.encoder=minilm --device cuda --batch 32
    # (paper sizes, random weights; --set as tools/train.py's)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bqnet_synth import minimal_room  # noqa: E402
from bqnet_model.model.config import load_config  # noqa: E402
from bqnet_model.pipeline import Segmenter  # noqa: E402
from sentences import sentences  # noqa: E402  (bench/sentences.py, next to this script)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "models" / "bqnet_tiny.pth"),
                    help="trained model with rel_pos on (ignored when --config is given)")
    ap.add_argument("--config", default=None, help="build from this config with rel_pos on, random weights")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="more config overrides with --config (as tools/train.py --set)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=4, help="sentences per query call")
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    if args.config:
        cfg = load_config(args.config, ["model.decoder.rel_pos=true", *args.overrides])
        seg = Segmenter.from_config(cfg, device=args.device, tta_rotations=1)
    else:  # one decoder pass per query (the shipped model's own setting fuses 4 turned copies)
        seg = Segmenter.from_checkpoint(args.checkpoint, device=args.device, tta_rotations=1)
    dec = seg.model.decoder
    if dec.rel_pos is None:
        print("error: the model has decoder.rel_pos off; nothing to compare", file=sys.stderr)
        return 2
    room = minimal_room(n_points=args.points, seed=0)
    cache = seg.prepare(room.xyz, room.rgb)
    texts = sentences(args.batch)
    dev = torch.device(seg.device)

    def timed() -> float:
        seg.query(cache, texts)  # warm-up, and the text cache holds the sentences afterwards
        ts = []
        for _ in range(args.repeats):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            seg.query(cache, texts)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            ts.append(time.perf_counter() - t0)
        return 1000 * statistics.median(ts)

    bias = dec.rel_pos
    rows = []
    for _ in range(2):  # alternate, twice: drifts of the machine show as a spread
        dec.rel_pos = bias
        on = timed()
        dec.rel_pos = None
        off = timed()
        rows.append((on, off))
    dec.rel_pos = bias
    print(f"device {dev}, {cache.n_points:,} points, "
          f"{cache.n_superpoints} superpoints, {args.batch} sentences per call, median of {args.repeats}")
    for k, (on, off) in enumerate(rows):
        print(f"  round {k + 1}: rel_pos on {on:7.1f} ms, off {off:7.1f} ms, ratio on/off {on / off:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
