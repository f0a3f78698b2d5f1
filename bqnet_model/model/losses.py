"""Training losses of the decoder, as the authors of BQNet/CFNet wrote them (their ``Criterion``).

Queries are matched to objects by ``matching.match_batch`` (nearest seed to each object's
centroid, plus every query whose seed lies on the object); P = ``num_insts`` is the number of
matched pairs in the batch. Per prediction (the one before layer 1, then one per layer):

* ``mask_bce``: binary cross-entropy with logits, mean over the matched pairs x real
  superpoints **of each sentence**, summed over sentences, divided by P (the authors call
  ``F.binary_cross_entropy_with_logits`` per sentence, then divide the sum by ``num_insts``);
* ``mask_dice``: 1 - (2 sum(p t) + 1) / (sum p + sum t + 1), p = sigmoid, per pair; mean per
  sentence, summed, / P;
* ``score``: MSE between the score and the IoU of the binarised mask (sigmoid >= 0.5) with the
  target, only for pairs with IoU > ``score_iou_min`` (0.5); mean per sentence, summed, / P;
* ``indicator``: 2-way cross-entropy (target = matched), matched queries weight 1, the others
  ``eos_coef``; **summed** over all queries of the batch, / P;
* ``align`` (only when the decoder gives ``proj_queries``/``proj_tokens``): the authors'
  ``loss_sem_align``, see ``align_loss``.

The layer terms are weighted ``mask_bce``, ``mask_dice``, ``score``, ``indicator``, ``align``
and summed; prediction i of N gets (i+1)/N (the last one 1, ``layer_weights``). Once per batch:

* ``sample`` (weight 5): sigmoid focal loss (alpha 0.25, gamma 2) of the seeds' **raw** text
  relevance (``DecoderOutput.seed_scores``, >= 0, used as logits as the authors do) against the
  soft targets of ``matching.sampling_targets``; mean over real seeds, then over sentences;
* ``anchor_mask`` (weight ``loss.anchor_mask``, default 0 = off; not the authors'): the same
  rule matches queries to the sentence's **anchors** (``LossTargets.sp_anchor``), keeping only
  queries no target took, and those pairs get ``mask_bce`` + ``mask_dice`` (weighted as the layer's mask terms, divided
  by the anchor pair count), so the decoder also learns the masks of the objects the sentence
  names; score, indicator (anchor queries stay "not a target") and contrastive terms ignore them;
* ``sem`` (only for models with a semantic head, ``model.num_classes`` > 0, which the tiny
  synthetic configs use; not part of BQNet): cross-entropy of the superpoint semantic logits.

Divisions by P use max(P, 1), so batches of zero-target sentences only (GRES) stay finite;
everything is computed in float32 (safe under autocast).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .matching import LossTargets, Matching, match_batch, sampling_targets

__all__ = ["LossConfig", "LossTargets", "bqnet_loss", "semantic_loss", "dice_loss", "sigmoid_focal_loss",
           "layer_weights", "mask_losses", "layer_mask_losses", "layer_mask_and_anchor_losses", "indicator_loss",
           "layer_indicator_losses", "align_loss", "sampling_loss", "anchor_matching",
           "TOKEN_MAP_KINDS"]

# Span kinds of ``text_prep.positive_maps`` the contrastive term reads.
TOKEN_MAP_KINDS: tuple[str, ...] = ("target", "modify", "pron", "other_entity", "rel")


@dataclass
class LossConfig:
    """Loss weights (the authors' ``loss_weight`` [1, 1, 0.5, 5, 0.1, -, 0.1] by default).

    ``eos_coef``: weight of unmatched queries in the indicator and contrastive terms;
    ``score_iou_min``: the score term trains pairs whose mask IoU is strictly above it;
    ``align_temperature``: of the contrastive logits; ``focal_alpha``/``focal_gamma``: of the
    sampling loss; ``layer_weights``: None = the (i+1)/N ramp, a list = one weight per prediction,
    a number = that weight for all; ``sem``: the auxiliary semantic head's weight (models with
    ``num_classes`` > 0 only); ``sem_balance``: its class weighting (``semantic_loss``; 0 = plain
    cross-entropy).

    ``anchor_ref`` (in [0, 1], not the authors'; 0 = off, their target exactly): the value the
    soft sampling target ``sp_ref`` gives the points of the sentence's anchors (the other objects
    it names, ``Annotation.anchor_ids``), taken as the maximum with what they already have. The
    sampling loss then teaches the seeds to land on the mentioned objects too, so the decoder's
    queries can attend to them. Named classes already give 0.5 to every instance of the class,
    so only a value above 0.5 singles the named anchor out among its class mates. The datasets
    apply it (``bqnet_model.train.data.build_datasets``); annotations without anchors are
    unaffected. ``anchor_mask`` (>= 0, 0 = off): weight of the auxiliary anchor-mask term (module
    docstring); it needs ``LossTargets.sp_anchor`` (the datasets' ``gt_sp_anchor``)."""

    mask_bce: float = 1.0
    mask_dice: float = 1.0
    score: float = 0.5
    sample: float = 5.0
    indicator: float = 0.1
    align: float = 0.1
    eos_coef: float = 0.1
    score_iou_min: float = 0.5
    align_temperature: float = 0.07
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    layer_weights: list[float] | float | None = None
    sem: float = 1.0
    sem_balance: float = 0.0
    anchor_ref: float = 0.0
    anchor_mask: float = 0.0

    # Keys of earlier versions (stored in old checkpoints' configs); a loader may drop them.
    RETIRED: ClassVar[tuple[str, ...]] = ("negative_weight", "mask_focal", "sample_focal")

    def __post_init__(self) -> None:
        for name in ("mask_bce", "mask_dice", "score", "sample", "indicator", "align", "eos_coef",
                     "focal_gamma", "sem", "anchor_mask"):
            if getattr(self, name) < 0:
                raise ValueError(f"loss.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.sem_balance <= 1.0:
            raise ValueError(f"loss.sem_balance must be in [0, 1] (0 = plain cross-entropy), got {self.sem_balance}")
        if not 0.0 <= self.anchor_ref <= 1.0:
            raise ValueError(f"loss.anchor_ref must be in [0, 1] (0 = off), got {self.anchor_ref}")
        if not 0.0 <= self.focal_alpha <= 1.0:
            raise ValueError(f"loss.focal_alpha must be in [0, 1], got {self.focal_alpha}")
        if not 0.0 <= self.score_iou_min < 1.0:
            raise ValueError(f"loss.score_iou_min must be in [0, 1), got {self.score_iou_min}")
        if not self.align_temperature > 0:
            raise ValueError(f"loss.align_temperature must be > 0, got {self.align_temperature}")
        lw = self.layer_weights
        if isinstance(lw, (list, tuple)):
            if len(lw) == 0 or any(w < 0 for w in lw):
                raise ValueError(f"loss.layer_weights must be non-negative and non-empty, got {lw}")
        elif lw is not None and lw < 0:
            raise ValueError(f"loss.layer_weights must be >= 0, got {lw}")


def layer_weights(cfg: LossConfig, num_predictions: int) -> list[float]:
    """Weight of each prediction: the authors' (i+1)/N for the auxiliary ones, 1 for the last."""
    lw = cfg.layer_weights
    if lw is None:
        return [(i + 1) / num_predictions for i in range(num_predictions)]
    if isinstance(lw, (list, tuple)):
        if len(lw) != num_predictions:
            raise ValueError(f"loss.layer_weights has {len(lw)} entries but the decoder gave {num_predictions} "
                             "predictions (num_layers + 1; 1 with keep_all_layers=False)")
        return [float(w) for w in lw]
    return [float(lw)] * num_predictions


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Elementwise sigmoid focal loss (no reduction) with soft targets:
    (alpha t + (1-alpha)(1-t)) * |t - sigmoid(x)|^gamma * BCE(x, t), the |.| read as the authors'
    t (1-p) + (1-t) p."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    pt = targets * (1 - p) + (1 - targets) * p
    a_t = alpha * targets + (1 - alpha) * (1 - targets)
    return a_t * pt.pow(gamma) * ce


def dice_loss(logits: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
    """Per-row dice loss 1 - (2 sum(p t) + 1) / (sum p + sum t + 1) over ``valid`` entries."""
    p = torch.sigmoid(logits) * valid
    t = targets * valid
    return 1.0 - (2.0 * (p * t).sum(-1) + 1.0) / (p.sum(-1) + t.sum(-1) + 1.0)


def _per_sentence_mean(values: Tensor, t_idx: Tensor, T: int, weight: Tensor, sets: int = 1) -> Tensor:
    """Sum over sentences of (sum of ``values`` / sum of ``weight``) within each sentence; values
    ``(..., P)`` (a leading axis of predictions), weight ``(..., P)`` or ``(P,)``.

    ``sets`` > 1: the pairs are ``sets`` sets at once, ``t_idx`` numbering set k's sentences
    k*T..(k+1)*T-1; returns ``(..., sets)``, each set's sum over its T sentences (one index_add for
    all sets instead of one per set)."""
    sums = values.new_zeros(*values.shape[:-1], sets * T).index_add(-1, t_idx, values)
    counts = values.new_zeros(*weight.shape[:-1], sets * T).index_add(-1, t_idx, weight.to(values.dtype))
    ratio = sums / counts.clamp_min(1e-12) * (counts > 0)
    return ratio.sum(-1) if sets == 1 else ratio.reshape(*ratio.shape[:-1], sets, T).sum(-1)


def mask_losses(masks: Tensor, scores: Tensor, m: Matching, sp_pad: Tensor, cfg: LossConfig,
                norm: float) -> dict[str, Tensor]:
    """``mask_bce``, ``mask_dice`` and ``score`` of one prediction (module docstring)."""
    return {k: v[0] for k, v in layer_mask_losses([masks], [scores], m, sp_pad, cfg, norm).items()}


def layer_mask_losses(masks: Sequence[Tensor], scores: Sequence[Tensor], m: Matching, sp_pad: Tensor,
                      cfg: LossConfig, norm: float) -> dict[str, Tensor]:
    """``mask_losses`` of N predictions at once (``masks`` N x (T,Q,S), ``scores`` N x (T,Q)):
    each term an (N,) tensor. The matched pairs are the same for every prediction, so the pairs'
    logits are stacked and each term is one set of ops for all layers instead of one per layer."""
    return layer_mask_and_anchor_losses(masks, scores, m, None, sp_pad, cfg, norm)[0]


def layer_mask_and_anchor_losses(masks: Sequence[Tensor], scores: Sequence[Tensor], m: Matching,
                                 am: Matching | None, sp_pad: Tensor, cfg: LossConfig, norm: float,
                                 anchor_norm: float = 1.0) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
    """``layer_mask_losses`` of the target pairs ``m`` and, when ``am`` is given, the ``mask_bce``
    and ``mask_dice`` of the anchor pairs ``am`` (``anchor_matching``) divided by ``anchor_norm``:
    the same values as two ``layer_mask_losses`` calls, with the pairs of both gathered from each
    prediction's masks by one index (one gradient scatter into a (T,Q,S) buffer per prediction in
    backward instead of two, and no sum of two such buffers), and no IoU or score work for the
    anchors, which the anchor term does not read.

    Parameters: ``masks`` / ``scores``: N x (T,Q,S) / N x (T,Q), one per prediction; ``m``: the
    target pairs (``match_batch``); ``am``: the anchor pairs or None; ``sp_pad (T,S)``: True =
    padding; ``cfg``: the loss config (``score_iou_min``); ``norm`` / ``anchor_norm``: the pair
    counts the target / anchor terms are divided by. Returns (target terms, anchor terms or None)."""
    T = masks[0].shape[0]
    P = m.num_insts
    A = 0 if am is None else am.num_insts
    if am is None or P == 0 or A == 0:  # one set alone, or an empty one: each set on its own (heads kept in the graph)
        parts = (_pair_mask_losses(masks, scores, m, sp_pad, cfg, norm, with_score=True) if P
                 else _zero_parts(masks, scores))
        if am is None:
            return parts, None
        anchor = (_pair_mask_losses(masks, scores, am, sp_pad, cfg, anchor_norm, with_score=False) if A
                  else _zero_parts(masks, scores))
        return parts, {k: anchor[k] for k in ("mask_bce", "mask_dice")}
    t_all = torch.cat([m.t_idx, am.t_idx])
    q_all = torch.cat([m.q_idx, am.q_idx])
    tgt_all = torch.cat([m.targets, am.targets])
    valid = (~sp_pad).float()[t_all]  # (P+A, S)
    logit = torch.stack([mk[t_all, q_all] for mk in masks]).float()  # (N, P+A, S)
    bce, dice, n_real = _pair_terms(logit, tgt_all, valid)
    # the anchors' pairs count as sentences T..2T-1: one per-sentence mean for both sets of pairs
    t2 = torch.cat([m.t_idx, am.t_idx + T])
    bce2 = _per_sentence_mean(bce, t2, T, n_real, sets=2)  # (N, 2): targets, anchors
    dice2 = _per_sentence_mean(dice, t2, T, torch.ones_like(n_real), sets=2)
    parts = {
        "mask_bce": bce2[:, 0] / norm,
        "mask_dice": dice2[:, 0] / norm,
        "score": _score_term(logit[:, :P], [s[m.t_idx, m.q_idx] for s in scores], m, valid[:P], cfg, T) / norm,
    }
    anchor = {"mask_bce": bce2[:, 1] / anchor_norm, "mask_dice": dice2[:, 1] / anchor_norm}
    return parts, anchor


def _zero_parts(masks: Sequence[Tensor], scores: Sequence[Tensor]) -> dict[str, Tensor]:
    """Zero terms that keep the heads in the graph (no pairs)."""
    zero = 0.0 * torch.stack([mk.float().sum() + sc.float().sum() for mk, sc in zip(masks, scores)])
    return {"mask_bce": zero, "mask_dice": zero, "score": zero}


def _pair_terms(logit: Tensor, tgt: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per pair: the BCE summed over real superpoints ``(N, P)``, the dice loss ``(N, P)`` and the
    number of real superpoints ``(P,)``, of the pairs' logits ``(N, P, S)``."""
    bce = (F.binary_cross_entropy_with_logits(logit, tgt.expand_as(logit), reduction="none") * valid).sum(-1)
    return bce, dice_loss(logit, tgt, valid), valid.sum(-1)


def _score_term(logit: Tensor, pair_scores: list[Tensor], m: Matching, valid: Tensor, cfg: LossConfig,
                T: int) -> Tensor:
    """The score term before the division by the pair count: MSE between each pair's score and
    its binarised mask's IoU, pairs with IoU > ``score_iou_min`` only, mean per sentence, summed."""
    tgt = m.targets
    with torch.no_grad():
        binm = (logit >= 0) & (valid > 0)
        tb = tgt > 0.5
        inter = (binm & tb).sum(-1).float()
        union = tb.sum(-1).float() + binm.sum(-1).float() - inter
        iou = inter / (union + 1e-6)
        keep = iou > cfg.score_iou_min
    sc = torch.stack(pair_scores).float()  # (N, P)
    return _per_sentence_mean((sc - iou).square() * keep, m.t_idx, T, keep)


def _pair_mask_losses(masks: Sequence[Tensor], scores: Sequence[Tensor], m: Matching, sp_pad: Tensor,
                      cfg: LossConfig, norm: float, with_score: bool) -> dict[str, Tensor]:
    """The mask terms of one set of pairs (``m.num_insts`` > 0); ``with_score``: the score term too."""
    T = masks[0].shape[0]
    valid = (~sp_pad).float()[m.t_idx]  # (P, S)
    logit = torch.stack([mk[m.t_idx, m.q_idx] for mk in masks]).float()  # (N, P, S)
    bce, dice, n_real = _pair_terms(logit, m.targets, valid)
    out = {"mask_bce": _per_sentence_mean(bce, m.t_idx, T, n_real) / norm,
           "mask_dice": _per_sentence_mean(dice, m.t_idx, T, torch.ones_like(n_real)) / norm}
    if with_score:
        out["score"] = _score_term(logit, [s[m.t_idx, m.q_idx] for s in scores], m, valid, cfg, T) / norm
    return out


def indicator_loss(indi: Tensor, matched: Tensor, eos_coef: float, norm: float) -> Tensor:
    """2-way cross-entropy, matched = class 1 (weight 1), others class 0 (weight ``eos_coef``),
    summed over every query of the batch, / ``norm``."""
    return layer_indicator_losses([indi], matched, eos_coef, norm)[0]


def layer_indicator_losses(indi: Sequence[Tensor], matched: Tensor, eos_coef: float, norm: float) -> Tensor:
    """``indicator_loss`` of N predictions (each (T,Q,2)) at once: (N,)."""
    logp = F.log_softmax(torch.stack(list(indi)).float(), dim=-1)  # (N, T, Q, 2)
    ce = -torch.where(matched, logp[..., 1], logp[..., 0])
    w = torch.where(matched, 1.0, eos_coef)
    return (ce * w).flatten(1).sum(-1) / norm


def align_loss(proj_queries: Tensor, proj_tokens: Tensor, word_pad: Tensor, maps: dict[str, Tensor],
               matched: Tensor, eos_coef: float, temperature: float, norm: float) -> Tensor:
    """The authors' word-query contrastive loss (``loss_sem_align``), both directions averaged.

    Logits = cos(query, token) / ``temperature``. Positives: a matched query -> the sentence's
    target span tokens; every unmatched query -> the last two real tokens (``</s>`` and
    "mentioned" of the " . not mentioned" suffix). Matched queries also get the modifier (0.2),
    pronoun (0.2) and relation (0.1) spans as extra positives, and the other-entity span tokens
    counted twice in the negative log-sum-exp. Query -> text rows are weighted 1 (matched) or
    ``eos_coef``; text -> query columns 1 (target span, last token), 0.2 (modifier, pronoun),
    0.1 (relation, second-to-last token) or ``eos_coef``. As in the authors' code the query ->
    text log-sum-exp runs over every token position of the padded batch, and the text -> query
    normaliser adds the span maps' values (not their token counts)."""
    T, Q, _ = proj_queries.shape
    L = proj_tokens.shape[1]
    dev = proj_queries.device
    qn = F.normalize(proj_queries.float(), dim=-1)
    tn = F.normalize(proj_tokens.float(), dim=-1)
    logits = qn @ tn.transpose(1, 2) / temperature  # (T, Q, L)
    rows = torch.arange(T, device=dev)
    last = ((~word_pad).sum(1) - 1).clamp_min(0)
    prev = (last - 1).clamp_min(0)
    mq = matched.unsqueeze(-1)  # (T, Q, 1)

    def span(kind: str) -> Tensor:  # (T, Q, L) float: the sentence's map on its matched queries
        mp = maps[kind].to(dev).float()
        mp = F.pad(mp, (0, max(0, L - mp.shape[1])))[:, :L]
        return torch.where(mq, mp.unsqueeze(1), 0.0)

    not_mentioned = torch.zeros(T, L, dtype=torch.bool, device=dev)
    not_mentioned[rows, last] = True
    not_mentioned[rows, prev] = True
    pos = torch.where(mq, span("target") > 0, not_mentioned.unsqueeze(1))
    modi, pron, rel, other = span("modify"), span("pron"), span("rel"), span("other_entity")
    mb, pb, rb = modi > 0, pron > 0, rel > 0
    qmask = torch.where(matched, 1.0, eos_coef)

    def neg_sum(b: Tensor, dim: int) -> Tensor:
        return -(logits * b).sum(dim)

    # query -> text
    b2t = (neg_sum(pos, 2) / (pos.sum(2) + 1e-6)
           + 0.2 * neg_sum(mb, 2) / (mb.sum(2) + 1e-6)
           + 0.2 * neg_sum(pb, 2) / (pb.sum(2) + 1e-6)
           + 0.1 * neg_sum(rb, 2) / (rb.sum(2) + 1e-6)
           + torch.logsumexp(logits + logits * (other > 0), dim=2))
    b2t = (b2t * pos.any(2) * qmask).sum()
    # text -> query
    tmask = torch.full((T, L), eos_coef, device=dev)
    tmask[rows, last] = 1.0
    tmask = torch.where(pos.any(1), 1.0, tmask)
    tmask = torch.where(mb.any(1), 0.2, tmask)
    tmask = torch.where(pb.any(1), 0.2, tmask)
    tmask = torch.where(rb.any(1), 0.1, tmask)
    tmask[rows, prev] = 0.1
    with_pos = (pos | mb | pb | rb).any(1)
    pos_t = neg_sum(pos, 1) + neg_sum(mb, 1) + neg_sum(pb, 1) + neg_sum(rb, 1)
    nb = pos.sum(1) + modi.sum(1) + pron.sum(1) + rel.sum(1) + 1e-6
    entropy = -torch.log(nb + 1e-6) / nb
    t2b = ((entropy + pos_t / nb + torch.logsumexp(logits, dim=1)) * with_pos * tmask).sum()
    return (b2t + t2b) / 2 / norm


def sampling_loss(seed_scores: Tensor, seed_target: Tensor, seed_valid: Tensor, cfg: LossConfig) -> Tensor:
    """Focal loss of the raw seed relevance against the soft targets: mean over real seeds, then
    over sentences."""
    elem = sigmoid_focal_loss(seed_scores.float(), seed_target, cfg.focal_alpha, cfg.focal_gamma)
    v = seed_valid.float()
    return ((elem * v).sum(-1) / v.sum(-1).clamp_min(1.0)).mean()


def semantic_loss(logits: Tensor, targets: Tensor, balance: float = 0.0, labelled: Tensor | None = None,
                  max_label: int | None = None) -> Tensor:
    """Cross-entropy of ``logits`` (B,S,K) against ``targets`` (B,S) int64, -1 = ignored
    (unlabelled superpoints and padding); mean over the labelled entries, 0 (in the graph) if none.

    ``balance`` > 0 weighs each class by (its labelled superpoints in this batch) ** -balance, a
    weighted mean: floor and wall superpoints outnumber a toilet's by hundreds, and with plain
    cross-entropy a short training never learns to predict the rare classes at all (0.5 = inverse
    square root of the frequency, 1 = every present class counts the same).

    ``labelled`` / ``max_label`` (optional, both or neither): the flat indices of the labelled
    entries (ascending, on the logits' device) and the largest label, known on the host
    (``targets.build_tables``): the same value with no host synchronisation (no range check read
    back, no boolean-mask indexing, no CUDA ``bincount``)."""
    if not 0.0 <= balance <= 1.0:
        raise ValueError(f"semantic_loss: balance must be in [0, 1] (0 = plain cross-entropy), got {balance!r}")
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(f"semantic_loss: logits (B,S,K) and targets (B,S) expected, got "
                         f"{tuple(logits.shape)} and {tuple(targets.shape)}")
    if targets.dtype != torch.long:
        raise TypeError(f"semantic targets must be int64, got {targets.dtype}")
    lg = logits.float().reshape(-1, logits.shape[-1])
    tg = targets.reshape(-1)
    if labelled is not None:
        if max_label is None:
            raise ValueError("semantic_loss: labelled needs max_label (the largest label, known on the host)")
        if max_label >= logits.shape[-1]:
            raise ValueError(f"semantic label {max_label} out of range for {logits.shape[-1]} classes")
        if labelled.numel() == 0:
            return 0.0 * lg.sum()
        lv, tv = lg.index_select(0, labelled), tg.index_select(0, labelled)
        if balance == 0.0:
            return F.cross_entropy(lv, tv)
        counts = torch.zeros(logits.shape[-1], dtype=torch.long, device=tv.device).index_add_(
            0, tv, torch.ones_like(tv)).float()
        weight = torch.where(counts > 0, counts.clamp(min=1.0) ** -balance, torch.zeros_like(counts))
        return F.cross_entropy(lv, tv, weight=weight)
    if bool((tg >= logits.shape[-1]).any()):
        raise ValueError(f"semantic label {int(tg.max())} out of range for {logits.shape[-1]} classes")
    valid = tg >= 0
    if not bool(valid.any()):
        return 0.0 * lg.sum()
    if balance == 0.0:
        return F.cross_entropy(lg[valid], tg[valid])
    counts = torch.bincount(tg[valid], minlength=logits.shape[-1]).float()
    weight = torch.where(counts > 0, counts.clamp(min=1.0) ** -balance, torch.zeros_like(counts))
    return F.cross_entropy(lg[valid], tg[valid], weight=weight)


def anchor_matching(seed_idx: Tensor, sample_idx: Tensor, targets: LossTargets, target_matching: Matching) -> Matching:
    """The queries matched to the sentences' anchors (``targets.sp_anchor``) by the target rule,
    less those already matched to a target: a query trains one object's mask, and the target's
    comes first."""
    if targets.sp_anchor is None:
        raise ValueError("the anchor-mask term (loss.anchor_mask > 0) needs LossTargets.sp_anchor (the batch's "
                         "gt_sp_anchor from dataset.collate_fn, filled from the annotations' anchor_ids); "
                         "set loss.anchor_mask: 0 to train without it")
    # the target's queries are dropped inside the matching's own nonzero: one host sync on CUDA, not two
    anchors = replace(targets, sp_inst=targets.sp_anchor, objects=targets.anchor_objects)
    return match_batch(seed_idx, sample_idx, anchors, exclude=target_matching.matched)


def _check_output(out: Any) -> tuple[int, int, int]:
    layers = getattr(out, "layers", None)
    if not layers:
        raise ValueError("the decoder output has no layers: nothing to compute a loss on")
    T, Q, S = layers[-1].masks.shape
    for name in ("sample_idx", "seed_idx", "seed_scores"):
        if not isinstance(getattr(out, name, None), Tensor):
            raise ValueError(f"the decoder output lacks {name} (a DecoderOutput of bqnet_model.model.decoder)")
    if tuple(out.sample_idx.shape) != (T, Q) or out.seed_scores.shape != out.seed_idx.shape:
        raise ValueError(f"decoder output shapes disagree: masks {(T, Q, S)}, sample_idx "
                         f"{tuple(out.sample_idx.shape)}, seed_idx {tuple(out.seed_idx.shape)}, "
                         f"seed_scores {tuple(out.seed_scores.shape)}")
    return T, Q, S


def bqnet_loss(out: Any, targets: LossTargets, cfg: LossConfig | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Total loss of a ``DecoderOutput`` and its parts (detached): ``mask_bce``, ``mask_dice``,
    ``score``, ``indicator``, ``align`` (each summed over predictions with the layer weights,
    before the term weights), ``sample``, ``num_insts`` (matched pairs per sentence), ``total``;
    ``sem`` when the output has ``sem_logits`` and the targets ``sem``; ``anchor_mask`` (like
    ``mask_bce``) and ``anchor_insts`` (anchor pairs per sentence) when ``loss.anchor_mask`` > 0."""
    cfg = cfg or LossConfig()
    T, Q, S = _check_output(out)
    targets.check(T, S)
    m = match_batch(out.seed_idx, out.sample_idx, targets)
    norm = float(max(m.num_insts, 1))
    weights = layer_weights(cfg, len(out.layers))
    wants_align = cfg.align > 0 and any(getattr(p, "proj_tokens", None) is not None for p in out.layers)
    if wants_align:
        if targets.token_maps is None or any(k not in targets.token_maps for k in TOKEN_MAP_KINDS):
            raise ValueError(f"the contrastive term (loss.align > 0) needs LossTargets.token_maps with kinds "
                             f"{TOKEN_MAP_KINDS} (text_prep.positive_maps); set loss.align: 0 to train without it")
        if not isinstance(getattr(out, "word_pad", None), Tensor):
            raise ValueError("the contrastive term needs the decoder output's word_pad (T, L)")
    keys = ("mask_bce", "mask_dice", "score", "indicator", "align")
    am = anchor_matching(out.seed_idx, out.sample_idx, targets, m) if cfg.anchor_mask > 0 else None
    # Every prediction at once (same pairs): one set of ops per term, not one per layer.
    dev = targets.sp_xyz.device
    preds = out.layers
    parts, ap = layer_mask_and_anchor_losses([p.masks for p in preds], [p.scores for p in preds], m, am,
                                             targets.sp_pad, cfg, norm,
                                             float(max(am.num_insts, 1)) if am is not None else 1.0)
    parts["indicator"] = layer_indicator_losses([p.indi for p in preds], m.matched, cfg.eos_coef, norm)
    if wants_align:
        zero = torch.zeros((), device=dev)
        parts["align"] = torch.stack([
            align_loss(p.proj_queries, p.proj_tokens, out.word_pad, targets.token_maps, m.matched, cfg.eos_coef,
                       cfg.align_temperature, norm)
            if p.proj_tokens is not None and p.proj_queries is not None else zero for p in preds])
    else:
        parts["align"] = torch.zeros(len(preds), device=dev)
    w = torch.tensor(weights, device=dev)
    total = (w * sum(getattr(cfg, k) * parts[k] for k in keys)).sum()
    acc = {k: (w * parts[k].detach()).sum() for k in keys}
    if am is not None:
        anchor = cfg.mask_bce * ap["mask_bce"] + cfg.mask_dice * ap["mask_dice"]  # (N,)
        total = total + cfg.anchor_mask * (w * anchor).sum()
        anchor_acc = (w * anchor.detach()).sum()

    seed_target = sampling_targets(out.seed_idx, targets, m.objects)
    seed_valid = ~targets.sp_pad.gather(1, out.seed_idx)
    sample = sampling_loss(out.seed_scores, seed_target, seed_valid, cfg)
    total = total + cfg.sample * sample
    result = {**acc, "sample": sample.detach()}
    if am is not None:
        result["anchor_mask"] = anchor_acc
        result["anchor_insts"] = torch.tensor(am.num_insts / max(T, 1))
    sem_logits = getattr(out, "sem_logits", None)
    if sem_logits is not None and targets.sem is not None:
        lab = targets.sem_labelled
        sem = semantic_loss(sem_logits, targets.sem.to(sem_logits.device), cfg.sem_balance,
                            labelled=None if lab is None else lab.to(sem_logits.device), max_label=targets.sem_max)
        total = total + cfg.sem * sem
        result["sem"] = sem.detach()
    result["num_insts"] = torch.tensor(m.num_insts / max(T, 1))
    result["total"] = total.detach()
    return total, result
