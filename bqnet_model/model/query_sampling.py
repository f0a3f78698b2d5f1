"""Seeds and queries: farthest point sampling, kNN graphs, text-guided query sampling.

How the decoder gets its queries [IPDN]:

1. ``farthest_point_sample`` picks ``fps_num`` seed superpoints per scene (once per scene, by the
   caller, so that all sentences of a scene share the seeds).
2. The seeds' features go through the decoder's ``scg_head``: a self-attention restricted by
   ``knn_mask`` to each seed's k nearest seeds in 3D (the spatial context graph, SCG).
3. ``TextGuidedSampling`` (the checkpoint's ``sampling_module``) scores every seed against the
   sentence and keeps the ``num_proposal`` best seeds as queries.

Everything here is plain torch, vectorized over the batch and device-agnostic (CPU/CUDA).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "farthest_point_sample",
    "knn_mask",
    "CrossAttentionMap",
    "TextGuidedSampling",
    "SamplingResult",
    "relevance_logits",
]


def _check_tensor(name: str, x: object, ndim: int) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    return x


# Largest B * S * S for which FPS precomputes all pairwise distances (64 MiB of float32): then each
# of the n steps is 3 small kernels (row gather, minimum, argmax) instead of ~9, which is what
# bounds FPS on a GPU (launch-bound: issue 3 measured 34 ms for 512 seeds among 2183 superpoints).
FPS_MATRIX_MAX = 1 << 24


def _sq_dist_to(pts: Tensor, centre: Tensor) -> Tensor:
    """Squared distances ``(B,S,3), (B,K,3) -> (B,K,S)`` in one fixed operation order.

    ``(dx*dx + dy*dy) + dz*dz`` with every step a separate elementwise op: each is exactly rounded
    on CPU and CUDA alike, so the matrix and the loop variant of FPS (and any device) agree bit for
    bit; a ``sum(-1)`` reduction would leave the order to the kernel.
    """
    d = [(pts[:, None, :, k] - centre[:, :, k, None]) for k in range(3)]
    return (d[0] * d[0] + d[1] * d[1]) + d[2] * d[2]


@torch.no_grad()
def farthest_point_sample(xyz: Tensor, n: int, pad: Tensor | None = None, matrix: bool | None = None) -> Tensor:
    """Farthest point sampling of ``n`` indices per batch row; ``(B, S, 3) -> (B, n)`` long.

    Deterministic: row b starts at its first non-padded point, then repeatedly takes the point
    farthest (squared Euclidean) from all points taken so far; ties go to the lowest index.
    Padded points (``pad`` True) are never taken. A row with fewer than ``n`` real points first
    takes all of them in FPS order, then cycles through that order again (index ``j`` repeats
    index ``j mod n_real``), so the output always has ``n`` columns and only real indices.
    The loop runs over ``n`` (not over points or rows), so it works on CUDA as on CPU.
    ``matrix``: precompute the (B, S, S) distances (default: on CUDA when ``B*S*S <=
    FPS_MATRIX_MAX``); both variants return the same indices (see ``_sq_dist_to``).
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
    if pad is None:
        pad = torch.zeros(B, S, dtype=torch.bool, device=xyz.device)
    else:
        _check_tensor("pad", pad, 2)
        if pad.dtype != torch.bool:
            raise TypeError(f"pad must be a bool tensor (True = padding), got {pad.dtype}")
        if pad.shape != (B, S):
            raise ValueError(f"pad must have shape {(B, S)} to match xyz, got {tuple(pad.shape)}")
    n_real = (~pad).sum(dim=1)  # (B,)
    if bool((n_real == 0).any()):
        rows = torch.nonzero(n_real == 0).flatten().tolist()
        raise ValueError(f"rows {rows} of pad are all padding: no point to sample from")

    dev = xyz.device
    pts = xyz.float().contiguous()
    # Min squared distance to the chosen set; padded points start at -1 and stay there (every
    # distance is >= 0), so they never win the argmax (real points already taken have 0, which
    # still beats -1 once every real point is taken).
    dist = torch.full((B, S), float("inf"), device=dev)
    dist.masked_fill_(pad, -1.0)
    out = torch.empty(n, B, dtype=torch.long, device=dev)  # step-major: out[j] is contiguous
    out[0] = (~pad).to(torch.uint8).argmax(dim=1)  # first non-padded index (argmax takes the first max)
    base = torch.arange(B, device=dev) * S if B > 1 else None
    if matrix is None:  # on the CPU building the matrix costs what it saves
        matrix = dev.type == "cuda" and B * S * S <= FPS_MATRIX_MAX
    use_matrix = bool(matrix)
    if use_matrix:
        rows_of = _sq_dist_to(pts, pts).reshape(B * S, S)  # row b*S + c: distances to point c of row b
        for j in range(n):
            cur = out[j] if base is None else out[j] + base
            torch.minimum(dist, rows_of.index_select(0, cur), out=dist)
            if j + 1 < n:
                torch.argmax(dist, dim=1, out=out[j + 1])
    else:
        flat = pts.reshape(B * S, 3)
        for j in range(n):
            cur = out[j] if base is None else out[j] + base
            d = _sq_dist_to(pts, flat.index_select(0, cur).unsqueeze(1)).squeeze(1)
            torch.minimum(dist, d, out=dist)
            if j + 1 < n:
                torch.argmax(dist, dim=1, out=out[j + 1])
    out = out.t().contiguous()
    if n > int(n_real.min()):
        # Rows with fewer than n real points: replace the tail by a cyclic repeat of the FPS order.
        j = torch.arange(n, device=dev).unsqueeze(0)  # (1, n)
        src = torch.remainder(j, n_real.unsqueeze(1))  # (B, n); == j where j < n_real
        out = out.gather(1, src)
    return out


def knn_mask(pos: Tensor, k: int, pad: Tensor | None = None) -> Tensor:
    """Boolean ``(B, N, N)`` graph, True where key j is among the ``k`` nearest of query i.

    Distances are exact squared Euclidean (no matmul trick, so ties and near-ties order as in
    a brute-force reference). Padded keys (``pad`` True) are never neighbours; k is clamped to
    the number of points; every point is its own neighbour (the diagonal is always True, so no
    row is empty even with duplicate positions). Built with ``topk`` + ``scatter``: no loop over
    queries (the original IPDN code loops over batch and queries here).
    """
    _check_tensor("pos", pos, 3)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    B, N, _ = pos.shape
    d = (pos.unsqueeze(2) - pos.unsqueeze(1)).float().square().sum(-1)  # (B, N, N)
    if pad is not None:
        if pad.shape != (B, N) or pad.dtype != torch.bool:
            raise ValueError(f"pad must be a bool tensor of shape {(B, N)}, got {pad.dtype} {tuple(pad.shape)}")
        d = d.masked_fill(pad.unsqueeze(1), float("inf"))
    kk = min(k, N)
    idx = d.topk(kk, dim=-1, largest=False).indices  # (B, N, kk)
    mask = torch.zeros(B, N, N, dtype=torch.bool, device=pos.device)
    mask.scatter_(2, idx, True)
    if pad is not None:
        # With fewer than k real keys topk also returns padded (inf) keys: drop them.
        mask &= ~pad.unsqueeze(1)
    mask |= torch.eye(N, dtype=torch.bool, device=pos.device).unsqueeze(0)
    return mask


class CrossAttentionMap(nn.Module):
    """Single-head scaled dot-product map between seeds and words, softmax over the seeds.

    ``query_proj`` projects seed features, ``key_proj`` word features, both without bias [IPDN].
    Returns ``(B, F, L)``: for each word a distribution over the (non-padded) seeds.
    """

    def __init__(self, seed_dim: int, word_dim: int, d_model: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.query_proj = nn.Linear(seed_dim, d_model, bias=False)
        self.key_proj = nn.Linear(word_dim, d_model, bias=False)

    def forward(self, seeds: Tensor, words: Tensor, seed_pad: Tensor | None = None) -> Tensor:
        q = self.query_proj(seeds)
        k = self.key_proj(words)
        scores = torch.einsum("bfd,bld->bfl", q, k) / math.sqrt(self.d_model)
        if seed_pad is not None:
            scores = scores.masked_fill(seed_pad.unsqueeze(-1), float("-inf"))
        return scores.softmax(dim=1)


@dataclass
class SamplingResult:
    """Output of ``TextGuidedSampling``.

    ``indices (B, Q)``: chosen seeds (indices into the F seeds), by decreasing relevance;
    ``scores (B, F)``: relevance of every seed (sums to the number of real words);
    ``logits (B, F)``: the same ranking as logits for the sampling loss (the only path by which
    the sampling projections learn: top-k itself has no gradient), see ``relevance_logits``.
    """

    indices: Tensor
    scores: Tensor
    logits: Tensor


def relevance_logits(scores: Tensor, n_words: Tensor, seed_pad: Tensor | None = None) -> Tensor:
    """``log(share * F_real)``: a seed's share of the relevance mass against the uniform share.

    The raw relevance is a sum of softmax weights, never below 0, so used directly as a logit its
    sigmoid never drops below 0.5 and a binary (focal) loss on it is stuck at its constant value
    for the negatives (what the first trainings showed: the sampling loss never moved). The log of
    the share is 0 for a uniform spread, goes to -inf on seeds no word looks at and up to
    log F_real on a seed that takes all the mass; it is monotone in the relevance, so the top-k
    seeds are the same.
    """
    n_real = scores.new_full(scores.shape[:1], scores.shape[1]) if seed_pad is None else (~seed_pad).sum(1).to(scores.dtype)
    share = scores / n_words.to(scores.dtype).clamp_min(1.0).unsqueeze(1)
    return torch.log(share * n_real.unsqueeze(1) + 1e-6)


class TextGuidedSampling(nn.Module):
    """The spec's ``sampling_module``: keep the seeds the sentence talks about.

    relevance_f = sum over real words l of softmax_f(<Wq s_f, Wk w_l> / sqrt(d)); padded words
    contribute nothing. Since each word spreads one unit of mass over the seeds, the relevance
    of all seeds sums to the number of real words. The top ``num_proposal`` seeds (all of them,
    sorted, when there are fewer) are the queries.
    """

    def __init__(self, d_model: int, num_proposal: int) -> None:
        super().__init__()
        if num_proposal < 1:
            raise ValueError(f"num_proposal must be >= 1, got {num_proposal}")
        self.num_proposal = num_proposal
        self.camap = CrossAttentionMap(d_model, d_model, d_model)

    def forward(
        self, seed_feats: Tensor, word_feats: Tensor, word_mask: Tensor, seed_pad: Tensor | None = None
    ) -> SamplingResult:
        """seed_feats (B,F,d), word_feats (B,L,d), word_mask (B,L) True = real token."""
        if word_mask.dtype != torch.bool:
            raise TypeError(f"word_mask must be bool (True = real token), got {word_mask.dtype}")
        attn = self.camap(seed_feats, word_feats, seed_pad)  # (B, F, L)
        scores = (attn * word_mask.unsqueeze(1).to(attn.dtype)).sum(-1)  # (B, F)
        k = min(self.num_proposal, scores.shape[1])
        ranked = scores.detach()
        if seed_pad is not None:
            ranked = ranked.masked_fill(seed_pad, float("-inf"))
        indices = ranked.topk(k, dim=1, sorted=True).indices
        logits = relevance_logits(scores, word_mask.sum(1), seed_pad)
        return SamplingResult(indices=indices, scores=scores, logits=logits)
