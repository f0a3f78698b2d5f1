"""Training losses of the decoder [IPDN, with our documented choices].

Assignment (no Hungarian matching, a query owns the object its seed lies on):

* a superpoint is a target when its ground-truth value is > 0.5; a query is *positive* when
  its seed superpoint (``DecoderOutput.query_sp_idx``) is a target;
* a sentence with targets but no positive query (possible in RES: no sampled seed landed on
  the object) gets one positive: the query whose final-layer mask has the highest soft IoU
  with the target (computed without gradient; IPDN adds the seed nearest to the object's
  centre instead; this needs no instance centres and prefers the query already closest to
  the answer);
* zero-target sentences (GRES): every query negative, no mask or score loss;
* the positives and their targets are fixed once per batch and shared by all layers.

Mask target of a positive query: the GT superpoint mask of its sentence (for GRES with several
targets: the union of the targets, since ``gt_sp_masks`` is a union mask and GRES inference
takes the union anyway). When ``gt_sp_inst`` (T,S) instance ids are given, a positive query
whose seed lies on instance k is trained on instance k's mask alone (IPDN's per-object target);
the fallback query keeps the union.

Per layer l (prediction before layer 1, then after every layer), over real superpoints only:

* ``mask_bce``: mean binary cross-entropy (or sigmoid focal, ``mask_focal``) per positive query;
* ``mask_dice``: 1 - (2 sum(p t) + 1) / (sum p + sum t + 1) per positive query, p = sigmoid;
* ``score``: MSE between the score and the IoU of the binarized mask (logit >= 0) with the
  target, for positive queries with IoU >= ``score_iou_min`` (IPDN uses 0.5; default 0: all);
* ``indicator``: 2-way cross-entropy, positives weight 1, negatives ``negative_weight``
  (IPDN's eos_coef 0.1), weighted mean over all queries of all sentences that have at least one
  real superpoint.

The three mask terms are averaged per sentence (over its positives), then over the sentences
that have positives, so a sentence with many positive queries does not outweigh one with few.
Layer l is weighted by ``layer_weights`` (default: IPDN's ramp (l+1)/N_pred, last layer 1).

``sample``: once per batch, the seeds' text relevance logits (``DecoderOutput.seed_scores``,
``query_sampling.relevance_logits``: log of a seed's relevance share against the uniform share) against "seed lies on a target" with a sigmoid focal loss (alpha 0.25, gamma 2, as
IPDN; binary targets where IPDN uses a Gaussian of the distance to the object centre), mean
over real seeds per sentence, then over sentences. It is the only gradient the text-guided
sampling projections get (top-k has none).

``sem`` (only with a semantic head, ``ModelConfig.num_classes`` > 0, and targets): cross-entropy
of ``DecoderOutput.sem_logits`` (B,S,K) against the per-superpoint majority semantic label
(B,S) (-1 = unlabelled or padding, ignored), mean over the labelled real superpoints of the batch.
An auxiliary dense signal for the backbone; it does not touch the decoder.

Everything is computed in float32 (safe under autocast) and finite for sentences without
targets, without positives or made only of padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .decoder import DecoderOutput

__all__ = ["LossConfig", "bqnet_loss", "semantic_loss", "assign_positives", "dice_loss", "sigmoid_focal_loss", "layer_weights"]


@dataclass
class LossConfig:
    """Loss weights and options (see the module docstring for each term)."""

    mask_bce: float = 1.0
    mask_dice: float = 1.0
    score: float = 0.5
    indicator: float = 1.0
    sample: float = 5.0
    negative_weight: float = 0.1
    layer_weights: list[float] | float | None = None
    mask_focal: bool = False
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    score_iou_min: float = 0.0
    sample_focal: bool = True
    sem: float = 1.0  # used only when the model has a semantic head (ModelConfig.num_classes > 0)

    def __post_init__(self) -> None:
        for name in ("mask_bce", "mask_dice", "score", "indicator", "sample", "negative_weight", "focal_gamma", "sem"):
            if getattr(self, name) < 0:
                raise ValueError(f"loss.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.focal_alpha <= 1.0:
            raise ValueError(f"loss.focal_alpha must be in [0, 1], got {self.focal_alpha}")
        if not 0.0 <= self.score_iou_min <= 1.0:
            raise ValueError(f"loss.score_iou_min must be in [0, 1], got {self.score_iou_min}")
        lw = self.layer_weights
        if isinstance(lw, (list, tuple)):
            if len(lw) == 0 or any(w < 0 for w in lw):
                raise ValueError(f"loss.layer_weights must be non-negative and non-empty, got {lw}")
        elif lw is not None and lw < 0:
            raise ValueError(f"loss.layer_weights must be >= 0, got {lw}")


def layer_weights(cfg: LossConfig, num_predictions: int) -> list[float]:
    """Weight of each prediction (before layer 1, then per layer)."""
    lw = cfg.layer_weights
    if lw is None:
        return [(i + 1) / num_predictions for i in range(num_predictions)]
    if isinstance(lw, (list, tuple)):
        if len(lw) != num_predictions:
            raise ValueError(
                f"loss.layer_weights has {len(lw)} entries but the decoder gave {num_predictions} "
                "predictions (num_layers + 1; 1 with keep_all_layers=False)"
            )
        return [float(w) for w in lw]
    return [float(lw)] * num_predictions


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Elementwise sigmoid focal loss (no reduction); soft targets allowed."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    a_t = alpha * targets + (1 - alpha) * (1 - targets)
    return a_t * (1 - p_t).pow(gamma) * ce


def dice_loss(logits: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
    """Per-row dice loss 1 - (2 sum(p t) + 1) / (sum p + sum t + 1) over ``valid`` entries."""
    p = torch.sigmoid(logits) * valid
    t = targets * valid
    return 1.0 - (2.0 * (p * t).sum(-1) + 1.0) / (p.sum(-1) + t.sum(-1) + 1.0)


@dataclass
class Assignment:
    """Positives of a batch: ``positive (T,Q)`` bool, pair indices ``t_idx, q_idx (P,)`` and
    their mask targets ``targets (P,S)``; ``fallback (T,)``: sentences that needed one."""

    positive: Tensor
    t_idx: Tensor
    q_idx: Tensor
    targets: Tensor
    fallback: Tensor


@torch.no_grad()
def assign_positives(
    out: DecoderOutput, gt_sp_masks: Tensor, sp_pad: Tensor, gt_sp_inst: Tensor | None = None
) -> Assignment:
    """Positive queries and their mask targets (module docstring)."""
    valid = ~sp_pad
    gt = gt_sp_masks.float() * valid
    on_target = gt > 0.5
    has_target = on_target.any(dim=1)
    positive = on_target.gather(1, out.query_sp_idx)  # (T, Q)
    fallback = has_target & ~positive.any(dim=1)
    if bool(fallback.any()):
        prob = torch.sigmoid(out.layers[-1].masks.float()) * valid.unsqueeze(1)
        inter = torch.bmm(prob, gt.unsqueeze(-1)).squeeze(-1)  # (T, Q)
        union = prob.sum(-1) + gt.sum(-1, keepdim=True) - inter
        best = (inter / union.clamp_min(1e-6)).argmax(dim=1)  # (T,)
        extra = F.one_hot(best, positive.shape[1]).bool() & fallback.unsqueeze(1)
        positive = positive | extra
    t_idx, q_idx = torch.nonzero(positive, as_tuple=True)
    targets = gt[t_idx]  # (P, S) union targets
    if gt_sp_inst is not None and t_idx.numel() > 0:
        inst_q = gt_sp_inst.gather(1, out.query_sp_idx)[t_idx, q_idx]  # (P,)
        per_obj = (gt_sp_inst[t_idx] == inst_q.unsqueeze(1)) & on_target[t_idx]
        use = (inst_q >= 0) & per_obj.any(dim=1)
        targets = torch.where(use.unsqueeze(1), per_obj.float(), targets)
    return Assignment(positive=positive, t_idx=t_idx, q_idx=q_idx, targets=targets, fallback=fallback)


def _sentence_mean(values: Tensor, t_idx: Tensor, num_sentences: int, keep: Tensor | None = None) -> Tensor:
    """Mean over each sentence's entries, then over sentences that have any."""
    w = torch.ones_like(values) if keep is None else keep.to(values.dtype)
    sums = values.new_zeros(num_sentences).index_add(0, t_idx, values * w)
    counts = values.new_zeros(num_sentences).index_add(0, t_idx, w)
    has = counts > 0
    per = sums / counts.clamp_min(1.0)
    return (per * has).sum() / has.sum().clamp_min(1)


def _check_loss_inputs(out: DecoderOutput, gt_sp_masks: Tensor, sp_pad: Tensor, gt_sp_inst: Tensor | None) -> None:
    if not isinstance(out, DecoderOutput):
        raise TypeError(f"out must be a DecoderOutput, got {type(out).__name__}")
    if not out.layers:
        raise ValueError("out.layers is empty: nothing to compute a loss on")
    T, Q, S = out.layers[-1].masks.shape
    if not isinstance(gt_sp_masks, Tensor) or tuple(gt_sp_masks.shape) != (T, S):
        raise ValueError(f"gt_sp_masks must be a tensor of shape {(T, S)} (padded like the masks), "
                         f"got {tuple(gt_sp_masks.shape) if isinstance(gt_sp_masks, Tensor) else type(gt_sp_masks).__name__}")
    if not gt_sp_masks.is_floating_point():
        raise TypeError(f"gt_sp_masks must be float (1 = target superpoint), got {gt_sp_masks.dtype}")
    if not isinstance(sp_pad, Tensor) or sp_pad.dtype != torch.bool or tuple(sp_pad.shape) != (T, S):
        raise ValueError(f"sp_pad must be a bool tensor of shape {(T, S)}")
    if gt_sp_inst is not None:
        if not isinstance(gt_sp_inst, Tensor) or gt_sp_inst.dtype != torch.long or tuple(gt_sp_inst.shape) != (T, S):
            raise ValueError(f"gt_sp_inst must be an int64 tensor of shape {(T, S)} (-1 = no instance)")


def semantic_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy of ``logits`` (B,S,K) against ``targets`` (B,S) int64, -1 = ignored
    (unlabelled superpoints and padding); mean over the labelled entries, 0 (in the graph) if none."""
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(f"semantic_loss: logits (B,S,K) and targets (B,S) expected, got "
                         f"{tuple(logits.shape)} and {tuple(targets.shape)}")
    if targets.dtype != torch.long:
        raise TypeError(f"semantic targets must be int64, got {targets.dtype}")
    lg = logits.float().reshape(-1, logits.shape[-1])
    tg = targets.reshape(-1)
    if bool((tg >= logits.shape[-1]).any()):
        raise ValueError(f"semantic label {int(tg.max())} out of range for {logits.shape[-1]} classes")
    valid = tg >= 0
    if not bool(valid.any()):
        return 0.0 * lg.sum()
    return F.cross_entropy(lg[valid], tg[valid])


def bqnet_loss(
    out: DecoderOutput,
    gt_sp_masks: Tensor,
    sp_pad: Tensor,
    cfg: LossConfig | None = None,
    gt_sp_inst: Tensor | None = None,
    sem_targets: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Total loss and its parts (detached): ``mask_bce``, ``mask_dice``, ``score``,
    ``indicator`` (each summed over layers with the layer weights, before the term weights),
    ``sample``, ``num_positive`` (mean positives per sentence) and ``total``; plus ``sem`` when
    ``out.sem_logits`` (B,S,K) and ``sem_targets`` (B,S) int64 (-1 = ignore) are both given."""
    cfg = cfg or LossConfig()
    _check_loss_inputs(out, gt_sp_masks, sp_pad, gt_sp_inst)
    T, Q, S = out.layers[-1].masks.shape
    weights = layer_weights(cfg, len(out.layers))
    asg = assign_positives(out, gt_sp_masks, sp_pad, gt_sp_inst)
    valid = (~sp_pad).float()
    v_pos = valid[asg.t_idx]  # (P, S)
    tgt = asg.targets
    tgt_bin = tgt > 0.5
    row_real = (~sp_pad).any(dim=1)  # sentences with at least one real superpoint
    labels = asg.positive.long()
    q_weight = torch.where(asg.positive, 1.0, cfg.negative_weight) * row_real.unsqueeze(1)

    acc = {k: gt_sp_masks.new_zeros((), dtype=torch.float32) for k in ("mask_bce", "mask_dice", "score", "indicator")}
    total = gt_sp_masks.new_zeros((), dtype=torch.float32)
    for w, pred in zip(weights, out.layers):
        masks = pred.masks.float()
        m = masks[asg.t_idx, asg.q_idx]  # (P, S)
        if cfg.mask_focal:
            elem = sigmoid_focal_loss(m, tgt, cfg.focal_alpha, cfg.focal_gamma)
        else:
            elem = F.binary_cross_entropy_with_logits(m, tgt, reduction="none")
        bce_q = (elem * v_pos).sum(-1) / v_pos.sum(-1).clamp_min(1.0)
        dice_q = dice_loss(m, tgt, v_pos)
        with torch.no_grad():
            binm = (m >= 0) & (v_pos > 0)
            inter = (binm & tgt_bin).sum(-1).float()
            union = (binm | tgt_bin).sum(-1).float()
            iou = inter / union.clamp_min(1.0)
        sc = pred.scores.float()[asg.t_idx, asg.q_idx]
        score_q = (sc - iou).square()
        parts = {
            "mask_bce": _sentence_mean(bce_q, asg.t_idx, T),
            "mask_dice": _sentence_mean(dice_q, asg.t_idx, T),
            "score": _sentence_mean(score_q, asg.t_idx, T, keep=iou >= cfg.score_iou_min),
        }
        ce = F.cross_entropy(pred.indi.float().reshape(-1, 2), labels.reshape(-1), reduction="none").view(T, Q)
        parts["indicator"] = (ce * q_weight).sum() / q_weight.sum().clamp_min(1e-6)
        if asg.t_idx.numel() == 0:
            # Keep the mask/score heads in the graph (zero gradient) so backward always works.
            zero = 0.0 * (masks.sum() + pred.scores.float().sum())
            parts = {**parts, "mask_bce": parts["mask_bce"] + zero}
        layer_total = (
            cfg.mask_bce * parts["mask_bce"] + cfg.mask_dice * parts["mask_dice"]
            + cfg.score * parts["score"] + cfg.indicator * parts["indicator"]
        )
        total = total + w * layer_total
        for k in acc:
            acc[k] = acc[k] + w * parts[k].detach()

    # Sampling loss on the seeds' text relevance.
    seed_valid = (~sp_pad).gather(1, out.seed_idx).float()  # (T, F)
    seed_tgt = ((gt_sp_masks.float() * (~sp_pad)) > 0.5).gather(1, out.seed_idx).float()
    r = out.seed_scores.float()
    if cfg.sample_focal:
        elem = sigmoid_focal_loss(r, seed_tgt, 0.25, 2.0)
    else:
        elem = F.binary_cross_entropy_with_logits(r, seed_tgt, reduction="none")
    per = (elem * seed_valid).sum(-1) / seed_valid.sum(-1).clamp_min(1.0)
    sample = (per * row_real).sum() / row_real.sum().clamp_min(1)
    total = total + cfg.sample * sample

    sem = None
    if out.sem_logits is not None and sem_targets is not None:
        sem = semantic_loss(out.sem_logits, sem_targets.to(out.sem_logits.device))
        total = total + cfg.sem * sem

    parts_out = {k: v for k, v in acc.items()}
    parts_out["sample"] = sample.detach()
    if sem is not None:
        parts_out["sem"] = sem.detach()
    parts_out["num_positive"] = asg.positive.float().sum(1).mean().detach()
    parts_out["total"] = total.detach()
    return total, parts_out
