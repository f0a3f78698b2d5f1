"""Online superpoints (csrc/superpoints.cpp via bqnet_model.superpoints): correctness and bad input."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch

from bqnet_model.data.synthetic import minimal_room
from bqnet_model.superpoints import (
    SuperpointParams,
    achievable_segmentation_accuracy,
    oversegment,
    oversegment_detailed,
)

torch.set_num_threads(2)
N_ROOM = 80_000


@pytest.fixture(scope="module")
def room():
    return minimal_room(N_ROOM, seed=3)


@pytest.fixture(scope="module")
def room_result(room):
    return oversegment_detailed(room.xyz, room.rgb, num_threads=2)


def _plane_with_box(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 1 x 1 m floor with a 0.3 m cube standing on it: two instances meeting at a 90 degree edge."""
    rng = np.random.default_rng(seed)
    floor = np.c_[rng.random((20_000, 2)), np.zeros(20_000)]
    floor = floor[~((floor[:, 0] > 0.35) & (floor[:, 0] < 0.65) & (floor[:, 1] > 0.35) & (floor[:, 1] < 0.65))]
    face = rng.integers(0, 5, 6000)
    cube = rng.random((6000, 3)) * 0.3
    axis = np.minimum(face // 2, 2)
    cube[np.arange(6000), axis] = np.where((face % 2 == 1) | (face == 4), 0.3, 0.0)
    cube += [0.35, 0.35, 0.0]
    xyz = np.concatenate([floor, cube]).astype(np.float32)
    xyz += rng.normal(0, 0.002, xyz.shape).astype(np.float32)
    inst = np.r_[np.zeros(len(floor), np.int64), np.ones(len(cube), np.int64)]
    return xyz, inst


def test_labels_dense_one_per_point(room, room_result):
    lab = room_result.labels
    assert lab.shape == (len(room.xyz),) and lab.dtype == np.int64
    s = lab.max() + 1
    assert lab.min() == 0 and s == room_result.num_superpoints
    assert np.array_equal(np.unique(lab), np.arange(s))  # every id in 0..S-1 is used


def test_quality_on_minimal_room(room, room_result):
    asa = achievable_segmentation_accuracy(room_result.labels, room.instance)
    assert asa >= 0.95, asa
    # A 5 x 4 m room: more superpoints than objects (10), far fewer than voxels.
    assert 100 <= room_result.num_superpoints <= 3000, room_result.num_superpoints
    sizes = np.bincount(room_result.labels)
    assert np.median(sizes) >= 20  # not a scatter of single voxels


def test_points_of_one_voxel_share_a_label(room, room_result):
    p2v = room_result.point_to_voxel
    assert p2v.min() == 0 and p2v.max() + 1 == room_result.num_voxels
    first = np.full(room_result.num_voxels, -1, np.int64)
    first[p2v[::-1]] = room_result.labels[::-1]  # the label of some point of each voxel
    assert np.array_equal(first[p2v], room_result.labels)
    # voxel ids agree with a 2 cm grid anchored at the cloud minimum
    cells = np.floor((room.xyz.astype(np.float64) - room.xyz.min(0)) / 0.02).astype(np.int64)
    _, grid_ids = np.unique(cells, axis=0, return_inverse=True)
    assert len(np.unique(grid_ids)) == room_result.num_voxels
    pairs = np.unique(np.c_[grid_ids.ravel(), p2v], axis=0)
    assert len(pairs) == room_result.num_voxels  # a one-to-one map between the two numberings


def test_deterministic_across_runs_and_threads(room, room_result):
    again = oversegment(room.xyz, room.rgb, num_threads=2)
    one = oversegment(room.xyz, room.rgb, num_threads=1)
    three = oversegment(room.xyz, room.rgb, num_threads=3)
    assert np.array_equal(again, room_result.labels)
    assert np.array_equal(one, room_result.labels)
    assert np.array_equal(three, room_result.labels)


def test_releases_the_gil_and_stays_deterministic_in_a_thread(room, room_result):
    """The C++ call runs without the GIL (Segmenter.prepare overlaps it with the backbone).

    No clock involved: with a 100 s switch interval Python never takes the GIL from a running
    thread, so this thread, woken by the worker right before it enters C++, can only run again
    while the call is still in progress if the call released the GIL; holding it, the worker would
    keep it until after the call returned. Labels are those of a direct call."""
    import sys
    import threading

    from bqnet_model import _C

    real = _C.oversegment
    entered, state = threading.Event(), {"done": False}

    def at_the_boundary(*args, **kwargs):  # no Python work between the flags and the C++ call
        entered.set()
        try:
            return real(*args, **kwargs)
        finally:
            state["done"] = True

    def work():
        state["labels"] = oversegment(room.xyz, room.rgb, num_threads=1)

    interval = sys.getswitchinterval()
    _C.oversegment = at_the_boundary
    sys.setswitchinterval(100.0)
    try:
        th = threading.Thread(target=work)
        th.start()
        entered.wait()
        ran_during_the_call = not state["done"]
        th.join()
    finally:
        sys.setswitchinterval(interval)
        _C.oversegment = real
    assert ran_during_the_call
    assert np.array_equal(state["labels"], room_result.labels)


def test_rgb_optional_and_color_term_matters(room):
    geo = oversegment(room.xyz)
    off = oversegment(room.xyz, room.rgb, color_weight=0.0)
    assert np.array_equal(geo, off)  # colour weight 0 = geometry only
    with_col = oversegment(room.xyz, room.rgb, color_weight=2.0)
    assert not np.array_equal(geo, with_col)
    asa_geo = achievable_segmentation_accuracy(geo, room.instance)
    asa_col = achievable_segmentation_accuracy(with_col, room.instance)
    assert asa_geo >= 0.95 and asa_col >= asa_geo - 1e-3


def test_separates_box_from_floor_by_geometry():
    xyz, inst = _plane_with_box()
    lab = oversegment(xyz, min_size=10)
    assert achievable_segmentation_accuracy(lab, inst) >= 0.97
    # No superpoint holds a large share of both instances.
    both = np.bincount(lab[inst == 0], minlength=lab.max() + 1) * np.bincount(lab[inst == 1], minlength=lab.max() + 1)
    assert (both > 0).sum() <= 0.5 * (lab.max() + 1)


def test_given_normals_vs_estimated():
    xyz, inst = _plane_with_box()
    est = oversegment_detailed(xyz, params=SuperpointParams(min_size=10))
    # exact normals of the synthetic surfaces, random signs (unoriented is fine)
    nrm = np.zeros_like(xyz)
    on_floor = inst == 0
    nrm[on_floor, 2] = 1.0
    rel = xyz[~on_floor] - np.array([0.5, 0.5, 0.15], np.float32)
    ax = np.abs(rel).argmax(1)
    nrm[np.flatnonzero(~on_floor), ax] = 1.0
    nrm *= np.where(np.random.default_rng(1).random(len(xyz)) < 0.5, -1.0, 1.0)[:, None].astype(np.float32)
    given = oversegment_detailed(xyz, normals=nrm, params=SuperpointParams(min_size=10))
    assert given.num_voxels == est.num_voxels
    assert achievable_segmentation_accuracy(given.labels, inst) >= 0.97
    assert achievable_segmentation_accuracy(est.labels, inst) >= 0.97
    # Exact normals make flat faces uniform: far fewer superpoints than noisy PCA normals.
    assert given.num_superpoints < est.num_superpoints
    # Garbage normals (all the same) leave no geometric boundary: floor and cube merge.
    flat = oversegment(xyz, normals=np.tile(np.float32([0, 0, 1]), (len(xyz), 1)), min_size=10, k_thresh=1.0)
    assert achievable_segmentation_accuracy(flat, inst) < achievable_segmentation_accuracy(given.labels, inst)


def test_min_and_max_size():
    xyz, _ = _plane_with_box()
    r = oversegment_detailed(xyz, params=SuperpointParams(min_size=40, k_thresh=0.5, max_size=300))
    vox_per_sp = np.bincount(r.labels[np.unique(r.point_to_voxel, return_index=True)[1]])
    assert vox_per_sp.min() >= 40  # one connected cloud: every small segment found a neighbour
    big = oversegment_detailed(xyz, params=SuperpointParams(min_size=40, k_thresh=0.5, max_size=0))
    assert r.num_superpoints > big.num_superpoints
    # without min-size merging tiny segments remain
    tiny = oversegment_detailed(xyz, params=SuperpointParams(min_size=0, k_thresh=0.001))
    assert tiny.num_superpoints > r.num_superpoints


def test_voxel_size_changes_grid(room):
    coarse = oversegment_detailed(room.xyz, room.rgb, params=SuperpointParams(voxel_size=0.05))
    fine = oversegment_detailed(room.xyz, room.rgb)
    assert coarse.num_voxels < fine.num_voxels / 2


def test_two_separate_points_and_accepts_float64_and_tensors():
    xyz = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])  # float64, far apart: two isolated voxels
    lab = oversegment(xyz)
    assert lab.tolist() == [0, 1]
    lab_t = oversegment(torch.tensor(xyz, dtype=torch.float32), min_size=0)
    assert lab_t.tolist() == [0, 1]
    same_voxel = oversegment(np.array([[0.0, 0.0, 0.0], [0.001, 0.0, 0.0]]))
    assert same_voxel.tolist() == [0, 0]


def test_degenerate_clouds():
    same = np.zeros((50, 3), np.float32)  # one voxel, no edges
    assert oversegment(same).tolist() == [0] * 50
    line = np.c_[np.linspace(0, 1, 200), np.zeros(200), np.zeros(200)].astype(np.float32)  # no plane: PCA degenerate
    lab = oversegment(line, min_size=5)
    assert lab.min() == 0 and np.array_equal(np.unique(lab), np.arange(lab.max() + 1))
    assert lab.max() + 1 <= 200 // 5


def test_large_world_coordinates(room, room_result):
    # A map 4000 km from its origin, given in float64: as good as the local cloud. (Not bitwise equal:
    # float32 rounding of the shifted coordinates moves near-tied edge weights, and FH is order
    # sensitive.) In float32 this cloud would have ~0.25 m resolution and fall apart.
    far = room.xyz.astype(np.float64) + np.array([512_000.0, 4_096_000.0, 100.0])
    lab = oversegment(far, room.rgb)
    asa_local = achievable_segmentation_accuracy(room_result.labels, room.instance)
    assert achievable_segmentation_accuracy(lab, room.instance) >= asa_local - 0.005
    assert abs((lab.max() + 1) - room_result.num_superpoints) <= 0.1 * room_result.num_superpoints
    coarse = oversegment(far.astype(np.float32), room.rgb)
    assert achievable_segmentation_accuracy(coarse, room.instance) < asa_local - 0.03


def test_params_roundtrip_kwargs(room):
    p = SuperpointParams(k_thresh=0.1, min_size=50)
    assert np.array_equal(oversegment(room.xyz, room.rgb, **asdict(p)),
                          oversegment_detailed(room.xyz, room.rgb, params=p).labels)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(xyz=np.zeros((0, 3), np.float32)), ValueError, "empty"),
        (dict(xyz=np.zeros((1, 3), np.float32)), ValueError, "1 point"),
        (dict(xyz=np.full((10, 3), np.nan, np.float32)), ValueError, "all points are NaN"),
        (dict(xyz=np.r_[np.zeros((9, 3)), [[np.inf, 0, 0]]].astype(np.float32)), ValueError, "1 of 10 points"),
        (dict(xyz=np.zeros((10, 2), np.float32)), ValueError, r"shape \(N, 3\)"),
        (dict(xyz=np.zeros((10,), np.float32)), ValueError, r"shape \(N, 3\)"),
        (dict(xyz=np.array([["a", "b", "c"]] * 3)), TypeError, "real numbers"),
        (dict(xyz=None), TypeError, "got None"),
        (dict(rgb=np.zeros((9, 3), np.uint8)), ValueError, "rgb has 9 rows"),
        (dict(rgb=np.zeros((10, 4), np.uint8)), ValueError, r"rgb must have shape"),
        (dict(rgb=np.zeros((10, 3), np.float32)), TypeError, "uint8"),
        (dict(rgb=np.full((10, 3), 300, np.int32)), ValueError, "0..255"),
        (dict(normals=np.zeros((11, 3), np.float32)), ValueError, "normals has 11 rows"),
        (dict(normals=np.full((10, 3), np.nan, np.float32)), ValueError, "normals contain NaN"),
        (dict(voxel_size=0.0), ValueError, "voxel_size"),
        (dict(voxel_size=float("nan")), ValueError, "voxel_size"),
        (dict(k_thresh=-1.0), ValueError, "k_thresh"),
        (dict(min_size=-1), ValueError, "min_size"),
        (dict(min_size=2.5), TypeError, "min_size"),
        (dict(color_weight=-0.5), ValueError, "color_weight"),
        (dict(neighbor_radius=0), ValueError, "neighbor_radius"),
        (dict(normal_radius=9), ValueError, "normal_radius"),
        (dict(max_neighbors=0), ValueError, "max_neighbors"),
        (dict(num_threads=0), ValueError, "num_threads"),
        (dict(xyz=np.array([[0, 0, 0], [1e5, 0, 0]], np.float32)), ValueError, "exceeds"),
    ],
)
def test_bad_input(kwargs, exc, match):
    args = dict(xyz=np.random.default_rng(0).random((10, 3)).astype(np.float32))
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        oversegment(args.pop("xyz"), **args)


def test_asa_helper():
    sp = np.array([0, 0, 0, 1, 1, 2])
    inst = np.array([5, 5, 7, 7, 7, 9])
    assert achievable_segmentation_accuracy(sp, inst) == pytest.approx(5 / 6)
    assert achievable_segmentation_accuracy(np.arange(6), inst) == 1.0
    # unlabelled points (-1) are ignored; labels need not be dense
    assert achievable_segmentation_accuracy(np.array([10, 10, 30]), np.array([-1, 2, 2])) == 1.0
    assert achievable_segmentation_accuracy(np.zeros(4, np.int64), np.array([0, 0, 1, 1])) == 0.5
    with pytest.raises(ValueError, match="entries"):
        achievable_segmentation_accuracy(np.zeros(3, np.int64), np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="no labelled"):
        achievable_segmentation_accuracy(np.zeros(3, np.int64), -np.ones(3, np.int64))
    with pytest.raises(TypeError, match="integers"):
        achievable_segmentation_accuracy(np.zeros(3), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="1-D"):
        achievable_segmentation_accuracy(np.zeros((3, 1), np.int64), np.zeros(3, np.int64))


def test_clear_import_error_without_extension(monkeypatch):
    import importlib
    import sys

    import bqnet_model

    monkeypatch.delattr(bqnet_model, "_C", raising=False)
    monkeypatch.setitem(sys.modules, "bqnet_model._C", None)  # what an unbuilt tree looks like to import
    monkeypatch.delitem(sys.modules, "bqnet_model.superpoints")
    with pytest.raises(ImportError, match="not built"):
        importlib.import_module("bqnet_model.superpoints")
