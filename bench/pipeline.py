#!/usr/bin/env python3
"""Benchmark of the Segmenter with every speed lever side by side, in one process.

For synthetic rooms (``minimal_room``, 5 x 4 x 2.5 m) of the given sizes, with one model (random
weights: timings do not depend on them), as medians of ``--repeats`` runs after ``--warmup`` runs
(CUDA synchronized before every clock read):

* prepare (clean and voxelize with torch ops on the device, then the superpoints): clean,
  superpoints, voxelize, backbone, pooling, fps, total, peak GPU memory. The numpy ingest and the
  superpoint worker thread were removed after this bench measured them slower
  (``docs/benchmarks.md``). Which superpoint table each prepare built (``sp_table``: ``device`` when
  the GPU port's labels were tabled on the GPU, else ``numpy``); ``--numpy-table`` adds a prepare
  with the numpy table forced, for the side by side;
* query, one row per decoder variant (``--variants`` picks some): ``eager fp32`` (baseline),
  ``eager fp16`` / ``eager bf16`` (autocast; CUDA only), ``cuda graph fp32`` / ``cuda graph bf16``
  (``inference.cuda_graph``, the text encoder replayed too), ``cuda graph fp32, eager text``
  (``inference.cuda_graph_text`` off; CUDA only), ``cuda graph bf16 compiled`` (``inference.compile_decoder``:
  the captured decoder compiled by ``torch.compile`` first; only when ``--variants`` names it): text (sentence cache cleared first), decoder, post,
  total for one new sentence per call; sentences/s with 1 and with ``--batch`` new sentences per call; a repeated
  sentence (text cache hit); peak GPU memory; the ratio to recomputing; for graph variants the first call
  of each phase and the time spent capturing (compiles included), and each compiled variant against its
  uncompiled twin (decoder, sentence, batch, capture, vs the naive node), with ratios;
* recompute: the whole model per sentence (backbone + pooling + FPS + text + decoder + post, the
  voxelized batch reused), eager fp32, as the original code answers one sentence;
* checks: on CUDA the eager decoder under
  ``torch.cuda.set_sync_debug_mode('error')`` (no host sync?), and CUDA-graph answers against
  eager ones on the same sentences.

Each variant runs inside its own try/except: a failing lever is printed as FAILED with its error
and the benchmark goes on. The CUDA-graph variants run in a second pass, after every eager
measurement of every size, so that even a capture that breaks the CUDA context costs nothing else. ``--out`` writes everything as JSON (date, machine, versions, git
commit); ``bench/plot_pipeline.py`` draws it. The measurements live in ``bench/pipeline_measure.py``,
the checks in ``bench/pipeline_checks.py``, the printing and the run metadata in ``bench/pipeline_report.py``.

Examples::

    python bench/pipeline.py --config config/tiny.yaml --device cpu --points 100000
    # GPU machine (tools/device_bench.sh does this): paper-size model with MiniLM
    python bench/pipeline.py --config config/res.yaml --device cuda --text-encoder minilm \\
        --points 100000 300000 1000000 --out $OUT/bench_res.json

``--text-encoder`` takes ``minilm``, a hub name or a folder; ``--random-text-weights`` builds the
encoder from its config only (same cost). ``--superpoints grid`` replaces the online
oversegmentation (the C++ extension) by 0.25 m grid cells where the extension is not built.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import gc
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import torch  # noqa: E402

from bqnet_synth import minimal_room  # noqa: E402
from bqnet_model.model.config import load_config  # noqa: E402
from bqnet_model.pipeline import Segmenter  # noqa: E402
from pipeline_checks import check_graph_matches_eager, check_sync_free, superpoint_stages  # noqa: E402
from pipeline_measure import (bench_prepare, bench_queries, bench_recompute, grid_superpoints, reset_peak,  # noqa: E402
                              sentences)
from pipeline_report import git_commit, header_lines, machine, report_prepare, report_query, versions  # noqa: E402

INGEST_VARIANTS: list[tuple[str, dict[str, Any]]] = [("torch ingest", {})]
NUMPY_TABLE = "torch ingest, numpy sp table"  # --numpy-table: the superpoint table on the host (measured first)
FPS_LOOP = "torch ingest, torch FPS loop"  # --fps-loop: inference.fps_cuda_kernel off (CUDA only; measured first)
DECODER_VARIANTS: list[tuple[str, dict[str, Any], bool]] = [  # name, inference overrides, CUDA only
    ("eager fp32", {"amp": False, "cuda_graph": False}, False),
    ("eager fp16", {"amp": True, "amp_dtype": "float16", "cuda_graph": False}, True),
    ("eager bf16", {"amp": True, "amp_dtype": "bfloat16", "cuda_graph": False}, True),
    ("cuda graph fp32", {"amp": False, "cuda_graph": True}, True),
    ("cuda graph fp32, eager text", {"amp": False, "cuda_graph": True, "cuda_graph_text": False}, True),
    ("cuda graph bf16", {"amp": True, "amp_dtype": "bfloat16", "cuda_graph": True}, True),
    ("cuda graph bf16 compiled", {"amp": True, "amp_dtype": "bfloat16", "cuda_graph": True, "compile_decoder": True}, True),
]
COMPILED = " compiled"  # a variant named "<twin> compiled" is compared with "<twin>"
# measured only when --variants names them: a compiled variant compiles before its first captures
OPT_IN = {"cuda graph bf16 compiled"}


def guarded(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one variant; a failure becomes ``{"error": ...}`` (printed) and the bench goes on."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - every lever must fail alone
        msg = f"{type(exc).__name__}: {exc}".strip()
        print(f"  !! {name} FAILED: {msg.splitlines()[0] if msg else type(exc).__name__}", flush=True)
        traceback.print_exc(limit=6, file=sys.stdout)
        return {"error": msg[:2000]}


def variant(base: Segmenter, **overrides: Any) -> Segmenter:
    """A Segmenter sharing ``base``'s model with other inference settings (no weight copies)."""
    cfg = copy.copy(base.cfg)
    cfg.inference = dataclasses.replace(base.cfg.inference, **overrides)
    return Segmenter(base.model, cfg, base.device)


def with_variant(base: Segmenter, overrides: dict[str, Any], fn: Callable[[Segmenter], dict[str, Any]]) -> dict[str, Any]:
    """``fn`` on a variant, then free what the variant holds (graph pools, worker thread) so the
    next variant's peak memory is its own."""
    seg = variant(base, **overrides)
    try:
        return fn(seg)
    finally:
        seg.close()
        gc.collect()
        if seg.device.type == "cuda":
            torch.cuda.empty_cache()


# ---------------------------------------------------------------------- one map size


def _wanted(name: str, args: argparse.Namespace) -> bool:
    """Whether this run measures the query variant ``name`` (``--variants``, else all but ``OPT_IN``)."""
    return name in args.variants if args.variants else name not in OPT_IN


def _is_graph(kw: dict[str, Any]) -> bool:
    return bool(kw.get("cuda_graph"))


def _ratios(result: dict[str, Any], args: argparse.Namespace) -> None:
    """cached vs recompute for every query variant measured so far (printed once per phase)."""
    rec = result.get("recompute", {})
    if "wall_ms" not in rec:
        return
    prep_best = min((v["stages_ms"]["total"] for v in result["prepare"].values() if "stages_ms" in v), default=None)
    for r in result["query"].values():
        if "wall_ms" in r:
            r["cached_vs_recompute"] = rec["wall_ms"] / r["wall_ms"]
            r["cached_batch_vs_recompute"] = r["sentences_per_s_batch"] / rec["sentences_per_s"]
            if prep_best is not None:  # a full prepare + query per sentence (sum of the medians)
                r["cached_vs_prepare_each_time"] = (prep_best + r["wall_ms"]) / r["wall_ms"]
    ratios = ", ".join(
        f"{k} {v['cached_vs_recompute']:.1f}x / x{args.batch} {v['cached_batch_vs_recompute']:.1f}x"
        + (f" / vs prepare+query {v['cached_vs_prepare_each_time']:.1f}x" if "cached_vs_prepare_each_time" in v else "")
        for k, v in result["query"].items() if "cached_vs_recompute" in v)
    print(f"  cached throughput vs recompute (1 per call / {args.batch} per call / vs a full prepare + query "
          f"per sentence): {ratios}", flush=True)


def _baselines(result: dict[str, Any]) -> tuple[float | None, float | None]:
    """(baseline prepare, eager fp32 query) of one size in ms: the prepare of the slowest path
    measured (the FPS loop when it ran); None where it is missing."""
    prep = {k: v["stages_ms"]["total"] for k, v in result.get("prepare", {}).items() if "stages_ms" in v}
    base_p = prep.get(FPS_LOOP, prep.get(INGEST_VARIANTS[0][0]))
    return base_p, result.get("query", {}).get(DECODER_VARIANTS[0][0], {}).get("wall_ms")


def _naive_ms(result: dict[str, Any]) -> float | None:
    """The naive node's time per sentence: a baseline prepare plus an eager fp32 query."""
    base_p, base_q = _baselines(result)
    return None if base_p is None or base_q is None else base_p + base_q


def _compiled_vs_uncompiled(result: dict[str, Any], args: argparse.Namespace) -> None:
    """Each measured compiled variant against its uncompiled twin: [uncompiled, compiled] and the
    ratio uncompiled / compiled (> 1: compiling is faster) of the decoder stage, the sentence, a
    sentence of a ``--batch`` call, the naive node's speed-up; and the capture time (compiles included)."""
    q, naive = result["query"], _naive_ms(result)
    out = {}
    for name, r in q.items():
        twin = q.get(name[: -len(COMPILED)], {}) if name.endswith(COMPILED) else {}
        if "wall_ms" not in r or "wall_ms" not in twin:
            continue
        pair = {"decoder_ms": [twin["stages_ms"]["decoder"], r["stages_ms"]["decoder"]],
                "sentence_ms": [twin["wall_ms"], r["wall_ms"]],
                "batch_ms_per_sentence": [twin["batch_wall_ms"] / args.batch, r["batch_wall_ms"] / args.batch]}
        c = {k: {"ms": v, "ratio": v[0] / v[1]} for k, v in pair.items()}
        if naive is not None:
            c["vs_naive"] = [naive / twin["wall_ms"], naive / r["wall_ms"]]
        c["capture_s"] = [twin["graph"]["capture_ms"] / 1e3, r["graph"]["capture_ms"] / 1e3]
        c["compiled_graphs"] = r["graph"].get("compiled", 0)
        out[name] = c
        print(f"  {name} vs {name[: -len(COMPILED)]}: "
              + ", ".join(f"{k} {v['ms'][0]:.2f} -> {v['ms'][1]:.2f} ({v['ratio']:.2f}x)" for k, v in c.items()
                          if isinstance(v, dict))
              + (f"; vs naive {c['vs_naive'][0]:.1f}x -> {c['vs_naive'][1]:.1f}x" if "vs_naive" in c else "")
              + f"; capture {c['capture_s'][0]:.1f} -> {c['capture_s'][1]:.1f} s for {r['graph']['captures']} graphs "
              f"({c['compiled_graphs']} compiled)", flush=True)
    if out:
        result["compiled_vs_uncompiled"] = out


def _peak(result: dict[str, Any]) -> None:
    runs = list(result["prepare"].values()) + list(result["query"].values()) + [result.get("recompute", {})]
    peaks = [r.get("peak_alloc_mib") for r in runs if isinstance(r.get("peak_alloc_mib"), (int, float))]
    if peaks:
        result["peak_alloc_mib_any_variant"] = max(peaks)


def bench_size(base: Segmenter, n_points: int, args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    """Phase 1 of one size: every ingest variant, the eager decoder variants, recompute, the
    sync check. Returns the result and the prepared cache for phase 2 (None if none worked)."""
    dev = base.device
    room = minimal_room(n_points, seed=0)
    sp = grid_superpoints(room.xyz) if args.superpoints == "grid" else None
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    reset_peak(dev)
    result: dict[str, Any] = {"points": n_points, "prepare": {}, "query": {}, "checks": {}}

    cache = None
    caches = {}
    ingest = ([(NUMPY_TABLE, {})] if args.numpy_table and sp is None else []) + INGEST_VARIANTS
    if args.fps_loop and dev.type == "cuda":  # first: the default (the kernel) then serves the queries
        ingest = [(FPS_LOOP, {"fps_cuda_kernel": False})] + ingest
    for name, kw in ingest:
        r = guarded(f"prepare / {name}", lambda: with_variant(
            base, kw, lambda s: bench_prepare(s, room, sp, args, numpy_table=name == NUMPY_TABLE)))
        c = r.pop("_cache", None)
        if c is not None:
            cache = c  # the last working variant (the fastest path) serves the queries
            caches[name] = c
            result.setdefault("points_kept", c.n_points)
            result.setdefault("voxels", c.n_voxels)
            result.setdefault("superpoints", c.n_superpoints)
        result["prepare"][name] = r
        print(report_prepare(name, r), flush=True)
    if cache is None:
        return result, None
    C_img = base.model.cfg.decoder.image_channels
    if C_img:  # the 2D branch runs as with real features: random per-superpoint ones (timings only)
        g = torch.Generator(device="cpu").manual_seed(0)
        cache.scene.image_feats = torch.randn((1, cache.n_superpoints, C_img), generator=g).to(dev)
    if sp is None:
        result["superpoint_stages"] = guarded("superpoint stages", lambda: superpoint_stages(base, cache, room))
        st = result["superpoint_stages"]
        if "timings_ms" in st:
            print(f"  superpoints ({st['where']}, median of 3): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in st["timings_ms"].items()), flush=True)

    for j, (name, kw, cuda_only) in enumerate(DECODER_VARIANTS):
        if not _wanted(name, args):
            continue
        if cuda_only and dev.type != "cuda":
            result["query"][name] = {"skipped": "CUDA only"}
            continue
        if _is_graph(kw):
            result["query"][name] = {"pending": "phase 2"}
            continue
        r = guarded(f"query / {name}",
                    lambda: with_variant(base, kw, lambda s: bench_queries(s, cache, args, 100_000 * (j + 1))))
        result["query"][name] = r
        print(report_query(name, r, args.batch), flush=True)

    rec = guarded("recompute", lambda: with_variant(base, {"amp": False, "cuda_graph": False},
                                                    lambda s: bench_recompute(s, cache, room, args)))
    result["recompute"] = rec
    if "wall_ms" in rec:
        print(f"  recompute the whole model per sentence (eager fp32): {rec['wall_ms']:.1f} ms "
              f"= {rec['sentences_per_s']:.1f} sentences/s"
              + (f", peak {rec['peak_alloc_mib']:.0f} MiB" if "peak_alloc_mib" in rec else ""), flush=True)
    _ratios(result, args)
    eager = variant(base, amp=False, cuda_graph=False)
    result["checks"]["sync_free_decoder"] = guarded("check / sync-free decoder", lambda: check_sync_free(eager, cache, sentences(2, 90_000)))
    print(f"  check sync_free_decoder: {json.dumps(result['checks']['sync_free_decoder'])}", flush=True)
    _peak(result)
    return result, cache


def bench_size_graphs(base: Segmenter, result: dict[str, Any], cache: Any, args: argparse.Namespace) -> None:
    """Phase 2 of one size: the CUDA-graph variants and graph-vs-eager answers. Run after every
    eager measurement of every size, so a capture that goes wrong cannot cost the other numbers."""
    dev = base.device
    overrides = {name: kw for name, kw, _ in DECODER_VARIANTS}

    def measure(s: Segmenter, name: str, offset: int) -> dict[str, Any]:
        r = bench_queries(s, cache, args, offset)
        twin = name[: -len(COMPILED)] if name.endswith(COMPILED) else None
        if twin in overrides:  # the compiled graph's answers against its uncompiled twin's, on a sentence
            # whose graph key is already captured (the first one timed), so that no compile is added
            r["check_vs_uncompiled"] = guarded(f"check / {name} vs {twin}", lambda: with_variant(
                base, overrides[twin], lambda u: check_graph_matches_eager(u, s, cache, sentences(1, offset))))
            print(f"  check {name} vs {twin}: {json.dumps(r['check_vs_uncompiled'])}", flush=True)
        return r

    for j, (name, kw, cuda_only) in enumerate(DECODER_VARIANTS):
        if not _is_graph(kw) or (cuda_only and dev.type != "cuda") or not _wanted(name, args):
            continue
        r = guarded(f"query / {name}",
                    lambda: with_variant(base, kw, lambda s: measure(s, name, 100_000 * (j + 1))))
        result["query"][name] = r
        print(report_query(name, r, args.batch), flush=True)
    _ratios(result, args)
    _compiled_vs_uncompiled(result, args)
    eager = variant(base, amp=False, cuda_graph=False)
    result["checks"]["graph_vs_eager"] = guarded(
        "check / graph vs eager",
        lambda: with_variant(base, {"amp": False, "cuda_graph": True},
                             lambda g: check_graph_matches_eager(eager, g, cache, sentences(min(args.batch, 8), 95_000))))
    print(f"  check graph_vs_eager: {json.dumps(result['checks']['graph_vs_eager'])}", flush=True)
    _peak(result)


# ---------------------------------------------------------------------- printing
def summary_table(results: list[dict[str, Any]]) -> str:
    """One line per size: the baseline vs the best of the levers, against the speed targets."""
    lines = ["", "summary (baseline -> best lever; vs naive: a baseline prepare + eager fp32 query per sentence against "
             "the best cached query; peak GPU memory of any variant, and of the map plus one sentence with the best "
             "query variant)"]
    for r in results:
        prep = {k: v["stages_ms"]["total"] for k, v in r.get("prepare", {}).items() if "stages_ms" in v}
        q = {k: v for k, v in r.get("query", {}).items() if "wall_ms" in v}
        if not prep or not q:
            lines.append(f"  {r['points']:>9,} points: incomplete (see FAILED above)")
            continue
        bp = min(prep, key=prep.get)
        bq = min(q, key=lambda k: q[k]["wall_ms"])
        base_p, base_q = _baselines(r)
        ratio = q[bq].get("cached_vs_recompute")
        ratio_b = q[bq].get("cached_batch_vs_recompute")
        mem = r.get("peak_alloc_mib_any_variant")
        # the naive node against the best cached query
        naive_ms = _naive_ms(r)
        naive = None if naive_ms is None else naive_ms / q[bq]["wall_ms"]
        mem1 = q[bq].get("peak_alloc_mib_1")
        lines.append(
            f"  {r['points']:>9,} points: prepare {base_p if base_p is None else round(base_p, 1)} -> {prep[bp]:.1f} ms "
            f"({bp}); sentence {base_q if base_q is None else round(base_q, 1)} -> {q[bq]['wall_ms']:.1f} ms ({bq}); "
            f"cached/recompute {ratio if ratio is None else round(ratio, 1)}x "
            f"(batched {ratio_b if ratio_b is None else round(ratio_b, 1)}x)"
            + (f"; vs naive {naive:.1f}x" if naive else "")
            + (f"; peak GPU {mem:.0f} MiB" if mem else "") + (f" (1 sentence {mem1:.0f} MiB)" if mem1 else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    ap.add_argument("--config", default=str(ROOT / "config" / "tiny.yaml"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--text-encoder", default=None, help="override model.text.encoder (e.g. minilm or a folder)")
    ap.add_argument("--random-text-weights", action="store_true", help="text encoder from its config only")
    ap.add_argument("--superpoints", choices=["online", "grid"], default="online")
    ap.add_argument("--repeats", type=int, default=7, help="timed query runs per variant (median)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed query runs first")
    ap.add_argument("--raw-text", action="store_true",
                    help="encode the sentences as given, without the official parse (text.official_prep false) "
                         "and without the absent-object checks that parse it (for a machine without spaCy)")
    ap.add_argument("--prepare-repeats", type=int, default=3, help="timed prepare runs per ingest variant")
    ap.add_argument("--prepare-warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16, help="sentences per call for the batched throughput")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", nargs="+", default=None, choices=[v[0] for v in DECODER_VARIANTS],
                    help=f"query variants to measure (default: all but {sorted(OPT_IN)}, which compile first)")
    ap.add_argument("--numpy-table", action="store_true",
                    help="also prepare with the superpoint table built by numpy on the host (the labels copied "
                         "back) before the default path, which builds it on the GPU when the GPU port made the labels")
    ap.add_argument("--fps-loop", action="store_true",
                    help="also prepare with the torch FPS loop (inference.fps_cuda_kernel false) before the default "
                         "path, which runs the CUDA FPS kernel; CUDA only")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    if min(args.repeats, args.prepare_repeats, args.batch) < 1 or min(args.warmup, args.prepare_warmup) < 0:
        ap.error("--repeats, --prepare-repeats and --batch must be >= 1, warm-ups >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = load_config(args.config)
    if args.text_encoder:
        cfg.model.text.encoder = args.text_encoder
    if args.raw_text:  # no spaCy on the GPU machine: the parse is a per-new-sentence CPU cost, timed apart
        cfg.model.text.official_prep = False
        # the absent-object checks parse the sentence too (the same CPU cost): off with the parse
        cfg.inference.unknown_object = "answer"
        cfg.inference.absent_class_points = 0
    cfg.inference.max_points = max(cfg.inference.max_points, max(args.points))
    cfg.inference.text_chunk = max(cfg.inference.text_chunk, args.batch)
    if args.superpoints == "online":
        try:
            from bqnet_model import _C  # noqa: F401
        except ImportError as exc:
            ap.error(f"online superpoints need the built C++ extension ({exc}); build it with "
                     "`python setup.py build_ext --inplace` or pass --superpoints grid")
    t0 = time.perf_counter()
    base = Segmenter.from_config(cfg, device=args.device, seed=args.seed, text_pretrained=not args.random_text_weights)
    dev = base.device
    d = base.cfg.model.decoder
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(dev),
        "versions": versions(),
        "git": git_commit(),
        "config": Path(args.config).name,
        "model": {"text_encoder": base.cfg.model.text.encoder, "text_channels": d.text_channels,
                  "media": base.cfg.model.backbone.media, "levels": base.cfg.model.backbone.levels,
                  "d_model": d.d_model, "layers": d.num_layers, "fps": d.fps_num, "queries": d.num_proposal,
                  "num_proposal_fine": d.num_proposal_fine, "image_channels": d.image_channels, "cfr": d.cfr, "psc": d.psc, "dqf": d.dqf},
        "device": str(dev),
    }
    print(f"bqnet pipeline benchmark {meta['date']}: {meta['config']} on {dev} ({meta['machine']['gpu'] or meta['machine']['cpu']}), "
          f"{meta['machine']['cpu_count']} CPUs, torch {meta['versions']['torch']}, spconv {meta['versions']['spconv']}, "
          f"git {meta['git']['commit'][:10]}{'+dirty' if meta['git']['dirty'] else ''}; model {json.dumps(meta['model'])}; "
          f"superpoints {args.superpoints}; medians of {args.repeats} query / {args.prepare_repeats} prepare runs "
          f"after {args.warmup} / {args.prepare_warmup} warm-ups; model built in {time.perf_counter() - t0:.1f} s",
          flush=True)
    results: list[dict[str, Any]] = []

    def write() -> None:  # after every size: a run cut by a timeout keeps what it measured
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({**meta, "args": vars(args), "results": results}, indent=1, default=str))

    caches: list[Any] = []
    for n in args.points:
        print(f"== {n:,} points", flush=True)
        for line in header_lines(args.batch, dev.type == "cuda"):
            print(line)
        out = guarded(f"{n} points", lambda: dict(zip(("result", "cache"), bench_size(base, n, args))))
        r = out.get("result") or {"error": out.get("error", "?")}
        r.setdefault("points", n)
        if "superpoints" in r:
            print(f"  ({r.get('points_kept', 0):,} points kept, {r.get('voxels', 0):,} voxels, "
                  f"{r['superpoints']:,} superpoints)", flush=True)
        results.append(r)
        caches.append(out.get("cache"))
        write()
    if dev.type == "cuda" and any(_is_graph(kw) for _, kw, _ in DECODER_VARIANTS):
        print("== phase 2: CUDA graph variants (after every eager measurement)", flush=True)
        for r, cache in zip(results, caches):
            if cache is None:
                continue
            print(f"== {r['points']:,} points, CUDA graphs", flush=True)
            guarded(f"{r['points']} points, graphs", lambda: bench_size_graphs(base, r, cache, args) or {})
            write()
    caches.clear()
    print(summary_table(results), flush=True)
    print(f"total benchmark time {time.perf_counter() - t0:.0f} s", flush=True)
    if args.out:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
