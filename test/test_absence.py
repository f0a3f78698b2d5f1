"""Refusing answers about absent objects: the named class from the text, the three checks, and
the plumbing of the refusal into the JSON, the CLI's summary and the node's answer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bqnet_model.data.classes import CLASS_ID
from bqnet_model.model.config import InferenceConfig
from bqnet_model.pipeline import Segmenter
from bqnet_model.pipeline.absence import answer_share, apply_checks, class_points
from bqnet_model.pipeline.selection import answer, group_queries
from bqnet_model.text.named_objects import OTHER_CLASS, named_objects
from bqnet_synth import minimal_room
from tiny_model import tiny_config, with_inference
from conftest import load_tool

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = tiny_config(num_classes=OTHER_CLASS + 1)
OFF = dict(absent_class_points=0, unknown_object="answer", absent_score=0.0)


@pytest.mark.parametrize("text, target, cls", [
    ("the chair next to the desk", "chair", "chair"),
    ("in between the box and the bin, there is a basin.", "basin", "sink"),
    ("when facing the bath tub, look for the bin left of the wash basin.", "bin", "trash can"),
    ("find the trash can near the light brown sofa.", "trash can", "trash can"),
    ("this is a brown chair. it is next to the table.", "chair", "chair"),
    ("the green kitchen counter.", "kitchen counter", "cabinet"),
    ("choose the chair that is closest to the door", "chair", "chair"),
])
def test_the_target_is_the_head_noun(text, target, cls) -> None:
    t = named_objects(text).target
    assert t is not None and t.words == target and t.class_id == CLASS_ID[cls]
    assert text.lower()[t.span[0]:t.span[1]] == target


def test_unknown_other_and_no_object() -> None:
    giraffe = named_objects("the giraffe next to the door")
    assert giraffe.target.words == "giraffe" and giraffe.target.class_id == -1
    assert giraffe.classes == {CLASS_ID["door"]}
    assert named_objects("the pillow on the bed").target.class_id == OTHER_CLASS
    assert named_objects("it is over there").target is None
    # colours, spatial nouns and the room are no objects; "light brown" is no lamp
    assert [m.words for m in named_objects("the light brown chair in the corner of the room").mentions] == ["chair"]


@pytest.fixture(scope="module")
def room():
    return minimal_room(3000, seed=0)


@pytest.fixture(scope="module")
def seg():
    # a low mask threshold: the random model then answers every sentence (the checks have something to refuse)
    return Segmenter.from_config(TINY, device="cpu", seed=0, mask_threshold=0.1, **OFF)


@pytest.fixture(scope="module")
def cache(seg, room):
    sp = np.unique(np.floor(room.xyz / 0.3).astype(np.int64), axis=0, return_inverse=True)[1].ravel()
    return seg.prepare(room.xyz, room.rgb, superpoints=sp)


def test_prepare_keeps_the_semantic_classes(seg, cache) -> None:
    assert cache.sp_class is not None and cache.sp_class.shape == (cache.n_superpoints,)
    counts = class_points(cache)
    assert counts.sum() == cache.n_points
    r = seg.query(cache, "the chair")[0]
    cid = int(cache.sp_class[0])
    share = answer_share(cache, r.point_indices, cid)
    assert 0.0 <= share <= 1.0
    assert answer_share(cache, np.zeros(0, np.int64), cid) == 0.0


def test_no_check_answers_as_before(seg, cache) -> None:
    r = seg.query(cache, "the giraffe next to the door", task="res")[0]
    assert r.found and r.reason == "" and not r.warnings
    assert r.score == pytest.approx(r.objects[0].score)
    assert "reason" not in r.to_dict()


def test_unknown_object_refused_or_warned(seg, cache) -> None:
    refused = with_inference(seg, unknown_object="refuse").query(cache, ["the giraffe next to the door", "the chair"])
    assert not refused[0].found and not refused[0].objects and refused[0].point_indices.size == 0
    assert "unknown object word 'giraffe'" in refused[0].reason and refused[0].score > 0
    assert refused[0].to_dict()["reason"] == refused[0].reason
    assert refused[1].found and refused[1].reason == ""
    warned = with_inference(seg, unknown_object="warn").query(cache, "the giraffe next to the door")[0]
    assert warned.found and any("giraffe" in w for w in warned.warnings)


def test_class_check_against_the_semantic_head(seg, cache) -> None:
    """With every superpoint predicted 'chair', a chair is in the map and a bathtub is not;
    a known object outside the vocabulary (a pillow) cannot be checked and is answered."""
    chairs = dataclasses.replace(cache, sp_class=np.full(cache.n_superpoints, CLASS_ID["chair"]))
    s = with_inference(seg, absent_class_points=50)
    chair, tub, pillow = s.query(chairs, ["the chair next to the bathtub", "the bathtub", "the pillow"], task="res")
    assert chair.found
    assert not tub.found and "named class 'bathtub' not in the map" in tub.reason
    assert pillow.found
    gres = s.query(chairs, "the bathtub", task="gres")[0]
    assert not gres.found and (gres.reason == "" or "bathtub" in gres.reason)
    needy = with_inference(seg, absent_class_points=cache.n_points + 1).query(chairs, "the chair", task="res")[0]
    assert not needy.found and "needs" in needy.reason


def test_score_threshold(seg, cache) -> None:
    free = seg.query(cache, "the chair", task="res")[0]
    strict = with_inference(seg, absent_score=min(0.999, free.score + 1e-3)).query(cache, "the chair", task="res")[0]
    assert not strict.found and "absent_score" in strict.reason
    assert strict.score == pytest.approx(free.score)
    low = with_inference(seg, absent_score=max(1e-6, free.score - 1e-3)).query(cache, "the chair", task="res")[0]
    assert low.found and np.array_equal(low.point_indices, free.point_indices)


def test_apply_checks_leaves_a_not_found_answer(seg, cache) -> None:
    probs = [np.zeros(4)]
    masks = [np.zeros((4, cache.n_superpoints), dtype=bool)]
    empty = answer(cache, "the giraffe", "gres", group_queries(probs, masks, cache.sp_weights, 4, 0.5), 5)
    out = apply_checks(empty, cache, InferenceConfig(unknown_object="refuse"))
    assert not out.found and out.reason == ""  # the model's own "no target" stays as it is


@pytest.mark.parametrize("kw, match", [
    (dict(absent_class_points=-1), "absent_class_points"),
    (dict(absent_class_points=True), "absent_class_points"),
    (dict(unknown_object="maybe"), "unknown_object"),
    (dict(absent_score=1.0), "absent_score"),
])
def test_settings_are_checked(kw, match) -> None:
    with pytest.raises(ValueError, match=match):
        InferenceConfig(**kw)


def test_cli_summary_and_json_carry_the_reason(seg, cache) -> None:
    from bqnet_model.cli_outputs import SentenceOutput, result_to_dict, summary_line

    r = with_inference(seg, unknown_object="refuse").query(cache, "the helicopter")[0]
    data = result_to_dict(r, "res", 3000)
    assert data["found"] is False and "helicopter" in data["reason"] and data["n_objects"] == 0
    out = SentenceOutput(text=r.text, task="res", found=False, n_objects=0, n_points=0, best_score=None,
                         best_centroid=None, ply=None, png="x.png", json=None, query_ms=0.0, reason=r.reason)
    assert "unknown object word 'helicopter'" in summary_line(out)


def test_node_answer_takes_reason_score_and_warnings(seg, cache) -> None:
    """The worker's Result -> Answer keeps the library's refusal (reason and best score) and
    warnings; a plain no-target answer keeps the node's own reason."""
    pytest.importorskip("rclpy")
    from bqnet_ros.worker import PreparedMap, Request, Settings, Worker

    s = Settings(task="res", score_threshold=0.0, max_batch=4, text_queue_size=8, map_wait_timeout=1.0, max_points=10)
    prepared = PreparedMap(version=1, header=None, num_points=3000, xyz=np.zeros((3000, 3), np.float32), rgb=None,
                           cache=cache)
    refused = with_inference(seg, unknown_object="refuse").query(cache, "the helicopter")[0]
    a = Worker._from_result(None, Request("the helicopter", "r1", None), refused, prepared, s, "res", 0.0)
    assert not a.found and a.reason == refused.reason and a.score == pytest.approx(refused.score)
    warned = with_inference(seg, unknown_object="warn").query(cache, "the helicopter")[0]
    b = Worker._from_result(None, Request("the helicopter", "r2", None), warned, prepared, s, "res", 0.0)
    assert b.found and any("helicopter" in w for w in b.warnings)


def test_calibration_table_applies_the_library_rule() -> None:
    """The tool's per-setting shares from hand-made records: an unknown target, a low score and a
    class the head never predicts are each refused only under their own setting."""
    tool = load_tool("calibrate_absent")
    base = dict(where="synthetic", task="res", found=True, share=None)
    recs = [
        dict(base, kind="present", text="the chair", score=0.9, iou=0.8, target_class=CLASS_ID["chair"],
             class_points=500.0),
        dict(base, kind="present", text="the desk", score=0.2, iou=0.6, target_class=CLASS_ID["desk"],
             class_points=0.0),
        dict(base, kind="absent-oov", text="the giraffe", score=0.9, iou=None, target_class=-1, class_points=None),
        dict(base, kind="absent-class", text="the bathtub", score=0.25, iou=None, target_class=CLASS_ID["bathtub"],
             class_points=10.0),
    ]
    settings = [(0.0, 0, "answer", False), (0.0, 0, "refuse", False), (0.3, 0, "answer", False),
                (0.0, 50, "answer", False)]
    rows = {(r["score"], r["points"], r["unknown"]): r for r in tool.table(recs, settings)}
    assert rows[(0.0, 0, "answer")]["found"] == 1.0 and rows[(0.0, 0, "answer")]["Acc@0.5"] == 1.0
    assert rows[(0.0, 0, "refuse")]["refused absent-oov"] == 1.0 and rows[(0.0, 0, "refuse")]["found"] == 1.0
    assert rows[(0.3, 0, "answer")]["refused absent-class"] == 1.0 and rows[(0.3, 0, "answer")]["found"] == 0.5
    assert rows[(0.0, 50, "answer")]["refused absent-class"] == 1.0 and rows[(0.0, 50, "answer")]["Acc@0.5"] == 0.5
    text = tool.format_table(tool.table(recs, tool.default_settings()), tool._DEFAULT)
    assert "(default)" in text and "refused absent-oov" in text
    variants = dict(tool._swap("the chair next to the desk", "k", [CLASS_ID["bathtub"]]))
    assert variants["absent-class"] == "the bathtub next to the desk"
    assert variants["absent-oov"].endswith(" next to the desk") and variants["absent-oov"].split()[1] in tool.OOV_NOUNS


def test_calibration_scans_can_add_label_sentences(monkeypatch) -> None:
    """``--real-generated``: a calibration scan also gets the grammar sentences built from its own
    labels, so a class its human sentences never name (scene0001_00's pictures) has real present
    sentences; without the flag only the human sentences are there."""
    from pathlib import Path

    real = Path(__file__).resolve().parents[1].parent / "shared" / "real"
    if not real.is_dir():
        pytest.skip(f"needs the real scans at {real} (internal data, absent from a user's clone)")
    tool = load_tool("calibrate_absent")
    seen: dict[bool, list[tuple[str, str, str, object]]] = {}

    class FakeSeg:
        def prepare(self, xyz, rgb):
            return None

    def capture(seg, cache, items, n, where, scan):
        seen.setdefault(flag, []).extend(items)
        return []

    monkeypatch.setattr(tool, "_records", capture)
    for flag in (False, True):
        tool.real_records(FakeSeg(), real, ["scene0001_00"], generated=flag)
    plain = [it for it in seen.get(False, []) if it[1] == "present"]
    both = [it for it in seen[True] if it[1] == "present"]
    assert len(both) > len(plain)
    texts = [t for task, kind, t, gt in both if task == "res"]
    assert any((m := named_objects(t).target) is not None and m.class_id == CLASS_ID["picture"] for t in texts), texts
    assert all(gt is not None and gt.any() for _, _, _, gt in both)
