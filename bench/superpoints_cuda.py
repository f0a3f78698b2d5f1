#!/usr/bin/env python3
"""The GPU oversegmentation against the CPU, on the GPU machine (tools/device_superpoints_cuda.sh runs it).

    python bench/superpoints_cuda.py OUT_DIR [--scans DIR] [--sizes 200000 300000 1000000 3000000]

Per cloud: CPU ``merge="fh"``, CPU ``merge="boruvka"`` and CUDA labels; the agreement of CUDA with CPU
Borůvka (fraction of points with the same label: labels are numbered by first point, so equal
segmentations give 1.0; and whether they are identical), ASA of each against the instance labels where
there are any, segment counts, times (CUDA: median of 5 after one warm-up, with
``torch.cuda.synchronize``; CPU: median of 3 up to 300k points, one run above), and whether the 5 CUDA
runs gave identical labels. Clouds: synthetic rooms tiled side by side to each size, and every scan of
``--scans`` (a folder of ``<scan>.npz`` with xyz / rgb / instance as tools/make_real_training.py writes
them, or of ``<scan>_vert.npy`` + ``<scan>_ins_label.npy`` as in shared/real's 50k scans). A failing cloud
prints its error and the run goes on; OUT_DIR/superpoints_cuda.json is rewritten after every cloud.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bqnet_model.superpoints import (  # noqa: E402
    SuperpointParams,
    achievable_segmentation_accuracy,
    oversegment_detailed,
)
from bqnet_model.superpoints_cuda import extension, oversegment_host_port  # noqa: E402


def tiled_room(n: int, seed: int = 0, tile: int = 250_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic rooms (bqnet_synth.minimal_room) side by side along x, 1 m apart, cut to n points."""
    from bqnet_synth import minimal_room

    xs, cs, ins = [], [], []
    offset, inst_base, total, k = 0.0, 0, 0, 0
    while total < n:
        room = minimal_room(min(tile, max(n, 20_000)), seed=seed + k)
        x = room.xyz.astype(np.float32).copy()
        x[:, 0] += offset - x[:, 0].min()
        offset = float(x[:, 0].max()) + 1.0
        inst = room.instance.astype(np.int64)
        xs.append(x)
        cs.append(room.rgb)
        ins.append(np.where(inst >= 0, inst + inst_base, -1))
        inst_base += int(inst.max()) + 1
        total += len(x)
        k += 1
    return np.concatenate(xs)[:n], np.concatenate(cs)[:n], np.concatenate(ins)[:n]


def read_scans(folder: Path) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]]:
    """(name, xyz, rgb, instance or None) for every scan in folder (module docstring: the formats)."""
    out = []
    for p in sorted(folder.glob("*.npz")):
        with np.load(p, allow_pickle=False) as z:
            inst = z["instance"].astype(np.int64) if "instance" in z.files else None
            out.append((p.stem, z["xyz"].astype(np.float32), z["rgb"].astype(np.uint8), inst))
    for p in sorted(folder.glob("*_vert.npy")):
        scan = p.name[: -len("_vert.npy")]
        v = np.load(p)
        lab = p.with_name(f"{scan}_ins_label.npy")
        inst = np.load(lab).astype(np.int64) - 1 if lab.is_file() else None  # 0 = unannotated there
        out.append((scan, v[:, :3].astype(np.float32), v[:, 3:6].astype(np.uint8), inst))
    return out


def _asa(labels: np.ndarray, inst: np.ndarray | None) -> float | None:
    if inst is None or not (inst >= 0).any():
        return None
    return round(achievable_segmentation_accuracy(labels, inst), 5)


def _median_ms(fn, runs: int, sync: bool) -> tuple[float, list[Any]]:
    times, outs = [], []
    for _ in range(runs):
        if sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        outs.append(fn())
        if sync:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times)), outs


def compare(name: str, xyz: np.ndarray, rgb: np.ndarray, inst: np.ndarray | None, threads: int,
            host_port: bool = False) -> dict[str, Any]:
    """One cloud: CPU fh, CPU boruvka, CUDA (module docstring); host_port: the port's kernels on the
    host in place of CUDA (a dry run of this script on a machine without a GPU)."""
    n = len(xyz)
    cpu_runs = 3 if n <= 300_000 else 1
    row: dict[str, Any] = {"cloud": name, "points": n, "cpu_runs": cpu_runs, "cuda_runs": 5}
    for merge in ("fh", "boruvka"):
        p = SuperpointParams(merge=merge)
        ms, outs = _median_ms(lambda: oversegment_detailed(xyz, rgb, params=p, num_threads=threads), cpu_runs, False)
        r = outs[0]
        row[f"cpu_{merge}"] = {"ms": round(ms, 1), "segments": r.num_superpoints, "asa": _asa(r.labels, inst)}
        row[f"_labels_{merge}"] = r.labels
    p = SuperpointParams(merge="boruvka")
    if host_port:
        run = lambda: oversegment_host_port(xyz, rgb, params=p, num_threads=threads)  # noqa: E731
    else:
        x, c = torch.from_numpy(xyz).to("cuda"), torch.from_numpy(rgb).to("cuda")
        run = lambda: oversegment_detailed(x, c, params=p)  # noqa: E731
    run()  # warm-up (allocator, module load)
    ms, outs = _median_ms(run, 5, not host_port)
    labs = [o.labels.cpu().numpy() if isinstance(o.labels, torch.Tensor) else o.labels for o in outs]
    cuda = labs[0]
    ref = row.pop("_labels_boruvka")
    fh = row.pop("_labels_fh")
    row["cuda"] = {"ms": round(ms, 1), "segments": outs[0].num_superpoints, "asa": _asa(cuda, inst),
                   "stage_ms": {k: round(v, 1) for k, v in outs[0].timings_ms.items()},
                   "deterministic_5_runs": all(np.array_equal(cuda, o) for o in labs[1:])}
    row["cuda_vs_cpu_boruvka"] = {"identical": bool(np.array_equal(cuda, ref)),
                                  "same_label_fraction": round(float((cuda == ref).mean()), 6)}
    row["cpu_fh_vs_cpu_boruvka_same_label_fraction"] = round(float((fh == ref).mean()), 6)
    if row["cuda"]["asa"] is not None and row["cpu_boruvka"]["asa"] is not None:
        row["asa_cuda_minus_cpu_boruvka"] = round(row["cuda"]["asa"] - row["cpu_boruvka"]["asa"], 5)
    row["speedup_vs_cpu_boruvka"] = round(row["cpu_boruvka"]["ms"] / max(ms, 1e-6), 2)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--scans", type=Path, default=None, help="folder of scans (.npz or *_vert.npy)")
    ap.add_argument("--sizes", type=int, nargs="*", default=[200_000, 300_000, 1_000_000, 3_000_000])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads")
    ap.add_argument("--host-port", action="store_true",
                    help="dry run without a GPU: the port's kernels on the host in place of CUDA")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
                              "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                              "cpu_threads": a.threads, "rows": [], "errors": []}
    if not a.host_port and (not torch.cuda.is_available() or extension() is None):
        print("[superpoints_cuda] no CUDA device or bqnet_model._C_cuda not built: nothing to compare", flush=True)
        report["errors"].append("no CUDA device or _C_cuda not built")
        (a.out / "superpoints_cuda.json").write_text(json.dumps(report, indent=1))
        return 1
    clouds: list[tuple[str, Any]] = []
    if a.scans is not None:
        if a.scans.is_dir():
            clouds += [(name, (lambda s=(xyz, rgb, inst): s)) for name, xyz, rgb, inst in read_scans(a.scans)]
        else:
            print(f"[superpoints_cuda] --scans {a.scans} is not a folder: no real scans", flush=True)
    clouds += [(f"rooms_{n}", (lambda n=n: tiled_room(n))) for n in a.sizes]
    for name, make in clouds:
        t0 = time.perf_counter()
        try:
            xyz, rgb, inst = make()
            row = compare(name, xyz, rgb, inst, a.threads, a.host_port)
            report["rows"].append(row)
            print(f"[superpoints_cuda] {name}: {row['points']:,} pts | segments fh {row['cpu_fh']['segments']} "
                  f"boruvka {row['cpu_boruvka']['segments']} cuda {row['cuda']['segments']} | "
                  f"ASA fh {row['cpu_fh']['asa']} boruvka {row['cpu_boruvka']['asa']} cuda {row['cuda']['asa']} | "
                  f"cuda==boruvka {row['cuda_vs_cpu_boruvka']['identical']} "
                  f"({row['cuda_vs_cpu_boruvka']['same_label_fraction']}) | ms fh {row['cpu_fh']['ms']} "
                  f"boruvka {row['cpu_boruvka']['ms']} cuda {row['cuda']['ms']} | deterministic "
                  f"{row['cuda']['deterministic_5_runs']} | {time.perf_counter() - t0:.1f} s", flush=True)
        except Exception as exc:  # one failing cloud must not end the run
            traceback.print_exc()
            report["errors"].append(f"{name}: {type(exc).__name__}: {exc}")
            print(f"[superpoints_cuda] {name} FAILED: {exc}", flush=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        (a.out / "superpoints_cuda.json").write_text(json.dumps(report, indent=1))
    return 0 if not report["errors"] else 2


if __name__ == "__main__":
    sys.exit(main())
