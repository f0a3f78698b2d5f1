"""The authors' losses, matching and sampling targets against hand computations on tiny tensors."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from bqnet_model.data.dataset import reference_mask, target_superpoints
from bqnet_model.model.losses import (
    LossConfig,
    LossTargets,
    align_loss,
    bqnet_loss,
    indicator_loss,
    layer_weights,
    mask_losses,
    sampling_loss,
    sigmoid_focal_loss,
)
from bqnet_model.model.matching import match_batch, match_objects, sampling_targets, sentence_objects

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# Stand-ins with the attribute names of decoder.LayerPrediction / DecoderOutput (the loss reads
# only these), so the tests pin the loss and not the decoder.
@dataclass
class Pred:
    masks: torch.Tensor
    scores: torch.Tensor
    indi: torch.Tensor
    proj_queries: torch.Tensor | None = None
    proj_tokens: torch.Tensor | None = None


@dataclass
class Out:
    layers: list
    query_sp_idx: torch.Tensor
    query_pos: torch.Tensor
    sample_idx: torch.Tensor
    seed_idx: torch.Tensor
    seed_scores: torch.Tensor
    seed_pos: torch.Tensor
    word_pad: torch.Tensor
    sem_logits: torch.Tensor | None = None


def _bce(x: float, t: float) -> float:
    return -(t * math.log(1 / (1 + math.exp(-x))) + (1 - t) * math.log(1 - 1 / (1 + math.exp(-x))))


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# ---------------------------------------------------------------- matching
def test_matching_rule_nearest_plus_inside_queries():
    # 5 candidates on a line; object 7 centred at x=0.1, object 9 at x=3.9
    pos = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0], [3.0, 0, 0], [4.0, 0, 0]])
    labels = torch.tensor([7, 7, -1, 9, 9])
    cand, obj, nearest = match_objects(pos, labels, torch.tensor([7, 9]), torch.tensor([[0.1, 0, 0], [3.9, 0, 0]]))
    assert nearest.tolist() == [0, 4]
    # nearest pairs first, then the inside ones that are nobody's nearest
    assert list(zip(cand.tolist(), obj.tolist())) == [(0, 0), (4, 1), (1, 0), (3, 1)]
    # a candidate on object 9 that is object 7's nearest is matched only as object 7's nearest;
    # an object no seed lies on still gets its nearest candidate
    labels2 = torch.tensor([9, -1, -1, -1, 9])
    cand, obj, nearest = match_objects(pos, labels2, torch.tensor([7, 9]), torch.tensor([[0.1, 0, 0], [3.9, 0, 0]]))
    assert list(zip(cand.tolist(), obj.tolist())) == [(0, 0), (4, 1)]
    # one candidate nearest to two objects: two pairs
    cand, obj, _ = match_objects(pos[:1], torch.tensor([-1]), torch.tensor([1, 2]), torch.tensor([[1.0, 0, 0], [2.0, 0, 0]]))
    assert list(zip(cand.tolist(), obj.tolist())) == [(0, 0), (0, 1)]
    e = match_objects(pos, labels, torch.zeros(0, dtype=torch.long), torch.zeros(0, 3))
    assert all(x.numel() == 0 for x in e)


def test_objects_centroid_is_mean_of_superpoint_centres():
    sp_inst = torch.tensor([5, 5, -1, 8])
    sp_xyz = torch.tensor([[0.0, 0, 0], [2.0, 2, 0], [9.0, 9, 9], [1.0, 1, 1]])
    objs = sentence_objects(sp_inst, sp_xyz)
    assert objs.ids.tolist() == [5, 8]
    assert objs.masks.tolist() == [[True, True, False, False], [False, False, False, True]]
    torch.testing.assert_close(objs.centroids, torch.tensor([[1.0, 1, 0], [1.0, 1, 1]]))


def _targets(sp_inst, sp_xyz, sp_ref=None, pad=None):
    sp_inst = torch.as_tensor(sp_inst)
    T, S = sp_inst.shape
    return LossTargets(sp_inst=sp_inst, sp_pad=torch.zeros(T, S, dtype=torch.bool) if pad is None else pad,
                       sp_xyz=torch.as_tensor(sp_xyz, dtype=torch.float32),
                       sp_ref=torch.zeros(T, S) if sp_ref is None else torch.as_tensor(sp_ref, dtype=torch.float32))


def test_match_batch_and_soft_sampling_targets():
    # superpoints 0..5 on the x axis; the target (id 3) owns superpoints 1 and 2 (centroid x=1.5);
    # superpoint 4 belongs to a context object (sp_ref 0.5); sentence 1 has no target
    xs = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    sp_xyz = torch.stack([xs, torch.zeros(6), torch.zeros(6)], 1)
    sp_inst = torch.tensor([[-1, 3, 3, -1, -1, -1], [-1] * 6])
    sp_ref = torch.tensor([[0.0, 1.0, 1.0, 0.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0, 0.5, 0.0]])
    tg = _targets(sp_inst, sp_xyz.expand(2, 6, 3), sp_ref)
    seed_idx = torch.tensor([[0, 2, 4, 1], [0, 2, 4, 1]])  # seeds on superpoints 0, 2, 4, 1
    sample_idx = torch.tensor([[1, 2, 0], [1, 2, 0]])  # queries = seeds 1 (sp 2), 2 (sp 4), 0 (sp 0)
    m = match_batch(seed_idx, sample_idx, tg)
    # query 0 (sp 2, 0.5 from the centroid) is the nearest and also lies inside: one pair
    assert m.t_idx.tolist() == [0] and m.q_idx.tolist() == [0] and m.num_insts == 1
    assert m.targets.tolist() == [[0.0, 1.0, 1.0, 0.0, 0.0, 0.0]]
    assert m.matched.tolist() == [[True, False, False], [False, False, False]]
    st = sampling_targets(seed_idx, tg, m.objects)
    # sentence 0: seeds sp0 (0.5*0), sp2 and sp1 inside the object: sp1 and sp2 are both 0.5 from
    # the centroid; the nearest (lowest index on a tie: seed 1 = sp 2) gets 1, seed 3 (sp 1) exp(-0.5*0.25);
    # sp4: 0.5 * 0.5
    want0 = [0.0, 1.0, 0.25, math.exp(-0.5 * 0.25)]
    torch.testing.assert_close(st[0], torch.tensor(want0))
    torch.testing.assert_close(st[1], torch.tensor([0.0, 0.0, 0.25, 0.0]))  # no object: 0.5 * sp_ref only


def test_target_superpoints_and_reference_mask():
    # superpoint 0: 3 points of instance 4 and 1 other; superpoint 1: 2 of 4 and 2 of 5 (no majority);
    # superpoint 2: 1 point of 6 and 2 of 7 (instance 6 dominates none of its superpoints)
    sp = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    inst = np.array([4, 4, 4, 5, 4, 4, 5, 5, 6, 7, 7])
    assert target_superpoints(sp, inst, [4]).tolist() == [4, -1, -1]
    # a target without a majority superpoint gets its largest share (superpoint 2, 1/3)
    assert target_superpoints(sp, inst, [6]).tolist() == [-1, -1, 6]
    # semantic of each instance (first point): 4 -> 2 (chair), 5 -> 4 (desk), 6, 7 -> 3 (table)
    sem = np.array([2, 2, 2, 4, 2, 2, 4, 4, 3, 3, 3])
    ref = reference_mask(sp, inst, sem, [4], ["desk"])
    # per point: instance 4 -> 1, instance 5 (desk, named) -> 0.5, others 0; superpoint means
    np.testing.assert_allclose(ref, [(3 + 0.5) / 4, (2 + 1.0) / 4, 0.0])
    np.testing.assert_allclose(reference_mask(sp, inst, sem, [], ["table"]), [0, 0, 1.0 / 3 * 0.5 + 2.0 / 3 * 0.5])


# ---------------------------------------------------------------- loss terms
def _pairs_setup():
    """2 sentences x 2 queries x 3 superpoints; sentence 0 pairs (q0, obj A) and (q1, obj A);
    sentence 1 pair (q1, obj B) with its last superpoint padding."""
    sp_inst = torch.tensor([[1, 1, -1], [-1, 2, -1]])
    pad = torch.tensor([[False, False, False], [False, False, True]])
    sp_xyz = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0], [5.0, 0, 0]], [[0.0, 0, 0], [1.0, 0, 0], [0.0, 0, 0]]])
    tg = _targets(sp_inst, sp_xyz, pad=pad)
    seed_idx = torch.tensor([[0, 1], [0, 1]])
    sample_idx = torch.tensor([[0, 1], [0, 1]])
    return tg, match_batch(seed_idx, sample_idx, tg), seed_idx, sample_idx


def test_mask_terms_by_hand():
    tg, m, _, _ = _pairs_setup()
    # sentence 0: centroid x=0.5, nearest = q0 (tie, lowest index), q1 inside: two pairs on [1, 1, 0]
    # sentence 1: centroid x=1, nearest = q1: one pair on [0, 1, pad]
    assert list(zip(m.t_idx.tolist(), m.q_idx.tolist())) == [(0, 0), (0, 1), (1, 1)]
    masks = torch.tensor([[[2.0, -1.0, 0.5], [1.0, 3.0, -2.0]], [[0.0, 0.0, 0.0], [-1.0, 2.0, -1e4]]])
    scores = torch.tensor([[0.3, 0.9], [0.0, 0.4]])
    got = mask_losses(masks, scores, m, tg.sp_pad, LossConfig(), norm=3.0)
    rows0 = [([2.0, -1.0, 0.5], [1, 1, 0]), ([1.0, 3.0, -2.0], [1, 1, 0])]
    row1 = ([-1.0, 2.0], [0, 1])
    bce0 = sum(_bce(x, t) for r, tt in rows0 for x, t in zip(r, tt)) / 6  # mean over pairs x superpoints
    bce1 = sum(_bce(x, t) for x, t in zip(*row1)) / 2  # padding excluded
    assert got["mask_bce"].item() == pytest.approx((bce0 + bce1) / 3, rel=1e-5)

    def dice(r, tt):
        p = [_sig(x) for x in r]
        return 1 - (2 * sum(a * b for a, b in zip(p, tt)) + 1) / (sum(p) + sum(tt) + 1)

    want_dice = (dice(*rows0[0]) + dice(*rows0[1])) / 2 + dice(*row1)
    assert got["mask_dice"].item() == pytest.approx(want_dice / 3, rel=1e-5)
    # IoUs: pair (0,0) binarised [1,0,1] vs [1,1,0] -> 1/3 (skipped: not > 0.5);
    # pair (0,1) [1,1,0] -> 1 (score 0.9); pair (1,1) [0,1] vs [0,1] -> 1 (score 0.4)
    want_score = (0.9 - 1.0) ** 2 + (0.4 - 1.0) ** 2
    assert got["score"].item() == pytest.approx(want_score / 3, rel=1e-4)
    # score_iou_min is strict: at IoU exactly 1/3 with a threshold of 1/3 the pair stays out
    assert mask_losses(masks, scores, m, tg.sp_pad, LossConfig(score_iou_min=1 / 3), 3.0)["score"].item() == \
        pytest.approx(want_score / 3, rel=1e-4)


def test_indicator_sum_over_queries_by_hand():
    indi = torch.tensor([[[0.0, 1.0], [2.0, 0.0]], [[0.5, 0.5], [1.0, -1.0]]])
    matched = torch.tensor([[True, False], [False, True]])
    got = indicator_loss(indi, matched, 0.1, norm=2.0)

    def nll(a, b, cls):
        return -((b if cls else a) - math.log(math.exp(a) + math.exp(b)))

    want = nll(0, 1, 1) + 0.1 * nll(2, 0, 0) + 0.1 * nll(0.5, 0.5, 0) + nll(1, -1, 1)
    assert got.item() == pytest.approx(want / 2, rel=1e-6)


def test_sampling_focal_on_raw_scores_by_hand():
    x = torch.tensor([[0.0, 2.0, 0.5]])
    t = torch.tensor([[1.0, 0.25, 0.0]])

    def focal(x, t, a=0.25, g=2.0):
        p = _sig(x)
        return (a * t + (1 - a) * (1 - t)) * (t * (1 - p) + (1 - t) * p) ** g * _bce(x, t)

    elem = sigmoid_focal_loss(x, t)
    torch.testing.assert_close(elem[0], torch.tensor([focal(0, 1), focal(2, 0.25), focal(0.5, 0)]))
    valid = torch.tensor([[True, True, False]])
    assert sampling_loss(x, t, valid, LossConfig()).item() == pytest.approx((focal(0, 1) + focal(2, 0.25)) / 2, rel=1e-6)


def _naive_align(q, tok, word_pad, maps, matched, eos, temp, norm):
    """The authors' loss_sem_align written out with loops over queries and tokens."""
    T, Q, _ = q.shape
    L = tok.shape[1]
    qn = q / q.norm(dim=-1, keepdim=True)
    tn = tok / tok.norm(dim=-1, keepdim=True)
    lg = (qn @ tn.transpose(1, 2) / temp).tolist()
    b2t = t2b = 0.0
    for t in range(T):
        n_real = int((~word_pad[t]).sum())
        last, prev = n_real - 1, n_real - 2
        pos = [[False] * L for _ in range(Q)]
        mp = {k: [[0.0] * L for _ in range(Q)] for k in maps}
        for i in range(Q):
            if matched[t, i]:
                for j in range(L):
                    pos[i][j] = maps["target"][t, j].item() > 0
                    for k in maps:
                        mp[k][i][j] = maps[k][t, j].item()
            else:
                pos[i][last] = pos[i][prev] = True
        for i in range(Q):
            if not any(pos[i]):
                continue
            npos = sum(pos[i])
            v = -sum(lg[t][i][j] for j in range(L) if pos[i][j]) / npos
            for k, wk in (("modify", 0.2), ("pron", 0.2), ("rel", 0.1)):
                cnt = sum(1 for j in range(L) if mp[k][i][j] > 0)
                if cnt:
                    v += wk * -sum(lg[t][i][j] for j in range(L) if mp[k][i][j] > 0) / cnt
            v += math.log(sum(math.exp(lg[t][i][j] * (2 if mp["other_entity"][i][j] > 0 else 1)) for j in range(L)))
            b2t += v * (1.0 if matched[t, i] else eos)
        for j in range(L):
            cols = {k: [mp[k][i][j] for i in range(Q)] for k in maps}
            has = any(pos[i][j] for i in range(Q)) or any(c > 0 for k in ("modify", "pron", "rel") for c in cols[k])
            if not has:
                continue
            w = 1.0 if j == last else eos
            if any(pos[i][j] for i in range(Q)):
                w = 1.0
            for k, wk in (("modify", 0.2), ("pron", 0.2), ("rel", 0.1)):
                if any(c > 0 for c in cols[k]):
                    w = wk
            if j == prev:
                w = 0.1
            nb = sum(pos[i][j] for i in range(Q)) + sum(sum(cols[k]) for k in ("modify", "pron", "rel")) + 1e-6
            s = -sum(lg[t][i][j] for i in range(Q) if pos[i][j])
            s -= sum(lg[t][i][j] for k in ("modify", "pron", "rel") for i in range(Q) if cols[k][i] > 0)
            lse = math.log(sum(math.exp(lg[t][i][j]) for i in range(Q)))
            t2b += w * (-math.log(nb + 1e-6) / nb + s / nb + lse)
    return (b2t + t2b) / 2 / norm


def test_align_loss_against_a_loop_version_of_the_authors_formula():
    g = torch.Generator().manual_seed(0)
    T, Q, L, D = 2, 3, 7, 4
    q = torch.randn(T, Q, D, generator=g)
    tok = torch.randn(T, L, D, generator=g)
    word_pad = torch.zeros(T, L, dtype=torch.bool)
    word_pad[1, 5:] = True  # sentence 1 has 5 real tokens: its last two are 4 and 3
    z = torch.zeros(T, L)
    maps = {k: z.clone() for k in ("target", "modify", "pron", "other_entity", "rel")}
    maps["target"][0, 1:3] = 0.5
    maps["modify"][0, 3] = 1.0
    maps["rel"][0, 4] = 1.0
    maps["other_entity"][0, 5] = 1.0
    maps["target"][1, 2] = 1.0
    maps["pron"][1, 1] = 1.0
    matched = torch.tensor([[True, False, True], [False, True, False]])
    got = align_loss(q, tok, word_pad, maps, matched, 0.1, 0.07, norm=3.0)
    want = _naive_align(q.double(), tok.double(), word_pad, maps, matched, 0.1, 0.07, 3.0)
    assert got.item() == pytest.approx(want, rel=1e-4)
    # no matched query: only the "not mentioned" positives, every row weighted eos_coef
    none = align_loss(q, tok, word_pad, maps, torch.zeros(T, Q, dtype=torch.bool), 0.1, 0.07, 1.0)
    want0 = _naive_align(q.double(), tok.double(), word_pad, maps, torch.zeros(T, Q, dtype=torch.bool), 0.1, 0.07, 1.0)
    assert none.item() == pytest.approx(want0, rel=1e-4)


# ---------------------------------------------------------------- the whole loss
def _output(T=2, Q=2, S=3, F=2, L=5, n_layers=3, proj=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    layers = [Pred(torch.randn(T, Q, S, generator=g), torch.rand(T, Q, generator=g), torch.randn(T, Q, 2, generator=g),
                   torch.randn(T, Q, 4, generator=g) if proj else None, torch.randn(T, L, 4, generator=g) if proj else None)
              for _ in range(n_layers)]
    seed_idx = torch.tensor([[0, 1]] * T)
    sample_idx = torch.tensor([[0, 1]] * T)
    return Out(layers, seed_idx.gather(1, sample_idx), torch.zeros(T, Q, 3), sample_idx, seed_idx,
               torch.rand(T, F, generator=g) * 2, torch.zeros(T, F, 3), torch.zeros(T, L, dtype=torch.bool))


def _maps(T=2, L=5):
    maps = {k: torch.zeros(T, L) for k in ("target", "modify", "pron", "other_entity", "rel")}
    maps["target"][:, 1] = 1.0
    return maps


def test_total_is_the_layer_weighted_sum_of_the_terms():
    tg, m, _, _ = _pairs_setup()
    tg.token_maps = _maps()
    tg.sp_ref = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    out = _output()
    cfg = LossConfig()
    total, parts = bqnet_loss(out, tg, cfg)
    assert layer_weights(cfg, 3) == [1 / 3, 2 / 3, 1.0]
    want = 0.0
    for w, p in zip([1 / 3, 2 / 3, 1.0], out.layers):
        mk = mask_losses(p.masks, p.scores, m, tg.sp_pad, cfg, 3.0)
        ind = indicator_loss(p.indi, m.matched, 0.1, 3.0)
        al = align_loss(p.proj_queries, p.proj_tokens, out.word_pad, tg.token_maps, m.matched, 0.1, 0.07, 3.0)
        want += w * (mk["mask_bce"] + mk["mask_dice"] + 0.5 * mk["score"] + 0.1 * ind + 0.1 * al)
    st = sampling_targets(out.seed_idx, tg, m.objects)
    want += 5.0 * sampling_loss(out.seed_scores, st, torch.ones(2, 2, dtype=torch.bool), cfg)
    assert total.item() == pytest.approx(want.item(), rel=1e-6)
    assert parts["num_insts"].item() == pytest.approx(1.5) and parts["total"].item() == pytest.approx(total.item())
    # a list of layer weights, and the semantic head's term when the output has its logits
    out.sem_logits = torch.zeros(1, 3, 4, requires_grad=True)
    tg.sem = torch.tensor([[0, -1, 3]])
    t2, p2 = bqnet_loss(out, tg, LossConfig(layer_weights=[0.0, 0.0, 1.0], sem=2.0))
    assert p2["sem"].item() == pytest.approx(math.log(4)) and "sem" in p2
    with pytest.raises(ValueError, match="layer_weights has 2"):
        bqnet_loss(out, tg, LossConfig(layer_weights=[1.0, 1.0]))


def test_zero_target_batch_is_finite_and_backpropagates():
    tg = _targets(torch.full((2, 3), -1), torch.zeros(2, 3, 3))
    tg.token_maps = _maps()
    out = _output()
    for p in out.layers:
        p.masks.requires_grad_(True)
        p.indi.requires_grad_(True)
    total, parts = bqnet_loss(out, tg)
    assert torch.isfinite(total) and parts["num_insts"].item() == 0 and parts["mask_bce"].item() == 0
    total.backward()
    assert out.layers[-1].indi.grad is not None and out.layers[-1].masks.grad is not None


def test_inputs_are_checked():
    tg, _, _, _ = _pairs_setup()
    out = _output(proj=True)
    with pytest.raises(ValueError, match="token_maps"):
        bqnet_loss(out, tg)  # contrastive term on, no maps
    total, parts = bqnet_loss(out, tg, LossConfig(align=0.0))
    assert parts["align"].item() == 0 and torch.isfinite(total)
    bad = _targets(torch.full((2, 4), -1), torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match="sp_inst must have shape"):
        bqnet_loss(_output(proj=False), bad)
    with pytest.raises(ValueError, match="no layers"):
        bqnet_loss(Out([], *([torch.zeros(1)] * 7)), tg)


def test_config_defaults_are_the_authors_and_errors_name_the_key():
    c = LossConfig()
    assert (c.mask_bce, c.mask_dice, c.score, c.sample, c.indicator, c.align, c.eos_coef, c.score_iou_min) == \
        (1.0, 1.0, 0.5, 5.0, 0.1, 0.1, 0.1, 0.5)
    assert "mask_focal" in LossConfig.RETIRED and not hasattr(c, "mask_focal")
    for kw, words in (({"indicator": -1.0}, "indicator"), ({"focal_alpha": 2.0}, "focal_alpha"),
                      ({"score_iou_min": 1.0}, "score_iou_min"), ({"align_temperature": 0.0}, "align_temperature"),
                      ({"layer_weights": []}, "layer_weights")):
        with pytest.raises(ValueError, match=words):
            LossConfig(**kw)


def test_sentence_targets_of_a_plain_collate_batch():
    """A batch from ``collate_scenes`` alone (no instance ids): each sentence's target union is one
    object, its mask is the sampling reference; superpoint centres are their points' mean."""
    from bqnet_model.model.bqnet import BQNet
    from bqnet_model.model.inputs import collate_scenes, scene_inputs

    xyz = np.array([[0, 0, 0], [0.2, 0, 0], [1, 1, 1], [1.2, 1, 1], [3, 3, 3]], np.float32)
    rgb = np.zeros((5, 3), np.uint8)
    s = scene_inputs(xyz, rgb, np.array([0, 0, 1, 1, 2]), 0.05)
    batch = collate_scenes([s, s], ["a", "b", "c"], [0, 1, 1],
                           gt_sp_masks=[np.array([0, 1, 0.0]), np.array([1, 0, 0.0]), np.zeros(3)])
    tg = BQNet.sentence_targets(batch)
    assert tg.sp_inst.tolist() == [[-1, 0, -1], [0, -1, -1], [-1, -1, -1]]
    torch.testing.assert_close(tg.sp_xyz[1, 0], torch.tensor([0.1, 0.0, 0.0]))
    torch.testing.assert_close(tg.sp_ref, torch.tensor([[0, 1, 0.0], [1, 0, 0], [0, 0, 0]]))
    assert tg.sem is None and not tg.sp_pad.any()
