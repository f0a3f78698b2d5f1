"""The training and evaluation data sets of a config: where the files are and how they load."""

from __future__ import annotations

import functools

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from bqnet_model.data.dataset import ReferDataset, collate_fn
from bqnet_model.data.referit import load_annotations

__all__ = ["ANNOTATION_NAMES", "scene_dir", "find_annotations", "build_datasets", "text_preparer", "encoder_preparer",
           "make_loader"]

log = logging.getLogger("bqnet.train")

# Annotation file names looked for in data_root when the config names none (first match wins).
ANNOTATION_NAMES = {
    "res": ("{split}_scanrefer.json", "scanrefer_{split}.json", "ScanRefer_filtered_{split}.json", "{split}.json"),
    "gres": ("{split}_multi3drefer.json", "multi3drefer_{split}.json", "Multi3DRefer_{split}.json", "{split}.json"),
}



def scene_dir(root: Path) -> Path:
    """``root/scenes`` when it holds the per-scene files, else ``root``."""
    sub = root / "scenes"
    return sub if sub.is_dir() and any(sub.glob("*.npz")) else root


def find_annotations(root: Path, task: str, split: str, configured: str = "") -> Path:
    """The annotation JSON of a split: the configured path (relative to ``root`` when not absolute)
    or the first existing file of ``ANNOTATION_NAMES[task]`` in ``root``."""
    if configured:
        p = Path(configured)
        p = p if p.is_absolute() or p.is_file() else root / p
        if not p.is_file():
            raise FileNotFoundError(f"annotation file {configured!r} not found (also tried {p})")
        return p
    tried = [root / name.format(split=split) for name in ANNOTATION_NAMES[task]]
    for p in tried:
        if p.is_file():
            return p
    raise FileNotFoundError(
        f"no {split} annotations for task {task!r} in {root}: tried {[p.name for p in tried]}; "
        f"set train.{'train' if split == 'train' else 'val'}_annotations in the config"
    )


def build_datasets(cfg: Any, data_root: str | os.PathLike, *, train: bool, eval_split: str = "val",
                   ) -> tuple[ReferDataset | None, ReferDataset | None]:
    """(train, eval) datasets from ``data_root`` (per-scene ``.npz`` + JSON). Either may be None:
    no train set when ``train`` is False, no eval set when its annotations are missing in training.
    Both get ``model.loss.anchor_ref``, so the evaluation loss measures what training optimises."""
    root = Path(data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} is not a folder (set train.data_root, e.g. --set train.data_root=DIR)")
    tc, task = cfg.train, cfg.inference.task
    scanrefer = tc.dataset == "scanrefer"
    scenes = scene_dir(root)
    train_ds = None
    if train:
        ann = load_annotations(find_annotations(root, task, "train", tc.train_annotations), scenes)
        train_ds = ReferDataset(scenes, ann, "train", task, augment=tc.augment, max_points=tc.max_points_train,
                                lang_per_scene=tc.lang_per_scene, voxel_size=cfg.inference.voxel_size, seed=tc.seed,
                                superpoint_params=cfg.inference.superpoints, augment_cfg=tc.augmentation,
                                scanrefer=scanrefer, prepare=text_preparer(cfg),
                                anchor_ref=cfg.model.loss.anchor_ref)
    try:
        path = find_annotations(root, task, eval_split, tc.val_annotations if eval_split == "val" else "")
    except FileNotFoundError:
        if not train:
            raise
        log.warning("no %s annotations in %s: training without evaluation", eval_split, root)
        return train_ds, None
    ann = load_annotations(path, scenes)
    eval_ds = ReferDataset(scenes, ann, eval_split, task, augment=False, max_points=None,
                           lang_per_scene=tc.lang_per_scene_eval, voxel_size=cfg.inference.voxel_size, seed=tc.seed,
                           superpoint_params=cfg.inference.superpoints, scanrefer=scanrefer,
                           prepare=text_preparer(cfg), anchor_ref=cfg.model.loss.anchor_ref)
    return train_ds, eval_ds


def text_preparer(cfg: Any) -> Any:
    """How the datasets frame descriptions: the official parse when the model reads the official
    string or trains the contrastive term (both need it), else only the cleaning (no spaCy).
    With ``train.text_prep_cache`` the parses come from that file (``text.prep_cache``: a machine
    without spaCy can train the contrastive term; a sentence missing from it is an error there)."""
    from bqnet_model.text import prepare_text

    if cfg.model.text.official_prep or cfg.model.loss.align > 0:
        return encoder_preparer(cfg) or prepare_text
    return functools.partial(prepare_text, parse=False)


def encoder_preparer(cfg: Any) -> Any:
    """The ``CachedPreparer`` of ``train.text_prep_cache`` (None when unset): what the training
    model's text encoder frames raw sentences with (the evaluation queries), so that it needs no
    spaCy either."""
    path = cfg.train.text_prep_cache
    if not path:
        return None
    from bqnet_model.text.prep_cache import load_cached_preparer

    prep = load_cached_preparer(path)
    log.info("text parses from %s: %d sentences (spaCy %s)", path, len(prep), prep.meta.get("spacy", {}))
    return prep


def make_loader(ds: ReferDataset, sampler: Sampler[int], batch_size: int, workers: int, device: torch.device) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate_fn,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0)

