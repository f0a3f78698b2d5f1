"""Losses: hand-computed terms, assignment rules, edge cases, and that the mask path learns."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bqnet_model.model.decoder import BQNetDecoder, DecoderConfig, DecoderOutput, LayerPrediction
from bqnet_model.model.losses import (
    LossConfig,
    assign_positives,
    bqnet_loss,
    dice_loss,
    layer_weights,
    sigmoid_focal_loss,
)
from bqnet_model.model.query_sampling import farthest_point_sample

torch.set_num_threads(1)  # tiny problems: one thread is fastest on the shared 2-core machine


def make_out(masks, scores, indi, query_sp_idx, seed_idx=None, seed_scores=None) -> DecoderOutput:
    masks = torch.tensor(masks, requires_grad=True)
    T, Q, S = masks.shape
    if seed_idx is None:
        seed_idx = torch.arange(S).repeat(T, 1)
    seed_idx = torch.as_tensor(seed_idx)
    if seed_scores is None:
        seed_scores = torch.zeros(seed_idx.shape)
    pred = LayerPrediction(masks=masks, scores=torch.tensor(scores, requires_grad=True),
                           indi=torch.tensor(indi, requires_grad=True))
    qsp = torch.as_tensor(query_sp_idx)
    return DecoderOutput(layers=[pred], query_sp_idx=qsp, query_pos=torch.zeros(T, Q, 3),
                         sample_idx=qsp.clone(), seed_idx=seed_idx, seed_scores=torch.as_tensor(seed_scores))


def bce(x: float, t: float) -> float:
    p = 1 / (1 + math.exp(-x))
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def test_hand_computed_terms():
    # One sentence, 4 superpoints (the last padded), 2 queries; query 0 sits on the target.
    m0 = [2.0, -1.0, 0.5, 7.0]
    out = make_out(masks=[[m0, [-2.0, 1.0, 0.0, 0.0]]], scores=[[0.3, 0.9]],
                   indi=[[[0.0, 1.0], [0.5, -0.5]]], query_sp_idx=[[0, 2]],
                   seed_idx=[[0, 1, 2]], seed_scores=[[0.2, 0.0, 0.4]])
    gt = torch.tensor([[1.0, 1.0, 0.0, 1.0]])  # the padded 1 must be ignored
    pad = torch.tensor([[False, False, False, True]])
    cfg = LossConfig(mask_bce=1.0, mask_dice=1.0, score=1.0, indicator=1.0, sample=1.0, negative_weight=0.5)
    total, parts = bqnet_loss(out, gt, pad, cfg)

    exp_bce = (bce(2.0, 1) + bce(-1.0, 1) + bce(0.5, 0)) / 3
    p = [1 / (1 + math.exp(-x)) for x in m0[:3]]
    exp_dice = 1 - (2 * (p[0] + p[1]) + 1) / (sum(p) + 2 + 1)
    iou = 1 / 3  # predicted {0, 2} vs target {0, 1}
    exp_score = (0.3 - iou) ** 2
    ce_pos = -math.log(math.exp(1) / (1 + math.exp(1)))
    ce_neg = -math.log(math.exp(0.5) / (math.exp(0.5) + math.exp(-0.5)))
    exp_indi = (1.0 * ce_pos + 0.5 * ce_neg) / 1.5

    def focal(x: float, t: float) -> float:
        pr = 1 / (1 + math.exp(-x))
        pt = pr * t + (1 - pr) * (1 - t)
        at = 0.25 * t + 0.75 * (1 - t)
        return at * (1 - pt) ** 2 * bce(x, t)

    exp_sample = (focal(0.2, 1) + focal(0.0, 1) + focal(0.4, 0)) / 3

    assert parts["mask_bce"].item() == pytest.approx(exp_bce, rel=1e-5)
    assert parts["mask_dice"].item() == pytest.approx(exp_dice, rel=1e-5)
    assert parts["score"].item() == pytest.approx(exp_score, rel=1e-5)
    assert parts["indicator"].item() == pytest.approx(exp_indi, rel=1e-5)
    assert parts["sample"].item() == pytest.approx(exp_sample, rel=1e-5)
    assert total.item() == pytest.approx(exp_bce + exp_dice + exp_score + exp_indi + exp_sample, rel=1e-5)
    total.backward()
    assert out.layers[0].masks.grad[0, 0, 3] == 0  # padded superpoint: no gradient
    assert torch.all(out.layers[0].masks.grad[0, 1] == 0)  # negative query: no mask gradient


def test_dice_and_focal_helpers():
    logits = torch.tensor([[0.0, 0.0]])
    assert dice_loss(logits, torch.tensor([[1.0, 0.0]]), torch.ones(1, 2)).item() == pytest.approx(1 - 2 / 3)
    x, t = torch.tensor([1.5, -0.3]), torch.tensor([1.0, 0.0])
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p = torch.sigmoid(x)
    expected = torch.stack([0.25 * (1 - p[0]) ** 2 * ce[0], 0.75 * p[1] ** 2 * ce[1]])
    assert torch.allclose(sigmoid_focal_loss(x, t), expected)
    out = make_out([[[2.0, -1.0, 0.5]]], [[0.0]], [[[0.0, 1.0]]], [[0]])
    gt = torch.tensor([[1.0, 1.0, 0.0]])
    pad = torch.zeros(1, 3, dtype=torch.bool)
    _, a = bqnet_loss(out, gt, pad, LossConfig())
    _, b = bqnet_loss(out, gt, pad, LossConfig(mask_focal=True))
    assert b["mask_bce"] < a["mask_bce"] and torch.isfinite(b["total"])


def test_zero_target_sentence():
    out = make_out([[[1.0, -1.0, 2.0], [0.0, 3.0, -2.0]]], [[0.1, 0.2]], [[[0.0, 1.0], [1.0, 0.0]]], [[0, 1]])
    gt = torch.zeros(1, 3)
    total, parts = bqnet_loss(out, gt, torch.zeros(1, 3, dtype=torch.bool))
    assert torch.isfinite(total)
    assert parts["mask_bce"] == 0 and parts["mask_dice"] == 0 and parts["score"] == 0
    assert parts["num_positive"] == 0 and parts["indicator"] > 0
    total.backward()
    g = out.layers[0].indi.grad
    assert g[0, 0, 1] > 0  # pushes query 0's target logit down: every query is negative


def test_all_padding_rows_and_no_positives_are_finite():
    masks = [[[1.0, -1.0, 2.0]] * 2, [[0.5, 0.5, 0.5]] * 2]
    out = make_out(masks, [[0.0, 0.0], [0.0, 0.0]], [[[0.0, 1.0]] * 2, [[3.0, 0.0]] * 2], [[0, 1], [0, 1]])
    pad = torch.tensor([[False, False, False], [True, True, True]])
    gt = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])  # row 1: targets only on padding
    total, parts = bqnet_loss(out, gt, pad)
    assert all(torch.isfinite(v) for v in parts.values())
    total.backward()
    assert torch.all(out.layers[0].indi.grad[1] == 0)  # the all-padding sentence does not train
    full = make_out(masks, [[0.0, 0.0], [0.0, 0.0]], [[[0.0, 1.0]] * 2, [[3.0, 0.0]] * 2], [[0, 1], [0, 1]])
    total2, _ = bqnet_loss(full, gt, torch.ones(2, 3, dtype=torch.bool))
    assert torch.isfinite(total2)


def test_res_fallback_picks_best_overlapping_query():
    # Target = superpoints {2, 3}; no query seed on it. Query 1's mask covers it best.
    masks = [[[5.0, 5.0, -5.0, -5.0], [-5.0, -5.0, 5.0, -5.0], [5.0, 5.0, 5.0, -5.0]]]
    out = make_out(masks, [[0.0] * 3], [[[0.0, 0.0]] * 3], [[0, 1, 0]])
    gt = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    pad = torch.zeros(1, 4, dtype=torch.bool)
    asg = assign_positives(out, gt, pad)
    assert asg.fallback.tolist() == [True]
    assert asg.positive.tolist() == [[False, True, False]]
    _, parts = bqnet_loss(out, gt, pad)
    assert parts["mask_bce"] > 0 and parts["num_positive"] == 1


def test_instance_targets_for_gres():
    # Two target objects: instance 7 on superpoints {0, 1}, instance 9 on {3}.
    out = make_out([[[0.0] * 5] * 3], [[0.0] * 3], [[[0.0, 0.0]] * 3], [[1, 3, 2]])
    gt = torch.tensor([[1.0, 1.0, 0.0, 1.0, 0.0]])
    inst = torch.tensor([[7, 7, 8, 9, -1]])
    pad = torch.zeros(1, 5, dtype=torch.bool)
    union = assign_positives(out, gt, pad)
    assert union.q_idx.tolist() == [0, 1]
    assert torch.equal(union.targets, gt.repeat(2, 1))
    per = assign_positives(out, gt, pad, gt_sp_inst=inst)
    assert per.targets.tolist() == [[1.0, 1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0, 0.0]]


def test_padding_logits_do_not_count():
    base = [[[1.0, -2.0, 0.3, 0.0], [0.5, 0.5, -1.0, 0.0]]]
    other = [[[1.0, -2.0, 0.3, 40.0], [0.5, 0.5, -1.0, -40.0]]]
    gt = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    pad = torch.tensor([[False, False, False, True]])
    a, _ = bqnet_loss(make_out(base, [[0.1, 0.2]], [[[0.0, 1.0], [0.0, 1.0]]], [[0, 2]]), gt, pad)
    b, _ = bqnet_loss(make_out(other, [[0.1, 0.2]], [[[0.0, 1.0], [0.0, 1.0]]], [[0, 2]]), gt, pad)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_layer_weights_and_config_errors():
    assert layer_weights(LossConfig(), 4) == [0.25, 0.5, 0.75, 1.0]  # IPDN's ramp
    assert layer_weights(LossConfig(layer_weights=2.0), 3) == [2.0, 2.0, 2.0]
    assert layer_weights(LossConfig(layer_weights=[1.0, 0.0]), 2) == [1.0, 0.0]
    with pytest.raises(ValueError, match="3 entries"):
        layer_weights(LossConfig(layer_weights=[1.0, 1.0, 1.0]), 7)
    with pytest.raises(ValueError, match="negative_weight"):
        LossConfig(negative_weight=-1.0)
    with pytest.raises(ValueError, match="layer_weights"):
        LossConfig(layer_weights=[1.0, -1.0])
    out = make_out([[[0.0, 0.0]]], [[0.0]], [[[0.0, 0.0]]], [[0]])
    pad = torch.zeros(1, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="gt_sp_masks"):
        bqnet_loss(out, torch.zeros(1, 3), pad)
    with pytest.raises(TypeError, match="float"):
        bqnet_loss(out, torch.zeros(1, 2, dtype=torch.long), pad)
    with pytest.raises(ValueError, match="sp_pad"):
        bqnet_loss(out, torch.zeros(1, 2), pad.float())
    with pytest.raises(ValueError, match="gt_sp_inst"):
        bqnet_loss(out, torch.zeros(1, 2), pad, gt_sp_inst=torch.zeros(1, 2))
    with pytest.raises(TypeError, match="DecoderOutput"):
        bqnet_loss({"layers": []}, torch.zeros(1, 2), pad)


def test_loss_decreases_when_training_the_decoder():
    """30 Adam steps on one fixed tiny problem (fixed superpoint features): the mask path learns."""
    torch.manual_seed(0)
    T, S, C, L, CT = 3, 60, 8, 6, 16
    cfg = DecoderConfig(in_channels=C, text_channels=CT, d_model=32, nhead=4, ffn=64, num_layers=2,
                        fps_num=32, num_proposal=16, knn=4)  # CFR, PSC and DQF on (defaults)
    dec = BQNetDecoder(cfg)
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(1, S, C, generator=g).expand(T, -1, -1)
    xyz = (torch.rand(1, S, 3, generator=g) * 4).expand(T, -1, -1)
    pad = torch.zeros(T, S, dtype=torch.bool)
    pad[1, 50:] = True
    seeds = farthest_point_sample(xyz, 32, pad)
    words = torch.randn(T, L, CT, generator=g)
    wmask = torch.ones(T, L, dtype=torch.bool)
    # targets: the 8 superpoints nearest to a random real point per sentence; sentence 2 has none
    gt = torch.zeros(T, S)
    for t, centre in enumerate((5, 17)):
        d = (xyz[t] - xyz[t, centre]).norm(dim=-1).masked_fill(pad[t], 1e9)
        gt[t, d.topk(8, largest=False).indices] = 1.0
    opt = torch.optim.Adam(dec.parameters(), lr=2e-3)
    history = []
    for _ in range(30):
        out = dec(feats, xyz, pad, seeds, words, wmask)
        loss, parts = bqnet_loss(out, gt, pad)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({k: float(v) for k, v in parts.items()})
    first, last = history[0], history[-1]
    assert all(math.isfinite(h["total"]) for h in history)
    assert last["total"] < 0.75 * first["total"]
    assert last["mask_dice"] < 0.8 * first["mask_dice"]
    assert last["mask_bce"] < 0.6 * first["mask_bce"]
