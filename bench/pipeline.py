#!/usr/bin/env python3
"""Benchmark of the Segmenter: per-stage times of prepare and query, and what the scene cache buys.

For synthetic rooms (``minimal_room``, 5 x 4 x 2.5 m) of the given sizes it measures, as the
median of ``--repeats`` runs after ``--warmup`` runs (CUDA synchronized before every clock read):

* prepare: clean, superpoints, voxelize, backbone, pooling, fps, total;
* query of one sentence: text (the sentence cache is cleared first), decoder, post, total;
* sentences/s (a) cached path: one ``query`` per sentence over the prepared map; (a') the same
  with ``--batch`` sentences per call; (b) recomputing the model per sentence as the original
  code does (backbone + pooling + FPS + query for every sentence; voxelization and superpoints
  reused); the ratio (a)/(b); a repeated sentence (text cache hit);
* peak GPU memory over prepare + queries (CUDA only).

The weights are random (``Segmenter.from_config``): timings do not depend on them.

Examples::

    python bench/pipeline.py --config config/tiny.yaml --device cpu --points 100000
    # GPU machine: no RoBERTa there, so run the paper-size model with MiniLM (text_channels 384)
    python bench/pipeline.py --config config/res.yaml --device cuda --text-encoder minilm \\
        --points 100000 300000 1000000 --out $OUT/bench.json

``--text-encoder`` takes ``minilm``, a hub name or a folder (e.g. the one tools/pack_text_encoder.py
unpacks); ``--random-text-weights`` builds the encoder from its config only (same cost).
``--superpoints grid`` replaces the online oversegmentation (the C++ extension) by 0.25 m grid
cells where the extension is not built; the superpoints stage then measures that instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bqnet_model.data.synthetic import minimal_room  # noqa: E402
from bqnet_model.model.config import load_config  # noqa: E402
from bqnet_model.pipeline import Segmenter  # noqa: E402

COLORS = ["red", "green", "blue", "white", "brown", "black", "grey", "yellow"]
OBJECTS = ["chair", "desk", "table", "cabinet", "lamp", "sofa", "bookshelf", "monitor"]
RELATIONS = ["next to", "left of", "right of", "in front of", "behind", "near", "far from", "across from"]


def sentences(n: int, offset: int = 0) -> list[str]:
    """``n`` distinct referring expressions (so no sentence is served from the text cache)."""
    out = []
    for i in range(offset, offset + n):
        a, b, c = COLORS[i % 8], OBJECTS[(i // 8) % 8], RELATIONS[(i // 64) % 8]
        out.append(f"the {a} {b} {c} the {OBJECTS[(i + 3) % 8]} number {i}")
    return out


def grid_superpoints(xyz: np.ndarray, cell: float = 0.25) -> np.ndarray:
    return np.unique(np.floor(xyz / cell).astype(np.int64), axis=0, return_inverse=True)[1].ravel()


def median_dicts(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, (time.perf_counter() - t0) * 1e3


def bench_size(seg: Segmenter, n_points: int, args: argparse.Namespace) -> dict[str, Any]:
    dev = seg.device
    room = minimal_room(n_points, seed=0)
    sp = grid_superpoints(room.xyz) if args.superpoints == "grid" else None
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    enc = seg.model.text_encoder

    def prepare():
        return seg.prepare(room.xyz, room.rgb, superpoints=sp)

    for _ in range(args.warmup):
        cache = prepare()
    prep_rows = []
    for _ in range(args.repeats):
        cache = prepare()
        prep_rows.append(dict(cache.timings_ms))
    prep = median_dicts(prep_rows)  # with --superpoints grid the labels are given: ~0 ms there

    # (a) cached path, one sentence per call, distinct sentences, text cache cleared
    q_rows, q_wall = [], []
    k = 0
    for i in range(args.warmup + args.repeats):
        enc.clear_cache()
        res, ms = timed(lambda: seg.query(cache, sentences(1, k)), dev)
        k += 1
        if i >= args.warmup:
            q_rows.append(dict(res[0].timings_ms))
            q_wall.append(ms)
    query = median_dicts(q_rows)
    single_ms = statistics.median(q_wall)

    # (a') batched: --batch sentences per call
    b_wall = []
    for i in range(args.warmup + args.repeats):
        enc.clear_cache()
        _, ms = timed(lambda: seg.query(cache, sentences(args.batch, 1000 + i * args.batch)), dev)
        if i >= args.warmup:
            b_wall.append(ms)
    batch_ms = statistics.median(b_wall)

    # repeated sentence: text cache hit
    seg.query(cache, "the red chair next to the desk")
    rep_wall = [timed(lambda: seg.query(cache, "the red chair next to the desk"), dev)[1] for _ in range(args.repeats)]
    repeat_ms = statistics.median(rep_wall)

    # (b) recompute the scene encoding for every sentence (voxelization + superpoints reused)
    from bqnet_model.model.inputs import collate_scenes, scene_inputs

    si = scene_inputs(cache.point_xyz, room.rgb[cache.point_index], cache.point_superpoint, seg.inference.voxel_size)
    batch = collate_scenes([si])

    def recompute(text: str):
        with torch.inference_mode(), seg._autocast():
            scene = seg.model.encode_scene(batch)
        return seg.query(dataclasses.replace(cache, scene=scene), text)

    r_wall = []
    for i in range(args.warmup + args.repeats):
        enc.clear_cache()
        _, ms = timed(lambda: recompute(sentences(1, 5000 + i)[0]), dev)
        if i >= args.warmup:
            r_wall.append(ms)
    recompute_ms = statistics.median(r_wall)

    out = {
        "points": n_points,
        "points_kept": cache.n_points,
        "voxels": cache.n_voxels,
        "superpoints": cache.n_superpoints,
        "prepare_ms": prep,
        "query_ms": query,
        "query_wall_ms": single_ms,
        "sentences_per_s_cached": 1e3 / single_ms,
        f"sentences_per_s_cached_batch{args.batch}": args.batch * 1e3 / batch_ms,
        "sentences_per_s_recompute": 1e3 / recompute_ms,
        "speedup_cached_vs_recompute": recompute_ms / single_ms,
        "repeated_sentence_ms": repeat_ms,
    }
    if dev.type == "cuda":
        out["peak_gpu_mem_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return out


def report(r: dict[str, Any], batch: int) -> str:
    p, q = r["prepare_ms"], r["query_ms"]
    lines = [
        f"== {r['points']:,} points ({r['points_kept']:,} kept, {r['voxels']:,} voxels, {r['superpoints']:,} superpoints)",
        "  prepare ms: " + ", ".join(f"{k} {p[k]:.1f}" for k in
                                     ("clean", "superpoints", "voxelize", "backbone", "pooling", "fps", "total") if k in p),
        "  query ms (1 sentence, text not cached): " + ", ".join(f"{k} {q[k]:.1f}" for k in ("text", "decoder", "post", "total")),
        f"  sentences/s: cached {r['sentences_per_s_cached']:.1f}, cached x{batch} per call "
        f"{r[f'sentences_per_s_cached_batch{batch}']:.1f}, recompute per sentence {r['sentences_per_s_recompute']:.1f}"
        f"  -> cached/recompute {r['speedup_cached_vs_recompute']:.1f}x",
        f"  repeated sentence (text cache hit): {r['repeated_sentence_ms']:.1f} ms",
    ]
    if "peak_gpu_mem_mib" in r:
        lines.append(f"  peak GPU memory: {r['peak_gpu_mem_mib']:.0f} MiB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    ap.add_argument("--config", default=str(ROOT / "config" / "tiny.yaml"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--text-encoder", default=None, help="override model.text.encoder (e.g. minilm or a folder)")
    ap.add_argument("--random-text-weights", action="store_true", help="text encoder from its config only")
    ap.add_argument("--superpoints", choices=["online", "grid"], default="online")
    ap.add_argument("--amp", action="store_true", help="float16 autocast on CUDA")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16, help="sentences per call for the batched throughput")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.batch < 1:
        ap.error("--repeats and --batch must be >= 1, --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = load_config(args.config)
    if args.text_encoder:
        cfg.model.text.encoder = args.text_encoder
    cfg.inference.amp = bool(args.amp)
    cfg.inference.max_points = max(cfg.inference.max_points, max(args.points))
    if args.superpoints == "online":
        try:
            from bqnet_model.superpoints import oversegment  # noqa: F401
            from bqnet_model import _C  # noqa: F401
        except ImportError as exc:
            ap.error(f"online superpoints need the built C++ extension ({exc}); build it with "
                     "`python setup.py build_ext --inplace` or pass --superpoints grid")
    seg = Segmenter.from_config(cfg, device=args.device, seed=args.seed, text_pretrained=not args.random_text_weights)
    dev = seg.device
    d = seg.cfg.model.decoder
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    head = (f"bqnet pipeline benchmark: {Path(args.config).name}, device {dev} ({gpu}), amp {args.amp}, "
            f"text encoder {seg.cfg.model.text.encoder} ({d.text_channels}-d"
            f"{', random weights' if args.random_text_weights else ''}), media {seg.cfg.model.backbone.media}, "
            f"d_model {d.d_model}, {d.num_layers} layers, fps {d.fps_num}, {d.num_proposal} queries, "
            f"superpoints {args.superpoints}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(head, flush=True)
    results = []
    for n in args.points:
        r = bench_size(seg, n, args)
        results.append(r)
        print(report(r, args.batch), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"setup": head, "args": vars(args), "results": results}, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
