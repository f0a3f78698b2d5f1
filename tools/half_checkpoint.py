#!/usr/bin/env python3
"""A float16 copy of a checkpoint's weights, to carry to the GPU machine as a start point.

    python tools/half_checkpoint.py models/bqnet_tiny.pth .gpu_init/start_fp16.pth

A device call carries at most 64 MiB, the spconv bundle and the text encoder included; a float16
copy halves a 15 MiB model. ``--init-weights`` loads it back into float32 parameters (the values
keep float16 precision, which a continued training does not notice). Config and meta are kept;
the meta records where the copy came from.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bqnet_model.checkpoint import load_checkpoint  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, help="checkpoint (.pth) written by this project")
    ap.add_argument("dst", type=Path, help="where the float16 copy goes")
    args = ap.parse_args(argv)
    if not args.src.is_file():
        print(f"error: checkpoint not found: {args.src}", file=sys.stderr)
        return 2
    load_checkpoint(args.src, "cpu")  # refuse anything this project cannot load, before copying
    data = torch.load(args.src, map_location="cpu", weights_only=True)
    data["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in data["state_dict"].items()}
    data["meta"] = dict(data.get("meta") or {}, half_copy_of=str(args.src))
    args.dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, args.dst)
    load_checkpoint(args.dst, "cpu")  # the copy loads as the original does
    print(f"{args.dst}: {args.dst.stat().st_size / 2**20:.1f} MiB (from {args.src.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
