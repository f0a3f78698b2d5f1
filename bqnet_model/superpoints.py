"""Online superpoints: graph oversegmentation of a raw point cloud (design.md section 2).

The original IPDN/BQNet pipeline reads ScanNet's superpoints, computed offline from the mesh. A
robot has a point cloud, so ``oversegment`` segments the cloud itself, in C++ (``csrc/superpoints.cpp``,
built into ``bqnet_model._C``):

1. voxelize the points (``voxel_size``, grid anchored at the cloud's minimum corner);
2. per voxel a normal: PCA of all raw points in the ``(2 normal_radius + 1)^3`` cells around it, or the
   principal direction of the caller's per-point ``normals`` inside the voxel;
3. a graph over occupied voxels: each voxel links to its nearest occupied cells within Chebyshev
   distance ``neighbor_radius`` (whole distance shells, until at least ``max_neighbors``); the graph
   is the symmetric union, so sparse scans (fewer than one point per voxel) stay connected;
4. edge weight ``(1 - |n_i . n_j|) + color_weight * ||c_i - c_j|| / 255`` (mean voxel RGB; the colour
   term is off when ``color_weight == 0`` or no rgb is given);
5. Felzenszwalb-Huttenlocher merge over edges sorted by weight (stable): components A, B join when
   ``w <= Int(A) + k_thresh / |A|`` and ``w <= Int(B) + k_thresh / |B|`` (sizes in voxels), optionally
   capped at ``max_size`` voxels; then every segment below ``min_size`` voxels joins its neighbour
   across its lightest edge;
6. dense labels ``0..S-1`` (numbered in spatial order of the voxels), one per input point: every point
   takes its voxel's label.

Deterministic: identical input and parameters give identical labels for any thread count.
Non-finite coordinates raise ``ValueError``: clean the cloud first (``bqnet_model.pointcloud.clean``).
Importing this module raises ``ImportError`` (with the build command) when the extension is not built.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

try:  # torch first: the extension links against libtorch
    from bqnet_model import _C
except ImportError as _exc:  # callers (synthetic, dataset, scannet) fall back on this ImportError
    raise ImportError(
        "bqnet_model._C (the csrc/ C++ extension behind bqnet_model.superpoints) is not built: run "
        "`make setup`, or `pip install --no-build-isolation --no-deps -e .` in the repository root "
        f"({_exc})"
    ) from _exc

__all__ = [
    "SuperpointParams",
    "SuperpointResult",
    "oversegment",
    "oversegment_detailed",
    "achievable_segmentation_accuracy",
]

# Largest cell index per axis the C++ grid packs (21 bits minus window headroom).
_MAX_CELLS = (1 << 21) - 16


@dataclass(frozen=True)
class SuperpointParams:
    """Oversegmentation parameters; defaults chosen by measurement (bench/superpoints.py).

    On ``minimal_room`` (5 x 4 x 2.5 m, seed 0) with these defaults: ASA 0.992 / 0.997 / 0.996 at
    100k / 300k / 1M points (the 2 cm voxelization itself bounds ASA at 0.999 / 0.998 / 0.997),
    712 / 1466 / 2183 superpoints. Sweeps below: mean over seeds 0 and 1 at 300k points. Why:

    - ``k_thresh`` 0.03: ASA 0.9970 for 0.01, 0.03 and 0.1 (1350 / 1351 / 1132 superpoints; 0.1 gives
      less even sizes). Edge weights carry noise of ~0.01 (PCA normals over 6 cm with 4 mm jitter)
      plus the colour noise, so FH merging stalls early and ``min_size`` mostly sets the size.
    - ``min_size`` 30 voxels (~120 cm^2 at 2 cm): 20 gives 2034 superpoints, 50 gives 794, all at
      ASA 0.9970.
    - ``color_weight`` 1.0: ASA 0.9923 (off) -> 0.9960 (0.5) -> 0.9970 (1.0) -> 0.9976 (2.0) at 300k;
      1.0 keeps shading noise of real scans from dominating the geometric term.
    - ``neighbor_radius`` 2: radius 1 (the 26-neighbourhood) falls apart below one point per voxel
      (ASA 0.972 and 4588 segments at 100k points vs 0.993 and 701).
    - ``max_neighbors`` 8: 4 loses ASA on sparse clouds, 16 costs time for nothing.
    - ``normal_radius`` 1: radius 2 gives smoother normals (+0.0008 ASA) at ~1.7x the time.
    """

    voxel_size: float = 0.02
    k_thresh: float = 0.03
    min_size: int = 30
    max_size: int = 0  # 0 = no cap on segment size (voxels)
    color_weight: float = 1.0
    neighbor_radius: int = 2
    max_neighbors: int = 8
    normal_radius: int = 1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError``/``TypeError`` naming the first bad field."""
        for name in ("voxel_size", "k_thresh", "color_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise TypeError(f"SuperpointParams.{name} must be a number, got {type(v).__name__}")
            if not math.isfinite(float(v)):
                raise ValueError(f"SuperpointParams.{name} must be finite, got {v}")
        for name in ("min_size", "max_size", "neighbor_radius", "max_neighbors", "normal_radius"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"SuperpointParams.{name} must be an int, got {type(v).__name__}")
        if self.voxel_size <= 0:
            raise ValueError(f"voxel_size must be > 0, got {self.voxel_size}")
        if self.k_thresh < 0:
            raise ValueError(f"k_thresh must be >= 0, got {self.k_thresh}")
        if self.color_weight < 0:
            raise ValueError(f"color_weight must be >= 0, got {self.color_weight}")
        if self.min_size < 0 or self.max_size < 0:
            raise ValueError(f"min_size and max_size must be >= 0, got {self.min_size}, {self.max_size}")
        for name in ("neighbor_radius", "normal_radius"):
            if not 1 <= getattr(self, name) <= 8:
                raise ValueError(f"{name} must be in [1, 8] cells, got {getattr(self, name)}")
        if self.max_neighbors < 1:
            raise ValueError(f"max_neighbors must be >= 1, got {self.max_neighbors}")


@dataclass
class SuperpointResult:
    """Labels plus what it took to get them (for benchmarks and tests)."""

    labels: np.ndarray  # (N,) int64, dense 0..S-1
    point_to_voxel: np.ndarray  # (N,) int64, voxel id of each point
    num_superpoints: int
    num_voxels: int
    num_edges: int
    timings_ms: dict[str, float] = field(default_factory=dict)


_STAGES = ("voxelize", "sums", "window", "edges", "sort", "merge", "labels", "total")


def _as_points(name: str, a: Any, n: int | None) -> np.ndarray:
    """Checks a (N, 3) array-like; returns it as an ndarray (no dtype conversion yet)."""
    if a is None:
        raise TypeError(f"{name} must be an array of shape (N, 3), got None")
    if hasattr(a, "detach") and hasattr(a, "cpu"):  # torch tensor
        a = a.detach().cpu().numpy()
    arr = np.asarray(a)
    real = np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    if not real:
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3), got {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} rows but xyz has {n} points")
    return arr


def oversegment_detailed(
    xyz: np.ndarray,
    rgb: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    *,
    params: SuperpointParams | None = None,
    num_threads: int | None = None,
) -> SuperpointResult:
    """Superpoints of a cloud with voxel ids, sizes and per-stage timings; see the module docstring.

    xyz (N, 3) float (metres, finite, N >= 2; float64 input is shifted to its minimum corner before
    the float32 conversion, so large world coordinates keep their precision); rgb (N, 3) uint8 (or
    integers in 0..255) or None; normals (N, 3) float (any sign, any length) or None to estimate them. ``num_threads``
    defaults to ``torch.get_num_threads()``.
    """
    p = SuperpointParams() if params is None else params
    if not isinstance(p, SuperpointParams):
        raise TypeError(f"params must be a SuperpointParams, got {type(p).__name__}")
    p.validate()
    pts = _as_points("xyz", xyz, None)
    n = pts.shape[0]
    if n == 0:
        raise ValueError("xyz is empty: oversegment needs at least 2 points")
    if n == 1:
        raise ValueError("xyz has 1 point: oversegment needs at least 2 points")
    if pts.dtype != np.float32:
        # Shift to the minimum corner in float64 before narrowing to float32, so that maps in large
        # world coordinates (e.g. UTM) keep their precision; the grid is anchored there anyway.
        pts = pts.astype(np.float64)
        if np.isfinite(pts).all():
            pts = pts - pts.min(axis=0)
    pts = np.ascontiguousarray(pts, dtype=np.float32)
    finite = np.isfinite(pts).all(axis=1)
    if not finite.all():
        bad = int(n - finite.sum())
        what = "all points are" if bad == n else f"{bad} of {n} points are"
        raise ValueError(
            f"xyz: {what} NaN/Inf; remove them first (bqnet_model.pointcloud.clean) and map the labels back"
        )
    extent = float((pts.max(axis=0).astype(np.float64) - pts.min(axis=0)).max())
    if extent / p.voxel_size >= _MAX_CELLS:
        raise ValueError(
            f"cloud extent {extent:.1f} m / voxel_size {p.voxel_size} m exceeds {_MAX_CELLS} cells per axis"
        )
    rgb_t = None
    if rgb is not None:
        col = _as_points("rgb", rgb, n)
        if col.dtype != np.uint8:
            if not np.issubdtype(col.dtype, np.integer):
                raise TypeError(f"rgb must be uint8 (0..255), got dtype {col.dtype}")
            if col.size and (col.min() < 0 or col.max() > 255):
                raise ValueError(f"rgb values must be in 0..255, got range [{col.min()}, {col.max()}]")
        rgb_t = torch.from_numpy(np.ascontiguousarray(col, dtype=np.uint8))
    nrm_t = None
    if normals is not None:
        nrm = np.ascontiguousarray(_as_points("normals", normals, n), dtype=np.float32)
        if not np.isfinite(nrm).all():
            raise ValueError("normals contain NaN/Inf")
        nrm_t = torch.from_numpy(nrm)
    if num_threads is None:
        num_threads = torch.get_num_threads()
    if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive int, got {num_threads!r}")

    labels, p2v, stats = _C.oversegment(
        torch.from_numpy(pts), rgb_t, nrm_t, **asdict(p), num_threads=int(num_threads)
    )
    st = stats.numpy()
    return SuperpointResult(
        labels=labels.numpy(),
        point_to_voxel=p2v.numpy(),
        num_superpoints=int(st[2]),
        num_voxels=int(st[0]),
        num_edges=int(st[1]),
        timings_ms={k: float(v) for k, v in zip(_STAGES, st[3:])},
    )


_D = SuperpointParams()


def oversegment(
    xyz: np.ndarray,
    rgb: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    *,
    voxel_size: float = _D.voxel_size,
    k_thresh: float = _D.k_thresh,
    min_size: int = _D.min_size,
    max_size: int = _D.max_size,
    color_weight: float = _D.color_weight,
    neighbor_radius: int = _D.neighbor_radius,
    max_neighbors: int = _D.max_neighbors,
    normal_radius: int = _D.normal_radius,
    num_threads: int | None = None,
) -> np.ndarray:
    """Dense superpoint labels ``(N,) int64`` in ``0..S-1`` for a cleaned cloud.

    Parameters are those of ``SuperpointParams`` (``oversegment(xyz, rgb, **asdict(params))`` works).
    Raises ``ValueError`` for empty, single-point, non-finite or mis-shaped input, ``TypeError`` for
    non-numeric arrays, ``ImportError`` when the C++ extension is not built.
    """
    params = SuperpointParams(
        voxel_size=voxel_size, k_thresh=k_thresh, min_size=min_size, max_size=max_size,
        color_weight=color_weight, neighbor_radius=neighbor_radius, max_neighbors=max_neighbors,
        normal_radius=normal_radius,
    )
    return oversegment_detailed(xyz, rgb, normals, params=params, num_threads=num_threads).labels


def achievable_segmentation_accuracy(superpoints: np.ndarray, instance: np.ndarray) -> float:
    """ASA: fraction of labelled points whose superpoint's majority instance is their own instance.

    The best point accuracy any labelling that is constant per superpoint can reach (1.0 = every
    superpoint lies inside one instance). Points with a negative instance id (-1 = unlabelled)
    are left out of both the majority vote and the denominator. Label values need not be dense.
    """
    sp = np.asarray(superpoints)
    ins = np.asarray(instance)
    for name, a in (("superpoints", sp), ("instance", ins)):
        if a.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
        if not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"{name} must hold integers, got dtype {a.dtype}")
    if sp.shape[0] != ins.shape[0]:
        raise ValueError(f"superpoints has {sp.shape[0]} entries but instance has {ins.shape[0]}")
    keep = ins >= 0
    if not keep.any():
        raise ValueError("no labelled points (every instance id is negative)")
    _, sp_i = np.unique(sp[keep], return_inverse=True)
    _, in_i = np.unique(ins[keep], return_inverse=True)
    n_inst = int(in_i.max()) + 1
    pair, counts = np.unique(sp_i.astype(np.int64) * n_inst + in_i, return_counts=True)
    # ``pair`` is sorted by superpoint first: the max count over each superpoint's run.
    starts = np.flatnonzero(np.r_[True, np.diff(pair // n_inst) != 0])
    best = np.maximum.reduceat(counts, starts)
    return float(best.sum() / keep.sum())
