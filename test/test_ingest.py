"""GPU-side map ingest (bqnet_model.ingest) against the numpy path, run here on CPU tensors.

The torch functions must give what ``pointcloud.clean`` / ``inputs.scene_inputs`` /
``collate_scenes`` give: same kept rows in the same order, same voxels in the same order, same
point -> voxel map, features equal up to float rounding, same errors.
"""

from __future__ import annotations

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


def test_voxel_inputs_torch_matches_numpy(room) -> None:
    c = clean(room.xyz, room.rgb)
    # points exactly on voxel boundaries and in a far-away world frame
    grid = (np.indices((6, 6, 6)).reshape(3, -1).T * 0.02).astype(np.float32)
    for xyz in (c.xyz, grid, (c.xyz.astype(np.float64) + [1250.0, -730.0, 3.0]).astype(np.float32)):
        rgb = np.resize(c.rgb, (len(xyz), 3))
        coords, feats, p2v = voxel_inputs(xyz, rgb, 0.02)
        v = voxel_inputs_torch(torch.from_numpy(xyz), torch.from_numpy(rgb), 0.02)
        assert v.coords.dtype == torch.int32 and np.array_equal(v.coords.numpy(), coords)
        assert np.array_equal(v.p2v.numpy(), p2v)
        assert v.feats.dtype == torch.float32 and np.allclose(v.feats.numpy(), feats, rtol=1e-6, atol=1e-6)
        assert v.n_voxels == len(coords) and np.array_equal(v.counts.numpy(), np.bincount(p2v))
        assert v.spatial_shape == tuple(int(t) for t in coords.max(0) + 1)
    # (on the grid, float rounding puts some boundary points into the lower voxel: both paths alike)


def test_voxel_inputs_torch_errors() -> None:
    xyz = torch.tensor([[0.0, 0.0, 0.0], [1e5, 0.0, 0.0]])
    rgb = torch.zeros(2, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="at most"):
        voxel_inputs_torch(xyz, rgb, 0.02)
    with pytest.raises(ValueError, match="positive"):
        voxel_inputs_torch(xyz, rgb, 0.0)
    with pytest.raises(ValueError, match="uint8"):
        voxel_inputs_torch(xyz, rgb.float(), 0.02)


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
