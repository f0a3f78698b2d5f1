"""The anchor-mask term's pairs gathered together with the targets' (``layer_mask_and_anchor_losses``)
against the code before (``layer_mask_losses`` called once for the target pairs and once for the
anchor pairs, as the reference ``loss_reference.mask_losses`` gives it, prediction by prediction):
every term bit for bit on the CPU and every gradient within 1e-6 relative, and ``bqnet_loss`` with anchors on against the same two-call composition.

The gradients are not always bit-identical: a few mask-gradient entries differ by one float32
ulp (1e-10 absolute on entries of ~5e-3, measured on these cases). The values are the same per
element; the differing ulps most likely come from CPU elementwise kernels in backward computing
an element in their vector body in one layout and in their scalar tail in the other, since an
anchor pair's row sits at a different place in the gathered (N, P+A, S) tensor than in its own
(N, A, S) one."""

from __future__ import annotations

from typing import Sequence

import pytest
import torch

from bqnet_model.model.losses import (LossConfig, anchor_matching, bqnet_loss, layer_mask_and_anchor_losses,
                                      layer_weights)
from dataclasses import replace

from bqnet_model.model.matching import Matching, match_batch, object_keys
from loss_reference import mask_losses
from test_loss_batching import _leaves, _random_case


def _old_layer_mask_losses(masks: Sequence[torch.Tensor], scores: Sequence[torch.Tensor], m: Matching,
                           sp_pad: torch.Tensor, cfg: LossConfig, norm: float) -> dict[str, torch.Tensor]:
    """The old per-pair-set call: the reference ``loss_reference.mask_losses`` of each prediction,
    stacked (bit for bit what ``layer_mask_losses`` gave before the anchors' pairs joined the
    targets')."""
    per = [mask_losses(mk, sc, m, sp_pad, cfg, norm) for mk, sc in zip(masks, scores)]
    return {k: torch.stack([p[k] for p in per]) for k in per[0]}


def _old_anchor_matching(seed_idx, sample_idx, targets, target_matching) -> Matching:
    """``losses.anchor_matching`` as it was: the anchors matched, then the target's queries dropped."""
    am = match_batch(seed_idx, sample_idx, replace(targets, sp_inst=targets.sp_anchor, objects=targets.anchor_objects))
    keep = torch.nonzero(~target_matching.matched[am.t_idx, am.q_idx]).squeeze(1)
    t_idx, q_idx = am.t_idx.index_select(0, keep), am.q_idx.index_select(0, keep)
    matched = torch.zeros_like(am.matched)
    matched[t_idx, q_idx] = True
    return Matching(t_idx, q_idx, am.k_idx.index_select(0, keep), am.targets.index_select(0, keep), matched,
                    am.objects)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("keys", [False, True])
def test_anchor_matching_equals_match_then_drop(seed, keys):
    """Dropping the target's queries inside the matching's nonzero gives the old pairs, in order."""
    out, tg = _random_case(seed)
    if keys:  # the objects found on the host, as targets.build_tables gives them
        tg = replace(tg, objects=object_keys(tg.sp_inst), anchor_objects=object_keys(tg.sp_anchor))
    m = match_batch(out.seed_idx, out.sample_idx, tg)
    old = _old_anchor_matching(out.seed_idx, out.sample_idx, tg, m)
    new = anchor_matching(out.seed_idx, out.sample_idx, tg, m)
    assert old.num_insts > 0
    for name in ("t_idx", "q_idx", "k_idx", "targets", "matched"):
        assert torch.equal(getattr(new, name), getattr(old, name)), name
    # some anchor pair was dropped in at least one of the cases is checked below (the rule can drop)
    full = match_batch(out.seed_idx, out.sample_idx, replace(tg, sp_inst=tg.sp_anchor, objects=tg.anchor_objects))
    assert full.num_insts >= new.num_insts
    # everything excluded: no pairs; nothing excluded: the plain matching
    none = match_batch(out.seed_idx, out.sample_idx, replace(tg, sp_inst=tg.sp_anchor, objects=tg.anchor_objects),
                       exclude=torch.ones_like(m.matched))
    assert none.num_insts == 0
    plain = match_batch(out.seed_idx, out.sample_idx, replace(tg, sp_inst=tg.sp_anchor, objects=tg.anchor_objects),
                        exclude=torch.zeros_like(m.matched))
    for name in ("t_idx", "q_idx", "k_idx", "targets", "matched"):
        assert torch.equal(getattr(plain, name), getattr(full, name)), name


def test_some_case_drops_anchor_pairs():
    """The cases above exercise the drop (an anchor pair on a target's query), not only its absence."""
    dropped = 0
    for seed in range(8):
        out, tg = _random_case(seed)
        m = match_batch(out.seed_idx, out.sample_idx, tg)
        full = match_batch(out.seed_idx, out.sample_idx, replace(tg, sp_inst=tg.sp_anchor))
        dropped += full.num_insts - anchor_matching(out.seed_idx, out.sample_idx, tg, m).num_insts
    assert dropped > 0


def _objective(parts: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor], cfg: LossConfig) -> torch.Tensor:
    """A scalar of every term (the way bqnet_loss weighs them), for the gradients."""
    w = torch.tensor(layer_weights(cfg, parts["mask_bce"].shape[0]))
    total = (w * (cfg.mask_bce * parts["mask_bce"] + cfg.mask_dice * parts["mask_dice"]
                  + cfg.score * parts["score"])).sum()
    anchor_term = cfg.mask_bce * anchor["mask_bce"] + cfg.mask_dice * anchor["mask_dice"]
    return total + cfg.anchor_mask * (w * anchor_term).sum()


def _pairs(seed: int, empty: bool = False):
    out, tg = _random_case(seed, empty=empty)
    m = match_batch(out.seed_idx, out.sample_idx, tg)
    am = anchor_matching(out.seed_idx, out.sample_idx, tg, m)
    return out, tg, m, am


@pytest.mark.parametrize("seed,empty", [(0, False), (1, False), (2, False), (3, True), (5, False)])
def test_gathered_anchor_pairs_equal_two_calls(seed, empty):
    cfg = LossConfig(anchor_mask=0.7)
    out, tg, m, am = _pairs(seed, empty)
    if not empty:
        assert m.num_insts > 0 and am.num_insts > 0, "the case must have both kinds of pairs"
    masks, scores = [p.masks for p in out.layers], [p.scores for p in out.layers]
    norm, anorm = float(max(m.num_insts, 1)), float(max(am.num_insts, 1))
    parts, anchor = layer_mask_and_anchor_losses(masks, scores, m, am, tg.sp_pad, cfg, norm, anorm)
    old = _old_layer_mask_losses(masks, scores, m, tg.sp_pad, cfg, norm)
    old_anchor = _old_layer_mask_losses(masks, scores, am, tg.sp_pad, cfg, anorm)
    assert set(anchor) == {"mask_bce", "mask_dice"}
    for k in old:
        assert torch.equal(parts[k], old[k]), k
    for k in anchor:
        assert torch.equal(anchor[k], old_anchor[k]), k
    leaves = masks + scores
    got = torch.autograd.grad(_objective(parts, anchor, cfg), leaves, allow_unused=True)
    want = torch.autograd.grad(_objective(old, old_anchor, cfg), leaves, allow_unused=True)
    for g, w in zip(got, want):
        assert (g is None) == (w is None)
        if g is not None:  # one float32 ulp at most (module docstring), a wrong pair is off by ~1e-3
            torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-9)


def test_bqnet_loss_with_anchors_equals_the_two_call_composition():
    """The whole loss with anchors on: the mask, score and anchor parts as the old composition gives them."""
    cfg = LossConfig(anchor_mask=0.5, sem_balance=0.5)
    out, tg, m, am = _pairs(1)
    total, parts = bqnet_loss(out, tg, cfg)
    masks, scores = [p.masks for p in out.layers], [p.scores for p in out.layers]
    w = torch.tensor(layer_weights(cfg, len(masks)))
    old = _old_layer_mask_losses(masks, scores, m, tg.sp_pad, cfg, float(max(m.num_insts, 1)))
    old_anchor = _old_layer_mask_losses(masks, scores, am, tg.sp_pad, cfg, float(max(am.num_insts, 1)))
    for k in ("mask_bce", "mask_dice", "score"):
        assert torch.equal(parts[k], (w * old[k]).sum()), k
    want = (w * (cfg.mask_bce * old_anchor["mask_bce"] + cfg.mask_dice * old_anchor["mask_dice"])).sum()
    assert torch.equal(parts["anchor_mask"], want)
    # and the gradients are those of the loss without the fusion: anchor term off vs on differ by
    # exactly the old anchor term's gradient on the masks
    g_on = torch.autograd.grad(total, _leaves(out), allow_unused=True)
    total_off, _ = bqnet_loss(out, tg, LossConfig(anchor_mask=0.0, sem_balance=0.5))
    g_off = torch.autograd.grad(total_off, _leaves(out), allow_unused=True)
    g_anchor = torch.autograd.grad(cfg.anchor_mask * want, masks)
    for p, a, on, off in zip(out.layers, g_anchor, g_on[2::5], g_off[2::5]):
        torch.testing.assert_close(on, off + a, rtol=0, atol=1e-7)


def test_no_anchor_pairs_and_no_target_pairs():
    """The rare cases keep their old values: no anchor pairs at all, or no target pairs."""
    cfg = LossConfig(anchor_mask=1.0)
    out, tg, m, am = _pairs(3, empty=True)
    assert m.num_insts == 0
    masks, scores = [p.masks for p in out.layers], [p.scores for p in out.layers]
    parts, anchor = layer_mask_and_anchor_losses(masks, scores, m, am, tg.sp_pad, cfg, 1.0,
                                                 float(max(am.num_insts, 1)))
    old_anchor = _old_layer_mask_losses(masks, scores, am, tg.sp_pad, cfg, float(max(am.num_insts, 1)))
    assert all(float(v.detach().abs().sum()) == 0.0 for v in parts.values())
    for k in anchor:
        assert torch.equal(anchor[k], old_anchor[k]), k
    none = Matching(am.t_idx[:0], am.q_idx[:0], am.k_idx[:0], am.targets[:0], torch.zeros_like(am.matched), am.objects)
    out, tg, m, _ = _pairs(0)
    masks, scores = [p.masks for p in out.layers], [p.scores for p in out.layers]
    parts, anchor = layer_mask_and_anchor_losses(masks, scores, m, none, tg.sp_pad, cfg, float(m.num_insts), 1.0)
    old = _old_layer_mask_losses(masks, scores, m, tg.sp_pad, cfg, float(m.num_insts))
    for k in old:
        assert torch.equal(parts[k], old[k]), k
    assert all(float(v) == 0.0 for v in anchor["mask_bce"]) and anchor["mask_bce"].requires_grad
