"""The frozen text encoder under a CUDA graph (``bqnet_model.cuda_graphs.EncoderGraphs``).

On the CPU: the padding the graph adds (rows to a power of two, tokens to a multiple of 16, the
mask prepared as a (T, 1, 1, L) tensor) leaves every real token's features as the unpadded eager
forward gives them, on the real MiniLM and on tiny random BERT / RoBERTa models (token types, pad-
offset positions); the replay path (buffers, buckets, cache, fallback) with a stand-in for the
captured graph. On CUDA: the captured graph's replay against the eager encoder.
"""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from bqnet_model import cuda_graphs
from bqnet_model.cuda_graphs import (
    EncoderGraphs,
    masked_encoder_forward,
    padded_encoder_inputs,
    sentence_bucket,
    token_bucket,
)
from bqnet_model.model.config import TextConfig
from bqnet_model.model.text_encoder import TextEncoder
from test_pipeline import _NoHostSync

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = ["the red chair next to the desk by the window", "a lamp", "the tall narrow shelf in the corner"]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    """The real MiniLM, reading the raw text (no spaCy needed)."""
    return TextEncoder(TextConfig(encoder="minilm", official_prep=False))


def _unpadded(model, ids: torch.Tensor, att: torch.Tensor, types: torch.Tensor | None) -> list[torch.Tensor]:
    """Each sentence alone, cut to its own tokens, through the library's own masking."""
    rows = []
    for t in range(ids.shape[0]):
        n = int(att[t].sum())
        extra = {} if types is None else {"token_type_ids": types[t:t + 1, :n]}
        with torch.no_grad():
            rows.append(model(input_ids=ids[t:t + 1, :n], attention_mask=att[t:t + 1, :n], **extra)
                        .last_hidden_state[0])
    return rows


def _check_padded_equals_unpadded(model, ids, att, types, pad_id: int, Tb: int, Lb: int) -> None:
    want = _unpadded(model, ids, att, types)
    pids, patt, ptypes = padded_encoder_inputs(ids, att, types, Tb, Lb, pad_id)
    with torch.no_grad():
        got = masked_encoder_forward(model, pids, patt, ptypes)
    assert got.shape[:2] == (Tb, Lb)
    for t, w in enumerate(want):
        torch.testing.assert_close(got[t, : w.shape[0]], w, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_padded_masked_minilm_equals_unpadded_on_real_tokens(encoder, impl) -> None:
    model = encoder.model
    before = model.config._attn_implementation
    model.set_attn_implementation(impl)
    try:
        tok = encoder.tokenizer(TEXTS, padding=True, return_tensors="pt")
        assert tok["attention_mask"].sum(1).tolist() != [tok["input_ids"].shape[1]] * 3  # the batch itself is padded
        _check_padded_equals_unpadded(model, tok["input_ids"], tok["attention_mask"], tok.get("token_type_ids"),
                                      encoder.tokenizer.pad_token_id, 4, 32)
    finally:
        model.set_attn_implementation(before)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_padded_masked_forward_keeps_positions_and_token_types(kind) -> None:
    """BERT with token types 1 on some tokens (padding gets 0); RoBERTa, whose positions count the
    non-pad ids, padded with its pad id 1."""
    from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

    torch.manual_seed(0)
    small = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=80, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if kind == "bert":
        model, pad = BertModel(BertConfig(type_vocab_size=2, pad_token_id=0, **small)).eval(), 0
    else:
        model, pad = RobertaModel(RobertaConfig(type_vocab_size=1, pad_token_id=1, **small)).eval(), 1
    lengths = [9, 3, 14]
    ids = torch.full((3, 14), pad, dtype=torch.long)
    att = torch.zeros((3, 14), dtype=torch.long)
    for t, n in enumerate(lengths):
        ids[t, :n] = torch.randint(3, 64, (n,))
        att[t, :n] = 1
    types = None
    if kind == "bert":
        types = torch.zeros_like(ids)
        types[0, 5:9] = 1
    _check_padded_equals_unpadded(model, ids, att, types, pad, 4, 16)
    _check_padded_equals_unpadded(model, ids, att, types, pad, 3, 48)


def test_masked_forward_runs_without_host_sync(encoder) -> None:
    """What the graph captures never reads a value on the host (the library's own 2-D mask path
    would check for padding)."""
    tok = encoder.tokenizer(TEXTS, padding=True, return_tensors="pt")
    ids, att, types = padded_encoder_inputs(tok["input_ids"], tok["attention_mask"], tok.get("token_type_ids"),
                                            4, 32, encoder.tokenizer.pad_token_id)
    with torch.inference_mode(), _NoHostSync():
        out = masked_encoder_forward(encoder.model, ids, att, types)
    assert out.shape == (4, 32, encoder.hidden_size)


def test_buckets() -> None:
    assert [sentence_bucket(n) for n in (1, 2, 3, 4, 5, 16, 17, 32)] == [1, 2, 4, 4, 8, 16, 32, 32]
    graphs = EncoderGraphs(None, 0, lambda: torch.autocast("cpu", enabled=False), max_tokens=40)
    assert graphs.buckets(3, 17) == (4, 32) and graphs.buckets(1, 35) == (1, 40) and graphs.buckets(1, 40) == (1, 40)
    assert EncoderGraphs(None, 0, lambda: torch.autocast("cpu", enabled=False)).buckets(2, 78) == (2, token_bucket(78))
    with pytest.raises(ValueError, match="cannot pad"):
        padded_encoder_inputs(torch.zeros((3, 5), dtype=torch.long), torch.ones((3, 5), dtype=torch.long), None, 2, 16, 0)


class _EagerReplay:
    """Stands in for a captured graph on the CPU: ``replay`` runs the encoder on the static buffers."""

    def __init__(self, model, g) -> None:
        self.model, self.g = model, g

    def replay(self) -> None:
        self.g.out.copy_(masked_encoder_forward(self.model, self.g.ids, self.g.att, self.g.token_types))


def _fake_capture(self, dev, Tb, Lb, with_types, id_dtype):
    one = torch.ones((1, 1), dtype=id_dtype)
    ids, att, types = padded_encoder_inputs(one * self.pad_id, one, one - 1 if with_types else None, Tb, Lb, self.pad_id)
    out = masked_encoder_forward(self.model, ids, att, types).clone()
    g = cuda_graphs._EncoderGraph(graph=None, ids=ids, att=att, token_types=types, out=out)
    g.graph = _EagerReplay(self.model, g)
    return g


def test_replay_path_gives_the_eager_features_and_keeps_the_cache(encoder, monkeypatch) -> None:
    monkeypatch.setattr(EncoderGraphs, "_capture", _fake_capture)
    graphs = EncoderGraphs(encoder.model, encoder.tokenizer.pad_token_id, lambda: torch.autocast("cpu", enabled=False),
                           max_tokens=encoder.max_tokens)
    calls: list[tuple[int, int]] = []

    def runner(ids, att, types):
        calls.append(tuple(ids.shape))
        return graphs.run(("fp32",), ids, att, types)

    encoder.clear_cache()
    with torch.inference_mode():
        want = encoder(TEXTS)
        encoder.clear_cache()
        got = encoder(TEXTS, runner=runner)
        assert graphs.stats["captures"] == 1 and graphs.stats["replays"] == 1 and len(calls) == 1
        assert got.word_feats.shape == want.word_feats.shape and torch.equal(got.word_mask, want.word_mask)
        real = want.word_mask
        torch.testing.assert_close(got.word_feats[real], want.word_feats[real], atol=2e-5, rtol=1e-4)
        again = encoder([TEXTS[1], TEXTS[0]], runner=runner)  # from the text cache: the encoder is not run
        assert len(calls) == 1 and torch.equal(again.word_feats[1], got.word_feats[0])
        encoder.clear_cache()
        encoder([TEXTS[2], "a chair", "the desk"], runner=runner)  # same buckets (4, 16): a replay, no capture
        assert graphs.stats["captures"] == 1 and graphs.stats["replays"] == 2
        encoder.clear_cache()
        no_cache = dataclasses.replace(encoder.cfg, cache_size=0)
        monkeypatch.setattr(encoder, "cfg", no_cache)
        first = encoder(TEXTS[:3], runner=runner).word_feats
        second = encoder(TEXTS[:3], runner=runner).word_feats
        assert torch.equal(first, second) and first.data_ptr() != second.data_ptr()  # fresh tensors, not the buffer
    encoder.clear_cache()


def test_trainable_encoder_never_uses_the_runner(encoder, monkeypatch) -> None:
    monkeypatch.setattr(encoder, "cfg", dataclasses.replace(encoder.cfg, freeze=False, cache_size=0))
    used = []
    with torch.no_grad():
        out = encoder(TEXTS[:1], runner=lambda *a: used.append(1))
    assert not used and out.word_feats.shape[0] == 1


def test_failed_capture_warns_once_and_runs_eagerly(encoder, caplog) -> None:
    graphs = EncoderGraphs(encoder.model, encoder.tokenizer.pad_token_id, lambda: torch.autocast("cpu", enabled=False))
    runner = lambda ids, att, types: graphs.run(("fp32",), ids, att, types)  # noqa: E731
    encoder.clear_cache()
    with torch.inference_mode():
        want = encoder(TEXTS[:2])
        encoder.clear_cache()
        with caplog.at_level(logging.WARNING, logger="bqnet_model.cuda_graphs"):
            got = encoder(TEXTS[:2], runner=runner)  # the CPU cannot capture: eager
            encoder.clear_cache()
            encoder(TEXTS[:2], runner=runner)
    assert caplog.text.count("CUDA graph capture of the text encoder failed") == 1
    assert graphs.stats["failures"] == 1 and graphs.stats["eager"] == 2 and len(graphs.failures) == 1
    assert torch.equal(got.word_feats, want.word_feats)
    encoder.clear_cache()


def test_segmenter_on_the_cpu_makes_no_encoder_graph() -> None:
    from bqnet_model.pipeline import Segmenter
    from tiny_model import tiny_config

    cfg = tiny_config()
    cfg["model"]["text"] = {"official_prep": False}
    cfg["inference"].update(cuda_graph=True, cuda_graph_text=True, unknown_object="answer")
    seg = Segmenter.from_config(cfg, device="cpu", seed=0)
    with torch.inference_mode():
        seg._encode_text(TEXTS[:1])
    assert seg._text_graphs is None and seg.text_graph_stats["captures"] == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graph capture needs a CUDA device (replay vs eager "
                    "is checked on the GPU machine; the padding it relies on is checked above on the CPU)")
@pytest.mark.parametrize("amp", [None, torch.float16])
def test_cuda_replay_equals_eager(amp) -> None:
    enc = TextEncoder(TextConfig(encoder="minilm", official_prep=False)).to("cuda")
    ac = lambda: torch.autocast("cuda", dtype=amp or torch.float16, enabled=amp is not None, cache_enabled=False)  # noqa: E731
    graphs = EncoderGraphs(enc.model, enc.tokenizer.pad_token_id, ac, max_tokens=enc.max_tokens)
    runner = lambda ids, att, types: graphs.run((str(amp),), ids, att, types)  # noqa: E731
    tol = dict(atol=2e-4, rtol=1e-3) if amp is None else dict(atol=3e-2, rtol=3e-2)
    for texts in (TEXTS, TEXTS[1:2], ["the chair " * 20], TEXTS):
        with torch.inference_mode(), ac():
            enc.clear_cache()
            want = enc(texts)
            enc.clear_cache()
            got = enc(texts, runner=runner)
        torch.cuda.synchronize()
        assert torch.equal(got.word_mask, want.word_mask)
        real = want.word_mask
        torch.testing.assert_close(got.word_feats[real], want.word_feats[real], **tol)
    assert not graphs.failures, graphs.failures
    assert graphs.stats["captures"] == 3 and graphs.stats["replays"] == 4  # the last call replays the first graph
