"""The checks and the superpoint breakdown of ``bench/pipeline.py``: the eager decoder free of host
syncs, CUDA-graph answers and word features against eager ones, where the oversegmentation spends its time."""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np
import torch

from bqnet_model.pipeline import Segmenter
from bqnet_model.pipeline.summary import unpack_summary


def median_dicts(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = [k for k in rows[0] if all(k in r for r in rows)]
    return {k: statistics.median(r[k] for r in rows) for k in keys}


def superpoint_stages(seg: Segmenter, cache: Any, room: Any) -> dict[str, Any]:
    """Where the oversegmentation spends its time, on the device prepare runs it on (the CPU kernels,
    or the GPU port on CUDA when ``bqnet_model._C_cuda`` is built): prepare's critical path."""
    from bqnet_model.superpoints import oversegment_detailed
    from bqnet_model.superpoints_cuda import extension

    threads = seg.inference.superpoint_threads or torch.get_num_threads()
    rgb = room.rgb[cache.point_index]
    on_gpu = seg.device.type == "cuda" and extension() is not None
    runs = [oversegment_detailed(cache.point_xyz, rgb, params=seg.inference.superpoints, num_threads=threads,
                                 device=seg.device) for _ in range(3)]
    return {"threads": threads, "where": "GPU (csrc/cuda)" if on_gpu else f"C++, {threads} threads",
            "timings_ms": median_dicts([r.timings_ms for r in runs]),
            "voxels": runs[0].num_voxels, "edges": runs[0].num_edges}


def check_sync_free(seg: Segmenter, cache: Any, texts: list[str]) -> dict[str, Any]:
    """The eager decoder + heads under ``set_sync_debug_mode('error')``: raises on a host sync."""
    if seg.device.type != "cuda":
        return {"skipped": "cpu"}
    with torch.inference_mode():
        text = seg.model.encode_text(texts)
        fn = seg.summary_fn()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            fn(cache.scene, text.word_feats, text.word_mask)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return {"sync_free": True}


def check_graph_matches_eager(eager: Segmenter, graph: Segmenter, cache: Any, texts: list[str],
                              require_cuda: bool = True) -> dict[str, Any]:
    """Summaries of the same sentences by eager run and by graph replay (RES and GRES), and their
    word features by the eager encoder and by the text-encoder graph (on the real tokens)."""
    if require_cuda and eager.device.type != "cuda":
        return {"skipped": "cpu"}
    out: dict[str, Any] = {}
    n = len(texts)
    S = cache.n_superpoints
    enc = eager.model.text_encoder
    with torch.inference_mode():
        enc.clear_cache()
        text = eager.model.encode_text(texts)
        enc.clear_cache()  # the model is shared: the graph variant must encode the sentences itself
        with graph._autocast():
            gtext = graph._encode_text(texts)
        enc.clear_cache()
        real = text.word_mask
        out["text"] = {"feats_max_abs_diff": float((gtext.word_feats[real] - text.word_feats[real]).abs().max()),
                       "same_mask": bool(torch.equal(gtext.word_mask, real)), "graph": graph.text_graph_stats}
        # either side may be a graph variant, whose summary covers its padded superpoint bucket
        sa, Sa = eager._decode_summary(cache.scene, cache.n_superpoints, text)
        a = sa.cpu().numpy()
        with graph._autocast():
            sb, Sb = graph._decode_summary(cache.scene, cache.n_superpoints, text)
            b = sb.cpu().numpy()
        pa, ona = unpack_summary(a, n, Sa)
        pb, onb = unpack_summary(b, n, Sb)
        ona = ona[..., :S]
        out["summary"] = {"prob_max_abs_diff": float(np.abs(pa - pb).max()),
                          "mask_agreement": float((ona == onb[..., :S]).mean()),
                          "padding_never_on": bool(not onb[..., S:].any()), "padded_superpoints": Sb,
                          "same_best_query": float((pa.argmax(-1) == pb.argmax(-1)).mean()),
                          "same_targets": float(((pa > 0.5) == (pb > 0.5)).mean())}
    out["graph"] = graph.graph_stats
    return out
