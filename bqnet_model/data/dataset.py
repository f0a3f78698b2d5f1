"""Torch dataset of scenes with their referring expressions, and the collate function.

One item = one scene with several descriptions, so the backbone runs once for all of them (the
original's ``lang_num_max``). Training items sample ``lang_per_scene`` descriptions of a scene at
random each epoch; evaluation items cover every description exactly once, in chunks.
Per-scene files and JSON follow docs/architecture.md (synthetic and preprocessed ScanNet alike).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from bqnet_model.data.augment import AugmentConfig, augment_xyz, random_crop
from bqnet_model.data.referit import Annotation, assign_res_eval_types, load_annotations
from bqnet_model.data.scannet import load_scene_npz
from bqnet_model.metrics import union_mask
from bqnet_model.model.inputs import SceneInputs, collate_scenes, scene_inputs, superpoint_semantic, superpoint_targets

__all__ = ["ReferSample", "ReferDataset", "collate_fn"]

_TASKS = ("res", "gres")


@dataclass
class ReferSample:
    """One scene (possibly cropped / augmented) and the descriptions that go with it."""

    scene_id: str
    inputs: SceneInputs
    texts: list[str]
    gt_sp_masks: list[np.ndarray]  # (S,) float32 each, majority vote
    gt_point_masks: list[np.ndarray]  # (N,) bool each, union of the targets
    meta: list[dict[str, Any]]
    point_index: np.ndarray  # int64 (N,): rows of the scene file these points are
    gt_sp_inst: list[np.ndarray] = field(default_factory=list)  # (S,) int64 each: target instance id or -1
    extra: dict[str, Any] = field(default_factory=dict)
    sp_semantic: np.ndarray | None = None  # (S,) int64: majority semantic label per superpoint, -1 = none


class ReferDataset(Dataset):
    """Scenes + referring expressions for 3D-RES (``task='res'``) or 3D-GRES (``task='gres'``).

    ``annotations``: a list of ``Annotation`` or a ScanRefer / Multi3DRefer JSON path.
    ``split``: 'train' samples descriptions per scene at random (``set_epoch`` changes the draw);
    any other split ('val', 'test') walks every description once in chunks of ``lang_per_scene``.
    ``augment``: random rotation/flip/scale/jitter/elastic (``augment_cfg``) before voxelization.
    ``max_points``: training crops scenes to this many points around a target; evaluation never
    crops (every point gets a prediction). RES descriptions whose target the crop removed are
    dropped from that item.
    Scene files without superpoints (``superpoint`` all -1, as the synthetic writer leaves them
    when the extension is missing) get ``bqnet_model.superpoints.oversegment(xyz, rgb,
    **superpoint_params)`` once, at construction (pass ``inference.superpoints`` so training sees
    the superpoints inference will compute).
    """

    def __init__(
        self,
        scene_dir: str | os.PathLike,
        annotations: Sequence[Annotation] | str | os.PathLike,
        split: str = "train",
        task: str = "res",
        augment: bool = False,
        max_points: int | None = None,
        lang_per_scene: int = 8,
        *,
        voxel_size: float = 0.02,
        seed: int = 0,
        augment_cfg: AugmentConfig | None = None,
        cache_scenes: bool = False,
        superpoint_params: dict[str, Any] | None = None,
    ) -> None:
        if task not in _TASKS:
            raise ValueError(f"task must be one of {_TASKS}, got {task!r}")
        if isinstance(lang_per_scene, bool) or not isinstance(lang_per_scene, int) or lang_per_scene < 1:
            raise ValueError(f"lang_per_scene must be a positive integer, got {lang_per_scene!r}")
        if max_points is not None and (isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 1):
            raise ValueError(f"max_points must be a positive integer or None, got {max_points!r}")
        self.scene_dir = Path(scene_dir)
        if not self.scene_dir.is_dir():
            raise FileNotFoundError(f"scene folder not found: {self.scene_dir}")
        anns = load_annotations(annotations) if isinstance(annotations, (str, os.PathLike)) else list(annotations)
        if not anns:
            raise ValueError("no annotations: the dataset would be empty")
        for i, a in enumerate(anns):
            if not isinstance(a, Annotation):
                raise TypeError(f"annotations[{i}] is {type(a).__name__}, expected Annotation")
        self.split = str(split)
        self.task = task
        self.train = self.split == "train"
        self.augment = bool(augment)
        self.augment_cfg = augment_cfg or AugmentConfig()
        self.max_points = max_points
        self.lang_per_scene = lang_per_scene
        self.voxel_size = float(voxel_size)
        self.seed = int(seed)
        self.epoch = 0
        self._cache: dict[str, dict[str, np.ndarray]] | None = {} if cache_scenes else None

        scene_ids = sorted({a.scene_id for a in anns})
        missing = [s for s in scene_ids if not (self.scene_dir / f"{s}.npz").is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} of {len(scene_ids)} scenes have no file in {self.scene_dir} "
                f"(e.g. {missing[:3]}); preprocess them or filter the annotations"
            )
        if task == "res":
            multi = [a for a in anns if len(a.object_ids) != 1]
            if multi:
                a = multi[0]
                raise ValueError(f"task 'res' needs exactly one target per description; {len(multi)} do not "
                                 f"(e.g. {a.scene_id}/{a.ann_id}: {a.object_ids}); use task='gres'")
            if any(a.eval_type is None for a in anns):
                assign_res_eval_types(anns, self.scene_dir)
        self.annotations = anns
        self.superpoint_params = dict(superpoint_params or {})
        self._computed_sp: dict[str, np.ndarray] = {}
        for sid in scene_ids:
            with np.load(self.scene_dir / f"{sid}.npz", allow_pickle=False) as z:
                if "superpoint" in z.files and (z["superpoint"] < 0).any():
                    self._computed_sp[sid] = np.empty(0, np.int64)  # filled below
        if self._computed_sp:
            from bqnet_model.superpoints import oversegment

            for sid in self._computed_sp:
                data = load_scene_npz(self.scene_dir / f"{sid}.npz")
                self._computed_sp[sid] = np.asarray(
                    oversegment(data["xyz"], data["rgb"], **self.superpoint_params), dtype=np.int64)
        by_scene: dict[str, list[int]] = {}
        for i, a in enumerate(anns):
            by_scene.setdefault(a.scene_id, []).append(i)
        self.scene_ids = scene_ids
        self._by_scene = by_scene
        if self.train:
            self.items: list[tuple[str, list[int]]] = [(s, by_scene[s]) for s in scene_ids]
        else:
            self.items = [(s, by_scene[s][k:k + lang_per_scene])
                          for s in scene_ids for k in range(0, len(by_scene[s]), lang_per_scene)]

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Change the random draw (descriptions, augmentation, crop) of the next epoch."""
        self.epoch = int(epoch)

    def load_scene(self, scene_id: str) -> dict[str, np.ndarray]:
        """The scene file's arrays (kept in memory when ``cache_scenes``)."""
        if self._cache is not None and scene_id in self._cache:
            return self._cache[scene_id]
        data = load_scene_npz(self.scene_dir / f"{scene_id}.npz")
        if scene_id in self._computed_sp:
            data["superpoint"] = self._computed_sp[scene_id]
        if self._cache is not None:
            self._cache[scene_id] = data
        return data

    def item(self, idx: int) -> tuple[str, list[Annotation]]:
        """Scene id and annotations of item ``idx`` without loading anything (all of them for a
        training item, before the per-epoch draw)."""
        if not 0 <= idx < len(self.items):
            raise IndexError(f"index {idx} out of range for {len(self.items)} items")
        scene_id, ann_idx = self.items[idx]
        return scene_id, [self.annotations[i] for i in ann_idx]

    def __getitem__(self, key: int | tuple[int, int]) -> ReferSample:
        """Item ``key``; an ``(epoch, index)`` pair selects that epoch's random draw, so persistent
        DataLoader workers (which never see ``set_epoch``) still change it every epoch."""
        if isinstance(key, tuple):
            if len(key) != 2:
                raise TypeError(f"key must be an index or an (epoch, index) pair, got {key!r}")
            epoch, idx = int(key[0]), int(key[1])
        else:
            epoch, idx = self.epoch, int(key)
        if not 0 <= idx < len(self.items):
            raise IndexError(f"index {idx} out of range for {len(self.items)} items")
        scene_id, ann_idx = self.items[idx]
        rng = np.random.default_rng([self.seed, epoch, idx])
        if self.train and len(ann_idx) > self.lang_per_scene:
            ann_idx = [ann_idx[i] for i in np.sort(rng.choice(len(ann_idx), self.lang_per_scene, replace=False))]
        anns = [self.annotations[i] for i in ann_idx]
        data = self.load_scene(scene_id)
        inst = data["instance"]
        full_masks = [union_mask(inst, a.object_ids) for a in anns]
        for a, m in zip(anns, full_masks):
            if a.object_ids and not m.any():
                raise ValueError(f"{scene_id}/{a.ann_id}: target ids {a.object_ids} have no points in the scene")

        xyz = data["xyz"]
        if self.augment:
            xyz = augment_xyz(xyz, self.augment_cfg, rng)
        keep = np.arange(xyz.shape[0], dtype=np.int64)
        if self.train and self.max_points is not None and xyz.shape[0] > self.max_points:
            focus = np.flatnonzero(np.logical_or.reduce(full_masks)) if full_masks else None
            keep = random_crop(xyz, self.max_points, rng, focus)
        cropped = len(keep) != xyz.shape[0]
        if cropped:
            xyz = xyz[keep]
        rgb = data["rgb"][keep] if cropped else data["rgb"]
        sp = data["superpoint"][keep] if cropped else data["superpoint"]
        inputs = scene_inputs(xyz, rgb, sp, self.voxel_size)
        sp_sem = None
        if "semantic" in data:
            sem = data["semantic"][keep] if cropped else data["semantic"]
            sp_sem = superpoint_semantic(inputs.superpoints, sem)

        inst_kept = inst[keep] if cropped else inst
        texts, sp_masks, pt_masks, sp_inst, meta = [], [], [], [], []
        for a, m in zip(anns, full_masks):
            pm = m[keep] if cropped else m
            if cropped and a.object_ids and not pm.any():
                continue  # the crop removed this description's target(s)
            texts.append(a.description)
            pt_masks.append(pm)
            sp_masks.append(superpoint_targets(inputs.superpoints, pm))
            si = np.full(inputs.n_superpoints, -1, np.int64)
            for k in a.object_ids:  # targets are disjoint: at most one holds a superpoint's majority
                si[superpoint_targets(inputs.superpoints, inst_kept == k) > 0] = k
            sp_inst.append(si)
            meta.append({"scene_id": scene_id, "ann_id": a.ann_id, "object_ids": list(a.object_ids),
                         "object_name": a.object_name, "eval_type": a.eval_type})
        return ReferSample(scene_id, inputs, texts, sp_masks, pt_masks, meta, keep, sp_inst, sp_semantic=sp_sem)


def collate_fn(samples: Sequence[ReferSample]) -> dict[str, Any]:
    """Batch ``ReferSample``s with ``collate_scenes`` (the dict of docs/architecture.md), plus
    ``gt_sp_inst``: list (T) of LongTensor (S_b,), the target instance id of each superpoint (-1 =
    not a target), which lets the loss train a GRES query on its own object, and ``sp_semantic``:
    LongTensor (S_total,) majority semantic label per global superpoint (-1 = none; None unless
    every sample has one), the target of the auxiliary semantic head."""
    if not samples:
        raise ValueError("collate_fn got an empty list of samples")
    texts: list[str] = []
    text_scene: list[int] = []
    sp_masks: list[np.ndarray] = []
    pt_masks: list[np.ndarray] = []
    sp_inst: list[np.ndarray] = []
    meta: list[dict[str, Any]] = []
    for b, s in enumerate(samples):
        if not isinstance(s, ReferSample):
            raise TypeError(f"samples[{b}] is {type(s).__name__}, expected ReferSample")
        texts += s.texts
        text_scene += [b] * len(s.texts)
        sp_masks += s.gt_sp_masks
        pt_masks += s.gt_point_masks
        sp_inst += s.gt_sp_inst
        meta += s.meta
    sems = [s.sp_semantic for s in samples]
    batch = collate_scenes([s.inputs for s in samples], texts, torch.tensor(text_scene, dtype=torch.long),
                           sp_masks, pt_masks, meta,
                           sp_semantic=None if any(m is None for m in sems) else sems)
    batch["gt_sp_inst"] = [torch.from_numpy(m) for m in sp_inst] if len(sp_inst) == len(texts) else None
    return batch
