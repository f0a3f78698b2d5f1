"""Torch dataset of scenes with their referring expressions, and the collate function.

One item = one scene with a chunk of at most ``lang_per_scene`` of its descriptions (the authors'
``lang_num_max``: 4 in training, 32 in evaluation), consecutive in the annotation order, so the
backbone runs once per chunk and an epoch covers every description of every scene exactly once.
Per-scene files and JSON follow docs/architecture.md (synthetic and preprocessed ScanNet alike).

Besides the masks, each description carries what the authors' loss reads: the target instance of
each superpoint (``gt_sp_inst``, for the query-object matching), ``sp_ref_masks`` (the soft
sampling target: superpoint mean of 1 on target points, 0.5 on points of instances whose class
the sentence names, optionally ``anchor_ref`` on the sentence's anchors, 0 elsewhere) and its ``PreparedText`` (``bqnet_model.model.text_prep``: the
span token maps of the contrastive term and the named classes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from bqnet_model.data.augment import AugmentConfig, augment_points, colour_shift, random_crop
from bqnet_model.data.referit import Annotation, assign_res_eval_types, load_annotations
from bqnet_model.data.scannet import load_scene_npz
from bqnet_model.data.classes import CLASSES
from bqnet_model.metrics import union_mask
from bqnet_model.model.inputs import (SceneInputs, collate_scenes, scene_inputs, superpoint_semantic,
                                      superpoint_targets)
from bqnet_model.superpoint_params import SuperpointParams

__all__ = ["ReferSample", "ReferDataset", "collate_fn", "target_superpoints", "anchor_superpoints", "reference_mask"]

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
    sp_ref_masks: list[np.ndarray] = field(default_factory=list)  # (S,) float32 each: soft sampling target
    prepared: list[Any] = field(default_factory=list)  # text_prep.PreparedText of each description
    gt_sp_anchor: list[np.ndarray] = field(default_factory=list)  # (S,) int64 each: anchor instance id or -1


class ReferDataset(Dataset):
    """Scenes + referring expressions for 3D-RES (``task='res'``) or 3D-GRES (``task='gres'``).

    ``annotations``: a list of ``Annotation`` or a ScanRefer / Multi3DRefer JSON path.
    ``split``: 'train' draws augmentation and crop per epoch (``set_epoch``); every split walks
    every description once per epoch, in chunks of ``lang_per_scene``.
    ``augment``: the random linear map, elastic grid distortion and colour shift of
    ``augment_cfg`` (``bqnet_model.data.augment``) before voxelization.
    ``max_points``: training crops scenes to this many points around a target; evaluation never
    crops (every point gets a prediction). Descriptions whose targets the crop removed entirely
    are dropped from that item (a GRES description keeps the targets that remain).
    ``scanrefer``: the text is ScanRefer's ``token`` field joined by spaces when the annotation
    has one, and ``prepare_text`` runs in its ScanRefer mode, as the authors' ScanRefer loader.
    ``prepare``: the text preparation (default ``text_prep.prepare_text``); its result per
    description is cached for the dataset's lifetime.
    Scene files without superpoints (``superpoint`` all -1, as the synthetic writer leaves them
    when the extension is missing) get ``bqnet_model.superpoints.oversegment_detailed(xyz, rgb,
    params=superpoint_params)`` once, at construction (pass ``inference.superpoints`` so training
    sees the superpoints inference will compute; None = the defaults).
    ``anchor_ref``: the value ``reference_mask`` gives the annotations' anchors
    (``Annotation.anchor_ids``; the config's ``model.loss.anchor_ref``), 0 = off.
    """

    def __init__(
        self,
        scene_dir: str | os.PathLike,
        annotations: Sequence[Annotation] | str | os.PathLike,
        split: str = "train",
        task: str = "res",
        augment: bool = False,
        max_points: int | None = None,
        lang_per_scene: int = 4,
        *,
        voxel_size: float = 0.02,
        seed: int = 0,
        augment_cfg: AugmentConfig | None = None,
        cache_scenes: bool = False,
        superpoint_params: SuperpointParams | None = None,
        scanrefer: bool = False,
        prepare: Callable[..., Any] | None = None,
        anchor_ref: float = 0.0,
    ) -> None:
        if task not in _TASKS:
            raise ValueError(f"task must be one of {_TASKS}, got {task!r}")
        if isinstance(lang_per_scene, bool) or not isinstance(lang_per_scene, int) or lang_per_scene < 1:
            raise ValueError(f"lang_per_scene must be a positive integer, got {lang_per_scene!r}")
        if max_points is not None and (isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 1):
            raise ValueError(f"max_points must be a positive integer or None, got {max_points!r}")
        if isinstance(anchor_ref, bool) or not isinstance(anchor_ref, (int, float)) or not 0.0 <= anchor_ref <= 1.0:
            raise ValueError(f"anchor_ref must be a number in [0, 1] (0 = off), got {anchor_ref!r}")
        self.anchor_ref = float(anchor_ref)
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
        self.scanrefer = bool(scanrefer)
        self._prepare = prepare
        self._prepared: dict[int, Any] = {}

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
        if superpoint_params is not None and not isinstance(superpoint_params, SuperpointParams):
            raise TypeError("superpoint_params must be a SuperpointParams (inference.superpoints) or None, "
                            f"got {type(superpoint_params).__name__}")
        self.superpoint_params = superpoint_params or SuperpointParams()
        self._computed_sp: dict[str, np.ndarray] = {}
        for sid in scene_ids:
            with np.load(self.scene_dir / f"{sid}.npz", allow_pickle=False) as z:
                if "superpoint" in z.files and (z["superpoint"] < 0).any():
                    self._computed_sp[sid] = np.empty(0, np.int64)  # filled below
        if self._computed_sp:
            from bqnet_model.superpoints import oversegment_detailed

            for sid in self._computed_sp:
                data = load_scene_npz(self.scene_dir / f"{sid}.npz")
                self._computed_sp[sid] = np.asarray(oversegment_detailed(
                    data["xyz"], data["rgb"], params=self.superpoint_params).labels, dtype=np.int64)
        by_scene: dict[str, list[int]] = {}
        for i, a in enumerate(anns):
            by_scene.setdefault(a.scene_id, []).append(i)
        self.scene_ids = scene_ids
        self._by_scene = by_scene
        self.items: list[tuple[str, list[int]]] = [
            (s, by_scene[s][k:k + lang_per_scene]) for s in scene_ids for k in range(0, len(by_scene[s]), lang_per_scene)]

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Change the random draw (augmentation, crop) of the next epoch."""
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

    def text_of(self, ann: Annotation) -> str:
        """The sentence the model reads for ``ann``: ScanRefer's joined ``token`` field in
        ``scanrefer`` mode when present (the authors' source), else the description."""
        tokens = ann.extra.get("token") if self.scanrefer else None
        if isinstance(tokens, list) and tokens and all(isinstance(t, str) for t in tokens):
            return " ".join(tokens)
        return ann.description

    def prepared(self, ann_index: int) -> Any:
        """``PreparedText`` of annotation ``ann_index`` (cached)."""
        if ann_index not in self._prepared:
            if self._prepare is None:
                from bqnet_model.text import prepare_text

                self._prepare = prepare_text
            self._prepared[ann_index] = self._prepare(self.text_of(self.annotations[ann_index]),
                                                      scanrefer=self.scanrefer)
        return self._prepared[ann_index]

    def item(self, idx: int) -> tuple[str, list[Annotation]]:
        """Scene id and annotations of item ``idx`` without loading anything."""
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
        anns = [self.annotations[i] for i in ann_idx]
        data = self.load_scene(scene_id)
        inst = data["instance"]
        full_masks = [union_mask(inst, a.object_ids) for a in anns]
        for a, m in zip(anns, full_masks):
            if a.object_ids and not m.any():
                raise ValueError(f"{scene_id}/{a.ann_id}: target ids {a.object_ids} have no points in the scene")

        xyz = data["xyz"]
        grid_xyz = xyz
        shift = np.zeros(3, np.float32)
        if self.augment:
            aug = augment_points(xyz, self.augment_cfg, rng)
            xyz, grid_xyz = aug.xyz, aug.grid_xyz
            shift = colour_shift(self.augment_cfg, rng)
        keep = np.arange(xyz.shape[0], dtype=np.int64)
        if self.train and self.max_points is not None and xyz.shape[0] > self.max_points:
            focus = np.flatnonzero(np.logical_or.reduce(full_masks)) if full_masks else None
            keep = random_crop(xyz, self.max_points, rng, focus)
        cropped = len(keep) != xyz.shape[0]

        def rows(a: np.ndarray) -> np.ndarray:
            return a[keep] if cropped else a

        # voxels from the (elastically distorted) grid cloud, features from the undistorted xyz
        inputs = scene_inputs(rows(xyz), rows(data["rgb"]), rows(data["superpoint"]), self.voxel_size,
                              grid_xyz=None if grid_xyz is xyz else rows(grid_xyz),
                              rgb_shift=shift if shift.any() else None)
        sp_sem = superpoint_semantic(inputs.superpoints, rows(data["semantic"])) if "semantic" in data else None
        inst_kept = rows(inst)
        sem_kept = rows(data["semantic"]) if "semantic" in data else None
        sample = ReferSample(scene_id, inputs, [], [], [], [], keep, [], sp_semantic=sp_sem)
        for i, a, m in zip(ann_idx, anns, full_masks):
            pm = rows(m)
            if cropped and a.object_ids and not pm.any():
                continue  # the crop removed this description's target(s)
            prep = self.prepared(i)
            sample.texts.append(self.text_of(a))
            sample.prepared.append(prep)
            sample.gt_point_masks.append(pm)
            sample.gt_sp_masks.append(superpoint_targets(inputs.superpoints, pm))
            sp_inst = target_superpoints(inputs.superpoints, inst_kept, a.object_ids)
            sample.gt_sp_inst.append(sp_inst)
            sample.gt_sp_anchor.append(anchor_superpoints(inputs.superpoints, inst_kept, a.anchor_ids, sp_inst))
            sample.sp_ref_masks.append(reference_mask(inputs.superpoints, inst_kept, sem_kept, a.object_ids,
                                                      getattr(prep, "context_classes", ()),
                                                      a.anchor_ids, self.anchor_ref))
            sample.meta.append({"scene_id": scene_id, "ann_id": a.ann_id, "object_ids": list(a.object_ids),
                                "object_name": a.object_name, "eval_type": a.eval_type})
        return sample


def target_superpoints(superpoints: np.ndarray, instance: np.ndarray, object_ids: Sequence[int]) -> np.ndarray:
    """(S,) int64: the target instance holding more than half of each superpoint's points (the
    authors' superpoint label), -1 elsewhere. A target with points but no such superpoint (split
    over superpoints it never dominates) gets the superpoint holding its largest share of points,
    so every target present has a mask to learn and a centroid to match against."""
    n_sp = int(superpoints.max()) + 1
    out = np.full(n_sp, -1, np.int64)
    size = np.bincount(superpoints, minlength=n_sp)
    for k in object_ids:  # targets are disjoint: at most one holds a superpoint's majority
        hits = np.bincount(superpoints, weights=(instance == k).astype(np.float64), minlength=n_sp)
        major = 2.0 * hits > size
        if not major.any() and hits.any():
            major = np.zeros(n_sp, bool)
            major[int(np.argmax(hits / np.maximum(size, 1)))] = True
        out[major] = k
    return out


def anchor_superpoints(superpoints: np.ndarray, instance: np.ndarray, anchor_ids: Sequence[int],
                       sp_inst: np.ndarray) -> np.ndarray:
    """(S,) int64: the anchor instance of each superpoint by ``target_superpoints``' rule, -1
    elsewhere and on superpoints a target already holds (``sp_inst``), so no superpoint is both
    a target's and an anchor's; the objects of the auxiliary anchor-mask loss."""
    anchors = [int(k) for k in anchor_ids if int(k) >= 0]
    if not anchors:
        return np.full(sp_inst.shape[0], -1, np.int64)
    out = target_superpoints(superpoints, instance, anchors)  # an anchor the crop removed marks nothing
    out[sp_inst >= 0] = -1
    return out


def reference_mask(superpoints: np.ndarray, instance: np.ndarray, semantic: np.ndarray | None,
                   object_ids: Sequence[int], context_classes: Sequence[str],
                   anchor_ids: Sequence[int] = (), anchor_value: float = 0.0) -> np.ndarray:
    """The authors' ``sp_ref_mask`` (S,) float32: per point 1 on the targets, 0.5 on points of the
    instances whose class (``CLASSES`` name of the instance's semantic label) the sentence names
    (``PreparedText.context_classes``), 0 elsewhere; then the mean over each superpoint.

    ``anchor_value`` > 0 (``loss.anchor_ref``, not the authors') raises the points of the
    ``anchor_ids`` instances to at least that value, so the sampling loss also pulls seeds onto
    the objects the sentence names; targets stay 1. 0 leaves the authors' target untouched."""
    if not 0.0 <= anchor_value <= 1.0:
        raise ValueError(f"anchor_value must be in [0, 1] (0 = off), got {anchor_value!r}")
    point = np.zeros(instance.shape[0], np.float64)
    names = set(context_classes)
    if names and semantic is not None:
        ids, first = np.unique(instance, return_index=True)
        ctx = [int(i) for i, f in zip(ids, first)
               if i >= 0 and 0 <= semantic[f] < len(CLASSES) and CLASSES[int(semantic[f])] in names]
        if ctx:
            point[np.isin(instance, ctx)] = 0.5
    if anchor_value > 0 and len(anchor_ids):
        on = np.isin(instance, list(anchor_ids))
        point[on] = np.maximum(point[on], anchor_value)
    if len(object_ids):
        point[np.isin(instance, list(object_ids))] = 1.0
    n_sp = int(superpoints.max()) + 1
    size = np.maximum(np.bincount(superpoints, minlength=n_sp), 1)
    return (np.bincount(superpoints, weights=point, minlength=n_sp) / size).astype(np.float32)


def collate_fn(samples: Sequence[ReferSample]) -> dict[str, Any]:
    """Batch ``ReferSample``s with ``collate_scenes`` (the dict of docs/architecture.md), plus what
    the loss reads (``BQNet.sentence_targets``): ``gt_sp_inst``, list (T) of LongTensor (S_b,), the
    target instance id of each superpoint (-1 = none); ``sp_ref_masks``, list (T) of FloatTensor
    (S_b,); ``gt_sp_anchor``, list (T) of LongTensor (S_b,), the anchor instance of each
    superpoint (-1 = none); ``prepared``, list (T) of ``PreparedText``; and ``sp_semantic``: LongTensor (S_total,)
    majority semantic label per global superpoint (-1 = none; None unless every sample has one),
    the target of the auxiliary semantic head."""
    if not samples:
        raise ValueError("collate_fn got an empty list of samples")
    texts: list[str] = []
    text_scene: list[int] = []
    sp_masks: list[np.ndarray] = []
    pt_masks: list[np.ndarray] = []
    sp_inst: list[np.ndarray] = []
    sp_ref: list[np.ndarray] = []
    sp_anchor: list[np.ndarray] = []
    prepared: list[Any] = []
    meta: list[dict[str, Any]] = []
    for b, s in enumerate(samples):
        if not isinstance(s, ReferSample):
            raise TypeError(f"samples[{b}] is {type(s).__name__}, expected ReferSample")
        texts += s.texts
        text_scene += [b] * len(s.texts)
        sp_masks += s.gt_sp_masks
        pt_masks += s.gt_point_masks
        sp_inst += s.gt_sp_inst
        sp_ref += s.sp_ref_masks
        sp_anchor += s.gt_sp_anchor
        prepared += s.prepared
        meta += s.meta
    sems = [s.sp_semantic for s in samples]
    batch = collate_scenes([s.inputs for s in samples], texts, torch.tensor(text_scene, dtype=torch.long),
                           sp_masks, pt_masks, meta,
                           sp_semantic=None if any(m is None for m in sems) else sems)
    batch["gt_sp_inst"] = [torch.from_numpy(m) for m in sp_inst] if len(sp_inst) == len(texts) else None
    batch["sp_ref_masks"] = [torch.from_numpy(m) for m in sp_ref] if len(sp_ref) == len(texts) else None
    batch["gt_sp_anchor"] = [torch.from_numpy(m) for m in sp_anchor] if len(sp_anchor) == len(texts) else None
    batch["prepared"] = prepared if len(prepared) == len(texts) else None
    return batch
