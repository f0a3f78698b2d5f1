"""Map ingest (bqnet_model.ingest), run here on CPU tensors.

``clean_torch`` must give what ``pointcloud.clean`` gives (same kept rows in the same order, same
errors). ``voxel_inputs_torch``, the one voxelization, is checked against a reference written in
the test (numpy floor + unique + bincount), by hand cases, and against the training data set: a
training scene's voxels are the inference ingest's for the same points.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bqnet_synth import minimal_room
from bqnet_model.ingest import GREY, clean_torch, voxel_inputs_torch
from bqnet_model.model.inputs import (
    collate_scenes,
    dense_labels,
    scene_inputs,
    set_batch_superpoints,
    single_scene_batch,
    voxel_inputs,
)
from bqnet_model.pointcloud import clean

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def room():
    return minimal_room(4000, seed=1)


def messy_cloud(room, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The room plus NaN/Inf rows, exact duplicates (one via -0.0 == 0.0), shuffled."""
    rng = np.random.default_rng(seed)
    xyz = room.xyz.astype(np.float32).copy()
    rgb = room.rgb.copy()
    zero = np.array([[0.0, 1.0, 2.0]], np.float32)
    negzero = np.array([[-0.0, 1.0, 2.0]], np.float32)
    extra = np.concatenate([
        np.array([[np.nan, 0, 0], [0, np.inf, 0], [0, 0, -np.inf]], np.float32),
        xyz[rng.integers(0, len(xyz), 50)],  # duplicates of real rows
        zero, negzero, zero,
    ])
    xyz = np.concatenate([xyz, extra])
    rgb = np.concatenate([rgb, rng.integers(0, 256, (len(extra), 3)).astype(np.uint8)])
    perm = rng.permutation(len(xyz))
    return xyz[perm], rgb[perm]


def assert_same_clean(a, b) -> None:
    assert np.array_equal(a.index, b.index)
    assert a.xyz.dtype == b.xyz.dtype == np.float32 and np.array_equal(a.xyz, b.xyz)
    if a.rgb is None:
        assert b.rgb is None
    else:
        assert b.rgb.dtype == np.uint8 and np.array_equal(a.rgb, b.rgb)
    assert (a.n_input, a.n_nonfinite, a.n_duplicates, a.n_downsampled) == \
           (b.n_input, b.n_nonfinite, b.n_duplicates, b.n_downsampled)


@pytest.mark.parametrize("max_points", [None, 1000, 10**6])
@pytest.mark.parametrize("dedup", [True, False])
def test_clean_torch_matches_numpy(room, max_points, dedup) -> None:
    xyz, rgb = messy_cloud(room)
    want = clean(xyz, rgb, max_points=max_points, dedup=dedup)
    got = clean_torch(xyz, rgb, max_points=max_points, dedup=dedup, device="cpu")
    assert_same_clean(want, got.host)
    assert want.n_nonfinite == 3 and (want.n_duplicates > 50 if dedup else want.n_duplicates == 0)
    assert torch.equal(got.xyz, torch.from_numpy(want.xyz)) and torch.equal(got.index, torch.from_numpy(want.index))
    assert torch.equal(got.rgb, torch.from_numpy(want.rgb))


def test_clean_torch_input_types(room) -> None:
    xyz, rgb = messy_cloud(room, seed=1)
    # float64 xyz (values beyond float32 range become non-finite), float and integer rgb, no rgb
    xyz64 = xyz.astype(np.float64)
    xyz64[7] = [1e39, 0.0, 0.0]
    rgbf = rgb.astype(np.float64) / 255.0
    rgbf[11] = [np.nan, 0.5, 0.5]
    ints = np.round(room.xyz * 100).astype(np.int32)  # integer xyz (centimetres)
    for x, c in ((xyz64, rgbf), (xyz, rgb.astype(np.int64)), (xyz, None), (ints, room.rgb)):
        want = clean(x, c, max_points=2000)
        got = clean_torch(x, c, max_points=2000, device="cpu")
        assert_same_clean(want, got.host)
        if c is None:
            assert got.host.rgb is None and bool((got.rgb == GREY).all())


def test_clean_torch_never_aliases_the_callers_arrays(room) -> None:
    xyz = room.xyz.astype(np.float32).copy()
    rgb = room.rgb.copy()
    got = clean_torch(xyz, rgb, dedup=False, device="cpu").host
    assert not np.shares_memory(got.xyz, xyz) and not np.shares_memory(got.rgb, rgb)


@pytest.mark.parametrize(
    "xyz, rgb, exc, match",
    [
        (np.full((4, 3), np.nan, np.float32), None, ValueError, "non-finite"),
        (np.zeros((4, 2), np.float32), None, ValueError, r"shape \(N, 3\)"),
        (np.zeros((0, 3), np.float32), None, ValueError, "empty"),
        (np.zeros((4, 3), np.float32), np.zeros((3, 3), np.uint8), ValueError, "rows"),
        (np.zeros((4, 3), np.float32), np.full((4, 3), 2.0), ValueError, r"\[0, 1\]"),
        (np.zeros((4, 3), np.float32), np.full((4, 3), 300), ValueError, "0..255"),
        (np.zeros((4, 3), np.float32), np.zeros((4, 3), bool), TypeError, "dtype"),
        (np.array([["a", "b", "c"]]), None, TypeError, "dtype"),
    ],
)
def test_clean_torch_errors_like_numpy(xyz, rgb, exc, match) -> None:
    with pytest.raises(exc, match=match):
        clean(xyz, rgb)
    with pytest.raises(exc, match=match):
        clean_torch(xyz, rgb, device="cpu")


def _reference_voxels(xyz: np.ndarray, rgb: np.ndarray, vs: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The voxelization written out in numpy, as the oracle: floor((xyz - min) / vs) in float64,
    voxels in lexicographic order, per-voxel means of [rgb / 127.5 - 1, xyz - mean]."""
    pts = xyz.astype(np.float64)
    q = np.floor((pts - pts.min(0)) / vs).astype(np.int64)
    coords, p2v = np.unique(q, axis=0, return_inverse=True)
    p2v = p2v.reshape(-1)
    point = np.concatenate([rgb.astype(np.float32) / 127.5 - 1.0, (pts - pts.mean(0)).astype(np.float32)], axis=1)
    sums = np.stack([np.bincount(p2v, weights=point[:, c].astype(np.float64)) for c in range(6)], axis=1)
    return coords.astype(np.int32), (sums / np.bincount(p2v)[:, None]).astype(np.float32), p2v


def test_voxel_inputs_torch_matches_a_reference(room) -> None:
    c = clean(room.xyz, room.rgb)
    # points exactly on voxel boundaries and in a far-away world frame
    grid = (np.indices((6, 6, 6)).reshape(3, -1).T * 0.02).astype(np.float32)
    for xyz in (c.xyz, grid, (c.xyz.astype(np.float64) + [1250.0, -730.0, 3.0]).astype(np.float32)):
        rgb = np.resize(c.rgb, (len(xyz), 3))
        coords, feats, p2v = _reference_voxels(xyz, rgb, 0.02)
        v = voxel_inputs_torch(torch.from_numpy(xyz), torch.from_numpy(rgb), 0.02)
        assert v.coords.dtype == torch.int32 and np.array_equal(v.coords.numpy(), coords)
        assert np.array_equal(v.p2v.numpy(), p2v)
        assert v.feats.dtype == torch.float32 and np.allclose(v.feats.numpy(), feats, rtol=1e-6, atol=1e-6)
        assert v.n_voxels == len(coords) and np.array_equal(v.counts.numpy(), np.bincount(p2v))
        assert v.spatial_shape == tuple(int(t) for t in coords.max(0) + 1)
        # the numpy adapter of training (inputs.voxel_inputs) returns the same arrays
        a_coords, a_feats, a_p2v = voxel_inputs(xyz, rgb, 0.02)
        assert np.array_equal(a_coords, v.coords.numpy()) and np.array_equal(a_feats, v.feats.numpy())
        assert np.array_equal(a_p2v, v.p2v.numpy())
    # (on the grid, float rounding puts some boundary points into the lower voxel: both alike)


def test_voxel_maps_consistent_and_independent_of_point_order() -> None:
    rng = np.random.default_rng(1)
    xyz = rng.uniform([-2, -1, 0], [3, 2, 2.5], size=(2000, 3)).astype(np.float32)
    rgb = torch.zeros(2000, 3, dtype=torch.uint8)
    vs = 0.1
    v = voxel_inputs_torch(torch.from_numpy(xyz), rgb, vs)
    coords, p2v, counts = v.coords.numpy(), v.p2v.numpy(), v.counts.numpy()
    assert coords.min() >= 0 and min(coords.min(axis=0)) == 0 and p2v.shape == (2000,)
    assert counts.sum() == 2000 and (counts > 0).all()
    np.testing.assert_array_equal(counts, np.bincount(p2v, minlength=v.n_voxels))
    assert v.origin.dtype == torch.float64
    np.testing.assert_allclose(v.origin.numpy(), xyz.min(axis=0).astype(np.float64))
    lo = v.origin.numpy() + coords[p2v] * vs  # every point lies inside its voxel
    p = xyz.astype(np.float64)
    assert (p >= lo - 1e-9).all() and (p < lo + vs + 1e-9).all()
    c = coords.astype(np.int64)  # voxels are unique and in lexicographic order
    assert np.all(np.diff(c[:, 0] * 10**8 + c[:, 1] * 10**4 + c[:, 2]) > 0)
    perm = np.random.default_rng(0).permutation(2000)
    w = voxel_inputs_torch(torch.from_numpy(xyz[perm]), rgb, vs)
    np.testing.assert_array_equal(w.coords.numpy(), coords)
    np.testing.assert_array_equal(p2v[perm], w.p2v.numpy())


def test_voxel_means_hand_case_and_augmentation_hooks() -> None:
    xyz = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [1.5, 0.2, 0.0], [0.9, 0.1, 0.1], [1.1, 1.9, 0.0]])
    rgb = torch.tensor([[0, 0, 0], [255, 255, 255], [51, 102, 153], [0, 255, 0], [255, 0, 0]], dtype=torch.uint8)
    v = voxel_inputs_torch(xyz, rgb, 1.0)
    np.testing.assert_array_equal(v.coords.numpy(), [[0, 0, 0], [1, 0, 0], [1, 1, 0]])
    np.testing.assert_array_equal(v.p2v.numpy(), [0, 0, 1, 0, 2])
    np.testing.assert_array_equal(v.counts.numpy(), [3, 1, 1])
    colour = rgb.double() / 127.5 - 1.0
    centred = xyz.double() - xyz.double().mean(0)
    for k, rows in enumerate(([0, 1, 3], [2], [4])):
        want = torch.cat([colour[rows].mean(0), centred[rows].mean(0)])
        torch.testing.assert_close(v.feats[k].double(), want, atol=1e-6, rtol=0)
    # grid_xyz decides the voxels (here all points in one), the features still come from xyz;
    # rgb_shift moves every colour channel by its value
    shift = torch.tensor([0.1, -0.2, 0.3])
    g = voxel_inputs_torch(xyz, rgb, 1.0, grid_xyz=xyz * 0.1, rgb_shift=shift)
    assert g.n_voxels == 1 and g.counts.tolist() == [5]
    torch.testing.assert_close(g.feats[0].double(), torch.cat([colour.mean(0) + shift.double(), centred.mean(0)]),
                               atol=1e-6, rtol=0)


def test_training_scene_voxels_equal_the_inference_ingest(tmp_path) -> None:
    """A room through the training data set (no augmentation) and the same points through the
    ingest ``Segmenter.prepare`` runs: the same voxels, point -> voxel map and features, exactly
    (one implementation; on CUDA the features would match up to the float64 sums' order)."""
    from bqnet_model.data.dataset import ReferDataset
    from conftest import save_grid_room

    room = minimal_room(3000, seed=4)
    names = save_grid_room(tmp_path, "room00", room)
    ann = tmp_path / "scanrefer_train.json"
    ann.write_text(json.dumps([{"scene_id": "room00", "object_id": "6", "object_name": str(names[6]), "ann_id": "0",
                                "description": "the red chair"}]))
    item = ReferDataset(tmp_path, ann, "train", "res", augment=False, lang_per_scene=1)[0]
    assert np.array_equal(item.inputs.xyz, room.xyz[item.point_index].astype(np.float32))
    rgb = np.ascontiguousarray(room.rgb[item.point_index])
    v = voxel_inputs_torch(torch.from_numpy(item.inputs.xyz), torch.from_numpy(rgb), item.inputs.voxel_size)
    assert np.array_equal(item.inputs.coords, v.coords.numpy()) and np.array_equal(item.inputs.p2v, v.p2v.numpy())
    assert np.array_equal(item.inputs.feats, v.feats.numpy())


def test_voxel_inputs_torch_errors() -> None:
    xyz = torch.tensor([[0.0, 0.0, 0.0], [1e5, 0.0, 0.0]])
    rgb = torch.zeros(2, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="at most"):
        voxel_inputs_torch(xyz, rgb, 0.02)
    with pytest.raises(ValueError, match="positive"):
        voxel_inputs_torch(xyz, rgb, 0.0)
    with pytest.raises(ValueError, match="uint8"):
        voxel_inputs_torch(xyz, rgb.float(), 0.02)
    with pytest.raises(ValueError, match="voxel_size must be a positive"):
        voxel_inputs_torch(xyz, rgb, float("nan"))
    with pytest.raises(TypeError, match="voxel_size must be a number"):
        voxel_inputs_torch(xyz, rgb, "2cm")
    with pytest.raises(ValueError, match="N > 0"):
        voxel_inputs_torch(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.uint8), 0.02)
    with pytest.raises(ValueError, match="grid_xyz"):
        voxel_inputs_torch(xyz, rgb, 0.02, grid_xyz=xyz[:1])
    with pytest.raises(ValueError, match="rgb_shift"):
        voxel_inputs_torch(xyz, rgb, 0.02, rgb_shift=torch.zeros(2))


def test_single_scene_batch_equals_collate(room) -> None:
    c = clean(room.xyz, room.rgb)
    sp = np.floor((c.xyz[:, 0] - c.xyz[:, 0].min()) / 0.5).astype(np.int64) * 7 + 3  # not dense: re-densified
    want = collate_scenes([scene_inputs(c.xyz, c.rgb, sp, 0.02)])
    dense, n_sp = dense_labels(sp)
    coords, feats, p2v = voxel_inputs(c.xyz, c.rgb, 0.02)
    v = voxel_inputs_torch(torch.from_numpy(c.xyz), torch.from_numpy(c.rgb), 0.02)
    b_np = single_scene_batch(coords, feats, p2v, c.xyz, dense, n_sp)
    b_t = set_batch_superpoints(single_scene_batch(v.coords, v.feats, v.p2v, torch.from_numpy(c.xyz)), dense, n_sp)
    for got in (b_np, b_t):
        assert set(got) == set(want)
        for k, w in want.items():
            g = got[k]
            if isinstance(w, torch.Tensor):
                assert g.dtype == w.dtype and g.shape == w.shape, k
                assert (torch.allclose(g, w, atol=1e-6) if w.is_floating_point() else torch.equal(g, w)), k
            else:
                assert g == w, k


def test_dense_labels_fast_path_equals_unique() -> None:
    rng = np.random.default_rng(0)
    dense = rng.permutation(np.repeat(np.arange(50), 3))
    gaps = dense * 2  # not dense
    huge = dense.astype(np.int64) * 10**12
    for labels in (dense, gaps, huge, dense.astype(np.int32), dense.astype(np.uint16)):
        got, n = dense_labels(labels)
        _, inv = np.unique(labels, return_inverse=True)
        assert n == 50 and got.dtype == np.int64 and np.array_equal(got, inv.ravel())
        assert not np.shares_memory(got, labels)
    with pytest.raises(ValueError, match="non-negative"):
        dense_labels(np.array([0, -1]))
