"""Segmenter: prepare once, query many; cached queries equal the full forward; post-processing."""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from bqnet_model.checkpoint import save_checkpoint
from bqnet_model.data.synthetic import minimal_room
from bqnet_model.model.decoder import LayerPrediction
from bqnet_model.model.heads import select_res
from bqnet_model.model.inputs import collate_scenes, scene_inputs
from bqnet_model.pipeline import Result, SceneCache, Segmenter, TargetObject, _merge_queries

TINY = {
    "model": {
        "backbone": {"media": 8, "levels": 3},
        "decoder": {"d_model": 32, "nhead": 2, "ffn": 64, "num_layers": 2, "fps_num": 32, "num_proposal": 16},
    },
    "inference": {"gres_min_points": 5},
}
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


def with_inference(seg: Segmenter, **kw) -> Segmenter:
    cfg = copy.copy(seg.cfg)
    cfg.inference = dataclasses.replace(seg.cfg.inference, **kw)
    return Segmenter(seg.model, cfg, "cpu")


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
        assert np.array_equal(r.point_indices, want)
        assert r.found == bool(want.size)
        assert set(r.timings_ms) == {"text", "decoder", "post", "total"}
        if r.found:
            o = r.objects[0]
            assert isinstance(o, TargetObject) and o.queries == [int(sel.query[t])]
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
    rgb = np.concatenate([room.rgb, np.zeros((7, 3), np.uint8)])
    perm = np.random.default_rng(0).permutation(len(xyz))
    c2 = seg.prepare(xyz[perm], rgb[perm], superpoints=np.concatenate([sp, np.zeros(7, np.int64)])[perm])
    assert c2.n_points == n and c2.n_input == n + 7
    r1 = seg.query(cache, TEXTS[:2])
    r2 = seg.query(c2, TEXTS[:2])
    # row of the shuffled input -> row of room.xyz (the appended duplicates stand for rows 0..2)
    original = np.concatenate([np.arange(n), np.full(4, -1), np.arange(3)])[perm]
    for a, b in zip(r1, r2):
        assert a.found == b.found
        assert np.isfinite(xyz[perm][b.point_indices]).all()
        assert np.array_equal(np.sort(original[b.point_indices]), a.point_indices)


def test_batched_and_chunked_queries_agree(seg, cache) -> None:
    one_call = seg.query(cache, TEXTS)
    chunked = with_inference(seg, text_chunk=2).query(cache, TEXTS)
    single = [seg.query(cache, t)[0] for t in TEXTS]
    for a, b, c in zip(one_call, chunked, single):
        assert np.array_equal(a.point_indices, b.point_indices) and np.array_equal(a.point_indices, c.point_indices)


def _pred(cache: SceneCache, masks_on: list[np.ndarray], indi_target: list[float]) -> LayerPrediction:
    """A fake final prediction: query q's mask is +5 on its superpoints, -5 elsewhere."""
    S = cache.n_superpoints
    masks = torch.full((1, len(masks_on), S), -5.0)
    for q, on in enumerate(masks_on):
        masks[0, q, torch.from_numpy(np.asarray(on, np.int64))] = 5.0
    p = torch.tensor(indi_target).clamp(1e-4, 1 - 1e-4)
    indi = torch.stack([torch.log1p(-p), torch.log(p)], -1)[None]
    return LayerPrediction(masks=masks, scores=torch.zeros(1, len(masks_on)), indi=indi)


def test_gres_post_processing_merges_overlapping_queries(seg, cache) -> None:
    a = np.arange(0, 20)
    b = np.arange(40, 60)
    pred = _pred(cache, [a, a[:18], b, np.arange(100, 130), a], [0.9, 0.8, 0.7, 0.2, 0.95])
    s = with_inference(seg, gres_min_points=1)
    r = s._select(cache, pred, ["x"], "gres")[0]
    assert r.found and len(r.objects) == 2  # {0, 1, 4} merged (IoU > 0.5), {2}; 3 is negative
    first, second = r.objects
    assert sorted(first.queries) == [0, 1, 4] and first.score == pytest.approx(0.95, abs=1e-3)
    assert second.queries == [2] and second.score == pytest.approx(0.7, abs=1e-3)
    rows_a = cache.points_of(a)
    assert np.array_equal(first.point_indices, np.sort(cache.point_index[rows_a]))
    pts = cache.point_xyz[rows_a].astype(np.float64)
    assert np.allclose(first.centroid, pts.mean(0)) and np.allclose(first.box_max, pts.max(0))
    assert np.array_equal(r.point_indices, np.union1d(first.point_indices, second.point_indices))
    # too few points in all -> no target
    big = with_inference(seg, gres_min_points=10**6)
    assert not big._select(cache, pred, ["x"], "gres")[0].found
    # no positive query -> no target
    none = _pred(cache, [a, b], [0.1, 0.3])
    r0 = s._select(cache, none, ["x"], "gres")[0]
    assert not r0.found and r0.objects == [] and r0.point_indices.size == 0


def test_res_post_processing_best_query_and_empty_mask(seg, cache) -> None:
    a, b = np.arange(0, 10), np.arange(30, 35)
    r = seg._select(cache, _pred(cache, [a, b], [0.3, 0.6]), ["x"], "res")[0]
    assert r.found and r.objects[0].queries == [1]
    assert np.array_equal(r.point_indices, np.sort(cache.point_index[cache.points_of(b)]))
    empty = seg._select(cache, _pred(cache, [a, np.zeros(0, np.int64)], [0.3, 0.6]), ["x"], "res")[0]
    assert not empty.found and empty.objects == [] and empty.point_indices.size == 0


def test_merge_queries_unit() -> None:
    m = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], bool)
    w = np.array([1.0, 1.0, 1.0, 10.0])
    groups = _merge_queries(m, np.array([0.5, 0.9, 0.4, 0.8]), np.array([7, 8, 9, 10]), w, 0.5)
    assert [g[2] for g in groups] == [[8, 7], [9]]  # IoU(7, 8) = 2/3; query 10 has an empty mask
    assert groups[0][0].tolist() == [True, True, True, False] and groups[0][1] == 0.9


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
    with pytest.raises(ValueError, match=r"inference\.superpoints: unknown key\(s\) \['k_tresh'\]"):
        with_inference(seg, superpoints={"k_tresh": 0.1})
    assert with_inference(seg, superpoints={"k_thresh": 0.05, "num_threads": 1}).inference.superpoints["k_thresh"] == 0.05
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="bqnet_model.pipeline"):
        s = Segmenter(seg.model, seg.cfg, device="cuda")
    assert s.device.type == "cpu" and "CUDA is not available" in caplog.text


def test_max_points_downsamples_with_a_warning(seg, room, caplog) -> None:
    s = with_inference(seg, max_points=1000)
    with caplog.at_level(logging.WARNING, logger="bqnet_model.pipeline"):
        c = s.prepare(room.xyz, room.rgb)
    assert c.n_points == 1000 and "max_points=1000" in caplog.text
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
