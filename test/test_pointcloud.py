"""clean / random_downsample / colour checks: maps stay consistent and drops are counted (the
voxelization, ``ingest.voxel_inputs_torch``, is tested in test_ingest.py)."""

from __future__ import annotations

import numpy as np
import pytest

from bqnet_model.pointcloud import (
    CleanedCloud,
    clean,
    random_downsample,
    rgb_to_uint8,
)


def _scene(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xyz = rng.uniform([-2, -1, 0], [3, 2, 2.5], size=(n, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(n, 3), dtype=np.uint8)
    return xyz, rgb


# ---------------------------------------------------------------- clean


def test_clean_drops_nonfinite_and_duplicates_with_counts() -> None:
    xyz, rgb = _scene(100)
    xyz = np.vstack([xyz, xyz[[5, 7, 5]]])  # rows 100, 101, 102 duplicate 5, 7, 5
    rgb = np.vstack([rgb, np.full((3, 3), 9, np.uint8)])
    xyz[[3, 50]] = [[np.nan, 0, 0], [0, np.inf, 1]]
    xyz[60, 2] = -np.inf
    out = clean(xyz, rgb)
    assert isinstance(out, CleanedCloud)
    assert (out.n_input, out.n_nonfinite, out.n_duplicates, out.n_downsampled) == (103, 3, 3, 0)
    expected = np.setdiff1d(np.arange(100), [3, 50, 60])
    np.testing.assert_array_equal(out.index, expected)  # first occurrences kept, input order kept
    assert out.index.dtype == np.int64 and out.xyz.dtype == np.float32 and out.rgb.dtype == np.uint8
    np.testing.assert_array_equal(out.xyz, xyz[out.index])
    np.testing.assert_array_equal(out.rgb, rgb[out.index])  # the first copy's colour, not 9
    assert "3 non-finite" in out.summary() and "3 duplicates" in out.summary()


def test_clean_duplicate_keeps_first_even_when_later_copy_comes_first_in_sort() -> None:
    xyz = np.array([[1, 1, 1], [0, 0, 0], [1, 1, 1], [-0.0, 0, 0], [0, 0, 1]], np.float32)
    out = clean(xyz)
    np.testing.assert_array_equal(out.index, [0, 1, 4])  # -0.0 equals 0.0
    assert out.n_duplicates == 2
    kept = clean(xyz, dedup=False)
    assert kept.n_points == 5 and kept.n_duplicates == 0


def test_clean_float_rgb_converted_and_nonfinite_rgb_dropped() -> None:
    xyz = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0]], np.float64)
    rgb = np.array([[0.0, 0.5, 1.0], [np.nan, 0, 0], [1.0, 0.2, 0.0]])
    out = clean(xyz, rgb)
    np.testing.assert_array_equal(out.index, [0, 2])
    assert out.n_nonfinite == 1
    np.testing.assert_array_equal(out.rgb, [[0, 128, 255], [255, 51, 0]])
    assert out.xyz.dtype == np.float32


def test_clean_float64_overflowing_float32_counts_as_nonfinite() -> None:
    xyz = np.array([[0, 0, 0], [1e39, 0, 0], [1, 2, 3]], np.float64)
    out = clean(xyz)
    assert out.n_nonfinite == 1 and out.index.tolist() == [0, 2]


def test_clean_thins_deterministically() -> None:
    """Above max_points: a voxel grid (bqnet_model.thinning), at most max_points, at least 90 % of it,
    the same points on every run and whatever the order of the cloud."""
    xyz, rgb = _scene(500)
    a = clean(xyz, rgb, max_points=120)
    b = clean(xyz[::-1].copy(), rgb[::-1].copy(), max_points=120)  # the same cloud in another order
    assert 108 <= a.n_points <= 120 and a.n_downsampled == 500 - a.n_points
    np.testing.assert_array_equal(np.sort(500 - 1 - b.index), a.index)
    assert np.all(np.diff(a.index) > 0)
    np.testing.assert_array_equal(a.xyz, xyz[a.index])
    np.testing.assert_array_equal(a.rgb, rgb[a.index])
    full = clean(xyz, max_points=10_000)
    assert full.n_points == 500 and full.n_downsampled == 0


def test_clean_does_not_alias_input() -> None:
    xyz, rgb = _scene(10)
    out = clean(xyz, rgb)
    out.xyz[0] = 99
    out.rgb[0] = 1
    assert xyz[0, 0] != 99 and not (rgb[0] == 1).all()


def test_clean_errors() -> None:
    xyz, rgb = _scene(10)
    with pytest.raises(ValueError, match="empty"):
        clean(np.zeros((0, 3), np.float32))
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        clean(xyz[:, :2])
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        clean(xyz.reshape(-1))
    with pytest.raises(ValueError, match="rgb has 9 rows but xyz has 10"):
        clean(xyz, rgb[:9])
    with pytest.raises(ValueError, match="rgb must have shape"):
        clean(xyz, rgb[:, :2])
    with pytest.raises(ValueError, match=r"all 2 points are non-finite"):
        clean(np.array([[np.nan, 0, 0], [0, np.inf, 0]]))
    with pytest.raises(ValueError, match=r"float rgb must be in \[0, 1\]"):
        clean(xyz, rgb.astype(np.float32))
    with pytest.raises(ValueError, match="integer rgb must be in 0..255"):
        clean(xyz, rgb.astype(np.int32) * 2)
    with pytest.raises(TypeError, match="dtype bool"):
        clean(np.ones((4, 3), bool))
    with pytest.raises(ValueError, match="max_points"):
        clean(xyz, max_points=0)


def test_random_downsample() -> None:
    np.testing.assert_array_equal(random_downsample(5, 10), np.arange(5))
    idx = random_downsample(1000, 100, seed=7)
    assert idx.dtype == np.int64 and len(np.unique(idx)) == 100 and idx.max() < 1000
    np.testing.assert_array_equal(idx, random_downsample(1000, 100, seed=7))
    with pytest.raises(ValueError, match="max_points"):
        random_downsample(10, -1)
    with pytest.raises(ValueError, match="n_points"):
        random_downsample(-1, 3)


def test_rgb_to_uint8_integer_types() -> None:
    np.testing.assert_array_equal(rgb_to_uint8(np.array([[0, 128, 255]], np.int64)), [[0, 128, 255]])
    with pytest.raises(TypeError):
        rgb_to_uint8(np.array([["a", "b", "c"]]))


def test_clean_accepts_strided_views_and_lists() -> None:
    xyz, rgb = _scene(50, seed=3)
    wide = np.concatenate([xyz, xyz[:, :1] * 0], axis=1)  # (N, 4): xyz is a strided view below
    wide = np.vstack([wide, wide[:2]])
    out = clean(wide[:, :3], np.vstack([rgb, rgb[:2]]))
    assert out.n_duplicates == 2 and out.n_points == 50
    np.testing.assert_array_equal(out.xyz, xyz)
    listed = clean(xyz.tolist())
    np.testing.assert_array_equal(listed.xyz, xyz)
