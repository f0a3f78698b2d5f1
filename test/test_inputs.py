"""Model inputs: per-scene voxelization/features and the batch dict of docs/architecture.md."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bqnet_synth import minimal_room
from bqnet_model.model.inputs import (
    MIN_SPATIAL_SHAPE,
    SceneInputs,
    collate_scenes,
    dense_labels,
    scene_inputs,
    superpoint_targets,
)


def _tiny_scene(seed: int, n: int = 400, extent: float = 1.0):
    rng = np.random.default_rng(seed)
    xyz = (rng.random((n, 3)) * extent - 0.3).astype(np.float32)
    rgb = rng.integers(0, 256, (n, 3)).astype(np.uint8)
    sp = (np.floor(xyz[:, 0] * 4) - np.floor(xyz[:, 0] * 4).min()).astype(np.int64)  # slabs along x
    return xyz, rgb, sp


def test_scene_inputs_features_are_voxel_means():
    xyz = np.array([[0.001, 0.001, 0.001], [0.015, 0.005, 0.002], [0.05, 0.0, 0.0]], np.float32)
    rgb = np.array([[0, 0, 0], [255, 255, 255], [127, 0, 255]], np.uint8)
    sp = np.array([3, 3, 7])
    s = scene_inputs(xyz, rgb, sp, voxel_size=0.02)
    assert s.coords.dtype == np.int32 and s.coords.min() >= 0
    assert s.n_voxels == 2 and s.n_points == 3
    assert s.p2v[0] == s.p2v[1] != s.p2v[2]
    # voxel of the first two points: mean of rgb/127.5-1 and mean of xyz
    f = s.feats[s.p2v[0]]
    np.testing.assert_allclose(f[:3], [0.0, 0.0, 0.0], atol=1e-6)  # (-1 + 1) / 2
    c = xyz.astype(np.float64).mean(0)  # xyz features are centred on the scene's point mean
    np.testing.assert_allclose(f[3:], (xyz[0] + xyz[1]) / 2 - c, atol=1e-7)
    f2 = s.feats[s.p2v[2]]
    np.testing.assert_allclose(f2, np.r_[[127 / 127.5 - 1, -1, 1], xyz[2] - c], atol=1e-6)
    # translating the scene changes neither features nor voxels
    t = scene_inputs(xyz + np.float32([10.0, -3.0, 2.0]), rgb, sp)
    np.testing.assert_allclose(t.feats, s.feats, atol=1e-5)
    np.testing.assert_array_equal(t.coords, s.coords)
    # superpoints made dense, order kept
    np.testing.assert_array_equal(s.superpoints, [0, 0, 1])
    assert s.n_superpoints == 2
    # coords = floor((xyz - min) / voxel)
    np.testing.assert_array_equal(s.coords[s.p2v[2]], [2, 0, 0])


def test_scene_inputs_scale_follows_voxel_size():
    xyz, rgb, sp = _tiny_scene(0)
    a = scene_inputs(xyz, rgb, sp, voxel_size=0.02)
    b = scene_inputs(xyz, rgb, sp, voxel_size=0.1)
    assert a.n_voxels > b.n_voxels
    assert max(b.spatial_shape) <= 10 + 1
    # every point's voxel contains it
    lo = xyz.min(0)
    np.testing.assert_array_equal(np.floor((xyz.astype(np.float64) - lo) / 0.1).astype(int), b.coords[b.p2v])


def test_dense_labels_identity_on_dense_and_compacts_gaps():
    d, n = dense_labels(np.array([0, 2, 1, 2]))
    np.testing.assert_array_equal(d, [0, 2, 1, 2])
    assert n == 3
    d, n = dense_labels(np.array([5, 9, 5, 40]))
    np.testing.assert_array_equal(d, [0, 1, 0, 2])
    assert n == 3


def test_superpoint_targets_majority_vote():
    sp = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    mask = np.array([1, 1, 0, 1, 0, 1, 0, 0, 0], bool)
    # sp0: 2/3 -> target; sp1: 1/2 (tie) -> not; sp2: 1/4 -> not
    t = superpoint_targets(sp, mask)
    assert t.dtype == np.float32
    np.testing.assert_array_equal(t, [1, 0, 0])
    np.testing.assert_array_equal(superpoint_targets(sp, np.ones(9, bool)), [1, 1, 1])
    with pytest.raises(ValueError, match="point_mask"):
        superpoint_targets(sp, mask[:-1])
    with pytest.raises(ValueError, match="non-negative"):
        superpoint_targets(np.array([-1, 0]), np.array([1, 0]))


def test_collate_two_scenes_matches_architecture():
    s0 = scene_inputs(*_tiny_scene(0, 300))
    s1 = scene_inputs(*_tiny_scene(1, 200, extent=4.0))  # spans > 128 voxels along each axis
    texts = ["a", "b", "c"]
    ts = [0, 1, 1]
    gsp = [superpoint_targets(s0.superpoints, s0.superpoints == 0),
           superpoint_targets(s1.superpoints, s1.superpoints == 1),
           superpoint_targets(s1.superpoints, s1.superpoints >= 0)]
    gpt = [s0.superpoints == 0, s1.superpoints == 1, np.ones(200, bool)]
    meta = [{"scene_id": "s0", "ann_id": 0}, {"scene_id": "s1", "ann_id": 0}, {"scene_id": "s1", "ann_id": 1}]
    b = collate_scenes([s0, s1], texts, ts, gsp, gpt, meta)
    expected_keys = {"coords", "feats", "spatial_shape", "batch_size", "p2v", "point_xyz", "superpoints",
                     "sp_offsets", "point_offsets", "texts", "text_scene", "gt_sp_masks", "gt_point_masks", "meta",
                     "sp_semantic"}
    assert set(b) == expected_keys
    V, N = s0.n_voxels + s1.n_voxels, 500
    assert b["coords"].dtype == torch.int32 and b["coords"].shape == (V, 4)
    assert b["feats"].dtype == torch.float32 and b["feats"].shape == (V, 6)
    assert b["batch_size"] == 2
    assert b["coords"][:s0.n_voxels, 0].eq(0).all() and b["coords"][s0.n_voxels:, 0].eq(1).all()
    assert b["p2v"].dtype == torch.int64 and b["p2v"].shape == (N,)
    # p2v points at the right voxel rows: the voxel's coords contain the point
    np.testing.assert_array_equal(b["coords"][b["p2v"][300:], 1:].numpy(), s1.coords[s1.p2v])
    assert b["sp_offsets"].tolist() == [0, s0.n_superpoints, s0.n_superpoints + s1.n_superpoints]
    assert b["point_offsets"].tolist() == [0, 300, 500]
    sp = b["superpoints"]
    assert sp.dtype == torch.int64
    assert sp[:300].max() < b["sp_offsets"][1] and sp[300:].min() >= b["sp_offsets"][1]
    np.testing.assert_array_equal(sp[300:].numpy() - s0.n_superpoints, s1.superpoints)
    ss = b["spatial_shape"]
    assert isinstance(ss, list) and len(ss) == 3 and all(isinstance(v, int) for v in ss)
    exp = np.maximum(np.maximum(s0.spatial_shape, s1.spatial_shape), MIN_SPATIAL_SHAPE)
    assert ss == exp.tolist() and max(ss) > MIN_SPATIAL_SHAPE
    assert b["coords"][:, 1:].max(0).values.add(1).le(torch.tensor(ss)).all()
    assert b["text_scene"].dtype == torch.int64 and b["text_scene"].tolist() == ts
    assert b["texts"] == texts and b["meta"][2]["ann_id"] == 1
    assert [m.dtype for m in b["gt_sp_masks"]] == [torch.float32] * 3
    assert b["gt_sp_masks"][1].shape == (s1.n_superpoints,)
    assert [m.dtype for m in b["gt_point_masks"]] == [torch.bool] * 3
    assert b["gt_point_masks"][0].shape == (300,)
    torch.testing.assert_close(b["point_xyz"][:300], torch.from_numpy(s0.xyz))


def test_collate_scene_only_batch_clamps_small_scenes():
    s = scene_inputs(*_tiny_scene(2, 100, extent=0.5))
    b = collate_scenes([s])
    assert b["spatial_shape"] == [MIN_SPATIAL_SHAPE] * 3
    assert b["texts"] == [] and b["text_scene"].numel() == 0
    assert b["gt_sp_masks"] is None and b["gt_point_masks"] is None and b["meta"] is None and b["sp_semantic"] is None
    # one scene: text_scene may be omitted
    b = collate_scenes([s], ["x", "y"])
    assert b["text_scene"].tolist() == [0, 0]


def test_minimal_room_inputs():
    room = minimal_room(n_points=8000, seed=0)
    sp = room.instance.astype(np.int64)  # instances stand in for superpoints here
    s = scene_inputs(room.xyz, room.rgb, sp)
    assert isinstance(s, SceneInputs)
    assert s.n_superpoints == len(room.objects)
    assert np.isfinite(s.feats).all() and s.feats[:, :3].min() >= -1 and s.feats[:, :3].max() <= 1
    # 5 x 4 x 2.5 m room at 2 cm -> about 250 x 200 x 125 voxels
    assert 245 <= s.spatial_shape[0] <= 260 and 195 <= s.spatial_shape[1] <= 210
    chair = room.instance == 6
    t = superpoint_targets(s.superpoints, chair)
    assert t.sum() == 1 and t[6] == 1


def test_bad_inputs_raise_clear_errors():
    xyz, rgb, sp = _tiny_scene(3, 50)
    with pytest.raises(ValueError, match="shape"):
        scene_inputs(xyz[:, :2], rgb, sp)
    with pytest.raises(ValueError, match="rows"):
        scene_inputs(xyz, rgb[:10], sp)
    with pytest.raises(ValueError, match="superpoints"):
        scene_inputs(xyz, rgb, sp[:10])
    with pytest.raises(TypeError, match="integer"):
        scene_inputs(xyz, rgb, sp.astype(np.float32))
    bad = xyz.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        scene_inputs(bad, rgb, sp)
    with pytest.raises(ValueError, match="voxel_size"):
        scene_inputs(xyz, rgb, sp, voxel_size=0.0)
    s = scene_inputs(xyz, rgb, sp)
    with pytest.raises(ValueError, match="empty"):
        collate_scenes([])
    with pytest.raises(TypeError, match="SceneInputs"):
        collate_scenes([xyz])
    with pytest.raises(ValueError, match="text_scene"):
        collate_scenes([s, s], ["a"], [2])
    with pytest.raises(ValueError, match="text_scene is required"):
        collate_scenes([s, s], ["a"])
    with pytest.raises(ValueError, match="gt_sp_masks"):
        collate_scenes([s], ["a"], [0], gt_sp_masks=[np.zeros(s.n_superpoints + 1)])
    with pytest.raises(ValueError, match="gt_point_masks"):
        collate_scenes([s], ["a"], [0], gt_point_masks=[np.zeros(3, bool)])
    with pytest.raises(ValueError, match="meta"):
        collate_scenes([s], ["a"], [0], meta=[{}, {}])
    with pytest.raises(TypeError, match="one string"):
        collate_scenes([s], "abc")
