"""Thin a point cloud to at most ``max_points`` points of uniform density (a voxel grid).

A random subset keeps the map's density profile: a robot's fused map is dense where the robot
drove slowly or close (often the floor and one wall) and sparse elsewhere, and a random subset
keeps it that way, thinning the sparse objects that a sentence names as hard as the dense floor.
A voxel grid instead keeps one point per occupied cell of edge ``e``: dense regions lose points,
sparse ones keep theirs, and the result has about one point per ``e``-sized cell everywhere.

``e`` is the smallest edge whose grid has at most ``max_points`` occupied cells. Occupied cells
grow like ``e ** -d`` (d about 2 for surfaces, 3 for volumes), so the search fits that power law
through the two bracketing edges (a secant step in log-log space, bisection when the step leaves
the bracket) and needs a handful of ``np.unique`` passes instead of a plain bisection's twenty.
Each cell keeps the point nearest to the cell's centre (ties: the lower row), so the answer
depends on the cloud only, not on its order or a seed.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["voxel_thin", "occupied_cells", "thinning_edge"]

# Stop once the grid keeps at least this share of max_points (closer costs more passes).
_FILL = 0.9
_MAX_STEPS = 24


def _cell_keys(xyz: np.ndarray, origin: np.ndarray, edge: float) -> np.ndarray:
    """One int64 key per point: its cell of the grid anchored at ``origin``."""
    cells = np.floor((xyz - origin) / edge).astype(np.int64)
    span = cells.max(axis=0) + 1
    return (cells[:, 0] * span[1] + cells[:, 1]) * span[2] + cells[:, 2]


def occupied_cells(xyz: np.ndarray, edge: float, origin: np.ndarray | None = None) -> int:
    """Number of grid cells of edge ``edge`` holding at least one point."""
    origin = xyz.min(axis=0) if origin is None else origin
    return int(np.unique(_cell_keys(xyz, origin, edge)).size)


def thinning_edge(xyz: np.ndarray, max_points: int) -> float:
    """The (near-)smallest cell edge whose grid has at most ``max_points`` occupied cells."""
    origin = xyz.min(axis=0)
    extent = float((xyz.max(axis=0) - origin).max())
    if extent <= 0.0:
        return 1.0  # every point at one spot: one cell of any size holds them all
    n = xyz.shape[0]
    # Bracket: a cell of the whole extent (doubled: the floor can still split it) holds all points
    # in at most 8 cells; the small end starts from the surface estimate and shrinks until it
    # holds too many.
    hi, n_hi = 2.0 * extent, occupied_cells(xyz, 2.0 * extent, origin)
    lo = extent / math.sqrt(max_points)
    n_lo = occupied_cells(xyz, lo, origin)
    while n_lo <= max_points:
        if n_lo >= _FILL * max_points or n_lo == n:
            return lo
        hi, n_hi = lo, n_lo
        lo /= 4.0
        n_lo = occupied_cells(xyz, lo, origin)
    for _ in range(_MAX_STEPS):
        if n_hi >= _FILL * max_points or hi / lo < 1.0 + 1e-6:
            break
        # Power law n(e) = c e^-d through both ends, solved for n = target.
        d = math.log(n_lo / max(n_hi, 1)) / math.log(hi / lo)
        target = 0.5 * (1.0 + _FILL) * max_points
        e = hi * (n_hi / target) ** (1.0 / d) if d > 0 else math.sqrt(lo * hi)
        if not lo < e < hi:
            e = math.sqrt(lo * hi)
        n_e = occupied_cells(xyz, e, origin)
        if n_e > max_points:
            lo, n_lo = e, n_e
        else:
            hi, n_hi = e, n_e
    return hi


def voxel_thin(xyz: np.ndarray, max_points: int) -> np.ndarray:
    """Sorted int64 rows of ``xyz`` (finite, float (N, 3)) keeping at most ``max_points`` points,
    one per occupied cell of the grid ``thinning_edge`` picks (module docstring).

    ``N <= max_points`` keeps every row. Raises ValueError for ``max_points < 1`` or a badly
    shaped or non-finite ``xyz`` (clean the cloud first: ``pointcloud.clean`` does).
    """
    if isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer)) or max_points < 1:
        raise ValueError(f"max_points must be a positive integer, got {max_points!r}")
    pts = np.asarray(xyz, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"xyz must have shape (N, 3), got {pts.shape}")
    n = pts.shape[0]
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    if not np.isfinite(pts).all():
        raise ValueError("xyz has NaN/Inf rows: clean the cloud before thinning it")
    origin = pts.min(axis=0)
    edge = thinning_edge(pts, int(max_points))
    keys = _cell_keys(pts, origin, edge)
    centre = (np.floor((pts - origin) / edge) + 0.5) * edge + origin
    dist = ((pts - centre) ** 2).sum(axis=1)
    order = np.lexsort((np.arange(n), dist, keys))  # per cell: nearest the centre, then lowest row
    first = np.ones(n, dtype=bool)
    first[1:] = keys[order[1:]] != keys[order[:-1]]
    keep = np.sort(order[first])
    if keep.size > max_points:  # cannot happen with hi from thinning_edge; kept as a guard
        keep = keep[:max_points]
    return keep.astype(np.int64, copy=False)
