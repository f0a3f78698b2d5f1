"""The smallest BQNet config the tests build from random weights (well under a second a room on a CPU),
and ``with_inference``: the same segmenter with other inference settings."""

from __future__ import annotations

import copy
import dataclasses
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
