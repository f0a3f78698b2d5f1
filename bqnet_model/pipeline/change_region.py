"""Where a new version of a map differs from the cached one, and how far a change can reach.

``Segmenter.update`` (``incremental.py``) re-encodes only what a change can affect. This module
holds the geometry of that decision, as vectorised torch ops on the voxel grid (any device):

* ``receptive_field``: how many voxels (L-infinity) a sparse U-Net output can look, counted from
  the backbone's levels and blocks (``model/backbone.py``);
* ``diff_voxels``: voxels that are new, removed, or whose content (point count, mean colour, mean
  position) changed beyond a tolerance, by matching packed voxel keys of the two maps;
* ``within_reach``: every voxel within an L-infinity distance of a set of seed voxels, by dilating
  a dense occupancy grid cropped to the seeds (conservative: it may include voxels up to one
  grid block farther, never fewer);
* ``match_points``: rows of the new cleaned cloud that are bit-identical points of the old one,
  by a hash of their float32 coordinates (verified, so a hash collision only loses a match).

The point hashing and matching come twice: ``point_hashes_torch`` / ``match_points_torch`` run where
the cloud already is (the update keeps the map on the segmenter's device, so no per-point array
crosses to the host), and the numpy ``point_hashes`` / ``match_points`` are their reference (the tests
check that both give the same bits and the same matches).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bqnet_model.model.config import BackboneConfig
from bqnet_model.pointcloud import _KEY_BITS, _KEY_MAX

__all__ = ["receptive_field", "boundary_reach", "pack_keys", "unpack_keys", "VoxelDiff", "diff_voxels",
           "within_reach", "point_hashes", "match_points", "point_hashes_torch", "sorted_hashes", "match_points_torch"]

# A dense grid larger than this is coarsened (blocks of 2, 4, ... voxels) before dilation.
MAX_GRID_CELLS = 1 << 25
# Dilation runs on blocks of about reach / BLOCKS_PER_REACH voxels: max-pool kernels stay short
# (2 * 8 + 1) whatever the reach, at the price of including up to one block too many.
BLOCKS_PER_REACH = 8


def receptive_field(cfg: BackboneConfig) -> int:
    """L-infinity radius, in voxels of the finest level, of the input a backbone output depends on
    (features and which voxels are active).

    Counted from ``SparseUNetBackbone``: ``input_conv`` is one 3^3 submanifold conv (1 voxel); a
    level holds ``block_reps`` residual blocks of two 3^3 submanifold convs before and after its
    skip (``2 * block_reps`` voxels of its own scale each); going down (k=2, s=2) and up (inverse
    k=2) costs at most one voxel of the finer level around the deeper level's radius doubled. So
    with ``b = block_reps`` the deepest level looks ``2b`` of its voxels and level ``l`` looks
    ``R_l = 4b + 2 R_{l+1} + 1``; the whole network ``1 + R_1``.
    """
    b = int(cfg.block_reps)
    r = 2 * b
    for _ in range(int(cfg.levels) - 1):
        r = 4 * b + 2 * r + 1
    return 1 + r


def boundary_reach(cfg: BackboneConfig) -> int:
    """Voxels below the grid's upper end whose outputs depend on the spatial shape.

    A stride-2 conv drops an odd grid's last row (its parent lies outside the coarser grid); which
    rows are dropped at every level depends on the shape, and the rows lie within ``2 ** levels``
    voxels of the top. Growing the grid therefore changes outputs there (and within the receptive
    field of them), which ``diff_voxels`` treats as a change."""
    return (1 << int(cfg.levels)) + 2


def pack_keys(coords: Tensor) -> Tensor:
    """int64 keys of non-negative voxel coordinates (V, 3), ordered as ``voxel_inputs_torch``'s."""
    q = coords.long()
    return (q[:, 0] << (2 * _KEY_BITS)) | (q[:, 1] << _KEY_BITS) | q[:, 2]


def unpack_keys(keys: Tensor) -> Tensor:
    """(V, 3) int64 coordinates of ``pack_keys`` keys."""
    return torch.stack([keys >> (2 * _KEY_BITS), (keys >> _KEY_BITS) & _KEY_MAX, keys & _KEY_MAX], dim=1)


def _lookup(sorted_keys: Tensor, keys: Tensor) -> Tensor:
    """Row of each key in ``sorted_keys`` (ascending, unique), -1 where absent."""
    if sorted_keys.numel() == 0:
        return torch.full_like(keys, -1)
    pos = torch.searchsorted(sorted_keys, keys).clamp_max(sorted_keys.shape[0] - 1)
    return torch.where(sorted_keys[pos] == keys, pos, torch.full_like(pos, -1))


@dataclass
class VoxelDiff:
    """What changed between two voxelizations on one grid."""

    old_of_new: Tensor  # int64 (V_new,): row of the same voxel in the old map, -1 for a new voxel
    changed: Tensor  # bool (V_new,): new, or content beyond the tolerances, or near a moved grid end
    seeds: Tensor  # int64 (K, 3): coordinates of every changed voxel, removed ones included

    @property
    def n_changed(self) -> int:
        return int(self.seeds.shape[0])


def diff_voxels(old_keys: Tensor, old_counts: Tensor, old_means: Tensor, new_keys: Tensor, new_counts: Tensor,
                new_means: Tensor, xyz_tol: float, colour_tol: float,
                old_shape: list[int], new_shape: list[int], edge: int) -> VoxelDiff:
    """Voxel-level difference of two maps on the same grid (same origin and voxel size).

    ``*_means`` (V, 6) float64: mean colour (as the backbone input, in [-1, 1]) and mean position in
    metres. A voxel that holds the same number of points with means within ``colour_tol`` /
    ``xyz_tol`` (max over channels) is unchanged. When the spatial shape differs on an axis, the
    voxels within ``edge`` (``boundary_reach``) of the smaller upper end count as changed too."""
    old_of_new = _lookup(old_keys, new_keys)
    hit = old_of_new >= 0
    j = old_of_new.clamp_min(0)
    same = hit & (old_counts[j] == new_counts)
    dm = (old_means[j] - new_means).abs()
    same &= (dm[:, :3].amax(1) <= colour_tol) & (dm[:, 3:].amax(1) <= xyz_tol)
    new_coords = unpack_keys(new_keys)
    old_coords = unpack_keys(old_keys)
    changed = ~same
    removed = torch.ones(old_keys.shape[0], dtype=torch.bool, device=old_keys.device)
    removed[old_of_new[hit]] = False
    edge_old = torch.zeros_like(removed)
    for a in range(3):
        if old_shape[a] != new_shape[a]:
            top = min(old_shape[a], new_shape[a]) - edge
            changed |= new_coords[:, a] >= top
            edge_old |= old_coords[:, a] >= top
    seeds = torch.cat([new_coords[changed], old_coords[removed | edge_old]], dim=0)
    return VoxelDiff(old_of_new=old_of_new, changed=changed, seeds=seeds)


def within_reach(coords: Tensor, seeds: Tensor, reach: int, max_cells: int = MAX_GRID_CELLS) -> Tensor:
    """bool (V,): voxels at ``coords`` (V, 3) within L-infinity ``reach`` voxels of any seed (K, 3).

    Exact for small reaches; otherwise on blocks of ``b`` voxels (``b`` ~ reach / 8, or larger when
    the seeds' box would need more than ``max_cells`` cells), which adds voxels up to ``b`` farther:
    callers use it for regions that must contain the reach, never for regions that must not."""
    dev = coords.device
    out = torch.zeros(coords.shape[0], dtype=torch.bool, device=dev)
    if seeds.shape[0] == 0 or coords.shape[0] == 0:
        return out
    seeds = seeds.long()
    coords = coords.long()
    lo = seeds.amin(0) - reach
    hi = seeds.amax(0) + reach
    span = (hi - lo + 1).tolist()
    b = max(1, math.ceil(reach / BLOCKS_PER_REACH))
    while math.prod(math.ceil(s / b) for s in span) > max_cells:
        b *= 2
    k = math.ceil(reach / b)
    dims = [math.ceil(s / b) for s in span]
    grid = torch.zeros(dims, dtype=torch.float32, device=dev)
    sb = torch.div(seeds - lo, b, rounding_mode="floor")
    grid[sb[:, 0], sb[:, 1], sb[:, 2]] = 1.0
    if k > 0:
        g = grid[None, None]
        for kernel in ((2 * k + 1, 1, 1), (1, 2 * k + 1, 1), (1, 1, 2 * k + 1)):
            pad = tuple(s // 2 for s in kernel)
            g = F.max_pool3d(g, kernel_size=kernel, stride=1, padding=pad)
        grid = g[0, 0]
    inside = ((coords >= lo) & (coords <= hi)).all(1)
    cb = torch.div(coords[inside] - lo, b, rounding_mode="floor")
    out[inside] = grid[cb[:, 0], cb[:, 1], cb[:, 2]] > 0
    return out


_H = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9], dtype=np.uint64)


def point_hashes(xyz: np.ndarray) -> np.ndarray:
    """uint64 (M,) hash of float32 coordinates (bit patterns, -0.0 as 0.0)."""
    bits = np.ascontiguousarray(xyz, np.float32) + np.float32(0.0)
    u = bits.view(np.uint32).astype(np.uint64)
    with np.errstate(over="ignore"):
        h = (u[:, 0] * _H[0]) ^ (u[:, 1] * _H[1]) ^ (u[:, 2] * _H[2])
        return h ^ (h >> np.uint64(29))


def match_points(old_xyz: np.ndarray, old_sorted: np.ndarray, old_order: np.ndarray,
                 new_xyz: np.ndarray) -> np.ndarray:
    """int64 (M_new,): the old cleaned row holding exactly the same point as each new row, -1 when
    none. ``old_sorted`` / ``old_order``: ``point_hashes(old_xyz)`` sorted and its argsort (kept with
    the cache). Cleaned clouds hold no duplicate points, so a match is one-to-one."""
    h = point_hashes(new_xyz)
    if old_sorted.size == 0:
        return np.full(h.shape[0], -1, np.int64)
    pos = np.minimum(np.searchsorted(old_sorted, h), old_sorted.size - 1)
    cand = old_order[pos]
    ok = (old_sorted[pos] == h) & (old_xyz[cand] == new_xyz).all(axis=1)
    return np.where(ok, cand, -1).astype(np.int64)


def _signed(c: int) -> int:
    """A uint64 constant as the int64 with the same bits (torch has no general uint64 arithmetic)."""
    return c - (1 << 64) if c >= 1 << 63 else c


_H_SIGNED = tuple(_signed(int(c)) for c in _H)
_LOW_35 = (1 << 35) - 1  # h >> 29 on int64 is arithmetic: masking keeps the logical shift's 35 bits


def point_hashes_torch(xyz: Tensor) -> Tensor:
    """``point_hashes`` as int64 on ``xyz``'s device: the same 64 bits (``.view(uint64)`` of the
    host copy equals the numpy hash). Products wrap modulo 2**64 in int64 as in uint64."""
    bits = (xyz.float() + 0.0).contiguous().view(torch.int32).long() & 0xFFFFFFFF  # zero-extend as uint32
    h = (bits[:, 0] * _H_SIGNED[0]) ^ (bits[:, 1] * _H_SIGNED[1]) ^ (bits[:, 2] * _H_SIGNED[2])
    return h ^ ((h >> 29) & _LOW_35)


def sorted_hashes(xyz: Tensor) -> tuple[Tensor, Tensor]:
    """(sorted ``point_hashes_torch``, their stable argsort): what ``match_points_torch`` looks new
    points up in. Sorted as signed integers: a different order of distinct keys than numpy's
    unsigned one, the same order within equal keys (stable), so every match is the same."""
    h = point_hashes_torch(xyz)
    s = torch.sort(h, stable=True)
    return s.values, s.indices


def match_points_torch(old_xyz: Tensor, old_sorted: Tensor, old_order: Tensor, new_xyz: Tensor) -> Tensor:
    """``match_points`` on the tensors' device: int64 (M_new,) old row of each new point, -1 when
    none. ``old_sorted`` / ``old_order``: ``sorted_hashes(old_xyz)``. No host synchronisation."""
    h = point_hashes_torch(new_xyz)
    if old_sorted.numel() == 0:
        return torch.full_like(h, -1)
    pos = torch.searchsorted(old_sorted, h).clamp_max(old_sorted.shape[0] - 1)
    cand = old_order[pos]
    ok = (old_sorted[pos] == h) & (old_xyz[cand] == new_xyz.to(old_xyz.dtype)).all(dim=1)
    return torch.where(ok, cand, torch.full_like(cand, -1))
