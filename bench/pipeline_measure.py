"""The measurements of ``bench/pipeline.py``: the timed prepare, the timed queries (one and
``--batch`` new sentences per call, each phase's peak GPU memory apart, the first call of each phase
timed apart: it captures, and compiles, the graphs), the whole-model recompute,
and what they need (clocks that wait for the device, peak-memory counters, the sentences).
``bench/pipeline.py`` runs them per lever variant and map size."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import time
from typing import Any, Callable, Iterator

import numpy as np
import torch

from bqnet_model.pipeline import Segmenter
from pipeline_checks import median_dicts

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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, (time.perf_counter() - t0) * 1e3


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> dict[str, float]:
    if device.type != "cuda":
        return {}
    return {"peak_alloc_mib": torch.cuda.max_memory_allocated(device) / 2**20,
            "peak_reserved_mib": torch.cuda.max_memory_reserved(device) / 2**20}



# ---------------------------------------------------------------------- prepare, queries, recompute
@contextlib.contextmanager
def superpoint_table_probe(numpy_table: bool) -> Iterator[list[bool]]:
    """Records, per prepare, whether its superpoint table was built on the device
    (``superpoint_table.table_on_device``, used when the GPU port made the labels); ``numpy_table``
    refuses the device table so that the numpy one is built from the labels copied to the host."""
    import bqnet_model.pipeline.superpoint_table as st

    real, built = st.table_on_device, []

    def probe(labels: torch.Tensor, xyz: torch.Tensor) -> Any:
        out = None if numpy_table else real(labels, xyz)
        built.append(out is not None)
        return out

    st.table_on_device = probe
    try:
        yield built
    finally:
        st.table_on_device = real


def bench_prepare(seg: Segmenter, room: Any, sp: np.ndarray | None, args: argparse.Namespace,
                  numpy_table: bool = False) -> dict[str, Any]:
    dev = seg.device
    with superpoint_table_probe(numpy_table) as built:
        for _ in range(args.prepare_warmup):
            seg.prepare(room.xyz, room.rgb, superpoints=sp)
        reset_peak(dev)
        rows, walls = [], []
        cache = None
        built.clear()
        for _ in range(args.prepare_repeats):
            cache, ms = timed(lambda: seg.prepare(room.xyz, room.rgb, superpoints=sp), dev)
            rows.append(dict(cache.timings_ms))
            walls.append(ms)
    out: dict[str, Any] = {"stages_ms": median_dicts(rows), "wall_ms": statistics.median(walls), **peak_mib(dev),
                           "sp_table": "device" if built and all(built) else "numpy"}
    out["_cache"] = cache
    return out


def bench_queries(seg: Segmenter, cache: Any, args: argparse.Namespace, offset: int) -> dict[str, Any]:
    dev = seg.device
    enc = seg.model.text_encoder
    reset_peak(dev)
    rows, walls, first = [], [], {}
    k = offset
    for i in range(args.warmup + args.repeats):  # one new sentence per call, text cache cleared
        enc.clear_cache()
        res, ms = timed(lambda: seg.query(cache, sentences(1, k)), dev)
        k += 1
        if i == 0:  # the first call also captures its graphs (and compiles them, with compile_decoder)
            first["first_call_ms"] = ms
        if i >= args.warmup:
            rows.append(dict(res[0].timings_ms))
            walls.append(ms)
    single_ms = statistics.median(walls)
    peak_single = peak_mib(dev)  # the map and one sentence: what a node answering one at a time needs
    reset_peak(dev)
    b_walls = []
    for i in range(args.warmup + args.repeats):  # --batch new sentences per call
        enc.clear_cache()
        _, ms = timed(lambda: seg.query(cache, sentences(args.batch, offset + 10_000 + i * args.batch)), dev)
        if i == 0:
            first["first_batch_call_ms"] = ms
        if i >= args.warmup:
            b_walls.append(ms)
    batch_ms = statistics.median(b_walls)
    peak_batch = peak_mib(dev)
    fixed = "the red chair next to the desk"
    seg.query(cache, fixed)
    rep = [timed(lambda: seg.query(cache, fixed), dev)[1] for _ in range(args.repeats)]
    out = {
        "stages_ms": median_dicts(rows),
        "wall_ms": single_ms,
        "sentences_per_s_1": 1e3 / single_ms,
        "batch": args.batch,
        "batch_wall_ms": batch_ms,
        "sentences_per_s_batch": args.batch * 1e3 / batch_ms,
        "repeated_sentence_ms": statistics.median(rep),
        "graph": seg.graph_stats,
        "text_graph": seg.text_graph_stats,
        **first,
        **{k: max(peak_single.get(k, 0.0), peak_batch.get(k, 0.0), v) for k, v in peak_mib(dev).items()},
        **{f"{k}_1": v for k, v in peak_single.items()},
        **{f"{k}_batch": v for k, v in peak_batch.items()},
    }
    if seg._graphs is not None and seg._graphs.failures:
        out["graph_failures"] = {str(k): v for k, v in seg._graphs.failures.items()}
    if seg._text_graphs is not None and seg._text_graphs.failures:
        out["text_graph_failures"] = {str(k): v for k, v in seg._text_graphs.failures.items()}
    return out


def bench_recompute(seg: Segmenter, cache: Any, room: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The whole model per sentence (eager fp32): backbone + pooling + FPS + query."""
    from bqnet_model.model.inputs import collate_scenes, scene_inputs

    dev = seg.device
    si = scene_inputs(cache.point_xyz, room.rgb[cache.point_index], cache.point_superpoint, seg.inference.voxel_size)
    batch = collate_scenes([si])
    enc = seg.model.text_encoder

    def recompute(text: str) -> Any:
        with torch.inference_mode(), seg._autocast():
            scene = seg.model.encode_scene(batch)
        return seg.query(dataclasses.replace(cache, scene=scene), text)

    reset_peak(dev)
    walls = []
    for i in range(args.warmup + args.repeats):
        enc.clear_cache()
        _, ms = timed(lambda: recompute(sentences(1, 50_000 + i)[0]), dev)
        if i >= args.warmup:
            walls.append(ms)
    ms = statistics.median(walls)
    return {"wall_ms": ms, "sentences_per_s": 1e3 / ms, **peak_mib(dev)}
