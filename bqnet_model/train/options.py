"""Command-line options of ``bqnet-train`` and how they override the config."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Sequence

__all__ = ["TrainOptions", "parse_args", "apply_overrides"]


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
                    help="stop after this many optimizer steps (the per-step schedule, train.lr_schedule step, spans them)")
    ap.add_argument("--time-budget", "--time_budget", dest="time_budget", type=float, default=None,
                    help="stop training after this many seconds (checkpoint saved, then evaluation)")
    ap.add_argument("--save-every", dest="save_every", type=int, default=0,
                    help="also save <work_dir>/latest.pth every N steps (0: at each epoch end only)")
    ap.add_argument("--eval-every", dest="eval_every", type=int, default=None, help="evaluate every N epochs (0: only at the end)")
    ap.add_argument("--eval-split", dest="eval_split", default="val")
    ap.add_argument("--eval-limit", dest="eval_limit", type=int, default=None,
                    help="evaluate only the first N items (scene x description chunks); quick checks")
    ap.add_argument("--num-workers", dest="num_workers", type=int, default=None)
    ap.add_argument("--batch-size", dest="batch_size", type=int, default=None, help="items (one scene and a chunk of its descriptions) per step and GPU")
    ap.add_argument("--lang-per-scene", dest="lang_per_scene", type=int, default=None,
                    help="override train.lang_per_scene (descriptions per item: the chunk size)")
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
                         "--set model.decoder.dqf=false (repeatable; an ablation is one flag)")
    ns = ap.parse_args(argv)
    return TrainOptions(**vars(ns))



def apply_overrides(cfg: Any, opt: TrainOptions) -> None:
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


