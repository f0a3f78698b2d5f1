"""The decoder port: FPS rules, attention, the spatial prior, sampling, the decoder, the heads.

The golden comparison with the authors' outputs is test_official_fixtures.py; these tests pin the
pieces and the switches on small random inputs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from bqnet_model.model import decoder as decoder_mod
from bqnet_model.model.attention import CrossAttentionLayer, MultiheadAttention
from bqnet_model.model.decoder import PAD_LOGIT, BQNetDecoder, DecoderConfig, DecoderOutput, LayerPrediction, spatial_prior
from bqnet_model.model.heads import official_iou, select_gres, select_res
from bqnet_model.model.query_sampling import TextGuidedSampling, farthest_point_sample, fps_order_keys

torch.set_num_threads(1)  # tiny problems: one thread is fastest on the shared 2-core machine

T, S, C_IN, L, C_TXT, C_IMG = 3, 60, 8, 7, 16, 12
N_REAL = (60, 50, 40)
FIXTURES = [Path("/work/shared/fixtures/cfnet"), Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "cfnet"]


def tiny_cfg(**kw) -> DecoderConfig:
    base = dict(in_channels=C_IN, text_channels=C_TXT, d_model=32, nhead=4, ffn=64, num_layers=2, fps_num=32,
                num_proposal=16, num_proposal_fine=40, num_proposal_query=[16, 4], num_proposal_query_inst=[24, 6])
    base.update(kw)
    return DecoderConfig(**base)


def make_inputs(seed: int = 0, shared: bool = False, image: bool = False) -> dict:
    g = torch.Generator().manual_seed(seed)
    rows = 1 if shared else T
    feats = torch.rand(rows, S, C_IN, generator=g).expand(T, -1, -1)
    xyz = (torch.rand(rows, S, 3, generator=g) * 4.0 - 2.0).expand(T, -1, -1)
    pad = torch.zeros(T, S, dtype=torch.bool)
    if not shared:
        for t, n in enumerate(N_REAL):
            pad[t, n:] = True
    seeds = farthest_point_sample(xyz, 32, pad)
    out = dict(sp_feats=feats, sp_xyz=xyz, sp_pad=pad, seed_idx=seeds, word_feats=torch.randn(T, L, C_TXT, generator=g))
    wmask = torch.ones(T, L, dtype=torch.bool)
    wmask[0, 5:] = False
    wmask[2, 3:] = False
    out["word_mask"] = wmask
    if image:
        out["image_feats"] = torch.randn(rows, S, C_IMG, generator=g).expand(T, -1, -1)
    return out


def run(dec: BQNetDecoder, inputs: dict, **kw) -> DecoderOutput:
    dec.eval()
    with torch.no_grad():
        return dec(**inputs, **kw)


# ---------------------------------------------------------------------- official layout
def _official_rows() -> dict[str, tuple[int, ...]]:
    for d in FIXTURES:
        tsv = d / "official_keys_res.tsv"
        if tsv.is_file():
            rows = {}
            for line in tsv.read_text().splitlines()[1:]:
                key, shape, _dtype, kind = line.split("\t")[:4]
                if key.startswith("dec.") and kind != "buffer_nonpersistent":
                    rows[key[4:]] = tuple(int(x) for x in shape.strip("[]() ").replace(" ", "").split(",") if x)
            return rows
    pytest.skip("official_keys_res.tsv not found (shared fixtures absent beside the checkout)")


def test_paper_size_state_dict_is_the_official_dec_layout() -> None:
    rows = _official_rows()
    dec = BQNetDecoder(DecoderConfig(in_channels=32, text_channels=768, image_channels=1024))
    ours = {k: tuple(v.shape) for k, v in dec.state_dict().items()}
    assert len(rows) == 460
    assert sorted(set(rows) - set(ours)) == [] and sorted(set(ours) - set(rows)) == []
    assert {k: v for k, v in ours.items() if rows[k] != v} == {}


def test_optional_branches_drop_their_keys() -> None:
    keys = set(BQNetDecoder(tiny_cfg(image_channels=0, contrastive_align=False)).state_dict())
    assert not any(k.startswith(("input_proj_2d.", "contrastive_align_projection")) for k in keys)
    assert any(k.startswith("input_proj_2d.") for k in BQNetDecoder(tiny_cfg(image_channels=C_IMG)).state_dict())


def test_config_validation_and_official_mapping() -> None:
    with pytest.raises(ValueError, match="num_proposal_query must list one positive integer per layer"):
        tiny_cfg(num_proposal_query=[4])
    with pytest.raises(ValueError, match="image_channels"):
        tiny_cfg(image_channels=-1)
    cfg = DecoderConfig.from_official({"media": 8, "fps_num": 64, "sampling_module": {"num_proposal": 32, "pc_dim": 48,
                                       "lang_dim": 48, "d_model": 48},
                                       "dec": {"num_layer": 3, "d_model": 48, "nhead": 4, "hidden_dim": 96,
                                               "activation_fn": "gelu", "attn_mask": True, "contrastive_align_loss": True,
                                               "num_proposal_fine": 128, "num_proposal_query": [32, 8, 2],
                                               "num_proposal_query_inst": [48, 12, 3]}})
    assert (cfg.in_channels, cfg.text_channels, cfg.image_channels, cfg.ffn, cfg.num_proposal) == (8, 768, 1024, 96, 32)
    assert cfg.cfr and cfg.psc and cfg.dqf


# ---------------------------------------------------------------------- FPS
def kernel_fps(xyz: torch.Tensor, m: int) -> list[int]:
    """A literal emulation of pointnet2's furthest_point_sampling_kernel (threads, tree reduction)."""
    pts = xyz.tolist()
    n = len(pts)
    T_ = max(min(1 << int(math.floor(math.log2(n))), 512), 1)
    f32 = lambda v: torch.tensor(v, dtype=torch.float32).item()  # noqa: E731
    temp = [1e10] * n
    old, idxs = 0, [0]
    for _ in range(1, m):
        best_v, best_i = [-1.0] * T_, [0] * T_
        x1, y1, z1 = pts[old]
        for tid in range(T_):
            for k in range(tid, n, T_):
                x2, y2, z2 = pts[k]
                if f32(f32(f32(x2 * x2) + f32(y2 * y2)) + f32(z2 * z2)) <= 1e-3:
                    continue
                d = f32(f32(f32((x2 - x1) ** 2) + f32((y2 - y1) ** 2)) + f32((z2 - z1) ** 2))
                temp[k] = min(d, temp[k])
                if temp[k] > best_v[tid]:
                    best_v[tid], best_i[tid] = temp[k], k
        half = T_ // 2
        while half >= 1:
            for tid in range(half):
                if best_v[tid + half] > best_v[tid]:
                    best_v[tid], best_i[tid] = best_v[tid + half], best_i[tid + half]
            half //= 2
        old = best_i[0]
        idxs.append(old)
    return idxs


def test_fps_follows_the_kernel_rules_with_ties_origin_and_short_rows() -> None:
    g = torch.Generator().manual_seed(3)
    grid = torch.stack(torch.meshgrid(*[torch.arange(3.0)] * 3, indexing="ij"), -1).reshape(-1, 3)  # many exact ties
    clouds = [torch.rand(23, 3, generator=g) * 2 - 1, grid - 1.0, torch.cat([torch.zeros(2, 3), torch.rand(9, 3, generator=g)])]
    clouds[0][5] = 0.01  # |p|^2 <= 1e-3: never chosen
    for xyz in clouds:
        for m in (8, len(xyz) + 6):  # the second asks for more seeds than points: indices repeat
            want = kernel_fps(xyz, m)
            assert farthest_point_sample(xyz[None], m)[0].tolist() == want
            assert farthest_point_sample(xyz[None], m, matrix=True)[0].tolist() == want
    assert 5 not in farthest_point_sample(clouds[0][None], 30)[0].tolist()


def test_fps_padding_equals_one_call_per_scene() -> None:
    g = torch.Generator().manual_seed(4)
    a, b = torch.rand(20, 3, generator=g) * 3, torch.rand(13, 3, generator=g) * 3
    xyz = torch.zeros(2, 20, 3)
    xyz[0], xyz[1, :13] = a, b
    pad = torch.zeros(2, 20, dtype=torch.bool)
    pad[1, 13:] = True
    got = farthest_point_sample(xyz, 16, pad)
    assert got[0].tolist() == farthest_point_sample(a[None], 16)[0].tolist()
    assert got[1].tolist() == farthest_point_sample(b[None], 16)[0].tolist() == kernel_fps(b, 16)
    assert fps_order_keys(torch.tensor([5]), 6)[0, :5].tolist() == [0, 4, 2, 6, 1]
    with pytest.raises(ValueError, match="all padding"):
        farthest_point_sample(torch.rand(1, 5, 3), 2, torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="suffix"):
        farthest_point_sample(torch.rand(1, 5, 3), 2, torch.tensor([[True, False, False, False, False]]))


# ---------------------------------------------------------------------- attention and prior
def test_attention_multiplies_logits_before_masking_and_sdpa_agrees() -> None:
    torch.manual_seed(0)
    mha = MultiheadAttention(16, 4).eval()
    q, kv = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    allowed = torch.rand(2, 5, 7) > 0.3
    allowed[..., 0] = True
    w = torch.rand(2, 5, 7)
    out, attn = mha(q, kv, kv, allowed, logit_weights=w, need_weights=True)
    qh = torch.nn.functional.linear(q, mha.in_proj_weight[:16], mha.in_proj_bias[:16]).view(2, 5, 4, 4).transpose(1, 2)
    kh = torch.nn.functional.linear(kv, mha.in_proj_weight[16:32], mha.in_proj_bias[16:32]).view(2, 7, 4, 4).transpose(1, 2)
    logits = (qh / 2.0) @ kh.transpose(-1, -2) * w[:, None]
    want = logits.masked_fill(~allowed[:, None], float("-inf")).softmax(-1).mean(1)
    assert torch.allclose(attn, want, atol=1e-6)
    a, _ = mha(q, kv, kv, allowed, key_padding_mask=torch.tensor([[False] * 6 + [True]] * 2))
    b, wts = mha(q, kv, kv, allowed, key_padding_mask=torch.tensor([[False] * 6 + [True]] * 2), need_weights=True)
    assert torch.allclose(a, b, atol=1e-5) and float(wts[..., 6].detach().abs().max()) == 0.0


def test_cross_attention_has_no_norm_in_the_output() -> None:
    layer = CrossAttentionLayer(16, 4).eval()
    q, src = torch.randn(1, 3, 16), torch.randn(1, 4, 16)
    before, _ = layer(q, src)
    with torch.no_grad():
        layer.norm.weight.mul_(3.0).add_(1.0)
    after, _ = layer(q, src)
    assert torch.equal(before, after) and torch.allclose(after, q + layer.attn(q, src, src)[0])
    assert not any(p.requires_grad for p in layer.norm.parameters())


def test_spatial_prior_weights_and_knn() -> None:
    pos = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [3, 0, 0], [0, 2, 0]]])
    w, near = spatial_prior(pos, pos, 2, 0.3)
    assert torch.allclose(w[0, 0], torch.exp(-0.3 * torch.tensor([0.0, 1, 9, 4])))
    assert near[0].tolist() == [[True, True, False, False], [True, True, False, False],
                                [False, True, True, False], [True, False, False, True]]
    _, clamped = spatial_prior(pos, pos, 10, None, key_pad=torch.tensor([[False, False, False, True]]))
    assert clamped[0, :, 3].sum() == 0 and clamped[0, :, :3].all()


def test_sampling_softmax_over_seeds_raw_scores() -> None:
    torch.manual_seed(0)
    mod = TextGuidedSampling(d_model=16, num_proposal=5)
    seeds, words = torch.randn(2, 9, 16), torch.randn(2, 4, 16)
    wpad = torch.tensor([[False] * 4, [False, False, True, True]])
    res = mod(seeds, words, wpad)
    assert torch.allclose(res.scores.sum(1), torch.tensor([4.0, 2.0]), atol=1e-5)
    assert torch.equal(res.indices, res.scores.topk(5, dim=1).indices)
    short = TextGuidedSampling(d_model=16, num_proposal=12)
    short.load_state_dict(mod.state_dict())
    assert short(seeds, words, wpad).indices.tolist() == [list(range(9))] * 2


# ---------------------------------------------------------------------- decoder
@pytest.mark.parametrize("switches", [{}, {"cfr": False}, {"psc": False}, {"dqf": False},
                                      {"cfr": False, "psc": False, "dqf": False}])
def test_decoder_outputs_and_padding(switches: dict) -> None:
    torch.manual_seed(0)
    dec = BQNetDecoder(tiny_cfg(**switches))
    inputs = make_inputs(1)
    out = run(dec, inputs)
    assert len(out.layers) == 3 and out.seed_scores.shape == (T, 32) and out.seed_pos.shape == (T, 32, 3)
    fin = out.final
    assert fin.masks.shape == (T, 16, S) and fin.scores.shape == (T, 16) and fin.indi.shape == (T, 16, 2)
    assert fin.proj_queries.shape == (T, 16, 64) and fin.proj_tokens.shape == (T, L, 64)
    assert (fin.masks[inputs["sp_pad"].unsqueeze(1).expand_as(fin.masks)] == PAD_LOGIT).all()
    assert torch.equal(out.word_pad, ~inputs["word_mask"])
    assert torch.equal(out.query_sp_idx, inputs["seed_idx"].gather(1, out.sample_idx))
    # inference keeps the last prediction only (its heads alone run): the same numbers, bit for bit
    last = run(dec, inputs, keep_all_layers=False)
    assert len(last.layers) == 1 and last.final.proj_queries is None and last.final.proj_tokens is None
    assert all(torch.equal(getattr(last.final, k), getattr(fin, k)) for k in ("masks", "scores", "indi"))


def test_expanded_scene_equals_materialised_copies() -> None:
    torch.manual_seed(0)
    dec = BQNetDecoder(tiny_cfg(image_channels=C_IMG))
    inputs = make_inputs(2, shared=True, image=True)
    copies = {k: (v.contiguous().clone() if v.dim() == 3 else v) for k, v in inputs.items()}
    a, b = run(dec, inputs), run(dec, copies)
    for pa, pb in zip(a.layers, b.layers):
        assert torch.allclose(pa.masks, pb.masks, atol=1e-5) and torch.allclose(pa.indi, pb.indi, atol=1e-5)


def test_switches_change_what_runs() -> None:
    torch.manual_seed(0)
    calls: list[tuple] = []
    real = decoder_mod.spatial_prior

    def spy(pos_q, pos_k, k, gamma, key_pad=None, dis=None):
        calls.append((k, gamma, key_pad is not None, pos_k.shape[1]))
        return real(pos_q, pos_k, k, gamma, key_pad, dis)

    inputs = make_inputs(3)
    outs = {}
    for name, kw in {"all": {}, "no_cfr": {"cfr": False}, "no_psc": {"psc": False}, "no_dqf": {"dqf": False},
                     "none": {"cfr": False, "psc": False, "dqf": False}}.items():
        torch.manual_seed(0)
        dec = BQNetDecoder(tiny_cfg(**kw))
        fine_runs = []
        hook = dec.qia_layers_fine[0].register_forward_hook(lambda *a: fine_runs.append(1))
        calls.clear()
        decoder_mod.spatial_prior = spy
        try:
            outs[name] = run(dec, inputs)
        finally:
            decoder_mod.spatial_prior = real
            hook.remove()
        outs[name + "_calls"], outs[name + "_fine"] = list(calls), len(fine_runs)
    # fine stage: key padding passed (decoder.fine_mask_padding, the default; the authors' code passes none)
    assert outs["all_calls"] == [(None, 0.3, False, 32), (24, 0.3, True, 40), (16, None, False, 16),
                                 (6, 0.3, True, 40), (4, None, False, 16)]
    assert outs["no_cfr_calls"][1] == (24, 0.3, True, S)  # PSC alone: a fine stage over all real superpoints
    assert outs["no_psc_calls"] == [(16, None, False, 16), (4, None, False, 16)]  # only DQF's kNN
    assert outs["no_dqf_calls"] == outs["all_calls"][:2] + outs["all_calls"][3:4]
    assert outs["none_fine"] == 0 and outs["all_fine"] == 1
    for name in ("no_cfr", "no_psc", "no_dqf", "none"):
        assert not torch.allclose(outs[name].final.masks, outs["all"].final.masks)


def test_image_branch_fallback_warns_once_and_is_not_zeros() -> None:
    torch.manual_seed(0)
    dec = BQNetDecoder(tiny_cfg(image_channels=C_IMG))
    inputs = make_inputs(4, image=True)
    no_img = {k: v for k, v in inputs.items() if k != "image_feats"}
    with pytest.warns(UserWarning, match="image_feats"):
        a = run(dec, no_img)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(dec, no_img)
    zeros = run(dec, {**inputs, "image_feats": torch.zeros(T, S, C_IMG)})
    with_img = run(dec, inputs)
    assert not torch.allclose(a.final.masks, zeros.final.masks) and not torch.allclose(a.final.masks, with_img.final.masks)
    with pytest.raises(ValueError, match="no 2D branch"):
        run(BQNetDecoder(tiny_cfg()), inputs)


def test_bad_inputs_raise() -> None:
    dec = BQNetDecoder(tiny_cfg())
    inputs = make_inputs(5)
    with pytest.raises(ValueError, match="padded superpoints"):
        run(dec, {**inputs, "seed_idx": torch.full((T, 32), S - 1)})
    with pytest.raises(TypeError, match="int64"):
        run(dec, {**inputs, "seed_idx": inputs["seed_idx"].int()})
    with pytest.raises(ValueError, match="text_channels"):
        run(dec, {**inputs, "word_feats": torch.randn(T, L, 5)})


def test_gradients_reach_every_trainable_parameter() -> None:
    torch.manual_seed(0)
    dec = BQNetDecoder(tiny_cfg(image_channels=C_IMG)).train()
    out = dec(**make_inputs(6, image=True))
    loss = out.seed_scores.sum() + sum(p.masks.sigmoid().mean() + p.indi.sum() + p.scores.sum()
                                       + p.proj_queries.sum() + p.proj_tokens.sum() for p in out.layers)
    loss.backward()
    lacking = [n for n, p in dec.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert lacking == []
    frozen = sorted({n.rsplit(".norm.", 1)[0].split(".")[0] for n, p in dec.named_parameters() if not p.requires_grad})
    assert frozen == ["ila_layers", "lia_layers", "qia_layers", "qia_layers_fine", "qla_layers"]


# ---------------------------------------------------------------------- heads
def _pred(masks: list, indi: list) -> LayerPrediction:
    m = torch.tensor(masks, dtype=torch.float32)
    return LayerPrediction(masks=m, scores=torch.zeros(m.shape[:2]), indi=torch.tensor(indi, dtype=torch.float32))


def test_select_res_first_index_on_ties() -> None:
    pred = _pred([[[1.0, -1.0], [-1.0, 1.0], [2.0, 2.0]]], [[[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]])
    sel = select_res(pred)
    assert sel.query.tolist() == [0] and torch.allclose(sel.sp_prob[0], torch.sigmoid(torch.tensor([1.0, -1.0])))


def test_select_gres_union_strict_threshold_and_min_points() -> None:
    # query 0 positive, query 1 tied indicator (-> not target), query 2 positive
    pred = _pred([[[0.0, 3.0, -2.0], [5.0, 5.0, 5.0], [1.0, -3.0, -2.0]]], [[[0.0, 1.0], [1.0, 1.0], [0.0, 2.0]]])
    sizes = torch.tensor([30, 25, 40])
    sel = select_gres(pred, sp_sizes=sizes, min_points=50)[0]
    assert sel.queries.tolist() == [0, 2] and sel.found and sel.num_points == 55
    assert torch.allclose(sel.union_prob, torch.sigmoid(torch.tensor([1.0, 3.0, -2.0])))
    at_zero = _pred([[[0.0, 3.0, -2.0]]], [[[0.0, 1.0]]])  # logit 0: counts for IoU, not for the 50 points
    s = select_gres(at_zero, sp_sizes=sizes, min_points=50)[0]
    assert not s.found and s.num_points == 25 and float(s.sp_prob.abs().sum()) == 0.0
    assert float(official_iou(s.union_prob, torch.tensor([1.0, 1.0, 0.0]))) == pytest.approx(1.0, abs=1e-5)
    none = select_gres(_pred([[[4.0, 4.0, 4.0]]], [[[1.0, 0.0]]]), sp_sizes=sizes)[0]
    assert not none.found and none.queries.numel() == 0


def test_fine_mask_padding_per_call_equals_the_config_and_leaves_it_alone() -> None:
    """``fine_mask_padding`` of a call overrides the config's for that call only (what
    ``Segmenter`` passes instead of changing the model's config)."""
    torch.manual_seed(0)
    authors = BQNetDecoder(tiny_cfg(fine_mask_padding=False))
    masked = BQNetDecoder(tiny_cfg(fine_mask_padding=True))
    masked.load_state_dict(authors.state_dict())
    inputs = make_inputs(5)  # scenes with padding, so the two choices differ
    per_call, by_cfg, plain = run(authors, inputs, fine_mask_padding=True), run(masked, inputs), run(authors, inputs)
    assert torch.equal(per_call.final.masks, by_cfg.final.masks) and torch.equal(per_call.final.indi, by_cfg.final.indi)
    assert not torch.allclose(plain.final.masks, by_cfg.final.masks)
    assert authors.cfg.fine_mask_padding is False
    assert torch.equal(run(masked, inputs, fine_mask_padding=False).final.masks, plain.final.masks)
