"""Training and evaluation of BQNet: ``python -m bqnet_model.train config/res.yaml --gpu_id 0``.

- ``--checkpoint x.pth``: evaluate that checkpoint only and print the metrics;
- ``--resume [path]``: continue a run (model, optimizer, scheduler, AMP scaler, step, RNG states;
  default path ``<work_dir>/latest.pth``), mid-epoch included: the sampler skips the batches done;
- ``--set KEY=VALUE`` overrides any config key (``--set train.work_dir=runs/x``,
  ``--set inference.task=gres``); ``--max-steps`` and ``--time-budget`` cut the run short;
  under ``torchrun`` the same command trains with DDP (rank 0 logs and saves);
- ``--profile-steps N``: once the run is warm (10 steps, fewer in a run shorter than 10 + N), profile
  the next N steps with ``torch.profiler`` (their data loading included) and write
  ``<train.work_dir>/profile.txt`` and a ``profile`` event in ``metrics.jsonl``: where a step's time
  goes, from the training call itself (rank 0 only under DDP).

Modules: ``options`` (command line), ``data`` (data sets of a config), ``schedule`` (epoch
sampler, learning-rate factors), ``loop`` (the step, the run, ``main``), ``evaluation``
(through ``Segmenter``), ``state`` (resumable checkpoints, the metrics log), ``distributed``,
``profiling`` (``--profile-steps``).
"""

from .data import ANNOTATION_NAMES, build_datasets, find_annotations, scene_dir
from .distributed import DistInfo, init_distributed
from .evaluation import evaluate, run_evaluation_only, summarize
from .loop import main, run_training, train_step, use_training_attention_kernels
from .options import TrainOptions, parse_args
from .schedule import EpochSampler, lr_factor, poly_factor
from .state import JsonLog, load_training_state, save_training_state

__all__ = [
    "ANNOTATION_NAMES", "DistInfo", "EpochSampler", "JsonLog", "TrainOptions", "build_datasets",
    "evaluate", "find_annotations", "init_distributed", "load_training_state", "lr_factor", "main", "parse_args",
    "poly_factor", "run_evaluation_only", "run_training", "save_training_state", "scene_dir", "summarize",
    "train_step", "use_training_attention_kernels",
]
