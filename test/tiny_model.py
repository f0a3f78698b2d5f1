"""The smallest BQNet config the tests build from random weights (well under a second a room on a CPU),
``with_inference``: the same segmenter with other inference settings, and ``write_train_config``: the
tiny training config the training tests run ``tools/train.py``'s main on."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

_MODEL: dict[str, Any] = {
    "backbone": {"media": 8, "levels": 3},
    "decoder": {"d_model": 32, "nhead": 2, "ffn": 64, "num_layers": 2, "fps_num": 32, "num_proposal": 16,
                "num_proposal_fine": 64, "num_proposal_query": [16, 4], "num_proposal_query_inst": [32, 8]},
}


def tiny_config(**model_extra: Any) -> dict[str, Any]:
    """A fresh config dict (``load_config`` / ``Segmenter.from_config`` take it); ``model_extra``
    adds model keys, e.g. ``num_classes`` for the semantic head."""
    return {"model": {**copy.deepcopy(_MODEL), **model_extra}, "inference": {"gres_min_points": 5}}


def with_inference(seg: Any, **kw: Any) -> Any:
    """A ``Segmenter`` on the same model (no copy of the weights) whose inference config has ``kw``
    changed; ``seg`` itself is left as it is."""
    from bqnet_model.pipeline import Segmenter

    cfg = copy.copy(seg.cfg)
    cfg.inference = dataclasses.replace(seg.cfg.inference, **kw)
    return Segmenter(seg.model, cfg, "cpu")


# The training tests' model: a little smaller than ``_MODEL`` (2 levels), MiniLM text, no 2D branch.
_TRAIN: dict[str, Any] = {
    "model": {
        "backbone": {"media": 8, "levels": 2, "block_reps": 1},
        "text": {"encoder": "minilm"},
        "decoder": {"d_model": 32, "nhead": 2, "ffn": 64, "num_layers": 2, "fps_num": 32, "num_proposal": 16,
                    "num_proposal_fine": 32, "num_proposal_query": [16, 4], "num_proposal_query_inst": [16, 4],
                    "image_channels": 0},
    },
    "inference": {"task": "res"},
    "train": {"lr_schedule": "step", "epochs": 1, "batch_size": 1, "lang_per_scene": 2, "num_workers": 0,
              "max_points_train": 1500, "amp": False, "log_every": 1, "eval_every": 0},
}


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def write_train_config(path: Path, data_root: Path, work_dir: Path, **sections: dict[str, Any]) -> Path:
    """Write the tiny training config to ``path`` (YAML, as ``tools/train.py`` reads it), with the
    data and work folders set; ``sections`` (``model=``, ``inference=``, ``train=``) are merged in
    key by key, e.g. ``train={"epochs": 2}`` or ``model={"loss": {"align": 0.5}}``."""
    import yaml

    cfg = _merged(_TRAIN, sections)
    cfg["train"].update(data_root=str(data_root), work_dir=str(work_dir))
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
