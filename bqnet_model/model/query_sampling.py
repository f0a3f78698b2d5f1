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
]


def _check_tensor(name: str, x: object, ndim: int) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    return x


@torch.no_grad()
def farthest_point_sample(xyz: Tensor, n: int, pad: Tensor | None = None) -> Tensor:
    """Farthest point sampling of ``n`` indices per batch row; ``(B, S, 3) -> (B, n)`` long.

    Deterministic: row b starts at its first non-padded point, then repeatedly takes the point
    farthest (squared Euclidean) from all points taken so far; ties go to the lowest index.
    Padded points (``pad`` True) are never taken. A row with fewer than ``n`` real points first
    takes all of them in FPS order, then cycles through that order again (index ``j`` repeats
    index ``j mod n_real``), so the output always has ``n`` columns and only real indices.
    The loop runs over ``n`` (not over points or rows), so it works on CUDA as on CPU.
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

    pts = xyz.float()
    rows = torch.arange(B, device=xyz.device)
    out = torch.empty(B, n, dtype=torch.long, device=xyz.device)
    # Min squared distance to the chosen set; padded points get -1 so they never win the argmax
    # (real points already taken have 0, which still beats -1 once every real point is taken).
    dist = torch.full((B, S), float("inf"), device=xyz.device)
    dist.masked_fill_(pad, -1.0)
    cur = (~pad).to(torch.uint8).argmax(dim=1)  # first non-padded index (argmax takes the first max)
    for j in range(n):
        out[:, j] = cur
        d = (pts - pts[rows, cur].unsqueeze(1)).square().sum(-1)
        dist = torch.minimum(dist, d)
        dist.masked_fill_(pad, -1.0)
        cur = dist.argmax(dim=1)
    if n > int(n_real.min()):
        # Rows with fewer than n real points: replace the tail by a cyclic repeat of the FPS order.
        j = torch.arange(n, device=xyz.device).unsqueeze(0)  # (1, n)
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
    ``scores (B, F)``: relevance of every seed (supervised by the sampling loss, the only path
    by which the sampling projections learn: top-k itself has no gradient).
    """

    indices: Tensor
    scores: Tensor


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
        return SamplingResult(indices=indices, scores=scores)
