"""The decoder under a CUDA graph (``bqnet_model.cuda_graphs.DecoderGraphs``), on the CPU: padding,
static buffers, the fallbacks, and ``inference.compile_decoder``.

Capture itself needs CUDA; everything around it does not. ``cpu_graphs`` replaces the two CUDA-only
pieces (``DecoderGraphs.capturable`` and ``_record``, the side-stream warm-up and the capture) by a
stand-in that runs the function once, as the first warm-up does (a compile happens there), and runs
it again on every replay. So the key, the buckets, the static inputs, the compile and its fallback and
the host side all run as on a GPU.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from bqnet_model import cuda_graphs
from bqnet_model.cuda_graphs import DecoderGraphs, token_bucket
from bqnet_model.model.config import InferenceConfig, load_config
from bqnet_model.model.text_encoder import TextFeatures
from bqnet_model.pipeline import Segmenter
from bqnet_model.pipeline.selection import answer, group_queries
from bqnet_model.pipeline.summary import unpack_summary
from test_pipeline import TEXTS, cache, room, seg, sp  # noqa: F401 - the same sentences and fixtures
from tiny_model import tiny_config, with_inference

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _EagerReplay:
    """Stands in for a captured CUDA graph on the CPU: ``replay`` runs the function on the static
    buffers, so everything around the capture (bucketing, loading, padding, the host side) runs."""

    def __init__(self, fn, scene, words, mask, out) -> None:
        self.fn, self.scene, self.words, self.mask, self.out = fn, scene, words, mask, out

    def replay(self) -> None:
        self.out.copy_(self.fn(self.scene, self.words, self.mask))


def _eager_record(self, fn, static, words, mask):
    out = fn(static, words, mask).clone()  # as the first warm-up run (where a compiled function compiles)
    return cuda_graphs._Graph(graph=_EagerReplay(fn, static, words, mask, out), scene=static, words=words, mask=mask,
                              out=out, fn=fn)


@pytest.fixture
def cpu_graphs(monkeypatch):
    """Decoder graphs "captured" on the CPU by ``_eager_record`` (module docstring)."""
    monkeypatch.setattr(DecoderGraphs, "capturable", staticmethod(lambda device: True))
    monkeypatch.setattr(DecoderGraphs, "_record", _eager_record)


def _answers_equal(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.found == y.found and np.array_equal(x.point_indices, y.point_indices)


def test_padded_words_give_the_same_answer(seg, cache) -> None:
    """A CUDA graph pads the words to a bucket of 16 with masked words: same decoder output."""
    with torch.inference_mode():
        text = seg.model.encode_text(TEXTS)
        a = seg.model.decode(cache.scene, text, None, keep_all_layers=False).final
        T, L, C = text.word_feats.shape
        feats = torch.zeros(T, 32, C)
        feats[:, :L] = text.word_feats
        feats[:, L:] = 7.0  # garbage under the padding
        mask = torch.zeros(T, 32, dtype=torch.bool)
        mask[:, :L] = text.word_mask
        b = seg.model.decode(cache.scene, TextFeatures(feats, mask), None, keep_all_layers=False).final
    assert torch.allclose(a.masks, b.masks, atol=1e-4) and torch.allclose(a.indi, b.indi, atol=1e-4)


def test_cuda_graph_option_is_safe_without_cuda(seg, cache, caplog) -> None:
    """cuda_graph on a CPU segmenter changes nothing; a failing capture falls back to eager once."""
    g = with_inference(seg, cuda_graph=True)
    _answers_equal(seg.query(cache, TEXTS), g.query(cache, TEXTS))
    assert g.graph_stats["captures"] == 0
    graphs = DecoderGraphs(lambda: torch.autocast("cpu", enabled=False))
    fn = seg.summary_fn()
    with torch.inference_mode():
        text = seg.model.encode_text(TEXTS)
    with caplog.at_level(logging.WARNING, logger="bqnet_model.cuda_graphs"):
        assert graphs.run((0.5,), fn, cache.scene, text.word_feats, text.word_mask) is None
        assert graphs.run((0.5,), fn, cache.scene, text.word_feats, text.word_mask) is None
    assert caplog.text.count("CUDA graph capture failed") == 1
    assert graphs.stats["failures"] == 1 and graphs.stats["eager"] == 2 and len(graphs.failures) == 1
    assert [token_bucket(n) for n in (1, 16, 17, 78)] == [16, 16, 32, 80]


def test_graph_static_inputs_are_reloaded_only_for_a_new_map(seg, cache, room, sp) -> None:
    """The replay buffers: words always copied (padding cleared), the scene only when it changes,
    its superpoints beyond the map's own are padding."""
    from bqnet_model.cuda_graphs import _Graph, _padded_scene

    sc = cache.scene
    S = sc.sp_feats.shape[1]
    static = _padded_scene(sc, S + 20)
    static.sp_feats.fill_(5.0)
    static.sp_pad.fill_(False)
    g = _Graph(graph=None, scene=static, words=torch.full((2, 16, 4), 9.0), mask=torch.ones(2, 16, dtype=torch.bool),
               out=torch.zeros(1))
    words, mask = torch.ones(2, 5, 4), torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    DecoderGraphs._load(g, sc, words, mask)
    assert torch.equal(static.sp_feats[:, :S], sc.sp_feats) and torch.equal(static.seed_idx, sc.seed_idx)
    assert not static.sp_feats[:, S:].any() and static.sp_pad[:, S:].all() and not static.sp_sizes[:, S:].any()
    assert torch.equal(static.sp_pad[:, :S], sc.sp_pad)
    assert torch.equal(g.words[:, :5], words) and not g.words[:, 5:].any()
    assert torch.equal(g.mask[:, :5], mask) and not g.mask[:, 5:].any()
    static.sp_feats.zero_()
    DecoderGraphs._load(g, sc, words, mask)  # same map: the scene is not copied again
    assert not static.sp_feats.any()
    other = seg.prepare(room.xyz, room.rgb, superpoints=sp)
    DecoderGraphs._load(g, other.scene, words, mask)  # another map (same shapes): copied
    assert torch.equal(static.sp_feats[:, :S], other.scene.sp_feats)


@pytest.mark.parametrize("task", ["res", "gres"])
def test_graph_path_with_padding_gives_the_eager_answers(seg, cache, cpu_graphs, task) -> None:
    """Superpoints padded to the bucket of 128, words to 16: the answers are the eager ones."""
    s = with_inference(seg, gres_min_points=1)
    graphs = DecoderGraphs(lambda: torch.autocast("cpu", enabled=False))
    want = s.query(cache, TEXTS, task=task)
    with torch.inference_mode():
        text = s.model.encode_text(TEXTS)
        for _ in range(2):  # capture, then a replay with the scene already loaded
            out, Sb = graphs.run((0.5,), s.summary_fn(), cache.scene, text.word_feats, text.word_mask)
            host = out.numpy().copy()
            assert Sb % 128 == 0 and Sb >= cache.n_superpoints
            prob, on = unpack_summary(host, len(TEXTS), Sb)
            assert not on[..., cache.n_superpoints:].any()  # padding is never in a mask
            got = [answer(cache, t, task, group_queries([prob[i]], [on[i, :, :cache.n_superpoints]], cache.sp_weights,
                                                        s.inference.candidates, s.inference.merge_iou),
                          s.inference.gres_min_points) for i, t in enumerate(TEXTS)]
            _answers_equal(want, got)
    assert graphs.stats["captures"] == 1 and graphs.stats["replays"] == 2 and graphs.stats["compiled"] == 0


# ---------------------------------------------------------------------- inference.compile_decoder
def test_compile_decoder_switch_is_off_by_default_and_read_from_the_config() -> None:
    assert InferenceConfig().compile_decoder is False
    assert load_config({"inference": {"compile_decoder": True}}).inference.compile_decoder is True
    with pytest.raises(TypeError, match="compile_decoder: expected true/false"):
        load_config({"inference": {"compile_decoder": "yes"}})


def test_compile_decoder_without_cuda_graphs_is_ignored_with_a_warning(seg, cache, caplog) -> None:
    """On the CPU no graph is captured, so there is nothing to compile: one warning at construction
    says so, and the answers are the eager ones."""
    with caplog.at_level(logging.WARNING, logger="bqnet_model.pipeline.segmenter"):
        s = with_inference(seg, compile_decoder=True)
    assert caplog.text.count("inference.compile_decoder is ignored") == 1 and "device cpu" in caplog.text
    _answers_equal(seg.query(cache, TEXTS), s.query(cache, TEXTS))
    assert s._graphs is None and s.graph_stats["compiled"] == 0


def test_compiled_decoder_matches_the_uncompiled_one(seg, cache, room, cpu_graphs, monkeypatch) -> None:
    """``compile_decoder`` from the segmenter's config: the graph's function is compiled by inductor
    (its CPU backend here) and replays what the uncompiled graph gives. Tolerance: target
    probabilities within 1e-5; mask bits equal wherever the uncompiled mask logit is more than 1e-4
    from the threshold's logit (fused kernels may round differently); the same answers. A map of
    another superpoint bucket is captured again but not compiled again (the axis is dynamic)."""
    import torch._inductor.config
    from torch._dynamo.utils import counters

    monkeypatch.setattr(torch._inductor.config, "compile_threads", 1)  # no worker pool on a small machine
    plain = with_inference(seg, cuda_graph=True)
    comp = with_inference(seg, cuda_graph=True, compile_decoder=True)
    assert comp._graphs is None  # made on the first query, from the config
    graphs_before = counters["stats"]["unique_graphs"]
    want = plain.query(cache, TEXTS)
    got = comp.query(cache, TEXTS)
    _answers_equal(want, got)
    _answers_equal(want, comp.query(cache, TEXTS))  # a replay of the compiled graph
    assert comp._graphs.compile and comp.graph_stats["compiled"] == 1 and comp.graph_stats["compile_failures"] == 0
    assert comp.graph_stats["captures"] == 1 and comp.graph_stats["replays"] == 2
    assert plain.graph_stats["compiled"] == 0 and not plain._graphs.compile
    (ga,), (gb,) = plain._graphs._graphs.values(), comp._graphs._graphs.values()
    assert hasattr(gb.fn, "_torchdynamo_orig_callable") and not hasattr(ga.fn, "_torchdynamo_orig_callable")
    assert torch.equal(ga.words, gb.words) and torch.equal(ga.scene.sp_feats, gb.scene.sp_feats)
    T, Sb = len(TEXTS), ga.scene.sp_feats.shape[1]
    pa, ona = unpack_summary(ga.out.numpy(), T, Sb)
    pb, onb = unpack_summary(gb.out.numpy(), T, Sb)
    np.testing.assert_allclose(pb, pa, rtol=0, atol=1e-5)
    with torch.inference_mode():
        logits = seg.model.decode(ga.scene, TextFeatures(ga.words, ga.mask), None, keep_all_layers=False,
                                  check_values=False, fine_mask_padding=True).final.masks.numpy()
    clear = np.abs(logits) > 1e-4  # threshold 0.5: logit 0
    assert np.array_equal(ona[clear], onb[clear])

    coarse = seg.prepare(room.xyz, room.rgb, superpoints=np.unique(np.floor(room.xyz / 0.6).astype(np.int64), axis=0,
                                                                   return_inverse=True)[1].ravel())
    assert token_bucket(coarse.n_superpoints, 128) != Sb
    _answers_equal(plain.query(coarse, TEXTS), comp.query(coarse, TEXTS))
    assert comp.graph_stats["captures"] == 2 and comp.graph_stats["compiled"] == 2
    assert counters["stats"]["unique_graphs"] - graphs_before == 1  # one compile served both buckets


def test_a_failing_compile_warns_once_and_captures_uncompiled(seg, cache, cpu_graphs, monkeypatch, caplog) -> None:
    """A compile that fails (here in its first run, as inductor errors do) is one warning with the
    reason; that key and the next are captured uncompiled and answer as eager."""
    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no C++ compiler found")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    s = with_inference(seg, cuda_graph=True, compile_decoder=True)
    with caplog.at_level(logging.WARNING, logger="bqnet_model.cuda_graphs"):
        got = s.query(cache, TEXTS) + s.query(cache, TEXTS[:2])  # two keys (5 and 2 sentences)
    assert caplog.text.count("torch.compile of the decoder failed") == 1 and "no C++ compiler found" in caplog.text
    assert "CUDA graph capture failed" not in caplog.text
    st = s.graph_stats
    assert st["compile_failures"] == 1 and st["compiled"] == 0 and st["captures"] == 2 and st["failures"] == 0
    assert s._graphs.compile_error == "RuntimeError: no C++ compiler found"
    _answers_equal(seg.query(cache, TEXTS) + seg.query(cache, TEXTS[:2]), got)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_capture_on_the_gpu_replays_what_the_uncompiled_one_does(room, sp) -> None:
    """A real capture of the compiled decoder (inductor's Triton kernels inside our CUDA graph), fp32:
    the same answers as the uncompiled graph, target probabilities within 1e-4, mask bits equal
    wherever the uncompiled logit is more than 1e-3 from the threshold's."""
    import copy
    import dataclasses

    # raw sentences, no parse: the GPU machine has no spaCy, and the parse is not what is compiled
    cfg = tiny_config(text={"official_prep": False})
    cfg["inference"].update(unknown_object="answer", absent_class_points=0)
    base = Segmenter.from_config(cfg, device="cuda", seed=0)
    cache = base.prepare(room.xyz, room.rgb, superpoints=sp)

    def on_cuda(**kw):
        cfg = copy.copy(base.cfg)
        cfg.inference = dataclasses.replace(base.cfg.inference, cuda_graph=True, amp=False, **kw)
        return Segmenter(base.model, cfg, "cuda")

    plain, comp = on_cuda(), on_cuda(compile_decoder=True)
    _answers_equal(plain.query(cache, TEXTS), comp.query(cache, TEXTS))
    st = comp.graph_stats
    assert st["compiled"] == 1 and st["compile_failures"] == 0 and st["captures"] == 1 and st["replays"] == 1
    (ga,), (gb,) = plain._graphs._graphs.values(), comp._graphs._graphs.values()
    assert isinstance(gb.graph, torch.cuda.CUDAGraph) and torch.equal(ga.words, gb.words)
    T, Sb = len(TEXTS), ga.scene.sp_feats.shape[1]
    pa, ona = unpack_summary(ga.out.cpu().numpy(), T, Sb)
    pb, onb = unpack_summary(gb.out.cpu().numpy(), T, Sb)
    np.testing.assert_allclose(pb, pa, rtol=0, atol=1e-4)
    with torch.inference_mode():
        logits = base.model.decode(ga.scene, TextFeatures(ga.words, ga.mask), None, keep_all_layers=False,
                                   check_values=False, fine_mask_padding=True).final.masks.cpu().numpy()
    clear = np.abs(logits) > 1e-3
    assert np.array_equal(ona[clear], onb[clear])
    plain.close()
    comp.close()
