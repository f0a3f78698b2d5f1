"""Anchor supervision: the synthetic writer records the objects a sentence names besides its
targets (``anchor_ids``), the loaders read them, and ``model.loss.anchor_ref`` raises their
superpoints in the soft sampling target (0 = the authors' target, unchanged)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bqnet_synth import minimal_room
from bqnet_synth.dataset import room_with_expressions
from bqnet_synth.grammar import class_nouns
from bqnet_synth.relations import Descriptor
from bqnet_synth.expressions import Expression
from bqnet_model.data.dataset import anchor_superpoints, reference_mask, target_superpoints
from bqnet_model.data.referit import Annotation, load_annotations, save_annotations
from bqnet_model.model.config import load_config
from bqnet_model.model.losses import LossConfig, LossTargets, anchor_matching, bqnet_loss
from bqnet_model.model.matching import match_batch
from conftest import save_grid_room
from tiny_model import write_train_config

SEEDS = (0, 1, 2)

# sha256 (first 16 hex digits) of [[text, target_ids, eval_type], ...] that generate_expressions
# gave for room_with_expressions(seed) before anchor_ids existed: recording the anchors must not
# change a single sentence. A deliberate grammar change updates these digests (print them anew).
SENTENCE_DIGESTS = {0: "5f48094c68a488c8", 1: "8a253487da534b4d", 2: "6cc6ad85459979b0"}


def _digest(exprs: list[Expression]) -> str:
    payload = json.dumps([[e.text, e.target_ids, e.eval_type] for e in exprs])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def rooms():
    return {s: room_with_expressions(s) for s in SEEDS}


def test_recording_anchors_changes_no_sentence(rooms):
    for seed, (_, exprs) in rooms.items():
        assert _digest(exprs) == SENTENCE_DIGESTS[seed], f"seed {seed}: the sentences changed"
    # deterministic: the same seed gives the same sentences and anchors
    again = room_with_expressions(SEEDS[0])[1]
    assert [(e.text, e.target_ids, e.anchor_ids) for e in again] == \
        [(e.text, e.target_ids, e.anchor_ids) for e in rooms[SEEDS[0]][1]]


def test_anchors_of_generated_rooms_are_named_in_the_text(rooms):
    n_with = 0
    for _, (scene, exprs) in rooms.items():
        variants: dict[str, list[str]] = {}
        for o in scene.objects:
            variants.setdefault(o.name, []).append(o.variant)
        for k, e in enumerate(exprs):
            spatial = [d for d in e.descriptors if d.anchors]
            assert bool(e.anchor_ids) == bool(spatial), e.text  # class/colour/size-only: no anchors
            assert len(set(e.anchor_ids)) == len(e.anchor_ids)
            for a in e.anchor_ids:
                obj = scene.objects[a]
                assert obj.name not in ("floor", "wall") and a not in e.target_ids, (e.text, a)
                nouns = class_nouns(obj.name, variants[obj.name])
                assert any(n in e.text for n in nouns), f"anchor {obj.name} ({nouns}) not named in {e.text!r}"
            n_with += bool(e.anchor_ids)
            entries = [e.to_multi3drefer(scene.scene_id, k)]
            if e.scanrefer_eval_type is not None:
                entries.append(e.to_scanrefer(scene.scene_id, k))
            for d in entries:
                assert d["anchor_ids"] == e.anchor_ids and all(type(v) is int for v in d["anchor_ids"])
    assert n_with > 0


def test_anchor_ids_take_viewpoints_and_between_pairs_once():
    e = Expression("x", [1], "st_w_d", "left_of", "chair",
                   [Descriptor("between", (4, 5)), Descriptor("left_of", (5,), viewpoint=7), Descriptor("colour", value="red")])
    assert e.anchor_ids == [4, 5, 7]
    assert Expression("the chair", [1], "st_wo_d", "category", "chair").anchor_ids == []


def test_annotations_round_trip_anchor_ids(tmp_path):
    m3 = [{"scene_id": "r", "object_ids": [6], "object_name": "chair", "ann_id": 0, "description": "the chair next to the desk",
           "eval_type": "st_w_d", "relation": "next_to", "anchor_ids": [5]},
          {"scene_id": "r", "object_ids": [6], "object_name": "chair", "ann_id": 1, "description": "the chair",
           "eval_type": "st_w_d"}]  # an older file's entry: no anchor_ids
    p = tmp_path / "m3.json"
    p.write_text(json.dumps(m3))
    anns = load_annotations(p)
    assert [a.anchor_ids for a in anns] == [[5], []]
    assert "anchor_ids" not in anns[0].extra and anns[0].extra == {"relation": "next_to"}
    sr = [{"scene_id": "r", "object_id": "6", "object_name": "chair", "ann_id": "0", "description": "the chair",
           "eval_type": "multiple", "anchor_ids": [5, 8]}]
    (tmp_path / "sr.json").write_text(json.dumps(sr))
    assert load_annotations(tmp_path / "sr.json")[0].anchor_ids == [5, 8]
    for fmt in ("multi3drefer", "scanrefer"):
        if fmt == "scanrefer":
            for a in anns:
                a.eval_type = "multiple"
        save_annotations(tmp_path / f"back_{fmt}.json", anns, fmt)
        back = load_annotations(tmp_path / f"back_{fmt}.json")
        assert [a.anchor_ids for a in back] == [[5], []]
        assert "anchor_ids" not in json.loads((tmp_path / f"back_{fmt}.json").read_text())[1]
    for bad in ("5", [-1], ["x"]):
        p.write_text(json.dumps([{**m3[0], "anchor_ids": bad}]))
        with pytest.raises(ValueError, match="anchor"):
            load_annotations(p)


def _ref_case():
    # superpoints: 0 = target (inst 1), 1 = anchor desk (inst 2), 2 = half anchor / half floor,
    # 3 = another desk (inst 3, context class only), 4 = a cabinet (inst 4, named nowhere)
    sp = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    inst = np.array([1, 1, 2, 2, 2, -1, 3, 3, 4, 4])
    desk, chair, cab = 4, 2, 7  # CLASSES ids
    sem = np.array([chair, chair, desk, desk, desk, 0, desk, desk, cab, cab])
    return sp, inst, sem


def test_reference_mask_with_anchors():
    sp, inst, sem = _ref_case()
    old = reference_mask(sp, inst, sem, [1], ["desk"])
    np.testing.assert_array_equal(old, reference_mask(sp, inst, sem, [1], ["desk"], [2], 0.0))  # off: bit for bit
    np.testing.assert_allclose(old, [1, 0.5, 0.25, 0.5, 0])
    # the anchor named by a word the class list lacks: only anchor_ref marks it
    np.testing.assert_allclose(reference_mask(sp, inst, sem, [1], [], [2, 4], 0.5), [1, 0.5, 0.25, 0, 0.5])
    # max with the context value: 0.3 leaves the named desks at 0.5; 0.8 singles out the anchor
    np.testing.assert_allclose(reference_mask(sp, inst, sem, [1], ["desk"], [2], 0.3), old)
    np.testing.assert_allclose(reference_mask(sp, inst, sem, [1], ["desk"], [2], 0.8), [1, 0.8, 0.4, 0.5, 0])
    # a target listed as an anchor stays 1; no anchors: unchanged
    np.testing.assert_allclose(reference_mask(sp, inst, sem, [1], [], [1], 0.5), [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(reference_mask(sp, inst, sem, [1], ["desk"], [], 0.9), old)
    with pytest.raises(ValueError, match="anchor_value"):
        reference_mask(sp, inst, sem, [1], [], [2], 1.5)


def test_config_keys_validate():
    lo = load_config({}).model.loss
    assert (lo.anchor_ref, lo.anchor_mask) == (0.0, 0.0)
    lo = load_config({}, ["model.loss.anchor_ref=0.5", "model.loss.anchor_mask=0.3"]).model.loss
    assert (lo.anchor_ref, lo.anchor_mask) == (0.5, 0.3)
    for key, bad in (("anchor_ref", "1.5"), ("anchor_ref", "-0.1"), ("anchor_ref", "nan"), ("anchor_mask", "-1")):
        with pytest.raises(ValueError, match=key):
            load_config({}, [f"model.loss.{key}={bad}"])
    for name in ("res.yaml", "gres.yaml", "tiny.yaml"):
        lo = load_config(Path(__file__).parents[1] / "config" / name).model.loss
        assert (lo.anchor_ref, lo.anchor_mask) == (0.0, 0.0)


def test_anchor_superpoints_leave_the_targets_alone():
    sp = np.array([0, 0, 1, 1, 1, 2, 2, 3])
    inst = np.array([1, 1, 1, 1, 7, 2, 2, 9])  # superpoint 1: target 1 holds 2 of 3, anchor 7 the rest
    tsp = target_superpoints(sp, inst, [1])
    np.testing.assert_array_equal(anchor_superpoints(sp, inst, [2, 8], tsp), [-1, -1, 2, -1])  # 8: no points
    # anchor 7 dominates no superpoint: its best share is the target's superpoint, which stays the target's
    np.testing.assert_array_equal(target_superpoints(sp, inst, [7]), [-1, 7, -1, -1])
    np.testing.assert_array_equal(anchor_superpoints(sp, inst, [7], tsp), [-1, -1, -1, -1])
    np.testing.assert_array_equal(anchor_superpoints(sp, inst, [], tsp), [-1, -1, -1, -1])
    np.testing.assert_array_equal(anchor_superpoints(sp, inst, [1], tsp), [-1, -1, -1, -1])  # a target is no anchor


# Stand-ins with the attribute names of decoder.LayerPrediction / DecoderOutput that the loss reads.
@dataclass
class _Pred:
    masks: torch.Tensor
    scores: torch.Tensor
    indi: torch.Tensor
    proj_queries: None = None
    proj_tokens: None = None


@dataclass
class _Out:
    layers: list
    sample_idx: torch.Tensor
    seed_idx: torch.Tensor
    seed_scores: torch.Tensor
    word_pad: None = None


def _loss_case(anchor_sp: list[int]):
    """One sentence, superpoints 0..5 on the x axis: the target (id 3) owns 1 and 2, the anchor
    (id 5) ``anchor_sp``; queries on superpoints 2, 4 and 5; two decoder predictions."""
    g = torch.Generator().manual_seed(0)
    xs = torch.arange(6.0)
    sp_anchor = torch.full((1, 6), -1, dtype=torch.long)
    sp_anchor[0, anchor_sp] = 5
    tg = LossTargets(sp_inst=torch.tensor([[-1, 3, 3, -1, -1, -1]]), sp_pad=torch.zeros(1, 6, dtype=torch.bool),
                     sp_xyz=torch.stack([xs, torch.zeros(6), torch.zeros(6)], 1)[None],
                     sp_ref=torch.tensor([[0.0, 1, 1, 0, 0, 0]]), sp_anchor=sp_anchor)
    layers = [_Pred(torch.randn(1, 3, 6, generator=g), torch.rand(1, 3, generator=g), torch.randn(1, 3, 2, generator=g))
              for _ in range(2)]
    out = _Out(layers, sample_idx=torch.tensor([[1, 2, 3]]), seed_idx=torch.tensor([[0, 2, 4, 5]]),
               seed_scores=torch.rand(1, 4, generator=g))
    return out, tg


def test_anchor_mask_loss_trains_the_anchor_queries_masks_only():
    out, tg = _loss_case([4, 5])
    base, parts0 = bqnet_loss(out, tg, LossConfig())
    assert "anchor_mask" not in parts0
    no_anchor = LossTargets(**{**vars(tg), "sp_anchor": None})
    assert torch.equal(bqnet_loss(out, no_anchor, LossConfig())[0], base)  # off: anchors change nothing
    total, parts = bqnet_loss(out, tg, LossConfig(anchor_mask=2.0))
    m = match_batch(out.seed_idx, out.sample_idx, tg)
    am = anchor_matching(out.seed_idx, out.sample_idx, tg, m)
    # the anchor's nearest query (1, on superpoint 4; a tie with 5 goes to the lower index) and query 2 inside it
    assert am.q_idx.tolist() == [1, 2] and m.q_idx.tolist() == [0]
    want = 0.0
    tgt = torch.tensor([0.0, 0, 0, 0, 1, 1])
    for w, pred in zip((0.5, 1.0), out.layers):
        lg = pred.masks[0, 1:3]
        bce = F.binary_cross_entropy_with_logits(lg, tgt.expand(2, 6), reduction="sum") / 12
        p = torch.sigmoid(lg)
        dice = (1 - (2 * (p * tgt).sum(-1) + 1) / (p.sum(-1) + tgt.sum() + 1)).mean()
        want += w * float(bce + dice) / 2  # / the 2 anchor pairs
    assert float(parts["anchor_mask"]) == pytest.approx(want, rel=1e-5)
    assert float(total - base) == pytest.approx(2.0 * want, rel=1e-5)
    for k in ("mask_bce", "mask_dice", "score", "indicator", "sample"):  # the other terms are untouched
        assert torch.equal(parts[k], parts0[k])
    # the anchor's nearest query is the target's: it stays the target's, the anchor gets no pair
    out, tg = _loss_case([3])
    _, parts = bqnet_loss(out, tg, LossConfig(anchor_mask=1.0))
    assert float(parts["anchor_mask"]) == 0.0 and float(parts["anchor_insts"]) == 0.0
    with pytest.raises(ValueError, match="sp_anchor"):
        bqnet_loss(out, LossTargets(**{**vars(tg), "sp_anchor": None}), LossConfig(anchor_mask=1.0))


def test_training_step_with_anchor_supervision(tmp_path):
    """One step of tools/train.py's main with ``--set model.loss.anchor_ref=...`` and
    ``anchor_mask``: the training set carries the value, the anchor's superpoints get it in the
    sampling target and are the anchor-mask term's objects."""
    from bqnet_model.train import build_datasets, main

    torch.set_num_threads(2)
    data = tmp_path / "data"
    data.mkdir()
    names = save_grid_room(data, "room00", minimal_room(n_points=2000, seed=0))
    assert (names[5], names[6]) == ("desk", "chair")
    ann = [{"scene_id": "room00", "object_id": "6", "object_name": "chair", "ann_id": "0",
            "description": "the red chair next to the desk", "anchor_ids": [5]},
           {"scene_id": "room00", "object_id": "7", "object_name": "table", "ann_id": "1", "description": "the table"}]
    (data / "scanrefer_train.json").write_text(json.dumps(ann))
    cfg = tmp_path / "tiny.yaml"
    write_train_config(cfg, data, tmp_path / "run")

    train_ds, _ = build_datasets(load_config(cfg, ["model.loss.anchor_ref=0.8"]), data, train=True)
    assert train_ds.anchor_ref == 0.8
    s = train_ds[0]
    with np.load(data / "room00.npz") as z:
        inst = z["instance"][s.point_index]
    on_desk = np.bincount(s.inputs.superpoints, weights=(inst == 5).astype(float)) > 0
    assert on_desk.any()
    # grid superpoints are split by instance: the desk's are all desk, so they carry the value itself
    np.testing.assert_allclose(s.sp_ref_masks[0][on_desk], 0.8)
    np.testing.assert_allclose(s.sp_ref_masks[1][on_desk], 0.0)  # "the table" names no anchor
    off_ds, _ = build_datasets(load_config(cfg), data, train=True)
    np.testing.assert_allclose(off_ds[0].sp_ref_masks[0][on_desk], 0.5)  # off: "desk" is a named class

    np.testing.assert_array_equal(s.gt_sp_anchor[0][on_desk], 5)
    np.testing.assert_array_equal(s.gt_sp_anchor[0][~on_desk], -1)

    assert main([str(cfg), "--max-steps", "1", "--no-eval", "--set", "model.loss.anchor_ref=0.5",
                 "--set", "model.loss.anchor_mask=0.5"]) == 0
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in log if r["event"] == "train"]
    assert train and np.isfinite(train[0]["loss"]) and np.isfinite(train[0]["anchor_mask"])
