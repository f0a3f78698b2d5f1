"""Attention blocks of the BQNet/CFNet decoder, with the official parameter names.

The authors vendor their own ``MultiheadAttention`` with one extra argument, ``att_weights``:
the scaled logits ``(q / sqrt(d_head)) k^T`` are MULTIPLIED by those weights (broadcast over the
heads) before the mask is applied and before the softmax. That is how their spatial prior enters
(exp(-0.3 d^2) weights). ``F.scaled_dot_product_attention`` only takes an additive mask, so it
cannot express a multiplicative weight; ``MultiheadAttention`` below computes ``QK^T`` itself
whenever weights are given or the post-softmax probabilities are wanted, and uses SDPA otherwise.

Parameter names are those of ``nn.MultiheadAttention`` (``in_proj_weight``, ``in_proj_bias``,
``out_proj.*``) and the blocks keep the authors' sub-module names (``attn``, ``norm``, ``glu_p``,
``glu_g``, ``net.0``, ``net.3``), so the official ``dec.*`` tensors load 1:1.

Masks here are bool with True = may attend (SDPA's convention); callers guarantee that no query
row is fully blocked (a fully blocked row would give NaN, as it does in the official code).
Tensors whose sentence axis is one row ``expand``ed (stride 0) are projected once; self-attention's
q, k, v (cross-attention's k, v) come from one GEMM.
``spatial_prior`` is the official distance prior that feeds the logit weights and kNN masks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "shared_rows",
    "squared_distances",
    "spatial_prior",
    "MultiheadAttention",
    "CrossAttentionLayer",
    "SelfAttentionLayer",
    "FFN",
]


def shared_rows(x: Tensor) -> bool:
    """True when all rows of a (T, ...) tensor are one row ``expand``ed (stride 0 over T)."""
    return x.dim() >= 2 and x.shape[0] > 1 and x.stride(0) == 0


def squared_distances(pos_q: Tensor, pos_k: Tensor) -> Tensor:
    """``(T,N,M)`` squared distances of ``pos_q (T,N,3)`` to ``pos_k (T,M,3)`` (the official formula)."""
    return ((pos_q.unsqueeze(2) - pos_k.unsqueeze(1)) ** 2).sum(-1)


def spatial_prior(
    pos_q: Tensor, pos_k: Tensor, k: int | None, gamma: float | None, key_pad: Tensor | None = None,
    dis: Tensor | None = None,
) -> tuple[Tensor | None, Tensor | None]:
    """The official spatial prior (their ``get_scg_weight``) of ``pos_q (T,N,3)`` and ``pos_k (T,M,3)``.

    Returns ``weights = exp(-gamma d^2)`` (None when ``gamma`` is None) and ``allowed`` (None when
    ``k`` is None): True where key j is among the k nearest of query i (``topk`` of the squared
    distances, smallest first; ``key_pad`` True keys are never neighbours; k clamped to the keys).
    ``dis``: ``squared_distances(pos_q, pos_k)`` when the caller has it already (the decoder's
    query-to-query distances, the same in every layer)."""
    if dis is None:
        dis = squared_distances(pos_q, pos_k)
    weights = None if gamma is None else torch.exp(-gamma * dis)
    allowed = None
    if k is not None:
        if key_pad is not None:
            dis = dis.masked_fill(key_pad.unsqueeze(1), float("inf"))
        idx = dis.topk(min(k, dis.shape[-1]), dim=-1, largest=False).indices
        allowed = torch.zeros(dis.shape, dtype=torch.bool, device=dis.device).scatter_(-1, idx, True)
        if key_pad is not None:
            allowed &= ~key_pad.unsqueeze(1)
    return weights, allowed


class MultiheadAttention(nn.Module):
    """Batch-first multi-head attention with optional multiplicative logit weights.

    ``forward(query, key, value, allowed=None, key_padding_mask=None, logit_weights=None,
    need_weights=False)``: ``allowed`` bool ``(T, Nq, Nk)`` True = may attend (or ``(T, 1, Nk)``,
    the same keys for every query: a key padding mask already inverted, which costs no kernel);
    ``key_padding_mask (T, Nk)`` True = padding (blocked); ``logit_weights (T, Nq, Nk)``
    multiply the scaled logits (all heads) before masking. Returns the output ``(T, Nq, d)`` and,
    with ``need_weights``, the head average of the post-softmax probabilities ``(T, Nq, Nk)``
    (what the official code returns and what the coarse-to-fine selection reads).
    """

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % nhead:
            raise ValueError(f"d_model ({d_model}) must be divisible by nhead ({nhead})")
        self.d_model = d_model
        self.nhead = nhead
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _project(self, x: Tensor, first: int, count: int = 1) -> tuple[Tensor, ...]:
        """The projections ``first .. first + count - 1`` (0 q, 1 k, 2 v) of ``x`` by one GEMM, each
        ``(T, H, N, dh)``: self-attention projects q, k and v of one input at once, cross-attention
        k and v of its source (fewer, wider GEMMs; each output element is the same dot product)."""
        d = self.d_model
        w = self.in_proj_weight[first * d:(first + count) * d]
        b = self.in_proj_bias[first * d:(first + count) * d]
        T, N, _ = x.shape
        y = F.linear(x[:1], w, b).expand(T, N, count * d) if shared_rows(x) else F.linear(x, w, b)
        return tuple(y[..., i * d:(i + 1) * d].reshape(T, N, self.nhead, d // self.nhead).transpose(1, 2)
                     for i in range(count))

    @staticmethod
    def _merge(allowed: Tensor | None, kpm: Tensor | None) -> Tensor | None:
        """One bool mask ``(T, 1, Nq|1, Nk)``, True = may attend (broadcast over heads)."""
        keep = None if kpm is None else ~kpm[:, None, None, :]
        if allowed is None:
            return keep
        allowed = allowed.unsqueeze(1)
        return allowed if keep is None else allowed & keep

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        allowed: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        logit_weights: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        T, Nq, d = query.shape
        if query is key and key is value:
            q, k, v = self._project(query, 0, 3)
        elif key is value:
            (q,), (k, v) = self._project(query, 0), self._project(key, 1, 2)
        else:
            (q,), (k,), (v,) = self._project(query, 0), self._project(key, 1), self._project(value, 2)
        mask = self._merge(allowed, key_padding_mask)
        p = self.dropout if self.training else 0.0
        weights = None
        if logit_weights is None and not need_weights:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        else:
            # The official order: scale q, QK^T, times the weights, then the mask, then softmax.
            logits = torch.matmul(q / math.sqrt(d // self.nhead), k.transpose(-1, -2))
            if logit_weights is not None:
                logits = logits * logit_weights.unsqueeze(1)
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf"))
            attn = logits.softmax(-1)
            if need_weights:
                weights = attn.mean(dim=1)
            out = torch.matmul(F.dropout(attn, p, self.training), v)
        out = out.transpose(1, 2).reshape(T, Nq, d)
        return self.out_proj(out), weights


class CrossAttentionLayer(nn.Module):
    """``query + MHA(query, source)``: no dropout and no LayerNorm on the output.

    The official layer computes ``dropout(output)`` and ``norm(output)`` and throws both results
    away, so its output is the bare residual sum. ``norm`` is kept here only so that the
    checkpoints' ``*.norm.weight/bias`` load strictly; it is never applied, and its parameters are
    frozen (``requires_grad`` False) because no loss can reach them.
    """

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = MultiheadAttention(d_model, nhead, dropout)
        self.norm = nn.LayerNorm(d_model)
        self.norm.requires_grad_(False)

    def forward(
        self,
        query: Tensor,
        source: Tensor,
        key_padding_mask: Tensor | None = None,
        allowed: Tensor | None = None,
        logit_weights: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        out, weights = self.attn(query, source, source, allowed, key_padding_mask, logit_weights, need_weights)
        return query + out, weights


class SelfAttentionLayer(nn.Module):
    """Post-norm self-attention ``LN(x + MHA(x))``; with ``glu`` (the seed ``scg_head``) the
    attention output is gated first: ``LN(x + glu_p(a) * sigmoid(glu_g(a)))``."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0, glu: bool = False) -> None:
        super().__init__()
        self.attn = MultiheadAttention(d_model, nhead, dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.glu = glu
        if glu:
            self.glu_p = nn.Linear(d_model, d_model)
            self.glu_g = nn.Linear(d_model, d_model)

    def forward(
        self,
        x: Tensor,
        key_padding_mask: Tensor | None = None,
        allowed: Tensor | None = None,
        logit_weights: Tensor | None = None,
    ) -> Tensor:
        out, _ = self.attn(x, x, x, allowed, key_padding_mask, logit_weights)
        if self.glu:
            out = self.glu_p(out) * torch.sigmoid(self.glu_g(out))
        return self.norm(x + self.dropout(out))


class FFN(nn.Module):
    """Post-norm feed-forward block ``LN(x + net(x))``; ``net`` indices as the official (0: in,
    1: activation, 2: dropout, 3: out, 4: dropout)."""

    def __init__(self, d_model: int, hidden: int, dropout: float = 0.0, activation: str = "gelu") -> None:
        super().__init__()
        if activation not in ("relu", "gelu"):
            raise ValueError(f"activation must be 'relu' or 'gelu', got {activation!r}")
        act = nn.GELU() if activation == "gelu" else nn.ReLU()
        self.net = nn.Sequential(
            nn.Linear(d_model, hidden), act, nn.Dropout(dropout), nn.Linear(hidden, d_model), nn.Dropout(dropout)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.net(x))
