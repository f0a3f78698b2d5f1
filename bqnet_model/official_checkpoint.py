"""The authors' checkpoint files (CFNet/BQNet, and SPFormer/IPDN files of the same family).

An official CFNet file is what gorilla's ``save_checkpoint`` writes::

    {'meta': {'epoch', 'best_miou', 'time'}, 'model': state_dict, 'optimizer': ..., 'scheduler': ...}

Reading it safely: ``torch.load(weights_only=True)`` refuses the file because ``meta['best_miou']``
is a pickled numpy scalar. We never fall back to a plain pickle load of a file that may come from
anywhere (a pickle can run code); instead the weights-only unpickler gets an explicit allowlist
of exactly the numpy globals such a scalar needs (``numpy.core.multiarray.scalar`` under its
numpy-1 name, ``numpy.dtype`` and the float dtype classes). Anything else still refuses to load.

Mapping to our names is a fixed prefix rule: ``input_conv.* / unet.* / output_layer.*`` ->
``backbone.*``; ``dec.*`` -> ``decoder.*``; ``text_encoder.*`` -> ``text_encoder.model.*``.
Three entries are not model weights and are dropped (and reported): ``criterion.loss_weight``
(the loss's weight buffer) and the text encoder's ``embeddings.position_ids`` /
``embeddings.token_type_ids`` (buffers that gorilla saves although PyTorch marks them
non-persistent; they hold ``arange`` and zeros, which our model rebuilds itself). The rest must
load strictly: a missing or unexpected key, or a wrong shape, raises with the readable report,
because a half-loaded network gives confident nonsense.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch


__all__ = [
    "LoadReport",
    "DROPPED_KEYS",
    "read_official_file",
    "read_official_checkpoint",
    "is_official_file",
    "extract_state_dict",
    "map_official_keys",
    "official_name",
    "load_official",
    "describe_official",
    "config_from_official",
]

log = logging.getLogger(__name__)

_BACKBONE_PREFIXES = ("input_conv.", "unet.", "output_layer.")
DROPPED_KEYS = (
    "criterion.loss_weight",
    "text_encoder.embeddings.position_ids",
    "text_encoder.embeddings.token_type_ids",
)


@dataclass
class LoadReport:
    """What a load did: keys ``loaded``; ``missing`` (model keys the file lacks), ``unexpected``
    (file keys with no model counterpart, official names), ``shape_mismatch`` (name, file shape,
    model shape); ``dropped``: file entries that are not model weights (``DROPPED_KEYS``)."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    source: str = ""

    @property
    def ok(self) -> bool:
        """True when every model key was loaded with the right shape and nothing was left over."""
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def missing_in(self, prefix: str) -> list[str]:
        return [k for k in self.missing if k.startswith(prefix)]

    def __str__(self) -> str:
        head = f"checkpoint load report{(' for ' + self.source) if self.source else ''}: " \
               f"{len(self.loaded)} tensors loaded, {len(self.missing)} missing, " \
               f"{len(self.unexpected)} unexpected, {len(self.shape_mismatch)} shape mismatches" \
               + (f", {len(self.dropped)} non-model entries dropped ({', '.join(self.dropped)})" if self.dropped else "")
        lines = [head]
        if self.shape_mismatch:
            lines.append("  shape mismatches (file -> model):")
            lines += [f"    {k}: {tuple(a)} -> {tuple(b)}" for k, a, b in self.shape_mismatch[:50]]
            if len(self.shape_mismatch) > 50:
                lines.append(f"    ... and {len(self.shape_mismatch) - 50} more")
        for title, keys in (("missing (kept as initialized)", self.missing), ("unexpected (ignored)", self.unexpected)):
            if keys:
                lines.append(f"  {title}:")
                lines += ["    " + s for s in _summarize(keys)]
        return "\n".join(lines)


def _summarize(keys: list[str], max_listed: int = 40) -> list[str]:
    """Keys grouped by module (first two name parts) with counts; short lists are given in full."""
    if len(keys) <= max_listed:
        return list(keys)
    groups = Counter(".".join(k.split(".")[:2]) for k in keys)
    return [f"{g}.* ({n} keys)" for g, n in sorted(groups.items())]



def _numpy_scalar_allowlist() -> list[Any]:
    """The globals a pickled numpy scalar needs, under the names numpy 1.x wrote into the file."""
    allow: list[Any] = [np.dtype]
    core = getattr(np, "_core", None)  # numpy 2: the function lives in numpy._core.multiarray
    if core is not None:  # numpy-1 files name it numpy.core..., files written under numpy 2 numpy._core...
        allow += [(core.multiarray.scalar, "numpy.core.multiarray.scalar"), core.multiarray.scalar]
    else:  # numpy 1.x: the stored name is the real one
        allow.append(np.core.multiarray.scalar)  # type: ignore[attr-defined]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in ("Float32DType", "Float64DType", "Float16DType", "Int64DType", "Int32DType"):
            if hasattr(dtypes, name):
                allow.append(getattr(dtypes, name))
    return allow


def read_official_file(path: str | os.PathLike) -> dict[str, Any]:
    """The whole official file (meta, model, optimizer, scheduler) read with the weights-only
    unpickler plus the numpy-scalar allowlist (module docstring). Raises ``FileNotFoundError`` or
    ``ValueError`` with what to do."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_allowlist()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types
        raise ValueError(
            f"cannot read {path} safely: it holds objects beyond tensors, numbers and numpy scalars "
            f"(refused: loading them could run code), or it is not a torch file. ({exc})"
        ) from exc
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} holds a {type(obj).__name__}, expected a dict (an official checkpoint)")
    return dict(obj)


def is_official_file(obj: Any) -> bool:
    """True for a dict that holds an official state dict (``model``/``net``/``state_dict``, or
    tensors at the top level). Our own files say ``format``; callers check that first."""
    if not isinstance(obj, Mapping) or "format" in obj:
        return False
    return any(isinstance(obj.get(k), Mapping) for k in ("model", "net", "state_dict")) or any(
        isinstance(v, torch.Tensor) for v in obj.values())


def extract_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """The state dict inside an official file: ``obj['model']`` (CFNet/gorilla), ``obj['net']``
    (SPFormer), ``obj['state_dict']`` or ``obj`` itself; ``module.`` prefixes (DataParallel)
    stripped; non-tensors dropped."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint holds a {type(obj).__name__}, expected a dict")
    sd: Any = obj
    for key in ("model", "net", "state_dict"):
        if key in obj and isinstance(obj[key], Mapping):
            sd = obj[key]
            break
    out = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            continue
        name = str(k)
        while name.startswith("module."):
            name = name[len("module."):]
        out[name] = v
    if not out:
        raise ValueError("checkpoint holds no tensors (expected {'model': state_dict} or a state dict)")
    return out


def read_official_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model state dict of an official file, official key names, read safely."""
    return extract_state_dict(read_official_file(path))


def map_official_keys(sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Official names -> ours. Returns (mapped, dropped non-model keys, unmappable keys)."""
    mapped: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    for k, v in sd.items():
        if k in DROPPED_KEYS:
            dropped.append(k)
        elif k.startswith(_BACKBONE_PREFIXES):
            mapped["backbone." + k] = v
        elif k.startswith("dec."):
            mapped["decoder." + k[len("dec."):]] = v
        elif k.startswith("text_encoder."):
            mapped["text_encoder.model." + k[len("text_encoder."):]] = v
        else:
            unknown.append(k)
    return mapped, dropped, unknown


def official_name(ours: str) -> str:
    """Our key -> the official one (for reports)."""
    for a, b in (("backbone.", ""), ("decoder.", "dec."), ("text_encoder.model.", "text_encoder.")):
        if ours.startswith(a):
            return b + ours[len(a):]
    return ours


def _check_dropped_buffers(sd: Mapping[str, torch.Tensor]) -> None:
    """The dropped text buffers must hold what our model rebuilds (arange / zeros)."""
    pos = sd.get("text_encoder.embeddings.position_ids")
    if pos is not None and not torch.equal(pos.reshape(-1).long(), torch.arange(pos.numel())):
        raise ValueError("text_encoder.embeddings.position_ids is not 0..N-1: this file's text encoder "
                         "uses position ids our model cannot reproduce")
    tt = sd.get("text_encoder.embeddings.token_type_ids")
    if tt is not None and bool(tt.any()):
        raise ValueError("text_encoder.embeddings.token_type_ids is not all zero: unsupported text encoder")


def load_official(
    model: torch.nn.Module,
    source: str | os.PathLike | Mapping[str, Any],
    strict: bool = True,
    backbone_only: bool = False,
    our_names: bool = False,
) -> LoadReport:
    """Load an official file (or its object / state dict) into ``model`` (a ``BQNet``).

    ``strict`` (default): every model key of the loaded scope must come from the file with its
    shape, and every file key must be used (apart from ``DROPPED_KEYS``), else ``ValueError``
    with the report and nothing is loaded. ``backbone_only``: only ``backbone.*`` is loaded,
    other keys are ignored (SPFormer's ``sp_unet_backbone.pth`` initialisation); non-strict
    returns the report of what matched and loads that. ``our_names``: ``source`` is a state dict
    already named as ours (a backbone taken from one of our checkpoints).
    """
    name = str(source) if isinstance(source, (str, os.PathLike)) else "<state dict>"
    obj = read_official_file(source) if isinstance(source, (str, os.PathLike)) else source
    report = LoadReport(source=name)
    if our_names:
        mapped = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        dropped: list[str] = []
        unknown: list[str] = []
    else:
        sd = extract_state_dict(obj)
        _check_dropped_buffers(sd)
        mapped, dropped, unknown = map_official_keys(sd)
    target = model.state_dict()
    scope = ("backbone.",) if backbone_only else ("backbone.", "decoder.", "text_encoder.")
    report.unexpected = sorted(unknown)
    to_load: dict[str, torch.Tensor] = {}
    for k, v in mapped.items():
        if not k.startswith(scope) or k not in target:
            report.unexpected.append(official_name(k))
        elif tuple(v.shape) != tuple(target[k].shape):
            report.shape_mismatch.append((k, tuple(v.shape), tuple(target[k].shape)))
        else:
            to_load[k] = v
    report.unexpected.sort()
    report.loaded = sorted(to_load)
    mismatched = {s[0] for s in report.shape_mismatch}
    has_text = any(k.startswith("text_encoder.") for k in mapped)
    for k in target:
        if not k.startswith(scope) or k in to_load or k in mismatched:
            continue
        if k.startswith("text_encoder.") and not has_text and not strict:
            continue  # a backbone+decoder file keeps the model's own text encoder
        report.missing.append(k)
    report.missing.sort()
    report.dropped = sorted(dropped)
    if strict and not report.ok:
        raise ValueError(f"official checkpoint does not match the configured model (nothing loaded)\n{report}")
    model.load_state_dict(to_load, strict=False)
    return report


def describe_official(obj: Mapping[str, Any]) -> str:
    """One line on an official file: epoch, best mIoU, time, tensors per top-level module."""
    meta = obj.get("meta") if isinstance(obj.get("meta"), Mapping) else {}
    sd = extract_state_dict(obj)
    groups = Counter(k.split(".")[0] for k in sd)
    parts = ", ".join(f"{g} {n}" for g, n in sorted(groups.items()))
    best = meta.get("best_miou")
    best_s = f"{float(best):.4f}" if best is not None else "?"
    return f"official checkpoint: epoch {meta.get('epoch', '?')}, best mIoU {best_s}, saved {meta.get('time', '?')}; tensors: {parts}"


def config_from_official(model_cfg: Mapping[str, Any], text_encoder: str = "roberta-base", tokenizer: str = "",
                         image_channels: int = 1024) -> Any:
    """Our ``Config`` for the network an official ``model:`` block describes (the CFNet yaml form:
    ``input_channel``, ``blocks``, ``block_reps``, ``media``, ``pool``, ``fps_num``, ``task_type``,
    ``sampling_module``, ``dec``). ``text_encoder``: the folder or name of the RoBERTa the file's
    ``text_encoder.*`` weights belong to (its architecture; the weights come from the file);
    ``tokenizer``: a folder with its tokenizer files when the encoder's own are not on disk.
    The authors' official files all have the 1024-d image branch (``image_channels``)."""
    from bqnet_model.model.config import BackboneConfig, Config, InferenceConfig, ModelConfig, TextConfig
    from bqnet_model.model.decoder import DecoderConfig

    task = str(model_cfg.get("task_type", "res"))
    if task not in ("res", "gres"):
        raise ValueError(f"task_type must be 'res' or 'gres', got {task!r}")
    backbone = BackboneConfig(
        in_channels=int(model_cfg.get("input_channel", 6)), media=int(model_cfg.get("media", 32)),
        levels=int(model_cfg.get("blocks", 5)), block_reps=int(model_cfg.get("block_reps", 2)),
        pool=str(model_cfg.get("pool", "mean")),
    )
    text = TextConfig(encoder=text_encoder, tokenizer=tokenizer, official_prep=True, max_tokens=0)
    decoder = DecoderConfig.from_official(dict(model_cfg), image_channels=image_channels)
    return Config(model=ModelConfig(backbone=backbone, text=text, decoder=decoder),
                  inference=InferenceConfig(task=task))  # type: ignore[arg-type]
