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
           "make_loader", "train_collate", "with_target_tables", "targets_in_step", "PER_SENTENCE_KEYS"]

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


# The per-sentence lists of collate_fn that only the loss targets read (and gt_point_masks, which
# training never reads): train_collate replaces them by the tables of targets.build_tables.
PER_SENTENCE_KEYS = ("gt_sp_masks", "gt_point_masks", "gt_sp_inst", "sp_ref_masks", "gt_sp_anchor")


def targets_in_step() -> bool:
    """``BQNET_TARGETS_IN_STEP=1``: build the loss targets in the training step from the per-sentence
    lists (``BQNet.sentence_targets``, the path before the loader built them), for comparison."""
    return os.environ.get("BQNET_TARGETS_IN_STEP", "0") not in ("", "0")


def train_collate(samples: list[Any], in_step: bool = False) -> dict[str, Any]:
    """``collate_fn`` for training: in the DataLoader's workers, the loss-target tables
    (``targets.build_tables``, under ``targets.TABLES_KEY``) and the scene padding indices of
    ``BQNet.pool_scene`` (``targets.PADDING_KEY``) replace the per-sentence lists
    (``PER_SENTENCE_KEYS``, set to None), so the main process pins and copies about 20 tensors per
    batch instead of five per sentence. ``in_step``: the batch of ``collate_fn`` unchanged (the
    step then builds the targets)."""
    batch = collate_fn(samples)
    return batch if in_step else with_target_tables(batch)


def with_target_tables(batch: dict[str, Any]) -> dict[str, Any]:
    """What ``train_collate`` adds to a ``collate_fn`` batch (a new dict; the lists become None)."""
    from bqnet_model.model.targets import PADDING_KEY, TABLES_KEY, build_tables, scene_padding

    out = dict(batch)
    out[PADDING_KEY] = scene_padding(batch["sp_offsets"])
    out[TABLES_KEY] = build_tables(batch, out[PADDING_KEY])  # the same padding, built once
    for k in PER_SENTENCE_KEYS:
        out[k] = None
    return out


def make_loader(ds: ReferDataset, sampler: Sampler[int], batch_size: int, workers: int, device: torch.device,
                in_step: bool | None = None) -> DataLoader:
    """The training loader: ``train_collate`` (``in_step``: None = ``targets_in_step()``), pinned
    batches on CUDA, workers kept across epochs."""
    in_step = targets_in_step() if in_step is None else in_step
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=functools.partial(train_collate, in_step=in_step),
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0)
