"""Online superpoints (csrc/superpoints.cpp via bqnet_model.superpoints) and the mesh segmentation
(bqnet_model.mesh_segmentation) on synthetic clouds and meshes: correctness, determinism, scale, bad
input. The real ScanNet scans are in test_superpoints_real.py."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch

from bqnet_synth import minimal_room
from bqnet_model.mesh_segmentation import match_segmentations, read_ply_mesh, segment_mesh
from bqnet_model.superpoints import (
    MAX_POINTS,
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
    # A 5 x 4 m room: more superpoints than objects (10), far fewer than points.
    assert 100 <= room_result.num_superpoints <= 3000, room_result.num_superpoints
    sizes = np.bincount(room_result.labels)
    assert np.median(sizes) >= 15  # not a scatter of single points


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
    # colour weights 0 and a colour gate no two colours fail (0..255 distances stay below 442): geometry only
    off = oversegment(room.xyz, room.rgb, color_weight=0.0, refine_color_weight=0.0, merge_color=442.0)
    assert np.array_equal(geo, off)
    with_col = oversegment(room.xyz, room.rgb, color_weight=1.0)
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
    assert np.allclose(np.abs((given.normals * nrm).sum(1)), 1.0, atol=1e-5)  # used as given (unit length)
    assert achievable_segmentation_accuracy(given.labels, inst) >= 0.97
    assert achievable_segmentation_accuracy(est.labels, inst) >= 0.97
    assert not np.array_equal(given.labels, est.labels)  # the given normals were used
    # Garbage normals (all the same) leave no geometric boundary: floor and cube merge.
    flat = oversegment(xyz, normals=np.tile(np.float32([0, 0, 1]), (len(xyz), 1)), min_size=10, k_thresh=1.0)
    assert achievable_segmentation_accuracy(flat, inst) < achievable_segmentation_accuracy(given.labels, inst)


def test_min_and_max_size():
    xyz, _ = _plane_with_box()
    r = oversegment_detailed(xyz, params=SuperpointParams(min_size=40, k_thresh=0.5, max_size=300))
    assert np.bincount(r.labels).min() >= 40  # one connected cloud: every small segment found a neighbour
    big = oversegment_detailed(xyz, params=SuperpointParams(min_size=40, k_thresh=0.5, max_size=0))
    assert r.num_superpoints > big.num_superpoints
    # without min-size merging tiny segments remain
    tiny = oversegment_detailed(xyz, params=SuperpointParams(min_size=0, k_thresh=0.001))
    assert tiny.num_superpoints > r.num_superpoints


def test_boundary_exchange_moves_points_to_the_segment_that_fits_them():
    """The exchange after the merge: on the box standing on the floor it moves points (labels change),
    the segments stay above min_size, and fewer points sit in a segment of the other surface."""
    xyz, inst = _plane_with_box()
    xyz = xyz + np.random.default_rng(5).normal(0, 0.004, xyz.shape).astype(np.float32)
    fh = oversegment_detailed(xyz, params=SuperpointParams(normal_pick=0, refine_iters=0))
    ex = oversegment_detailed(xyz, params=SuperpointParams(normal_pick=0))
    assert not np.array_equal(fh.labels, ex.labels)
    assert np.bincount(ex.labels).min() >= SuperpointParams().min_size  # min_size holds after the exchange
    assert achievable_segmentation_accuracy(ex.labels, inst) > achievable_segmentation_accuracy(fh.labels, inst)
    # the exchange only relabels: the normals it returns are those the merge used
    assert np.array_equal(fh.normals, ex.normals)
    assert fh.timings_ms["refine"] >= 0.0 and "refine" in ex.timings_ms


def test_flattest_normal_pick_only_chooses_among_neighbour_planes():
    """normal_pick takes each point's normal from a nearby PCA plane: on a noiseless box, points near an edge
    whose own neighbourhood straddles two faces get a face's normal instead, more of them the more
    neighbours the pick may look at; 0 keeps the point's own."""
    rng = np.random.default_rng(2)
    face = rng.integers(0, 6, 8000)
    cube = rng.random((8000, 3))
    cube[np.arange(8000), face // 2] = (face % 2).astype(np.float64)
    share = []  # share of points whose normal is a face's
    for pick in (0, 4, 8):
        r = oversegment_detailed(cube.astype(np.float32), params=SuperpointParams(normal_pick=pick, refine_iters=0))
        share.append(float((np.abs(r.normals).max(1) > 1 - 1e-4).mean()))
    assert share[0] + 0.04 < share[1] < share[2] - 0.02, share
    assert share[2] >= 0.95, share


@pytest.mark.parametrize("merge", ["fh", "boruvka"])
def test_coplanar_merge_joins_one_flat_colour_and_stops_at_colour_edges_and_the_cap(merge):
    """A 2 x 1 m floor, left half grey, right half red, and a box standing on it: the coplanar merge
    joins the floor's pieces within each half (far fewer segments), not across the colour edge (without
    the colour gate it does) nor onto the box, and the unions it makes stop at merge_max_size; in the
    sequential walk and in its parallel form alike."""
    rng = np.random.default_rng(4)
    floor = np.c_[rng.random((24_000, 2)) * [2.0, 1.0], np.zeros(24_000)]
    xyz = np.r_[floor, _plane_with_box(4)[0][-6000:] + [0.6, 0.0, 0.0]].astype(np.float32)
    half = (xyz[:, 0] > 1.0) & (xyz[:, 2] < 1e-3)
    inst = np.where(xyz[:, 2] > 1e-3, 2, half.astype(np.int64))
    xyz += rng.normal(0, 0.002, xyz.shape).astype(np.float32)
    rgb = np.where(half[:, None], [200, 40, 40], [120, 120, 120]).astype(np.uint8)
    off = oversegment_detailed(xyz, rgb, params=SuperpointParams(merge=merge, merge_plane_rms=0.0))
    on = oversegment_detailed(xyz, rgb, params=SuperpointParams(merge=merge, merge_max_size=0))
    capped = oversegment_detailed(xyz, rgb, params=SuperpointParams(merge=merge, merge_max_size=100))
    no_gate = oversegment_detailed(xyz, rgb, params=SuperpointParams(merge=merge, merge_max_size=0, merge_color=442.0))
    assert on.num_superpoints < capped.num_superpoints < off.num_superpoints
    assert on.num_superpoints < 0.5 * off.num_superpoints
    for r in (off, on, capped):
        assert achievable_segmentation_accuracy(r.labels, inst) >= 0.98
    assert achievable_segmentation_accuracy(no_gate.labels, inst) < 0.9
    assert np.bincount(on.labels).max() > 5000  # whole stretches of floor, not pieces of min_size
    # FH's own segments are not capped; the exchange may move a few points onto a capped union
    bound = max(int(np.bincount(off.labels).max()), 100) + 3 * SuperpointParams().min_size
    assert np.bincount(capped.labels).max() <= bound


def test_exchange_and_pick_are_deterministic_across_threads():
    xyz, _ = _plane_with_box(1)
    rgb = np.random.default_rng(1).integers(0, 256, (len(xyz), 3)).astype(np.uint8)
    ref = oversegment(xyz, rgb, num_threads=1, refine_iters=5)
    for t in (2, 4):
        assert np.array_equal(oversegment(xyz, rgb, num_threads=t, refine_iters=5), ref)


def test_two_points_and_accepts_float64_and_tensors():
    xyz = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])  # float64: at the cloud's own scale they are neighbours
    assert oversegment(xyz).tolist() == [0, 0]
    # at a given 1 cm spacing they are 170 spacings apart: no edge, two segments
    assert oversegment(torch.tensor(xyz, dtype=torch.float32), spacing=0.01).tolist() == [0, 1]
    assert oversegment(np.array([[0.0, 0.0, 0.0], [0.001, 0.0, 0.0]])).tolist() == [0, 0]


def test_large_world_coordinates(room, room_result):
    # A map 4000 km from its origin, given in float64: as good as the local cloud. (Not bitwise equal:
    # float32 rounding of the shifted coordinates moves near-tied edge weights, and FH is order
    # sensitive.)
    far = room.xyz.astype(np.float64) + np.array([512_000.0, 4_096_000.0, 100.0])
    lab = oversegment(far, room.rgb)
    asa_local = achievable_segmentation_accuracy(room_result.labels, room.instance)
    assert achievable_segmentation_accuracy(lab, room.instance) >= asa_local - 0.005
    assert abs((lab.max() + 1) - room_result.num_superpoints) <= 0.1 * room_result.num_superpoints


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
        (dict(spacing=-0.01), ValueError, "spacing"),
        (dict(spacing=float("nan")), ValueError, "spacing"),
        (dict(k_thresh=-1.0), ValueError, "k_thresh"),
        (dict(min_size=-1), ValueError, "min_size"),
        (dict(min_size=2.5), TypeError, "min_size"),
        (dict(color_weight=-0.5), ValueError, "color_weight"),
        (dict(knn=0), ValueError, "knn"),
        (dict(normal_knn=40), ValueError, "normal_knn"),
        (dict(max_edge=0.0), ValueError, "max_edge"),
        (dict(offset_weight=-1.0), ValueError, "offset_weight"),
        (dict(normal_pick=33), ValueError, "normal_pick"),
        (dict(normal_pick=1.5), TypeError, "normal_pick"),
        (dict(refine_iters=-1), ValueError, "refine_iters"),
        (dict(refine_plane_weight=-0.1), ValueError, "refine_plane_weight"),
        (dict(refine_color_weight=float("inf")), ValueError, "refine_color_weight"),
        (dict(merge_plane_rms=-1.0), ValueError, "merge_plane_rms"),
        (dict(merge_plane_cos=1.5), ValueError, "merge_plane_cos"),
        (dict(merge_color=float("nan")), ValueError, "merge_color"),
        (dict(merge_max_size=-1), ValueError, "merge_max_size"),
        (dict(merge="gpu"), ValueError, "merge must be one of"),
        (dict(merge=1), TypeError, "merge must be a str"),
        (dict(num_threads=0), ValueError, "num_threads"),
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


# ---- scale, density and degenerate clouds ------------------------------------------------------

def _dense(lab: np.ndarray) -> bool:
    return lab.dtype == np.int64 and lab.min() == 0 and np.array_equal(np.unique(lab), np.arange(lab.max() + 1))


def test_spacing_is_estimated_from_the_cloud():
    rng = np.random.default_rng(0)
    g = np.stack(np.meshgrid(np.arange(60), np.arange(60), indexing="ij"), -1).reshape(-1, 2)
    for step in (0.01, 0.03, 0.06):
        xyz = np.c_[g * step, np.zeros(len(g))] + rng.normal(0, 0.05 * step, (len(g), 3))
        r = oversegment_detailed(xyz.astype(np.float32))
        assert abs(r.spacing / step - 1) < 0.15, (step, r.spacing)


def test_scale_free_the_same_room_at_three_scales(room, room_result):
    # Scaling the cloud scales the spacing; weights are dimensionless, so the segmentation holds.
    base = achievable_segmentation_accuracy(room_result.labels, room.instance)
    for f in (0.5, 3.0):
        r = oversegment_detailed(room.xyz * np.float32(f), room.rgb)
        assert abs(r.spacing / (f * room_result.spacing) - 1) < 1e-3
        assert achievable_segmentation_accuracy(r.labels, room.instance) >= base - 0.005
        assert abs(r.num_superpoints - room_result.num_superpoints) <= 0.05 * room_result.num_superpoints


@pytest.mark.parametrize("step", [0.01, 0.03, 0.06])
def test_holds_from_1_to_6_cm_spacing(step):
    # minimal_room thinned to a given spacing (one point per cell): quality and segment size hold.
    scene = minimal_room(120_000, seed=1)
    cells = np.floor(scene.xyz.astype(np.float64) / step).astype(np.int64)
    _, first = np.unique(cells, axis=0, return_index=True)
    keep = np.sort(first)
    xyz, rgb, inst = scene.xyz[keep], scene.rgb[keep], scene.instance[keep]
    r = oversegment_detailed(xyz, rgb)
    assert achievable_segmentation_accuracy(r.labels, inst) >= 0.97, step
    assert 20 <= len(xyz) / r.num_superpoints <= 150, (step, len(xyz), r.num_superpoints)


def test_line_plane_duplicates_and_a_far_point():
    line = np.c_[np.linspace(0, 1, 300), np.zeros(300), np.zeros(300)].astype(np.float32)  # PCA degenerate
    lab = oversegment(line)
    assert _dense(lab) and lab.max() + 1 <= 300 // 15
    rng = np.random.default_rng(0)
    plane = np.c_[rng.random((3000, 2)), np.zeros(3000)].astype(np.float32)
    lab = oversegment(plane)
    assert _dense(lab) and lab.max() + 1 <= 3000 // 15
    # every point twice (a map fused twice): each copy gets its twin's label
    xyz, inst = _plane_with_box()
    twice = np.concatenate([xyz, xyz])
    lab2 = oversegment(twice, min_size=10)
    assert np.array_equal(lab2[: len(xyz)], lab2[len(xyz):])
    assert achievable_segmentation_accuracy(lab2, np.r_[inst, inst]) >= 0.97
    # all points at one place
    assert oversegment(np.zeros((50, 3), np.float32)).tolist() == [0] * 50
    # one point 50 m from the rest: its own segment (no edge reaches it); the others as good as without it
    far = np.r_[xyz, [[50.0, 50.0, 50.0]]].astype(np.float32)
    labf = oversegment(far, min_size=10)
    assert (labf[:-1] != labf[-1]).all()
    assert achievable_segmentation_accuracy(labf[:-1], inst) >= 0.97


def test_ten_million_points_refused_with_the_downsample_path():
    # A zero-stride view: 10 M rows without 10 M points of memory; the count guard runs first.
    huge = np.broadcast_to(np.zeros(3, np.float32), (10_000_000, 3))
    assert len(huge) > MAX_POINTS
    with pytest.raises(ValueError, match="voxel_thin"):
        oversegment(huge)


# ---- mesh segmentation on small meshes ---------------------------------------------------------

def _folded_sheet(n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Two n x n grids meeting at a 90 degree concave crease along x = 0 (a floor and a wall)."""
    u = np.linspace(0, 1, n)
    a = np.stack(np.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    floor = np.c_[a[:, 0], a[:, 1], np.zeros(len(a))]
    wall = np.c_[np.zeros(len(a)), a[:, 1], a[:, 0]]
    xyz = np.concatenate([floor, wall[n:]])  # the crease row is shared
    idx_f = np.arange(n * n).reshape(n, n)
    idx_w = np.r_[idx_f[0], n * n + np.arange(n * (n - 1))].reshape(n, n)

    def tris(g: np.ndarray, flip: bool) -> np.ndarray:
        t = []
        for i in range(n - 1):
            for j in range(n - 1):
                q = (g[i, j], g[i + 1, j], g[i + 1, j + 1], g[i, j + 1])
                t += [(q[0], q[1], q[2]), (q[0], q[2], q[3])]
        t = np.asarray(t)
        return t[:, ::-1] if flip else t

    faces = np.concatenate([tris(idx_f, False), tris(idx_w, True)])  # normals +z and +x: into the room
    return xyz.astype(np.float32), faces.astype(np.int32)


def test_mesh_segments_cut_at_a_concave_crease():
    xyz, faces = _folded_sheet()
    lab = segment_mesh(xyz, faces)
    on_floor, on_wall = xyz[:, 2] == 0, xyz[:, 0] == 0
    inst = np.where(on_floor & ~on_wall, 0, np.where(on_wall & ~on_floor, 1, -1))
    assert achievable_segmentation_accuracy(lab, inst) == 1.0
    assert _dense(lab) and lab.max() + 1 >= 2


def test_read_ply_mesh_binary_and_ascii(tmp_path):
    xyz, faces = _folded_sheet(6)
    header = ("ply\nformat {fmt} 1.0\nelement vertex %d\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nelement face %d\n"
              "property list uchar int vertex_indices\nend_header\n") % (len(xyz), len(faces))
    vd = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
    v = np.zeros(len(xyz), vd)
    v["x"], v["y"], v["z"] = xyz.T
    v["r"] = v["g"] = v["b"] = 7
    f = np.zeros(len(faces), np.dtype([("n", "u1"), ("i", "<i4", (3,))]))
    f["n"], f["i"] = 3, faces
    (tmp_path / "b.ply").write_bytes(header.format(fmt="binary_little_endian").encode() + v.tobytes() + f.tobytes())
    lines = [" ".join(f"{c:.7g}" for c in p) + " 7 7 7" for p in xyz] + [f"3 {a} {b} {c}" for a, b, c in faces]
    (tmp_path / "a.ply").write_text(header.format(fmt="ascii") + "\n".join(lines) + "\n")
    for name in ("b.ply", "a.ply"):
        m = read_ply_mesh(tmp_path / name)
        assert np.allclose(m.xyz, xyz, atol=1e-6) and np.array_equal(m.faces, faces)
        assert np.array_equal(m.rgb, np.full((len(xyz), 3), 7, np.uint8))
    (tmp_path / "c.ply").write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
                                    "property float z\nend_header\n0 0 0\n")
    with pytest.raises(ValueError, match="face"):
        read_ply_mesh(tmp_path / "c.ply")


def test_mesh_bad_input_and_matching():
    xyz, faces = _folded_sheet(5)
    with pytest.raises(ValueError, match="index vertices"):
        segment_mesh(xyz, faces + len(xyz))
    with pytest.raises(ValueError, match="triangles"):
        segment_mesh(xyz, faces[:, :2])
    m = match_segmentations(np.array([0, 0, 1, 1, 2]), np.array([5, 5, 6, 6, 6]))
    assert m["matched_share"] == pytest.approx(0.8) and (m["segments_a"], m["segments_b"]) == (3, 2)


# ---- merge = "boruvka": the parallel form of the FH merge (csrc/sp_boruvka.h) ---------------------


def _separated_boxes(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four hollow boxes (surface samples, 1 cm apart on average) with 0.3 m gaps: no kNN edge joins two."""
    rng = np.random.default_rng(seed)
    parts, inst = [], []
    for b, (size, x0) in enumerate([(0.2, 0.0), (0.3, 0.5), (0.25, 1.1), (0.15, 1.65)]):
        m = int(6 * size * size / 1e-4)  # about one point per cm^2 of surface
        pts = rng.random((m, 3)) * size
        face = rng.integers(0, 6, m)
        pts[np.arange(m), face // 2] = np.where(face % 2 == 1, size, 0.0)
        parts.append(pts + [x0, 0.0, 0.0])
        inst.append(np.full(m, b, np.int64))
    return np.concatenate(parts).astype(np.float32), np.concatenate(inst)


@pytest.mark.parametrize("cap", [150, 0])  # the coplanar merge's star hooking (cap) and pointer jumping (none)
def test_boruvka_deterministic_across_runs_and_threads(room, cap):
    p = SuperpointParams(merge="boruvka", merge_max_size=cap)
    two = oversegment_detailed(room.xyz, room.rgb, params=p, num_threads=2)
    assert two.coplanar_rounds > 0 and two.merge_rounds > 0  # the parallel coplanar merge ran and joined
    assert np.array_equal(oversegment_detailed(room.xyz, room.rgb, params=p, num_threads=2).labels, two.labels)
    assert np.array_equal(oversegment_detailed(room.xyz, room.rgb, params=p, num_threads=1).labels, two.labels)
    assert np.array_equal(oversegment_detailed(room.xyz, room.rgb, params=p, num_threads=3).labels, two.labels)


def test_boruvka_coplanar_unions_never_exceed_the_cap(room, room_result):
    """Without the exchange the final segments are unions of the merge's segments (the stages before are
    the same): every union of two or more of them holds at most merge_max_size points, although picks
    made in one sub-round form chains."""
    assert room_result.coplanar_rounds == 0  # the sequential path does not count sub-rounds
    for cap in (60, 150):
        p = dict(merge="boruvka", refine_iters=0, merge_max_size=cap)
        pre = oversegment_detailed(room.xyz, room.rgb, params=SuperpointParams(**p, merge_plane_rms=0.0)).labels
        post = oversegment_detailed(room.xyz, room.rgb, params=SuperpointParams(**p)).labels
        pairs = np.unique(np.c_[post, pre], axis=0)
        assert len(np.unique(pairs[:, 1])) == len(pairs)  # each merge segment inside one final segment
        parts = np.bincount(pairs[:, 0])
        sizes = np.bincount(post)
        assert (parts > 1).sum() > 0.1 * len(parts), cap  # the coplanar merge joined many
        assert sizes[parts > 1].max() <= cap, cap


def test_boruvka_dense_labels_min_size_and_quality_close_to_fh(room, room_result):
    r = oversegment_detailed(room.xyz, room.rgb, params=SuperpointParams(merge="boruvka"), num_threads=2)
    assert _dense(r.labels) and r.num_superpoints == r.labels.max() + 1
    assert not np.array_equal(r.labels, room_result.labels)  # really the other merge
    assert np.bincount(r.labels).min() >= SuperpointParams().min_size  # min_size after the exchange
    # the merge step alone (no coplanar merge, no exchange): its own min-size pass holds too
    raw = oversegment_detailed(room.xyz, room.rgb, num_threads=2,
                               params=SuperpointParams(merge="boruvka", merge_plane_rms=0.0, refine_iters=0))
    assert _dense(raw.labels) and np.bincount(raw.labels).min() >= SuperpointParams().min_size
    # The same quality and about the same number of segments as sequential FH (the port's acceptance).
    asa_fh = achievable_segmentation_accuracy(room_result.labels, room.instance)
    asa_b = achievable_segmentation_accuracy(r.labels, room.instance)
    assert abs(asa_b - asa_fh) <= 0.005, (asa_b, asa_fh)
    assert abs(r.num_superpoints - room_result.num_superpoints) <= 0.1 * room_result.num_superpoints


def test_boruvka_finds_separated_boxes():
    """Segments below min_size join across their lightest edge, never across a gap: with min_size
    above half a box, each box ends as exactly one segment."""
    xyz, inst = _separated_boxes()
    for merge in ("fh", "boruvka"):
        r = oversegment_detailed(xyz, params=SuperpointParams(merge=merge, min_size=int(np.bincount(inst).max())))
        assert achievable_segmentation_accuracy(r.labels, inst) == 1.0, merge
        assert r.num_superpoints == 4, (merge, r.num_superpoints)
    # at the default sizes several segments per box, none straddling two
    lab = oversegment(xyz, merge="boruvka")
    assert lab.max() + 1 > 4 and achievable_segmentation_accuracy(lab, inst) == 1.0


def test_boruvka_separates_box_from_floor_and_honours_min_size():
    xyz, inst = _plane_with_box()
    lab = oversegment(xyz, min_size=10, merge="boruvka")
    assert achievable_segmentation_accuracy(lab, inst) >= 0.97
    big = oversegment(xyz, min_size=40, k_thresh=0.5, merge="boruvka")
    assert np.bincount(big).min() >= 40
    tiny = oversegment(xyz, min_size=0, k_thresh=0.001, merge="boruvka")
    assert tiny.max() > big.max()  # without the min-size pass the small segments stay

