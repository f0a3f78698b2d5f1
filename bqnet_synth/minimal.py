"""``minimal_room``: the small, fixed room the tests and the superpoint benchmark use (a floor, four
walls and a few furniture boxes), and the box-surface sampler it is drawn with.
"""

from __future__ import annotations

import numpy as np

from bqnet_model.data.classes import CLASS_ID
from bqnet_synth.scene import SceneObject, SyntheticScene


def sample_box_surface(
    rng: np.random.Generator, box_min: np.ndarray, box_max: np.ndarray, n: int,
    faces: tuple[int, ...] = (0, 1, 2, 3, 4, 5),
) -> np.ndarray:
    """Sample ``n`` points uniformly (by area) on the chosen faces of an axis-aligned box.

    Faces: 0/1 = -x/+x, 2/3 = -y/+y, 4/5 = -z/+z. Vectorized.
    """
    box_min = np.asarray(box_min, np.float64)
    box_max = np.asarray(box_max, np.float64)
    ext = box_max - box_min
    areas = np.array([ext[1] * ext[2], ext[1] * ext[2], ext[0] * ext[2], ext[0] * ext[2],
                      ext[0] * ext[1], ext[0] * ext[1]])
    mask = np.zeros(6, bool)
    mask[list(faces)] = True
    areas = np.where(mask, areas, 0.0)
    face = rng.choice(6, size=n, p=areas / areas.sum())
    pts = box_min + rng.random((n, 3)) * ext
    axis = face // 2
    side = face % 2
    pts[np.arange(n), axis] = np.where(side == 1, box_max[axis], box_min[axis])
    return pts


def _color(rng: np.random.Generator, base: tuple[int, int, int], n: int, noise: float = 8.0) -> np.ndarray:
    c = np.asarray(base, np.float64)[None] + rng.normal(0.0, noise, (n, 3))
    return np.clip(c, 0, 255).astype(np.uint8)


def minimal_room(n_points: int = 60_000, seed: int = 0, noise: float = 0.004) -> SyntheticScene:
    """A 5 x 4 x 2.5 m room: floor, 4 walls, a desk, a chair next to it, a table, a cabinet.

    Points are spread over the surfaces in proportion to area (floor under objects and
    box bottoms are left out, as in a fused scan), then jittered by ``noise`` metres.
    Deterministic for a given ``seed``.
    """
    rng = np.random.default_rng(seed)
    W, D, H, T = 5.0, 4.0, 2.5, 0.1
    parts: list[tuple[str, str, tuple[int, int, int], tuple[float, ...], tuple[float, ...], tuple[int, ...]]] = [
        ("floor", "grey", (128, 128, 120), (0, 0, -T), (W, D, 0), (5,)),
        ("wall", "white", (220, 220, 210), (-T, 0, 0), (0, D, H), (1,)),
        ("wall", "white", (215, 215, 205), (W, 0, 0), (W + T, D, H), (0,)),
        ("wall", "beige", (210, 200, 170), (0, -T, 0), (W, 0, H), (3,)),
        ("wall", "beige", (205, 195, 165), (0, D, 0), (W, D + T, H), (2,)),
        ("desk", "brown", (120, 80, 40), (0.3, 3.0, 0), (1.9, 3.8, 0.75), (0, 1, 2, 3, 5)),
        ("chair", "red", (200, 30, 30), (0.8, 2.3, 0), (1.3, 2.8, 0.9), (0, 1, 2, 3, 5)),
        ("table", "white", (235, 235, 235), (3.0, 1.2, 0), (4.2, 2.2, 0.72), (0, 1, 2, 3, 5)),
        ("cabinet", "blue", (40, 60, 170), (4.3, 3.2, 0), (4.9, 3.9, 1.6), (0, 1, 2, 3, 5)),
        ("chair", "green", (40, 150, 60), (3.3, 0.5, 0), (3.8, 1.0, 0.9), (0, 1, 2, 3, 5)),
    ]
    areas = []
    for _, _, _, lo, hi, faces in parts:
        e = np.subtract(hi, lo)
        fa = [e[1] * e[2]] * 2 + [e[0] * e[2]] * 2 + [e[0] * e[1]] * 2
        areas.append(sum(fa[f] for f in faces))
    counts = np.floor(np.asarray(areas) / np.sum(areas) * n_points).astype(int)
    counts[0] += n_points - counts.sum()
    xyz, rgb, inst, sem, objects = [], [], [], [], []
    for i, ((name, cname, col, lo, hi, faces), n) in enumerate(zip(parts, counts)):
        p = sample_box_surface(rng, np.array(lo), np.array(hi), int(n), faces)
        if name == "floor":  # no floor points under furniture (occluded in a real scan)
            keep = np.ones(len(p), bool)
            for _, _, _, lo2, hi2, _ in parts[5:]:
                keep &= ~((p[:, 0] > lo2[0]) & (p[:, 0] < hi2[0]) & (p[:, 1] > lo2[1]) & (p[:, 1] < hi2[1]))
            p = p[keep]
        xyz.append(p)
        rgb.append(_color(rng, col, len(p)))
        inst.append(np.full(len(p), i, np.int32))
        sem.append(np.full(len(p), CLASS_ID[name], np.int32))
        objects.append(SceneObject(i, name, cname, np.array(lo, float), np.array(hi, float)))
    xyz_a = np.concatenate(xyz)
    xyz_a = (xyz_a + rng.normal(0.0, noise, xyz_a.shape)).astype(np.float32)
    return SyntheticScene("minimal_room", xyz_a, np.concatenate(rgb), np.concatenate(inst),
                          np.concatenate(sem), objects)
