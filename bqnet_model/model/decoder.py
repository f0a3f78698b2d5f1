"""BQNet decoder: text-guided queries refined over superpoints by L layers, with CFR, PSC and DQF.

The layer stack follows IPDN's public decoder (bqnet-spec.md, "Decoder"); BQNet's three modules
are switches (``cfr``, ``psc``, ``dqf``); with all three off the decoder computes IPDN's
(without the optional 2D image branch and the contrastive projections).

Per sentence t (scene tensors ``expand``ed per sentence by the caller):

1. ``lang = lang_norm(lang_proj(words))``; superpoint keys ``X = input_proj(f)``, mask features
   ``Xm = x_mask(f)``.
2. Seeds (FPS indices given by the caller) -> ``scg_head`` (GLU self-attention over each seed's
   ``knn`` nearest seeds) -> ``sampling_module`` keeps ``num_proposal`` seeds ->
   ``query_generator`` MLP = queries Z, positions = their seeds' positions.
3. Prediction head (before layer 1 and after each layer): ``out_norm``; scores =
   ``out_score(out_norm(Z))``; mask logits = ``out_norm(Z) . Xm``; indicator logits =
   ``indi_embedding(Z)`` (target / not target).
4. Layer i:
   CFR (optional) refines X, Xm from the previous prediction;
   ``lqg[i]``: the words attend to the queries (IPDN's code: the language-aware tokens are the
   words enriched with query content; bqnet-spec.md words it the other way round);
   (``lang_att``) ``lla``/``lsa``/``lsa_ffn``: word self-attention, words attend to superpoints, FFN;
   (``prompt_queries``, IPDN's prompt-aware decoder) extra queries appended for this layer;
   ``swa[i]``: queries attend to X under the Mask2Former mask (previous mask logit >= 0, all
   allowed where a query would see nothing) plus the PSC bias (optional);
   Z <- Z + ``rra[i]``(Z) + ``rla[i]``(Z, language-aware tokens) (``rel_pos``, ours: ``rra`` with a
   relative-position bias between the queries);
   ``scg[i]``: query self-attention over each query's ``knn`` nearest (fixed, by seed position)
   or, with DQF, the per-layer shrinking graph and distance bias;
   ``swa_ffn[i]``.
   Residual blocks are post-norm. IPDN's code computes the LayerNorm of its cross-attention
   blocks (``lqg``, ``swa``, ``rla``, ``lsa``) but discards the result: ``cross_attn_norm``
   False (default) reproduces that (those norms are then not created, so official checkpoints
   carry four ``*.norm.*`` keys per layer that have no counterpart here), True applies them.

Padded superpoints (``sp_pad``) never receive attention, never enter positions or CFR, and
their mask logits are set to ``PAD_LOGIT``; padded words never receive attention.
Attention runs through ``F.scaled_dot_product_attention`` with masks shaped ``(T,1,Q,S)``
(broadcast over heads, never repeated per head as in the original), and scene tensors that
arrive ``expand``ed (stride 0 over sentences) are projected once, not once per sentence.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cfr import CrossLayerFeatureRefinement
from .dqf import DistanceAwareQueryFocusing
from .psc import ProgressiveSpatialConstraint, query_centres, scene_extent
from .query_sampling import TextGuidedSampling, knn_mask
from .relpos import RelativePositionBias

# torch 2.13's own nn.MultiheadAttention asks torch.fx.is_fx_tracing() and logs a one-time deprecation
# warning about it into every node and CLI log; it says nothing about our code.
logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)

__all__ = [
    "PAD_LOGIT",
    "DecoderConfig",
    "LayerPrediction",
    "DecoderOutput",
    "BQNetDecoder",
    "MultiheadAttention",
    "CrossAttentionLayer",
    "SelfAttentionLayer",
    "FFN",
]

# Mask logit written at padded superpoints: finite (safe in fp16 and in BCE), sigmoid == 0.
PAD_LOGIT: float = -1.0e4


@dataclass
class DecoderConfig:
    """Decoder sizes and switches (names and defaults of bqnet-spec.md / IPDN).

    in_channels: superpoint feature size (backbone ``media``); text_channels: text encoder size
    (768 RoBERTa, 384 MiniLM); fps_num seeds, num_proposal queries (min(num_proposal, seeds)
    in practice); knn: neighbours of the spatial context graph (seeds, and queries without DQF);
    attn_mask: Mask2Former-style masked cross-attention; ffn_activation: IPDN's configs use gelu.
    cross_attn_norm: see the module docstring (False = IPDN's code).
    lang_att: IPDN's optional word self-attention + word-to-superpoint attention per layer.
    prompt_queries: IPDN's prompt-aware decoder: from layer ``prompt_start_layer`` on, queries
    whose target probability exceeds ``prompt_threshold`` are copied, weighted by a softmax of
    the attention the words pay them, as extra queries for that layer's attentions.
    cfr / psc / dqf: BQNet's modules (formulas in cfr.py, psc.py, dqf.py). Radii in metres;
    a ``*_radius_start`` of None means the diagonal of the scene's bounding box.
    rel_pos (ours, not in the paper; off = BQNet): a learned per-head bias from the relative
    position of two queries in ``rra``, the queries' global self-attention (relpos.py), with an
    MLP of ``rel_pos_hidden`` units; ``rel_pos_text`` (needs ``rel_pos``) makes that bias depend on
    the sentence (relpos.py).
    """

    in_channels: int = 32
    text_channels: int = 768
    d_model: int = 256
    nhead: int = 8
    ffn: int = 1024
    dropout: float = 0.0
    ffn_activation: Literal["relu", "gelu"] = "relu"
    num_layers: int = 6
    fps_num: int = 512
    num_proposal: int = 128
    knn: int = 8
    attn_mask: bool = True
    cross_attn_norm: bool = False
    lang_att: bool = False
    prompt_queries: bool = False
    prompt_threshold: float = 0.75
    prompt_start_layer: int = 1
    cfr: bool = True
    psc: bool = True
    psc_radius_start: float | None = None
    psc_radius_end: float = 1.0
    psc_centre_prior: float = 1.0
    dqf: bool = True
    dqf_k_start: int | None = None
    dqf_k_end: int = 4
    dqf_radius_start: float | None = None
    dqf_radius_end: float | None = 1.0
    rel_pos: bool = False
    rel_pos_hidden: int = 32
    rel_pos_text: bool = False

    def __post_init__(self) -> None:
        for name in ("in_channels", "text_channels", "d_model", "nhead", "ffn", "num_layers",
                     "fps_num", "num_proposal", "knn", "dqf_k_end", "rel_pos_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"decoder.{name} must be a positive integer, got {value!r}")
        if self.d_model % self.nhead:
            raise ValueError(f"decoder.d_model ({self.d_model}) must be divisible by nhead ({self.nhead})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"decoder.dropout must be in [0, 1), got {self.dropout}")
        if self.ffn_activation not in ("relu", "gelu"):
            raise ValueError(f"decoder.ffn_activation must be 'relu' or 'gelu', got {self.ffn_activation!r}")
        if not 0.0 < self.prompt_threshold < 1.0:
            raise ValueError(f"decoder.prompt_threshold must be in (0, 1), got {self.prompt_threshold}")
        if self.prompt_start_layer < 0:
            raise ValueError(f"decoder.prompt_start_layer must be >= 0, got {self.prompt_start_layer}")
        if self.rel_pos_text and not self.rel_pos:
            raise ValueError("decoder.rel_pos_text needs decoder.rel_pos: true")
        if self.dqf_k_start is not None and self.dqf_k_start < 1:
            raise ValueError(f"decoder.dqf_k_start must be >= 1 or None, got {self.dqf_k_start}")
        for name in ("psc_radius_start", "psc_radius_end", "dqf_radius_start", "dqf_radius_end",
                     "psc_centre_prior"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"decoder.{name} must be > 0 (or None where allowed), got {value}")


@dataclass
class LayerPrediction:
    """One prediction of the decoder: ``masks (T,Q,S)`` logits (``PAD_LOGIT`` on padding),
    ``scores (T,Q)`` mask-quality scores, ``indi (T,Q,2)`` logits [not target, target]."""

    masks: Tensor
    scores: Tensor
    indi: Tensor


@dataclass
class DecoderOutput:
    """``layers``: the prediction before layer 1, then one per layer (only the last one when the
    decoder ran with ``keep_all_layers=False``). ``query_sp_idx (T,Q)``: superpoint of each
    query's seed (what makes a query positive in the loss); ``query_pos (T,Q,3)``: that seed's
    position; ``sample_idx (T,Q)``: chosen seeds (indices into ``seed_idx``); ``seed_idx (T,F)``:
    the FPS seeds given; ``seed_scores (T,F)``: text relevance logits of every seed (sampling loss);
    ``centres``: query positions used by PSC/DQF before each layer (empty when both are off);
    ``sem_logits (B,S,K)``: the auxiliary semantic head's superpoint logits per scene (set by
    ``BQNet.forward`` when the model has one, else None)."""

    layers: list[LayerPrediction]
    query_sp_idx: Tensor
    query_pos: Tensor
    sample_idx: Tensor
    seed_idx: Tensor
    seed_scores: Tensor
    centres: list[Tensor] = field(default_factory=list)
    sem_logits: Tensor | None = None

    @property
    def final(self) -> LayerPrediction:
        """The last layer's prediction (what inference uses)."""
        return self.layers[-1]


def _shared_rows(x: Tensor) -> bool:
    """True when all rows of a (T, ...) tensor are one row ``expand``ed (stride 0 over T)."""
    return x.dim() >= 2 and x.shape[0] > 1 and x.stride(0) == 0


def _rowwise(fn: nn.Module, x: Tensor) -> Tensor:
    """``fn(x)`` computed once for an expanded tensor and expanded again (no per-row copies)."""
    if _shared_rows(x):
        y = fn(x[:1])
        return y.expand(x.shape[0], *y.shape[1:])
    return fn(x)


class MultiheadAttention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameter names (so IPDN/BQNet
    checkpoints load 1:1), computed by ``F.scaled_dot_product_attention``.

    ``attn_mask``: bool (True = may attend) or float (added to the logits), shaped
    ``(T, Nq, Nk)`` or ``(T, 1|H, Nq, Nk)`` (a head axis of 1 broadcasts: no per-head copies);
    ``key_padding_mask (T, Nk)`` True = padding. Callers guarantee no query row is fully masked.
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

    def _project(self, x: Tensor, part: int) -> Tensor:
        d = self.d_model
        w = self.in_proj_weight[part * d:(part + 1) * d]
        b = self.in_proj_bias[part * d:(part + 1) * d]
        T, N, _ = x.shape
        y = F.linear(x[:1], w, b).expand(T, N, d) if _shared_rows(x) else F.linear(x, w, b)
        return y.view(T, N, self.nhead, d // self.nhead).transpose(1, 2)  # (T, H, N, dh)

    def _merge_masks(self, attn_mask: Tensor | None, kpm: Tensor | None, dtype: torch.dtype) -> Tensor | None:
        if attn_mask is not None and attn_mask.dim() == 3:
            attn_mask = attn_mask.unsqueeze(1)
        if kpm is None:
            if attn_mask is not None and attn_mask.dtype != torch.bool:
                attn_mask = attn_mask.to(dtype)
            return attn_mask
        keep = ~kpm[:, None, None, :]
        if attn_mask is None:
            return keep
        if attn_mask.dtype == torch.bool:
            return attn_mask & keep
        return attn_mask.masked_fill(~keep, float("-inf")).to(dtype)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attn_mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """``(T,Nq,d)`` output and, with ``need_weights``, head-averaged weights ``(T,Nq,Nk)``."""
        T, Nq, d = query.shape
        q = self._project(query, 0)
        k = self._project(key, 1)
        v = self._project(value, 2)
        mask = self._merge_masks(attn_mask, key_padding_mask, q.dtype)
        weights = None
        if need_weights:
            logits = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d // self.nhead)
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask
            attn = logits.softmax(-1)
            weights = attn.mean(dim=1)
            attn = F.dropout(attn, self.dropout, self.training)
            out = torch.matmul(attn, v)
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
            )
        out = out.transpose(1, 2).reshape(T, Nq, d)
        return self.out_proj(out), weights


class CrossAttentionLayer(nn.Module):
    """``query + attn(query, source)``, then LayerNorm if ``use_norm`` (IPDN: not applied)."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0, use_norm: bool = True) -> None:
        super().__init__()
        self.attn = MultiheadAttention(d_model, nhead, dropout)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model) if use_norm else None

    def forward(
        self,
        query: Tensor,
        source: Tensor,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        out, weights = self.attn(query, source, source, attn_mask, key_padding_mask, need_weights)
        out = query + self.dropout(out)
        if self.norm is not None:
            out = self.norm(out)
        return out, weights


class SelfAttentionLayer(nn.Module):
    """Post-norm self-attention; ``glu`` gates the attention output (IPDN's ``scg_head``)."""

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
        self, x: Tensor, key_padding_mask: Tensor | None = None, attn_mask: Tensor | None = None
    ) -> Tensor:
        out, _ = self.attn(x, x, x, attn_mask, key_padding_mask)
        if self.glu:
            out = self.glu_p(out) * torch.sigmoid(self.glu_g(out))
        return self.norm(x + self.dropout(out))


class FFN(nn.Module):
    """Post-norm feed-forward block; ``net`` indices match IPDN's (0: in, 3: out)."""

    def __init__(self, d_model: int, hidden: int, dropout: float = 0.0, activation: str = "relu") -> None:
        super().__init__()
        act = nn.GELU() if activation == "gelu" else nn.ReLU()
        self.net = nn.Sequential(
            nn.Linear(d_model, hidden), act, nn.Dropout(dropout), nn.Linear(hidden, d_model), nn.Dropout(dropout)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.net(x))


def _gather_rows(x: Tensor, idx: Tensor) -> Tensor:
    """``x (T,N,C)`` rows ``idx (T,K)`` -> ``(T,K,C)``."""
    return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class BQNetDecoder(nn.Module):
    """The decoder (module docstring). ``forward`` returns a ``DecoderOutput``."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        if not isinstance(cfg, DecoderConfig):
            raise TypeError(f"BQNetDecoder expects a DecoderConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        d, h, p, n = cfg.d_model, cfg.nhead, cfg.dropout, cfg.num_layers
        self.input_proj = nn.Sequential(nn.Linear(cfg.in_channels, d), nn.LayerNorm(d), nn.ReLU())
        self.x_mask = nn.Sequential(nn.Linear(cfg.in_channels, d), nn.ReLU(), nn.Linear(d, d))
        self.lang_proj = nn.Linear(cfg.text_channels, d)
        self.lang_norm = nn.LayerNorm(d)
        self.scg_head = SelfAttentionLayer(d, h, 0.0, glu=True)
        self.sampling_module = TextGuidedSampling(d, cfg.num_proposal)
        self.query_generator = nn.Sequential(
            nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d)
        )
        cn = cfg.cross_attn_norm
        self.lqg = nn.ModuleList([CrossAttentionLayer(d, h, p, cn) for _ in range(n)])
        self.swa_layers = nn.ModuleList([CrossAttentionLayer(d, h, p, cn) for _ in range(n)])
        self.rra_layers = nn.ModuleList([SelfAttentionLayer(d, h, p) for _ in range(n)])
        self.rla_layers = nn.ModuleList([CrossAttentionLayer(d, h, p, cn) for _ in range(n)])
        self.scg = nn.ModuleList([SelfAttentionLayer(d, h, p) for _ in range(n)])
        self.swa_ffn_layers = nn.ModuleList([FFN(d, cfg.ffn, p, cfg.ffn_activation) for _ in range(n)])
        self.rel_pos = (
            nn.ModuleList([RelativePositionBias(h, cfg.rel_pos_hidden, d if cfg.rel_pos_text else None)
                           for _ in range(n)]) if cfg.rel_pos else None
        )
        if cfg.lang_att:
            self.lla_layers = nn.ModuleList([SelfAttentionLayer(d, h, p) for _ in range(n)])
            self.lsa_layers = nn.ModuleList([CrossAttentionLayer(d, h, p, cn) for _ in range(n)])
            self.lsa_ffn_layers = nn.ModuleList([FFN(d, cfg.ffn, p, cfg.ffn_activation) for _ in range(n)])
        self.out_norm = nn.LayerNorm(d)
        self.out_score = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 1))
        self.indi_embedding = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 2), nn.Linear(2, 2))
        self.cfr = nn.ModuleList([CrossLayerFeatureRefinement(d) for _ in range(n)]) if cfg.cfr else None
        self.psc = (
            ProgressiveSpatialConstraint(n, cfg.psc_radius_end, cfg.psc_radius_start, cfg.psc_centre_prior)
            if cfg.psc else None
        )
        self.dqf = (
            DistanceAwareQueryFocusing(n, cfg.dqf_k_end, cfg.dqf_k_start, cfg.dqf_radius_end, cfg.dqf_radius_start)
            if cfg.dqf else None
        )

    # ------------------------------------------------------------------ checks
    def _check_inputs(
        self, sp_feats: Tensor, sp_xyz: Tensor, sp_pad: Tensor, seed_idx: Tensor, word_feats: Tensor, word_mask: Tensor,
        check_values: bool = True,
    ) -> None:
        named = dict(sp_feats=sp_feats, sp_xyz=sp_xyz, sp_pad=sp_pad, seed_idx=seed_idx,
                     word_feats=word_feats, word_mask=word_mask)
        dims = dict(sp_feats=3, sp_xyz=3, sp_pad=2, seed_idx=2, word_feats=3, word_mask=2)
        for name, x in named.items():
            if not isinstance(x, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
            if x.dim() != dims[name]:
                raise ValueError(f"{name} must have {dims[name]} dimensions, got shape {tuple(x.shape)}")
        for name in ("sp_feats", "sp_xyz", "word_feats"):
            if not named[name].is_floating_point():
                raise TypeError(f"{name} must be a floating point tensor, got {named[name].dtype}")
        for name in ("sp_pad", "word_mask"):
            if named[name].dtype != torch.bool:
                raise TypeError(f"{name} must be a bool tensor, got {named[name].dtype}")
        if seed_idx.dtype != torch.long:
            raise TypeError(f"seed_idx must be int64 (torch.long), got {seed_idx.dtype}")
        T, S, C = sp_feats.shape
        expect = dict(sp_xyz=(T, S, 3), sp_pad=(T, S), word_mask=tuple(word_feats.shape[:2]))
        for name, shape in expect.items():
            if tuple(named[name].shape) != shape:
                raise ValueError(f"{name} must have shape {shape}, got {tuple(named[name].shape)}")
        if seed_idx.shape[0] != T or word_feats.shape[0] != T:
            raise ValueError(
                f"sentence axis mismatch: sp_feats has T={T}, seed_idx {seed_idx.shape[0]}, "
                f"word_feats {word_feats.shape[0]}"
            )
        if C != self.cfg.in_channels:
            raise ValueError(f"sp_feats has {C} channels, decoder.in_channels is {self.cfg.in_channels}")
        if word_feats.shape[-1] != self.cfg.text_channels:
            raise ValueError(
                f"word_feats has {word_feats.shape[-1]} channels, decoder.text_channels is {self.cfg.text_channels}"
            )
        if S == 0 or seed_idx.shape[1] == 0 or word_feats.shape[1] == 0:
            raise ValueError(f"empty input: S={S}, seeds={seed_idx.shape[1]}, words={word_feats.shape[1]}")
        if not check_values:  # the two value checks below are the forward's only host syncs
            return
        bad_range = (seed_idx < 0) | (seed_idx >= S)
        if bool(bad_range.any()):
            raise ValueError(f"seed_idx must index superpoints in [0, {S}), got values outside")
        if bool(sp_pad.gather(1, seed_idx).any()):
            raise ValueError("seed_idx points at padded superpoints (use farthest_point_sample with pad)")

    # ------------------------------------------------------------------ heads
    def _mask_logits(self, qn: Tensor, mask_feats: Tensor) -> Tensor:
        if _shared_rows(mask_feats):
            return torch.matmul(qn, mask_feats[0].transpose(0, 1))  # one GEMM, no per-row copy
        return torch.bmm(qn, mask_feats.transpose(1, 2))

    def _predict(self, query: Tensor, mask_feats: Tensor, sp_pad: Tensor) -> LayerPrediction:
        qn = self.out_norm(query)
        masks = self._mask_logits(qn, mask_feats)
        masks = masks.masked_fill(sp_pad.unsqueeze(1), PAD_LOGIT)
        return LayerPrediction(
            masks=masks, scores=self.out_score(qn).squeeze(-1), indi=self.indi_embedding(query)
        )

    @staticmethod
    def _allowed_from_masks(mask_logits: Tensor, kpad: Tensor) -> Tensor:
        """Mask2Former rule: attend where the mask logit >= 0; a query that would see nothing
        sees every (real) superpoint. ``(T,Q,S)`` bool, True = may attend."""
        blocked = (mask_logits < 0) | kpad.unsqueeze(1)
        empty = blocked.all(dim=-1, keepdim=True)
        return ~((blocked & ~empty) | kpad.unsqueeze(1))

    def _prompts(self, query: Tensor, word_to_query: Tensor, indi: Tensor, word_mask: Tensor) -> Tensor:
        """IPDN's prompt queries: copies of the confident queries weighted by a softmax (over the
        confident ones) of the attention mass the real words pay them; zero where none."""
        confident = indi.softmax(-1)[..., 1] > self.cfg.prompt_threshold  # (T, Q)
        mass = (word_to_query * word_mask.unsqueeze(-1).to(word_to_query.dtype)).sum(1)  # (T, Q)
        any_conf = confident.any(dim=-1, keepdim=True)
        logits = mass.masked_fill(~confident, float("-inf")).masked_fill(~any_conf, 0.0)
        weight = logits.softmax(-1) * any_conf.to(mass.dtype)
        return weight.unsqueeze(-1) * query

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        sp_feats: Tensor,
        sp_xyz: Tensor,
        sp_pad: Tensor,
        seed_idx: Tensor,
        word_feats: Tensor,
        word_mask: Tensor,
        keep_all_layers: bool = True,
        check_values: bool = True,
    ) -> DecoderOutput:
        """See the module docstring. Shapes: sp_feats (T,S,C_in), sp_xyz (T,S,3), sp_pad (T,S)
        True = padding, seed_idx (T,F) long, word_feats (T,L,C_text), word_mask (T,L) True = real.
        ``keep_all_layers`` False keeps only the last prediction (inference: less memory).
        ``check_values`` False skips the checks that read tensor values (seed indices in range and
        not on padding): then the forward never waits for the device, which a CUDA graph capture
        needs (``Segmenter`` passes False: its seeds come from ``farthest_point_sample``)."""
        self._check_inputs(sp_feats, sp_xyz, sp_pad, seed_idx, word_feats, word_mask, check_values)
        cfg = self.cfg
        # A row that is all padding would make every softmax over it NaN: such a row (no
        # superpoint / no token) attends to its padding instead; its output is meaningless but
        # finite, and the loss ignores it.
        kpad = sp_pad & ~sp_pad.all(dim=1, keepdim=True)
        wpad = ~word_mask
        wpad = wpad & ~wpad.all(dim=1, keepdim=True)

        lang = self.lang_norm(self.lang_proj(word_feats))
        sentence = None
        if cfg.rel_pos_text:  # mean of the real words (rel_pos_text): what the relative-position bias reads
            keep = (~wpad).unsqueeze(-1).to(lang.dtype)
            sentence = (lang * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        feats = _rowwise(self.input_proj, sp_feats)
        mask_feats = _rowwise(self.x_mask, sp_feats)

        seed_pos = _gather_rows(sp_xyz, seed_idx)
        if _shared_rows(feats) and _shared_rows(sp_xyz) and _shared_rows(seed_idx):
            # One scene for all sentences: the seed context does not depend on the sentence.
            s0 = self.scg_head(_gather_rows(feats[:1], seed_idx[:1]), attn_mask=knn_mask(seed_pos[:1], cfg.knn))
            seed_feats = s0.expand(seed_idx.shape[0], *s0.shape[1:])
        else:
            seed_feats = _gather_rows(feats, seed_idx)
            seed_feats = self.scg_head(seed_feats, attn_mask=knn_mask(seed_pos, cfg.knn))
        sampled = self.sampling_module(seed_feats, lang, ~wpad)
        sample_idx = sampled.indices
        query = self.query_generator(_gather_rows(seed_feats, sample_idx))
        query_pos = _gather_rows(seed_pos, sample_idx)
        query_sp_idx = seed_idx.gather(1, sample_idx)
        Q = query.shape[1]

        fixed_graph = None if self.dqf is not None else knn_mask(query_pos, cfg.knn)
        extent = scene_extent(sp_xyz, sp_pad) if (self.psc is not None or self.dqf is not None) else None
        pred = self._predict(query, mask_feats, sp_pad)
        layers = [pred]
        centres_used: list[Tensor] = []

        for i in range(cfg.num_layers):
            if self.cfr is not None:
                feats, mask_feats = self.cfr[i](feats, mask_feats, query, pred.masks, pred.indi, sp_pad)
            centres = None
            if extent is not None:
                prior = cfg.psc_centre_prior
                centres = query_centres(pred.masks, sp_xyz, sp_pad, query_pos, prior)
                centres_used.append(centres)

            use_prompts = cfg.prompt_queries and i >= cfg.prompt_start_layer
            lang_q, word_to_query = self.lqg[i](lang, query, need_weights=use_prompts)
            if cfg.lang_att:
                lang_q = self.lla_layers[i](lang_q, key_padding_mask=wpad)
                lang_q, _ = self.lsa_layers[i](lang_q, feats, key_padding_mask=kpad)
                lang_q = self.lsa_ffn_layers[i](lang_q)

            q_all, pos_all, prev_masks = query, centres, pred.masks
            if use_prompts:
                prompts = self._prompts(query, word_to_query, pred.indi, ~wpad)
                q_all = torch.cat([query, prompts], dim=1)
                prompt_masks = self._mask_logits(self.out_norm(prompts), mask_feats)
                prev_masks = torch.cat([pred.masks, prompt_masks.masked_fill(sp_pad.unsqueeze(1), PAD_LOGIT)], 1)
                pos_all = None if centres is None else torch.cat([centres, centres], dim=1)

            swa_mask = self._allowed_from_masks(prev_masks, kpad).unsqueeze(1) if cfg.attn_mask else None
            if self.psc is not None:
                bias = self.psc(i, pos_all, sp_xyz, extent)
                swa_mask = bias if swa_mask is None else bias.masked_fill(~swa_mask, float("-inf"))
            q_all, _ = self.swa_layers[i](q_all, feats, key_padding_mask=kpad, attn_mask=swa_mask)
            rra_bias = None
            if self.rel_pos is not None:
                pos = pos_all
                if pos is None:
                    pos = torch.cat([query_pos, query_pos], dim=1) if use_prompts else query_pos
                rra_bias = self.rel_pos[i](pos, sentence)
            q_rra = self.rra_layers[i](q_all, attn_mask=rra_bias)
            q_rla, _ = self.rla_layers[i](q_all, lang_q, key_padding_mask=wpad)
            q_all = q_all + q_rra + q_rla

            if self.dqf is not None:
                allowed, dbias = self.dqf(i, centres, extent)
                graph = allowed.unsqueeze(1) if dbias is None else dbias.masked_fill(~allowed.unsqueeze(1), float("-inf"))
            else:
                graph = fixed_graph
            head = self.scg[i](q_all[:, :Q], attn_mask=graph)
            q_all = torch.cat([head, q_all[:, Q:]], dim=1) if q_all.shape[1] > Q else head
            q_all = self.swa_ffn_layers[i](q_all)
            query = q_all[:, :Q]

            pred = self._predict(query, mask_feats, sp_pad)
            if keep_all_layers:
                layers.append(pred)
            else:
                layers = [pred]

        return DecoderOutput(
            layers=layers,
            query_sp_idx=query_sp_idx,
            query_pos=query_pos,
            sample_idx=sample_idx,
            seed_idx=seed_idx,
            seed_scores=sampled.logits,
            centres=centres_used,
        )
