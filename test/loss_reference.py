"""The training loss as it was computed before the batch code (a loop over sentences for the
matching and the targets, one call per prediction for the layer terms), kept as the reference the batched code of
``bqnet_model.model.matching`` / ``losses`` must reproduce exactly.

Why here and not in the library: the rule is stated once per sentence by the public
``sentence_objects`` and ``match_objects``; this file strings them together the plain way, so a
test can check the fast path pair by pair, value by value and gradient by gradient."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

import torch.nn.functional as F

from bqnet_model.model.losses import LossConfig, align_loss, dice_loss, layer_weights, sampling_loss, semantic_loss
from bqnet_model.model.matching import LossTargets, Matching, match_objects, sentence_objects


def _per_sentence_mean(values: Tensor, t_idx: Tensor, T: int, weight: Tensor) -> Tensor:
    sums = values.new_zeros(T).index_add(0, t_idx, values)
    counts = values.new_zeros(T).index_add(0, t_idx, weight.to(values.dtype))
    return (sums / counts.clamp_min(1e-12) * (counts > 0)).sum()


def mask_losses(masks: Tensor, scores: Tensor, m: Matching, sp_pad: Tensor, cfg: LossConfig,
                norm: float) -> dict[str, Tensor]:
    """One prediction's ``mask_bce``, ``mask_dice`` and ``score``."""
    T = masks.shape[0]
    if m.num_insts == 0:
        zero = 0.0 * (masks.float().sum() + scores.float().sum())
        return {"mask_bce": zero, "mask_dice": zero, "score": zero}
    valid = (~sp_pad).float()[m.t_idx]
    logit = masks.float()[m.t_idx, m.q_idx]
    tgt = m.targets
    bce = (F.binary_cross_entropy_with_logits(logit, tgt, reduction="none") * valid).sum(-1)
    with torch.no_grad():
        binm = (logit >= 0) & (valid > 0)
        tb = tgt > 0.5
        inter = (binm & tb).sum(-1).float()
        iou = inter / (tb.sum(-1).float() + binm.sum(-1).float() - inter + 1e-6)
        keep = iou > cfg.score_iou_min
    sc = scores.float()[m.t_idx, m.q_idx]
    return {
        "mask_bce": _per_sentence_mean(bce, m.t_idx, T, valid.sum(-1)) / norm,
        "mask_dice": _per_sentence_mean(dice_loss(logit, tgt, valid), m.t_idx, T, torch.ones_like(bce)) / norm,
        "score": _per_sentence_mean((sc - iou).square() * keep, m.t_idx, T, keep) / norm,
    }


def indicator_loss(indi: Tensor, matched: Tensor, eos_coef: float, norm: float) -> Tensor:
    logp = F.log_softmax(indi.float(), dim=-1)
    ce = -torch.where(matched, logp[..., 1], logp[..., 0])
    return (ce * torch.where(matched, 1.0, eos_coef)).sum() / norm


def reference_match_batch(seed_idx: Tensor, sample_idx: Tensor, targets: LossTargets) -> tuple[Matching, list]:
    """Sentence by sentence: ``sentence_objects`` then ``match_objects`` on the queries' seeds.
    Returns the matching (its ``objects`` left None) and the per-sentence ``ObjectSet`` list."""
    T, Q = sample_idx.shape
    query_sp = seed_idx.gather(1, sample_idx)
    t_parts, q_parts, k_parts, tgt_parts, objects = [], [], [], [], []
    for t in range(T):
        objs = sentence_objects(targets.sp_inst[t], targets.sp_xyz[t])
        objects.append(objs)
        q, k, _ = match_objects(targets.sp_xyz[t][query_sp[t]], targets.sp_inst[t][query_sp[t]],
                                objs.ids, objs.centroids)
        t_parts.append(torch.full_like(q, t))
        q_parts.append(q)
        k_parts.append(k)
        tgt_parts.append(objs.masks[k].float())
    t_idx, q_idx, k_idx = torch.cat(t_parts), torch.cat(q_parts), torch.cat(k_parts)
    tgt = torch.cat(tgt_parts)
    matched = torch.zeros(T, Q, dtype=torch.bool)
    matched[t_idx, q_idx] = True
    return Matching(t_idx, q_idx, k_idx, tgt, matched, None), objects  # type: ignore[arg-type]


@torch.no_grad()
def reference_sampling_targets(seed_idx: Tensor, targets: LossTargets, objects: list) -> Tensor:
    tgt = 0.5 * targets.sp_ref.gather(1, seed_idx).float()
    for t, objs in enumerate(objects):
        if objs.ids.numel() == 0:
            continue
        pos = targets.sp_xyz[t][seed_idx[t]].float()
        cand, obj, nearest = match_objects(pos, targets.sp_inst[t][seed_idx[t]], objs.ids, objs.centroids)
        d = (pos[cand] - objs.centroids[obj].float()).norm(dim=-1)
        tgt[t, cand] = torch.exp(-0.5 * d.square())
        tgt[t, nearest] = 1.0
    return tgt


def reference_loss(out: Any, targets: LossTargets, cfg: LossConfig) -> tuple[Tensor, dict[str, Tensor]]:
    """``bqnet_loss`` computed the plain way (module docstring); same keys."""
    T = out.sample_idx.shape[0]
    m, objects = reference_match_batch(out.seed_idx, out.sample_idx, targets)
    norm = float(max(m.num_insts, 1))
    am = None
    if cfg.anchor_mask > 0:
        a, _ = reference_match_batch(out.seed_idx, out.sample_idx, replace(targets, sp_inst=targets.sp_anchor))
        keep = ~m.matched[a.t_idx, a.q_idx]
        matched = torch.zeros_like(a.matched)
        matched[a.t_idx[keep], a.q_idx[keep]] = True
        am = Matching(a.t_idx[keep], a.q_idx[keep], a.k_idx[keep], a.targets[keep], matched, None)  # type: ignore
    keys = ("mask_bce", "mask_dice", "score", "indicator", "align")
    acc = {k: torch.zeros(()) for k in keys}
    total, anchor_acc = torch.zeros(()), torch.zeros(())
    for w, pred in zip(layer_weights(cfg, len(out.layers)), out.layers):
        parts = mask_losses(pred.masks, pred.scores, m, targets.sp_pad, cfg, norm)
        parts["indicator"] = indicator_loss(pred.indi, m.matched, cfg.eos_coef, norm)
        if cfg.align > 0 and pred.proj_tokens is not None:
            parts["align"] = align_loss(pred.proj_queries, pred.proj_tokens, out.word_pad, targets.token_maps,
                                        m.matched, cfg.eos_coef, cfg.align_temperature, norm)
        else:
            parts["align"] = torch.zeros(())
        total = total + w * sum(getattr(cfg, k) * parts[k] for k in keys)
        if am is not None:
            ap = mask_losses(pred.masks, pred.scores, am, targets.sp_pad, cfg, float(max(am.num_insts, 1)))
            anchor = cfg.mask_bce * ap["mask_bce"] + cfg.mask_dice * ap["mask_dice"]
            total = total + w * cfg.anchor_mask * anchor
            anchor_acc = anchor_acc + w * anchor.detach()
        for k in keys:
            acc[k] = acc[k] + w * parts[k].detach()
    seed_target = reference_sampling_targets(out.seed_idx, targets, objects)
    seed_valid = ~targets.sp_pad.gather(1, out.seed_idx)
    sample = sampling_loss(out.seed_scores, seed_target, seed_valid, cfg)
    total = total + cfg.sample * sample
    result = {**acc, "sample": sample.detach()}
    if am is not None:
        result["anchor_mask"] = anchor_acc
        result["anchor_insts"] = torch.tensor(am.num_insts / max(T, 1))
    sem_logits = getattr(out, "sem_logits", None)
    if sem_logits is not None and targets.sem is not None:
        sem = semantic_loss(sem_logits, targets.sem, cfg.sem_balance)
        total = total + cfg.sem * sem
        result["sem"] = sem.detach()
    result["num_insts"] = torch.tensor(m.num_insts / max(T, 1))
    result["total"] = total.detach()
    return total, result


def reference_sentence_targets(batch: dict[str, Any]) -> LossTargets:
    """``BQNet.sentence_targets`` as a copy per sentence and table (no device move)."""
    from bqnet_model.model.bqnet import BQNet

    sp_offsets = batch["sp_offsets"].long().cpu()
    counts = sp_offsets[1:] - sp_offsets[:-1]
    s_max = int(counts.max())
    ts = torch.as_tensor(batch["text_scene"]).long().cpu()
    T, B = ts.shape[0], counts.shape[0]
    sp = torch.as_tensor(batch["superpoints"]).long().cpu()
    xyz = torch.as_tensor(batch["point_xyz"]).float().cpu()
    n_sp = int(sp_offsets[-1])
    centres = torch.zeros(n_sp, 3).index_add_(0, sp, xyz) / torch.bincount(sp, minlength=n_sp).clamp_min(1).unsqueeze(1)
    scene_xyz = torch.zeros(B, s_max, 3)
    for b in range(B):
        scene_xyz[b, : int(counts[b])] = centres[sp_offsets[b]: sp_offsets[b + 1]]
    inst_list, ref_list, anchor_list = batch.get("gt_sp_inst"), batch.get("sp_ref_masks"), batch.get("gt_sp_anchor")
    sp_inst = torch.full((T, s_max), -1, dtype=torch.long)
    sp_ref = torch.zeros(T, s_max)
    sp_anchor = torch.full((T, s_max), -1, dtype=torch.long) if anchor_list is not None else None
    for t in range(T):
        gt = torch.as_tensor(batch["gt_sp_masks"][t]).float()
        n = gt.shape[0]
        sp_inst[t, :n] = torch.as_tensor(inst_list[t]).long() if inst_list is not None else torch.where(gt > 0.5, 0, -1)
        sp_ref[t, :n] = torch.as_tensor(ref_list[t]).float() if ref_list is not None else gt
        if sp_anchor is not None:
            sp_anchor[t, :n] = torch.as_tensor(anchor_list[t]).long()
    pad = torch.arange(s_max)[None, :] >= counts[ts][:, None]
    return LossTargets(sp_inst=sp_inst, sp_pad=pad, sp_xyz=scene_xyz[ts], sp_ref=sp_ref,
                       sem=BQNet.semantic_targets(batch), sp_anchor=sp_anchor)
