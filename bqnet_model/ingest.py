"""Map ingest with torch ops on the segmenter's device: clean and voxelize without numpy passes.

Why: on a GPU machine numpy stages of ``Segmenter.prepare`` (clean, voxelize, superpoint
densification) cost more than the whole backbone (``docs/benchmarks.md``). Here the same functions run as sorts / scatters on the device after
one host->device copy of xyz and rgb; only what the CPU needs afterwards (the cleaned cloud for the
C++ oversegmentation and for answers) comes back.

``clean_torch`` computes exactly what ``pointcloud.clean`` computes (same kept rows in the same
order, same errors). ``voxel_inputs_torch`` is the only voxelization: training calls it on CPU
tensors (``inputs.scene_inputs``), so a training scene and the same points at inference share
voxels and point->voxel map exactly, and the features up to float rounding of the float64 sums
(atomics on CUDA add in any order; bit-equal on the CPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bqnet_model.pointcloud import _KEY_BITS, _KEY_MAX, CleanedCloud, as_xyz, check_rgb_layout, check_voxel_size
from bqnet_model.thinning import voxel_thin

__all__ = ["DeviceCloud", "VoxelInputs", "clean_torch", "voxel_inputs_torch", "GREY"]

GREY = 128  # colour of clouds given without rgb (as Segmenter.prepare's numpy path)


@dataclass
class DeviceCloud:
    """A cleaned cloud on the device plus the host copies the CPU stages need.

    ``host`` is the ``CleanedCloud`` that ``pointcloud.clean`` returns for the same input
    (``host.rgb`` None when no colours were given; ``rgb`` here is grey then).
    """

    xyz: Tensor  # float32 (M, 3)
    rgb: Tensor  # uint8 (M, 3)
    index: Tensor  # int64 (M,), rows of the caller's array
    host: CleanedCloud

    @property
    def n_points(self) -> int:
        return int(self.xyz.shape[0])


@dataclass
class VoxelInputs:
    """What ``scene_inputs`` computes about the voxels of one scene, as device tensors."""

    coords: Tensor  # int32 (V, 3), >= 0, lexicographic order
    feats: Tensor  # float32 (V, 6): voxel mean of [rgb / 127.5 - 1, xyz - mean(xyz)]
    p2v: Tensor  # int64 (N,)
    counts: Tensor  # int64 (V,)
    origin: Tensor  # float64 (3,)
    spatial_shape: tuple[int, int, int]  # coords max + 1 per axis (before the >= 128 clamp)

    @property
    def n_voxels(self) -> int:
        return int(self.coords.shape[0])


def _first_unique_rows_torch(pts: Tensor) -> Tensor:
    """Bool mask keeping the first occurrence of every exactly repeated float32 row.

    As ``pointcloud._first_unique_rows``: rows compared by bit pattern after ``+ 0.0`` (-0.0 ==
    0.0), grouped by a stable two-key sort (z, then the packed x|y), so the first row of each group
    in sorted order is its first row in input order. Any total order of the keys groups equal rows
    together, so signed int64 keys group exactly like numpy's unsigned ones.
    """
    bits = (pts + 0.0).contiguous().view(torch.int32)
    xy = (bits[:, 0].long() << 32) | (bits[:, 1].long() & 0xFFFFFFFF)
    z = bits[:, 2]
    o1 = torch.sort(z, stable=True).indices
    o2 = torch.sort(xy[o1], stable=True).indices
    order = o1[o2]
    xy_s, z_s = xy[order], z[order]
    new_group = torch.ones(order.shape[0], dtype=torch.bool, device=pts.device)
    new_group[1:] = (xy_s[1:] != xy_s[:-1]) | (z_s[1:] != z_s[:-1])
    keep = torch.zeros(order.shape[0], dtype=torch.bool, device=pts.device)
    keep[order[new_group]] = True
    return keep


def _rgb_to_uint8_torch(rgb: Tensor, name: str = "rgb") -> Tensor:
    """``pointcloud.rgb_to_uint8`` (same rules, errors and rounding) for a device tensor whose rows
    are already finite. It stays a torch twin because ``clean_torch`` keeps the map on the device:
    the colours are checked, gathered and scaled where they already are, and only the cleaned
    uint8 rows come back to the host, instead of a host gather of the full colour array."""
    if rgb.dtype == torch.uint8:
        return rgb
    if rgb.numel() == 0:
        return rgb.to(torch.uint8)
    lo, hi = (float(v) for v in torch.stack([rgb.min().double(), rgb.max().double()]).tolist())
    if not rgb.is_floating_point():
        if lo < 0 or hi > 255:
            raise ValueError(f"integer {name} must be in 0..255, got range [{int(lo)}, {int(hi)}]")
        return rgb.to(torch.uint8)
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"float {name} must be in [0, 1], got range [{lo:g}, {hi:g}] "
            "(pass uint8 for colours in 0..255)"
        )
    return torch.round(rgb.double() * 255.0).to(torch.uint8)  # round half to even, as np.rint


def _source(a: Any, name: str, n: int | None, dev: torch.device) -> tuple[Tensor, np.ndarray | None]:
    """A caller's (N, 3) array on ``dev`` after ``as_xyz`` / ``check_rgb_layout``'s checks (same
    messages), and its host memory when it has some (None for a tensor on another device): a tensor
    is checked by shape and dtype where it is, then moved without a host copy."""
    if not isinstance(a, Tensor):
        arr = as_xyz(a, name) if n is None else check_rgb_layout(a, n, name)
        return torch.from_numpy(np.ascontiguousarray(arr)).to(dev), arr
    a = a.detach()
    if a.dtype == torch.bool or a.is_complex():
        what = "a float or integer array" if n is None else "uint8 (0..255) or float (0..1)"
        raise TypeError(f"{name} must be {what}, got dtype {a.dtype}")
    if a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3), got {tuple(a.shape)}")
    if n is None and a.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 points)")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name} has {a.shape[0]} rows but xyz has {n} points")
    return a.to(dev), (a.numpy() if a.device.type == "cpu" else None)


def clean_torch(
    xyz: Any,
    rgb: Any = None,
    *,
    max_points: int | None = None,
    dedup: bool = True,
    device: str | torch.device = "cpu",
) -> DeviceCloud:
    """``pointcloud.clean`` on ``device``: one copy of xyz (and rgb) in, the cleaned cloud there.

    Same rules, order and errors as ``clean``: non-finite rows (xyz after the float32 cast, float
    rgb) dropped, exact duplicates dropped keeping the first, then the ``max_points``
    thinning (``thinning.voxel_thin`` on a host copy, so the subset is the numpy path's).
    The host copies in ``DeviceCloud.host`` cost one device->host copy each of xyz, rgb and index.
    ``xyz`` / ``rgb`` may be tensors on any device (a map already on the GPU is not copied through
    the host): the same checks run on their shape and dtype.
    """
    dev = torch.device(device)
    src, xyz_np = _source(xyz, "xyz", None, dev)
    n = int(src.shape[0])
    rgb_t: Tensor | None = None
    rgb_np = None
    if rgb is not None:
        rgb_t, rgb_np = _source(rgb, "rgb", n, dev)
    pts = src.float()  # float64 beyond the float32 range becomes inf here, as in numpy's cast
    finite = torch.isfinite(pts).all(dim=1)
    if rgb_t is not None:
        if rgb_t.is_floating_point():
            finite &= torch.isfinite(rgb_t).all(dim=1)
    index = torch.nonzero(finite).flatten()
    n_kept = int(index.shape[0])
    n_nonfinite = n - n_kept
    if n_kept == 0:
        raise ValueError(f"all {n} points are non-finite (NaN/Inf in xyz or rgb); nothing to clean")
    if n_nonfinite:
        pts = pts.index_select(0, index)
    n_duplicates = 0
    if dedup:
        keep = _first_unique_rows_torch(pts)
        kept = torch.nonzero(keep).flatten()
        n_duplicates = n_kept - int(kept.shape[0])
        if n_duplicates:
            index = index.index_select(0, kept)
            pts = pts.index_select(0, kept)
    n_downsampled = 0
    if max_points is not None:
        sel = np.arange(int(index.shape[0])) if index.shape[0] <= max_points else \
            voxel_thin(pts.cpu().numpy(), max_points)
        n_downsampled = int(index.shape[0]) - len(sel)
        if n_downsampled:
            sel_t = torch.from_numpy(sel).to(dev)
            index = index.index_select(0, sel_t)
            pts = pts.index_select(0, sel_t)
    m = int(index.shape[0])
    if rgb_t is not None:
        rgb8 = _rgb_to_uint8_torch(rgb_t.index_select(0, index) if m != n else rgb_t)
    else:
        rgb8 = torch.full((m, 3), GREY, dtype=torch.uint8, device=dev)
    pts = pts.contiguous()
    index = index.contiguous()
    # The host copies (for the C++ superpoints and the answers); clean() never aliases the caller's
    # buffers and neither does this (.cpu() of a CPU tensor would, hence the explicit copies).
    xyz_h = pts.cpu().numpy()
    index_h = index.cpu().numpy()
    rgb_h = rgb8.cpu().numpy() if rgb_t is not None else None
    if dev.type == "cpu":
        xyz_h = xyz_h.copy() if xyz_np is not None and np.shares_memory(xyz_h, xyz_np) else xyz_h
        if rgb_h is not None and rgb_np is not None and np.shares_memory(rgb_h, rgb_np):
            rgb_h = rgb_h.copy()
    host = CleanedCloud(
        xyz=xyz_h,
        rgb=rgb_h,
        index=index_h.astype(np.int64, copy=False),
        n_input=n,
        n_nonfinite=n_nonfinite,
        n_duplicates=n_duplicates,
        n_downsampled=n_downsampled,
    )
    return DeviceCloud(xyz=pts, rgb=rgb8.contiguous(), index=index, host=host)


def voxel_inputs_torch(xyz: Tensor, rgb: Tensor, voxel_size: float = 0.02, *, grid_xyz: Tensor | None = None,
                       rgb_shift: Tensor | None = None) -> VoxelInputs:
    """``scene_inputs``' voxel half: grid, point->voxel map and voxel mean features, as torch ops
    on the tensors' device. The one voxelization of the project: inference runs it on the
    segmenter's device, training (``inputs.scene_inputs``) on CPU tensors of the same points.

    ``xyz`` float32 (N, 3) finite (cleaned), ``rgb`` uint8 (N, 3), both on one device. Coordinates
    ``floor((grid - min) / voxel_size)`` in float64 (IEEE division on CPU and CUDA alike),
    voxels sorted by their packed key (``torch.unique``, sorted: lexicographic order of the
    coordinates, independent of the point order), features [rgb / 127.5 - 1, xyz - mean(xyz)]
    summed in float64 and divided by the counts.

    Training's augmentation hooks (None in inference): ``grid_xyz`` float32 (N, 3), the cloud whose
    points are assigned to voxels when it differs from ``xyz`` (the elastic distortion moves the
    grid only, the features keep ``xyz``); ``rgb_shift`` float32 (3,), added to every point's
    normalised colour.
    """
    voxel_size = check_voxel_size(voxel_size)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or xyz.shape[0] == 0:
        raise ValueError(f"xyz must have shape (N, 3) with N > 0, got {tuple(xyz.shape)}")
    if rgb.shape != xyz.shape or rgb.dtype != torch.uint8:
        raise ValueError(f"rgb must be uint8 of shape {tuple(xyz.shape)}, got {rgb.dtype} {tuple(rgb.shape)}")
    if grid_xyz is not None and grid_xyz.shape != xyz.shape:
        raise ValueError(f"grid_xyz must have the shape of xyz {tuple(xyz.shape)}, got {tuple(grid_xyz.shape)}")
    if rgb_shift is not None and tuple(rgb_shift.shape) != (3,):
        raise ValueError(f"rgb_shift must have shape (3,), got {tuple(rgb_shift.shape)}")
    pts = xyz.double()
    grid = pts if grid_xyz is None else grid_xyz.double()
    origin = grid.min(dim=0).values
    # Divide by a device tensor, not a Python number: CUDA turns division by a CPU scalar into a
    # multiplication by its reciprocal, which can move a point across a voxel boundary.
    vs = torch.full((), voxel_size, dtype=torch.float64, device=xyz.device)
    q = torch.floor((grid - origin) / vs).long()
    top = [int(v) for v in q.max(dim=0).values.tolist()]
    if max(top) > _KEY_MAX:
        raise ValueError(
            f"cloud spans {top} voxels per axis at voxel_size={voxel_size}; "
            f"at most {_KEY_MAX} are supported (is the unit metres?)"
        )
    keys = (q[:, 0] << (2 * _KEY_BITS)) | (q[:, 1] << _KEY_BITS) | q[:, 2]
    ukeys, p2v, counts = torch.unique(keys, sorted=True, return_inverse=True, return_counts=True)
    coords = torch.stack(
        [ukeys >> (2 * _KEY_BITS), (ukeys >> _KEY_BITS) & _KEY_MAX, ukeys & _KEY_MAX], dim=1
    ).to(torch.int32)
    # Features: centred xyz (float64 mean, cast to float32) and rgb / 127.5 - 1 in float32; the
    # voxel means accumulate in float64.
    centred = (pts - pts.mean(dim=0)).float()
    half = torch.full((), 127.5, dtype=torch.float32, device=xyz.device)  # exact division (see vs)
    colour = rgb.float() / half - 1.0
    if rgb_shift is not None:
        colour = colour + rgb_shift.to(device=xyz.device, dtype=torch.float32)
    point_feats = torch.cat([colour, centred], dim=1)
    sums = torch.zeros((ukeys.shape[0], 6), dtype=torch.float64, device=xyz.device)
    sums.index_add_(0, p2v, point_feats.double())
    feats = (sums / counts.unsqueeze(1)).float()
    shape = (top[0] + 1, top[1] + 1, top[2] + 1)  # max coordinate + 1 == max over the kept voxels
    return VoxelInputs(coords=coords.contiguous(), feats=feats.contiguous(), p2v=p2v.reshape(-1),
                       counts=counts, origin=origin, spatial_shape=shape)
