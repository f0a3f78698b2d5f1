"""The BQNet decoder, ported from the authors' CFNet code (their class ``DEC``).

Sub-module names are the official ones, so an official checkpoint's ``dec.<key>`` loads as
``decoder.<key>`` with ``strict=True``. Per sentence t (scene tensors ``expand``ed per sentence by
the caller), with X the superpoint features, P their centres, Z the queries, p_q each query's
FIXED seed position and W the words:

1. ``W = lang_norm(lang_proj(words))``; ``X = sum_norm(input_proj(x) + input_proj_2d(img))``
   (see "2D image features"); mask features ``M = x_mask(x)``, fixed for all layers. Padded
   superpoints get zero features and positions, as the official batching pads after projecting.
2. Seeds (FPS indices given by the caller) -> ``scg_head``: GLU self-attention over all seeds,
   logits multiplied by exp(-gamma d^2) -> ``sampling_module`` keeps ``num_proposal`` seeds ->
   ``query_generator`` MLP = Z; p_q = the chosen seeds' positions.
3. Prediction head (before layer 0 and after each layer): ``out_norm(Z)`` feeds ``out_score`` and
   the mask logits ``out_norm(Z) . M``; ``indi_embedding`` and the contrastive projection read the
   un-normed Z. The next coarse attention may only see superpoints with sigmoid >= 0.5 (all real
   ones when a query would see none) when ``attn_mask``. Inference (``keep_all_layers=False``)
   keeps the last prediction only, so the heads run there only; the mask logits of every step
   still feed the next attention mask.
4. Layer i, in the official order: ``lla`` (word self-attention) -> ``lia`` (words attend to X)
   -> ``ila`` (X, padded rows included, attends to the words) -> ``lia_ffn``, ``ila_ffn`` (W and X
   are carried to the next layer) -> coarse ``qia`` (Z attends to X under the mask of step 3) ->
   ``qia_ffn`` -> [CFR + PSC] fine ``qia_layers_fine`` -> Z = (coarse + fine) / 2 with coarse taken
   before its FFN -> ``qla`` (Z attends to W) -> ``qqa`` [DQF] -> Z = norm_qqa(qqa + qla) ->
   ``qqa_ffn`` -> prediction head.

The five cross-attention blocks (``qia``, ``qia_layers_fine``, ``qla``, ``lia``, ``ila``) apply no
LayerNorm and no dropout: the official layer computes both and discards them (attention.py).

Which code is which paper module. The authors' code names none of CFR, PSC or DQF and has no
switches; the mapping below matches the paper's descriptions to the three mechanisms that are new
relative to IPDN. It is an inference, not a statement of the authors:

* ``cfr`` (Coarse-to-Fine Refinement, "attention focuses gradually on foreground features"): the
  coarse attention's head-averaged probabilities (padding zeroed) are summed over queries; the
  ``num_proposal_fine`` superpoints with the largest sum (all slots 0..S-1 when the batch is
  narrower, padding included, and no key padding in the fine stage: official behaviour) are the
  keys of a second, fine cross-attention whose query is ``qia_ffn(coarse)``; the result is
  averaged with the coarse output. Off: Z = qia_ffn(coarse), no fine stage.
* ``psc`` (Progressive Spatial Constraint): the spatial prior. In the fine stage each query sees
  only its ``num_proposal_query_inst[i]`` nearest keys (squared distance from p_q) and the logits
  are multiplied by exp(-gamma d^2); the same weights (no kNN) in ``scg_head``. Off: neither.
  With ``cfr`` off and ``psc`` on, the fine stage still runs, over all real superpoints (key
  padding masked, padded keys never neighbours), so PSC can be ablated on its own.
* ``dqf`` (Distance-aware Query Focusing): ``qqa`` masked to each query's
  ``num_proposal_query[i]`` nearest queries (self included). Off: global query self-attention.

kNN sizes larger than the number of keys are clamped (the official code would raise there).

2D image features. The official model always adds ``input_proj_2d`` of a 1024-d per-superpoint
CLIP feature. ``image_channels`` 0 builds no 2D branch (our own models, trained without images).
A model with the branch run without features (``image_feats`` None) computes
``sum_norm(input_proj(x))`` and warns once: that is an approximation outside the training
distribution (never zeros: ``input_proj_2d(0)`` is an arbitrary bias vector).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import FFN, CrossAttentionLayer, SelfAttentionLayer, shared_rows, spatial_prior, squared_distances
from .query_sampling import TextGuidedSampling

# torch 2.13 logs a one-time deprecation warning from torch.fx.is_fx_tracing into every log; it says
# nothing about our code.
logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)

__all__ = ["PAD_LOGIT", "DecoderConfig", "LayerPrediction", "DecoderOutput", "BQNetDecoder", "spatial_prior"]

# Mask logit written at padded superpoints: finite (safe in fp16 and in BCE), sigmoid == 0.
PAD_LOGIT: float = -1.0e4
_OFFICIAL_K = [128, 64, 32, 16, 8, 4]


@dataclass
class DecoderConfig:
    """Decoder sizes and switches; defaults = the authors' ``configs/res.yaml`` except
    ``image_channels`` (official 1024; 0 = no 2D branch, the default for our own models).

    in_channels: superpoint feature size (backbone ``media``); text_channels: word feature size
    (768 RoBERTa, 384 MiniLM; 0 = the text encoder's, filled in by ``BQNet``; the authors' ``DEC``
    hard-codes 768 whatever the encoder); fps_num seeds; num_proposal queries; num_proposal_fine: keys of the
    fine stage (CFR); num_proposal_query / num_proposal_query_inst: per-layer kNN sizes of DQF and
    of the fine stage (PSC), one entry per layer (None: num_proposal halved every layer, which for
    128 queries and 6 layers is the authors' [128, 64, 32, 16, 8, 4]); attn_mask: Mask2Former masked coarse attention;
    contrastive_align: build the contrastive projections (``contrastive_dim``-d; only the loss
    reads them); spatial_gamma: gamma of the exp(-gamma d^2) prior (hard-coded 0.3 officially).
    cfr / psc / dqf: see the module docstring (all True = the authors' decoder).
    fine_mask_padding: padded superpoint slots never become keys of the fine stage. The authors'
    code (False) lets them in when a scene of the batch has fewer real superpoints than
    ``num_proposal_fine``, so its answer depends on what the scene was batched with; with one
    unpadded scene both are the same function. True keeps answers independent of padding, which a
    CUDA graph's superpoint bucket adds; ``from_official`` and the fixture check use False.
    """

    in_channels: int = 32
    text_channels: int = 0
    image_channels: int = 0
    d_model: int = 256
    nhead: int = 8
    ffn: int = 1024
    dropout: float = 0.0
    ffn_activation: Literal["relu", "gelu"] = "gelu"
    num_layers: int = 6
    fps_num: int = 256
    num_proposal: int = 128
    num_proposal_fine: int = 512
    num_proposal_query: list[int] | None = None
    num_proposal_query_inst: list[int] | None = None
    attn_mask: bool = True
    contrastive_align: bool = True
    contrastive_dim: int = 64
    spatial_gamma: float = 0.3
    cfr: bool = True
    psc: bool = True
    dqf: bool = True
    fine_mask_padding: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.text_channels, bool) or not isinstance(self.text_channels, int) or self.text_channels < 0:
            raise ValueError(f"decoder.text_channels must be >= 0 (0 = the text encoder's size), got {self.text_channels!r}")
        for name in ("in_channels", "d_model", "nhead", "ffn", "num_layers", "fps_num",
                     "num_proposal", "num_proposal_fine", "contrastive_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"decoder.{name} must be a positive integer, got {value!r}")
        if isinstance(self.image_channels, bool) or not isinstance(self.image_channels, int) or self.image_channels < 0:
            raise ValueError(f"decoder.image_channels must be >= 0 (0 = no 2D branch), got {self.image_channels!r}")
        if self.d_model % self.nhead:
            raise ValueError(f"decoder.d_model ({self.d_model}) must be divisible by nhead ({self.nhead})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"decoder.dropout must be in [0, 1), got {self.dropout}")
        if self.ffn_activation not in ("relu", "gelu"):
            raise ValueError(f"decoder.ffn_activation must be 'relu' or 'gelu', got {self.ffn_activation!r}")
        if self.spatial_gamma <= 0:
            raise ValueError(f"decoder.spatial_gamma must be > 0, got {self.spatial_gamma}")
        for name in ("num_proposal_query", "num_proposal_query_inst"):
            if getattr(self, name) is None:  # the authors' schedule: halve from num_proposal every layer
                setattr(self, name, [max(1, self.num_proposal >> i) for i in range(self.num_layers)])
            ks = list(getattr(self, name))
            if len(ks) != self.num_layers or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
                raise ValueError(
                    f"decoder.{name} must list one positive integer per layer ({self.num_layers}), got {ks!r}"
                )
            setattr(self, name, ks)

    @classmethod
    def from_official(cls, model_cfg: dict, text_channels: int = 768, image_channels: int = 1024) -> "DecoderConfig":
        """The config of the official ``DEC`` built from a CFNet ``model:`` block (the yaml form:
        ``dec`` kwargs, ``sampling_module``, ``fps_num``, ``media``). The official code hard-codes
        768-d words and 1024-d image features; its unused keys (kernel, global_feat, lang_att,
        iter_pred, num_class) are ignored."""
        dec, sm = dict(model_cfg["dec"]), dict(model_cfg.get("sampling_module") or {})
        d = int(dec.get("d_model", 256))
        for key in ("pc_dim", "lang_dim", "d_model"):
            if key in sm and int(sm[key]) != d:
                raise ValueError(f"sampling_module.{key} ({sm[key]}) must equal dec.d_model ({d}) in this port")
        if not dec.get("iter_pred", True):
            raise ValueError("dec.iter_pred false has no forward in the official code either")
        n = int(dec.get("num_layer", 6))
        return cls(
            in_channels=int(model_cfg.get("media", 32)), text_channels=text_channels, image_channels=image_channels,
            d_model=d, nhead=int(dec.get("nhead", 8)), ffn=int(dec.get("hidden_dim", 1024)),
            dropout=float(dec.get("dropout", 0.0)), ffn_activation=dec.get("activation_fn", "relu"), num_layers=n,
            fps_num=int(model_cfg.get("fps_num", 512)), num_proposal=int(sm.get("num_proposal", 128)),
            num_proposal_fine=int(dec.get("num_proposal_fine", 512)),
            num_proposal_query=list(dec.get("num_proposal_query", _OFFICIAL_K)),
            num_proposal_query_inst=list(dec.get("num_proposal_query_inst", _OFFICIAL_K)),
            attn_mask=bool(dec.get("attn_mask", False)),
            contrastive_align=bool(dec.get("contrastive_align_loss", False)),
            fine_mask_padding=False,
        )


@dataclass
class LayerPrediction:
    """One prediction of the decoder: ``masks (T,Q,S)`` logits (``PAD_LOGIT`` on padding),
    ``scores (T,Q)`` mask-quality scores, ``indi (T,Q,2)`` logits [not target, target],
    ``proj_queries (T,Q,c)`` / ``proj_tokens (T,L,c)``: L2-normalised contrastive projections of the
    queries and of the carried word stream (padded words included), None when the model has none or
    the forward ran with ``keep_all_layers=False``."""

    masks: Tensor
    scores: Tensor
    indi: Tensor
    proj_queries: Tensor | None = None
    proj_tokens: Tensor | None = None


@dataclass
class DecoderOutput:
    """``layers``: the prediction from the initial queries, then one per layer (only the last one
    with ``keep_all_layers=False``). ``query_sp_idx (T,Q)``: superpoint of each query's seed;
    ``query_pos (T,Q,3)``: that seed's position; ``sample_idx (T,Q)``: chosen seeds (indices into
    ``seed_idx``); ``seed_idx (T,F)``: the FPS seeds given; ``seed_scores (T,F)``: the official raw
    ``ref_scores`` of every seed (>= 0; the sampling loss's logits); ``seed_pos (T,F,3)``;
    ``word_pad (T,L)`` True = padded word; ``sem_logits (B,S,K)``: the auxiliary semantic head's
    logits (set by ``BQNet.forward`` when the model has one)."""

    layers: list[LayerPrediction]
    query_sp_idx: Tensor
    query_pos: Tensor
    sample_idx: Tensor
    seed_idx: Tensor
    seed_scores: Tensor
    seed_pos: Tensor
    word_pad: Tensor
    sem_logits: Tensor | None = None

    @property
    def final(self) -> LayerPrediction:
        """The last layer's prediction (what inference uses)."""
        return self.layers[-1]


def _gather_rows(x: Tensor, idx: Tensor) -> Tensor:
    """``x (T,N,C)`` rows ``idx (T,K)`` -> ``(T,K,C)``."""
    return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _zero_padding(x: Tensor, pad: Tensor) -> Tensor:
    """``x (T,S,C)`` with padded rows zeroed; stays one expanded row when both inputs are."""
    if shared_rows(x) and shared_rows(pad):
        y = x[:1] * (~pad[:1]).unsqueeze(-1).to(x.dtype)
        return y.expand(x.shape)
    return x * (~pad).unsqueeze(-1).to(x.dtype)


def _mlp(d_in: int, d: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d_out))


class BQNetDecoder(nn.Module):
    """The decoder (module docstring). ``forward`` returns a ``DecoderOutput``."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        if not isinstance(cfg, DecoderConfig):
            raise TypeError(f"BQNetDecoder expects a DecoderConfig, got {type(cfg).__name__}")
        if cfg.text_channels == 0:
            raise ValueError("decoder.text_channels is 0 (= the text encoder's size): build the decoder through "
                             "BQNet, or give the word feature size")
        self.cfg = cfg
        d, h, p, n = cfg.d_model, cfg.nhead, cfg.dropout, cfg.num_layers
        act = cfg.ffn_activation
        self.input_proj = nn.Sequential(nn.Linear(cfg.in_channels, d), nn.LayerNorm(d), nn.ReLU())
        if cfg.image_channels > 0:
            self.input_proj_2d = nn.Sequential(
                nn.Linear(cfg.image_channels, 2 * d), nn.ReLU(), nn.Linear(2 * d, d), nn.ReLU(), nn.Linear(d, d)
            )
        else:
            self.input_proj_2d = None
        self.sum_norm = nn.LayerNorm(d)
        self.lang_proj = nn.Linear(cfg.text_channels, d)
        self.lang_norm = nn.LayerNorm(d)
        self.sampling_module = TextGuidedSampling(d, cfg.num_proposal)
        self.query_generator = _mlp(d, d, d)

        def stack(make) -> nn.ModuleList:
            return nn.ModuleList([make() for _ in range(n)])

        self.qia_layers = stack(lambda: CrossAttentionLayer(d, h, p))
        self.qia_layers_fine = stack(lambda: CrossAttentionLayer(d, h, p))
        self.qla_layers = stack(lambda: CrossAttentionLayer(d, h, p))
        self.qqa_layers = stack(lambda: SelfAttentionLayer(d, h, p))
        self.qqa_ffn_layers = stack(lambda: FFN(d, cfg.ffn, p, act))
        self.qia_ffn_layers = stack(lambda: FFN(d, cfg.ffn, p, act))
        self.lla_layers = stack(lambda: SelfAttentionLayer(d, h, p))
        self.lia_layers = stack(lambda: CrossAttentionLayer(d, h, p))
        self.ila_layers = stack(lambda: CrossAttentionLayer(d, h, p))
        self.lia_ffn_layers = stack(lambda: FFN(d, cfg.ffn, p, act))
        self.ila_ffn_layers = stack(lambda: FFN(d, cfg.ffn, p, act))
        self.norm_qqa = nn.LayerNorm(d)
        self.out_norm = nn.LayerNorm(d)
        self.out_score = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 1))
        self.x_mask = nn.Sequential(nn.Linear(cfg.in_channels, d), nn.ReLU(), nn.Linear(d, d))
        self.indi_embedding = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 2), nn.Linear(2, 2))
        if cfg.contrastive_align:
            self.contrastive_align_projection_vision = _mlp(d, d, cfg.contrastive_dim)
            self.contrastive_align_projection_text = _mlp(d, d, cfg.contrastive_dim)
        else:
            self.contrastive_align_projection_vision = None
            self.contrastive_align_projection_text = None
        self.scg_head = SelfAttentionLayer(d, h, 0.0, glu=True)
        for m in self.modules():  # the official CrossAttentionLayer's xavier init of its matrices
            if isinstance(m, CrossAttentionLayer):
                for prm in m.parameters():
                    if prm.dim() > 1:
                        nn.init.xavier_uniform_(prm)
        self._warned_no_image = False

    # ------------------------------------------------------------------ checks
    def _check_inputs(self, named: dict[str, Tensor | None], check_values: bool) -> None:
        dims = dict(sp_feats=3, sp_xyz=3, sp_pad=2, seed_idx=2, word_feats=3, word_mask=2, image_feats=3)
        for name, x in named.items():
            if x is None and name == "image_feats":
                continue
            if not isinstance(x, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
            if x.dim() != dims[name]:
                raise ValueError(f"{name} must have {dims[name]} dimensions, got shape {tuple(x.shape)}")
        for name in ("sp_feats", "sp_xyz", "word_feats", "image_feats"):
            if named[name] is not None and not named[name].is_floating_point():
                raise TypeError(f"{name} must be a floating point tensor, got {named[name].dtype}")
        for name in ("sp_pad", "word_mask"):
            if named[name].dtype != torch.bool:
                raise TypeError(f"{name} must be a bool tensor, got {named[name].dtype}")
        if named["seed_idx"].dtype != torch.long:
            raise TypeError(f"seed_idx must be int64 (torch.long), got {named['seed_idx'].dtype}")
        T, S, C = named["sp_feats"].shape
        wf = named["word_feats"]
        expect = dict(sp_xyz=(T, S, 3), sp_pad=(T, S), word_mask=tuple(wf.shape[:2]))
        img = named["image_feats"]
        if img is not None:
            if self.input_proj_2d is None:
                raise ValueError("image_feats given, but this decoder has no 2D branch (decoder.image_channels is 0)")
            expect["image_feats"] = (T, S, self.cfg.image_channels)
        for name, shape in expect.items():
            if tuple(named[name].shape) != shape:
                raise ValueError(f"{name} must have shape {shape}, got {tuple(named[name].shape)}")
        if named["seed_idx"].shape[0] != T or wf.shape[0] != T:
            raise ValueError(f"sentence axis mismatch: sp_feats has T={T}, seed_idx {named['seed_idx'].shape[0]}, "
                             f"word_feats {wf.shape[0]}")
        if C != self.cfg.in_channels:
            raise ValueError(f"sp_feats has {C} channels, decoder.in_channels is {self.cfg.in_channels}")
        if wf.shape[-1] != self.cfg.text_channels:
            raise ValueError(f"word_feats has {wf.shape[-1]} channels, decoder.text_channels is {self.cfg.text_channels}")
        if S == 0 or named["seed_idx"].shape[1] == 0 or wf.shape[1] == 0:
            raise ValueError(f"empty input: S={S}, seeds={named['seed_idx'].shape[1]}, words={wf.shape[1]}")
        if not check_values:  # the value checks below are the forward's only host syncs
            return
        seed_idx, sp_pad = named["seed_idx"], named["sp_pad"]
        if bool(((seed_idx < 0) | (seed_idx >= S)).any()):
            raise ValueError(f"seed_idx must index superpoints in [0, {S}), got values outside")
        if bool(sp_pad.gather(1, seed_idx).any()):
            raise ValueError("seed_idx points at padded superpoints (use farthest_point_sample with pad)")
        if bool(sp_pad.all(dim=1).any()) or bool((~named["word_mask"]).all(dim=1).any()):
            raise ValueError("every sentence needs at least one real superpoint and one real word")

    # ------------------------------------------------------------------ pieces
    def _scene_features(self, sp_feats: Tensor, image_feats: Tensor | None, sp_pad: Tensor) -> tuple[Tensor, Tensor]:
        """X = sum_norm(input_proj(x) [+ input_proj_2d(img)]) and M = x_mask(x), zero on padding;
        computed once when every input is one scene ``expand``ed over the sentences."""
        if image_feats is None and self.input_proj_2d is not None and not self._warned_no_image:
            warnings.warn(
                "this decoder has a 2D image branch (decoder.image_channels > 0) but got no image_feats: "
                "computing sum_norm(input_proj(x)) without the 2D term, which the official weights were not "
                "trained for; pass per-superpoint image features (T, S, image_channels) as image_feats "
                "(BQNet.decode(..., image_feats=...)) to reproduce the official model",
                stacklevel=3,
            )
            self._warned_no_image = True
        use_img = image_feats is not None and self.input_proj_2d is not None
        ins = [sp_feats, sp_pad] + ([image_feats] if use_img else [])
        one = all(shared_rows(t) for t in ins)
        if one:
            sp_feats, sp_pad = sp_feats[:1], sp_pad[:1]
            image_feats = image_feats[:1] if use_img else None
        keep = (~sp_pad).unsqueeze(-1).to(sp_feats.dtype)
        inst = self.input_proj(sp_feats)
        if use_img:
            inst = inst + self.input_proj_2d(image_feats)
        inst = self.sum_norm(inst) * keep
        mask_feats = self.x_mask(sp_feats) * keep
        if one:
            T = ins[0].shape[0]
            inst, mask_feats = inst.expand(T, *inst.shape[1:]), mask_feats.expand(T, *mask_feats.shape[1:])
        return inst, mask_feats

    def _predict(self, query: Tensor, lang_q: Tensor, mask_feats: Tensor, sp_pad: Tensor, sp_keep: Tensor,
                 heads: bool, next_mask: bool, with_proj: bool) -> tuple[LayerPrediction | None, Tensor | None]:
        """The prediction (None without ``heads``: a prediction inference discards) and the next
        coarse attention's ``allowed`` mask (None without ``next_mask`` or ``attn_mask``): sigmoid
        < 0.5 or padding blocked; a fully blocked row sees all real ones. ``sp_keep (T,1,S)``: ~sp_pad."""
        qn = self.out_norm(query)
        if shared_rows(mask_feats):
            raw = torch.matmul(qn, mask_feats[0].transpose(0, 1))  # one GEMM, no per-row copy
        else:
            raw = torch.bmm(qn, mask_feats.transpose(1, 2))
        allowed = None
        if next_mask and self.cfg.attn_mask:
            blocked = (raw.detach().sigmoid() < 0.5) | sp_pad.unsqueeze(1)
            # a row blocked everywhere sees every real superpoint, any other row what it does not block
            allowed = ~blocked | (blocked.all(dim=-1, keepdim=True) & sp_keep)
        if not heads:
            return None, allowed
        pq = pt = None
        if with_proj and self.contrastive_align_projection_vision is not None:
            pq = F.normalize(self.contrastive_align_projection_vision(query), p=2, dim=-1)
            pt = F.normalize(self.contrastive_align_projection_text(lang_q), p=2, dim=-1)
        pred = LayerPrediction(
            masks=raw.masked_fill(sp_pad.unsqueeze(1), PAD_LOGIT),
            scores=self.out_score(qn).squeeze(-1),
            indi=self.indi_embedding(query),
            proj_queries=pq,
            proj_tokens=pt,
        )
        return pred, allowed

    def _fine_stage(self, i: int, query_ffn: Tensor, coarse_att: Tensor | None, inst: Tensor, xyz: Tensor,
                    sp_pad: Tensor, query_pos: Tensor, mask_padding: bool) -> Tensor:
        """CFR's fine cross-attention (with PSC's prior when on); see the module docstring."""
        cfg = self.cfg
        gamma = cfg.spatial_gamma if cfg.psc else None
        k = cfg.num_proposal_query_inst[i] if cfg.psc else None
        # PSC's kNN mask already leaves padded keys out: then no key padding mask on top of it
        if coarse_att is None:  # cfr off, psc on: all real superpoints are keys
            w, allowed = spatial_prior(query_pos, xyz, k, gamma, key_pad=sp_pad)
            fine, _ = self.qia_layers_fine[i](query_ffn, inst, allowed=allowed, logit_weights=w)
            return fine
        T, S = sp_pad.shape
        if S < cfg.num_proposal_fine:
            keys, kpos, kpad = inst, xyz, sp_pad
        else:
            # the authors multiply by the real-key mask; the weights are finite and >= 0, so zeroing
            # the padded keys gives the same numbers, bit for bit, in one kernel instead of three
            score = coarse_att.masked_fill(sp_pad.unsqueeze(1), 0.0).sum(1)  # (T, S)
            idx = score.topk(cfg.num_proposal_fine, dim=1).indices
            keys, kpos, kpad = _gather_rows(inst, idx), _gather_rows(xyz, idx), sp_pad.gather(1, idx)
        if not mask_padding:  # the authors': padded slots are ordinary keys here
            kpad = None
        w, allowed = spatial_prior(query_pos, kpos, k, gamma, key_pad=kpad) if cfg.psc else (None, None)
        fine, _ = self.qia_layers_fine[i](query_ffn, keys, key_padding_mask=kpad if allowed is None else None,
                                          allowed=allowed, logit_weights=w)
        return fine

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        sp_feats: Tensor,
        sp_xyz: Tensor,
        sp_pad: Tensor,
        seed_idx: Tensor,
        word_feats: Tensor,
        word_mask: Tensor,
        image_feats: Tensor | None = None,
        keep_all_layers: bool = True,
        check_values: bool = True,
        fine_mask_padding: bool | None = None,
    ) -> DecoderOutput:
        """Shapes: sp_feats (T,S,C_in), sp_xyz (T,S,3), sp_pad (T,S) True = padding, seed_idx (T,F)
        long, word_feats (T,L,C_text), word_mask (T,L) True = real, image_feats (T,S,C_img) or None.
        ``keep_all_layers`` False keeps only the last prediction and skips the contrastive
        projections (inference). ``check_values`` False skips the checks that read tensor values:
        then the forward never waits for the device, which a CUDA graph capture needs.
        ``fine_mask_padding``: this call's choice of ``DecoderConfig.fine_mask_padding`` (None = the
        config's), so a caller that pads (``Segmenter``) need not change a shared config."""
        named = dict(sp_feats=sp_feats, sp_xyz=sp_xyz, sp_pad=sp_pad, seed_idx=seed_idx,
                     word_feats=word_feats, word_mask=word_mask, image_feats=image_feats)
        self._check_inputs(named, check_values)
        cfg = self.cfg
        mask_padding = cfg.fine_mask_padding if fine_mask_padding is None else bool(fine_mask_padding)
        wpad = ~word_mask
        xyz = _zero_padding(sp_xyz, sp_pad)  # the official batching puts padding at the origin
        inst, mask_feats = self._scene_features(sp_feats, image_feats, sp_pad)
        lang = self.lang_norm(self.lang_proj(word_feats))

        seed_pos = _gather_rows(xyz, seed_idx)
        one_scene = shared_rows(inst) and shared_rows(xyz) and shared_rows(seed_idx)
        if one_scene:  # the seed context does not depend on the sentence: compute it once
            pos0 = seed_pos[:1]
            w = spatial_prior(pos0, pos0, None, cfg.spatial_gamma)[0] if cfg.psc else None
            s0 = self.scg_head(_gather_rows(inst[:1], seed_idx[:1]), logit_weights=w)
            seed_feats = s0.expand(seed_idx.shape[0], *s0.shape[1:])
        else:
            w = spatial_prior(seed_pos, seed_pos, None, cfg.spatial_gamma)[0] if cfg.psc else None
            seed_feats = self.scg_head(_gather_rows(inst, seed_idx), logit_weights=w)
        sampled = self.sampling_module(seed_feats, lang, wpad)
        sample_idx = sampled.indices
        query = self.query_generator(_gather_rows(seed_feats, sample_idx))
        query_pos = _gather_rows(seed_pos, sample_idx)

        # key masks as "may attend" rows (T, 1, keys), made once: the padding masks inverted
        word_keep, sp_keep = word_mask.unsqueeze(1), (~sp_pad).unsqueeze(1)
        q_dis = squared_distances(query_pos, query_pos) if cfg.dqf else None  # the queries never move
        last = cfg.num_layers - 1
        pred, allowed = self._predict(query, lang, mask_feats, sp_pad, sp_keep, keep_all_layers, True, keep_all_layers)
        layers = [pred] if keep_all_layers else []
        lang_q = lang
        for i in range(cfg.num_layers):
            lang_q = self.lla_layers[i](lang_q, allowed=word_keep)
            lang_q, _ = self.lia_layers[i](lang_q, inst, allowed=sp_keep)
            inst, _ = self.ila_layers[i](inst, lang_q, allowed=word_keep)
            lang_q = self.lia_ffn_layers[i](lang_q)
            inst = self.ila_ffn_layers[i](inst)

            # the attention mask of _predict leaves padding out already
            coarse, coarse_att = self.qia_layers[i](query, inst, allowed=sp_keep if allowed is None else allowed,
                                                    need_weights=cfg.cfr)
            coarse_ffn = self.qia_ffn_layers[i](coarse)
            if cfg.cfr or cfg.psc:
                fine = self._fine_stage(i, coarse_ffn, coarse_att, inst, xyz, sp_pad, query_pos, mask_padding)
                query = (coarse + fine) / 2
            else:
                query = coarse_ffn

            q_qla, _ = self.qla_layers[i](query, lang_q, allowed=word_keep)
            near = spatial_prior(query_pos, query_pos, cfg.num_proposal_query[i], None, dis=q_dis)[1] if cfg.dqf else None
            q_self = self.qqa_layers[i](q_qla, allowed=near)
            query = self.qqa_ffn_layers[i](self.norm_qqa(q_self + q_qla))

            pred, allowed = self._predict(query, lang_q, mask_feats, sp_pad, sp_keep, keep_all_layers or i == last,
                                          i < last, keep_all_layers)
            if pred is not None:
                layers.append(pred)

        return DecoderOutput(
            layers=layers,
            query_sp_idx=seed_idx.gather(1, sample_idx),
            query_pos=query_pos,
            sample_idx=sample_idx,
            seed_idx=seed_idx,
            seed_scores=sampled.scores,
            seed_pos=seed_pos,
            word_pad=wpad,
        )
