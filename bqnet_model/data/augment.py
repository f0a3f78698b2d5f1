"""Training augmentation of a scene (the authors' set): a random linear map (jitter matrix, flip in
x, rotation about z; an optional scale), elastic distortion, a colour shift, and a random crop to
a point budget.

As the authors do, the elastic distortion moves only the points' **voxel grid positions**: the
xyz the model reads as features (and the superpoint centres, seeds and object centroids taken
from it) is the linearly mapped cloud without the distortion (``augment_points``). The colour
shift is one ``rgb_noise * randn(3)`` offset per scene added to the normalised colour
(rgb / 127.5 - 1). A crop keeps a subset of rows (``scene_inputs`` re-densifies the superpoint
ids). Every function takes a ``numpy.random.Generator`` so a run is reproducible from its seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

__all__ = ["AugmentConfig", "AugmentedPoints", "augment_points", "augment_xyz", "colour_shift", "elastic_distortion",
           "random_crop", "linear_transform"]


@dataclass
class AugmentConfig:
    """What ``augment_points`` does (YAML: ``train.augmentation``); defaults are the authors'.

    ``matrix_jitter``: std of a random 3x3 added to the linear map (the authors' "jitter", a small
    random shear/scale); ``flip_x``: mirror x in half of the draws (it swaps left and right);
    ``scale_range``: a uniform random scale (the authors have none: (1, 1)); ``point_jitter``: std
    in metres of per-point Gaussian noise (not the authors'). ``elastic``: (granularity, magnitude)
    pairs in metres; the authors' (6, 40) and (20, 160) voxels at 2 cm are (0.12, 0.8) and
    (0.4, 3.2) (the smoothed noise has std ~0.11, so the grid positions move by ~9 and ~37 cm,
    smoothly over the granularity). ``rgb_noise``: std of the per-scene colour offset on the
    normalised colour (the authors' 0.1; 0 = off).
    """

    rotate_z: bool = True
    flip_x: bool = True
    scale_range: tuple[float, float] = (1.0, 1.0)
    matrix_jitter: float = 0.1
    point_jitter: float = 0.0
    elastic: tuple[tuple[float, float], ...] = field(default_factory=lambda: ((0.12, 0.8), (0.4, 3.2)))
    elastic_prob: float = 1.0
    rgb_noise: float = 0.1

    def __post_init__(self) -> None:
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {self.scale_range}")
        if self.matrix_jitter < 0 or self.point_jitter < 0 or self.rgb_noise < 0:
            raise ValueError("matrix_jitter, point_jitter and rgb_noise must be >= 0")
        for g, m in self.elastic:
            if g <= 0 or m < 0:
                raise ValueError(f"elastic (granularity, magnitude) must be > 0 and >= 0, got {(g, m)}")
        if not 0.0 <= self.elastic_prob <= 1.0:
            raise ValueError(f"elastic_prob must be in [0, 1], got {self.elastic_prob}")


def _check_xyz(xyz: np.ndarray) -> np.ndarray:
    arr = np.asarray(xyz)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"xyz must have shape (N, 3), got {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError("xyz is empty")
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"xyz must be a float array, got dtype {arr.dtype}")
    return arr


def linear_transform(cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """The random 3x3 map: (identity + jitter) * flip * rotation(z) * scale, applied as x @ M."""
    m = np.eye(3)
    if cfg.matrix_jitter > 0:
        m = m + rng.normal(0.0, cfg.matrix_jitter, (3, 3))
    if cfg.flip_x and rng.random() < 0.5:
        m[0, 0] *= -1.0
    if cfg.rotate_z:
        t = rng.uniform(0.0, 2.0 * np.pi)
        c, s = np.cos(t), np.sin(t)
        m = m @ np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
    lo, hi = cfg.scale_range
    if hi > lo or lo != 1.0:
        m = m * rng.uniform(lo, hi)
    return m


def elastic_distortion(xyz: np.ndarray, granularity: float, magnitude: float,
                       rng: np.random.Generator) -> np.ndarray:
    """Displace points by smooth noise: Gaussian noise on a grid of cell ``granularity`` metres,
    box-blurred (3 taps, twice per axis), trilinearly interpolated at each point, times ``magnitude``."""
    pts = _check_xyz(xyz).astype(np.float64)
    if granularity <= 0:
        raise ValueError(f"granularity must be > 0, got {granularity}")
    lo = pts.min(axis=0)
    shape = (np.ceil((pts.max(axis=0) - lo) / granularity).astype(int) + 3).tolist()
    noise = rng.standard_normal((3, *shape))
    box = np.full(3, 1.0 / 3.0)
    for _ in range(2):
        for axis in (1, 2, 3):
            noise = ndimage.convolve1d(noise, box, axis=axis, mode="constant")
    grid_pos = ((pts - lo) / granularity + 1.0).T  # grid node i sits at lo + (i - 1) * granularity
    disp = np.stack([ndimage.map_coordinates(noise[c], grid_pos, order=1, mode="nearest") for c in range(3)], axis=1)
    return (pts + disp * magnitude).astype(np.asarray(xyz).dtype, copy=False)


@dataclass
class AugmentedPoints:
    """``xyz``: the cloud after the linear map (and point jitter), what the model reads as
    coordinates; ``grid_xyz``: the same points after the elastic distortion, what decides their
    voxels (the same array as ``xyz`` when no distortion was drawn). float32 (N, 3), rows kept."""

    xyz: np.ndarray
    grid_xyz: np.ndarray


def augment_points(xyz: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> AugmentedPoints:
    """Centre the scene on its mean, apply the random linear map and point jitter (``xyz``), then
    the elastic distortion on a copy (``grid_xyz``)."""
    pts = _check_xyz(xyz).astype(np.float64)
    pts = pts - pts.mean(axis=0)
    pts = pts @ linear_transform(cfg, rng)
    if cfg.point_jitter > 0:
        pts = pts + rng.normal(0.0, cfg.point_jitter, pts.shape)
    grid = pts
    if cfg.elastic and rng.random() < cfg.elastic_prob:
        for g, m in cfg.elastic:
            grid = elastic_distortion(grid, g, m, rng)
    mid = pts.astype(np.float32)
    return AugmentedPoints(mid, mid if grid is pts else grid.astype(np.float32))


def augment_xyz(xyz: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """The fully distorted cloud (``augment_points(...).grid_xyz``): float32 (N, 3), rows kept."""
    return augment_points(xyz, cfg, rng).grid_xyz


def colour_shift(cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """The per-scene offset (3,) float32 added to the normalised colour: ``rgb_noise * randn(3)``."""
    if cfg.rgb_noise <= 0:
        return np.zeros(3, np.float32)
    return (cfg.rgb_noise * rng.standard_normal(3)).astype(np.float32)


def random_crop(xyz: np.ndarray, max_points: int, rng: np.random.Generator,
                focus: np.ndarray | None = None) -> np.ndarray:
    """Sorted row indices of at most ``max_points`` points: the square (in xy) window around a random
    centre that holds exactly ``max_points`` points. The centre is drawn among the ``focus`` rows
    (e.g. the sampled descriptions' targets, so the crop keeps at least part of one) or among all
    points. All rows when the scene fits."""
    pts = _check_xyz(xyz)
    if isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer)) or max_points < 1:
        raise ValueError(f"max_points must be a positive integer, got {max_points!r}")
    n = pts.shape[0]
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    cand = np.arange(n) if focus is None or len(focus) == 0 else np.asarray(focus, dtype=np.int64)
    if cand.min() < 0 or cand.max() >= n:
        raise ValueError(f"focus rows must be in [0, {n}), got range [{cand.min()}, {cand.max()}]")
    centre = pts[rng.choice(cand), :2].astype(np.float64)
    dist = np.abs(pts[:, :2].astype(np.float64) - centre).max(axis=1)  # Chebyshev: a square window
    keep = np.argpartition(dist, max_points - 1)[:max_points]
    keep.sort()
    return keep.astype(np.int64)
