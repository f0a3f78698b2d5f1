"""Training and evaluation of BQNet: ``python -m bqnet_model.train config/res.yaml --gpu_id 0``.

- ``--checkpoint x.pth``: evaluate that checkpoint only and print the metrics;
- ``--resume [path]``: continue a run (model, optimizer, scheduler, AMP scaler, step, RNG states;
  default path ``<work_dir>/latest.pth``), mid-epoch included: the sampler skips the batches done;
- ``--work-dir``, ``--data-root``, ``--epochs``, ``--max-steps``, ``--time-budget`` override the
  config; under ``torchrun`` the same command trains with DDP (rank 0 logs and saves).

The loop: AdamW over ``BQNet.param_groups`` (lr multipliers), poly schedule (power
``train.lr_power``) per step over the whole run, gradient clipping, autocast on CUDA (fp16 with a
grad scaler, or bf16), checkpoints every ``--save-every`` steps and every epoch, a JSON-lines log
(``metrics.jsonl``) and tqdm bars. Evaluation goes through ``Segmenter`` itself (``prepare``
once per scene with the scene file's superpoints, ``query`` for its sentences), so evaluation
and the product give the same answers; ``bqnet_model.metrics`` scores them.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

from bqnet_model.data.augment import AugmentConfig
from bqnet_model.data.dataset import ReferDataset, collate_fn
from bqnet_model.data.referit import load_annotations
from bqnet_model.metrics import (
    DescriptionResult,
    format_summary,
    gres_record,
    res_record,
    summarize_gres,
    summarize_res,
)

log = logging.getLogger("bqnet.train")

__all__ = [
    "TrainOptions",
    "parse_args",
    "main",
    "EpochSampler",
    "find_annotations",
    "scene_dir",
    "build_datasets",
    "poly_factor",
    "lr_factor",
    "train_step",
    "evaluate",
    "save_training_state",
    "load_training_state",
]

# Annotation file names looked for in data_root when the config names none (first match wins).
ANNOTATION_NAMES = {
    "res": ("{split}_scanrefer.json", "scanrefer_{split}.json", "ScanRefer_filtered_{split}.json", "{split}.json"),
    "gres": ("{split}_multi3drefer.json", "multi3drefer_{split}.json", "Multi3DRefer_{split}.json", "{split}.json"),
}


@dataclass
class TrainOptions:
    """Command-line options (``parse_args``); ``None`` means "take the config's value"."""

    config: str
    gpu_id: int | None = None
    checkpoint: str | None = None
    resume: str | None = None
    init_weights: str | None = None
    work_dir: str | None = None
    data_root: str | None = None
    epochs: int | None = None
    max_steps: int | None = None
    time_budget: float | None = None
    save_every: int = 0
    eval_every: int | None = None
    eval_split: str = "val"
    eval_limit: int | None = None
    num_workers: int | None = None
    batch_size: int | None = None
    lang_per_scene: int | None = None
    lr: float | None = None
    amp_dtype: str = "fp16"
    no_eval: bool = False
    seed: int | None = None
    find_unused: bool = False
    task: str | None = None
    train_annotations: str | None = None
    val_annotations: str | None = None
    overrides: list[str] | None = None


def parse_args(argv: Sequence[str] | None = None) -> TrainOptions:
    ap = argparse.ArgumentParser(prog="bqnet-train", description="Train or evaluate BQNet (3D-RES / 3D-GRES).")
    ap.add_argument("config", help="YAML config (model / inference / train sections)")
    ap.add_argument("--gpu_id", "--gpu-id", dest="gpu_id", type=int, default=None,
                    help="CUDA device index (ignored under torchrun, which sets LOCAL_RANK); CPU when no GPU")
    ap.add_argument("--checkpoint", default=None, help="evaluate this checkpoint only (no training)")
    ap.add_argument("--resume", nargs="?", const="auto", default=None,
                    help="resume training from a checkpoint (default <work_dir>/latest.pth)")
    ap.add_argument("--init-weights", "--init_weights", dest="init_weights", default=None,
                    help="start from this checkpoint's weights (fresh optimizer and schedule), e.g. to continue "
                         "training a model whose optimizer state was not kept")
    ap.add_argument("--work-dir", "--work_dir", dest="work_dir", default=None)
    ap.add_argument("--data-root", "--data_root", dest="data_root", default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--max-steps", "--max_steps", dest="max_steps", type=int, default=None,
                    help="stop after this many optimizer steps; the lr schedule spans them")
    ap.add_argument("--time-budget", "--time_budget", dest="time_budget", type=float, default=None,
                    help="stop training after this many seconds (checkpoint saved, then evaluation)")
    ap.add_argument("--save-every", dest="save_every", type=int, default=0,
                    help="also save <work_dir>/latest.pth every N steps (0: at each epoch end only)")
    ap.add_argument("--eval-every", dest="eval_every", type=int, default=None, help="evaluate every N epochs (0: only at the end)")
    ap.add_argument("--eval-split", dest="eval_split", default="val")
    ap.add_argument("--eval-limit", dest="eval_limit", type=int, default=None,
                    help="evaluate only the first N items (scenes x sentence chunks); quick checks")
    ap.add_argument("--num-workers", dest="num_workers", type=int, default=None)
    ap.add_argument("--batch-size", dest="batch_size", type=int, default=None, help="scenes per step and GPU")
    ap.add_argument("--lang-per-scene", dest="lang_per_scene", type=int, default=None,
                    help="override train.lang_per_scene (sentences per scene and step)")
    ap.add_argument("--lr", type=float, default=None, help="override train.lr (peak learning rate)")
    ap.add_argument("--amp-dtype", dest="amp_dtype", choices=("fp16", "bf16"), default="fp16")
    ap.add_argument("--no-eval", dest="no_eval", action="store_true", help="skip evaluation after training")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--task", choices=("res", "gres"), default=None, help="override inference.task")
    ap.add_argument("--train-annotations", dest="train_annotations", default=None,
                    help="annotation JSON of the training split ('' = look in the data root)")
    ap.add_argument("--val-annotations", dest="val_annotations", default=None,
                    help="annotation JSON of the evaluation split ('' = look in the data root)")
    ap.add_argument("--find-unused", dest="find_unused", action="store_true",
                    help="DDP find_unused_parameters (only for configs where some parameters get no gradient)")
    ap.add_argument("--set", dest="overrides", action="append", default=None, metavar="KEY=VALUE",
                    help="override one config key by its dotted path, the value read as YAML, e.g. "
                         "--set model.decoder.rel_pos=true (repeatable; an ablation is one flag)")
    ns = ap.parse_args(argv)
    return TrainOptions(**vars(ns))


# ----------------------------------------------------------------------------- distributed
@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(gpu_id: int | None) -> tuple[DistInfo, torch.device]:
    """DDP when launched by torchrun (WORLD_SIZE > 1), else one process on ``gpu_id`` or the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
        if torch.cuda.is_available():
            torch.cuda.set_device(info.local_rank)
            device = torch.device("cuda", info.local_rank)
            backend = "nccl"
        else:
            device = torch.device("cpu")
            backend = "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
        return info, device
    if torch.cuda.is_available():
        idx = 0 if gpu_id is None else gpu_id
        if not 0 <= idx < torch.cuda.device_count():
            raise ValueError(f"--gpu_id {idx} but only {torch.cuda.device_count()} CUDA device(s) are visible")
        torch.cuda.set_device(idx)
        return DistInfo(), torch.device("cuda", idx)
    if gpu_id is not None:
        log.warning("--gpu_id %s given but CUDA is not available: running on the CPU", gpu_id)
    return DistInfo(), torch.device("cpu")


class EpochSampler(Sampler[Any]):
    """Seeded per-epoch order, sharded over ranks, resumable mid-epoch.

    The order of epoch e is ``randperm(n)`` from seed ``seed + e`` (or 0..n-1 without shuffle),
    padded by wrapping so every rank gets ``ceil(n / world)`` items; rank r takes every world-th
    item from r; ``set_epoch(e, start)`` skips the first ``start`` items of this rank's share.
    ``with_epoch``: yield ``(epoch, index)`` pairs (``ReferDataset`` accepts them), so persistent
    workers draw each epoch's augmentation without being told the epoch.
    """

    def __init__(self, n: int, *, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1,
                 with_epoch: bool = False) -> None:
        if n < 1:
            raise ValueError("EpochSampler needs at least one item")
        self.n, self.shuffle, self.seed, self.rank, self.world = n, shuffle, seed, rank, world_size
        self.with_epoch = with_epoch
        self.epoch, self.start = 0, 0
        self.per_rank = math.ceil(n / world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def _order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank * self.world
        order = (order * math.ceil(total / self.n))[:total]
        return order[self.rank::self.world]

    def __iter__(self) -> Iterator[Any]:
        idx = self._order()[self.start:]
        return iter([(self.epoch, i) for i in idx] if self.with_epoch else idx)

    def __len__(self) -> int:
        return max(0, self.per_rank - self.start)


# ----------------------------------------------------------------------------- data
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
    no train set when ``train`` is False, no eval set when its annotations are missing in training."""
    root = Path(data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} is not a folder (set train.data_root or --data-root)")
    tc, task = cfg.train, cfg.inference.task
    scenes = scene_dir(root)
    train_ds = None
    if train:
        ann = load_annotations(find_annotations(root, task, "train", tc.train_annotations), scenes)
        train_ds = ReferDataset(scenes, ann, "train", task, augment=tc.augment, max_points=tc.max_points_train,
                                lang_per_scene=tc.lang_per_scene, voxel_size=cfg.inference.voxel_size, seed=tc.seed,
                                superpoint_params=cfg.inference.superpoints,
                                augment_cfg=AugmentConfig(flip_x=tc.flip_x))
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
                           superpoint_params=cfg.inference.superpoints)
    return train_ds, eval_ds


def _loader(ds: ReferDataset, sampler: Sampler[int], batch_size: int, workers: int, device: torch.device) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate_fn,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0)


# ----------------------------------------------------------------------------- model pieces
def poly_factor(step: int, total_steps: int, power: float) -> float:
    """Poly decay ``(1 - step / total) ** power``, 0 from ``total`` on."""
    if total_steps <= 0:
        return 1.0
    return max(0.0, 1.0 - min(step, total_steps) / total_steps) ** power


def lr_factor(step: int, total_steps: int, power: float, warmup_steps: int = 0, time_fraction: float = 0.0) -> float:
    """Linear warm-up over ``warmup_steps``, then poly decay over the larger of ``step / total_steps``
    and ``time_fraction`` (the elapsed share of a time budget): a run stopped by its budget still
    decays, so its last weights come from a low lr and not from mid-schedule."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    by_time = max(0.0, 1.0 - time_fraction) ** power  # the same poly decay over the time share
    return warm * min(poly_factor(step, total_steps, power), by_time)


def _amp_context(device: torch.device, enabled: bool, dtype: torch.dtype):
    if device.type == "cuda" and enabled:
        return torch.autocast(device_type="cuda", dtype=dtype)
    return torch.autocast(device_type=device.type, enabled=False)


def _sp_instance_targets(batch: dict[str, Any], s_max: int, device: torch.device) -> torch.Tensor | None:
    """(T, S) instance id of each target superpoint (-1 elsewhere) for GRES batches that carry
    ``gt_sp_inst``; lets the loss train a query on its own object instead of the union."""
    inst = batch.get("gt_sp_inst")
    if inst is None:
        return None
    out = torch.full((len(inst), s_max), -1, dtype=torch.long)
    for t, m in enumerate(inst):
        out[t, : m.shape[0]] = m
    return out.to(device)


def use_training_attention_kernels(device: torch.device) -> None:
    """Leave cuDNN out of ``scaled_dot_product_attention`` while training on CUDA. cuDNN builds an
    execution plan per new shape, about 7 ms of host time per call, and the training shapes change
    every step (rooms and sentences vary): on an H200 that was a third of a host-bound step
    (``bench/train_step.py --profile``). The flash / memory-efficient kernels need no plan."""
    if device.type == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(False)


def train_step(model: torch.nn.Module, raw_model: Any, batch: dict[str, Any], optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler | None, cfg: Any, device: torch.device, amp: bool,
               amp_dtype: torch.dtype) -> dict[str, float]:
    """One optimizer step on a batch; returns the loss parts as floats (``grad_norm`` included)."""
    from bqnet_model.model.losses import bqnet_loss

    model.train()
    optimizer.zero_grad(set_to_none=True)
    with _amp_context(device, amp, amp_dtype):
        out = model(batch)
    gt, pad = raw_model.sentence_targets(batch, device)
    sem = raw_model.semantic_targets(batch, device) if out.sem_logits is not None else None
    loss, parts = bqnet_loss(out, gt, pad, raw_model.cfg.loss, _sp_instance_targets(batch, gt.shape[1], device),
                             sem_targets=sem)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss {loss.item()} (parts: { {k: float(v) for k, v in parts.items()} })")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    clip = cfg.train.grad_clip
    gnorm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    res = {k: float(v) for k, v in parts.items()}
    res["loss"] = float(loss.detach())
    res["grad_norm"] = float(gnorm)
    return res


def evaluate(segmenter: Any, dataset: ReferDataset, *, indices: Sequence[int] | None = None,
             limit: int | None = None, progress: bool = True) -> list[DescriptionResult]:
    """Score the sentences of ``dataset`` items (``indices``: this rank's share) through
    ``Segmenter`` itself, so evaluation and the product give the same answers: ``prepare`` once
    per scene (with the scene file's superpoints), ``query`` its sentences, the answer's
    ``point_indices`` against the union mask of the targets (``metrics.res_record`` /
    ``gres_record``)."""
    from bqnet_model.metrics import union_mask

    task = dataset.task
    todo = list(range(len(dataset)) if indices is None else indices)
    if limit is not None:
        todo = todo[:limit]
    records: list[DescriptionResult] = []
    it: Any = todo
    if progress:
        from tqdm import tqdm

        it = tqdm(todo, desc="eval", unit="item", leave=False, dynamic_ncols=True)
    score = res_record if task == "res" else gres_record
    cached_id, cache, data = None, None, None
    for i in it:
        scene_id, anns = dataset.item(i)
        if scene_id != cached_id:
            data = dataset.load_scene(scene_id)
            cache = segmenter.prepare(data["xyz"], data["rgb"], superpoints=data["superpoint"])
            cached_id = scene_id
        assert data is not None and cache is not None
        n = data["xyz"].shape[0]
        results = segmenter.query(cache, [a.description for a in anns], task=task)
        for a, r in zip(anns, results):
            pred = np.zeros(n, dtype=bool)
            pred[r.point_indices] = True
            records.append(score(pred, union_mask(data["instance"], a.object_ids), scene_id=scene_id,
                                 ann_id=a.ann_id, eval_type=a.eval_type or "", object_ids=a.object_ids))
    return records


def _shared_time_fraction(elapsed: float, budget: float, info: DistInfo, device: torch.device) -> float:
    """Elapsed share of the time budget as rank 0 sees it, on every rank: all ranks stop at the same
    step (a rank that stopped alone would hang the others in their next all-reduce) and use the same lr."""
    frac = elapsed / budget
    if info.enabled and dist.is_initialized():
        t = torch.tensor([frac if info.main else 0.0], dtype=torch.float64, device=device)
        dist.broadcast(t, src=0)
        frac = float(t.item())
    return frac


def _gather_records(records: list[DescriptionResult], info: DistInfo) -> list[DescriptionResult]:
    """All ranks' records on every rank, duplicates (sampler padding) removed."""
    if info.enabled:
        parts: list[Any] = [None] * info.world_size
        dist.all_gather_object(parts, records)
        records = [r for p in parts for r in p]
    seen: dict[tuple[str, str], DescriptionResult] = {}
    for r in records:
        seen.setdefault((r.scene_id, r.ann_id), r)
    return list(seen.values())


def summarize(records: list[DescriptionResult], task: str) -> dict[str, Any]:
    return summarize_res(records) if task == "res" else summarize_gres(records)


# ----------------------------------------------------------------------------- checkpoints
def _rng_state() -> dict[str, Any]:
    """RNG states as weights-only-loadable values (numpy's key array becomes a tensor)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    st: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, cached = st["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available() and len(st["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(st["cuda"])


def save_training_state(path: str | os.PathLike, raw_model: Any, cfg: Any, *, optimizer: torch.optim.Optimizer,
                        scheduler: Any, scaler: torch.amp.GradScaler | None, step: int, epoch: int,
                        best: float | None) -> Path:
    """A checkpoint in ``bqnet_model.checkpoint``'s format (``Segmenter.from_checkpoint`` and
    ``--checkpoint`` read it) whose top-level ``train_state`` holds what ``--resume`` needs:
    optimizer, scheduler, AMP scaler, step, epoch, best metric, RNG states."""
    from bqnet_model.checkpoint import save_checkpoint

    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": None if scaler is None else scaler.state_dict(),
        "step": int(step),
        "epoch": int(epoch),
        "best": best,
        "rng": _rng_state(),
    }
    return save_checkpoint(path, raw_model, cfg, meta={"step": int(step), "epoch": int(epoch)},
                           extra={"train_state": state})


def load_training_state(path: str | os.PathLike, raw_model: Any) -> dict[str, Any]:
    """Load a ``save_training_state`` checkpoint's weights into ``raw_model`` (strict) and return
    its ``train_state``."""
    from bqnet_model.checkpoint import FORMAT, is_our_format, load_state_dict_into, read_checkpoint

    obj = read_checkpoint(path)
    if not is_our_format(obj):
        raise ValueError(f"{path} is not a {FORMAT} checkpoint: cannot resume from it")
    st = obj.get("train_state")
    if st is None:
        raise ValueError(f"{path} holds no training state (not written by bqnet-train); "
                         "evaluate it with --checkpoint instead")
    del obj
    load_state_dict_into(raw_model, path)
    return st


# ----------------------------------------------------------------------------- main
class JsonLog:
    """Append-only JSON-lines metrics log (rank 0)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def write(self, **rec: Any) -> None:
        if self.path is None:
            return
        rec = {"time": round(time.time(), 3), **rec}
        with self.path.open("a") as fh:
            fh.write(json.dumps(rec, default=float) + "\n")


def _apply_overrides(cfg: Any, opt: TrainOptions) -> None:
    tc = cfg.train
    if opt.data_root is not None:
        tc.data_root = opt.data_root
    if opt.work_dir is not None:
        tc.work_dir = opt.work_dir
    if opt.epochs is not None:
        if opt.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {opt.epochs}")
        tc.epochs = opt.epochs
    if opt.num_workers is not None:
        tc.num_workers = opt.num_workers
    if opt.batch_size is not None:
        if opt.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {opt.batch_size}")
        tc.batch_size = opt.batch_size
    if opt.lang_per_scene is not None:
        if opt.lang_per_scene < 1:
            raise ValueError(f"--lang-per-scene must be >= 1, got {opt.lang_per_scene}")
        tc.lang_per_scene = opt.lang_per_scene
    if opt.lr is not None:
        if not opt.lr > 0:
            raise ValueError(f"--lr must be > 0, got {opt.lr}")
        tc.lr = opt.lr
    if opt.eval_every is not None:
        tc.eval_every = opt.eval_every
    if opt.seed is not None:
        tc.seed = opt.seed
    if opt.task is not None:
        cfg.inference.task = opt.task
    if opt.train_annotations is not None:
        tc.train_annotations = opt.train_annotations
    if opt.val_annotations is not None:
        tc.val_annotations = opt.val_annotations
    if opt.max_steps is not None and opt.max_steps < 1:
        raise ValueError(f"--max-steps must be >= 1, got {opt.max_steps}")
    if opt.time_budget is not None and opt.time_budget <= 0:
        raise ValueError(f"--time-budget must be > 0 seconds, got {opt.time_budget}")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _print(info: DistInfo, *args: Any) -> None:
    if info.main:
        print(*args, flush=True)


def run_evaluation_only(opt: TrainOptions, cfg: Any, info: DistInfo, device: torch.device) -> dict[str, Any]:
    """``--checkpoint``: our checkpoint (its own model config) or an official file (the config's
    model); data and inference settings come from the command's config."""
    from bqnet_model.checkpoint import is_our_format, read_checkpoint
    from bqnet_model.pipeline import Segmenter

    ours = is_our_format(read_checkpoint(opt.checkpoint))
    seg = Segmenter.from_checkpoint(opt.checkpoint, device=device, config=None if ours else cfg,
                                    **asdict(cfg.inference))
    _, eval_ds = build_datasets(cfg, cfg.train.data_root, train=False, eval_split=opt.eval_split)
    assert eval_ds is not None
    share = list(EpochSampler(len(eval_ds), shuffle=False, rank=info.rank, world_size=info.world_size))
    recs = _gather_records(evaluate(seg, eval_ds, indices=share, limit=opt.eval_limit, progress=info.main), info)
    summary = summarize(recs, cfg.inference.task)
    if info.main:
        print(f"evaluation of {opt.checkpoint} on {opt.eval_split} ({len(recs)} descriptions, task {cfg.inference.task}):")
        print(format_summary(summary), flush=True)
        wd = Path(cfg.train.work_dir)
        wd.mkdir(parents=True, exist_ok=True)
        (wd / f"eval_{opt.eval_split}.json").write_text(json.dumps(
            {"checkpoint": str(opt.checkpoint), "summary": summary, "records": [r.to_dict() for r in recs]}, indent=1))
    return summary


def _dtype(name: str) -> torch.dtype:
    return torch.bfloat16 if name == "bf16" else torch.float16


def run_training(opt: TrainOptions, cfg: Any, info: DistInfo, device: torch.device) -> dict[str, Any]:
    from torch.nn.parallel import DistributedDataParallel as DDP

    from bqnet_model.model.bqnet import BQNet

    tc = cfg.train
    _seed_everything(tc.seed + info.rank)
    work = Path(tc.work_dir)
    if info.main:
        work.mkdir(parents=True, exist_ok=True)
    resume_path = None
    if opt.resume:
        resume_path = Path(work / "latest.pth" if opt.resume == "auto" else opt.resume)
        if not resume_path.is_file():
            raise FileNotFoundError(f"--resume: checkpoint {resume_path} not found")
    train_ds, eval_ds = build_datasets(cfg, tc.data_root, train=True, eval_split=opt.eval_split)
    assert train_ds is not None
    model = BQNet(cfg.model).to(device)
    if tc.pretrained_backbone and not opt.resume:
        from bqnet_model.checkpoint import load_backbone

        report = load_backbone(model, tc.pretrained_backbone)
        if not report.loaded:
            raise ValueError(f"train.pretrained_backbone {tc.pretrained_backbone}: nothing matched the backbone\n{report}")
        _print(info, f"backbone initialised from {tc.pretrained_backbone}\n{report}")
    if opt.init_weights and not opt.resume:
        from bqnet_model.checkpoint import load_checkpoint

        init_model, _, init_meta = load_checkpoint(opt.init_weights, "cpu")
        result = model.load_state_dict(init_model.state_dict(), strict=False)  # shapes still checked
        if result.unexpected_keys:
            raise ValueError(f"--init-weights {opt.init_weights}: weights this model has no place for "
                             f"(another architecture?): {result.unexpected_keys[:8]}")
        _print(info, f"weights initialised from {opt.init_weights} (meta {init_meta})")
        if result.missing_keys:  # a module switched on since (e.g. decoder.rel_pos): keeps its own init
            _print(info, f"--init-weights: {len(result.missing_keys)} new weights keep their initial values: "
                         f"{sorted({k.rsplit('.', 2)[0] for k in result.missing_keys})}")
    raw_model = model
    optimizer = torch.optim.AdamW(raw_model.param_groups(tc), lr=tc.lr, weight_decay=tc.weight_decay)
    sampler = EpochSampler(len(train_ds), shuffle=True, seed=tc.seed, rank=info.rank, world_size=info.world_size,
                           with_epoch=True)
    steps_per_epoch = math.ceil(sampler.per_rank / tc.batch_size)
    total_steps = opt.max_steps if opt.max_steps is not None else tc.epochs * steps_per_epoch
    n_epochs = math.ceil(total_steps / steps_per_epoch)
    clock = {"time_fraction": 0.0}  # elapsed share of --time-budget, rank 0's value on every rank
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, tc.lr_power, tc.warmup_steps, clock["time_fraction"]))
    amp = bool(tc.amp) and device.type == "cuda"
    use_training_attention_kernels(device)
    amp_dtype = _dtype(opt.amp_dtype)
    scaler = torch.amp.GradScaler("cuda") if amp and amp_dtype == torch.float16 else None

    step, best = 0, None
    if resume_path is not None:
        path = resume_path
        st = load_training_state(path, raw_model)
        optimizer.load_state_dict(st["optimizer"])
        scheduler.load_state_dict(st["scheduler"])
        if scaler is not None and st.get("scaler"):
            scaler.load_state_dict(st["scaler"])
        step, best = int(st["step"]), st.get("best")
        _set_rng_state(st["rng"])
        _print(info, f"resumed from {path} at step {step}")
    if info.enabled:
        model = DDP(raw_model, device_ids=[device.index] if device.type == "cuda" else None,
                    find_unused_parameters=opt.find_unused)
    jlog = JsonLog(work / "metrics.jsonl" if info.main else None)
    if info.main:
        (work / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
        jlog.write(event="start", step=step, total_steps=total_steps, steps_per_epoch=steps_per_epoch,
                   train_items=len(train_ds), eval_items=0 if eval_ds is None else len(eval_ds),
                   world_size=info.world_size, device=str(device), options=asdict(opt))

    def save(tag: str, epoch: int) -> None:
        if info.main:
            save_training_state(work / f"{tag}.pth", raw_model, cfg, optimizer=optimizer, scheduler=scheduler,
                                scaler=scaler, step=step, epoch=epoch, best=best)

    def run_eval(epoch: int) -> dict[str, Any] | None:
        nonlocal best
        if eval_ds is None:
            return None
        from bqnet_model.pipeline import Segmenter

        share = list(EpochSampler(len(eval_ds), shuffle=False, rank=info.rank, world_size=info.world_size))
        seg = Segmenter(raw_model, cfg, device)  # puts the model in eval mode; train_step switches back
        recs = _gather_records(evaluate(seg, eval_ds, indices=share, limit=opt.eval_limit, progress=info.main), info)
        summary = summarize(recs, cfg.inference.task)
        jlog.write(event="eval", step=step, epoch=epoch, split=opt.eval_split, **summary)
        _print(info, f"[eval step {step}] {opt.eval_split}\n{format_summary(summary)}")
        if best is None or summary["mIoU"] > best:
            best = summary["mIoU"]
            save("best", epoch)
        return summary

    t_start = time.perf_counter()
    stop_reason = "done"
    last_eval: dict[str, Any] | None = None
    from tqdm import tqdm

    epoch = step // steps_per_epoch
    loader = _loader(train_ds, sampler, tc.batch_size, tc.num_workers, device)  # workers live across epochs
    while step < total_steps:
        start_in_epoch = (step % steps_per_epoch) * tc.batch_size
        train_ds.set_epoch(epoch)
        sampler.set_epoch(epoch, start_in_epoch)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{n_epochs}", unit="step", disable=not info.main,
                   dynamic_ncols=True, leave=False)
        t_data = time.perf_counter()
        for batch in bar:
            data_s = time.perf_counter() - t_data
            lr = next(g["lr"] for g in optimizer.param_groups if g.get("name") == "decoder")
            parts = train_step(model, raw_model, batch, optimizer, scaler, cfg, device, amp, amp_dtype)
            with warnings.catch_warnings():  # an fp16 step skipped by the scaler makes torch warn here
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
                scheduler.step()
            step += 1
            bar.set_postfix(loss=f"{parts['loss']:.3f}", lr=f"{lr:.2e}")
            if info.main and (step % max(1, tc.log_every) == 0 or step == 1 or step == total_steps):
                jlog.write(event="train", step=step, epoch=epoch, lr=lr, data_s=round(data_s, 4),
                           texts=len(batch["texts"]), **parts)
            if opt.save_every and step % opt.save_every == 0:
                save("latest", epoch)
            if step >= total_steps:
                break
            if opt.time_budget is not None:
                clock["time_fraction"] = _shared_time_fraction(time.perf_counter() - t_start, opt.time_budget, info, device)
                if clock["time_fraction"] >= 1.0:
                    stop_reason = "time budget"
                    break
            t_data = time.perf_counter()
        bar.close()
        if stop_reason != "done" or step >= total_steps:
            break
        epoch += 1  # a full epoch is done
        save("latest", epoch)
        if tc.eval_every > 0 and epoch % tc.eval_every == 0 and not opt.no_eval:
            last_eval = run_eval(epoch)
    save("latest", step // steps_per_epoch)
    elapsed = time.perf_counter() - t_start
    jlog.write(event="stop", step=step, reason=stop_reason, seconds=round(elapsed, 2))
    _print(info, f"training stopped at step {step}/{total_steps} ({stop_reason}, {elapsed:.1f} s); "
                 f"checkpoint {work / 'latest.pth'}")
    if not opt.no_eval:
        last_eval = run_eval(epoch)
    return {"step": step, "total_steps": total_steps, "stop_reason": stop_reason, "eval": last_eval,
            "seconds": elapsed}


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry (``bqnet-train``); returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    opt = parse_args(argv)
    from bqnet_model.model.config import load_config

    try:
        cfg = load_config(opt.config, opt.overrides)
        _apply_overrides(cfg, opt)
    except (FileNotFoundError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if torch.get_num_threads() > 2 and not torch.cuda.is_available():
        torch.set_num_threads(min(torch.get_num_threads(), int(os.environ.get("BQNET_THREADS", "2"))))
    info, device = init_distributed(opt.gpu_id)
    try:
        if opt.checkpoint:
            run_evaluation_only(opt, cfg, info, device)
        else:
            run_training(opt, cfg, info, device)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if info.enabled and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
