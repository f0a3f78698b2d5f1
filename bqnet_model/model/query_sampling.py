"""Seeds and queries: farthest point sampling and the text-guided ``sampling_module``.

How the decoder gets its queries (the authors' CFNet code):

1. ``farthest_point_sample`` picks ``fps_num`` seed superpoints per scene, once per scene by the
   caller, in the mean-centred scene frame, so that all sentences of a scene share the seeds.
2. The seeds' features go through the decoder's ``scg_head`` (decoder.py).
3. ``TextGuidedSampling`` (the checkpoint's ``sampling_module``) scores every seed against the
   sentence and keeps the ``num_proposal`` best seeds as queries.

Everything here is plain torch, vectorised over the batch and device-agnostic (CPU/CUDA). On CUDA,
``farthest_point_sample(..., kernel=True)`` runs the same rules in one launch instead
(``bqnet_model._C_cuda``, csrc/cuda/fps_cuda.cu; ``inference.fps_cuda_kernel``), with the torch loop
as the fallback when the extension lacks it.
"""

from __future__ import annotations

import importlib
import logging
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "farthest_point_sample",
    "fps_order_keys",
    "CrossAttentionMap",
    "TextGuidedSampling",
    "SamplingResult",
    "FPS_MATRIX_MAX",
    "FPS_ORIGIN_RADIUS2",
    "fps_cuda_kernel",
    "kernel_argument_error",
]

log = logging.getLogger(__name__)

# Largest B * S * S for which FPS precomputes all pairwise distances (64 MiB of float32): then each
# of the n steps is 3 small kernels (row gather, minimum, argmax) instead of ~9 (launch-bound on GPUs).
FPS_MATRIX_MAX = 1 << 24
# The pointnet2 kernel never picks a point with x^2 + y^2 + z^2 <= this (after the first seed):
# with the authors' mean-centred scenes that is a ~3 cm ball around the scene centre.
FPS_ORIGIN_RADIUS2 = 1e-3
# The kernel's per-block thread cap (TOTAL_THREADS in pointnet2's cuda_utils.h).
_FPS_MAX_THREADS = 512
# "run": _C_cuda.farthest_point_sample once found; "missing": why not (looked up, and logged, once).
_KERNEL: dict[str, object] = {}


def fps_cuda_kernel() -> Callable[[Tensor, Tensor, int], Tensor] | None:
    """``bqnet_model._C_cuda.farthest_point_sample`` ``(xyz (B,S,3) float32, lengths (B,) int64, n)
    -> (B, n) int64``, or None, with one warning, when the extension is not built (CPU-only torch,
    no nvcc) or was built before csrc/cuda/fps_cuda.cu existed."""
    if "run" in _KERNEL:
        return _KERNEL["run"]  # type: ignore[return-value]
    if "missing" in _KERNEL:
        return None
    try:
        run = getattr(importlib.import_module("bqnet_model._C_cuda"), "farthest_point_sample", None)
        why = "" if run is not None else "it was built before csrc/cuda/fps_cuda.cu: rebuild it"
    except ImportError as exc:
        run, why = None, f"it is not built ({exc})"
    if run is None:
        _KERNEL["missing"] = why
        log.warning("the CUDA FPS kernel was asked for but bqnet_model._C_cuda has no farthest_point_sample "
                    "(%s): FPS runs the torch loop (same indices)", why)
        return None
    _KERNEL["run"] = checked = _checked_kernel(run)
    return checked


def _describe(t: Tensor) -> str:
    return f"{str(t.dtype).removeprefix('torch.')} {tuple(t.shape)} on {t.device}"


def kernel_argument_error(xyz: object, lengths: object, n: object, device_type: str = "cuda") -> str | None:
    """What is wrong with a call of the CUDA FPS kernel (its binding's rules), or None. ``device_type``
    is the device the tensors must be on ("cuda" for the kernel; a CPU test passes "cpu" to reach the
    later checks). The ``lengths`` value check reads two numbers back."""
    if not (isinstance(xyz, Tensor) and xyz.device.type == device_type and xyz.dim() == 3 and xyz.shape[2] == 3
            and xyz.dtype == torch.float32):
        got = _describe(xyz) if isinstance(xyz, Tensor) else type(xyz).__name__
        return f"xyz must be a float32 {device_type.upper()} tensor of shape (B, S, 3), got {got}"
    B, S = int(xyz.shape[0]), int(xyz.shape[1])
    if not 1 <= S <= 0x7FFFFFFF // 3:
        return f"xyz must have between 1 and {0x7FFFFFFF // 3} points per row, got {S}"
    try:  # an int or a numpy integer; not a float, not a bool
        seeds = None if isinstance(n, (bool, np.bool_)) else operator.index(n)  # type: ignore[arg-type]
    except TypeError:
        seeds = None
    if seeds is None or not 1 <= seeds <= 0x7FFFFFFF:
        return f"n (seeds per row) must be an integer in [1, 2^31 - 1], got {n!r}"
    if not (isinstance(lengths, Tensor) and lengths.dim() == 1 and lengths.shape[0] == B
            and lengths.dtype == torch.int64 and lengths.device == xyz.device):
        got = _describe(lengths) if isinstance(lengths, Tensor) else type(lengths).__name__
        return f"lengths must be an int64 tensor of shape ({B},) on xyz's device ({xyz.device}), got {got}"
    if B:
        lo, hi = (int(v) for v in torch.stack(torch.aminmax(lengths)).tolist())
        if lo < 1 or hi > S:
            return f"lengths must lie in [1, {S}] (real points per row, padding after them), got [{lo}, {hi}]"
    return None


def _checked_kernel(run: Callable[[Tensor, Tensor, int], Tensor]) -> Callable[[Tensor, Tensor, int], Tensor]:
    """``run`` behind the argument checks of its binding (``kernel_argument_error``), made here
    first. On the H200 (torch 2.11, 2026-12-01) any error raised inside the binding killed the
    process (SIGSEGV) instead of raising, whatever the message; the cause was not found, so a bad
    call never reaches it."""

    def checked(xyz: Tensor, lengths: Tensor, n: int) -> Tensor:
        why = kernel_argument_error(xyz, lengths, n)
        if why is not None:
            raise RuntimeError(why)
        return run(xyz, lengths, operator.index(n))

    checked.__wrapped__ = run  # type: ignore[attr-defined]
    return checked


def _kernel_for(kernel: bool, device: torch.device) -> Callable[[Tensor, Tensor, int], Tensor] | None:
    """The CUDA kernel when it is asked for, the input is on CUDA and the extension has it; None
    means the torch loop. Separate from ``farthest_point_sample`` so that a CPU test can check it."""
    if not kernel or device.type != "cuda":
        return None
    return fps_cuda_kernel()


def _check_tensor(name: str, x: object, ndim: int) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    return x


def _sq_dist_to(pts: Tensor, centre: Tensor) -> Tensor:
    """Squared distances ``(B,S,3), (B,K,3) -> (B,K,S)`` in the kernel's operation order.

    ``(dx*dx + dy*dy) + dz*dz`` with every step a separate elementwise op: each is exactly rounded
    on CPU and CUDA alike, so the matrix and the loop variant of FPS (and any device) agree bit for
    bit; a ``sum(-1)`` reduction would leave the order to the kernel.
    """
    d = [(pts[:, None, :, k] - centre[:, :, k, None]) for k in range(3)]
    return (d[0] * d[0] + d[1] * d[1]) + d[2] * d[2]


def _bit_reverse(x: Tensor, bits: Tensor) -> Tensor:
    """Reverse the lowest ``bits`` bits of each ``x`` (int64, ``bits`` per element, <= 9)."""
    out = torch.zeros_like(x)
    for b in range(int(math.log2(_FPS_MAX_THREADS))):
        bit = (x >> b) & 1
        out = out | torch.where(b < bits, bit << (bits - 1 - b).clamp_min(0), torch.zeros_like(bit))
    return out


def fps_order_keys(n_real: Tensor, S: int) -> Tensor:
    """``(B, S)`` int64 tie-break keys of the pointnet2 FPS kernel: among equal distances the
    kernel picks the point with the smallest key.

    The kernel runs T = min(512, 2^floor(log2 n)) threads; thread t scans k = t, t+T, ... and keeps
    its FIRST maximum (strict ``>``); the block then reduces the threads pairwise (t with t+T/2,
    ..., keeping the lower slot on ties), which prefers the thread whose id is smallest when its
    bits are read in reverse. So key(k) = bitrev(k mod T) * ceil(n/T) + k div T. Padded slots
    (k >= n) get keys after every real point."""
    dev = n_real.device
    n = n_real.long().clamp_min(1).unsqueeze(1)  # (B, 1)
    bits = torch.floor(torch.log2(n.double())).long().clamp(max=int(math.log2(_FPS_MAX_THREADS)))
    # log2 in float64 can land just below an exact power of two: fix it with integer checks.
    bits = torch.where((1 << (bits + 1)) <= n, bits + 1, bits)
    bits = torch.where((1 << bits) > n, bits - 1, bits).clamp(0, int(math.log2(_FPS_MAX_THREADS)))
    T = 1 << bits
    k = torch.arange(S, device=dev).unsqueeze(0)  # (1, S)
    per_thread = (n + T - 1) // T
    key = _bit_reverse(k % T, bits.expand(-1, S)) * per_thread + k // T
    return torch.where(k < n, key, S * S + k)


@torch.no_grad()
def farthest_point_sample(xyz: Tensor, n: int, pad: Tensor | None = None, matrix: bool | None = None,
                          kernel: bool = False, check_pad: bool = True) -> Tensor:
    """Farthest point sampling of ``n`` indices per row, by the rules of the pointnet2 CUDA kernel
    the authors use; ``(B, S, 3) -> (B, n)`` long.

    * The first seed is index 0.
    * Then repeatedly the point farthest (squared distance, ``(dx*dx + dy*dy) + dz*dz`` in float32)
      from the chosen set, distances starting at 1e10, ties broken as the kernel's threads do
      (``fps_order_keys``).
    * Points with ``x*x + y*y + z*z <= 1e-3`` are never chosen, unless no other point remains
      (then the kernel falls back to index 0). Call it in the mean-centred scene frame, as the
      authors do; the rule is the kernel's, not a choice.
    * When a row has fewer (choosable) points than ``n``, the kernel keeps returning the remaining
      point with the smallest key (index 0 when it is choosable): indices repeat.
    * ``pad`` True marks padding (rows of different scenes in one batch): padded slots are never
      chosen and the thread layout uses the row's own point count, as a per-scene kernel call does.

    The loop runs over ``n`` (not over points or rows), so it works on CUDA as on CPU; the points
    are visited in key order so that ``argmax`` (first maximum) applies the tie rule for free.
    ``matrix``: precompute the (B, S, S) distances (default: on CUDA when ``B*S*S <=
    FPS_MATRIX_MAX``); both variants return the same indices.
    ``kernel``: for CUDA input, run the CUDA kernel (``fps_cuda_kernel``: the same rules and
    indices in one launch instead of ~3n) when the extension has it, else the torch loop. The
    pipeline asks for it by default (``inference.fps_cuda_kernel``); this function's default stays
    the loop, the reference. Coordinates must be finite for the two to agree.
    ``check_pad`` False: skip the checks of ``pad``'s values (every row has a real point, the
    padding is a suffix), three host synchronisations on CUDA, for a caller that knows them (a
    ``pad`` of ``backbone.OffsetPadding`` whose offsets it checked on the host).
    """
    _check_tensor("xyz", xyz, 3)
    if xyz.shape[-1] != 3:
        raise ValueError(f"xyz must be (B, S, 3), got shape {tuple(xyz.shape)}")
    if not xyz.is_floating_point():
        raise TypeError(f"xyz must be a floating point tensor, got {xyz.dtype}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    B, S, _ = xyz.shape
    if S == 0:
        raise ValueError("xyz has no points (S == 0): nothing to sample")
    dev = xyz.device
    if pad is None:
        pad = torch.zeros(B, S, dtype=torch.bool, device=dev)
    else:
        _check_tensor("pad", pad, 2)
        if pad.dtype != torch.bool:
            raise TypeError(f"pad must be a bool tensor (True = padding), got {pad.dtype}")
        if pad.shape != (B, S):
            raise ValueError(f"pad must have shape {(B, S)} to match xyz, got {tuple(pad.shape)}")
    n_real = (~pad).sum(dim=1)
    if check_pad:
        if bool((n_real == 0).any()):
            rows = torch.nonzero(n_real == 0).flatten().tolist()
            raise ValueError(f"rows {rows} of pad are all padding: no point to sample from")
        if bool(pad[:, 0].any()) or bool((pad[:, 1:] < pad[:, :-1]).any()):
            raise ValueError("pad must mark a suffix of each row (real points first, as pad_by_offsets builds)")
    run = _kernel_for(kernel, dev)
    if run is not None:
        return run(xyz.float().contiguous(), n_real, n)

    pts = xyz.float()
    perm = fps_order_keys(n_real, S).argsort(dim=1)  # (B, S): position p holds point perm[b, p]
    pts = pts.gather(1, perm.unsqueeze(-1).expand(B, S, 3)).contiguous()
    ppad = pad.gather(1, perm)
    mag = (pts[..., 0] * pts[..., 0] + pts[..., 1] * pts[..., 1]) + pts[..., 2] * pts[..., 2]
    near_origin = mag.double() <= FPS_ORIGIN_RADIUS2  # the kernel compares in double
    # Running min distance to the chosen set. Points the kernel skips sit at -1 (below any
    # distance, above padding), padding at -inf: torch.minimum keeps both, so neither is chosen
    # while a choosable point remains, and a row without one falls back to key order (index 0).
    dist = torch.full((B, S), 1e10, device=dev)
    dist.masked_fill_(near_origin, -1.0).masked_fill_(ppad, float("-inf"))
    out = torch.zeros(n, B, dtype=torch.long, device=dev)  # step-major; out[0] = position 0 = index 0
    base = torch.arange(B, device=dev) * S if B > 1 else None
    if matrix is None:
        matrix = dev.type == "cuda" and B * S * S <= FPS_MATRIX_MAX
    if matrix:
        rows_of = _sq_dist_to(pts, pts).reshape(B * S, S)
        for j in range(n - 1):
            cur = out[j] if base is None else out[j] + base
            torch.minimum(dist, rows_of.index_select(0, cur), out=dist)
            torch.argmax(dist, dim=1, out=out[j + 1])
    else:
        flat = pts.reshape(B * S, 3)
        for j in range(n - 1):
            cur = out[j] if base is None else out[j] + base
            d = _sq_dist_to(pts, flat.index_select(0, cur).unsqueeze(1)).squeeze(1)
            torch.minimum(dist, d, out=dist)
            torch.argmax(dist, dim=1, out=out[j + 1])
    return perm.gather(1, out.t().contiguous())


class CrossAttentionMap(nn.Module):
    """Single-head scaled dot-product map between seeds and words, softmax over the SEEDS axis.

    ``query_proj`` projects seed features, ``key_proj`` word features, both without bias (the
    official ``camap``). Returns ``(B, F, L)``: for each word a distribution over the seeds.
    """

    def __init__(self, seed_dim: int, word_dim: int, d_model: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.query_proj = nn.Linear(seed_dim, d_model, bias=False)
        self.key_proj = nn.Linear(word_dim, d_model, bias=False)

    def forward(self, seeds: Tensor, words: Tensor) -> Tensor:
        q = self.query_proj(seeds)
        k = self.key_proj(words)
        scores = torch.einsum("bfd,bld->bfl", q, k) / math.sqrt(self.d_model)
        return scores.softmax(dim=1)


@dataclass
class SamplingResult:
    """``indices (B, Q)``: chosen seeds (indices into the F seeds), by decreasing relevance
    (``torch.topk`` order; all seeds in index order when F < num_proposal, as the official code);
    ``scores (B, F)``: the official raw ``ref_scores`` (sum over real words of each word's softmax
    over the seeds; >= 0, summing to the number of real words). The official sampling loss uses
    these raw scores directly as focal-loss logits."""

    indices: Tensor
    scores: Tensor


class TextGuidedSampling(nn.Module):
    """The official ``sampling_module``: keep the seeds the sentence talks about."""

    def __init__(self, d_model: int, num_proposal: int) -> None:
        super().__init__()
        if num_proposal < 1:
            raise ValueError(f"num_proposal must be >= 1, got {num_proposal}")
        self.num_proposal = num_proposal
        self.camap = CrossAttentionMap(d_model, d_model, d_model)

    def forward(self, seed_feats: Tensor, word_feats: Tensor, word_pad: Tensor) -> SamplingResult:
        """seed_feats (B,F,d), word_feats (B,L,d), word_pad (B,L) True = padding."""
        if word_pad.dtype != torch.bool:
            raise TypeError(f"word_pad must be bool (True = padding), got {word_pad.dtype}")
        attn = self.camap(seed_feats, word_feats)  # (B, F, L)
        scores = (attn * (~word_pad).unsqueeze(1).to(attn.dtype)).sum(-1)  # (B, F)
        B, F = scores.shape
        if F < self.num_proposal:
            indices = torch.arange(F, device=scores.device).unsqueeze(0).expand(B, F)
        else:
            indices = scores.detach().topk(self.num_proposal, dim=1, sorted=True).indices
        return SamplingResult(indices=indices, scores=scores)
