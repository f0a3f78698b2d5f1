"""CUDA graphs of the per-sentence path: text features -> decoder -> answer summary, replayed.

Why: the decoder is hundreds of small kernels per sentence (6 layers of eleven attention and
feed-forward blocks, the fine-stage selection, heads), so an eager call is bound by kernel launches;
a captured graph launches them all at once (measurements: ``docs/benchmarks.md``). The decoder forward has no host synchronisation
when called with ``check_values=False`` (test_pipeline checks that with a torch-function guard), so
it can be captured as is.

One graph per key ``(superpoint bucket S, sentences T, token bucket L, threshold, dtype)``; its static
inputs are the scene tensors, padded with padding superpoints to S = a multiple of 128 (a robot's
map changes its superpoint count with every update; a bucket lets the next map reuse the graph) and
copied in when another map is queried, and the word features padded with masked words to L = a
multiple of 16. Padded superpoints and words get no attention and no mask (the segmenter's decoder
calls pass ``fine_mask_padding=True``, so padding never enters the fine stage either), so the answer equals
the eager one up to float rounding (the benchmark compares them on the GPU). Its output is the packed
uint8 summary of ``Segmenter`` (over the S padded superpoints) that is then copied to the host in
one transfer. A capture that fails is reported once (warning) and that key runs eagerly from then on.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections import OrderedDict
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from bqnet_model.model.bqnet import SceneFeatures

__all__ = ["DecoderGraphs", "token_bucket", "TOKEN_BUCKET", "SUPERPOINT_BUCKET"]

log = logging.getLogger(__name__)

TOKEN_BUCKET = 16
SUPERPOINT_BUCKET = 128


def token_bucket(n_tokens: int, bucket: int = TOKEN_BUCKET) -> int:
    """Padded word count of a graph: ``n_tokens`` rounded up to a multiple of ``bucket``."""
    return max(bucket, int(math.ceil(n_tokens / bucket)) * bucket)


# fn(scene, word_feats, word_mask) -> packed summary (1-D uint8 tensor)
SummaryFn = Callable[[SceneFeatures, Tensor, Tensor], Tensor]


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    scene: SceneFeatures  # static copies
    words: Tensor  # (T, L, C) static
    mask: Tensor  # (T, L) bool static
    out: Tensor  # static output
    loaded: "weakref.ReferenceType[SceneFeatures] | None" = None


class DecoderGraphs:
    """Captures and replays ``fn`` per key; see the module docstring.

    ``autocast`` returns the autocast context to capture under (its cache must be off: cached
    casts would be freed behind the graph's back). ``max_graphs``: least recently used graphs
    beyond this are dropped (each holds its own memory pool).
    """

    def __init__(self, autocast: Callable[[], AbstractContextManager], max_graphs: int = 8, warmup: int = 2) -> None:
        self.autocast = autocast
        self.max_graphs = max_graphs
        self.warmup = warmup
        self._graphs: OrderedDict[tuple, _Graph] = OrderedDict()
        self._failed: dict[tuple, str] = {}
        self.stats = {"captures": 0, "replays": 0, "failures": 0, "eager": 0}

    def clear(self) -> None:
        self._graphs.clear()
        self._failed.clear()

    @property
    def failures(self) -> dict[tuple, str]:
        """Keys whose capture failed, with the error (they run eagerly)."""
        return dict(self._failed)

    def run(self, key: tuple, fn: SummaryFn, scene: SceneFeatures, word_feats: Tensor,
            word_mask: Tensor) -> tuple[Tensor, int] | None:
        """``(summary, S)`` by graph replay, S being the padded superpoint count the summary covers,
        or None when this key cannot be captured (then run eagerly).

        ``key`` must hold everything ``fn`` bakes in besides the tensor shapes (threshold,
        dtype); shapes are added here. The returned tensor is the graph's static output: copy it
        before the next ``run``.
        """
        T, L, C = word_feats.shape
        Lb = token_bucket(L)
        B, S, C_in = scene.sp_feats.shape
        Sb = token_bucket(S, SUPERPOINT_BUCKET)
        C_img = None if scene.image_feats is None else int(scene.image_feats.shape[-1])
        full_key = (B, Sb, C_in, C_img, tuple(scene.seed_idx.shape), T, Lb, C) + tuple(key)
        if full_key in self._failed:
            self.stats["eager"] += 1
            return None
        g = self._graphs.get(full_key)
        if g is None:
            try:
                g = self._capture(fn, scene, Sb, T, Lb, word_feats)
            except Exception as exc:  # any capture problem: this key runs eagerly from now on
                self._failed[full_key] = f"{type(exc).__name__}: {exc}"
                self.stats["failures"] += 1
                self.stats["eager"] += 1
                log.warning("CUDA graph capture failed for %s (%s: %s); running the decoder eagerly",
                            full_key, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
                try:
                    torch.cuda.synchronize()
                except Exception:  # pragma: no cover - a broken context is reported by the eager run
                    pass
                return None
            self._graphs[full_key] = g
            self.stats["captures"] += 1
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(full_key)
        self._load(g, scene, word_feats, word_mask)
        g.graph.replay()
        self.stats["replays"] += 1
        return g.out, Sb

    @staticmethod
    def _load(g: _Graph, scene: SceneFeatures, word_feats: Tensor, word_mask: Tensor) -> None:
        """Copy this call's inputs into the static buffers (the scene only when it changed)."""
        if g.loaded is None or g.loaded() is not scene:
            _fill_scene(g.scene, scene)
            g.loaded = weakref.ref(scene)
        L = word_feats.shape[1]
        g.words[:, :L].copy_(word_feats)
        g.words[:, L:].zero_()
        g.mask[:, :L].copy_(word_mask)
        g.mask[:, L:] = False

    def _capture(self, fn: SummaryFn, scene: SceneFeatures, Sb: int, T: int, Lb: int, word_feats: Tensor) -> _Graph:
        dev = scene.sp_feats.device
        if dev.type != "cuda":
            raise RuntimeError(f"CUDA graphs need CUDA tensors, the scene is on {dev}")
        static = _padded_scene(scene, Sb)
        words = torch.zeros((T, Lb, word_feats.shape[-1]), dtype=word_feats.dtype, device=dev)
        mask = torch.zeros((T, Lb), dtype=torch.bool, device=dev)
        mask[:, 0] = True  # warm-up input: one real word per sentence (the values do not matter)
        side = torch.cuda.Stream(device=dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side), self.autocast():
            for _ in range(self.warmup):  # library handles, workspaces and kernel choices first
                fn(static, words, mask)
        torch.cuda.current_stream(dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: CUDA calls of other threads (the node prepares maps in another thread)
        # neither break this capture nor are refused while it runs.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"), self.autocast():
            out = fn(static, words, mask)
        return _Graph(graph=graph, scene=static, words=words, mask=mask, out=out)


def _padded_scene(scene: SceneFeatures, Sb: int) -> SceneFeatures:
    """Static copies of the scene tensors with room for ``Sb`` superpoints (the rest padding)."""
    B, S, C = scene.sp_feats.shape
    dev = scene.sp_feats.device
    static = SceneFeatures(
        torch.empty((B, Sb, C), dtype=scene.sp_feats.dtype, device=dev),
        torch.empty((B, Sb, 3), dtype=scene.sp_xyz.dtype, device=dev),
        torch.empty((B, Sb), dtype=torch.bool, device=dev),
        torch.empty_like(scene.seed_idx),
        torch.empty((B, Sb), dtype=scene.sp_sizes.dtype, device=dev),
        None if scene.image_feats is None else torch.empty(
            (B, Sb, scene.image_feats.shape[-1]), dtype=scene.image_feats.dtype, device=dev),
    )
    _fill_scene(static, scene)
    return static


def _fill_scene(static: SceneFeatures, scene: SceneFeatures) -> None:
    """Copy ``scene`` into the static buffers; the superpoints beyond its own are padding (zeros,
    ``sp_pad`` True, size 0)."""
    S = scene.sp_feats.shape[1]
    static.sp_feats[:, :S].copy_(scene.sp_feats)
    static.sp_feats[:, S:].zero_()
    static.sp_xyz[:, :S].copy_(scene.sp_xyz)
    static.sp_xyz[:, S:].zero_()
    static.sp_pad[:, :S].copy_(scene.sp_pad)
    static.sp_pad[:, S:] = True
    static.sp_sizes[:, :S].copy_(scene.sp_sizes)
    static.sp_sizes[:, S:].zero_()
    static.seed_idx.copy_(scene.seed_idx)
    if static.image_feats is not None:
        static.image_feats[:, :S].copy_(scene.image_feats)
        static.image_feats[:, S:].zero_()
