"""Segmenter: prepare once, query many; cached queries equal the full forward; post-processing."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from bqnet_model.checkpoint import save_checkpoint
from bqnet_synth import minimal_room
from bqnet_model.model.decoder import LayerPrediction
from bqnet_model.model.heads import select_res
from bqnet_model.model.config import load_config
from bqnet_model.model.inputs import collate_scenes, scene_inputs
from bqnet_model.pipeline import Result, SceneCache, Segmenter, TargetObject
from bqnet_model.pipeline.selection import answer, group_queries
from bqnet_model.pipeline.summary import summarise, unpack_summary
from bqnet_model.superpoint_params import SuperpointParams
from tiny_model import tiny_config, with_inference

TINY = tiny_config()
TEXTS = ["the red chair next to the desk", "the blue cabinet", "the table in the middle", "a chair", "the desk"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def room():
    return minimal_room(3000, seed=0)


@pytest.fixture(scope="module")
def sp(room):
    return np.unique(np.floor(room.xyz / 0.3).astype(np.int64), axis=0, return_inverse=True)[1].ravel()


@pytest.fixture(scope="module")
def seg():
    return Segmenter.from_config(TINY, device="cpu", seed=0)


@pytest.fixture(scope="module")
def cache(seg, room, sp):
    return seg.prepare(room.xyz, room.rgb, superpoints=sp)


def test_segmenter_leaves_the_models_config_alone(seg, cache) -> None:
    """The segmenter masks padding out of the fine stage per call: a model whose config says
    otherwise keeps its config, and answers as the default model does."""
    model = copy.deepcopy(seg.model)
    model.decoder.cfg.fine_mask_padding = False
    other = Segmenter(model, device="cpu")
    assert model.decoder.cfg.fine_mask_padding is False and other.cfg.model.decoder.fine_mask_padding is False
    assert torch.equal(other.decode(cache, TEXTS).final.masks, seg.decode(cache, TEXTS).final.masks)


def test_cached_query_equals_full_forward(seg, cache, room, sp) -> None:
    batch = collate_scenes([scene_inputs(room.xyz, room.rgb, sp, 0.02)], TEXTS)
    with torch.no_grad():
        full = seg.model.eval()(batch).final
    cached = seg.decode(cache, TEXTS).final
    assert torch.allclose(cached.masks, full.masks, atol=1e-5)
    assert torch.allclose(cached.scores, full.scores, atol=1e-5)
    assert torch.allclose(cached.indi, full.indi, atol=1e-5)
    results = seg.query(cache, TEXTS, task="res")
    assert [r.text for r in results] == TEXTS and all(isinstance(r, Result) for r in results)
    sel = select_res(full)
    for t, r in enumerate(results):
        want = np.flatnonzero((sel.sp_prob[t] >= 0.5).numpy()[sp])  # cloud is clean: rows = indices
        assert set(r.timings_ms) == {"text", "decoder", "post", "total"}
        if not want.size:  # the authors' answer is empty: ours is the most probable non-empty query
            continue
        assert np.array_equal(r.point_indices, want) and r.found
        if r.found:
            o = r.objects[0]
            assert isinstance(o, TargetObject) and o.queries[0] == int(sel.query[t])
            pts = room.xyz[want].astype(np.float64)
            assert np.allclose(o.centroid, pts.mean(0)) and np.allclose(o.box_min, pts.min(0))
            assert np.allclose(o.box_max, pts.max(0))
            assert 0.0 <= o.score <= 1.0


def test_prepare_stages_and_online_superpoints(seg, room) -> None:
    c = seg.prepare(room.xyz, room.rgb)  # superpoints from bqnet_model.superpoints.oversegment
    assert isinstance(c, SceneCache)
    assert {"clean", "superpoints", "voxelize", "backbone", "pooling", "fps", "total"} <= set(c.timings_ms)
    assert c.n_points == len(room.xyz) and c.n_input == len(room.xyz) and 1 < c.n_superpoints < c.n_points
    assert c.scene.sp_feats.shape == (1, c.n_superpoints, 8) and c.scene.seed_idx.shape == (1, 32)
    assert np.array_equal(np.sort(c.points_of(np.arange(c.n_superpoints))), np.arange(c.n_points))
    assert np.array_equal(c.sorted_points_of(np.arange(c.n_superpoints)), np.arange(c.n_points))  # mask branch
    few = np.array([3, 1])
    assert np.array_equal(c.sorted_points_of(few), np.flatnonzero(np.isin(c.point_superpoint, few)))  # sort branch
    r = seg.query(c, "the red chair", task="gres")[0]
    assert r.task == "gres" and r.found == bool(r.objects)
    no_rgb = seg.prepare(room.xyz)  # constant grey colours
    assert no_rgb.n_points == len(room.xyz)


def test_indices_refer_to_the_callers_cloud(seg, cache, room, sp) -> None:
    """NaN rows and duplicates are dropped, answers still index the array given to prepare."""
    n = len(room.xyz)
    xyz = np.concatenate([room.xyz, np.full((4, 3), np.nan, np.float32), room.xyz[:3]])
    # the duplicates carry their originals' colours: whichever copy cleaning keeps, the map is the same
    rgb = np.concatenate([room.rgb, np.zeros((4, 3), np.uint8), room.rgb[:3]])
    perm = np.random.default_rng(0).permutation(len(xyz))
    c2 = seg.prepare(xyz[perm], rgb[perm], superpoints=np.concatenate([sp, np.zeros(4, np.int64), sp[:3]])[perm])
    assert c2.n_points == n and c2.n_input == n + 7
    r1 = seg.query(cache, TEXTS[:2])
    r2 = seg.query(c2, TEXTS[:2])
    # row of the shuffled input -> row of room.xyz (the appended duplicates stand for rows 0..2)
    original = np.concatenate([np.arange(n), np.full(4, -1), np.arange(3)])[perm]
    # the same map up to float rounding of the pooled means (an untrained model's mask logits sit
    # within rounding of 0 on some superpoints, so the thresholded answers may differ there only)
    assert torch.allclose(seg.decode(cache, TEXTS[:2]).final.masks, seg.decode(c2, TEXTS[:2]).final.masks, atol=1e-5)
    for a, b in zip(r1, r2):
        assert a.found == b.found
        assert np.isfinite(xyz[perm][b.point_indices]).all() and (original[b.point_indices] >= 0).all()
        got = np.sort(original[b.point_indices])
        assert np.intersect1d(got, a.point_indices).size >= 0.95 * max(got.size, a.point_indices.size)


def test_batched_and_chunked_queries_agree(seg, cache) -> None:
    one_call = seg.query(cache, TEXTS)
    chunked = with_inference(seg, text_chunk=2).query(cache, TEXTS)
    single = [seg.query(cache, t)[0] for t in TEXTS]
    for a, b, c in zip(one_call, chunked, single):
        assert np.array_equal(a.point_indices, b.point_indices) and np.array_equal(a.point_indices, c.point_indices)


def _answer(seg: Segmenter, cache: SceneCache, masks_on: list[np.ndarray], probs: list[float], task: str) -> Result:
    """The answer for a hand-made view: query q's mask is ``masks_on[q]``, its probability ``probs[q]``."""
    S = cache.n_superpoints
    on = np.zeros((len(masks_on), S), bool)
    for q, m in enumerate(masks_on):
        on[q, np.asarray(m, np.int64)] = True
    inf = seg.inference
    groups = group_queries([np.asarray(probs)], [on], cache.sp_weights, inf.candidates, inf.merge_iou)
    return answer(cache, "x", task, groups, inf.gres_min_points)


def test_gres_answers_are_the_union_of_target_queries_split_into_objects(seg, cache) -> None:
    a = np.arange(0, 20)
    b = np.arange(40, 60)
    masks, probs = [a, a[:18], b, np.arange(100, 130), a], [0.9, 0.8, 0.7, 0.2, 0.95]
    s = with_inference(seg, gres_min_points=1)
    r = _answer(s, cache, masks, probs, "gres")
    assert r.found and len(r.objects) == 2  # {0, 1, 4} merged (IoU > 0.5), {2}; 3 is no target
    first, second = r.objects
    assert sorted(first.queries) == [0, 1, 4] and first.score == pytest.approx(0.95)
    assert second.queries == [2] and second.score == pytest.approx(0.7)
    rows_a = cache.points_of(a)
    assert np.array_equal(first.point_indices, np.sort(cache.point_index[rows_a]))
    pts = cache.point_xyz[rows_a].astype(np.float64)
    assert np.allclose(first.centroid, pts.mean(0)) and np.allclose(first.box_max, pts.max(0))
    # the authors' rule: the answer is the union of every target query's mask
    union = np.unique(np.concatenate([a, b]))
    assert np.array_equal(r.point_indices, np.sort(cache.point_index[cache.points_of(union)]))
    # a non-target query that overlaps a target one joins its group but adds nothing to the union
    r2 = _answer(s, cache, [a, np.arange(0, 25)], [0.9, 0.3], "gres")
    assert sorted(r2.objects[0].queries) == [0, 1]
    assert np.array_equal(r2.point_indices, np.sort(cache.point_index[cache.points_of(a)]))
    # too few points in all -> no target; no target query -> no target
    assert not _answer(with_inference(seg, gres_min_points=10**6), cache, masks, probs, "gres").found
    r0 = _answer(s, cache, [a, b], [0.1, 0.3], "gres")
    assert not r0.found and r0.objects == [] and r0.point_indices.size == 0


def test_res_answer_is_the_most_probable_non_empty_query(seg, cache) -> None:
    a, b = np.arange(0, 10), np.arange(30, 35)
    r = _answer(seg, cache, [a, b], [0.3, 0.6], "res")
    assert r.found and r.objects[0].queries[0] == 1 and len(r.objects) == 1
    assert np.array_equal(r.point_indices, np.sort(cache.point_index[cache.points_of(b)]))
    skip = _answer(seg, cache, [a, np.zeros(0, np.int64)], [0.3, 0.6], "res")  # the best one is empty
    assert skip.found and skip.objects[0].queries == [0]
    none = _answer(seg, cache, [np.zeros(0, np.int64)], [0.9], "res")
    assert not none.found and none.objects == [] and none.point_indices.size == 0


def test_group_queries_over_views() -> None:
    """An object every view finds beats one a single view is surer of; overlapping masks of two
    views are one object; a view without it counts 0; targets always take part."""
    w = np.ones(6)
    chair = np.array([1, 1, 1, 0, 0, 0], bool)
    chair_b = np.array([1, 1, 0, 0, 0, 0], bool)  # IoU 2/3 with chair
    pair = np.array([0, 0, 0, 1, 1, 1], bool)
    none = np.zeros(6, bool)
    probs = [np.array([0.6, 0.9, 0.1]), np.array([0.7, 0.2, 0.0]), np.array([0.8, 0.0, 0.3])]
    masks = [np.stack([chair, pair, none]), np.stack([chair_b, pair, none]), np.stack([chair, none, pair])]
    g = group_queries(probs, masks, w, candidates=16, match_iou=0.5)
    assert [c.rep.tolist() for c in g] == [chair.tolist(), pair.tolist()]
    assert g[0].score == pytest.approx((0.6 + 0.7 + 0.8) / 3) and g[1].score == pytest.approx((0.9 + 0.2 + 0.3) / 3)
    assert sorted(g[0].members) == [0, 3, 6] and sorted(g[1].members) == [1, 4, 8]  # view * Q + query
    assert g[0].union.tolist() == chair.tolist()  # union of its target members (0.6, 0.7, 0.8)
    one = group_queries(probs[:1], masks[:1], w, candidates=16, match_iou=0.5)
    assert one[0].score == pytest.approx(0.9) and one[0].rep.tolist() == pair.tolist()
    top1 = group_queries(probs, masks, w, candidates=1, match_iou=0.5)  # top-1 per view, plus every target
    assert sorted(m for c in top1 for m in c.members) == [0, 1, 3, 6]
    with pytest.raises(ValueError, match="one probability vector"):
        group_queries(probs, masks[:2], w, 16, 0.5)


def _groups_by_whole_masks(probs, masks, w, candidates, match_iou):
    """The grouping rule written plainly (every IoU over whole masks), the reference for
    group_queries, which reads a small mask's own superpoints only."""
    pool = []
    for v, (p, m) in enumerate(zip(probs, masks)):
        ranked = [int(q) for q in np.argsort(-p, kind="stable") if m[q].any()]
        pool += [(float(p[q]), v, q) for k, q in enumerate(ranked) if k < candidates or p[q] > 0.5]
    pool.sort(key=lambda c: -c[0])
    groups = []  # [rep, union or None, best per view, members]
    for p, v, q in pool:
        m = masks[v][q]
        ious = [((g[0] & m) @ w) / max((g[0] | m) @ w, 1e-9) for g in groups]
        j = int(np.argmax(ious)) if ious and max(ious) > match_iou else -1
        if j < 0:
            groups.append([m, None, np.zeros(len(probs)), []])
        g = groups[j]
        g[2][v] = max(g[2][v], p)
        g[3].append(v * masks[v].shape[0] + q)
        if p > 0.5:
            g[1] = m.copy() if g[1] is None else g[1] | m
    return sorted(([g[0], g[0] if g[1] is None else g[1], float(g[2].mean()), g[3]] for g in groups),
                  key=lambda c: -c[2])


@pytest.mark.parametrize("seed", range(12))
def test_group_queries_equals_the_whole_mask_rule(seed) -> None:
    """Random views, masks near a few shared objects (small and large, some empty), integer
    point weights: the same groups, masks, scores and members as the plain rule."""
    rng = np.random.default_rng(seed)
    S, K, Q = int(rng.integers(5, 300)), int(rng.integers(1, 4)), int(rng.integers(1, 30))
    w = rng.integers(1, 50, S).astype(np.float64)
    objects = rng.random((5, S)) < [0.02, 0.05, 0.3, 0.7][seed % 4]
    probs = [rng.random(Q) for _ in range(K)]
    masks = [objects[rng.integers(0, 5, Q)] ^ (rng.random((Q, S)) < 0.03) for _ in range(K)]
    masks[0][rng.random(Q) < 0.2] = False
    for candidates, match_iou in ((4, 0.5), (1, 0.3), (64, 0.0), (8, 0.9)):
        got = group_queries(probs, masks, w, candidates, match_iou)
        want = _groups_by_whole_masks(probs, masks, w, candidates, match_iou)
        assert len(got) == len(want)
        for c, (rep, union, score, members) in zip(got, want):
            assert np.array_equal(c.rep, rep) and np.array_equal(c.union, union)
            assert c.score == score and c.members == members


def test_errors_and_fallbacks(seg, cache, room, monkeypatch, caplog) -> None:
    with pytest.raises(ValueError, match="empty"):
        seg.query(cache, "")
    with pytest.raises(ValueError, match="empty"):
        seg.query(cache, [])
    with pytest.raises(ValueError, match="task"):
        seg.query(cache, "a chair", task="detect")
    with pytest.raises(TypeError, match="SceneCache"):
        seg.query("not a cache", "a chair")
    with pytest.raises(ValueError, match="superpoints must have shape"):
        seg.prepare(room.xyz, room.rgb, superpoints=np.zeros(5, np.int64))
    with pytest.raises(ValueError):
        seg.prepare(np.full((10, 3), np.nan))
    with pytest.raises(ValueError, match="invalid device|unsupported device"):
        Segmenter(seg.model, seg.cfg, device="tpu")
    with pytest.raises(ValueError, match="unknown key"):
        Segmenter.from_config(TINY, mask_treshold=0.3)
    # inference.superpoints is checked once, by the config loader (YAML, dict or from_config overrides).
    with pytest.raises(ValueError, match=r"inference\.superpoints: unknown key\(s\) \['k_tresh'\]"):
        Segmenter.from_config(TINY, superpoints={"k_tresh": 0.1})
    with pytest.raises(ValueError, match=r"inference\.superpoints: SuperpointParams\.k_thresh must be finite"):
        load_config({"inference": {"superpoints": {"k_thresh": -1}}})
    with pytest.raises(ValueError, match="inference.superpoint_threads"):
        load_config({"inference": {"superpoint_threads": -1}})
    with pytest.raises(TypeError, match="inference.superpoints must be a SuperpointParams"):
        with_inference(seg, superpoints={"k_thresh": 0.05})
    d = SuperpointParams()  # the defaults spelled out in YAML: the same superpoints as no override
    inf = load_config({"inference": {"superpoints": {"k_thresh": d.k_thresh, "min_size": d.min_size},
                                     "superpoint_threads": 1}}).inference
    assert inf.superpoints == SuperpointParams(k_thresh=d.k_thresh, min_size=d.min_size)
    assert inf.superpoint_threads == 1
    one = with_inference(seg, superpoints=inf.superpoints, superpoint_threads=1).prepare(room.xyz, room.rgb)
    default = seg.prepare(room.xyz, room.rgb)  # torch's thread count: the same superpoints
    assert np.array_equal(one.point_superpoint, default.point_superpoint)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="bqnet_model.pipeline"):
        s = Segmenter(seg.model, seg.cfg, device="cuda")
    assert s.device.type == "cpu" and "CUDA is not available" in caplog.text


def test_max_points_downsamples_with_a_warning(seg, room, caplog) -> None:
    s = with_inference(seg, max_points=1000)
    with caplog.at_level(logging.WARNING, logger="bqnet_model.pipeline"):
        c = s.prepare(room.xyz, room.rgb)
    assert 900 <= c.n_points <= 1000 and "max_points=1000" in caplog.text and "voxel grid" in caplog.text
    assert c.n_downsampled == len(room.xyz) - c.n_points
    r = s.query(c, "the red chair")[0]
    assert np.isin(r.point_indices, c.point_index).all()


def test_from_checkpoint_with_overrides(tmp_path: Path, seg, cache, room, sp) -> None:
    path = save_checkpoint(tmp_path / "m.pth", seg.model, seg.cfg)
    s2 = Segmenter.from_checkpoint(path, device="cpu", task="gres", mask_threshold=0.4)
    assert s2.inference.task == "gres" and s2.inference.mask_threshold == 0.4
    c2 = s2.prepare(room.xyz, room.rgb, superpoints=sp)
    a = seg.decode(cache, TEXTS[:2]).final.masks
    b = s2.decode(c2, TEXTS[:2]).final.masks
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="unknown key"):
        Segmenter.from_checkpoint(path, taks="gres")


def test_sentences_cached_by_query_can_be_trained_on(seg, cache, room, sp) -> None:
    """query() runs under inference_mode; its text cache must not leak inference tensors into autograd."""
    seg.query(cache, TEXTS[:2])
    batch = collate_scenes([scene_inputs(room.xyz, room.rgb, sp, 0.02)], TEXTS[:2])
    out = seg.model(batch)  # eval mode (no BN statistics change), autograd on
    out.final.masks.sum().backward()
    assert seg.model.decoder.lang_proj.weight.grad is not None
    seg.model.zero_grad(set_to_none=True)


# ----------------------------------------------------------------------------- speed levers
def _variant(seg: Segmenter, **kw) -> Segmenter:
    return with_inference(seg, **kw)


def test_image_features_are_pooled_onto_superpoints(room, sp) -> None:
    """Per-point (or per-given-superpoint) image features reach the decoder as superpoint means;
    a model without the 2D branch ignores them with a warning."""
    cfg = copy.deepcopy(TINY)
    cfg["model"]["decoder"]["image_channels"] = 6
    s = Segmenter.from_config(cfg, seed=1)
    n = len(room.xyz)
    feats = np.random.default_rng(0).normal(size=(n, 6)).astype(np.float32)
    c = s.prepare(room.xyz, room.rgb, superpoints=sp, image_features=feats)
    img = c.scene.image_feats[0].numpy()
    for k in (0, 3, c.n_superpoints - 1):
        np.testing.assert_allclose(img[k], feats[c.point_superpoint == k].mean(0), rtol=1e-5, atol=1e-6)
    per_sp = np.random.default_rng(1).normal(size=(int(sp.max()) + 1, 6)).astype(np.float32)
    c2 = s.prepare(room.xyz, room.rgb, superpoints=sp, image_features=per_sp)
    assert np.allclose(c2.scene.image_feats[0].numpy(), per_sp[np.unique(sp)], atol=1e-6)
    with_img = s.decode(c, TEXTS[:2]).final.masks
    without = s.decode(s.prepare(room.xyz, room.rgb, superpoints=sp), TEXTS[:2]).final.masks
    assert not torch.allclose(with_img, without)  # the features change the answer
    with pytest.raises(ValueError, match="image_features must have shape"):
        s.prepare(room.xyz, room.rgb, image_features=feats[:, :4])
    with pytest.raises(ValueError, match="rows"):
        s.prepare(room.xyz, room.rgb, image_features=feats[:10])
    with pytest.raises(ValueError, match="finite"):
        bad = feats.copy()
        bad[0, 0] = np.nan
        s.prepare(room.xyz, room.rgb, image_features=bad)


def test_image_features_to_a_model_without_the_branch_warn(seg, room, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="bqnet_model.pipeline"):
        c = seg.prepare(room.xyz, room.rgb, image_features=np.zeros((len(room.xyz), 3), np.float32))
    assert "no 2D branch" in caplog.text and c.scene.image_feats is None


class _NoHostSync(torch.overrides.TorchFunctionMode):
    """Raises on every tensor operation that makes the host wait for the device."""

    BAD = {"__bool__", "item", "tolist", "cpu", "numpy", "nonzero", "argwhere", "__int__", "__float__",
           "__index__", "masked_select", "unique", "unique_consecutive", "bincount", "repeat_interleave"}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if name in self.BAD:
            raise AssertionError(f"host synchronisation in the decoder path: {name}")
        if name == "__getitem__" and any(isinstance(a, torch.Tensor) and a.dtype == torch.bool
                                         for a in (args[1] if isinstance(args[1], tuple) else (args[1],))):
            raise AssertionError("boolean-mask indexing (a hidden nonzero) in the decoder path")
        if name == "to" and isinstance(args[0], torch.Tensor) and args[0].device.type != "cpu" and any(
                isinstance(a, (torch.device, str)) and str(a) == "cpu" for a in args[1:]):
            raise AssertionError("device -> host copy in the decoder path")
        return func(*args, **kwargs)


@pytest.mark.parametrize("task", ["res", "gres"])
def test_decoder_and_summary_run_without_host_sync(seg, cache, task) -> None:
    """What a CUDA graph captures (decoder + answer summary) never waits for the device."""
    s = with_inference(seg, task=task)
    with torch.inference_mode():
        text = s.model.encode_text(TEXTS)
        fn = s.summary_fn()
        with _NoHostSync():
            out = fn(cache.scene, text.word_feats, text.word_mask)
    assert out.dtype == torch.uint8 and out.ndim == 1
    with pytest.raises(AssertionError, match="host synchronisation"):
        with _NoHostSync(), torch.inference_mode():  # the guard does catch the value checks
            s.model.decode(cache.scene, text, None, keep_all_layers=False, check_values=True)


def test_summary_round_trips(seg, cache) -> None:
    """The packed summary decodes to every query's target probability and thresholded mask."""
    from bqnet_model.model.heads import target_probability

    pred = seg.decode(cache, TEXTS).final
    T, Q, S = pred.masks.shape
    pad = cache.scene.sp_pad.expand(T, -1)
    buf = summarise(pred, cache.scene.sp_pad, 0.5).numpy()
    prob, on = unpack_summary(buf, T, S)
    assert prob.shape == (T, Q) and np.array_equal(prob, target_probability(pred).numpy())
    assert np.array_equal(on, ((torch.sigmoid(pred.masks) >= 0.5) & ~pad.unsqueeze(1)).numpy())
    with pytest.raises(ValueError, match="does not fit"):
        unpack_summary(buf[:-1], T, S)


def test_close_releases_and_the_segmenter_stays_usable(seg, cache, room) -> None:
    s = _variant(seg, cuda_graph=True)
    c = s.prepare(room.xyz, room.rgb)
    s.close()
    assert s._graphs is None
    assert s.prepare(room.xyz, room.rgb).n_points == c.n_points
    assert len(s.query(c, TEXTS[:2])) == 2
    s.close()


@pytest.mark.parametrize("S", [1, 7, 8, 13, 64])
def test_packbits_matches_numpy(S) -> None:
    from bqnet_model.pipeline.summary import packbits

    m = torch.rand(3, 5, S, generator=torch.Generator().manual_seed(S)) > 0.5
    packed = packbits(m).numpy()
    assert np.array_equal(packed, np.packbits(m.numpy(), axis=-1, bitorder="little"))


def test_superpoint_geometry_matches_the_points():
    """Per-superpoint sums and boxes (what answers' centroids and boxes come from) equal a direct
    computation over each superpoint's points; an empty superpoint gets an empty box."""
    from bqnet_model.pipeline.superpoint_table import superpoint_geometry

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 6, 500)
    labels[labels == 4] = 5  # superpoint 4 has no points
    xyz = rng.normal(size=(500, 3)).astype(np.float32)
    order = np.argsort(labels, kind="stable")
    start = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=7))])
    sums, mins, maxs = superpoint_geometry(xyz, order, start)
    for s in range(7):
        pts = xyz[labels == s].astype(np.float64)
        if len(pts) == 0:
            assert np.all(sums[s] == 0) and np.all(mins[s] == np.inf) and np.all(maxs[s] == -np.inf)
            continue
        np.testing.assert_allclose(sums[s], pts.sum(0), rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(mins[s], pts.min(0))
        np.testing.assert_array_equal(maxs[s], pts.max(0))


def test_turn_about_z_keeps_distances_and_the_centre() -> None:
    from bqnet_model.pipeline import rotation_z, turn_about_z

    xyz = (np.random.default_rng(0).random((50, 3)) * [4, 3, 2]).astype(np.float32)
    t = turn_about_z(xyz, np.pi / 2)
    assert t.dtype == np.float32
    assert np.allclose(np.linalg.norm(t[1:] - t[0], axis=1), np.linalg.norm(xyz[1:] - xyz[0], axis=1), atol=1e-5)
    assert np.allclose(t[:, 2], xyz[:, 2])
    assert np.allclose((t.min(0) + t.max(0))[:2] / 2, (xyz.min(0) + xyz.max(0))[:2] / 2, atol=1e-5)
    assert np.allclose(rotation_z(np.pi / 2) @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0])


def test_tta_views_share_superpoints_and_answer_both_tasks(seg, room, sp) -> None:
    """tta_rotations K: K-1 turned copies in the cache with the same superpoints, answers fused
    from all of them; with the fusion's own single view (K=1 path untouched) nothing changes."""
    # (an untrained model's masks are mostly below 0.5: a lower threshold gives answers to compare)
    s4 = with_inference(seg, tta_rotations=4, gres_min_points=1, mask_threshold=0.1)
    c4 = s4.prepare(room.xyz, room.rgb, superpoints=sp)
    assert len(c4.views) == 3 and "tta_views" in c4.timings_ms
    S = c4.n_superpoints
    for v in c4.views:
        assert v.sp_feats.shape == c4.scene.sp_feats.shape and torch.equal(v.sp_pad, c4.scene.sp_pad)
        # the pooled positions are the turned ones: same distances to each other
        def dist(x: torch.Tensor) -> torch.Tensor:
            return torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")

        assert torch.allclose(dist(v.sp_xyz[0, :S]), dist(c4.scene.sp_xyz[0, :S]), atol=1e-4)
        assert not torch.allclose(v.sp_feats, c4.scene.sp_feats)  # other voxels, other features
    for task in ("res", "gres"):
        rs = s4.query(c4, TEXTS, task=task)
        assert len(rs) == len(TEXTS)
        for r in rs:
            assert r.task == task and r.found == bool(r.objects)
            if task == "res":
                assert len(r.objects) <= 1
            for o in r.objects:
                assert 0.0 < o.score <= 1.0 and np.all(np.diff(o.point_indices) > 0)
                assert o.point_indices.max() < len(room.xyz)
    # the same answers as fusing the views' decoder outputs by hand
    from bqnet_model.model.heads import target_probability

    rs = s4.query(c4, TEXTS, task="res")
    with torch.inference_mode():
        text = s4.model.encode_text(TEXTS)
        preds = [s4.model.decode(scene, text, None, keep_all_layers=False).final for scene in (c4.scene, *c4.views)]
    weights = np.diff(c4.sp_start).astype(np.float64)
    n_found = 0
    for t, r in enumerate(rs):
        probs = [target_probability(p)[t].numpy() for p in preds]
        masks = [(torch.sigmoid(p.masks[t, :, :S]) >= 0.1).numpy() for p in preds]
        fused = group_queries(probs, masks, weights, 16, 0.5)
        assert r.found == bool(fused)
        if fused:
            n_found += 1
            m, score = fused[0].rep, fused[0].score
            assert r.objects[0].score == pytest.approx(score, abs=1e-5)
            assert np.array_equal(r.point_indices, np.sort(c4.point_index[c4.points_of(np.flatnonzero(m))]))
    assert n_found > 0


def test_tta_settings_are_checked() -> None:
    from bqnet_model.model.config import InferenceConfig

    for bad in ({"tta_rotations": 0}, {"tta_rotations": True}, {"candidates": 0}, {"merge_iou": 1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            InferenceConfig(**bad)
