"""Checkpoints: our own format, and the official IPDN/BQNet/SPFormer files.

Our format is one ``torch.save``d dict, read back with ``torch.load(weights_only=True)`` (no
pickled code runs)::

    {'format': 'bqnet_ros/1', 'config': Config.to_dict(), 'state_dict': {...}, 'meta': {...}}

A frozen text encoder is not stored (it is the unchanged pretrained model the config names, and
would make every checkpoint 90-500 MB); it is stored when the config has ``text.freeze: false``.
Loading our format is strict: a missing or unexpected key or a wrong shape is refused with the
readable list (``ValueError``), so a checkpoint never silently half-loads.

Official files hold ``{'net': state_dict, ...}`` or a bare state dict, keys maybe prefixed
``module.`` (DataParallel). Mapping: ``input_conv.* / unet.* / output_layer.*`` ->
``backbone.*``; ``dec.*`` -> ``decoder.*``; ``text_encoder.*`` -> ``text_encoder.model.*``.
Everything else is unexpected. Nothing raises for official files: ``load_official`` loads what
matches in name and shape and returns a ``LoadReport`` listing the rest.
"""

from __future__ import annotations

import datetime
import logging
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from bqnet_model import __version__
from bqnet_model.model.bqnet import BQNet
from bqnet_model.model.config import Config, load_config

__all__ = [
    "FORMAT",
    "LoadReport",
    "checkpoint_state",
    "save_checkpoint",
    "read_checkpoint",
    "load_checkpoint",
    "load_state_strict",
    "extract_state_dict",
    "map_official_keys",
    "load_official",
    "load_backbone",
    "load_model",
    "load_state_dict_into",
]

log = logging.getLogger(__name__)

FORMAT = "bqnet_ros/1"
_BACKBONE_PREFIXES = ("input_conv.", "unet.", "output_layer.")


@dataclass
class LoadReport:
    """What a non-strict load did: keys ``loaded``; ``missing`` (model keys the file lacks),
    ``unexpected`` (file keys with no model counterpart, official names), ``shape_mismatch``
    (name, file shape, model shape)."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
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
               f"{len(self.unexpected)} unexpected, {len(self.shape_mismatch)} shape mismatches"
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


# ---------------------------------------------------------------------- our format
def _text_encoder_stored(model: BQNet) -> bool:
    return not model.cfg.text.freeze


def checkpoint_state(model: BQNet) -> dict[str, torch.Tensor]:
    """The model's state dict as our checkpoints store it (frozen text encoder left out)."""
    sd = model.state_dict()
    if not _text_encoder_stored(model):
        sd = {k: v for k, v in sd.items() if not k.startswith("text_encoder.")}
    return {k: v.detach().cpu() for k, v in sd.items()}


_PLAIN = (str, int, float, bool, type(None))  # exact types: subclasses (np.float64, TorchVersion) pickle as globals
_TORCH_SAFE = (torch.Tensor, torch.dtype, torch.device, torch.Size)


def _check_weights_only_safe(value: Any, path: str) -> None:
    """Raise TypeError unless ``value`` is made only of what ``torch.load(weights_only=True)`` reads."""
    if type(value) in _PLAIN or isinstance(value, _TORCH_SAFE):
        return
    if type(value) is dict:
        for k, v in value.items():
            if type(k) not in (str, int):
                raise TypeError(f"{path}: key {k!r} must be str or int")
            _check_weights_only_safe(v, f"{path}[{k!r}]")
        return
    if type(value) in (list, tuple):
        for i, v in enumerate(value):
            _check_weights_only_safe(v, f"{path}[{i}]")
        return
    raise TypeError(
        f"{path} is a {type(value).__name__}: checkpoints hold only tensors, numbers, strings, lists and dicts "
        "so that they load with torch.load(weights_only=True) (convert numpy arrays with torch.from_numpy)"
    )


def save_checkpoint(path: str | os.PathLike, model: BQNet, cfg: Config, meta: Mapping[str, Any] | None = None,
                    extra: Mapping[str, Any] | None = None) -> Path:
    """Write model + config atomically; returns the path.

    ``meta``: plain values merged into ``obj['meta']``; ``extra``: more top-level entries (e.g.
    a training state). Both must be weights-only safe (checked, ``TypeError`` naming the value).
    """
    if not isinstance(model, BQNet):
        raise TypeError(f"model must be a BQNet, got {type(model).__name__}")
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a Config, got {type(cfg).__name__}")
    _check_weights_only_safe(dict(meta or {}), "meta")
    _check_weights_only_safe(dict(extra or {}), "extra")
    clash = {"format", "config", "state_dict", "meta"} & set(extra or {})
    if clash:
        raise ValueError(f"extra may not use the reserved keys {sorted(clash)}")
    cfg.model = model.cfg  # the resolved decoder channels
    info = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "bqnet_model_version": __version__,
        "torch_version": str(torch.__version__),
        "text_encoder": model.text_encoder.cfg.encoder,
        "text_channels": model.text_encoder.hidden_size,
        "text_encoder_stored": _text_encoder_stored(model),
    }
    info.update(dict(meta or {}))
    obj = {"format": FORMAT, "config": cfg.to_dict(), "state_dict": checkpoint_state(model), "meta": info}
    obj.update(dict(extra or {}))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load(path, map_location='cpu', weights_only=True)`` with readable errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types
        raise ValueError(
            f"cannot read {path} as a weights-only checkpoint (it may hold pickled code objects, "
            f"which are refused for safety, or not be a torch file): {exc}"
        ) from exc


def load_state_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor] | None = None,
                      source: str = "") -> None:
    """Load ``state`` into ``model`` only if its keys and shapes equal ``expected`` (default: the
    model's state dict); else raise ``ValueError`` with the readable report."""
    expected = model.state_dict() if expected is None else expected
    report = LoadReport(source=source)
    report.missing = sorted(k for k in expected if k not in state)
    report.unexpected = sorted(k for k in state if k not in expected)
    for k in sorted(set(state) & set(expected)):
        a, b = tuple(state[k].shape), tuple(expected[k].shape)
        if a != b:
            report.shape_mismatch.append((k, a, b))
        else:
            report.loaded.append(k)
    if not report.ok:
        raise ValueError(f"checkpoint does not match the model built from its config\n{report}")
    model.load_state_dict(dict(state), strict=False)


def is_our_format(obj: Any) -> bool:
    return isinstance(obj, Mapping) and obj.get("format") == FORMAT


def _require_ours(obj: Any, path: Any) -> None:
    if not is_our_format(obj):
        found = obj.get("format") if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(
            f"{path} is not a {FORMAT} checkpoint (format: {found!r}); official IPDN/BQNet/SPFormer "
            "files load with bqnet_model.checkpoint.load_official(model, path) into a model built from a config"
        )
    for key in ("config", "state_dict"):
        if key not in obj:
            raise ValueError(f"{path}: checkpoint lacks {key!r}")


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu", text_pretrained: bool = True
) -> tuple[BQNet, Config, dict[str, Any]]:
    """Build the model from the stored config and load its weights (strict); eval mode."""
    obj = read_checkpoint(path)
    _require_ours(obj, path)
    cfg = load_config(obj["config"])
    model = BQNet(cfg.model, text_pretrained=text_pretrained)
    cfg.model = model.cfg
    load_state_strict(model, obj["state_dict"], checkpoint_state(model), source=str(path))
    model.to(device).eval()
    return model, cfg, dict(obj.get("meta") or {})


def load_state_dict_into(model: BQNet, path: str | os.PathLike) -> None:
    """Strictly load the weights of one of our checkpoints into an existing model (resume)."""
    obj = read_checkpoint(path)
    _require_ours(obj, path)
    load_state_strict(model, obj["state_dict"], checkpoint_state(model), source=str(path))


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu", config: Config | None = None
) -> tuple[BQNet, Config | None]:
    """Any checkpoint -> model in eval mode.

    Ours: built from the stored config (``config`` ignored), strict; returns (model, stored config).
    Official (IPDN/BQNet-style): built from ``config`` (required), weights by ``load_official``;
    the report is logged, and missing backbone/decoder weights raise ``ValueError`` (they would
    stay random); returns (model, None).
    """
    obj = read_checkpoint(path)
    if is_our_format(obj):
        _require_ours(obj, path)
        cfg = load_config(obj["config"])
        model = BQNet(cfg.model)
        cfg.model = model.cfg
        load_state_strict(model, obj["state_dict"], checkpoint_state(model), source=str(path))
        return model.to(device).eval(), cfg
    if config is None:
        raise ValueError(
            f"{path} is not a {FORMAT} checkpoint, so it carries no config: give the config it was trained "
            "with (e.g. config/res.yaml) to load it as an official IPDN/BQNet checkpoint"
        )
    model = BQNet(config.model)
    report = load_official(model, obj)
    report.source = str(path)
    log.info("%s", report)
    lacking = report.missing_in("backbone.") + report.missing_in("decoder.")
    lacking += [k for k, _, _ in report.shape_mismatch if not k.startswith("text_encoder.")]
    if lacking:
        raise ValueError(f"{path} does not provide all backbone/decoder weights of the configured model\n{report}")
    return model.to(device).eval(), None


def load_backbone(model: BQNet, path: str | os.PathLike) -> LoadReport:
    """Initialize the backbone from SPFormer's ``sp_unet_backbone.pth`` (or any official file)."""
    return load_official(model, path, backbone_only=True)


# ---------------------------------------------------------------------- official files
def extract_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """The state dict inside an official file: ``obj['net']``, ``obj['state_dict']``,
    ``obj['model']`` or ``obj`` itself; ``module.`` prefixes stripped; non-tensors dropped."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint holds a {type(obj).__name__}, expected a dict")
    sd: Any = obj
    for key in ("net", "state_dict", "model"):
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
        raise ValueError("checkpoint holds no tensors (expected {'net': state_dict} or a state dict)")
    return out


def map_official_keys(sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Official names -> ours (module docstring); returns (mapped, unmappable official keys)."""
    mapped: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for k, v in sd.items():
        if k.startswith(_BACKBONE_PREFIXES):
            mapped["backbone." + k] = v
        elif k.startswith("dec."):
            mapped["decoder." + k[len("dec."):]] = v
        elif k.startswith("text_encoder."):
            mapped["text_encoder.model." + k[len("text_encoder."):]] = v
        else:
            unknown.append(k)
    return mapped, unknown


def _official_name(ours: str) -> str:
    for a, b in (("backbone.", ""), ("decoder.", "dec."), ("text_encoder.model.", "text_encoder.")):
        if ours.startswith(a):
            return b + ours[len(a):]
    return ours


def load_official(
    model: BQNet, source: str | os.PathLike | Mapping[str, Any], backbone_only: bool = False
) -> LoadReport:
    """Load an IPDN/BQNet-style checkpoint (or SPFormer's backbone with ``backbone_only``).

    Loads every tensor whose mapped name and shape match; returns the report (never raises on
    mismatches; unexpected keys are given with their official names, missing ones with ours).
    """
    name = str(source) if isinstance(source, (str, os.PathLike)) else "<state dict>"
    obj = read_checkpoint(source) if isinstance(source, (str, os.PathLike)) else source
    if is_our_format(obj):  # one of ours (e.g. a backbone from an earlier run): names are already ours
        mapped, unknown = {k: v for k, v in obj["state_dict"].items() if isinstance(v, torch.Tensor)}, []
    else:
        mapped, unknown = map_official_keys(extract_state_dict(obj))
    target = model.state_dict()
    scope = ("backbone.",) if backbone_only else ("backbone.", "decoder.", "text_encoder.")
    report = LoadReport(source=name)
    report.unexpected = sorted(unknown)
    to_load: dict[str, torch.Tensor] = {}
    for k, v in mapped.items():
        if not k.startswith(scope):
            report.unexpected.append(_official_name(k))
        elif k not in target:
            report.unexpected.append(_official_name(k))
        elif tuple(v.shape) != tuple(target[k].shape):
            report.shape_mismatch.append((k, tuple(v.shape), tuple(target[k].shape)))
        else:
            to_load[k] = v
    report.unexpected.sort()
    report.loaded = sorted(to_load)
    has_text = any(k.startswith("text_encoder.") for k in mapped)
    mismatched = {s[0] for s in report.shape_mismatch}
    for k in target:
        if not k.startswith(scope) or k in to_load:
            continue
        if k.startswith("text_encoder.") and not has_text:
            continue  # a file without the text encoder keeps the pretrained one (not an error)
        if k in mismatched:
            continue
        report.missing.append(k)
    report.missing.sort()
    model.load_state_dict(to_load, strict=False)
    return report
