#!/usr/bin/env python3
"""Benchmark of ``Segmenter.update`` (incremental maps) against a full ``prepare``, in one process.

Maps: the demo room (``demo_room(seed=0)``, ~190k points) and a ~1M-point map (the demo room at
~250k points tiled 2 x 2, 5.5 m apart). The old map lacks objects of the room (of the last tile for
the big map, so the grid origin stays) until at least ``--grow`` of the points are missing; the new
map has them: "the map grew by 5 %". Per model and map: a full ``prepare`` of the new map, the
``update`` from the old map's cache (default ``feature_reach``: every feature exact; and
``feature_reach=0``: only the changed voxels recomputed), the stage timings, what was re-run, and
for the demo room the answers to its demo sentences against the full prepare's (found flags and
point IoU). Times are the minimum of ``--repeats`` runs (the dev machine is shared); the stage
timings printed are those of that fastest run. An update's stages (``timings_ms``) cover its whole
wall time: clean, diff, superpoints (point matching, the merge, the region's oversegmentation and the
table), backbone (the U-Net run), splice (choosing its voxels, assembling the features around it),
pooling, fps, semantic (the semantic head's maps copied for the absence checks) and
state (the cache and the next update's voxel state, point hashes sorted); ``untimed`` is the wall
time outside ``total`` (the call itself, the fallback checks).

Models: ``tiny`` (random weights: 3 levels, 8 channels, 2 cm voxels, as the unit tests),
``shipped`` (``models/bqnet_tiny.pth``: 4 levels, 16 channels, 4 cm voxels), or a config file
(random weights from it, e.g. ``config/tiny.yaml``: the shipped sizes without the checkpoint, for a
machine without spaCy together with ``--raw-text``).

``--device cuda`` runs the segmenter there (clean, superpoints of the changed region, backbone and
pooling on the GPU, as its full prepares); every clock read waits for the device first. ``--out``
is rewritten after every map, so a run cut by a timeout keeps what it measured.

Examples::

    OMP_NUM_THREADS=2 python bench/incremental.py --out /tmp/incremental.json
    # GPU machine (tools/device_bench_ingest.sh): the shipped sizes, the 1M map grown by 5 %
    python bench/incremental.py --device cuda --models config/tiny.yaml --raw-text --maps "1M map" --out x.json
    # ... and where the update's time goes: torch.profiler tables of one exact update per map
    python bench/incremental.py --device cuda --models config/tiny.yaml --raw-text --maps "1M map" --profile DIR
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bqnet_model.model.config import load_config  # noqa: E402
from bqnet_model.pipeline import IncrementalParams, Segmenter  # noqa: E402
from bqnet_model.pipeline.change_region import receptive_field  # noqa: E402
from bqnet_model.train.profiling import device_events  # noqa: E402
from bqnet_synth import demo_expressions, demo_room  # noqa: E402

TINY = {
    "model": {
        "backbone": {"media": 8, "levels": 3},
        "decoder": {"d_model": 32, "nhead": 2, "ffn": 64, "num_layers": 2, "fps_num": 32, "num_proposal": 16,
                    "num_proposal_fine": 64, "num_proposal_query": [16, 4], "num_proposal_query_inst": [32, 8]},
    },
}
STRUCTURE = {"floor", "wall", "door", "window", "curtain"}


def grown_map(tiles: int, n_per_tile: int | None, grow: float) -> tuple[Any, np.ndarray, np.ndarray, list[str]]:
    """(xyz, rgb) of the new map, the mask of the old map's rows, and the objects added."""
    room = demo_room(seed=0, n_points=n_per_tile)
    xyz, rgb, inst, tile = [room.xyz], [room.rgb], [room.instance], [np.zeros(len(room.xyz), np.int64)]
    side = int(round(tiles ** 0.5))
    for t in range(1, tiles):
        off = np.array([5.5 * (t % side), 5.5 * (t // side), 0.0], np.float32)
        xyz.append(room.xyz + off)
        rgb.append(room.rgb)
        inst.append(room.instance)
        tile.append(np.full(len(room.xyz), t))
    xyz_a, rgb_a, inst_a, tile_a = (np.concatenate(a) for a in (xyz, rgb, inst, tile))
    last = tile_a == tiles - 1
    sizes = [(int(((inst_a == k) & last).sum()), k) for k, o in enumerate(room.objects) if o.name not in STRUCTURE]
    old = np.ones(len(xyz_a), bool)
    added = []
    for _, k in sorted(sizes, reverse=True):
        if 1.0 - old.mean() >= grow:
            break
        old &= ~((inst_a == k) & last)
        added.append(room.objects[k].name)
    return (xyz_a, rgb_a, room), old, last, added


def best(fn: Any, repeats: int, device: torch.device) -> tuple[Any, float]:
    """(output of the fastest of ``repeats`` calls, its wall time in ms)."""
    out, fastest = None, float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        res = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        ms = (time.perf_counter() - t0) * 1e3
        if ms < fastest:
            out, fastest = res, ms
    return out, fastest


def answers(seg: Segmenter, a: Any, b: Any, texts: list[str]) -> dict[str, Any]:
    ious, same_found = [], 0
    for ra, rb in zip(seg.query(a, texts), seg.query(b, texts)):
        same_found += int(ra.found == rb.found)
        if ra.found and rb.found:
            inter = np.intersect1d(ra.point_indices, rb.point_indices).size
            ious.append(inter / max(1, np.union1d(ra.point_indices, rb.point_indices).size))
    return {"sentences": len(texts), "same_found": same_found, "iou_min": min(ious) if ious else None,
            "iou_mean": float(np.mean(ious)) if ious else None}


def profile_update(seg: Segmenter, base: Any, xyz: np.ndarray, rgb: np.ndarray, path: Path) -> dict[str, float]:
    """One exact update under ``torch.profiler`` (CPU and, on CUDA, kernel time), its op tables written
    to ``path``: by self CPU time (the host's Python, dispatch and synchronisations) and by self device
    time (the kernels). Returns the totals: wall, host ops' self CPU, device kernels, host waits."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if seg.device.type == "cuda" else [])
    if seg.device.type == "cuda":
        torch.cuda.synchronize(seg.device)
    t0 = time.perf_counter()
    with profile(activities=acts, record_shapes=False) as prof:
        up = seg.update(base, xyz, rgb, params=IncrementalParams())
        if seg.device.type == "cuda":
            torch.cuda.synchronize(seg.device)
    wall = (time.perf_counter() - t0) * 1e3
    ka = prof.key_averages()
    kernels = sum(e.self_device_time_total for e in device_events(ka)) / 1e3
    waits = sum(e.self_cpu_time_total for e in ka if "Synchronize" in e.key or e.key == "aten::_local_scalar_dense") / 1e3
    host = sum(e.self_cpu_time_total for e in ka) / 1e3
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.write(f"one exact update, profiled: wall {wall:.1f} ms; stages (unprofiled clock reads) "
                + ", ".join(f"{k} {v:.1f}" for k, v in up.timings_ms.items()) + "\n")
        f.write(f"self CPU of all host ops {host:.1f} ms, of them synchronisations / scalar reads {waits:.1f} ms; "
                f"device kernels {kernels:.1f} ms\n\n== by self CPU time ==\n")
        f.write(ka.table(sort_by="self_cpu_time_total", row_limit=45))
        if seg.device.type == "cuda":
            f.write("\n\n== by self device time ==\n")
            f.write(ka.table(sort_by="self_device_time_total", row_limit=45))
    return {"wall_ms": wall, "host_self_cpu_ms": host, "sync_ms": waits, "kernel_ms": kernels}


def bench(seg: Segmenter, name: str, maps: dict[str, Any], repeats: int,
          done: Callable[[dict[str, Any]], None] = lambda row: None,
          profile_dir: Path | None = None) -> list[dict[str, Any]]:
    """One row per map; ``done`` is called with each finished row (the JSON is rewritten).
    ``profile_dir``: also profile one exact update per map (``profile_update``)."""
    rows = []
    dev = seg.device
    for map_name, ((xyz, rgb, room), old, _, added) in maps.items():
        if dev.type == "cuda":
            seg.prepare(xyz, rgb)  # warm-up: library handles, kernel choices, the allocator's pool
        full, t_full = best(lambda: seg.prepare(xyz, rgb), repeats, dev)
        base = seg.update(None, xyz[old], rgb[old])
        row: dict[str, Any] = {"model": name, "map": map_name, "points": int(len(xyz)),
                               "added_points": int((~old).sum()), "added_fraction": float(1 - old.mean()),
                               "added_objects": added, "voxels": full.n_voxels,
                               "receptive_field_voxels": receptive_field(seg.model.cfg.backbone),
                               "voxel_size": seg.inference.voxel_size, "device": str(dev), "prepare_ms": t_full,
                               "prepare_stages_ms": full.timings_ms, "updates": {}}
        for mode, params in (("exact", IncrementalParams()), ("reach 0", IncrementalParams(feature_reach=0))):
            up, t_up = best(lambda: seg.update(base, xyz, rgb, params=params), repeats, dev)
            untimed = t_up - up.timings_ms.get("total", 0.0)
            r = {"update_ms": t_up, "ratio_to_prepare": t_up / t_full, "stages_ms": up.timings_ms,
                 "untimed_ms": untimed, "info": up.update_info}
            if map_name == "demo room":
                r["answers_vs_prepare"] = answers(seg, up, full, [e.text for e in demo_expressions(room)])
            row["updates"][mode] = r
            print(f"{name:8s} {map_name:10s} {len(xyz):8d} pts  prepare {t_full:8.0f} ms  update[{mode}] "
                  f"{t_up:8.0f} ms  x{t_full / t_up:.2f}  run {up.update_info.get('run_voxels')}/"
                  f"{up.update_info.get('voxels')} voxels  "
                  + ", ".join(f"{k} {v:.1f}" for k, v in up.timings_ms.items()) + f", untimed {untimed:.1f}"
                  + (f"  answers {r['answers_vs_prepare']}" if "answers_vs_prepare" in r else ""), flush=True)
        if profile_dir is not None:
            f = profile_dir / f"{name.replace('.', '_')}_{map_name.replace(' ', '_')}_update.txt"
            row["profile"] = profile_update(seg, base, xyz, rgb, f)
            print(f"{name:8s} {map_name:10s} profile: " + ", ".join(f"{k} {v:.1f}" for k, v in row["profile"].items())
                  + f"  ({f})", flush=True)
        rows.append(row)
        done(row)
    return rows


def build(model: str, device: str, raw_text: bool) -> Segmenter:
    """The segmenter of one ``--models`` entry (module docstring)."""
    if model == "shipped":
        over = {"unknown_object": "answer", "absent_class_points": 0} if raw_text else {}
        seg = Segmenter.from_checkpoint(ROOT / "models" / "bqnet_tiny.pth", device=device, **over)
        if raw_text and seg.model.text_encoder.cfg.official_prep:
            raise SystemExit("--raw-text with the shipped model: its text encoder reads the official parse "
                             "(spaCy); give a config file instead (e.g. config/tiny.yaml)")
        return seg
    if model == "tiny":
        cfg: Any = copy.deepcopy(TINY)
    else:
        if not Path(model).is_file():
            raise SystemExit(f"--models {model!r}: neither tiny, shipped nor a config file")
        cfg = load_config(model)
    if raw_text:  # no spaCy: neither the official parse nor the absent-object checks that parse
        cfg = load_config(cfg)
        cfg.model.text.official_prep = False
        cfg.inference.unknown_object = "answer"
        cfg.inference.absent_class_points = 0
    return Segmenter.from_config(cfg, device=device, seed=0, text_pretrained=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grow", type=float, default=0.05, help="fraction of the new map's points the old lacks")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="the segmenter's device (cpu, cuda)")
    ap.add_argument("--models", nargs="+", default=["tiny", "shipped"],
                    help="tiny, shipped, or config files (random weights)")
    ap.add_argument("--raw-text", action="store_true",
                    help="no official parse and no absent-object checks (a machine without spaCy)")
    ap.add_argument("--maps", nargs="+", default=["demo room", "1M map"], choices=["demo room", "1M map"])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--profile", type=Path, default=None, metavar="DIR",
                    help="also profile one exact update per model and map (torch.profiler tables into DIR)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    maps = {}
    if "demo room" in args.maps:
        maps["demo room"] = grown_map(1, None, args.grow)
    if "1M map" in args.maps:
        maps["1M map"] = grown_map(4, 250_000, args.grow)
    rows: list[dict[str, Any]] = []
    meta = {"date": datetime.date.today().isoformat(), "machine": platform.node(), "threads": args.threads,
            "torch": torch.__version__, "device": args.device,
            "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None}

    def write(_row: dict[str, Any] | None = None) -> None:
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))

    for m in args.models:
        seg = build(m, args.device, args.raw_text)
        seg.cfg.inference.max_points = 2_000_000  # the 1M map is not thinned
        name = m if m in ("tiny", "shipped") else Path(m).name
        bench(seg, name, maps, args.repeats, lambda row: (rows.append(row), write()), args.profile)
    write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
