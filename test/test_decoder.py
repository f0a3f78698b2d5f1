"""Decoder stack: FPS, kNN graphs, text-guided sampling, CFR/PSC/DQF, the decoder, the heads."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from bqnet_model.model.cfr import CrossLayerFeatureRefinement, foreground_probability
from bqnet_model.model.decoder import (
    PAD_LOGIT,
    BQNetDecoder,
    DecoderConfig,
    DecoderOutput,
    LayerPrediction,
    MultiheadAttention,
)
from bqnet_model.model.dqf import DistanceAwareQueryFocusing
from bqnet_model.model.heads import select_gres, select_res
from bqnet_model.model.losses import bqnet_loss
from bqnet_model.model.psc import ProgressiveSpatialConstraint, query_centres, scene_extent
from bqnet_model.model.query_sampling import TextGuidedSampling, farthest_point_sample, knn_mask, relevance_logits

torch.set_num_threads(1)  # tiny problems: one thread is fastest on the shared 2-core machine

T, S, C_IN, L, C_TXT = 3, 60, 8, 7, 16
N_REAL = (60, 50, 40)  # real superpoints per sentence (rows 1, 2 padded)


def tiny_cfg(**kw) -> DecoderConfig:
    base = dict(in_channels=C_IN, text_channels=C_TXT, d_model=32, nhead=4, ffn=64, num_layers=2,
                fps_num=32, num_proposal=16, knn=4, cfr=False, psc=False, dqf=False)
    base.update(kw)
    return DecoderConfig(**base)


def make_inputs(seed: int = 0, shared: bool = False):
    """Tiny scene batch: 3 sentences, 60 superpoints with padding, 7 words with padding."""
    g = torch.Generator().manual_seed(seed)
    if shared:  # one scene expanded to all sentences, as the caller does
        feats = torch.randn(1, S, C_IN, generator=g).expand(T, -1, -1)
        xyz = (torch.rand(1, S, 3, generator=g) * 4.0).expand(T, -1, -1)
    else:
        feats = torch.randn(T, S, C_IN, generator=g)
        xyz = torch.rand(T, S, 3, generator=g) * 4.0
    pad = torch.zeros(T, S, dtype=torch.bool)
    for t, n in enumerate(N_REAL):
        pad[t, n:] = True
    seeds = farthest_point_sample(xyz, 32, pad)
    words = torch.randn(T, L, C_TXT, generator=g)
    wmask = torch.ones(T, L, dtype=torch.bool)
    wmask[0, 5:] = False
    wmask[2, 3:] = False
    return feats, xyz, pad, seeds, words, wmask


def run(dec: BQNetDecoder, inputs) -> DecoderOutput:
    dec.eval()
    with torch.no_grad():
        return dec(*inputs)


def preds_close(pa: LayerPrediction, pb: LayerPrediction, pad: torch.Tensor, atol: float = 1e-5) -> bool:
    real = (~pad).unsqueeze(1).expand_as(pa.masks)
    return (torch.allclose(pa.masks[real], pb.masks[real], atol=atol)
            and torch.allclose(pa.scores, pb.scores, atol=atol) and torch.allclose(pa.indi, pb.indi, atol=atol))


def outputs_close(a: DecoderOutput, b: DecoderOutput, pad: torch.Tensor, atol: float = 1e-5) -> bool:
    assert len(a.layers) == len(b.layers)
    return all(preds_close(pa, pb, pad, atol) for pa, pb in zip(a.layers, b.layers))


# ----------------------------------------------------------------------------- FPS


def numpy_fps(xyz: np.ndarray, n: int) -> list[int]:
    """Brute-force reference: start at 0, repeatedly take the farthest from the chosen set."""
    chosen = [0]
    for _ in range(n - 1):
        d = np.min(((xyz[:, None, :] - xyz[None, chosen, :]) ** 2).sum(-1), axis=1)
        chosen.append(int(np.argmax(d)))
    return chosen


def test_fps_matches_bruteforce_and_is_spread():
    rng = np.random.default_rng(3)
    xyz = rng.random((2, 40, 3)).astype(np.float32)
    idx = farthest_point_sample(torch.from_numpy(xyz), 12)
    assert idx.shape == (2, 12) and idx.dtype == torch.long
    for b in range(2):
        assert idx[b].tolist() == numpy_fps(xyz[b], 12)
        assert len(set(idx[b].tolist())) == 12  # distinct
    # deterministic
    assert torch.equal(idx, farthest_point_sample(torch.from_numpy(xyz), 12))


def test_fps_matrix_and_loop_agree_with_ties_and_padding():
    """FPS precomputes the distance matrix on CUDA and loops on the CPU: same indices, ties too."""
    for seed in range(6):
        g = torch.Generator().manual_seed(seed)
        B, S = 1 + seed % 3, 40 + 23 * seed
        xyz = torch.rand(B, S, 3, generator=g) * 3.0
        if seed % 2 == 0:
            xyz = torch.round(xyz * 2) / 2  # a coarse lattice: many equal distances
        pad = torch.zeros(B, S, dtype=torch.bool)
        for b in range(1, B):
            pad[b, S - 7 * b:] = True
        n = S // 2 if seed < 4 else S + 5  # the last ones cycle (more seeds than points)
        a = farthest_point_sample(xyz, n, pad, matrix=True)
        b = farthest_point_sample(xyz, n, pad, matrix=False)
        assert torch.equal(a, b)
        assert not pad.gather(1, a).any()
    xyz = torch.from_numpy(np.random.default_rng(5).random((1, 30, 3)).astype(np.float32))
    assert farthest_point_sample(xyz, 10, matrix=True)[0].tolist() == numpy_fps(xyz[0].numpy(), 10)


def test_fps_padding_start_and_short_rows():
    xyz = torch.rand(2, 10, 3, generator=torch.Generator().manual_seed(1))
    pad = torch.zeros(2, 10, dtype=torch.bool)
    pad[0, :3] = True  # row 0 starts at its first real point, 3
    pad[1, 4:] = True  # row 1 has 4 real points only
    idx = farthest_point_sample(xyz, 6, pad)
    assert idx[0, 0].item() == 3
    assert not pad.gather(1, idx).any()
    assert len(set(idx[0].tolist())) == 6
    first4 = idx[1, :4].tolist()
    assert sorted(first4) == [0, 1, 2, 3]
    assert idx[1, 4:].tolist() == first4[:2]  # cyclic repeat after all real points
    # matches the reference on the real sub-cloud
    ref = numpy_fps(xyz[0, 3:].numpy(), 6)
    assert (idx[0] - 3).tolist() == ref


def test_fps_bad_input():
    with pytest.raises(ValueError, match="all padding"):
        farthest_point_sample(torch.rand(1, 5, 3), 2, torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(B, S, 3\)"):
        farthest_point_sample(torch.rand(1, 5, 2), 2)
    with pytest.raises(ValueError, match="positive integer"):
        farthest_point_sample(torch.rand(1, 5, 3), 0)
    with pytest.raises(TypeError, match="bool"):
        farthest_point_sample(torch.rand(1, 5, 3), 2, torch.zeros(1, 5))
    with pytest.raises(TypeError, match="torch.Tensor"):
        farthest_point_sample(np.zeros((1, 5, 3)), 2)


# ----------------------------------------------------------------------------- kNN graph


def test_knn_mask_matches_bruteforce():
    rng = np.random.default_rng(0)
    pos = rng.random((2, 15, 3)).astype(np.float32)
    mask = knn_mask(torch.from_numpy(pos), 4)
    assert mask.shape == (2, 15, 15) and mask.dtype == torch.bool
    for b in range(2):
        d = ((pos[b][:, None] - pos[b][None]) ** 2).sum(-1)
        ref = np.zeros((15, 15), dtype=bool)
        np.put_along_axis(ref, np.argsort(d, axis=1, kind="stable")[:, :4], True, axis=1)
        assert np.array_equal(mask[b].numpy(), ref)
    assert mask.sum(-1).eq(4).all()
    assert mask.diagonal(dim1=1, dim2=2).all()


def test_knn_mask_padding_and_clamp():
    pos = torch.rand(1, 6, 3, generator=torch.Generator().manual_seed(2))
    pad = torch.tensor([[False, False, False, True, True, True]])
    mask = knn_mask(pos, 10, pad)  # k clamped, padded keys excluded
    assert not mask[0, :3, 3:].any()  # real points never pick padded neighbours
    assert mask[0, :3, :3].all()
    assert torch.equal(mask[0, 3:, 3:], torch.eye(3, dtype=torch.bool))  # padded rows: only themselves
    with pytest.raises(ValueError, match="positive integer"):
        knn_mask(pos, 0)


# ----------------------------------------------------------------------------- sampling


def test_text_guided_sampling():
    torch.manual_seed(0)
    mod = TextGuidedSampling(d_model=16, num_proposal=5)
    seeds = torch.randn(2, 12, 16)
    words = torch.randn(2, 6, 16)
    wmask = torch.ones(2, 6, dtype=torch.bool)
    wmask[1, 4:] = False
    res = mod(seeds, words, wmask)
    assert res.indices.shape == (2, 5) and res.scores.shape == (2, 12)
    # each real word spreads one unit of mass over the seeds
    assert torch.allclose(res.scores.sum(1), torch.tensor([6.0, 4.0]), atol=1e-5)
    assert torch.equal(res.indices, res.scores.topk(5, dim=1).indices)
    # padded words do not matter
    words2 = words.clone()
    words2[1, 4:] = 100.0
    assert torch.allclose(mod(seeds, words2, wmask).scores, res.scores)
    # no bias in the projections (spec)
    assert mod.camap.query_proj.bias is None and mod.camap.key_proj.bias is None
    # fewer seeds than proposals: all of them
    assert mod(seeds[:, :3], words, wmask).indices.shape == (2, 3)
    # the loss logits rank like the relevance, are 0 for a uniform spread and can go negative
    assert torch.equal(res.logits.topk(5, dim=1).indices, res.indices)
    assert (res.logits < 0).any() and (res.logits > 0).any()
    uniform = relevance_logits(torch.full((1, 8), 3 / 8), torch.tensor([3]))
    assert torch.allclose(uniform, torch.zeros(1, 8), atol=1e-5)


# ----------------------------------------------------------------------------- attention


def test_attention_gives_padding_zero_weight():
    torch.manual_seed(0)
    mha = MultiheadAttention(16, 4)
    q, kv = torch.randn(2, 3, 16), torch.randn(2, 7, 16)
    kpm = torch.zeros(2, 7, dtype=torch.bool)
    kpm[0, 5:] = True
    out, w = mha(q, kv, kv, key_padding_mask=kpm, need_weights=True)
    assert w.shape == (2, 3, 7)
    assert torch.all(w[0, :, 5:] == 0)
    assert torch.allclose(w.sum(-1), torch.ones(2, 3))
    # the SDPA path (no weights) gives the same output
    out2, _ = mha(q, kv, kv, key_padding_mask=kpm)
    assert torch.allclose(out, out2, atol=1e-5)
    # matches torch's reference implementation with the same parameters
    ref = torch.nn.MultiheadAttention(16, 4, batch_first=True)
    ref.load_state_dict(mha.state_dict())
    out3, _ = ref(q, kv, kv, key_padding_mask=kpm)
    assert torch.allclose(out, out3, atol=1e-5)


# ----------------------------------------------------------------------------- decoder


@pytest.mark.parametrize("switches", [dict(), dict(cfr=True, psc=True, dqf=True, prompt_queries=True, lang_att=True)])
def test_decoder_shapes(switches):
    torch.manual_seed(0)
    dec = BQNetDecoder(tiny_cfg(**switches))
    inputs = make_inputs(shared=True)
    out = run(dec, inputs)
    Q = 16
    assert len(out.layers) == 3
    for p in out.layers:
        assert p.masks.shape == (T, Q, S) and p.masks.dtype == torch.float32
        assert p.scores.shape == (T, Q) and p.indi.shape == (T, Q, 2)
        assert torch.isfinite(p.masks).all() and torch.isfinite(p.scores).all() and torch.isfinite(p.indi).all()
        assert torch.all(p.masks[inputs[2].unsqueeze(1).expand(-1, Q, -1)] == PAD_LOGIT)
    assert out.query_sp_idx.shape == (T, Q) and out.query_sp_idx.dtype == torch.long
    assert torch.equal(out.query_sp_idx, inputs[3].gather(1, out.sample_idx))
    assert not inputs[2].gather(1, out.query_sp_idx).any()  # queries sit on real superpoints
    assert out.query_pos.shape == (T, Q, 3) and out.seed_scores.shape == (T, 32)
    assert len(out.centres) == (2 if switches else 0)
    last = dec(*inputs, keep_all_layers=False)
    assert len(last.layers) == 1 and torch.allclose(last.final.masks, out.final.masks, atol=1e-5)


def test_expanded_inputs_equal_copies():
    torch.manual_seed(0)
    dec = BQNetDecoder(tiny_cfg(cfr=True, psc=True, dqf=True))
    inputs = make_inputs(shared=True)
    copied = tuple(x.contiguous() for x in inputs)
    assert outputs_close(run(dec, inputs), run(dec, copied), inputs[2])


@pytest.mark.parametrize("switches", [dict(), dict(cfr=True, psc=True, dqf=True, prompt_queries=True, lang_att=True)])
def test_padding_does_not_change_outputs(switches):
    torch.manual_seed(0)
    dec = BQNetDecoder(tiny_cfg(**switches))
    feats, xyz, pad, seeds, words, wmask = make_inputs()
    base = run(dec, (feats, xyz, pad, seeds, words, wmask))
    g = torch.Generator().manual_seed(9)
    feats2 = torch.where(pad.unsqueeze(-1), torch.randn(feats.shape, generator=g) * 5, feats)
    xyz2 = torch.where(pad.unsqueeze(-1), torch.rand(xyz.shape, generator=g) * 50, xyz)
    words2 = torch.where(wmask.unsqueeze(-1), words, torch.randn(words.shape, generator=g) * 5)
    other = run(dec, (feats2, xyz2, pad, seeds, words2, wmask))
    assert outputs_close(base, other, pad)


def test_real_changes_do_change_outputs():
    """Sanity check of the padding test: changing a real superpoint does change the output."""
    torch.manual_seed(0)
    dec = BQNetDecoder(tiny_cfg())
    feats, xyz, pad, seeds, words, wmask = make_inputs()
    base = run(dec, (feats, xyz, pad, seeds, words, wmask))
    feats2 = feats.clone()
    feats2[:, :5] += 3.0
    assert not outputs_close(base, run(dec, (feats2, xyz, pad, seeds, words, wmask)), pad)


@pytest.mark.parametrize("switch", ["cfr", "psc", "dqf"])
def test_each_module_changes_the_output(switch):
    torch.manual_seed(0)
    base_dec = BQNetDecoder(tiny_cfg())
    torch.manual_seed(0)
    on_dec = BQNetDecoder(tiny_cfg(**{switch: True}))
    missing, unexpected = on_dec.load_state_dict(base_dec.state_dict(), strict=False)
    assert not unexpected
    assert all(k.startswith(switch) for k in missing)  # only the module's own parameters are new
    inputs = make_inputs(shared=True)
    base, on = run(base_dec, inputs), run(on_dec, inputs)
    # identical before layer 1 (shared weights), different after
    assert preds_close(base.layers[0], on.layers[0], inputs[2])
    assert not outputs_close(base, on, inputs[2], atol=1e-4)


def test_rel_pos_starts_as_the_model_without_it():
    """Zero-initialised output layer: switching rel_pos on changes nothing until it is trained."""
    torch.manual_seed(0)
    base_dec = BQNetDecoder(tiny_cfg(cfr=True, psc=True, dqf=True))
    on_dec = BQNetDecoder(tiny_cfg(cfr=True, psc=True, dqf=True, rel_pos=True))
    missing, unexpected = on_dec.load_state_dict(base_dec.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("rel_pos.") for k in missing)
    inputs = make_inputs(shared=True)
    assert outputs_close(run(base_dec, inputs), run(on_dec, inputs), inputs[2], atol=1e-6)
    # trained (here: random) output layers do change the answer, and gradients reach the module
    for m in on_dec.rel_pos:
        torch.nn.init.normal_(m.mlp[2].weight, std=1.0)
    assert not outputs_close(run(base_dec, inputs), run(on_dec, inputs), inputs[2], atol=1e-4)
    on_dec.train()
    out = on_dec(*inputs)
    (out.final.masks[~inputs[2].unsqueeze(1).expand_as(out.final.masks)].sum() + out.final.indi.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in on_dec.rel_pos[0].parameters())


def test_relative_position_bias_is_relative():
    from bqnet_model.model.relpos import RelativePositionBias, pair_features

    g = torch.Generator().manual_seed(3)
    pos = torch.rand(2, 5, 3, generator=g) * 4
    f = pair_features(pos)
    assert f.shape == (2, 5, 5, 4)
    assert torch.allclose(f[1, 2, 4, :3], pos[1, 4] - pos[1, 2])
    assert torch.allclose(f[..., 3], torch.cdist(pos, pos), atol=1e-5)
    rpb = RelativePositionBias(nhead=3, hidden=8)
    assert torch.count_nonzero(rpb(pos)) == 0  # zero at init
    torch.nn.init.normal_(rpb.mlp[2].weight, generator=g)
    b = rpb(pos)
    assert b.shape == (2, 3, 5, 5)
    assert torch.allclose(b, rpb(pos + torch.tensor([10.0, -3.0, 1.0])), atol=1e-4)  # translation-invariant
    assert not torch.allclose(b, b.transpose(-1, -2))  # direction matters: "left of" is not "right of"
    with pytest.raises(ValueError, match="T, Q, 3"):
        rpb(pos[..., :2])


def test_rel_pos_text_starts_as_the_bias_without_it_and_then_depends_on_the_sentence():
    """rel_pos_text: a rel_pos model loads into it unchanged (the sentence part starts at zero);
    once trained (here: random) the bias differs between sentences and gradients reach it."""
    torch.manual_seed(0)
    base_dec = BQNetDecoder(tiny_cfg(cfr=True, psc=True, dqf=True, rel_pos=True))
    for m in base_dec.rel_pos:  # a "trained" sentence-free bias
        torch.nn.init.normal_(m.mlp[2].weight, std=1.0)
    on_dec = BQNetDecoder(tiny_cfg(cfr=True, psc=True, dqf=True, rel_pos=True, rel_pos_text=True))
    missing, unexpected = on_dec.load_state_dict(base_dec.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("rel_pos.") and ".text." in k for k in missing)
    inputs = make_inputs(shared=True)
    assert outputs_close(run(base_dec, inputs), run(on_dec, inputs), inputs[2], atol=1e-6)
    for m in on_dec.rel_pos:
        torch.nn.init.normal_(m.text.weight, std=1.0)
    assert not outputs_close(run(base_dec, inputs), run(on_dec, inputs), inputs[2], atol=1e-4)
    on_dec.train()
    out = on_dec(*inputs)
    (out.final.masks[~inputs[2].unsqueeze(1).expand_as(out.final.masks)].sum() + out.final.indi.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in on_dec.rel_pos[0].text.parameters())
    with pytest.raises(ValueError, match="rel_pos_text needs decoder.rel_pos"):
        tiny_cfg(rel_pos_text=True)


def test_sentence_conditioned_bias():
    from bqnet_model.model.relpos import RelativePositionBias

    g = torch.Generator().manual_seed(4)
    pos = torch.rand(1, 6, 3, generator=g).expand(2, 6, 3) * 3  # one scene, two sentences
    sent = torch.randn(2, 16, generator=g)
    rpb = RelativePositionBias(nhead=2, hidden=8, text_dim=16)
    assert torch.count_nonzero(rpb(pos, sent)) == 0  # zero at init
    torch.nn.init.normal_(rpb.text.weight, generator=g)
    b = rpb(pos, sent)
    assert b.shape == (2, 2, 6, 6)
    assert not torch.allclose(b[0], b[1], atol=1e-3)  # same positions, different sentences
    same = rpb(pos, sent[:1].expand(2, 16))
    assert torch.allclose(same[0], same[1])
    assert torch.allclose(b, rpb(pos + torch.tensor([2.0, 5.0, 0.0]), sent), atol=1e-4)  # still relative
    with pytest.raises(ValueError, match="sentence vector"):
        rpb(pos)
    with pytest.raises(ValueError, match="sentence vector"):
        RelativePositionBias(nhead=2, hidden=8)(pos, sent)
    with pytest.raises(ValueError, match=r"\(T, D\)"):
        rpb(pos, sent[:1])


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    dec = BQNetDecoder(tiny_cfg(cfr=True, psc=True, dqf=True, prompt_queries=True, lang_att=True,
                                cross_attn_norm=True, prompt_threshold=0.01))
    dec.train()
    feats, xyz, pad, seeds, words, wmask = make_inputs(shared=True)
    out = dec(feats, xyz, pad, seeds, words, wmask)
    gt = torch.zeros(T, S)
    gt[0, out.query_sp_idx[0, :2]] = 1.0
    gt[1, :10] = 1.0
    loss, _ = bqnet_loss(out, gt, pad)
    loss.backward()
    missing = [n for n, p in dec.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert not missing, f"no gradient for {missing}"


def test_bad_inputs_raise():
    dec = BQNetDecoder(tiny_cfg())
    feats, xyz, pad, seeds, words, wmask = make_inputs()
    with pytest.raises(ValueError, match="in_channels"):
        dec(feats[..., :4], xyz, pad, seeds, words, wmask)
    with pytest.raises(ValueError, match="text_channels"):
        dec(feats, xyz, pad, seeds, words[..., :4], wmask)
    with pytest.raises(TypeError, match="sp_pad must be a bool"):
        dec(feats, xyz, pad.float(), seeds, words, wmask)
    with pytest.raises(TypeError, match="seed_idx must be int64"):
        dec(feats, xyz, pad, seeds.int(), words, wmask)
    with pytest.raises(ValueError, match="sentence axis"):
        dec(feats, xyz, pad, seeds[:2], words, wmask)
    with pytest.raises(ValueError, match="outside"):
        dec(feats, xyz, pad, seeds + 100, words, wmask)
    bad = seeds.clone()
    bad[2, 0] = 55  # padded superpoint of row 2
    with pytest.raises(ValueError, match="padded"):
        dec(feats, xyz, pad, bad, words, wmask)
    with pytest.raises(ValueError, match="sp_xyz"):
        dec(feats, xyz[:, :10], pad, seeds, words, wmask)
    with pytest.raises(ValueError, match="divisible"):
        tiny_cfg(d_model=30, nhead=4)
    with pytest.raises(ValueError, match="ffn_activation"):
        tiny_cfg(ffn_activation="tanh")
    with pytest.raises(TypeError, match="DecoderConfig"):
        BQNetDecoder(dataclasses.asdict(tiny_cfg()))


def test_all_padding_row_is_finite():
    torch.manual_seed(0)
    dec = BQNetDecoder(tiny_cfg(cfr=True, psc=True, dqf=True))
    feats, xyz, pad, seeds, words, wmask = make_inputs()
    pad2 = pad.clone()
    pad2[2, 1:] = True  # only one real superpoint
    seeds2 = seeds.clone()
    seeds2[2] = 0
    out = run(dec, (feats, xyz, pad2, seeds2, words, wmask))
    assert all(torch.isfinite(p.masks).all() and torch.isfinite(p.indi).all() for p in out.layers)


# ----------------------------------------------------------------------------- CFR / PSC / DQF parts


def test_query_centres_and_extent():
    xyz = torch.tensor([[[0.0, 0, 0], [2.0, 0, 0], [0.0, 4, 0], [9.0, 9, 9]]])
    pad = torch.tensor([[False, False, False, True]])
    logits = torch.tensor([[[5.0, 5.0, -5.0, 5.0], [-5.0, -5.0, -5.0, 5.0]]])
    prior = torch.tensor([[[0.0, 0, 1.0], [1.0, 1.0, 1.0]]])
    c = query_centres(logits, xyz, pad, prior, prior_weight=1.0)
    w = torch.sigmoid(torch.tensor(5.0))
    expect0 = (w * torch.tensor([2.0, 0, 0]) + torch.tensor([0.0, 0, 1.0])) / (2 * w + 1)
    assert torch.allclose(c[0, 0], expect0, atol=1e-6)
    assert torch.allclose(c[0, 1], prior[0, 1])  # empty mask (padding ignored): the seed
    assert torch.allclose(scene_extent(xyz, pad), torch.tensor([np.sqrt(4 + 16)], dtype=torch.float32))


def test_psc_radius_shrinks_and_bias_decays():
    psc = ProgressiveSpatialConstraint(num_layers=4, radius_end=0.5)
    extent = torch.tensor([8.0])
    radii = [psc.radius(i, extent).item() for i in range(4)]
    assert radii[0] == pytest.approx(8.0) and radii[-1] == pytest.approx(0.5)
    assert all(a > b for a, b in zip(radii, radii[1:]))
    xyz = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0], [3.0, 0, 0]]])
    bias = psc(3, torch.zeros(1, 1, 3), xyz, extent)
    assert bias.shape == (1, 1, 1, 3)
    assert torch.allclose(bias[0, 0, 0], torch.tensor([0.0, -2.0, -18.0]))  # -d^2 / (2 * 0.25)


def test_dqf_schedule_and_graph():
    dqf = DistanceAwareQueryFocusing(num_layers=3, k_end=2, radius_end=None)
    assert dqf.k_schedule(16) == [16, 6, 2]
    pos = torch.rand(2, 16, 3, generator=torch.Generator().manual_seed(0))
    allowed, bias = dqf(2, pos, torch.ones(2))
    assert bias is None and torch.equal(allowed, knn_mask(pos, 2))
    allowed0, _ = dqf(0, pos, torch.ones(2))
    assert allowed0.all()
    dqf_b = DistanceAwareQueryFocusing(num_layers=3, k_end=2, radius_end=0.5)
    _, bias = dqf_b(2, pos, torch.ones(2))
    assert bias.shape == (2, 1, 16, 16) and (bias <= 0).all()


def test_cfr_leaves_background_alone():
    torch.manual_seed(0)
    cfr = CrossLayerFeatureRefinement(8)
    feats, mfeats, queries = torch.randn(1, 4, 8), torch.randn(1, 4, 8), torch.randn(1, 2, 8)
    masks = torch.tensor([[[9.0, 9.0, -9.0, -9.0], [-9.0, -9.0, -9.0, -9.0]]])
    indi = torch.tensor([[[-9.0, 9.0], [9.0, -9.0]]])  # query 0 is the target
    pad = torch.zeros(1, 4, dtype=torch.bool)
    fg = foreground_probability(masks, indi, pad)
    assert fg[0, :2].gt(0.99).all() and fg[0, 2:].lt(1e-3).all()
    new_f, new_m = cfr(feats, mfeats, queries, masks, indi, pad)
    assert torch.allclose(new_m[0, 2:], mfeats[0, 2:], atol=1e-3)  # background: unchanged
    assert not torch.allclose(new_m[0, :2], mfeats[0, :2], atol=1e-2)  # foreground: refined
    assert torch.allclose(new_f[0, 2:], cfr.norm(feats[0, 2:]), atol=1e-3)


# ----------------------------------------------------------------------------- heads


def _pred(masks, indi):
    return LayerPrediction(masks=torch.tensor(masks), scores=torch.zeros(len(masks), len(masks[0])),
                           indi=torch.tensor(indi))


def test_select_res():
    pred = _pred([[[3.0, -3.0, 0.0], [-3.0, 3.0, 3.0]]], [[[0.0, 1.0], [0.0, 2.0]]])
    sel = select_res(pred, torch.tensor([[False, False, True]]))
    assert sel.query.tolist() == [1]
    assert torch.allclose(sel.sp_prob, torch.sigmoid(torch.tensor([[-3.0, 3.0, 0.0]])).masked_fill(
        torch.tensor([[False, False, True]]), 0.0))
    q, prob = sel  # unpacks as (best query, superpoint probabilities)
    assert q.shape == (1,) and prob.shape == (1, 3)


def test_select_gres_union_and_min_points():
    masks = [[[4.0, -4.0, -4.0], [-4.0, 4.0, -4.0], [-4.0, -4.0, 4.0]],
             [[4.0, 4.0, 4.0], [4.0, 4.0, 4.0], [4.0, 4.0, 4.0]]]
    indi = [[[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]],  # sentence 0: queries 0, 1 positive
            [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]]  # sentence 1: none
    pred = _pred(masks, indi)
    sizes = torch.tensor([30, 30, 5])
    res = select_gres(pred, sp_sizes=sizes, min_points=50)
    assert res[0].found and res[0].queries.tolist() == [0, 1] and res[0].num_points == 60
    assert torch.allclose(res[0].sp_prob, torch.sigmoid(torch.tensor([4.0, 4.0, -4.0])))
    assert not res[1].found and res[1].queries.numel() == 0 and torch.all(res[1].sp_prob == 0)
    small = select_gres(pred, sp_sizes=sizes, min_points=61)
    assert not small[0].found and torch.all(small[0].sp_prob == 0)
    with pytest.raises(ValueError, match="sp_sizes"):
        select_gres(pred, sp_sizes=torch.ones(4))
    with pytest.raises(TypeError, match="LayerPrediction"):
        select_res(torch.zeros(1, 2, 3))
