#!/usr/bin/env python3
"""Farthest point sampling: the CUDA kernel (``bqnet_model._C_cuda.farthest_point_sample``,
csrc/cuda/fps_cuda.cu) against the torch loop (``farthest_point_sample``, what ``prepare`` runs while
``inference.fps_cuda_kernel`` is False), on the GPU machine (tools/device_bench_ingest.sh runs it).

    python bench/fps.py [--sizes 2000 17000 54000] [--n 256] [--rows 1] [--repeats 7] [--out FPS.json]

Per size: superpoint-like centres (uniform in a 4 x 2.5 m room cross-section stretched along x in
proportion to the count, mean-centred as ``BQNet.centred`` leaves them, a few superpoints near the
centre so that the origin rule is exercised), ``--rows`` rows with the last one a quarter shorter
(padding), the torch loop's default variant (pairwise matrix when it fits FPS_MATRIX_MAX) and the
kernel: medians and minima of ``--repeats`` timed calls after one warm-up, each call timed with
``torch.cuda.synchronize``; and whether the kernel's indices equal the torch loop's (they must: a
``false`` there is a bug). Without CUDA or without the kernel it times the torch loop alone and says
why. Prints one line per size and writes the JSON (rewritten after every size) when ``--out`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bqnet_model.model import query_sampling  # noqa: E402
from bqnet_model.model.query_sampling import farthest_point_sample  # noqa: E402


def centres(S: int, rows: int, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, S, 3)`` mean-centred points and the ``(rows, S)`` padding (last row: 3/4 real)."""
    g = torch.Generator().manual_seed(seed)
    length = max(5.0, 5.0 * S / 2000)  # about 2k superpoints per 5 m of room
    xyz = torch.rand(rows, S, 3, generator=g) * torch.tensor([length, 4.0, 2.5])
    pad = torch.zeros(rows, S, dtype=torch.bool)
    if rows > 1:
        pad[-1, S * 3 // 4:] = True
    for b in range(rows):
        real = ~pad[b]
        xyz[b, real] -= xyz[b, real].mean(0)
        xyz[b, ~real] = 0.0
        xyz[b, 1:6] = torch.rand(5, 3, generator=g) * 0.02  # inside the kernel's 1e-3 ball: never seeds
    return xyz.to(device), pad.to(device)


def timed(fn: Callable[[], torch.Tensor], repeats: int, device: torch.device) -> tuple[torch.Tensor, list[float]]:
    """The result of one warm-up call and the wall times (ms) of ``repeats`` more."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    out = fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return out, times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 17000, 54000], help="superpoints per row")
    ap.add_argument("--n", type=int, default=256, help="seeds per row (decoder.fps_num)")
    ap.add_argument("--rows", type=int, default=1, help="rows (scenes) per call")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, default=None, help="JSON output")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    run = query_sampling.fps_cuda_kernel() if dev.type == "cuda" else None
    why = "" if run is not None else ("not a CUDA device" if dev.type != "cuda" else
                                      "bqnet_model._C_cuda has no farthest_point_sample (not built?)")
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__, "commit": os.environ.get("BQNET_GIT_COMMIT", "unknown"),
        "n": args.n, "rows": args.rows, "repeats": args.repeats, "kernel": run is not None, "no_kernel": why,
        "sizes": [],
    }
    if why:
        print(f"[fps] kernel not timed: {why}", flush=True)
    for S in args.sizes:
        xyz, pad = centres(S, args.rows, seed=S, device=dev)
        matrix = dev.type == "cuda" and args.rows * S * S <= query_sampling.FPS_MATRIX_MAX
        want, t_torch = timed(lambda: farthest_point_sample(xyz, args.n, pad), args.repeats, dev)
        row: dict[str, Any] = {"S": S, "torch_variant": "matrix" if matrix else "loop",
                               "torch_ms": statistics.median(t_torch), "torch_min_ms": min(t_torch)}
        if run is not None:
            lengths = (~pad).sum(1)
            got, t_kernel = timed(lambda: run(xyz, lengths, args.n), args.repeats, dev)
            same = bool(torch.equal(got, want))
            row.update(kernel_ms=statistics.median(t_kernel), kernel_min_ms=min(t_kernel), same=same,
                       speedup=statistics.median(t_torch) / max(statistics.median(t_kernel), 1e-9))
            if not same:
                row["first_mismatch"] = (got != want).nonzero()[:5].tolist()
        report["sizes"].append(row)
        line = f"[fps] S={S:>6} n={args.n} rows={args.rows}: torch ({row['torch_variant']}) {row['torch_ms']:.2f} ms"
        if run is not None:
            line += f", kernel {row['kernel_ms']:.3f} ms ({row['speedup']:.1f}x), same indices: {row['same']}"
        print(line, flush=True)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=1))
    return 1 if any(r.get("same") is False for r in report["sizes"]) else 0


if __name__ == "__main__":
    sys.exit(main())
