"""Metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bqnet_model.metrics import (
    DescriptionResult,
    format_summary,
    gres_record,
    point_iou,
    res_record,
    summarize_gres,
    summarize_res,
    union_mask,
)
from conftest import load_tool


def _m(bits: str) -> np.ndarray:
    return np.array([c == "1" for c in bits])


def test_point_iou_hand_cases():
    assert point_iou(_m("1100"), _m("0110")) == pytest.approx(1 / 3)
    assert point_iou(_m("1111"), _m("1100")) == pytest.approx(0.5)
    assert point_iou(_m("0000"), _m("1100")) == 0.0
    assert point_iou(_m("0000"), _m("0000")) == 1.0
    assert point_iou(torch.tensor([1, 0, 1]), torch.tensor([True, False, False])) == pytest.approx(0.5)
    assert point_iou(np.array([1.0, 0.0]), np.array([1, 0])) == 1.0


def test_res_summary_strict_thresholds_and_splits():
    ious = [0.25, 0.5, 0.6, 0.1, 0.26]
    types = ["unique", "unique", "multiple", "multiple", "multiple"]
    recs = [DescriptionResult("s", str(i), v, t) for i, (v, t) in enumerate(zip(ious, types))]
    s = summarize_res(recs)
    assert s["mIoU"] == pytest.approx(np.mean(ious))
    # IoU exactly 0.25 / 0.5 does not count: Acc@k is IoU > k
    assert s["Acc@0.25"] == pytest.approx(3 / 5)
    assert s["Acc@0.5"] == pytest.approx(1 / 5)
    assert s["count"] == 5
    assert s["unique"]["mIoU"] == pytest.approx(0.375) and s["unique"]["Acc@0.25"] == pytest.approx(0.5)
    assert s["unique"]["Acc@0.5"] == 0.0
    assert s["multiple"]["count"] == 3 and s["multiple"]["Acc@0.5"] == pytest.approx(1 / 3)
    # dicts work too; an empty split is NaN
    s2 = summarize_res([{"iou": 1.0, "eval_type": "unique"}])
    assert s2["mIoU"] == 1.0 and math.isnan(s2["multiple"]["mIoU"]) and s2["multiple"]["count"] == 0
    text = format_summary(s)
    assert "unique" in text and "Acc@0.5" in text and "20.0" in text


def test_res_record():
    r = res_record(_m("1110"), _m("0111"), scene_id="scene0000_00", ann_id=3, eval_type="multiple",
                   object_ids=[5])
    assert r.iou == pytest.approx(0.5) and r.n_pred == 3 and r.n_gt == 3 and r.ann_id == "3"
    assert r.to_dict()["object_ids"] == [5]
    with pytest.raises(ValueError, match="eval_type"):
        res_record(_m("1"), _m("1"), scene_id="s", ann_id=0, eval_type="mt")
    with pytest.raises(ValueError, match="empty"):
        res_record(_m("1"), _m("0"), scene_id="s", ann_id=0, eval_type="unique")


def test_gres_zero_target_rule_and_union():
    inst = np.array([0, 0, 1, 1, 2, 2, -1, -1])
    gt_multi = union_mask(inst, [0, 2])
    np.testing.assert_array_equal(gt_multi, _m("11001100"))
    assert not union_mask(inst, []).any()
    # zero targets, nothing predicted -> 1; one point predicted -> 0
    r0 = gres_record(_m("00000000"), union_mask(inst, []), scene_id="s", ann_id=0, eval_type="zt_w_d")
    r1 = gres_record(_m("00000001"), union_mask(inst, []), scene_id="s", ann_id=1, eval_type="zt_wo_d")
    assert r0.iou == 1.0 and r1.iou == 0.0
    # two targets vs their union: predict object 0 only -> 2/4
    r2 = gres_record(_m("11000000"), gt_multi, scene_id="s", ann_id=2, eval_type="mt", object_ids=[0, 2])
    assert r2.iou == pytest.approx(0.5)
    # one target, predicting nothing -> 0
    r3 = gres_record(_m("00000000"), union_mask(inst, [1]), scene_id="s", ann_id=3, eval_type="st_w_d")
    assert r3.iou == 0.0
    r4 = gres_record(_m("00110000"), union_mask(inst, [1]), scene_id="s", ann_id=4, eval_type="st_wo_d")
    s = summarize_gres([r0, r1, r2, r3, r4])
    assert s["mIoU"] == pytest.approx((1 + 0 + 0.5 + 0 + 1) / 5)
    assert s["Acc@0.25"] == pytest.approx(3 / 5) and s["Acc@0.5"] == pytest.approx(2 / 5)
    assert list(s["per_type"]) == ["zt_w_d", "zt_wo_d", "st_w_d", "st_wo_d", "mt"]
    assert s["per_type"]["mt"]["mIoU"] == pytest.approx(0.5) and s["per_type"]["mt"]["Acc@0.5"] == 0.0
    assert "mt" in format_summary(s)


def test_bad_inputs():
    with pytest.raises(ValueError, match="points"):
        point_iou(_m("11"), _m("111"))
    with pytest.raises(ValueError, match="0/1"):
        point_iou(np.array([0.3, 0.9]), _m("11"))
    with pytest.raises(ValueError, match="1-D"):
        point_iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool))
    with pytest.raises(TypeError, match="boolean"):
        point_iou(np.array(["a", "b"]), _m("11"))
    with pytest.raises(ValueError, match="no records"):
        summarize_res([])
    with pytest.raises(ValueError, match="eval_type"):
        summarize_res([{"iou": 0.3, "eval_type": "mt"}])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        summarize_gres([{"iou": 1.3, "eval_type": "mt"}])
    with pytest.raises(ValueError, match="needs"):
        summarize_gres([{"iou": 0.3}])
    with pytest.raises(TypeError, match="record 0"):
        summarize_gres([0.3])


def test_eval_breakdown_sorts_answers_into_kinds_of_miss():
    classify = load_tool("eval_breakdown").classify
    # instances: 0 = floor (class 0), 1 and 2 = chairs (class 5), 3 = desk (class 7); 10 points each
    inst = np.repeat([0, 1, 2, 3], 10)
    sem = np.repeat([0, 5, 5, 7], 10)

    def pred(*ids, extra=0):
        p = np.isin(inst, ids)
        p[np.flatnonzero(inst == 0)[:extra]] = True
        return p

    assert classify(inst, sem, 1, pred(1)) == ("correct", 1.0)
    assert classify(inst, sem, 1, pred(1, 2))[0] == "target + same-class object"
    assert classify(inst, sem, 1, pred(1, 3))[0] == "target + other"
    assert classify(inst, sem, 1, pred(2))[0] == "same-class object"
    assert classify(inst, sem, 1, pred(3))[0] == "other class"
    part = np.zeros(40, bool)
    part[10:13] = True  # 3 of the target's 10 points
    part[30:40] = True
    assert classify(inst, sem, 1, part)[0] == "part of target"
    assert classify(inst, sem, 1, np.zeros(40, bool)) == ("nothing", 0.0)
