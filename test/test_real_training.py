"""Real scans as training data (``bqnet_synth.real_scenes``, ``bqnet_synth.real_training``,
``tools/make_real_training.py``).

Every step runs on a tiny fake real-data folder written here (boxes as objects, sentences naming
them); one test also converts ``../shared/real`` beside the checkout and skips, saying so, when that
folder is absent. Nothing of the real data is written into the repository.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bqnet_model.data.classes import CLASS_ID
from bqnet_model.data.dataset import ReferDataset
from bqnet_model.data.referit import load_annotations, same_class_ids
from bqnet_model.data.scannet import OTHER_CLASS, load_scene_npz
from bqnet_synth.parts import COLORS
from bqnet_synth.real_scenes import (
    colour_name,
    confusable_class,
    generate_real_expressions,
    named_as,
    real_scene_geometry,
)
from bqnet_synth.real_training import build_real_training, format_summary, merge_real_into
from bqnet_synth.relations import FALSE, TRUE, evaluate
from conftest import load_tool

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real"
ROOT = Path(__file__).resolve().parents[1]

SR3D_HEADER = ("scan_id,target_id,distractor_ids,utterance,stimulus_id,coarse_reference_type,reference_type,"
               "instance_type,anchors_types,anchor_ids,target_label_scannet,sources")
NR3D_HEADER = ("scan_id,target_id,instance_type,utterance,stimulus_id,correct_guess,mentions_target_class,"
               "uses_object_lang,uses_spatial_lang,uses_color_lang,uses_shape_lang,target_label_scannet,sources")

# id: (label, box min, box max, rgb). A room of boxes: floor, two red chairs at a table, a blue
# sofa, a trash can and a "storage bin" (no class of ours, but a listener's "bin").
_OBJECTS = {
    0: ("floor", (-0.5, -0.5, -0.02), (4.5, 3.5, 0.0), (120, 120, 118)),
    1: ("chair", (0.0, 0.0, 0.0), (0.5, 0.5, 0.9), (185, 35, 38)),
    2: ("office chair", (2.5, 0.0, 0.0), (3.0, 0.5, 0.9), (185, 35, 38)),
    3: ("table", (0.9, 0.0, 0.0), (2.1, 0.8, 0.75), (118, 76, 42)),
    4: ("couch", (0.0, 2.2, 0.0), (2.0, 3.0, 0.8), (40, 75, 175)),
    5: ("trash can", (3.8, 2.8, 0.0), (4.1, 3.1, 0.5), (30, 30, 33)),
    6: ("storage bin", (3.8, 1.6, 0.0), (4.1, 1.9, 0.4), (226, 122, 36)),
}
_FLOOR_Z = 0.3  # the fake scans' floor height: the geometry must measure heights from it


def _fake_scan(root: Path, scan: str, seed: int, objects: dict = _OBJECTS) -> None:
    rng = np.random.default_rng(seed)
    xyz, rgb, ins = [], [], []
    for oid, (_, lo, hi, col) in objects.items():
        n = 600 if oid == 0 else 200
        xyz.append(np.asarray(lo) + rng.random((n, 3)) * (np.asarray(hi) - np.asarray(lo)) + (0, 0, _FLOOR_Z))
        rgb.append(np.clip(np.asarray(col) + rng.normal(0, 4, (n, 3)), 0, 255))
        ins.append(np.full(n, oid + 1))
    vote = root / "scannet_votenet50k"
    info_dir = root / "scannet_meta" / "objects_info"
    vote.mkdir(parents=True, exist_ok=True)
    info_dir.mkdir(parents=True, exist_ok=True)
    np.save(vote / f"{scan}_vert.npy", np.c_[np.concatenate(xyz), np.concatenate(rgb)].astype(np.float32))
    np.save(vote / f"{scan}_ins_label.npy", np.concatenate(ins).astype(np.uint32))
    objs = np.empty(len(objects), dtype=object)
    for k, (oid, (label, *_)) in enumerate(objects.items()):
        objs[k] = {"id": oid, "label": label}
    np.save(info_dir / f"objects_info_{scan}.npy", objs, allow_pickle=True)


def _fake_real_dir(root: Path) -> Path:
    """Three scans; scene0090_00 is the one the tests leave out. One sentence names an object the
    scan lacks (skipped)."""
    for k, scan in enumerate(("scene0090_00", "scene0091_00", "scene0092_00")):
        _fake_scan(root, scan, k)
    (root / "scannet_meta" / "scannetv2-labels.combined.tsv").write_text(
        "id\traw_category\tcategory\tcount\tnyu40id\teigen13id\tnyuClass\tnyu40class\n"
        "1\tcouch\tcouch\t10\t6\t9\tsofa\tsofa\n2\tstorage bin\tstorage bin\t5\t40\t12\totherprop\totherprop\n")
    d = root / "sentences"
    d.mkdir()
    sr = [SR3D_HEADER]
    for scan in ("scene0090_00", "scene0091_00"):
        sr.append(f'{scan},1,"[2]","the chair closest to the couch",s,horizontal,closest,chair,'
                  "['couch'],[4],chair,x")
        sr.append(f'{scan},2,"[1]","the chair farthest from the couch",s,horizontal,farthest,chair,'
                  "['couch'],[4],chair,x")
    (d / "sr3d_dev.csv").write_text("\n".join(sr) + "\n")
    (d / "nr3d_dev.csv").write_text(NR3D_HEADER + "\n" 'scene0092_00,4,couch,"the blue couch",s,True,True,'
                                    "True,False,True,False,couch,x\n")
    (d / "scanrefer_dev.json").write_text(json.dumps([
        {"scene_id": "scene0091_00", "object_id": "3", "object_name": "table", "ann_id": "0",
         "description": "the table between the chairs."},
        {"scene_id": "scene0091_00", "object_id": "40", "object_name": "lamp", "ann_id": "1",
         "description": "a lamp that is not in the scan."}]))
    return root


def _load(path: Path) -> list[dict]:
    return json.loads(path.read_text())


# ---------------------------------------------------------------- geometry and generated sentences
def test_words_colours_and_proxies():
    assert confusable_class("storage bin") == "trash can" and confusable_class("shelf") == "bookshelf"
    assert confusable_class("tv") == "monitor" and confusable_class("pillow") is None
    assert named_as("office chair", "chair") and named_as("kitchen cabinets", "cabinet") and named_as("couch", "sofa")
    assert not named_as("doorframe", "door")
    for name, rgb in COLORS.items():
        assert colour_name(np.asarray(rgb) + 3) == name
    assert colour_name((160, 100, 60)) == ""  # between orange and brown: no name rather than a guess


def _scene_arrays(seed: int = 0) -> dict:
    """The fake scan's arrays as the loader gives them (semantic from the class mapping)."""
    rng = np.random.default_rng(seed)
    xyz, rgb, ins = [], [], []
    for oid, (_, lo, hi, col) in _OBJECTS.items():
        xyz.append(np.asarray(lo) + rng.random((200, 3)) * (np.asarray(hi) - np.asarray(lo)) + (0, 0, _FLOOR_Z))
        rgb.append(np.tile(col, (200, 1)))
        ins.append(np.full(200, oid))
    ins = np.concatenate(ins)
    cls = {0: CLASS_ID["floor"], 1: CLASS_ID["chair"], 2: CLASS_ID["chair"], 3: CLASS_ID["table"],
           4: CLASS_ID["sofa"], 5: CLASS_ID["trash can"], 6: OTHER_CLASS}
    return dict(xyz=np.concatenate(xyz), rgb=np.concatenate(rgb).astype(np.uint8),
                semantic=np.asarray([cls[i] for i in ins]), instance=ins,
                object_names=[v[0] for v in _OBJECTS.values()])


def test_geometry_of_a_labelled_scan():
    a = _scene_arrays()
    g = real_scene_geometry("scene0090_00", **a)
    assert abs(g.floor_z - (_FLOOR_Z - 0.01)) < 0.011
    ids = g.scan_ids.tolist()
    assert 0 not in ids  # the floor is structure, never named
    names = {i: o.name for i, o in zip(ids, g.scene.objects)}
    assert names == {1: "chair", 2: "chair", 3: "table", 4: "sofa", 5: "trash can", 6: "trash can"}
    assert dict(zip(ids, g.targetable.tolist())) == {1: True, 2: True, 3: True, 4: True, 5: True, 6: False}
    table = g.scene.objects[ids.index(3)]
    np.testing.assert_allclose(table.box_max[2], 0.75 - (g.floor_z - _FLOOR_Z), atol=0.02)  # from the floor
    assert [g.scene.objects[ids.index(i)].color_name for i in (1, 4)] == ["red", "blue"]
    assert all(o.front is None for o in g.scene.objects)


def test_generated_sentences_are_true_and_never_name_a_proxy():
    a = _scene_arrays()
    g = real_scene_geometry("scene0090_00", **a)
    local = {int(s): k for k, s in enumerate(g.scan_ids)}
    exprs = generate_real_expressions(g, np.random.default_rng(3))
    assert exprs and {e.eval_type for e in exprs} >= {"st_w_d", "st_wo_d"}
    for e in exprs:
        named = set(e.target_ids) | {x for d in e.descriptors for x in d.anchors}
        assert 6 not in named and 0 not in named, e.text  # the storage bin and the floor
        assert "left" not in e.text and "front" not in e.text  # no fronts: no viewpoint claims
        if e.eval_type in ("st_w_d", "st_wo_d", "mt"):
            for d in e.descriptors:
                ld = type(d)(d.kind, tuple(local[x] for x in d.anchors), d.value, -1)
                assert (evaluate(g.scene.objects, ld, [local[t] for t in e.target_ids]) == TRUE).all(), e.text
        if e.eval_type == "st_w_d" and e.object_name == "trash can":
            assert 6 in e.distractor_ids  # the bin-like proxy was ruled out like any distractor
        if e.eval_type == "st_w_d":
            ruled_out = [any(evaluate(g.scene.objects, type(d)(d.kind, tuple(local[x] for x in d.anchors), d.value, -1),
                                      [local[o]])[0] == FALSE for d in e.descriptors) for o in e.distractor_ids]
            assert all(ruled_out), e.text


# ---------------------------------------------------------------- the training folder
def test_build_leave_out_repeat_and_load(tmp_path):
    real = _fake_real_dir(tmp_path / "real")
    out = tmp_path / "out"
    s1 = build_real_training(real, tmp_path / "once", leave_out=["scene0090_00"], repeat=1)
    s = build_real_training(real, out, leave_out=["scene0090_00"], repeat=2)
    assert sorted(p.stem for p in out.glob("*.npz")) == ["scene0090_00", "scene0091_00", "scene0092_00"]
    z = load_scene_npz(out / "scene0091_00.npz")
    assert (z["superpoint"] == -1).all() and z["semantic"][z["instance"] == 4][0] == CLASS_ID["sofa"]
    assert z["semantic"][z["instance"] == 6][0] == OTHER_CLASS
    assert s.train_scans == ["scene0091_00", "scene0092_00"] and s.val_scans == ["scene0090_00"]
    assert s.skipped == 1  # the lamp the scan lacks

    tr_res, tr_gres = _load(out / "train_scanrefer.json"), _load(out / "train_multi3drefer.json")
    va_res, va_gres = _load(out / "val_scanrefer.json"), _load(out / "val_multi3drefer.json")
    assert {e["scene_id"] for e in tr_res + tr_gres} == {"scene0091_00", "scene0092_00"}
    assert {e["scene_id"] for e in va_res + va_gres} == {"scene0090_00"}
    assert {e["source"] for e in va_gres} == {"sr3d"} and len(va_gres) == len(va_res) == 2
    assert {e["source"] for e in tr_gres} == {"sr3d", "nr3d", "scanrefer", "generated"}
    # repeat: every training entry twice, new ann ids, RES and GRES of one sentence share an id
    once = _load(tmp_path / "once" / "train_multi3drefer.json")
    assert len(tr_gres) == 2 * len(once) and len(tr_res) == 2 * len(_load(tmp_path / "once" / "train_scanrefer.json"))
    for split in (tr_gres, tr_res):
        keys = [(e["scene_id"], str(e["ann_id"])) for e in split]
        assert len(set(keys)) == len(keys)
    assert s.sentences["train"] == s1.sentences["train"]  # counted before the repeat
    # real sentences: single target, unique / multiple by the same-class rule
    for e in [e for e in tr_res if e["source"] != "generated"]:
        same = same_class_ids(int(e["object_id"]), z["instance"], z["semantic"], z["object_names"]) \
            if e["scene_id"] == "scene0091_00" else None
        if same is not None:
            assert e["eval_type"] == ("unique" if same.size == 1 else "multiple")
    chair = next(e for e in tr_gres if e["source"] == "sr3d")
    assert chair["object_ids"] == [1] and chair["eval_type"] == "st_w_d"
    couch = next(e for e in tr_res if e["source"] == "nr3d")
    assert couch["eval_type"] == "unique" and couch["object_id"] == "4"
    gen = [e for e in tr_gres if e["source"] == "generated"]
    assert {len(e["object_ids"]) for e in gen} >= {0, 1}  # GRES keeps zero-target sentences
    assert all(isinstance(e["object_id"], str) and "object_ids" not in e for e in tr_res)
    text = format_summary(s)
    assert "held-out scans (1): scene0090_00" in text and "generated" in text and "chair" in text

    # the folder trains and evaluates through the project's own loading
    from bqnet_model.model.config import load_config
    from bqnet_model.train import build_datasets

    from tiny_model import tiny_config

    for task in ("res", "gres"):
        cfg = tiny_config()
        cfg["inference"]["task"] = task
        train_ds, eval_ds = build_datasets(load_config(cfg), out, train=True)
        item = train_ds[0]
        assert item.inputs.n_superpoints > 5 and len(item.gt_point_masks) >= 1
        assert {a.scene_id for a in eval_ds.annotations} == {"scene0090_00"}


def test_merge_into_a_synthetic_folder(tmp_path):
    real = _fake_real_dir(tmp_path / "real")
    out = tmp_path / "out"
    build_real_training(real, out, leave_out=["scene0090_00"])
    synth = tmp_path / "synth"
    synth.mkdir()
    (synth / "synth_train_00000.npz").write_bytes((out / "scene0092_00.npz").read_bytes())
    entry = {"scene_id": "synth_train_00000", "object_id": "1", "object_name": "chair", "ann_id": "0",
             "description": "the chair.", "eval_type": "multiple"}
    gentry = dict({k: v for k, v in entry.items() if k != "object_id"}, object_ids=[1], ann_id=0, eval_type="st_w_d")
    (synth / "train_scanrefer.json").write_text(json.dumps([entry]))
    (synth / "train_multi3drefer.json").write_text(json.dumps([gentry]))
    (synth / "val_scanrefer.json").write_text(json.dumps([entry]))
    counts = merge_real_into(out, synth)
    assert (synth / "scene0091_00.npz").is_file() and (synth / "scene0090_00.npz").is_file()
    merged = _load(synth / "train_scanrefer.json")
    assert merged[0] == entry and len(merged) == 1 + len(_load(out / "train_scanrefer.json"))
    assert counts["train_multi3drefer.json"] == 1 + len(_load(out / "train_multi3drefer.json"))
    assert _load(synth / "val_scanrefer.json") == [entry]  # the synthetic held-out set is untouched
    assert _load(synth / "val_real_scanrefer.json") == _load(out / "val_scanrefer.json")
    assert {a.scene_id for a in load_annotations(synth / "val_real_multi3drefer.json")} == {"scene0090_00"}
    before = (synth / "train_scanrefer.json").read_text()
    with pytest.raises(ValueError, match="already in"):
        merge_real_into(out, synth)  # a second merge would duplicate the scans
    assert (synth / "train_scanrefer.json").read_text() == before
    ds = ReferDataset(synth, load_annotations(synth / "train_scanrefer.json", synth), "train", "res")
    assert len(ds) >= 3


def test_cli_checks_and_writes(tmp_path, capsys):
    tool = load_tool("make_real_training")
    real = _fake_real_dir(tmp_path / "real")
    with pytest.raises(SystemExit):
        tool.main(["--real-dir", str(real), "--out", str(ROOT / "build_real_tmp")])
    assert "must not enter the repository" in capsys.readouterr().err
    assert not (ROOT / "build_real_tmp").exists()
    assert tool.main(["--real-dir", str(real), "--out", str(tmp_path / "o"), "--leave-out", "scene0999_00"]) == 2
    assert "scene0999_00" in capsys.readouterr().err
    assert tool.main(["--real-dir", str(real), "--out", str(tmp_path / "o"), "--leave-out", "scene0091_00",
                      "--repeat", "3", "--no-generated"]) == 0
    text = capsys.readouterr().out
    assert "held-out scans (1): scene0091_00" in text and "x3" in text
    assert {e["source"] for e in _load(tmp_path / "o" / "train_multi3drefer.json")} == {"sr3d", "nr3d"}


@pytest.mark.skipif(not REAL.is_dir(), reason=f"real ScanNet data not present at {REAL} (a user's clone has no "
                                              "shared/); the fake-folder tests above cover the code")
def test_on_the_real_dev_folder(tmp_path):
    s = build_real_training(REAL, tmp_path, repeat=1)
    assert s.val_scans == ["scene0002_00", "scene0002_01", "scene0005_00"]
    assert set(s.train_scans).isdisjoint(s.val_scans) and len(s.train_scans) + len(s.val_scans) == 9
    tr = _load(tmp_path / "train_multi3drefer.json")
    va = _load(tmp_path / "val_multi3drefer.json")
    assert {e["scene_id"] for e in tr}.isdisjoint(s.val_scans) and {e["scene_id"] for e in va} <= set(s.val_scans)
    assert "generated" not in {e["source"] for e in va}
    assert s.sentences["train"]["generated"] > 50 and s.sentences["train"]["sr3d"] > 100
    # every real target is an object of its scan; the one scan's item loads with online superpoints
    z = load_scene_npz(tmp_path / "scene0002_00.npz")
    assert z["xyz"].shape == (50000, 3) and (z["superpoint"] == -1).all()
    anns = [a for a in load_annotations(tmp_path / "val_scanrefer.json", tmp_path) if a.scene_id == "scene0002_00"]
    assert all((z["instance"] == a.object_ids[0]).any() for a in anns)
    item = ReferDataset(tmp_path, anns[:4], "val", "res")[0]
    assert item.inputs.n_superpoints > 100 and item.gt_point_masks[0].any()
