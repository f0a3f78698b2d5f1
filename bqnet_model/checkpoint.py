"""Checkpoints: our own format, and the one entry point that opens any checkpoint.

Our format is one ``torch.save``d dict, read back with ``torch.load(weights_only=True)`` (no
pickled code runs)::

    {'format': 'bqnet_ros/1', 'config': Config.to_dict(), 'state_dict': {...}, 'meta': {...}}

A frozen text encoder is not stored (it is the unchanged pretrained model the config names, and
would make every checkpoint the encoder's size larger); it is stored when the config has ``text.freeze: false``.
Loading our format is strict: a missing or unexpected key or a wrong shape is refused with the
readable list (``ValueError``), so a checkpoint never silently half-loads.

The authors' files (CFNet's gorilla layout, SPFormer's backbone) are read and mapped by
``official_checkpoint``; ``load_model`` opens either kind.
"""

from __future__ import annotations

import copy
import datetime
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from bqnet_model import __version__
from bqnet_model.model.bqnet import BQNet
from bqnet_model.model.config import Config, load_config
from bqnet_model.official_checkpoint import (LoadReport, describe_official, is_official_file, load_official,
                                             read_official_file)

__all__ = [
    "FORMAT",
    "LoadReport",
    "checkpoint_state",
    "save_checkpoint",
    "export_weights",
    "with_inference_values",
    "with_weights",
    "read_checkpoint",
    "load_checkpoint",
    "load_state_strict",
    "load_backbone",
    "load_model",
    "load_state_dict_into",
    "carries_config",
]

log = logging.getLogger(__name__)

FORMAT = "bqnet_ros/1"


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
    return _save_atomic(obj, Path(path))


def _save_atomic(obj: Mapping[str, Any], path: Path) -> Path:
    """``torch.save`` through a temporary file in the same folder: a reader never sees half a file."""
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


def export_weights(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """A training checkpoint (``latest.pth``) as a model file: format, config, weights and meta only.

    Works on the file alone, without building the model, so it also runs where the model could
    not be built (a GPU machine without spaCy exporting a ``text.official_prep`` model trained
    from a parse cache). Load the result with ``load_checkpoint`` where it will be used.
    """
    obj = read_checkpoint(src)
    _require_ours(obj, src)
    return _save_atomic({k: obj[k] for k in ("format", "config", "state_dict", "meta") if k in obj}, Path(dst))


def with_inference_values(src: str | os.PathLike, dst: str | os.PathLike, values: Mapping[str, Any],
                          calibrated: str) -> Path:
    """A copy of checkpoint ``src`` at ``dst`` whose stored ``inference`` config has ``values`` set,
    weights and everything else as they were; ``meta['calibrated']`` becomes ``calibrated``.

    Calibrated inference values (``tools/calibrate_absent.py``) belong to one model, so they travel
    in its file; the new config is validated before anything is written, so a wrong key or value
    fails here and not when the model is next loaded. ``src`` and ``dst`` may be the same file."""
    obj = read_checkpoint(src)
    _require_ours(obj, src)
    obj = dict(obj)
    obj["config"] = copy.deepcopy(dict(obj["config"]))
    obj["config"].setdefault("inference", {}).update(copy.deepcopy(dict(values)))
    stored_config(obj)
    obj["meta"] = {**dict(obj.get("meta") or {}), "calibrated": str(calibrated)}
    _check_weights_only_safe(obj["config"], "config")
    return _save_atomic(obj, Path(dst))


def with_weights(src: str | os.PathLike, dst: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                 meta: Mapping[str, str]) -> Path:
    """A copy of checkpoint ``src`` at ``dst`` with the weights named in ``tensors`` replaced (each key
    must exist with the same shape; the stored dtype is kept), config and every other weight as they
    were, and ``meta`` merged into the file's meta (say how the new weights were made).

    For a part refitted after training (``tools/refit_semantic_head.py``): a wrong key or shape fails
    before anything is written. ``src`` and ``dst`` may be the same file."""
    obj = read_checkpoint(src)
    _require_ours(obj, src)
    obj = dict(obj)
    state = dict(obj["state_dict"])
    for k, v in tensors.items():
        if k not in state:
            raise KeyError(f"{src} has no weight {k!r}: the replacement must name existing weights")
        if tuple(v.shape) != tuple(state[k].shape):
            raise ValueError(f"{k}: new shape {tuple(v.shape)}, the checkpoint's {tuple(state[k].shape)}")
        state[k] = v.detach().to(state[k].dtype).cpu().clone()
    obj["state_dict"] = state
    obj["meta"] = {**dict(obj.get("meta") or {}), **{str(k): str(v) for k, v in meta.items()}}
    return _save_atomic(obj, Path(dst))


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


def stored_config(obj: Mapping[str, Any]) -> Config:
    """The config a checkpoint of ours stores, without the training, loss and inference keys that
    later versions retired (``RETIRED`` of those dataclasses): they never change the network, and a
    checkpoint should outlive a renamed training option. Anything else unknown still raises."""
    from bqnet_model.model.config import InferenceConfig, TrainConfig
    from bqnet_model.model.losses import LossConfig

    data = copy.deepcopy(dict(obj["config"]))
    sections = ((data.get("train"), TrainConfig), (data.get("model", {}).get("loss"), LossConfig),
                (data.get("inference"), InferenceConfig))
    for section, cls in sections:
        if isinstance(section, dict):
            for key in getattr(cls, "RETIRED", ()):
                if section.pop(key, None) is not None:
                    log.info("checkpoint config: dropped the retired key %s.%s", cls.__name__, key)
    return load_config(data)


def carries_config(path: str | os.PathLike) -> bool:
    """True when ``path`` is one of our checkpoints (it stores its config); False for the authors'
    files, which need the config of their network. Reads only the pickle (memory-mapped)."""
    try:
        return is_our_format(torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True))
    except Exception:  # official files keep a numpy scalar in meta: the plain weights-only load refuses them
        return False


def is_our_format(obj: Any) -> bool:
    return isinstance(obj, Mapping) and obj.get("format") == FORMAT


def _require_ours(obj: Any, path: Any) -> None:
    if not is_our_format(obj):
        found = obj.get("format") if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(
            f"{path} is not a {FORMAT} checkpoint (format: {found!r}); official IPDN/BQNet/SPFormer "
            "files load with bqnet_model.checkpoint.load_model(path, config=...) (official_checkpoint.py)"
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
    cfg = stored_config(obj)
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
) -> tuple[BQNet, Config]:
    """Any checkpoint -> (model in eval mode, its config).

    Ours: built from the stored config (``config`` ignored), strict. Official (the authors'
    gorilla file, or a bare official state dict): built from ``config`` (required: the file
    carries none; the authors' own is ``config/res.yaml`` / ``gres.yaml``), read safely and loaded
    strictly by ``official_checkpoint.load_official``; the load report is logged.
    """
    path = Path(path)
    obj = _read_any(path)
    if is_our_format(obj):
        _require_ours(obj, path)
        cfg = stored_config(obj)
        model = BQNet(cfg.model)
        cfg.model = model.cfg
        load_state_strict(model, obj["state_dict"], checkpoint_state(model), source=str(path))
        return model.to(device).eval(), cfg
    if not is_official_file(obj):
        raise ValueError(f"{path} is neither a {FORMAT} checkpoint nor an official CFNet/BQNet file")
    if config is None:
        raise ValueError(
            f"{path} is an official checkpoint, which carries no config: give the config it was trained "
            "with (the authors' is config/res.yaml for 3D-RES, config/gres.yaml for 3D-GRES)"
        )
    model = BQNet(config.model, text_pretrained=False)  # the file holds the text encoder's weights too
    config.model = model.cfg
    report = load_official(model, obj, strict=True)
    report.source = str(path)
    log.info("%s\n%s", describe_official(obj), report)
    return model.to(device).eval(), config


def load_backbone(model: BQNet, path: str | os.PathLike) -> LoadReport:
    """Initialise the backbone from SPFormer's ``sp_unet_backbone.pth``, an official file or one
    of ours (non-strict: only ``backbone.*`` is taken)."""
    obj = _read_any(Path(path))
    if is_our_format(obj):
        return load_official(model, obj["state_dict"], strict=False, backbone_only=True, our_names=True)
    return load_official(model, obj, strict=False, backbone_only=True)


def _read_any(path: Path) -> Any:
    """One of our files (plain weights-only) or an official one (numpy-scalar allowlist)."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # official files keep a numpy scalar in meta
        return read_official_file(path)
