"""Find, load and configure segment_node's model from its parameters.

The device goes through the library's one resolver (``bqnet_model.pipeline.resolve_device``),
so the node runs where the library says it runs; the device actually used (after the CPU
fallback) is returned for the node to show (read-only parameter, /diagnostics, start-up log).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bqnet_ros.parameters import DEFAULT_CHECKPOINT, NodeParams, StartupError

__all__ = ["LoadedModel", "load_segmenter", "configure_segmenter", "resolve_model_file", "search_roots",
           "image_channels"]

_NO_LIMIT = 2**31 - 1  # max_points 0: the library's limit must still be a positive integer


@dataclass
class LoadedModel:
    segmenter: Any
    device: str  # the torch device really used, e.g. 'cpu' after a CUDA fallback
    source: str  # checkpoint path, or 'untrained (<config>)'
    warnings: list[str]


def search_roots() -> list[Path]:
    """Where relative model paths are looked up: the library's order (``bqnet_model.paths``: cwd,
    the checkout or install root) with the package share folder of a colcon install last."""
    from bqnet_model.paths import search_roots as library_roots

    extra: list[Path] = []
    try:
        from ament_index_python.packages import get_package_share_directory

        extra.append(Path(get_package_share_directory("bqnet_ros")))
    except (ImportError, LookupError, ValueError, OSError):  # not installed / no AMENT_PREFIX_PATH
        pass
    return library_roots(extra)


def resolve_model_file(path: str, roots: Callable[[], list[Path]] | None = None) -> tuple[Path | None, list[Path]]:
    """(existing file, resolved, or None; the candidates tried) for an absolute or relative path,
    through ``bqnet_model.paths.resolve_resource``; relative ones under ``roots()`` (default:
    ``search_roots``, looked up at call time so tests can replace it)."""
    from bqnet_model.paths import resolve_resource

    found, candidates = resolve_resource(path, roots=(roots or search_roots)())
    return (None if found is None else found.resolve()), candidates


def _device(requested: str) -> tuple[Any, str | None]:
    """(torch.device, warning or None) through the library's resolver; its own log warning is
    silenced where it can be (``warn=False``), the node logs the fallback itself."""
    from bqnet_model.pipeline import resolve_device

    kwargs = {"warn": False} if "warn" in inspect.signature(resolve_device).parameters else {}
    try:
        dev = resolve_device(requested.strip(), **kwargs)
    except ValueError as exc:
        raise StartupError(f"parameter device {requested!r}: {exc}") from exc
    warning = None
    if requested.strip().startswith("cuda") and dev.type == "cpu":
        warning = (f"device {requested!r} requested but CUDA is not available: running on CPU (slow); "
                   f"parameter device_in_use says 'cpu'")
    return dev, warning


def _official_config(ckpt: Path, p: NodeParams, roots: Callable[[], list[Path]] | None) -> Any:
    """None for our own checkpoints (they carry their config); for an official file the config
    ``official_config`` names, with ``tokenizer`` filled in."""
    from bqnet_model.checkpoint import carries_config
    from bqnet_model.model.config import load_config

    if carries_config(ckpt):
        return None
    path, tried = resolve_model_file(p.official_config, roots)
    if path is None:
        raise StartupError(f"{ckpt} is an official checkpoint; official_config {p.official_config!r} not found "
                           f"(looked at: {', '.join(str(t) for t in tried)})")
    cfg = load_config(path)
    if p.tokenizer:
        cfg.model.text.tokenizer = p.tokenizer
    return cfg


def load_segmenter(p: NodeParams, roots: Callable[[], list[Path]] | None = None) -> LoadedModel:
    """The model the parameters name, on the resolved device; StartupError with the reason."""
    warnings: list[str] = []
    dev, warning = _device(p.device)
    if warning:
        warnings.append(warning)
    ckpt_name = p.checkpoint.strip() or DEFAULT_CHECKPOINT
    ckpt, tried = resolve_model_file(ckpt_name, roots)
    looked = ", ".join(str(t) for t in tried)
    if ckpt is None and p.checkpoint.strip():
        raise StartupError(f"checkpoint {p.checkpoint!r} not found (looked at: {looked})")
    try:
        from bqnet_model.pipeline import Segmenter
    except ImportError as exc:  # a broken install
        raise StartupError(f"cannot import bqnet_model.pipeline: {exc}") from exc
    if ckpt is not None:
        try:
            seg = Segmenter.from_checkpoint(str(ckpt), device=dev, config=_official_config(ckpt, p, roots))
        except Exception as exc:  # corrupt file, config/key mismatch: fatal, with the reason
            raise StartupError(f"cannot load checkpoint {ckpt}: {type(exc).__name__}: {exc}") from exc
        source = str(ckpt)
    elif p.allow_untrained:
        cfg, cfg_tried = resolve_model_file(p.model_config, roots)
        if cfg is None:
            raise StartupError(f"model_config {p.model_config!r} not found "
                               f"(looked at: {', '.join(str(t) for t in cfg_tried)})")
        warnings.append(f"!!! NO TRAINED MODEL: no checkpoint given and {DEFAULT_CHECKPOINT} not found; using a "
                        f"RANDOMLY INITIALISED model from {cfg} (allow_untrained is true). Its answers are "
                        "meaningless. !!!")
        try:
            seg = Segmenter.from_config(str(cfg), device=dev, seed=p.seed)
        except Exception as exc:
            raise StartupError(f"cannot build a model from {cfg}: {type(exc).__name__}: {exc}") from exc
        source = f"untrained ({cfg})"
    else:
        raise StartupError(
            f"no checkpoint: parameter checkpoint is empty and {DEFAULT_CHECKPOINT} was not found "
            f"(looked at: {looked}). Set checkpoint:=<file.pth>, or allow_untrained:=true for a "
            "random-init model (plumbing tests only)."
        )
    warnings += configure_segmenter(seg, p)
    return LoadedModel(seg, str(getattr(seg, "device", dev)), source, warnings)


def configure_segmenter(seg: Any, p: NodeParams) -> list[str]:
    """Hand the node's seed, point limit and (when set) voxel size and rotations to the model's
    inference config; the warnings to log. The library cleans and thins the map (the node hands
    it the message's arrays), so its limit is the node's ``max_points``. A model runs best at the
    voxel size it was trained with, so ``voxel_size`` 0 keeps the checkpoint's."""
    inf = getattr(getattr(seg, "cfg", None), "inference", None)
    if inf is None:
        return []
    warnings = []
    if p.voxel_size > 0 and hasattr(inf, "voxel_size"):
        trained = float(inf.voxel_size)
        if abs(trained - float(p.voxel_size)) > 1e-9:
            warnings.append(f"voxel_size {p.voxel_size} m overrides the {trained} m the model was trained with: "
                            "expect worse answers (set voxel_size 0 to use the model's)")
        inf.voxel_size = float(p.voxel_size)
    if hasattr(inf, "max_points"):
        inf.max_points = int(p.max_points or _NO_LIMIT)
    if p.tta_rotations > 0 and hasattr(inf, "tta_rotations"):
        inf.tta_rotations = int(p.tta_rotations)
    return warnings


def image_channels(seg: Any) -> int:
    """Channels of the per-point 2D image features the model's decoder takes (0: none)."""
    decoder = getattr(getattr(getattr(seg, "cfg", None), "model", None), "decoder", None)
    return int(getattr(decoder, "image_channels", 0) or 0)
