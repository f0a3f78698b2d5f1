"""Segmenter.update: incremental maps (bqnet_model/pipeline/incremental.py, change_region.py).

Tolerances stated here: spliced backbone features equal a full backbone pass on the same inputs
within 1e-5 (float32 rounding of the different row sets; measured ~1e-7); superpoint ASA against
ground-truth instances within 0.005 of a full re-segmentation; answers equal a full prepare's
exactly when the superpoints are the caller's, and with the online superpoints the same found
flags with answer IoU >= 0.6 to the full prepare's on the shipped model.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from bqnet_model.ingest import clean_torch, voxel_inputs_torch
from bqnet_model.model.config import BackboneConfig
from bqnet_model.model.inputs import single_scene_batch
from bqnet_model.pipeline import Segmenter
from bqnet_model.pipeline.change_region import diff_voxels, pack_keys, receptive_field, within_reach
from bqnet_model.pipeline.incremental import IncrementalCache, IncrementalParams, number_by_first_point
from bqnet_model.superpoints import achievable_segmentation_accuracy as asa
from bqnet_synth import demo_expressions, demo_room, minimal_room
from tiny_model import tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = tiny_config()
SHIPPED = Path(__file__).resolve().parents[1] / "models" / "bqnet_tiny.pth"
FEAT_TOL = 1e-5


@pytest.fixture(scope="module")
def seg() -> Segmenter:
    return Segmenter.from_config(TINY, device="cpu", seed=0, text_pretrained=False)


@pytest.fixture(scope="module")
def room():
    return demo_room(seed=0, n_points=40_000)


def _without(room, name: str) -> np.ndarray:
    """Rows of the room without its object ``name`` (the map before that object was seen)."""
    k = [o.name for o in room.objects].index(name)
    return room.instance != k


@pytest.fixture(scope="module")
def grown(seg, room):
    """(cache of the room without its box, mask of those rows)."""
    old = _without(room, "box")
    return seg.update(None, room.xyz[old], room.rgb[old]), old


def pinned_full_pass(seg: Segmenter, xyz: np.ndarray, rgb: np.ndarray, centre: torch.Tensor) -> torch.Tensor:
    """The backbone on the whole map, position inputs centred on ``centre`` (the reference)."""
    d = clean_torch(xyz, rgb, device="cpu")
    vi = voxel_inputs_torch(d.xyz, d.rgb, seg.inference.voxel_size)
    f = vi.feats.clone()
    f[:, 3:] += (d.xyz.double().mean(0) - centre).float()
    with torch.inference_mode():
        return seg.model.encode_voxels(single_scene_batch(vi.coords, f, vi.p2v, d.xyz))


# ---------------------------------------------------------------- geometry
def test_receptive_field_formula() -> None:
    assert receptive_field(BackboneConfig(levels=1, block_reps=2)) == 5
    assert receptive_field(BackboneConfig(levels=3, block_reps=2)) == 44
    assert receptive_field(BackboneConfig(levels=4, block_reps=2)) == 96
    assert receptive_field(BackboneConfig(levels=5, block_reps=2)) == 200


def test_receptive_field_bounds_a_real_pass(seg) -> None:
    """Perturb one voxel's input: no output farther than R (L-inf) changes, and some far one does."""
    r = minimal_room(20_000, seed=1)
    d = clean_torch(r.xyz, r.rgb, device="cpu")
    vi = voxel_inputs_torch(d.xyz, d.rgb, seg.inference.voxel_size)
    R = receptive_field(seg.model.cfg.backbone)
    batch = single_scene_batch(vi.coords, vi.feats, vi.p2v, d.xyz)
    with torch.inference_mode():
        a = seg.model.encode_voxels(batch)
        i = int(vi.coords.shape[0] // 2)
        batch["feats"] = vi.feats.clone()
        batch["feats"][i] += 0.5
        b = seg.model.encode_voxels(batch)
    moved = (a - b).abs().amax(1) > 0
    dist = (vi.coords.long() - vi.coords[i].long()).abs().amax(1)
    assert int(dist[moved].max()) <= R
    assert int(dist[moved].max()) > R // 4  # the bound is not vacuous: the field is wide


def test_within_reach_contains_the_exact_ball() -> None:
    g = torch.Generator().manual_seed(0)
    coords = torch.randint(0, 60, (3000, 3), generator=g)
    seeds = torch.randint(20, 40, (5, 3), generator=g)
    for reach in (0, 1, 3, 17):
        got = within_reach(coords, seeds, reach)
        d = (coords[:, None, :] - seeds[None]).abs().amax(2).amin(1)
        assert bool(got[d <= reach].all())
        b = max(1, -(-reach // 8))
        assert not bool(got[d > reach + b].any())  # at most one block too far
    assert not bool(within_reach(coords, seeds[:0], 5).any())


def test_diff_voxels_new_removed_changed() -> None:
    c = torch.tensor([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]])
    k_old = pack_keys(c[:3])
    k_new = pack_keys(c[[0, 1, 3]])
    m_old = torch.zeros(3, 6, dtype=torch.float64)
    m_new = torch.zeros(3, 6, dtype=torch.float64)
    m_new[1, 0] = 0.1  # voxel (1,0,0): colour changed
    counts = torch.ones(3, dtype=torch.long)
    d = diff_voxels(k_old, counts, m_old, k_new, counts, m_new, 1e-5, 1e-5, [128] * 3, [128] * 3, 18)
    assert d.changed.tolist() == [False, True, True]  # (3,0,0) is new
    assert d.old_of_new.tolist() == [0, 1, -1]
    assert sorted(map(tuple, d.seeds.tolist())) == [(1, 0, 0), (2, 0, 0), (3, 0, 0)]  # (2,0,0) removed
    d2 = diff_voxels(k_old, counts, m_old, k_new, counts, m_new, 1e-5, 0.2, [128] * 3, [128] * 3, 18)
    assert d2.changed.tolist() == [False, False, True]  # within the colour tolerance


def test_number_by_first_point() -> None:
    labels, n = number_by_first_point(np.array([7, 7, 2, 9, 2, 7]))
    assert labels.tolist() == [0, 0, 1, 2, 1, 0] and n == 3


# ---------------------------------------------------------------- the update
def test_full_path_equals_prepare(seg, room, grown) -> None:
    cache, old = grown
    ref = seg.prepare(room.xyz[old], room.rgb[old])
    assert isinstance(cache, IncrementalCache) and cache.update_info["mode"] == "full"
    assert torch.equal(cache.scene.sp_feats, ref.scene.sp_feats)
    assert torch.equal(cache.scene.seed_idx, ref.scene.seed_idx)
    np.testing.assert_array_equal(cache.point_superpoint, ref.point_superpoint)
    np.testing.assert_array_equal(cache.point_index, ref.point_index)


@pytest.mark.parametrize("reach", [None, 0])
def test_spliced_features_exact(seg, room, grown, reach) -> None:
    """Replaced voxels equal a full pass (on the pinned centre); with the default reach, all do."""
    cache, _ = grown
    up = seg.update(cache, room.xyz, room.rgb, params=IncrementalParams(feature_reach=reach))
    info = up.update_info
    assert info["mode"] == "incremental", info
    assert 0 < info["run_voxels"] < info["voxels"]  # a real partial run, not the whole map
    ref = pinned_full_pass(seg, room.xyz, room.rgb, cache.state.centre)
    diff = (up.state.feats - ref).abs().amax(1)
    if reach is None:
        assert float(diff.max()) <= FEAT_TOL
    else:
        d = diff_voxels(cache.state.keys, cache.state.counts, cache.state.means, up.state.keys, up.state.counts,
                        up.state.means, 1e-5, 1e-5, up.state.spatial_shape, up.state.spatial_shape, 0)
        assert info["replaced_voxels"] == int(d.changed.sum())  # only the changed voxels are replaced
        assert float(diff[d.changed].max()) <= FEAT_TOL  # the exact zone
    # Pooling: the scene is the pooled spliced features over the update's superpoints.
    sp = torch.from_numpy(up.point_superpoint)
    p2v = torch.from_numpy(up.state.p2v)
    pooled = torch.zeros(up.n_superpoints, ref.shape[1]).index_add_(0, sp, up.state.feats[p2v].float())
    pooled /= torch.bincount(sp, minlength=up.n_superpoints).clamp_min(1)[:, None]
    torch.testing.assert_close(up.scene.sp_feats[0], pooled, atol=1e-5, rtol=1e-5)


def test_chained_updates_stay_exact(seg, room) -> None:
    """Add the box, then remove the sofa: features still equal a pass on the pinned centre."""
    old = _without(room, "box")
    c = seg.update(None, room.xyz[old], room.rgb[old])
    c = seg.update(c, room.xyz, room.rgb)
    keep = _without(room, "sofa")
    c2 = seg.update(c, room.xyz[keep], room.rgb[keep])
    assert c2.update_info["mode"] == "incremental"
    ref = pinned_full_pass(seg, room.xyz[keep], room.rgb[keep], c2.state.centre)
    assert float((c2.state.feats - ref).abs().max()) <= FEAT_TOL
    assert c2.point_index.max() < keep.sum()  # indices into the new cloud


@pytest.mark.parametrize("change", ["add chair", "add sofa", "remove wall strip"])
def test_superpoint_asa_bound(seg, room, change) -> None:
    """ASA (vs ground-truth instances) of the incremental labels within 0.005 of a full run's."""
    if change.startswith("add"):
        old = _without(room, change.split()[1])
        new = np.ones(len(room.xyz), bool)
    else:
        old = np.ones(len(room.xyz), bool)
        wall = room.instance == [o.name for o in room.objects].index("wall")
        strip = wall & (room.xyz[:, 2] > 1.0) & (room.xyz[:, 2] < 1.3)
        new = ~strip
    c0 = seg.update(None, room.xyz[old], room.rgb[old])
    up = seg.update(c0, room.xyz[new], room.rgb[new])
    assert up.update_info["mode"] == "incremental", up.update_info
    full = seg.prepare(room.xyz[new], room.rgb[new])
    gt = room.instance[new][full.point_index]
    np.testing.assert_array_equal(up.point_index, full.point_index)
    assert abs(asa(up.point_superpoint, gt) - asa(full.point_superpoint, gt)) <= 0.005
    assert up.update_info["kept_superpoints"] > 0.5 * c0.n_superpoints  # most superpoints were reused


def test_changed_region_is_segmented_on_the_segmenters_device(seg, room, monkeypatch) -> None:
    """The changed region's oversegmentation is asked for on the segmenter's device (on CUDA: the
    GPU port, whose labels come back as a tensor); tensor labels give the same update."""
    import dataclasses

    import bqnet_model.superpoints as sp_mod

    old = _without(room, "box")
    c0 = seg.update(None, room.xyz[old], room.rgb[old])
    ref = seg.update(c0, room.xyz, room.rgb)
    real, devices = sp_mod.oversegment_detailed, []

    def as_tensor(*args, **kwargs):
        devices.append(kwargs.get("device"))
        res = real(*args, **kwargs)
        return dataclasses.replace(res, labels=torch.from_numpy(np.asarray(res.labels)))

    monkeypatch.setattr(sp_mod, "oversegment_detailed", as_tensor)
    up = seg.update(c0, room.xyz, room.rgb)
    assert up.update_info["mode"] == "incremental" and devices == [seg.device]
    np.testing.assert_array_equal(up.point_superpoint, ref.point_superpoint)


def test_given_superpoints_keep_the_callers_labels(seg, room) -> None:
    """With the caller's superpoints the labels are a full prepare's; the features are spliced on
    the pinned centre (this tiny model's reach is smaller than the room), so the answers agree in
    their found flags. (The shipped model's reach covers the room: there the whole scene is bit
    equal, see test_shipped_model_answers_within_tolerance.)"""
    old = _without(room, "chair")
    sp = np.floor(room.xyz / 0.3).astype(np.int64)
    sp = np.unique(sp, axis=0, return_inverse=True)[1].ravel()
    c0 = seg.update(None, room.xyz[old], room.rgb[old], superpoints=sp[old])
    up = seg.update(c0, room.xyz, room.rgb, superpoints=sp)
    full = seg.prepare(room.xyz, room.rgb, superpoints=sp)
    assert up.update_info["mode"] == "incremental"
    np.testing.assert_array_equal(up.point_superpoint, full.point_superpoint)
    texts = ["the chair next to the desk", "the sofa"]
    for a, b in zip(seg.query(up, texts), seg.query(full, texts)):
        assert a.found == b.found


# ---------------------------------------------------------------- fallbacks
def test_fallbacks_are_logged(seg, room, grown, caplog) -> None:
    cache, old = grown
    caplog.set_level(logging.INFO, logger="bqnet_model.pipeline.incremental")
    lower = np.concatenate([room.xyz, room.xyz.min(0, keepdims=True) - 0.5])
    rgb = np.concatenate([room.rgb, room.rgb[:1]])
    r = seg.update(cache, lower, rgb)
    assert r.update_info["mode"] == "full" and "origin" in r.update_info["reason"]
    assert "origin" in caplog.text
    half = np.arange(len(room.xyz)) % 2 == 0
    half[room.xyz.argmin(0)] = True  # keep the minimum corner: the grid stays, the change is large
    r = seg.update(cache, room.xyz[half], room.rgb[half])
    assert r.update_info["mode"] == "full" and "voxels changed" in r.update_info["reason"]
    r = seg.update(seg.prepare(room.xyz, room.rgb), room.xyz, room.rgb)
    assert r.update_info["mode"] == "full" and "no voxel state" in r.update_info["reason"]
    other = Segmenter.from_config(TINY, device="cpu", seed=1, text_pretrained=False)
    r = other.update(cache, room.xyz, room.rgb)
    assert r.update_info["mode"] == "full" and "another model" in r.update_info["reason"]
    with pytest.raises(ValueError, match="max_changed_fraction"):
        IncrementalParams(max_changed_fraction=2.0)


# ---------------------------------------------------------------- the shipped model
@pytest.mark.skipif(not SHIPPED.exists(), reason="models/bqnet_tiny.pth is not in this checkout")
def test_shipped_model_with_the_same_superpoints_equals_a_full_prepare() -> None:
    """Demo room, a chair added (~1.5 % of the points). Its receptive field (96 voxels of 4 cm)
    covers the room, so the backbone runs on all of it: with the same superpoints the scene is bit
    equal to a full prepare's. With online superpoints the kept segments come from the old map's
    segmentation (FH is global) and answers can differ from a full prepare: measured, not asserted
    (docs/benchmarks.md, "Incremental maps")."""
    seg = Segmenter.from_checkpoint(SHIPPED, device="cpu")
    room = demo_room(seed=0, n_points=60_000)
    old = _without(room, "chair")
    full = seg.prepare(room.xyz, room.rgb)
    sp = np.zeros(len(room.xyz), np.int64)
    sp[full.point_index] = full.point_superpoint
    same = seg.update(seg.update(None, room.xyz[old], room.rgb[old], superpoints=sp[old]), room.xyz, room.rgb,
                      superpoints=sp)
    assert same.update_info["mode"] == "incremental"
    assert torch.equal(same.scene.sp_feats, full.scene.sp_feats)
    assert same.sp_class is not None and np.array_equal(same.sp_class, full.sp_class)  # the absence checks' input
    texts = [e.text for e in demo_expressions(room)]
    for a, b in zip(seg.query(same, texts), seg.query(full, texts)):
        assert a.found == b.found and np.array_equal(a.point_indices, b.point_indices), a.text


def test_growth_past_the_grid_end_stays_exact(seg, room) -> None:
    """New points beyond the old maximum x grow the grid (the strided convs' dropped last rows move):
    the voxels near the old end count as changed, so every feature still equals a full pass."""
    far = room.xyz[:, 0] > room.xyz[:, 0].max() - 0.1
    extra = room.xyz[far] + np.array([0.12, 0.0, 0.0], np.float32)
    xyz = np.concatenate([room.xyz, extra])
    rgb = np.concatenate([room.rgb, room.rgb[far]])
    c0 = seg.update(None, room.xyz, room.rgb)
    up = seg.update(c0, xyz, rgb, params=IncrementalParams(max_centre_shift=1.0))
    assert up.update_info["mode"] == "incremental", up.update_info
    assert up.state.spatial_shape[0] > c0.state.spatial_shape[0]
    assert up.update_info["run_voxels"] < up.update_info["voxels"]
    ref = pinned_full_pass(seg, xyz, rgb, c0.state.centre)
    assert float((up.state.feats - ref).abs().max()) <= FEAT_TOL


# ---------------------------------------------------------------- device helpers (torch) against numpy
def _clouds(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(old, new) float32 clouds: shuffled overlap with new points, duplicates, signed zeros, huge
    and tiny values, an empty old cloud, all points new, no point new."""
    rng = np.random.default_rng(seed)
    old = rng.normal(scale=3.0, size=(5000, 3)).astype(np.float32)
    old[:4] = [[0.0, 0.0, 0.0], [1e30, -1e-30, 3.0], [1e-42, 7.0, -2.5], [-1.0, 2.0, 3.0]]
    extra = rng.normal(size=(700, 3)).astype(np.float32)
    keep = rng.permutation(old.shape[0])[:4300]
    grown = np.concatenate([old[keep], extra])[rng.permutation(5000)]
    signed = grown.copy()
    signed[:50][signed[:50] == 0.0] = -0.0
    signed[:3] = [[-0.0, -0.0, -0.0], [-1.0, 2.0, 3.0], [-1.0, 2.0, 3.0]]  # -0.0 == 0.0; a duplicate row
    return {"grown": (old, grown), "signed zeros, duplicates": (old, signed), "empty old": (old[:0], grown),
            "all new": (old, extra), "none new": (old, old[::-1].copy()), "one point": (old[:1], old[:1])}


@pytest.mark.parametrize("seed", [0, 1])
def test_point_hashes_torch_equal_numpy_bits(seed) -> None:
    from bqnet_model.pipeline.change_region import point_hashes, point_hashes_torch

    for name, (old, new) in _clouds(seed).items():
        for xyz in (old, new):
            got = point_hashes_torch(torch.from_numpy(xyz)).numpy().view(np.uint64)
            np.testing.assert_array_equal(got, point_hashes(xyz), err_msg=name)
    z = np.array([[0.0, -0.0, 0.0]], np.float32)
    assert point_hashes_torch(torch.from_numpy(z)).item() == point_hashes_torch(torch.from_numpy(np.abs(z))).item()


@pytest.mark.parametrize("seed", [0, 1])
def test_match_points_torch_equals_numpy(seed) -> None:
    from bqnet_model.pipeline.change_region import match_points, match_points_torch, point_hashes, sorted_hashes

    for name, (old, new) in _clouds(seed).items():
        h = point_hashes(old)
        order = np.argsort(h, kind="stable")
        ref = match_points(old, h[order], order, new)
        o = torch.from_numpy(old)
        hs, ho = sorted_hashes(o)
        got = match_points_torch(o, hs, ho, torch.from_numpy(new))
        assert got.dtype == torch.int64 and got.shape == (new.shape[0],)
        np.testing.assert_array_equal(got.numpy(), ref, err_msg=name)
        hit = got >= 0
        assert torch.equal(o[got[hit]], torch.from_numpy(new)[hit]), name  # a match is the same point
    old, new = _clouds(seed)["none new"]
    assert bool((match_points_torch(torch.from_numpy(old), *sorted_hashes(torch.from_numpy(old)),
                                    torch.from_numpy(new)) >= 0).all())


def test_number_by_first_point_torch_equals_numpy() -> None:
    from bqnet_model.pipeline.region_superpoints import number_by_first_point_torch

    rng = np.random.default_rng(0)
    cases = [np.array([7, 7, 2, 9, 2, 7]), np.array([0]), np.array([5, 5, 5]), np.arange(10)[::-1].copy(),
             rng.integers(0, 50, 1000), rng.integers(0, 100_000, 3000), rng.permutation(2000) * 3]
    for lab in cases:
        ref, n_ref = number_by_first_point(lab)
        for bound in (None, int(lab.max()) + 1, int(lab.max()) + 17):
            got, n = number_by_first_point_torch(torch.from_numpy(lab), bound)
            assert n == n_ref
            np.testing.assert_array_equal(got.numpy(), ref)
    got, n = number_by_first_point_torch(torch.zeros(0, dtype=torch.int64))
    assert n == 0 and got.shape == (0,)


def test_merge_superpoints_edge_cases(seg, room) -> None:
    """No point matched (all new): the region is the whole map, so the labels are the map's own
    oversegmentation; every point matched and none near a change: the old labels come back."""
    from bqnet_model.pipeline.region_superpoints import merge_superpoints
    from bqnet_model.superpoints import oversegment_detailed

    c = seg.update(None, room.xyz, room.rgb)
    st = c.state
    xyz, rgb = st.point_xyz, torch.from_numpy(room.rgb[c.point_index])
    m, n_old = xyz.shape[0], c.n_superpoints
    params = seg.inference.superpoints
    far = torch.zeros(m, dtype=torch.bool)
    none = merge_superpoints(st.point_superpoint, n_old, torch.full((m,), -1), far, xyz, rgb, params, st.spacing,
                             None, seg.device)
    own = oversegment_detailed(xyz.numpy(), rgb.numpy(), params=params, device="cpu").labels
    assert none.kept_superpoints == 0 and none.resegmented_points == m
    np.testing.assert_array_equal(none.labels.numpy(), number_by_first_point(own)[0])
    every = merge_superpoints(st.point_superpoint, n_old, torch.arange(m), far, xyz, rgb, params, st.spacing,
                              None, seg.device)
    assert every.kept_superpoints == n_old and every.resegmented_points == 0 and every.n_superpoints == n_old
    np.testing.assert_array_equal(every.labels.numpy(), c.point_superpoint)
    one = torch.arange(m)
    one[5] = -1  # one point without a match: its superpoint is re-segmented
    part = merge_superpoints(st.point_superpoint, n_old, one, far, xyz, rgb, params, st.spacing, None, seg.device)
    assert part.kept_superpoints == n_old - 1
    assert part.resegmented_points == int((c.point_superpoint == c.point_superpoint[5]).sum())


def test_update_of_an_unchanged_map_reuses_everything(seg, room, grown) -> None:
    """The same map again: nothing changed, no backbone run, the cache's labels and features."""
    cache, old = grown
    up = seg.update(cache, room.xyz[old], room.rgb[old])
    info = up.update_info
    assert info["mode"] == "incremental" and info["changed_voxels"] == 0, info
    assert info["run_voxels"] == 0 and info["resegmented_points"] == 0
    np.testing.assert_array_equal(up.point_superpoint, cache.point_superpoint)
    assert torch.equal(up.state.feats, cache.state.feats)
    assert torch.equal(up.scene.sp_feats, cache.scene.sp_feats)


def test_state_lives_on_the_segmenters_device(seg, room, grown) -> None:
    """What the next update reads stays as tensors on the segmenter's device; the timings cover
    every stage of the update (their sum is the total, up to the clock reads between them)."""
    cache, _ = grown
    up = seg.update(cache, room.xyz, room.rgb)
    st = up.state
    for t in (st.point_voxel, st.hash_sorted, st.hash_order, st.point_xyz, st.point_superpoint, st.feats):
        assert isinstance(t, torch.Tensor) and t.device == seg.device
    np.testing.assert_array_equal(st.point_superpoint.numpy(), up.point_superpoint)
    np.testing.assert_array_equal(st.point_xyz.numpy(), up.point_xyz)
    t = up.timings_ms
    stages = ["clean", "diff", "superpoints", "backbone", "splice", "pooling", "fps", "semantic", "state"]
    assert list(t) == stages + ["total"]
    assert sum(t[k] for k in stages) <= t["total"] * 1.001 + 1e-3


def test_update_takes_torch_tensors_as_numpy(seg, room, grown) -> None:
    """``xyz`` / ``rgb`` given as tensors: the same cache as from numpy arrays."""
    cache, _ = grown
    a = seg.update(cache, room.xyz, room.rgb)
    b = seg.update(cache, torch.from_numpy(room.xyz), torch.from_numpy(room.rgb))
    assert b.update_info["mode"] == "incremental"
    np.testing.assert_array_equal(a.point_superpoint, b.point_superpoint)
    np.testing.assert_array_equal(a.sp_order, b.sp_order)
    assert torch.equal(a.scene.sp_feats, b.scene.sp_feats)


def test_clean_torch_takes_tensors_with_the_same_checks() -> None:
    """Tensors go through their own layout checks (a GPU map is not copied through the host): the
    same cleaned cloud and the same errors as numpy input; the host copy never aliases the caller's."""
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(300, 3)).astype(np.float32)
    xyz[7] = xyz[3]
    xyz[9, 1] = np.nan
    rgb = rng.integers(0, 256, (300, 3)).astype(np.uint8)
    a = clean_torch(xyz, rgb)
    t = torch.from_numpy(xyz)
    b = clean_torch(t, torch.from_numpy(rgb))
    assert (a.host.n_duplicates, a.host.n_nonfinite) == (b.host.n_duplicates, b.host.n_nonfinite) == (1, 1)
    for x, y in ((a.host.xyz, b.host.xyz), (a.host.rgb, b.host.rgb), (a.host.index, b.host.index)):
        np.testing.assert_array_equal(x, y)
    src = xyz[:5].copy()  # nothing to drop: without the explicit copy the host cloud would be src itself
    assert not np.shares_memory(clean_torch(torch.from_numpy(src)).host.xyz, src)
    for bad, err in ((torch.zeros(4, 2), "shape"), (torch.zeros(0, 3), "empty"), (torch.zeros(4, 3, dtype=torch.bool), "dtype")):
        with pytest.raises((ValueError, TypeError), match=err):
            clean_torch(bad)
    with pytest.raises(ValueError, match="rows but xyz has"):
        clean_torch(t, torch.from_numpy(rgb[:10]))
