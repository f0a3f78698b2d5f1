"""The probability class check (``inference.absent_class_prob``): the presence score, the refusal
on a hand-made semantic-head output, its calibration by ``tools/calibrate_absent.py`` and the
thresholds travelling in a checkpoint."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from bqnet_model.data.classes import CLASS_ID, CLASSES
from bqnet_model.model.config import InferenceConfig, load_config
from bqnet_model.pipeline import Segmenter
from bqnet_model.pipeline.absence import PRESENCE_TOP_POINTS, class_presence, presence_refusal
from bqnet_model.text.named_objects import OTHER_CLASS
from bqnet_synth import demo_room, minimal_room
from conftest import load_tool
from tiny_model import tiny_config, with_inference

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = tiny_config(num_classes=OTHER_CLASS + 1)
OFF = dict(absent_class_points=0, unknown_object="answer", absent_score=0.0)


def test_presence_is_the_top_points_mean() -> None:
    """Against the per-point definition: superpoints repeated by their size, sorted, the first k averaged."""
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5), size=40).astype(np.float32)
    w = rng.integers(1, 30, size=40).astype(np.float64)
    points = np.repeat(p.astype(np.float64), w.astype(int), axis=0)
    for k in (1, 7, 50, 333, 10_000):
        want = np.sort(points, axis=0)[::-1][:min(k, len(points))].mean(axis=0)
        np.testing.assert_allclose(class_presence(p, w, k), want, rtol=1e-9)
    assert class_presence(np.zeros((0, 3)), np.zeros(0), 10).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="top_points"):
        class_presence(p, w, 0)


@pytest.fixture(scope="module")
def seg():
    # a low mask threshold: the random model then answers every sentence (the check has something to refuse)
    return Segmenter.from_config(TINY, device="cpu", seed=0, mask_threshold=0.1, **OFF)


@pytest.fixture(scope="module")
def cache(seg):
    room = minimal_room(3000, seed=0)
    sp = np.unique(np.floor(room.xyz / 0.3).astype(np.int64), axis=0, return_inverse=True)[1].ravel()
    return seg.prepare(room.xyz, room.rgb, superpoints=sp)


def test_prepare_keeps_the_probabilities(cache) -> None:
    assert cache.sp_prob is not None and cache.sp_prob.shape == (cache.n_superpoints, OTHER_CLASS + 1)
    np.testing.assert_allclose(cache.sp_prob.sum(axis=1), 1.0, rtol=1e-5)
    assert np.array_equal(cache.sp_prob.argmax(axis=1), cache.sp_class)


def _chairs(cache):
    """The map as a head that is sure of a chair on its first superpoints (at least
    PRESENCE_TOP_POINTS points) and gives every other class 0.02 everywhere."""
    prob = np.full((cache.n_superpoints, OTHER_CLASS + 1), 0.02, np.float32)
    n_chair = int(np.searchsorted(np.cumsum(cache.sp_weights), PRESENCE_TOP_POINTS)) + 1
    assert n_chair < cache.n_superpoints
    prob[:n_chair, CLASS_ID["chair"]] = 0.9
    return dataclasses.replace(cache, sp_prob=prob)


def test_present_passes_absent_refused_untrusted_never(seg, cache) -> None:
    chairs = _chairs(cache)
    s = with_inference(seg, absent_class_prob={"chair": 0.5, "bathtub": 0.3, "sofa": 0.0})
    chair, tub, sofa, pillow = s.query(chairs, ["the chair next to the bathtub", "the bathtub", "the sofa",
                                                "the pillow"], task="res")
    assert chair.found and chair.reason == ""
    assert not tub.found and not tub.objects and tub.point_indices.size == 0
    assert "named class 'bathtub' not in the map" in tub.reason and "absent_class_prob 0.300" in tub.reason
    assert tub.score > 0  # the best score before the refusal stays visible
    assert sofa.found  # threshold 0: no check
    assert pillow.found  # outside the vocabulary: cannot be checked
    lamp = s.query(chairs, "the lamp", task="res")[0]
    assert lamp.found  # not in the thresholds at all: an untrusted class is never refused
    gres = s.query(chairs, "the bathtub", task="gres")[0]
    assert not gres.found
    # the rule itself, without the decoder
    assert presence_refusal(chairs, CLASS_ID["chair"], {"chair": 0.5}) == ""
    assert presence_refusal(chairs, CLASS_ID["chair"], {"chair": 0.95}).startswith("named class 'chair'")
    assert presence_refusal(chairs, OTHER_CLASS, {"chair": 0.95}) == ""
    assert presence_refusal(dataclasses.replace(chairs, sp_prob=None), CLASS_ID["bathtub"], {"bathtub": 0.3}) == ""


def test_off_by_default_and_checked() -> None:
    assert InferenceConfig().absent_class_prob == {}
    for bad, match in (({"chiar": 0.2}, "unknown class 'chiar'"), ({"chair": 1.0}, r"\[0, 1\)"),
                       ({"chair": True}, r"\[0, 1\)"), ({"chair": "high"}, r"\[0, 1\)")):
        with pytest.raises(ValueError, match=match):
            InferenceConfig(absent_class_prob=bad)
    with pytest.raises(TypeError, match="mapping"):
        InferenceConfig(absent_class_prob=[0.2])
    assert load_config({"inference": {"absent_class_prob": {"chair": 0.25}}}).inference.absent_class_prob == \
        {"chair": 0.25}


def test_thresholds_travel_in_the_checkpoint(tmp_path: Path, seg) -> None:
    from bqnet_model.checkpoint import read_checkpoint, save_checkpoint, with_inference_values

    src = save_checkpoint(tmp_path / "m.pth", seg.model, load_config(TINY))
    dst = with_inference_values(src, tmp_path / "c.pth", {"absent_class_prob": {"chair": 0.25, "bathtub": 0.5}},
                                "calibrated in a test")
    a, b = read_checkpoint(src), read_checkpoint(dst)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert b["meta"]["calibrated"] == "calibrated in a test"
    assert b["config"]["inference"]["absent_class_prob"] == {"chair": 0.25, "bathtub": 0.5}
    loaded = Segmenter.from_checkpoint(dst)
    assert loaded.inference.absent_class_prob == {"chair": 0.25, "bathtub": 0.5}
    assert Segmenter.from_checkpoint(dst, absent_class_prob={}).inference.absent_class_prob == {}
    tool = load_tool("calibrate_absent")
    setting, class_prob = tool.checkpoint_setting(dst)
    assert setting[3] is True and class_prob == {"chair": 0.25, "bathtub": 0.5}
    with pytest.raises(ValueError, match="unknown class"):
        with_inference_values(src, tmp_path / "bad.pth", {"absent_class_prob": {"giraffe": 0.2}}, "x")
    assert not (tmp_path / "bad.pth").exists()


def _rec(where: str, kind: str, cls: str, presence: float, **kw) -> dict:
    base = dict(where=where, task="res", kind=kind, text="", found=True, score=0.9, iou=0.8 if kind == "present"
                else None, target_class=CLASS_ID[cls], class_points=None, share=None, mask_prob=None,
                presence={f"k{PRESENCE_TOP_POINTS}": presence})
    base.update(kw)
    return base


def test_fit_trusts_only_classes_that_separate() -> None:
    """Chairs separate (present high, absent low); boxes do not; the real scans' lower
    presence lowers the chair threshold; too few sentences give no threshold."""
    tool = load_tool("calibrate_absent")
    recs = [_rec("synthetic", "present", "chair", 0.8 + 0.001 * i) for i in range(50)]
    recs += [_rec("real", "present", "chair", 0.3 + 0.001 * i) for i in range(10)]
    recs += [_rec("synthetic", "absent-class", "chair", 0.1) for _ in range(20)]
    recs += [_rec("synthetic", "present", "box", 0.1 + 0.01 * i) for i in range(30)]
    recs += [_rec("synthetic", "absent-class", "box", 0.2 + 0.01 * i) for i in range(30)]
    recs += [_rec("synthetic", "present", "bed", 0.9) for _ in range(3)] + [_rec("synthetic", "absent-class", "bed", 0.0)]
    out, report = tool.fit_class_thresholds(recs, keep=0.98, margin=1.0)
    assert set(out) == {"chair"} and out["chair"] == pytest.approx(0.3, abs=1e-4) and out["chair"] <= 0.3
    half, _ = tool.fit_class_thresholds(recs, keep=0.98, margin=0.5)
    assert half == {"chair": pytest.approx(0.15, abs=1e-4)}
    rows = {r["cls"]: r for r in report}
    assert rows["chair"]["kept"] == 1.0 and rows["chair"]["refused"] == 1.0 and rows["chair"]["trusted"]
    assert not rows["box"]["trusted"] and not rows["bed"]["trusted"]
    assert "chair" in tool.format_fit(report) and "real 10, synthetic 50" in tool.format_fit(report)
    # the table applies the same rule as the library: with the thresholds on, the absent chairs are refused
    setting_off, setting_on = (0.0, 0, "answer", False), (0.0, 0, "answer", True)
    rows_t = {r["prob"]: r for r in tool.table(recs, [setting_off, setting_on], out) if r["where"] == "synthetic"}
    assert rows_t[False]["refused absent-class"] == 0.0 and rows_t[True]["found"] == 1.0
    want = 20 / 51  # the 20 absent chairs of 51 absent sentences
    assert rows_t[True]["refused absent-class"] == pytest.approx(want)
    assert tool.refused(_rec("synthetic", "absent-class", "lamp", 0.0), 0.0, 0, "answer", out) is False
    assert CLASSES[CLASS_ID["chair"]] == "chair"


def test_incremental_update_keeps_the_probabilities(seg) -> None:
    """A map updated in place (``Segmenter.update``) carries the head's probabilities like a full
    prepare, so the check works on incremental maps too."""
    room = demo_room(seed=0, n_points=20_000)
    old = room.instance != [o.name for o in room.objects].index("box")
    first = seg.update(None, room.xyz[old], room.rgb[old])
    second = seg.update(first, room.xyz, room.rgb)
    assert second.update_info["mode"] == "incremental"
    for c in (first, second):
        assert c.sp_prob is not None and c.sp_prob.shape[0] == c.n_superpoints
        assert np.array_equal(c.sp_prob.argmax(axis=1), c.sp_class)
