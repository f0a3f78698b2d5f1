"""Benchmark: online superpoints on real ScanNet scans and synthetic rooms, the mesh segmentation, 300k timing.

Run: ``python bench/superpoints.py --machine "..."`` (``make bench``); its output is the "bench output"
section of docs/benchmarks/superpoints.md. Sections:

1. real scans (``../shared/real`` beside the checkout, when present): ASA against the v2 instance labels,
   counting labelled points only (full-resolution mesh vertices of scene0000_00: ``object_id`` >= 0 of
   ``*_vh_clean_2.v2_vertex_labels.npz``; the 50k subsets: ``_ins_label.npy`` > 0), segment counts and
   points per segment, for ``ours`` (``oversegment`` with the default ``SuperpointParams``), ScanNet's
   mesh segmentation where a mesh exists (the ``segs.json`` shipped with the scan, and ours of
   ``bqnet_model.mesh_segmentation``), and a 0.25 m grid. The algorithm before this one (2 cm voxel FH)
   is not rebuilt here: its figures, measured on the same files, are in docs/benchmarks/superpoints.md.
2. mesh segmentation agreement with ScanNet's ``segs.json`` (matched share under the best one-to-one
   matching, counts, time).
3. synthetic rooms (``demo_room``, ``generate_room`` seeds 0-2, ``minimal_room``): ASA, counts.
4. timing: ``minimal_room(300_000)``, median wall time of ``--repeats`` runs after a warm-up, with the
   C++ stage times; ``cpu ms`` is process CPU time (the machine may be shared: see the load average).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bqnet_synth import demo_room, generate_room, minimal_room  # noqa: E402
from bqnet_model.mesh_segmentation import match_segmentations, read_ply_mesh, segment_mesh  # noqa: E402
from bqnet_model.superpoints import (  # noqa: E402
    SuperpointParams,
    achievable_segmentation_accuracy,
    oversegment_detailed,
)

REAL = ROOT.parent / "shared" / "real"


def grid_superpoints(xyz: np.ndarray, cell: float = 0.25) -> np.ndarray:
    """Baseline: every ``cell`` metre grid cell is a superpoint."""
    c = np.floor((xyz.astype(np.float64) - xyz.min(0)) / cell).astype(np.int64)
    return np.unique(c, axis=0, return_inverse=True)[1].ravel()


def real_scans() -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, dict]]:
    """(name, xyz, rgb, instance (-1 = unlabelled), extras) for every scan in ../shared/real."""
    out = []
    fr = REAL / "scannet_scene0000_00_fullres"
    if (fr / "scene0000_00_vh_clean_2.ply").is_file():
        mesh = read_ply_mesh(fr / "scene0000_00_vh_clean_2.ply")
        ins = np.load(fr / "scene0000_00_vh_clean_2.v2_vertex_labels.npz")["object_id"].astype(np.int64)
        segs = np.asarray(json.loads((fr / "scene0000_00_vh_clean_2.0.010000.segs.json").read_text())["segIndices"])
        out.append(("scene0000_00 mesh vertices", mesh.xyz, mesh.rgb, ins, {"mesh": mesh, "segs": segs}))
    for p in sorted((REAL / "scannet_votenet50k").glob("*_vert.npy")):
        v = np.load(p)
        ins = np.load(str(p).replace("_vert.npy", "_ins_label.npy")).astype(np.int64) - 1
        out.append((f"{p.name[:12]} 50k", v[:, :3].astype(np.float32), v[:, 3:6].astype(np.uint8), ins, {}))
    return out


def _timed(fn, repeats: int = 1):
    out = fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return float(np.median(wall)), float(np.median(cpu)), out


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def bench_real(threads: int) -> None:
    scans = real_scans()
    if not scans:
        print(f"(no real scans at {REAL}: section skipped)\n")
        return
    print("## Real ScanNet scans (ASA over labelled points; segments; points per segment)\n")
    print(_row(["scan", "points", "labelled", "spacing cm", "ours ASA", "ours segs", "pts/seg", "ours ms",
                "ScanNet segs.json ASA (segs)", "mesh seg (ours) ASA (segs)", "grid 0.25 m ASA (cells)"]))
    print(_row(["---"] * 11))
    asas = []
    for name, xyz, rgb, ins, extra in scans:
        ms, _, r = _timed(lambda: oversegment_detailed(xyz, rgb, num_threads=threads))
        a = achievable_segmentation_accuracy(r.labels, ins)
        asas.append(a)
        g = grid_superpoints(xyz)
        sn = ms_ours = "-"
        if "segs" in extra:
            segs = extra["segs"]
            sn = f"{achievable_segmentation_accuracy(segs, ins):.4f} ({len(np.unique(segs))})"
            lab = segment_mesh(extra["mesh"].xyz, extra["mesh"].faces, num_threads=threads)
            ms_ours = f"{achievable_segmentation_accuracy(lab, ins):.4f} ({lab.max() + 1})"
        print(_row([name, f"{len(xyz):,}", f"{int((ins >= 0).sum()):,}", f"{100 * r.spacing:.2f}", f"{a:.4f}",
                    f"{r.num_superpoints:,}", f"{len(xyz) / r.num_superpoints:.0f}", f"{ms:.0f}", sn, ms_ours,
                    f"{achievable_segmentation_accuracy(g, ins):.4f} ({g.max() + 1:,})"]))
    print(f"\nours: min ASA {min(asas):.4f}, mean {np.mean(asas):.4f} over {len(asas)} scans\n")
    full = [s for s in scans if "segs" in s[4]]
    if full:
        _, _, _, _, extra = full[0]
        mesh, segs = extra["mesh"], extra["segs"]
        ms, _, lab = _timed(lambda: segment_mesh(mesh.xyz, mesh.faces, num_threads=threads), 3)
        m = match_segmentations(lab, segs)
        print("## Mesh segmentation (bqnet_model.mesh_segmentation, kThresh 0.01, segMinVerts 20) vs ScanNet's "
              "scene0000_00_vh_clean_2.0.010000.segs.json\n")
        print(f"- vertices {len(mesh.xyz):,}, faces {len(mesh.faces):,}; time {ms:.0f} ms (median of 3)")
        print(f"- segments: ours {m['segments_a']}, ScanNet {m['segments_b']}")
        print(f"- vertices in matched segments (best one-to-one matching): {m['matched_share']:.4f}\n")


def bench_synthetic(threads: int) -> None:
    print("## Synthetic rooms (ASA against the instance labels, all points)\n")
    print(_row(["room", "points", "spacing cm", "ASA", "segments", "pts/seg", "ms"]))
    print(_row(["---"] * 7))
    rooms = [("demo_room(0)", demo_room(0))] + [(f"generate_room({s})", generate_room(s)) for s in range(3)]
    rooms.append(("minimal_room(100k, seed 0)", minimal_room(100_000, seed=0)))
    for name, sc in rooms:
        ms, _, r = _timed(lambda: oversegment_detailed(sc.xyz, sc.rgb, num_threads=threads))
        a = achievable_segmentation_accuracy(r.labels, sc.instance.astype(np.int64))
        print(_row([name, f"{len(sc.xyz):,}", f"{100 * r.spacing:.2f}", f"{a:.4f}", f"{r.num_superpoints:,}",
                    f"{len(sc.xyz) / r.num_superpoints:.0f}", f"{ms:.0f}"]))
    print()


def bench_timing(threads: int, repeats: int) -> None:
    sc = minimal_room(300_000, seed=0)
    stages = []

    def run():
        r = oversegment_detailed(sc.xyz, sc.rgb, num_threads=threads)
        stages.append(r.timings_ms)
        return r

    ms, cpu, r = _timed(run, repeats)
    st = {k: float(np.median([d[k] for d in stages[1:]])) for k in stages[0]}
    print(f"## Timing: minimal_room(300_000, seed 0), {threads} threads, median of {repeats} after a warm-up\n")
    print(f"- wall {ms:.0f} ms, process CPU {cpu:.0f} ms; {r.num_superpoints:,} segments, "
          f"ASA {achievable_segmentation_accuracy(r.labels, sc.instance.astype(np.int64)):.4f}")
    print("- C++ stages (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in st.items()))
    print(f"- load average after: {_loadavg()}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--machine", default=None, help="machine description for the report header")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# bench/superpoints.py, {_dt.datetime.now().astimezone().isoformat(timespec='seconds')}\n")
    print(f"- machine: {args.machine or cpu_model()} ({os.cpu_count()} logical CPUs), threads {args.threads}; "
          f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}")
    print(f"- ours: {SuperpointParams()}")
    print(f"- load average before: {_loadavg()}\n")
    bench_real(args.threads)
    bench_synthetic(args.threads)
    bench_timing(args.threads, args.repeats)


if __name__ == "__main__":
    main()
