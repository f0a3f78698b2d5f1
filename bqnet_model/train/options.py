"""Command-line options of ``bqnet-train``.

Every config key is overridden one way, ``--set KEY=VALUE`` (``--set train.lr=4e-4``,
``--set inference.task=gres``), and validated by the config itself (``load_config``). The flags
here steer the run without being config keys: what to start from, when to stop, what to evaluate.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable, NoReturn, Sequence

__all__ = ["TrainOptions", "parse_args", "RETIRED_FLAGS"]

# One-key flags of earlier versions and the config key ``--set`` now gives; only for the hint of
# the error message.
RETIRED_FLAGS: dict[str, str] = {
    "--work-dir": "train.work_dir", "--work_dir": "train.work_dir",
    "--data-root": "train.data_root", "--data_root": "train.data_root",
    "--epochs": "train.epochs", "--eval-every": "train.eval_every", "--num-workers": "train.num_workers",
    "--batch-size": "train.batch_size", "--lang-per-scene": "train.lang_per_scene", "--lr": "train.lr",
    "--seed": "train.seed", "--task": "inference.task",
    "--train-annotations": "train.train_annotations", "--val-annotations": "train.val_annotations",
}


@dataclass
class TrainOptions:
    """Command-line options (``parse_args``); the config's keys come through ``overrides``."""

    config: str
    gpu_id: int | None = None
    checkpoint: str | None = None
    resume: str | None = None
    init_weights: str | None = None
    max_steps: int | None = None
    time_budget: float | None = None
    save_every: int = 0
    eval_split: str = "val"
    eval_limit: int | None = None
    amp_dtype: str = "fp16"
    no_eval: bool = False
    find_unused: bool = False
    profile_steps: int = 0
    overrides: list[str] | None = None


class _Parser(argparse.ArgumentParser):
    """argparse's parser whose error for a retired one-key flag also names the ``--set`` key."""

    def error(self, message: str) -> NoReturn:
        words = {w.split("=")[0] for w in message.replace(",", " ").split()}
        hints = [f"use --set {key}=..." for flag, key in RETIRED_FLAGS.items() if flag in words]
        super().error("; ".join([message, *hints]))


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    """An argparse type: ``kind(text)``, refused unless > 0."""

    def parse(text: str) -> float:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its "invalid ... value" message
    return parse


def _non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> TrainOptions:
    ap = _Parser(prog="bqnet-train", description="Train or evaluate BQNet (3D-RES / 3D-GRES). Config keys are "
                 "overridden with --set, e.g. --set train.lr=4e-4 --set inference.task=gres "
                 "--set train.data_root=/tmp/synth --set train.work_dir=runs/x")
    ap.add_argument("config", help="YAML config (model / inference / train sections)")
    ap.add_argument("--gpu_id", "--gpu-id", dest="gpu_id", type=int, default=None,
                    help="CUDA device index (ignored under torchrun, which sets LOCAL_RANK); CPU when no GPU")
    ap.add_argument("--checkpoint", default=None, help="evaluate this checkpoint only (no training)")
    ap.add_argument("--resume", nargs="?", const="auto", default=None,
                    help="resume training from a checkpoint (default <train.work_dir>/latest.pth)")
    ap.add_argument("--init-weights", "--init_weights", dest="init_weights", default=None,
                    help="start from this checkpoint's weights (fresh optimizer and schedule), e.g. to continue "
                         "training a model whose optimizer state was not kept")
    ap.add_argument("--max-steps", "--max_steps", dest="max_steps", type=_positive(int), default=None,
                    help="stop after this many optimizer steps (the per-step schedule, train.lr_schedule step, spans them)")
    ap.add_argument("--time-budget", "--time_budget", dest="time_budget", type=_positive(float), default=None,
                    help="stop training after this many seconds (checkpoint saved, then evaluation)")
    ap.add_argument("--save-every", dest="save_every", type=int, default=0,
                    help="also save <train.work_dir>/latest.pth every N steps (0: at each epoch end only)")
    ap.add_argument("--eval-split", dest="eval_split", default="val")
    ap.add_argument("--eval-limit", dest="eval_limit", type=int, default=None,
                    help="evaluate only the first N items (scene x description chunks); quick checks")
    ap.add_argument("--amp-dtype", dest="amp_dtype", choices=("fp16", "bf16"), default="fp16")
    ap.add_argument("--no-eval", dest="no_eval", action="store_true", help="skip evaluation after training")
    ap.add_argument("--find-unused", dest="find_unused", action="store_true",
                    help="DDP find_unused_parameters (only for configs where some parameters get no gradient)")
    ap.add_argument("--profile-steps", "--profile_steps", dest="profile_steps", type=_non_negative_int, default=0,
                    metavar="N", help="profile N optimizer steps with torch.profiler once the run is warm (after 10 "
                    "steps, fewer in a shorter run) and write <train.work_dir>/profile.txt and a 'profile' event in "
                    "metrics.jsonl (rank 0 only; 0: off)")
    ap.add_argument("--set", dest="overrides", action="append", default=None, metavar="KEY=VALUE",
                    help="override one config key by its dotted path, the value read as YAML, e.g. "
                         "--set model.decoder.dqf=false (repeatable; an ablation is one flag)")
    ns = ap.parse_args(argv)
    return TrainOptions(**vars(ns))
