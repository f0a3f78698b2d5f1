"""Oracle mask metric (``bqnet_model.mask_oracle``): the best IoU any decoder query's mask reaches
with the target, on hand-made arrays, and through the real-scan benchmark and ``tools/eval_breakdown.py``
with a random-weight model built here (the masks the selection saw, binarised as the answer is)."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from bqnet_model.mask_oracle import (
    SIZE_EDGES,
    format_oracle_table,
    oracle_fields,
    query_point_ious,
    size_bucket,
    summarize_oracle,
    superpoint_target_points,
)
from bqnet_model.metrics import point_iou


# ---------------------------------------------------------------- hand-made arrays
def _hand_cache() -> types.SimpleNamespace:
    """12 input points; point 11 dropped by cleaning; 4 superpoints of 3, 2, 4, 2 cleaned points."""
    point_index = np.arange(11)
    point_superpoint = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3])
    order = np.argsort(point_superpoint, kind="stable")
    start = np.r_[0, np.cumsum(np.bincount(point_superpoint))]
    return types.SimpleNamespace(n_input=12, point_index=point_index, point_superpoint=point_superpoint,
                                 n_superpoints=4, sp_start=start, sp_order=order)


def _point_mask(cache: types.SimpleNamespace, sp_mask: np.ndarray) -> np.ndarray:
    out = np.zeros(cache.n_input, dtype=bool)
    out[cache.point_index[np.isin(cache.point_superpoint, np.flatnonzero(sp_mask))]] = True
    return out


def test_oracle_of_three_query_masks_on_hand_made_arrays():
    cache = _hand_cache()
    # target: superpoint 1 (points 3, 4), two of superpoint 2 (points 5, 6) and the dropped point 11
    gt = np.zeros(12, dtype=bool)
    gt[[3, 4, 5, 6, 11]] = True
    masks = np.array([[True, False, False, False],   # no target point: IoU 0
                      [False, True, True, False],    # 4 of 5 target points, 6 predicted: 4 / 7
                      [False, True, False, False],   # 2 of 5, 2 predicted: 2 / 5
                      [False, False, False, False]])  # empty
    np.testing.assert_array_equal(superpoint_target_points(cache, gt), [0, 2, 2, 0])
    q = query_point_ious(masks, np.diff(cache.sp_start), superpoint_target_points(cache, gt), int(gt.sum()))
    assert q["iou"].tolist() == pytest.approx([0.0, 4 / 7, 2 / 5, 0.0])
    assert q["inter"].tolist() == [0, 4, 2, 0] and q["pred"].tolist() == [3, 6, 2, 0]
    for k in range(4):  # the same numbers as the evaluation's point IoU of the expanded masks
        assert q["iou"][k] == point_iou(_point_mask(cache, masks[k]), gt)
    res = types.SimpleNamespace(query_masks=masks)
    f = oracle_fields(res, cache, gt)
    assert f["oracle_query"] == 1 and f["oracle_iou"] == pytest.approx(4 / 7)
    assert f["oracle_recall"] == pytest.approx(4 / 5) and f["oracle_precision"] == pytest.approx(4 / 6)
    assert f["oracle_n_pred"] == 6 and f["n_queries"] == 4 and f["n_nonempty"] == 3
    # no mask touching the target: oracle 0, no oracle query
    none = oracle_fields(types.SimpleNamespace(query_masks=masks[[0, 3]]), cache, gt)
    assert none["oracle_iou"] == 0.0 and none["oracle_query"] == -1 and none["oracle_precision"] == 0.0
    with pytest.raises(ValueError, match="keep_query_masks"):
        oracle_fields(types.SimpleNamespace(query_masks=None), cache, gt)
    with pytest.raises(ValueError, match="no points"):
        oracle_fields(res, cache, np.zeros(12, dtype=bool))
    with pytest.raises(ValueError, match="points given to prepare"):
        superpoint_target_points(cache, gt[:11])
    with pytest.raises(ValueError, match="bool"):
        query_point_ious(masks.astype(int), np.diff(cache.sp_start), np.zeros(4), 5)
    with pytest.raises(ValueError, match="n_target"):
        query_point_ious(masks, np.diff(cache.sp_start), np.array([0, 2, 2, 0]), 3)


def test_size_buckets_and_summary():
    assert [size_bucket(n) for n in (1, 199, 200, 499, 500, 999, 1000, 4999, 5000, 10**6)] == [
        "<200", "<200", "200-499", "200-499", "500-999", "500-999", "1000-4999", "1000-4999", ">=5000", ">=5000"]
    assert size_bucket(150, (100,)) == ">=100" and size_bucket(50, (100,)) == "<100"
    with pytest.raises(ValueError, match="increasing"):
        size_bucket(10, (500, 200))

    def rec(iou, orc, n_gt, et):
        return dict(iou=iou, oracle_iou=orc, n_gt=n_gt, eval_type=et, oracle_recall=orc, oracle_precision=1.0,
                    n_nonempty=2)

    recs = [rec(0.0, 0.0, 50, "multiple"), rec(0.1, 0.6, 150, "multiple"), rec(0.6, 0.6, 700, "unique"),
            rec(0.0, 0.3, 6000, "unique")]
    s = summarize_oracle(recs)
    assert s["size_edges"] == list(SIZE_EDGES)
    g = s["groups"]
    assert list(g) == ["overall", "unique", "multiple", "size <200", "size 500-999", "size >=5000"]
    assert g["overall"]["count"] == 4
    assert g["overall"]["oracle"]["Acc@0.5"] == 0.5 and g["overall"]["oracle"]["Acc@0.25"] == 0.75
    assert g["overall"]["model"]["Acc@0.5"] == 0.25 and g["overall"]["oracle"]["mIoU"] == pytest.approx(1.5 / 4)
    assert g["overall"]["touched"] == 0.75 and g["overall"]["nonempty"] == 2.0
    assert g["size <200"]["count"] == 2 and g["size <200"]["oracle"]["Acc@0.5"] == 0.5
    assert g["size >=5000"]["oracle"]["Acc@0.25"] == 1.0 and g["size >=5000"]["oracle"]["Acc@0.5"] == 0.0
    # IoU exactly 0.5 is not > 0.5: the plain Acc@k rule
    assert summarize_oracle([rec(0.5, 0.5, 10, "unique")])["groups"]["overall"]["oracle"]["Acc@0.5"] == 0.0
    table = format_oracle_table(s)
    assert "size 500-999" in table and "oAcc@0.5" in table and "100.0" in table
    with pytest.raises(ValueError, match="no records"):
        summarize_oracle([])


# ---------------------------------------------------------------- through the product's Segmenter
TEXT = "the chair"  # one sentence for every target: a random model's mask probabilities shift with the text


@pytest.fixture(scope="module")
def tiny_seg():
    """A random-weight tiny segmenter (``tiny_model.tiny_config``), torch on one thread."""
    import torch

    from bqnet_model.pipeline import Segmenter
    from tiny_model import tiny_config

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seg = Segmenter.from_config(tiny_config(), device="cpu", seed=0)
        yield seg
    finally:
        torch.set_num_threads(n)


def _tuned(seg, xyz, rgb):
    """``seg`` with its mask threshold at the median mask probability of ``TEXT`` on the scan, so
    that the query masks differ (at 0.5 a random model's masks are all empty or all full)."""
    import torch

    from tiny_model import with_inference

    cache = seg.prepare(xyz, rgb)
    prob = torch.sigmoid(seg.decode(cache, [TEXT]).final.masks.float())
    return with_inference(seg, mask_threshold=float(prob.median()))


def test_evaluate_real_oracle_through_a_random_weight_segmenter(tmp_path, tiny_seg):
    from bqnet_model.eval_real import check_real_dir, evaluate_real, format_real_summary, load_real_scene
    from test_real_data import _tiny_votenet

    t = _tiny_votenet(tmp_path)
    (tmp_path / "sentences").mkdir()
    (tmp_path / "sentences" / "scanrefer_dev.json").write_text(json.dumps([
        {"scene_id": t["scan"], "object_id": str(o), "object_name": "chair", "ann_id": str(o), "description": TEXT}
        for o in range(4)]))
    layout = check_real_dir(tmp_path)
    sc = load_real_scene(layout, t["scan"]).scene
    seg = _tuned(tiny_seg, sc.xyz, sc.rgb)
    out = evaluate_real(seg, layout, progress=False, asa=False)
    recs = out["records"]
    assert len(recs) == 4
    # independently: every query's superpoint mask expanded to the scan's points, scored by point_iou
    cache = seg.prepare(sc.xyz, sc.rgb)
    texts = [r["text"] for r in recs]
    with_masks = seg.query(cache, texts, task="res", keep_query_masks=True)
    plain = seg.query(cache, texts, task="res")
    varied = False
    for r, res, res0 in zip(recs, with_masks, plain):
        assert res0.query_masks is None and res0.query_probs is None  # opt-in: the normal path keeps nothing
        np.testing.assert_array_equal(res0.point_indices, res.point_indices)  # and answers the same
        gt = sc.instance == r["object_ids"][0]
        assert res.query_masks.shape == (r["n_queries"], cache.n_superpoints)
        assert res.query_probs.shape == (r["n_queries"],)
        ious = []
        for m in res.query_masks:
            pm = np.zeros(len(sc.xyz), dtype=bool)
            pm[cache.point_index[cache.points_of(np.flatnonzero(m))]] = True
            ious.append(point_iou(pm, gt))
        assert r["oracle_iou"] == max(ious) and r["oracle_iou"] >= r["iou"]
        if r["oracle_iou"] > 0:
            assert ious[r["oracle_query"]] == r["oracle_iou"]
        if res.found:  # the answer is one query's mask, binarised the same way: its IoU is that query's
            assert ious[res.objects[0].queries[0]] == r["iou"]
        varied |= len(set(np.round(ious, 9))) > 1
        assert r["n_gt"] == 300
    assert varied, "the query masks should differ (the test's mask threshold is off)"
    s = out["summary"]["overall"]
    assert s["oracle"]["mIoU"] == pytest.approx(np.mean([r["oracle_iou"] for r in recs]))
    assert s["oracle"]["mIoU"] >= s["model"]["mIoU"]
    assert list(out["oracle"]["groups"]) == ["overall", "unique", "multiple", "size 200-499"]
    assert "oracle mIoU" in format_real_summary(out["summary"])
    json.dumps(out)  # the --json output stays plain JSON
    no = evaluate_real(seg, layout, progress=False, asa=False, oracle=False)
    assert "oracle" not in no and "oracle" not in no["summary"]["overall"]
    assert [r["iou"] for r in no["records"]] == [r["iou"] for r in recs]


def test_eval_breakdown_oracle(tmp_path, tiny_seg, monkeypatch, capsys):
    from bqnet_model.data.scannet import ScanNetScene, save_scene_npz
    from bqnet_model.pipeline import Segmenter
    from conftest import load_tool
    from test_real_data import _tiny_votenet

    t = _tiny_votenet(tmp_path / "src")
    inst = t["ins"].astype(np.int64) - 1
    names = np.array(["chair", "chair", "couch", "chair"])
    sem = np.where(inst >= 0, 5, -1)
    sp = np.where(inst >= 0, inst, 4)
    root = tmp_path / "data"
    root.mkdir()
    save_scene_npz(root / "room0.npz", ScanNetScene("room0", t["xyz"], t["rgb"].astype(np.uint8), sp, sem, inst, names))
    rows = [dict(scene_id="room0", object_id=str(o), object_name=names[o], ann_id=str(o), description=d,
                 eval_type="multiple" if o != 2 else "unique") for o, d in ((0, TEXT), (2, TEXT))]
    (root / "val_scanrefer.json").write_text(json.dumps(rows))
    seg = _tuned(tiny_seg, t["xyz"], t["rgb"].astype(np.uint8))
    monkeypatch.setattr(Segmenter, "from_checkpoint", classmethod(lambda cls, *a, **k: seg))
    tool = load_tool("eval_breakdown")
    out_json = tmp_path / "b.json"
    assert tool.main(["x.pth", "--data-root", str(root), "--json", str(out_json), "--size-edges", "100", "1000"]) == 0
    printed = capsys.readouterr().out
    assert "oracle (best query's mask)" in printed and "size 100-999" in printed
    d = json.loads(out_json.read_text())
    assert d["oracle"]["size_edges"] == [100, 1000]
    assert list(d["oracle"]["groups"]) == ["overall", "unique", "multiple", "size 100-999"]
    for r in d["records"]:
        assert r["oracle_iou"] >= r["iou"] and r["n_gt"] == 300 and r["n_queries"] > 1
    assert tool.main(["x.pth", "--data-root", str(root), "--no-oracle", "--json", str(out_json)]) == 0
    assert json.loads(out_json.read_text())["oracle"] is None
    assert "oracle_iou" not in json.loads(out_json.read_text())["records"][0]
