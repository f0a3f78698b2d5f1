"""bqnet_model.thinning: voxel-grid thinning to max_points keeps sparse objects a random subset loses."""

from __future__ import annotations

import numpy as np
import pytest

from bqnet_model.thinning import occupied_cells, thinning_edge, voxel_thin


def _floor_and_object(seed: int = 0) -> tuple[np.ndarray, int]:
    """A densely scanned floor (200k points) and a sparsely scanned object (2k points) on it."""
    rng = np.random.default_rng(seed)
    floor = np.c_[rng.uniform(0, 8, 200_000), rng.uniform(0, 8, 200_000), np.zeros(200_000)]
    obj = np.c_[rng.uniform(3, 4, 2_000), rng.uniform(3, 4, 2_000), rng.uniform(0.2, 1.0, 2_000)]
    return np.r_[floor, obj].astype(np.float32), 200_000


def test_thinning_keeps_at_most_max_points_sorted_and_unique():
    xyz, _ = _floor_and_object()
    for m in (50_000, 5_000, 300):
        keep = voxel_thin(xyz, m)
        assert keep.dtype == np.int64 and 0.5 * m <= keep.size <= m
        assert (np.diff(keep) > 0).all() and keep.max() < len(xyz)


def test_uniform_density_keeps_the_sparse_object():
    """A random 10 % subset keeps ~10 % of the object; the grid keeps far more (it thins the
    dense floor, not the sparse object)."""
    xyz, n_floor = _floor_and_object()
    keep = voxel_thin(xyz, 20_000)
    kept_obj = int((keep >= n_floor).sum())
    random_obj = 2_000 * 20_000 / len(xyz)
    assert kept_obj > 3 * random_obj
    # one point per occupied cell of the chosen edge
    edge = thinning_edge(xyz.astype(np.float64), 20_000)
    assert keep.size == occupied_cells(xyz.astype(np.float64), edge)


def test_small_clouds_and_errors():
    xyz = np.zeros((10, 3), np.float32)
    assert np.array_equal(voxel_thin(xyz, 10), np.arange(10))
    assert voxel_thin(np.zeros((20, 3)), 5).size == 1  # all at one spot: one cell
    with pytest.raises(ValueError, match="max_points"):
        voxel_thin(xyz, 0)
    bad = np.ones((20, 3))
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        voxel_thin(bad, 5)
    with pytest.raises(ValueError, match="shape"):
        voxel_thin(np.zeros((5, 2)), 3)


def test_deterministic_and_order_independent():
    xyz, _ = _floor_and_object(1)
    a = voxel_thin(xyz, 4_000)
    perm = np.random.default_rng(2).permutation(len(xyz))
    b = perm[voxel_thin(xyz[perm], 4_000)]
    assert np.array_equal(np.sort(xyz[a], axis=0), np.sort(xyz[b], axis=0))
