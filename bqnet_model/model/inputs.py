"""Model inputs: one scene as voxels + superpoints, and the batch dict ``BQNet.forward`` consumes.

Training, evaluation and ``Segmenter.prepare`` all build their batches here, so the model sees
exactly the same voxelization and features everywhere (see docs/architecture.md, "Model inputs").
Everything per scene is numpy; ``collate_scenes`` makes the torch tensors. ``single_scene_batch``
builds the same dict for one scene from arrays or device tensors (``Segmenter.prepare``'s GPU
ingest, ``bqnet_model.ingest``), optionally before its superpoints are known.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from bqnet_model.ingest import voxel_inputs_torch
from bqnet_model.pointcloud import as_xyz, rgb_to_uint8

__all__ = ["SceneInputs", "scene_inputs", "voxel_inputs", "collate_scenes", "single_scene_batch",
           "set_batch_superpoints", "superpoint_targets", "dense_labels", "MIN_SPATIAL_SHAPE"]

# The original clamps the sparse grid to at least 128 voxels per axis (5 stride-2 levels need room).
MIN_SPATIAL_SHAPE = 128


@dataclass
class SceneInputs:
    """One scene, ready to be batched: voxel grid, voxel features and the point/superpoint maps.

    ``superpoints`` are dense 0..S-1 (``scene_inputs`` re-densifies them, which is the identity for
    labels that already are dense, so a crop that removed whole superpoints stays consistent).
    """

    coords: np.ndarray  # int32 (V, 3), >= 0
    feats: np.ndarray  # float32 (V, 6): voxel mean of [rgb / 127.5 - 1, xyz - mean(xyz)]
    p2v: np.ndarray  # int64 (N,), point -> voxel row
    xyz: np.ndarray  # float32 (N, 3), the points as given
    superpoints: np.ndarray  # int64 (N,), dense 0..S-1
    n_superpoints: int
    voxel_size: float

    @property
    def n_points(self) -> int:
        return int(self.xyz.shape[0])

    @property
    def n_voxels(self) -> int:
        return int(self.coords.shape[0])

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """Grid extent of this scene (coords max + 1), before the >= 128 clamp of the batch."""
        top = self.coords.max(axis=0) + 1
        return int(top[0]), int(top[1]), int(top[2])


def dense_labels(labels: np.ndarray, name: str = "superpoints") -> tuple[np.ndarray, int]:
    """Map arbitrary non-negative int labels to dense 0..S-1 keeping their order; returns (dense, S).

    Dense input comes back unchanged (np.unique of 0..S-1 is the identity map).
    """
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must have shape (N,), got {arr.shape}")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        raise ValueError(f"{name} must be non-negative, got min {lo}")
    if hi < arr.size:
        # Already dense (the online superpoints are): a bincount proves it in O(N) where np.unique
        # would sort. Same result as the unique path, as a new array.
        if np.bincount(arr.astype(np.int64, copy=False), minlength=hi + 1).all():
            return arr.astype(np.int64, copy=True), hi + 1
    uniq, inv = np.unique(arr, return_inverse=True)
    return inv.reshape(-1).astype(np.int64, copy=False), int(len(uniq))


def scene_inputs(
    xyz: np.ndarray, rgb: np.ndarray, superpoints: np.ndarray, voxel_size: float = 0.02, *,
    grid_xyz: np.ndarray | None = None, rgb_shift: np.ndarray | None = None,
) -> SceneInputs:
    """Voxelize one scene (``voxel_inputs``: scale 1/voxel_size, coords >= 0).

    Voxel features are the mean over the voxel's points of ``[rgb / 127.5 - 1, xyz - mean(xyz)]``
    (6 channels, as the original's ``input_channel 6``). xyz enters in metres, centred on the
    scene's point mean as the original's preprocessing centres every ScanNet scene: the model then
    sees the same features whatever frame a robot's map lives in. ``SceneInputs.xyz`` keeps the
    caller's frame (superpoint centres, FPS and boxes are translation-invariant or wanted there).
    ``grid_xyz`` / ``rgb_shift``: training's augmentation hooks of ``voxel_inputs``.
    """
    xyz = as_xyz(xyz)
    if not np.isfinite(np.asarray(xyz, dtype=np.float64)).all():
        raise ValueError("xyz contains NaN or Inf; clean the cloud first (bqnet_model.pointcloud.clean)")
    n = int(xyz.shape[0])
    if rgb is None:
        raise ValueError("rgb is required: pass uint8 (N, 3) colours (use a constant grey when none)")
    rgb8 = rgb_to_uint8(rgb, n)
    sp = np.asarray(superpoints)
    if sp.ndim != 1 or sp.shape[0] != n:
        raise ValueError(f"superpoints must have shape ({n},) like xyz, got {sp.shape}")
    sp_dense, n_sp = dense_labels(sp)
    xyz32 = np.ascontiguousarray(xyz, dtype=np.float32)
    coords, feats, p2v = voxel_inputs(xyz32, rgb8, voxel_size, grid_xyz=grid_xyz, rgb_shift=rgb_shift)
    return SceneInputs(
        coords=coords,
        feats=feats,
        p2v=p2v,
        xyz=xyz32,
        superpoints=sp_dense,
        n_superpoints=n_sp,
        voxel_size=float(voxel_size),
    )


def voxel_inputs(xyz: np.ndarray, rgb8: np.ndarray, voxel_size: float = 0.02, *, grid_xyz: np.ndarray | None = None,
                 rgb_shift: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The voxel half of ``scene_inputs`` (no superpoints) for numpy arrays: ``coords`` int32
    (V, 3), ``feats`` float32 (V, 6), ``p2v`` int64 (N,). ``xyz`` float32 (N, 3) finite, ``rgb8``
    uint8 (N, 3). It runs ``ingest.voxel_inputs_torch`` on CPU tensors (no copy in, none out), the
    voxelization inference runs on the segmenter's device, so training and inference cannot
    drift apart; ``grid_xyz`` and ``rgb_shift`` are its augmentation hooks.
    """
    def tensor(a: np.ndarray, dtype: np.dtype) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=dtype))

    v = voxel_inputs_torch(tensor(xyz, np.float32), tensor(rgb8, np.uint8), voxel_size,
                           grid_xyz=None if grid_xyz is None else tensor(grid_xyz, np.float32),
                           rgb_shift=None if rgb_shift is None else tensor(rgb_shift, np.float32))
    return v.coords.numpy(), v.feats.numpy(), v.p2v.numpy()


def _as_tensor(x: np.ndarray | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    return t.to(dtype).contiguous()


def single_scene_batch(
    coords: np.ndarray | torch.Tensor,
    feats: np.ndarray | torch.Tensor,
    p2v: np.ndarray | torch.Tensor,
    point_xyz: np.ndarray | torch.Tensor,
    superpoints: np.ndarray | torch.Tensor | None = None,
    n_superpoints: int | None = None,
) -> dict[str, Any]:
    """``collate_scenes([scene])`` for one scene given as numpy arrays or tensors (on any device).

    Why: ``Segmenter.prepare`` builds its batch from device tensors (GPU ingest) and, with the
    superpoint overlap, before the superpoints exist: then ``superpoints``/``sp_offsets`` are None
    until ``set_batch_superpoints`` fills them. Tensors stay on their device; offsets and the
    spatial shape live on the CPU as in ``collate_scenes``.
    """
    coords_t = _as_tensor(coords, torch.int32)
    if coords_t.ndim != 2 or coords_t.shape[1] != 3:
        raise ValueError(f"coords must have shape (V, 3), got {tuple(coords_t.shape)}")
    n_vox = int(coords_t.shape[0])
    c4 = torch.zeros((n_vox, 4), dtype=torch.int32, device=coords_t.device)
    c4[:, 1:] = coords_t
    top = [int(v) + 1 for v in coords_t.max(dim=0).values.tolist()]
    xyz_t = _as_tensor(point_xyz, torch.float32)
    n_pts = int(xyz_t.shape[0])
    batch: dict[str, Any] = {
        "coords": c4,
        "feats": _as_tensor(feats, torch.float32),
        "spatial_shape": [max(v, MIN_SPATIAL_SHAPE) for v in top],
        "batch_size": 1,
        "p2v": _as_tensor(p2v, torch.int64),
        "point_xyz": xyz_t,
        "superpoints": None,
        "sp_offsets": None,
        "point_offsets": torch.tensor([0, n_pts], dtype=torch.int64),
        "texts": [],
        "text_scene": torch.zeros(0, dtype=torch.int64),
        "gt_sp_masks": None,
        "gt_point_masks": None,
        "meta": None,
        "sp_semantic": None,
    }
    if superpoints is not None:
        set_batch_superpoints(batch, superpoints, n_superpoints)
    return batch


def set_batch_superpoints(
    batch: dict[str, Any], superpoints: np.ndarray | torch.Tensor, n_superpoints: int | None = None
) -> dict[str, Any]:
    """Put one scene's dense superpoint labels (N,) into a ``single_scene_batch`` dict (in place).

    ``n_superpoints`` defaults to max + 1 (the labels must be dense 0..S-1).
    """
    sp_t = _as_tensor(superpoints, torch.int64)
    if sp_t.ndim != 1 or sp_t.shape[0] != batch["point_xyz"].shape[0]:
        raise ValueError(f"superpoints must have shape ({batch['point_xyz'].shape[0]},), got {tuple(sp_t.shape)}")
    n_sp = int(sp_t.max()) + 1 if n_superpoints is None else int(n_superpoints)
    batch["superpoints"] = sp_t
    batch["sp_offsets"] = torch.tensor([0, n_sp], dtype=torch.int64)
    return batch


def superpoint_targets(superpoints: np.ndarray, point_mask: np.ndarray) -> np.ndarray:
    """Ground-truth superpoint mask (S,) float32 by majority vote: 1 when more than half its points are.

    S = superpoints.max() + 1 (superpoints must be dense, as ``SceneInputs.superpoints`` are);
    ties (exactly half) are not targets, as the original's ``> 0.5``.
    """
    sp = np.asarray(superpoints)
    mask = np.asarray(point_mask)
    if sp.ndim != 1 or sp.dtype == np.bool_ or not np.issubdtype(sp.dtype, np.integer):
        raise TypeError(f"superpoints must be a 1-D integer array, got dtype {sp.dtype} shape {sp.shape}")
    if mask.ndim != 1 or mask.shape[0] != sp.shape[0]:
        raise ValueError(f"point_mask must have shape ({sp.shape[0]},) like superpoints, got {mask.shape}")
    if sp.size == 0:
        raise ValueError("superpoints is empty")
    if sp.min() < 0:
        raise ValueError(f"superpoints must be non-negative, got min {int(sp.min())}")
    n_sp = int(sp.max()) + 1
    size = np.bincount(sp, minlength=n_sp)
    hits = np.bincount(sp, weights=mask.astype(bool).astype(np.float64), minlength=n_sp)
    return (2.0 * hits > size).astype(np.float32)


def superpoint_semantic(superpoints: np.ndarray, semantic: np.ndarray) -> np.ndarray:
    """Majority semantic label (S,) int64 of each superpoint over its labelled points (label >= 0);
    -1 where a superpoint has none. Ties go to the smaller label. Dense ``superpoints`` as
    ``SceneInputs.superpoints``; S = superpoints.max() + 1."""
    sp = np.asarray(superpoints)
    sem = np.asarray(semantic)
    if sp.ndim != 1 or sp.size == 0 or not np.issubdtype(sp.dtype, np.integer) or sp.min() < 0:
        raise ValueError("superpoints must be a non-empty 1-D array of non-negative integers")
    if sem.shape != sp.shape or not np.issubdtype(sem.dtype, np.integer):
        raise ValueError(f"semantic must be an integer array of shape {sp.shape}, got {sem.dtype} {sem.shape}")
    n_sp = int(sp.max()) + 1
    out = np.full(n_sp, -1, np.int64)
    lab = sem >= 0
    if not lab.any():
        return out
    k = int(sem[lab].max()) + 1
    votes = np.bincount(sp[lab].astype(np.int64) * k + sem[lab].astype(np.int64), minlength=n_sp * k).reshape(n_sp, k)
    has = votes.sum(1) > 0
    out[has] = votes[has].argmax(1)
    return out


def _check_len(name: str, value: Sequence[Any] | None, n: int) -> None:
    if value is not None and len(value) != n:
        raise ValueError(f"{name} has {len(value)} entries but there are {n} texts")


def collate_scenes(
    scenes: Sequence[SceneInputs],
    texts: Sequence[str] | None = None,
    text_scene: Sequence[int] | np.ndarray | torch.Tensor | None = None,
    gt_sp_masks: Sequence[np.ndarray | torch.Tensor] | None = None,
    gt_point_masks: Sequence[np.ndarray | torch.Tensor] | None = None,
    meta: Sequence[dict] | None = None,
    sp_semantic: Sequence[np.ndarray | torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Concatenate scenes into the batch dict of docs/architecture.md.

    Superpoint ids become global (scene b's ids shifted by ``sp_offsets[b]``), ``p2v`` indexes the
    concatenated voxel rows, ``coords`` gain a leading scene column. ``texts``/``text_scene`` may be
    omitted (``Segmenter.prepare`` batches scenes only): then they are empty. Absent ground truth
    and meta are ``None``. ``gt_sp_masks[t]`` must have S_b entries and ``gt_point_masks[t]`` N_b
    entries for the scene ``b = text_scene[t]``. ``sp_semantic`` (optional, training): one (S_b,)
    int array per scene, the majority semantic label of each superpoint (-1 = none), concatenated
    into ``sp_semantic`` LongTensor (S_total,) aligned with the global superpoint ids (else None).
    """
    if isinstance(scenes, SceneInputs) or not isinstance(scenes, Sequence):
        raise TypeError("scenes must be a list of SceneInputs")
    if len(scenes) == 0:
        raise ValueError("scenes is empty: a batch needs at least one scene")
    for i, s in enumerate(scenes):
        if not isinstance(s, SceneInputs):
            raise TypeError(f"scenes[{i}] is {type(s).__name__}, expected SceneInputs (use scene_inputs())")
    b = len(scenes)
    n_pts = np.array([s.n_points for s in scenes], dtype=np.int64)
    n_vox = np.array([s.n_voxels for s in scenes], dtype=np.int64)
    n_sp = np.array([s.n_superpoints for s in scenes], dtype=np.int64)
    point_offsets = np.concatenate([[0], np.cumsum(n_pts)])
    vox_offsets = np.concatenate([[0], np.cumsum(n_vox)])
    sp_offsets = np.concatenate([[0], np.cumsum(n_sp)])

    coords = np.empty((int(vox_offsets[-1]), 4), dtype=np.int32)
    coords[:, 0] = np.repeat(np.arange(b, dtype=np.int32), n_vox)
    coords[:, 1:] = np.concatenate([s.coords for s in scenes])
    feats = np.concatenate([s.feats for s in scenes]).astype(np.float32, copy=False)
    p2v = np.concatenate([s.p2v + vox_offsets[i] for i, s in enumerate(scenes)])
    superpoints = np.concatenate([s.superpoints + sp_offsets[i] for i, s in enumerate(scenes)])
    point_xyz = np.concatenate([s.xyz for s in scenes]).astype(np.float32, copy=False)
    shape = np.max(np.stack([np.asarray(s.spatial_shape) for s in scenes]), axis=0)
    spatial_shape = [int(v) for v in np.maximum(shape, MIN_SPATIAL_SHAPE)]

    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string")
    text_list: list[str] = [] if texts is None else list(texts)
    for i, t in enumerate(text_list):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
    nt = len(text_list)
    if text_scene is None:
        if nt and b != 1:
            raise ValueError("text_scene is required when a batch of several scenes has texts")
        ts = np.zeros(nt, dtype=np.int64)
    else:
        ts = np.asarray(text_scene.cpu() if isinstance(text_scene, torch.Tensor) else text_scene)
        if ts.ndim != 1 or ts.shape[0] != nt:
            raise ValueError(f"text_scene must have one entry per text ({nt}), got shape {ts.shape}")
        if nt and (ts.dtype == np.bool_ or not np.issubdtype(ts.dtype, np.integer)):
            raise TypeError(f"text_scene must hold integer scene indices, got dtype {ts.dtype}")
        ts = ts.astype(np.int64, copy=False)
        if nt and (ts.min() < 0 or ts.max() >= b):
            raise ValueError(f"text_scene values must be in [0, {b}), got range [{ts.min()}, {ts.max()}]")
    _check_len("gt_sp_masks", gt_sp_masks, nt)
    _check_len("gt_point_masks", gt_point_masks, nt)
    _check_len("meta", meta, nt)

    sp_masks_t: list[torch.Tensor] | None = None
    if gt_sp_masks is not None:
        sp_masks_t = []
        for t, m in enumerate(gt_sp_masks):
            mt = torch.as_tensor(np.asarray(m.cpu() if isinstance(m, torch.Tensor) else m), dtype=torch.float32)
            want = int(n_sp[ts[t]])
            if mt.ndim != 1 or mt.shape[0] != want:
                raise ValueError(f"gt_sp_masks[{t}] has shape {tuple(mt.shape)}, scene {ts[t]} has {want} superpoints")
            sp_masks_t.append(mt)
    sem_t: torch.Tensor | None = None
    if sp_semantic is not None:
        if len(sp_semantic) != b:
            raise ValueError(f"sp_semantic has {len(sp_semantic)} entries but there are {b} scenes")
        sem_parts = []
        for i, m in enumerate(sp_semantic):
            mt = torch.as_tensor(np.asarray(m.cpu() if isinstance(m, torch.Tensor) else m))
            if mt.ndim != 1 or mt.shape[0] != int(n_sp[i]) or mt.is_floating_point() or mt.dtype == torch.bool:
                raise ValueError(f"sp_semantic[{i}] must be an integer array of shape ({int(n_sp[i])},), "
                                 f"got {mt.dtype} {tuple(mt.shape)}")
            sem_parts.append(mt.long())
        sem_t = torch.cat(sem_parts)
    pt_masks_t: list[torch.Tensor] | None = None
    if gt_point_masks is not None:
        pt_masks_t = []
        for t, m in enumerate(gt_point_masks):
            mt = torch.as_tensor(np.asarray(m.cpu() if isinstance(m, torch.Tensor) else m)).bool()
            want = int(n_pts[ts[t]])
            if mt.ndim != 1 or mt.shape[0] != want:
                raise ValueError(f"gt_point_masks[{t}] has shape {tuple(mt.shape)}, scene {ts[t]} has {want} points")
            pt_masks_t.append(mt)

    return {
        "coords": torch.from_numpy(coords),
        "feats": torch.from_numpy(np.ascontiguousarray(feats)),
        "spatial_shape": spatial_shape,
        "batch_size": b,
        "p2v": torch.from_numpy(p2v.astype(np.int64, copy=False)),
        "point_xyz": torch.from_numpy(np.ascontiguousarray(point_xyz)),
        "superpoints": torch.from_numpy(superpoints.astype(np.int64, copy=False)),
        "sp_offsets": torch.from_numpy(sp_offsets.astype(np.int64)),
        "point_offsets": torch.from_numpy(point_offsets.astype(np.int64)),
        "texts": text_list,
        "text_scene": torch.from_numpy(ts.copy()),
        "gt_sp_masks": sp_masks_t,
        "gt_point_masks": pt_masks_t,
        "meta": None if meta is None else [dict(m) for m in meta],
        "sp_semantic": sem_t,
    }
