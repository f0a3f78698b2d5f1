"""Online superpoints: graph oversegmentation of a raw point cloud at the cloud's own scale.

The original IPDN/BQNet pipeline reads ScanNet's superpoints, computed offline on the mesh
(``bqnet_model.mesh_segmentation`` reproduces them when a mesh exists). A robot has a point cloud
of unknown density, so ``oversegment`` segments the cloud itself, in C++ (``csrc/superpoints.cpp``,
built into ``bqnet_model._C``). The algorithm follows ScanNet's segmentator (Felzenszwalb-
Huttenlocher on a surface graph weighted by normal change), with the mesh replaced by a kNN graph:

1. **scale**: ``s`` = median distance from a strided sample of points to their nearest distinct
   neighbour (exact duplicates skipped). Nothing below assumes a density: the graph is a kNN graph,
   the grid and the edge cut-off are multiples of ``s``, so the same parameters serve 1 cm fused
   maps and 6 cm sparse scans. ``spacing`` > 0 overrides the estimate. The scale never goes below
   1e-6 of the cloud's extent (so the hashed grid stays bounded; duplicates alone give no scale).
2. **kNN graph**: points are counting-sorted into a hashed grid of cell ``3 s``; each point keeps
   its ``max(knn, normal_knn)`` nearest neighbours within ``max_edge * s`` (rings of cells searched
   outward until the K-th distance is inside the searched cube; ties by point index). The edge set
   is the symmetric union of each point's ``knn`` nearest. Why kNN rather than voxels: a voxel grid
   of fixed size falls apart when the points are sparser than the voxel (it was 2 cm), while the kNN
   graph adapts to the local density. Why a cut-off: a far isolated point has no true neighbour;
   linking it anyway would glue unrelated surfaces.
3. **normals**: PCA of each point with its ``normal_knn`` nearest (or the caller's ``normals``).
   Small neighbourhoods keep creases sharp (large ones smooth the normal across an object's edge,
   which is exactly where a boundary is wanted). Then each point takes the normal of the flattest
   neighbourhood (least surface variation) among its own and those of its ``normal_pick`` nearest:
   a point next to a crease has a neighbourhood straddling both faces and a normal between them,
   which would make every edge across the crease cheap; a neighbour a little inside one face has
   a clean plane. The caller's normals are used as given.
4. **edge weight** ``w = (1 - |n_i . n_j|) + color_weight * ||c_i - c_j|| / 255
   + offset_weight * (|d . n_i| + |d . n_j|) / (2 s)`` with ``d = p_j - p_i``:
   the normal term cuts at creases (ScanNet's term; unoriented, since a cloud carries no normal
   sign); the colour term separates flat things that differ only in colour (a poster on a wall, a
   rug on the floor); the offset term (point-to-plane distance in units of the spacing) cuts at
   steps between parallel surfaces (a book on a table) that the normal term does not see.
5. **merge**: edges sorted by weight (stable radix sort), FH merge: components A, B join when
   ``w <= Int(A) + k_thresh / |A|`` and the same for B (sizes in points; ``max_size`` > 0 caps them),
   then every component below ``min_size`` points joins its neighbour across its lightest edge
   (ScanNet's segMinVerts step). ``merge="boruvka"`` runs both steps (and the min-size clean-up of step
   6) in their parallel form instead, the one a GPU port needs: rounds in which every segment takes its
   lightest edge that passes the same predicate (or, if below ``min_size``, its lightest edge), hooked
   and contracted by pointer jumping, over growing weight-order prefixes of the sorted edges
   (``csrc/sp_boruvka.h``; other labels, quality compared in docs/benchmarks/superpoints.md).
   Because ``min_size`` is counted in points the segment count scales
   with the point count (one segment per some tens of points, as ScanNet's mesh superpoints);
   downsample very dense maps first if fewer superpoints are wanted.
6. **coplanar merge** (2 rounds), then **boundary exchange** (``refine_iters`` rounds). The size step
   of FH cuts every surface into pieces of about ``min_size`` points, walls and floors as finely as
   clutter; adjacent segments join when their union is still one plane (RMS distance to it along
   either segment's normal below ``merge_plane_rms`` spacings), their planes are parallel
   (``|n_a . n_b| > merge_plane_cos``), their mean colours differ by less than ``merge_color``
   (0..255) and the union holds at most ``merge_max_size`` points: the segment budget goes where the
   boundaries are (``merge="boruvka"``: the same test per edge, the accepted edges joined in parallel
   sub-rounds, each segment proposing its earliest coplanar neighbour, ``csrc/sp_boruvka_coplanar.h``).
   Then every point moves to the segment, among its own and those of its ``knn``
   nearest, with the least ``(1 - |n_p . n_S|) + refine_plane_weight * |(p - c_S) . n_S| / s +
   refine_color_weight * ||c_p - rgb_S|| / 255`` (``c_S``, ``n_S``: the segment's centroid and PCA
   plane normal; ``rgb_S`` its mean colour; all points decide at once from the previous round's
   statistics). FH decides boundaries edge by edge on noisy point normals, so its cuts wander a
   point or two off the true boundary; a plane fitted to a whole segment is a much steadier witness
   of which side a boundary point belongs to. Segments that shrank below ``min_size`` then join
   their neighbour across the lightest edge again (as in step 5).
7. **labels** ``0..S-1`` numbered in order of each segment's first point.

**GPU**: a CUDA input (or ``device="cuda"``) runs the same algorithm on the GPU
(``bqnet_model.superpoints_cuda``, ``csrc/cuda/``) with ``merge="boruvka"`` semantics whatever
``merge`` says: the kernels are written once (``csrc/sp_parallel*.h``) and also run on the host as
``_C.oversegment_parallel``, whose labels equal the CPU's ``merge="boruvka"`` ones (tested here).

Each stage but the merge is data-parallel (grid by hashing, per-point kNN, PCA and normal pick,
per-edge weights, radix sort, per-edge coplanarity tests, per-point exchange), and the merge is FH
over sorted edges, so a CUDA port keeps the structure
(``merge="boruvka"``: Borůvka-style rounds replace the sequential merge). Deterministic: identical input and
parameters give identical labels for any thread count. Why each default: docs/benchmarks/superpoints.md
(measured on real ScanNet scans and the synthetic rooms).

Bad input: non-finite coordinates raise ``ValueError`` (clean the cloud first,
``bqnet_model.pointcloud.clean``); clouds over ``MAX_POINTS`` raise ``ValueError`` naming the
downsample path; degenerate clouds (a line, a plane, duplicates, one far point) get valid labels.
Importing this module raises ``ImportError`` (with the build command) when the extension is not built.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from bqnet_model.superpoint_params import SuperpointParams

try:  # torch first: the extension links against libtorch
    from bqnet_model import _C
except ImportError as _exc:  # callers (synthetic, dataset, scannet) fall back on this ImportError
    raise ImportError(
        "bqnet_model._C (the csrc/ C++ extension behind bqnet_model.superpoints) is not built: run "
        "`make setup`, or `pip install --no-build-isolation --no-deps -e .` in the repository root "
        f"({_exc})"
    ) from _exc

__all__ = [
    "MAX_POINTS",
    "SuperpointParams",
    "SuperpointResult",
    "oversegment",
    "oversegment_detailed",
    "achievable_segmentation_accuracy",
]

# Larger clouds are refused rather than segmented slowly: the kNN lists alone take 36 bytes a point
# and the segment count grows with the point count. Downsample (see the error message) instead.
MAX_POINTS = 5_000_000


@dataclass
class SuperpointResult:
    """Labels plus what it took to get them (for benchmarks and tests)."""

    labels: Any  # (N,) int64, dense 0..S-1: np.ndarray, or a torch tensor on the CUDA device segmented on
    normals: Any  # (N, 3) float32, unit (unoriented) normals used for the weights (same kind as labels)
    spacing: float  # metres: the scale used (estimated unless given)
    num_superpoints: int
    num_edges: int
    timings_ms: dict[str, float] = field(default_factory=dict)
    merge_rounds: int = 0  # merge="boruvka": rounds that merged in stage 5 (0 for "fh"), the GPU port's serial depth
    coplanar_rounds: int = 0  # merge="boruvka": sub-rounds that merged in the coplanar merge (0 for "fh")

    @property
    def num_voxels(self) -> int:
        """Graph nodes (one per point: the graph has no voxels any more; kept for older callers)."""
        return int(self.labels.shape[0])


_STAGES = ("spacing", "knn", "normals", "edges", "sort", "merge", "refine", "labels", "total")


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


def check_point_count(n: int) -> None:
    """The point-count rules of every path (CPU, host port, GPU)."""
    if n == 0:
        raise ValueError("xyz is empty: oversegment needs at least 2 points")
    if n == 1:
        raise ValueError("xyz has 1 point: oversegment needs at least 2 points")
    if n > MAX_POINTS:
        raise ValueError(
            f"xyz has {n:,} points, over bqnet_model.superpoints.MAX_POINTS = {MAX_POINTS:,}: segment a "
            "thinned subset (idx = bqnet_model.thinning.voxel_thin(xyz, MAX_POINTS)) and give every other "
            "point the label of its nearest kept point (e.g. scipy.spatial.cKDTree(xyz[idx]).query(xyz))"
        )


def nonfinite_message(bad: int, n: int) -> str:
    what = "all points are" if bad == n else f"{bad} of {n} points are"
    return f"xyz: {what} NaN/Inf; remove them first (bqnet_model.pointcloud.clean) and map the labels back"


def _target_device(xyz: Any, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if isinstance(xyz, torch.Tensor):
        return xyz.device
    return torch.device("cpu")


def _oversegment_on_cuda(xyz: Any, rgb: Any, normals: Any, p: SuperpointParams, dev: torch.device,
                         num_threads: int | None) -> SuperpointResult:
    """The GPU port, or (``_C_cuda`` not built) the CPU with the results moved to ``dev``."""
    from bqnet_model import superpoints_cuda

    ext = superpoints_cuda.extension()
    if ext is not None:
        labels, nrm, st = superpoints_cuda.run(ext, xyz, rgb, normals, p, dev)
        return result_from_stats(labels, nrm, st)

    def host(a: Any) -> Any:
        return a.detach().cpu() if isinstance(a, torch.Tensor) else a

    res = oversegment_detailed(host(xyz), host(rgb), host(normals), params=p, num_threads=num_threads, device="cpu")
    res.labels = torch.from_numpy(res.labels).to(dev)
    res.normals = torch.from_numpy(res.normals).to(dev)
    return res


def oversegment_detailed(
    xyz: np.ndarray,
    rgb: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    *,
    params: SuperpointParams | None = None,
    num_threads: int | None = None,
    device: str | torch.device | None = None,
) -> SuperpointResult:
    """Superpoints of a cloud with normals, scale, edge count and per-stage timings (module docstring).

    xyz (N, 3) float (metres, finite, 2 <= N <= ``MAX_POINTS``; non-float32 input is shifted to its
    minimum corner in float64 before the float32 conversion, so large world coordinates keep their
    precision); rgb (N, 3) uint8 (or integers in 0..255) or None (no colour term); normals (N, 3)
    float (any sign, any length) or None to estimate them. ``num_threads`` defaults to
    ``torch.get_num_threads()``.

    ``device``: where to segment; None = where ``xyz`` is (a CUDA tensor: the GPU, anything else: the
    CPU). On a CUDA device the GPU port runs (``bqnet_model.superpoints_cuda``): the Borůvka merges
    whatever ``params.merge`` says (``"fh"`` on CUDA means its GPU form), labels and normals come back
    as tensors on that device; without ``bqnet_model._C_cuda`` the CPU segments (one log line says so)
    and the tensors are moved there.
    """
    p = SuperpointParams() if params is None else params
    if not isinstance(p, SuperpointParams):
        raise TypeError(f"params must be a SuperpointParams, got {type(p).__name__}")
    p.validate()
    dev = _target_device(xyz, device)
    if dev.type == "cuda":
        return _oversegment_on_cuda(xyz, rgb, normals, p, dev, num_threads)
    return oversegment_host(xyz, rgb, normals, p, num_threads, _C.oversegment)


def oversegment_host(xyz: Any, rgb: Any, normals: Any, p: SuperpointParams, num_threads: int | None,
                     kernel: Any) -> SuperpointResult:
    """The CPU path of ``oversegment_detailed``: checks and converts the input, runs ``kernel``
    (``_C.oversegment``, or ``_C.oversegment_parallel``: the GPU port's kernels on the host)."""
    pts = _as_points("xyz", xyz, None)
    n = pts.shape[0]
    check_point_count(n)
    if pts.dtype != np.float32:
        # Shift to the minimum corner in float64 before narrowing to float32, so that maps in large
        # world coordinates (e.g. UTM) keep their precision; the C++ side shifts float32 input too.
        pts = pts.astype(np.float64)
        if np.isfinite(pts).all():
            pts = pts - pts.min(axis=0)
    pts = np.ascontiguousarray(pts, dtype=np.float32)
    finite = np.isfinite(pts).all(axis=1)
    if not finite.all():
        raise ValueError(nonfinite_message(int(n - finite.sum()), n))
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

    try:
        labels, nrm_out, stats = kernel(
            torch.from_numpy(pts), rgb_t, nrm_t, **asdict(p), num_threads=int(num_threads)
        )
    except RuntimeError as exc:  # the C++ guards (grid size): a ValueError for the caller
        raise ValueError(str(exc).split("\n")[0]) from exc
    return result_from_stats(labels.numpy(), nrm_out.numpy(), stats.numpy())


def result_from_stats(labels: Any, normals: Any, st: np.ndarray) -> SuperpointResult:
    """A SuperpointResult from a kernel's outputs (stats layout of csrc/superpoints.cpp)."""
    return SuperpointResult(
        labels=labels,
        normals=normals,
        spacing=float(st[2]),
        num_superpoints=int(st[1]),
        num_edges=int(st[0]),
        timings_ms={k: float(v) for k, v in zip(_STAGES, st[3:12])},
        merge_rounds=int(st[13]),
        coplanar_rounds=int(st[14]),
    )


_D = SuperpointParams()


def oversegment(
    xyz: np.ndarray,
    rgb: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    *,
    spacing: float = _D.spacing,
    k_thresh: float = _D.k_thresh,
    min_size: int = _D.min_size,
    max_size: int = _D.max_size,
    color_weight: float = _D.color_weight,
    offset_weight: float = _D.offset_weight,
    knn: int = _D.knn,
    normal_knn: int = _D.normal_knn,
    max_edge: float = _D.max_edge,
    normal_pick: int = _D.normal_pick,
    refine_iters: int = _D.refine_iters,
    refine_plane_weight: float = _D.refine_plane_weight,
    refine_color_weight: float = _D.refine_color_weight,
    merge_plane_rms: float = _D.merge_plane_rms,
    merge_plane_cos: float = _D.merge_plane_cos,
    merge_color: float = _D.merge_color,
    merge_max_size: int = _D.merge_max_size,
    merge: str = _D.merge,
    num_threads: int | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Dense superpoint labels ``(N,) int64`` in ``0..S-1`` for a cleaned cloud.

    Parameters are those of ``SuperpointParams`` (``oversegment(xyz, rgb, **asdict(params))`` works);
    ``device`` as in ``oversegment_detailed`` (a CUDA tensor's labels come back as a CUDA tensor).
    Raises ``ValueError`` for empty, single-point, oversized, non-finite or mis-shaped input,
    ``TypeError`` for non-numeric arrays, ``ImportError`` when the C++ extension is not built.
    """
    params = SuperpointParams(
        spacing=spacing, k_thresh=k_thresh, min_size=min_size, max_size=max_size, color_weight=color_weight,
        offset_weight=offset_weight, knn=knn, normal_knn=normal_knn, max_edge=max_edge, normal_pick=normal_pick,
        refine_iters=refine_iters, refine_plane_weight=refine_plane_weight, refine_color_weight=refine_color_weight,
        merge_plane_rms=merge_plane_rms, merge_plane_cos=merge_plane_cos, merge_color=merge_color,
        merge_max_size=merge_max_size, merge=merge,
    )
    return oversegment_detailed(xyz, rgb, normals, params=params, num_threads=num_threads, device=device).labels


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
