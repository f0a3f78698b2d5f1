"""Point-cloud core: input checks, colour conversion and cleaning (pure numpy).

Every map that reaches the model (a ROS PointCloud2, a .ply, a synthetic scene) is cleaned first
(``clean``, or ``ingest.clean_torch`` on the segmenter's device), keeping the index map back to the
caller's array: the node must answer with point indices into the cloud it received, not into the
cleaned copy. The voxelization is ``ingest.voxel_inputs_torch`` (one implementation for training
and inference); the key packing it uses is defined here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "CleanedCloud",
    "as_xyz",
    "rgb_to_uint8",
    "stored_rgb_to_uint8",
    "check_rgb_layout",
    "check_voxel_size",
    "clean",
    "random_downsample",
]

# Voxel coordinates are packed into one int64 key (21 bits per axis) so that one unique sorts them
# lexicographically in one pass; 2**21 voxels of 2 cm is 42 km per axis.
_KEY_BITS = 21
_KEY_MAX = (1 << _KEY_BITS) - 1


@dataclass
class CleanedCloud:
    """A cloud without non-finite or duplicate points, with the map back to the input rows.

    ``index[i]`` is the row of the caller's array that cleaned point ``i`` came from (sorted
    ascending: the input order is kept). The counts say what was dropped, for logging.
    """

    xyz: np.ndarray  # float32 (M, 3)
    rgb: np.ndarray | None  # uint8 (M, 3) or None
    index: np.ndarray  # int64 (M,), rows of the input
    n_input: int
    n_nonfinite: int
    n_duplicates: int
    n_downsampled: int

    @property
    def n_points(self) -> int:
        return int(self.xyz.shape[0])

    def summary(self) -> str:
        """One log line: what came in, what was dropped and why."""
        return (
            f"{self.n_input} points in, {self.n_points} kept "
            f"({self.n_nonfinite} non-finite, {self.n_duplicates} duplicates, "
            f"{self.n_downsampled} downsampled away)"
        )


def as_xyz(xyz: object, name: str = "xyz") -> np.ndarray:
    """Validate an (N, 3) numeric array; returns it as a numpy array (no copy when possible)."""
    if not isinstance(xyz, np.ndarray):
        try:
            xyz = np.asarray(xyz)
        except Exception as exc:  # ragged lists and the like
            raise TypeError(f"{name} must be an array of shape (N, 3), got {type(xyz).__name__}") from exc
    if xyz.dtype == np.bool_ or not (np.issubdtype(xyz.dtype, np.floating) or np.issubdtype(xyz.dtype, np.integer)):
        raise TypeError(f"{name} must be a float or integer array, got dtype {xyz.dtype}")
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3), got {xyz.shape}")
    if xyz.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 points)")
    return xyz


def check_rgb_layout(rgb: object, n_points: int | None = None, name: str = "rgb") -> np.ndarray:
    """``rgb`` as an array after the checks that need no values: shape (N, 3), N == ``n_points``
    (when given), an integer or float dtype. Shared by ``rgb_to_uint8`` and the torch ingest."""
    arr = np.asarray(rgb)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3), got {arr.shape}")
    if n_points is not None and arr.shape[0] != n_points:
        raise ValueError(f"{name} has {arr.shape[0]} rows but xyz has {n_points} points")
    if arr.dtype != np.uint8 and (arr.dtype == np.bool_ or not (
            np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer))):
        raise TypeError(f"{name} must be uint8 (0..255) or float (0..1), got dtype {arr.dtype}")
    return arr


def check_voxel_size(voxel_size: object) -> float:
    """``voxel_size`` as a positive finite float; TypeError / ValueError otherwise."""
    if isinstance(voxel_size, bool) or not isinstance(voxel_size, (int, float, np.integer, np.floating)):
        raise TypeError(f"voxel_size must be a number, got {type(voxel_size).__name__}")
    voxel_size = float(voxel_size)
    if not np.isfinite(voxel_size) or voxel_size <= 0:
        raise ValueError(f"voxel_size must be a positive finite number, got {voxel_size}")
    return voxel_size


def rgb_to_uint8(rgb: object, n_points: int | None = None, name: str = "rgb") -> np.ndarray:
    """Colours as uint8 (N, 3).

    Accepted: uint8 0..255 (returned as is); other integer types with values in 0..255; floats in
    [0, 1] (scaled by 255 and rounded). Floats above 1 are refused rather than guessed: a float
    array in 0..255 is a common mistake and would otherwise turn every colour white.
    Non-finite float entries must be removed first (``clean`` does that).
    """
    arr = check_rgb_layout(rgb, n_points, name)
    if arr.dtype == np.uint8:
        return arr
    if arr.size == 0:
        return arr.astype(np.uint8)
    lo, hi = arr.min(), arr.max()
    if np.issubdtype(arr.dtype, np.integer):
        if lo < 0 or hi > 255:
            raise ValueError(f"integer {name} must be in 0..255, got range [{lo}, {hi}]")
        return arr.astype(np.uint8)
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise ValueError(f"float {name} contains NaN or Inf; clean() drops such rows")
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"float {name} must be in [0, 1], got range [{lo:g}, {hi:g}] "
            "(pass uint8 for colours in 0..255)"
        )
    return np.rint(arr.astype(np.float64) * 255.0).astype(np.uint8)


def stored_rgb_to_uint8(rgb: np.ndarray, *, scale_16bit: bool = False) -> np.ndarray:
    """Colours read from a file or a message as uint8 (N, 3), never refused.

    ``rgb_to_uint8`` checks what a caller hands the library and refuses what it cannot read
    unambiguously; stored colours come as the writer chose (PLY properties, PointCloud2 r/g/b
    fields), so here every array gets the readers' fixed rules: uint8 as is; floats with NaN/Inf
    as 0, scaled by 255 when all are <= 1, then rounded and clipped to 0..255; 16-bit integers
    with values above 255 scaled from 0..65535 when ``scale_16bit`` (PLY ushort colours), other
    integers clipped to 0..255.
    """
    arr = np.asarray(rgb)
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.where(np.isfinite(arr), arr, 0.0)
        if finite.size and finite.max() <= 1.0:
            finite = finite * 255.0
        return np.rint(np.clip(finite, 0, 255)).astype(np.uint8)
    if scale_16bit and arr.size and arr.max() > 255 and arr.dtype.itemsize == 2:
        return np.rint(arr.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    return np.clip(arr, 0, 255).astype(np.uint8)


def random_downsample(n_points: int, max_points: int, *, seed: int = 0) -> np.ndarray:
    """Sorted int64 indices of ``min(n_points, max_points)`` rows drawn without replacement.

    Seeded (``np.random.default_rng(seed)``) so the same map gives the same subset on every run;
    sorted so the subset keeps the input order.
    """
    if isinstance(n_points, bool) or not isinstance(n_points, (int, np.integer)) or n_points < 0:
        raise ValueError(f"n_points must be a non-negative integer, got {n_points!r}")
    if isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer)) or max_points < 1:
        raise ValueError(f"max_points must be a positive integer, got {max_points!r}")
    if n_points <= max_points:
        return np.arange(n_points, dtype=np.int64)
    rng = np.random.default_rng(seed)
    sel = rng.choice(int(n_points), size=int(max_points), replace=False)
    sel.sort()
    return sel.astype(np.int64, copy=False)


def _first_unique_rows(xyz: np.ndarray) -> np.ndarray:
    """Boolean mask keeping the first occurrence of every exactly repeated float32 row.

    Rows are compared by bit pattern after adding +0.0 (which turns -0.0 into 0.0; NaNs are gone
    by now), so x and y pack into one uint64 key and a two-key stable lexsort finds the groups.
    """
    bits = (xyz + np.float32(0.0)).view(np.uint32)
    xy = (bits[:, 0].astype(np.uint64) << np.uint64(32)) | bits[:, 1]
    z = bits[:, 2]
    order = np.lexsort((z, xy))  # stable: equal rows keep input order, so the first comes first
    xy_s, z_s = xy[order], z[order]
    new_group = np.empty(len(order), dtype=bool)
    new_group[0] = True
    np.not_equal(xy_s[1:], xy_s[:-1], out=new_group[1:])
    new_group[1:] |= z_s[1:] != z_s[:-1]
    keep = np.zeros(len(order), dtype=bool)
    keep[order[new_group]] = True
    return keep


def clean(
    xyz: np.ndarray,
    rgb: np.ndarray | None = None,
    *,
    max_points: int | None = None,
    dedup: bool = True,
) -> CleanedCloud:
    """Drop non-finite and duplicate points, then thin to ``max_points`` by a voxel grid
    (``thinning.voxel_thin``: uniform density, deterministic, no seed).

    - rows with NaN/Inf in xyz (after the cast to float32, so float64 values beyond float32 range
      count as non-finite) or, for float rgb, in rgb are dropped;
    - exact duplicates of xyz (same float32 coordinates) are dropped, the first occurrence is kept
      with its colour (``dedup=False`` keeps them);
    - rgb may be uint8 0..255 or float 0..1 (converted to uint8, see ``rgb_to_uint8``).
    Raises ValueError for an empty cloud, wrong shapes, mismatched rgb length, or when no finite
    point is left.
    """
    xyz = as_xyz(xyz)
    n = int(xyz.shape[0])
    with np.errstate(over="ignore", invalid="ignore"):
        xyz32 = np.asarray(xyz, dtype=np.float32)
    finite = np.isfinite(xyz32).all(axis=1)
    rgb_arr: np.ndarray | None = None
    if rgb is not None:
        rgb_arr = np.asarray(rgb)
        if rgb_arr.ndim != 2 or rgb_arr.shape[1] != 3:
            raise ValueError(f"rgb must have shape (N, 3), got {rgb_arr.shape}")
        if rgb_arr.shape[0] != n:
            raise ValueError(f"rgb has {rgb_arr.shape[0]} rows but xyz has {n} points")
        if np.issubdtype(rgb_arr.dtype, np.floating):
            finite &= np.isfinite(rgb_arr).all(axis=1)
    n_nonfinite = int(n - np.count_nonzero(finite))
    if n_nonfinite == n:
        raise ValueError(f"all {n} points are non-finite (NaN/Inf in xyz or rgb); nothing to clean")

    index = np.flatnonzero(finite).astype(np.int64, copy=False)
    pts = xyz32[index] if n_nonfinite else xyz32
    n_duplicates = 0
    if dedup:
        keep = _first_unique_rows(pts)
        n_duplicates = int(len(keep) - np.count_nonzero(keep))
        if n_duplicates:
            index = index[keep]
            pts = pts[keep]
    n_downsampled = 0
    if max_points is not None:
        from bqnet_model.thinning import voxel_thin

        sel = np.arange(len(index)) if len(index) <= max_points else voxel_thin(pts, max_points)
        n_downsampled = int(len(index) - len(sel))
        if n_downsampled:
            index = index[sel]
            pts = pts[sel]
    out_rgb = None
    if rgb_arr is not None:
        out_rgb = rgb_to_uint8(rgb_arr[index] if len(index) != n else rgb_arr, len(index))
    pts = np.ascontiguousarray(pts, dtype=np.float32)
    if pts is xyz:  # never hand back the caller's own buffer: they may mutate it later
        pts = pts.copy()
    if out_rgb is not None and out_rgb is rgb:
        out_rgb = out_rgb.copy()
    return CleanedCloud(
        xyz=pts,
        rgb=out_rgb,
        index=np.ascontiguousarray(index, dtype=np.int64),
        n_input=n,
        n_nonfinite=n_nonfinite,
        n_duplicates=n_duplicates,
        n_downsampled=n_downsampled,
    )


def narrow_scalar(arr: np.ndarray, name: str, container: str) -> np.ndarray:
    """Cast a per-point scalar array to a type PLY and PointField can hold (no 64-bit integers).

    bool -> uint8; int64/uint64 -> int32/uint32 when the values fit (else ValueError); float16 ->
    float32; other numeric types unchanged. ``container`` names the format in error messages.
    """
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.dtype.itemsize == 8:
            target = np.dtype(np.int32 if arr.dtype.kind == "i" else np.uint32)
            info = np.iinfo(target)
            if arr.size and (arr.min() < info.min or arr.max() > info.max):
                raise ValueError(f"field {name!r} has values outside the {target} range {container} can store")
            return arr.astype(target)
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        if arr.dtype.itemsize in (4, 8):
            return arr
        return arr.astype(np.float32 if arr.dtype.itemsize < 4 else np.float64)
    raise TypeError(f"field {name!r} must be numeric, got dtype {arr.dtype}")
