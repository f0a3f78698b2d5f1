"""CUDA graphs of the per-sentence path, replayed: the frozen text encoder (token ids -> word
features) and the decoder (word features -> decoder -> answer summary).

Why: the decoder is hundreds of small kernels per sentence (6 layers of eleven attention and
feed-forward blocks, the fine-stage selection, heads), so an eager call is bound by kernel launches;
a captured graph launches them all at once (measurements: ``docs/benchmarks.md``). The decoder forward has no host synchronisation
when called with ``check_values=False`` (test_pipeline checks that with a torch-function guard), so
it can be captured as is.

``DecoderGraphs``: one graph per key ``(superpoint bucket S, sentences T, token bucket L, threshold, dtype)``; its static
inputs are the scene tensors, padded with padding superpoints to S = a multiple of 128 (a robot's
map changes its superpoint count with every update; a bucket lets the next map reuse the graph) and
copied in when another map is queried, and the word features padded with masked words to L = a
multiple of 16. Padded superpoints and words get no attention and no mask (the segmenter's decoder
calls pass ``fine_mask_padding=True``, so padding never enters the fine stage either), so the answer equals
the eager one up to float rounding (the benchmark compares them on the GPU). Its output is the packed
uint8 summary of ``Segmenter`` (over the S padded superpoints) that is then copied to the host in
one transfer. A capture that fails is reported once (warning) and that key runs eagerly from then on.

``DecoderGraphs(compile=True)`` (``inference.compile_decoder``): the function is first compiled by
``torch.compile`` (inductor, mode ``COMPILE_MODE``) and the compiled kernels are what the graph
captures. Why: a graph removes the launch gaps, not the launches' work; the decoder's many small
elementwise, softmax and normalisation kernels each read and write their tensor once more than a fused
kernel would. Mode "default" on purpose: inductor must not add CUDA graphs of its own
("reduce-overhead"; ours captures), and "max-autotune-no-cudagraphs" benchmarks GEMM templates per
shape, which multiplies the compile time. Shapes are static (``dynamic=False``) except the superpoint
axis of the scene buffers, marked dynamic (``maybe_mark_dynamic``): a growing map moves to the next
bucket every 128 superpoints, and a compile per bucket would stall the node on every such map, while
sentences per call and the token bucket take few values. So a key compiles in its first warm-up run
only when no compiled variant fits it yet (a new sentence count or token bucket: tens of seconds on a
GPU, which that key's first sentence waits for; ``stats["capture_ms"]`` counts it); a new superpoint
bucket only captures. The compiled function is only called while a key is captured, so dynamo's
per-function limit of compiled variants is raised to ``COMPILE_KEYS`` and made an error there. A compile
or compiled capture that fails is warned about once, with the reason; that key and every later one are
then captured uncompiled.

``EncoderGraphs``: the frozen Hugging Face encoder's forward (a MiniLM is six layers of a dozen
small kernels each: launch-bound as the decoder), one graph per ``(sentence bucket T = a power of
two, token bucket L = a multiple of 16, token types or not, dtype)``. Its static inputs are the
token ids and the 0/1 attention mask, right-padded with the tokenizer's pad id and 0 (padded rows:
one pad token each, their output dropped); the mask goes to the model as an already prepared
(T, 1, 1, L) mask (``encoder_attention_mask``), so the library never inspects its values on the host
(its "no padding, no mask" shortcut would be a host sync, refused inside a capture). Padding changes
no real token's features: keys beyond a sentence get no attention, BERT's absolute positions count
from the left, RoBERTa's count the non-pad ids from the left, and the features are the
``last_hidden_state`` (no pooling over the tokens); ``test_text_graphs`` checks padded == unpadded on
the real MiniLM.

Why two graphs and not one encoder + decoder graph: the text cache (``text.cache_size``) serves a
repeated sentence without the encoder, so the encoder runs only for the sentences of a call that
missed it, a count that differs from the decoder's T; the encoder's keys do not depend on the map,
so a new map or a new superpoint bucket re-captures only the decoder; and a failed capture of one
leaves the other replayed. The price is one extra graph launch and a copy of the word features into
the decoder's static buffer (microseconds).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections import OrderedDict
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from bqnet_model.model.bqnet import SceneFeatures

__all__ = ["DecoderGraphs", "EncoderGraphs", "encoder_attention_mask", "masked_encoder_forward", "padded_encoder_inputs",
           "sentence_bucket", "token_bucket", "TOKEN_BUCKET", "SUPERPOINT_BUCKET", "COMPILE_MODE", "COMPILE_KEYS"]

log = logging.getLogger(__name__)

TOKEN_BUCKET = 16
SUPERPOINT_BUCKET = 128
COMPILE_MODE = "default"  # torch.compile mode of DecoderGraphs(compile=True); module docstring says why
COMPILE_KEYS = 64  # compiled variants per process before dynamo refuses more (then: captured uncompiled)


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
    fn: SummaryFn | None = None  # what was captured (a compiled function's kernels live as long as it does)


class _GraphCache:
    """What both graph caches share: graphs per key (least recently used beyond ``max_graphs``
    dropped, each holds its own memory pool), the keys whose capture failed (eager from then on),
    and the counters."""

    STATS: dict[str, float] = {"captures": 0, "replays": 0, "failures": 0, "eager": 0, "capture_ms": 0.0}

    def __init__(self, max_graphs: int, warmup: int) -> None:
        self.max_graphs = max_graphs
        self.warmup = warmup
        self._graphs: OrderedDict[tuple, Any] = OrderedDict()
        self._failed: dict[tuple, str] = {}
        self.stats = dict(self.STATS)  # capture_ms: wall time spent capturing (warm-ups and compiles included)

    def clear(self) -> None:
        self._graphs.clear()
        self._failed.clear()

    @staticmethod
    def capturable(device: torch.device) -> bool:
        """Whether graphs can be captured for tensors on ``device`` (CUDA only)."""
        return torch.device(device).type == "cuda"

    @property
    def failures(self) -> dict[tuple, str]:
        """Keys whose capture failed, with the error (they run eagerly)."""
        return dict(self._failed)

    def _graph_for(self, full_key: tuple, capture: Callable[[], Any], what: str, fallback: str) -> Any | None:
        """The graph of ``full_key``, captured by ``capture`` on first use and made the most recent;
        None when this key cannot be captured (counted as an eager run; the failure is warned about
        once, as "CUDA graph capture{what} failed ...; {fallback}")."""
        if full_key in self._failed:
            self.stats["eager"] += 1
            return None
        g = self._graphs.get(full_key)
        if g is None:
            t0 = time.perf_counter()
            try:
                g = capture()
            except Exception as exc:  # any capture problem: this key runs eagerly from now on
                self._failed[full_key] = f"{type(exc).__name__}: {exc}"
                self.stats["failures"] += 1
                self.stats["eager"] += 1
                log.warning("CUDA graph capture%s failed for %s (%s: %s); %s", what, full_key, type(exc).__name__,
                            str(exc).splitlines()[0] if str(exc) else "", fallback)
                _synchronize()
                return None
            finally:
                self.stats["capture_ms"] += (time.perf_counter() - t0) * 1e3
            self._graphs[full_key] = g
            self.stats["captures"] += 1
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(full_key)
        return g


class DecoderGraphs(_GraphCache):
    """Captures and replays ``fn`` per key; see the module docstring.

    ``autocast`` returns the autocast context to capture under (its cache must be off: cached
    casts would be freed behind the graph's back). ``max_graphs``: least recently used graphs
    beyond this are dropped (each holds its own memory pool). ``compile``: capture ``fn`` compiled
    by ``torch.compile`` (module docstring); ``compile_error`` then holds why it stopped, if it did.
    """

    STATS = {**_GraphCache.STATS, "compiled": 0, "compile_failures": 0}

    def __init__(self, autocast: Callable[[], AbstractContextManager], max_graphs: int = 8, warmup: int = 2,
                 compile: bool = False) -> None:
        super().__init__(max_graphs, warmup)
        self.autocast = autocast
        self.compile = bool(compile)
        self.compile_error: str | None = None

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
        g = self._graph_for(full_key, lambda: self._capture(fn, scene, Sb, T, Lb, word_feats), "",
                            "running the decoder eagerly")
        if g is None:
            return None
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
        """The static inputs of one key, and ``fn`` captured on them (compiled first when asked)."""
        dev = scene.sp_feats.device
        if not self.capturable(dev):
            raise RuntimeError(f"CUDA graphs need CUDA tensors, the scene is on {dev}")
        static = _padded_scene(scene, Sb)
        words = torch.zeros((T, Lb, word_feats.shape[-1]), dtype=word_feats.dtype, device=dev)
        mask = torch.zeros((T, Lb), dtype=torch.bool, device=dev)
        mask[:, 0] = True  # warm-up input: one real word per sentence (the values do not matter)
        if self.compile and self.compile_error is None:
            g = self._capture_compiled(fn, static, words, mask)
            if g is not None:
                return g
        return self._record(fn, static, words, mask)

    def _capture_compiled(self, fn: SummaryFn, static: SceneFeatures, words: Tensor, mask: Tensor) -> _Graph | None:
        """``fn`` compiled (in the first warm-up run) and captured; None after a failure, which is
        warned about with its reason and turns compiling off for this instance."""
        import torch._dynamo

        for t in (static.sp_feats, static.sp_xyz, static.sp_pad, static.sp_sizes, static.image_feats):
            if t is not None:  # one compile for every superpoint bucket (module docstring)
                torch._dynamo.maybe_mark_dynamic(t, 1)
        try:
            compiled = torch.compile(fn, mode=COMPILE_MODE, dynamic=False)
            with torch._dynamo.config.patch(recompile_limit=COMPILE_KEYS, fail_on_recompile_limit_hit=True):
                g = self._record(compiled, static, words, mask)
        except Exception as exc:  # any compile or capture problem: capture the function as it is
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            self.compile_error = f"{type(exc).__name__}: {reason}"
            self.stats["compile_failures"] += 1
            log.warning("torch.compile of the decoder failed (%s); capturing it uncompiled, for this and every later "
                        "graph of this segmenter (inference.compile_decoder)", self.compile_error)
            _synchronize()
            return None
        self.stats["compiled"] += 1
        return g

    def _record(self, fn: SummaryFn, static: SceneFeatures, words: Tensor, mask: Tensor) -> _Graph:
        """Warm-up runs on a side stream, then ``fn`` captured on the static inputs (CUDA only)."""
        dev = static.sp_feats.device
        side = torch.cuda.Stream(device=dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side), self.autocast():
            for _ in range(self.warmup):  # library handles, workspaces and kernel choices (and a compile) first
                fn(static, words, mask)
        torch.cuda.current_stream(dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: CUDA calls of other threads (the node prepares maps in another thread)
        # neither break this capture nor are refused while it runs.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"), self.autocast():
            out = fn(static, words, mask)
        return _Graph(graph=graph, scene=static, words=words, mask=mask, out=out, fn=fn)


def _synchronize() -> None:
    """Wait for the GPU after a failed capture (nothing to wait for without CUDA)."""
    try:
        torch.cuda.synchronize()
    except Exception:  # pragma: no cover - a broken context (or no CUDA) is reported by the next run
        pass


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


# ---------------------------------------------------------------------- text encoder
def sentence_bucket(n_sentences: int) -> int:
    """Padded sentence count of an encoder graph: the next power of two (the cache leaves any
    count of sentences to encode, from 1 to ``inference.text_chunk``; a few keys cover them all)."""
    return 1 << max(0, int(n_sentences) - 1).bit_length()


def padded_encoder_inputs(ids: Tensor, att: Tensor, token_types: Tensor | None, Tb: int, Lb: int,
                          pad_id: int) -> tuple[Tensor, Tensor, Tensor | None]:
    """The tokenizer's (T, L) ids, 0/1 mask and token types right-padded to (Tb, Lb): padding ids
    are ``pad_id`` with mask 0 and token type 0; rows beyond T hold one unmasked pad token (a row
    with no key to attend to would be a softmax over nothing)."""
    T, L = ids.shape
    if Tb < T or Lb < L:
        raise ValueError(f"cannot pad ({T}, {L}) tokens to ({Tb}, {Lb})")
    out_ids = ids.new_full((Tb, Lb), pad_id)
    out_att = att.new_zeros((Tb, Lb))
    out_ids[:T, :L] = ids
    out_att[:T, :L] = att
    out_att[T:, 0] = 1
    out_types = None
    if token_types is not None:
        out_types = token_types.new_zeros((Tb, Lb))
        out_types[:T, :L] = token_types
    return out_ids, out_att, out_types


def encoder_attention_mask(att: Tensor, attn_implementation: str, dtype: torch.dtype) -> Tensor:
    """The (T, L) 0/1 mask as the (T, 1, 1, L) mask a Hugging Face encoder takes as prepared (used
    as it is, no look at its values): boolean "may attend" for SDPA, else additive (0 or the
    dtype's minimum) as the eager attention adds it to the scores."""
    keep = att[:, None, None, :].bool()
    if attn_implementation == "sdpa":
        return keep
    return torch.zeros(keep.shape, dtype=dtype, device=att.device).masked_fill_(~keep, torch.finfo(dtype).min)


def masked_encoder_forward(model: Any, ids: Tensor, att: Tensor, token_types: Tensor | None) -> Tensor:
    """``last_hidden_state`` of a Hugging Face encoder with the mask prepared by
    ``encoder_attention_mask`` (what ``EncoderGraphs`` captures; no host synchronisation)."""
    impl = str(getattr(model.config, "_attn_implementation", None) or "eager")
    mask = encoder_attention_mask(att, impl, next(model.parameters()).dtype)
    extra = {} if token_types is None else {"token_type_ids": token_types}
    return model(input_ids=ids, attention_mask=mask, **extra).last_hidden_state


@dataclass
class _EncoderGraph:
    graph: Any  # torch.cuda.CUDAGraph (or a stand-in with ``replay``)
    ids: Tensor  # (Tb, Lb) static
    att: Tensor  # (Tb, Lb) static
    token_types: Tensor | None  # (Tb, Lb) static
    out: Tensor  # (Tb, Lb, C) static output


class EncoderGraphs(_GraphCache):
    """Captures and replays a frozen encoder's forward per key; see the module docstring.

    ``model``: the Hugging Face model (frozen, eval mode); ``pad_id``: its tokenizer's pad id;
    ``max_tokens``: the encoder's position limit (a bucket never exceeds it; 0 = none);
    ``autocast`` as ``DecoderGraphs``'s. Thread-safe: the node encodes sentences from several
    threads, and every graph has one set of static buffers.
    """

    def __init__(self, model: Any, pad_id: int, autocast: Callable[[], AbstractContextManager], max_tokens: int = 0,
                 max_graphs: int = 8, warmup: int = 2) -> None:
        super().__init__(max_graphs, warmup)
        self.model = model
        self.pad_id = int(pad_id)
        self.autocast = autocast
        self.max_tokens = int(max_tokens)
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            super().clear()

    def buckets(self, T: int, L: int) -> tuple[int, int]:
        """(sentence bucket, token bucket) of a call of T sentences of at most L tokens."""
        Lb = token_bucket(L)
        if self.max_tokens > 0:
            Lb = max(L, min(Lb, self.max_tokens))  # past the position limit there are no positions to pad with
        return sentence_bucket(T), Lb

    def run(self, key: tuple, ids: Tensor, att: Tensor, token_types: Tensor | None) -> Tensor | None:
        """The encoder's (T, L, C) ``last_hidden_state`` of the tokenizer's (T, L) ids and mask by
        graph replay (a fresh tensor), or None when this key cannot be captured (then run eagerly).
        ``key`` holds what the graph bakes in besides the shapes (the autocast settings)."""
        T, L = ids.shape
        Tb, Lb = self.buckets(T, L)
        full_key = (Tb, Lb, token_types is not None) + tuple(key)
        with self._lock, torch.inference_mode():
            g = self._graph_for(full_key, lambda: self._capture(ids.device, Tb, Lb, token_types is not None, ids.dtype),
                                " of the text encoder", "encoding eagerly")
            if g is None:
                return None
            self._load(g, ids, att, token_types, self.pad_id)
            g.graph.replay()
            self.stats["replays"] += 1
            return g.out[:T, :L].clone()

    @staticmethod
    def _load(g: _EncoderGraph, ids: Tensor, att: Tensor, token_types: Tensor | None, pad_id: int) -> None:
        """Copy this call's tokens, padded by ``padded_encoder_inputs``, into the static buffers."""
        Tb, Lb = g.ids.shape
        p_ids, p_att, p_types = padded_encoder_inputs(ids, att, token_types, Tb, Lb, pad_id)
        g.ids.copy_(p_ids)
        g.att.copy_(p_att)
        if g.token_types is not None:
            g.token_types.copy_(p_types if p_types is not None else torch.zeros_like(g.token_types))

    def _capture(self, dev: torch.device, Tb: int, Lb: int, with_types: bool, id_dtype: torch.dtype) -> _EncoderGraph:
        if not self.capturable(dev):
            raise RuntimeError(f"CUDA graphs need CUDA tensors, the tokens are on {dev}")
        one = torch.ones((1, 1), dtype=id_dtype, device=dev)
        ids, att, types = padded_encoder_inputs(one * self.pad_id, one, one - 1 if with_types else None,
                                                Tb, Lb, self.pad_id)  # warm-up input: one pad token per row
        side = torch.cuda.Stream(device=dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side), self.autocast():
            for _ in range(self.warmup):  # library handles, workspaces and kernel choices first
                masked_encoder_forward(self.model, ids, att, types)
        torch.cuda.current_stream(dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"), self.autocast():
            out = masked_encoder_forward(self.model, ids, att, types)
        return _EncoderGraph(graph=graph, ids=ids, att=att, token_types=types, out=out)
