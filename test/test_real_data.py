"""Real-data path: ReferIt3D CSV / ScanRefer / votenet loaders, ScanNet preprocessing on a real scan,
the chance baseline and the real-scan benchmark (``bqnet_model.eval_real``).

Every loader is tested on small files written here (a user's clone has no real data); the tests
marked ``needs_real`` also read the real files in ``../shared/real`` beside the checkout and skip,
saying so, when that folder is absent. Nothing of the real data is written into the repository.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from bqnet_model.data.dataset import ReferDataset
from bqnet_model.data.referit import Annotation, load_annotations, load_scanrefer, res_eval_type, same_class_ids
from bqnet_model.data.referit3d import detect_referit3d_source, load_referit3d
from bqnet_model.data.scannet import (
    OTHER_CLASS,
    ScanNetScene,
    axis_alignment_for,
    class_id_for,
    load_axis_alignments,
    load_label_map,
    load_objects_info,
    load_scene_npz,
    load_votenet_scene,
    preprocess_scannet,
    save_scene_npz,
)
from bqnet_model.data.classes import CLASS_ID, CLASSES
from bqnet_model.eval_real import (
    RealScene,
    check_real_dir,
    evaluate_real,
    format_asa_table,
    format_real_summary,
    load_real_sentences,
    main,
    sentence_record,
    summarize_real,
    superpoint_asa,
)
from bqnet_model.metrics import chance_res, summarize_res

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real ScanNet data not present at {REAL} "
                                "(internal-only; a user's clone has none)")
SR3D_HEADER = ("scan_id,target_id,distractor_ids,utterance,stimulus_id,coarse_reference_type,reference_type,"
               "instance_type,anchors_types,anchor_ids,target_label_scannet,sources")
NR3D_HEADER = ("scan_id,target_id,instance_type,utterance,stimulus_id,correct_guess,mentions_target_class,"
               "uses_object_lang,uses_spatial_lang,uses_color_lang,uses_shape_lang,target_label_scannet,sources")


# ---------------------------------------------------------------- small hand-made files
def _tiny_votenet(root: Path, scan: str = "scene0099_00") -> dict:
    """A 4-object votenet-format scan: three chairs (ids 0, 1, 3), one couch (id 2), unlabelled floor.

    Objects are 0.5 m cubes of 300 points each, apart, so any sensible segmentation separates them."""
    rng = np.random.default_rng(0)
    centres = {0: (0, 0, 0.25), 1: (1.5, 0, 0.25), 2: (0, 1.5, 0.25), 3: (1.5, 1.5, 0.25)}
    xyz, ins = [], []
    for oid, c in centres.items():
        xyz.append(rng.random((300, 3)) * 0.5 - 0.25 + np.asarray(c))
        ins.append(np.full(300, oid + 1))
    xyz.append(np.c_[rng.random((400, 2)) * 2.5 - 0.5, np.zeros(400)])
    ins.append(np.zeros(400))
    xyz = np.concatenate(xyz).astype(np.float32)
    ins = np.concatenate(ins).astype(np.uint32)
    rgb = rng.integers(0, 256, (len(xyz), 3)).astype(np.float32)
    vote = root / "scannet_votenet50k"
    info_dir = root / "scannet_meta" / "objects_info"
    vote.mkdir(parents=True)
    info_dir.mkdir(parents=True)
    np.save(vote / f"{scan}_vert.npy", np.c_[xyz, rgb].astype(np.float32))
    np.save(vote / f"{scan}_ins_label.npy", ins)
    np.save(vote / f"{scan}_sem_label.npy", np.where(ins > 0, 5, 2).astype(np.uint32))
    labels = {0: "chair", 1: "office chair", 2: "couch", 3: "chair"}
    objs = np.empty(4, dtype=object)
    for i in range(4):
        objs[i] = {"id": i, "label": labels[i], "center_position": list(centres[i]), "size": [0.5] * 3}
    np.save(info_dir / f"objects_info_{scan}.npy", objs, allow_pickle=True)
    (root / "scannet_meta" / "scannetv2-labels.combined.tsv").write_text(
        "id\traw_category\tcategory\tcount\tnyu40id\teigen13id\tnyuClass\tnyu40class\n"
        "1\tcouch\tcouch\t10\t6\t9\tsofa\tsofa\n2\toffice chair\tchair\t5\t5\t4\tchair\tchair\n")
    return {"scan": scan, "xyz": xyz, "ins": ins, "rgb": rgb, "root": root}


def _write_sentences(root: Path, scan: str) -> None:
    d = root / "sentences"
    d.mkdir(parents=True, exist_ok=True)
    (d / "sr3d_dev.csv").write_text(SR3D_HEADER + "\n"
                                    f'{scan},0,"[1, 3]","the chair closest to the couch",{scan}-chair-3-0-1-3,'
                                    "horizontal,closest,chair,['couch'],[2],chair,x\n"
                                    f'{scan},3,"[0, 1]","the chair farthest from the couch",s,horizontal,farthest,'
                                    "chair,['couch'],[2],chair,x\n")
    (d / "nr3d_dev.csv").write_text(NR3D_HEADER + "\n" f"{scan},2,couch,\"the couch, near the chairs\",s,True,True,"
                                    "True,True,False,False,couch,x\n")
    (d / "scanrefer_dev.json").write_text(json.dumps([
        {"scene_id": scan, "object_id": "1", "object_name": "office_chair", "ann_id": "0",
         "description": "an office chair."}]))


def test_referit3d_csv_loader(tmp_path):
    _write_sentences(tmp_path, "scene0099_00")
    sr = load_referit3d(tmp_path / "sentences" / "sr3d_dev.csv")
    assert [(a.object_ids, a.object_name, a.ann_id) for a in sr] == [([0], "chair", "0"), ([3], "chair", "1")]
    assert sr[0].extra["source"] == "sr3d" and sr[0].extra["anchor_ids"] == [2]
    assert sr[0].extra["distractor_ids"] == [1, 3] and sr[0].extra["anchors_types"] == ["couch"]
    assert sr[0].description == "the chair closest to the couch" and sr[0].eval_type is None
    nr = load_annotations(tmp_path / "sentences" / "nr3d_dev.csv")  # .csv goes to the ReferIt3D loader
    assert nr[0].extra["source"] == "nr3d" and nr[0].extra["mentions_target_class"] is True
    assert nr[0].extra["uses_color_lang"] is False and nr[0].description == "the couch, near the chairs"
    assert "anchor_ids" not in nr[0].extra
    assert detect_referit3d_source(["scan_id", "target_id"]) is None
    assert load_referit3d(tmp_path / "sentences" / "nr3d_dev.csv", source="sr3d")[0].extra["source"] == "sr3d"

    bad = tmp_path / "bad.csv"
    bad.write_text("scan_id,target_id,utterance\nscene0099_00,1,the chair\n")
    with pytest.raises(ValueError, match="lacks columns"):
        load_referit3d(bad)
    bad.write_text("scan_id,target_id,instance_type,utterance\nscene0099_00,1,chair,the chair\n")
    with pytest.raises(ValueError, match="cannot tell Sr3D from Nr3D"):
        load_referit3d(bad)
    bad.write_text(SR3D_HEADER + "\nscene0099_00,one,[],the chair,s,h,closest,chair,[],[2],chair,x\n")
    with pytest.raises(ValueError, match="line 2 has a non-integer target_id"):
        load_referit3d(bad)
    bad.write_text(SR3D_HEADER + "\nscene0099_00,1,[],the chair,s,h,closest,chair,[],[two],chair,x\n")
    with pytest.raises(ValueError, match="anchor_ids"):
        load_referit3d(bad)
    bad.write_text(NR3D_HEADER + "\nscene0099_00,1,chair,  ,s,True,True,True,True,False,False,chair,x\n")
    with pytest.raises(ValueError, match="empty utterance"):
        load_referit3d(bad)
    bad.write_text(NR3D_HEADER + "\nscene0099_00,1,chair,a,s,maybe,True,True,True,False,False,chair,x\n")
    with pytest.raises(ValueError, match="correct_guess"):
        load_referit3d(bad)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_referit3d(tmp_path / "none.csv")


def test_votenet_loader_and_dataset(tmp_path):
    t = _tiny_votenet(tmp_path)
    lm = load_label_map(tmp_path / "scannet_meta" / "scannetv2-labels.combined.tsv")
    info = tmp_path / "scannet_meta" / "objects_info" / f"objects_info_{t['scan']}.npy"
    sc = load_votenet_scene(tmp_path / "scannet_votenet50k", t["scan"], info, lm)
    np.testing.assert_array_equal(sc.instance, t["ins"].astype(np.int64) - 1)  # uint32 0 -> -1, not 2**32 - 1
    np.testing.assert_allclose(sc.xyz, t["xyz"])
    assert sc.rgb.dtype == np.uint8 and sc.object_names.tolist() == ["chair", "office chair", "couch", "chair"]
    chair, sofa = CLASS_ID["chair"], CLASS_ID["sofa"]
    assert set(sc.semantic[sc.instance == 2].tolist()) == {sofa}  # "couch" only through the NYU40 table
    assert set(sc.semantic[sc.instance == 1].tolist()) == {chair} and (sc.semantic[sc.instance < 0] == -1).all()
    assert (sc.superpoint == -1).all()
    assert load_votenet_scene(tmp_path / "scannet_votenet50k", t["scan"], info).semantic[
        np.flatnonzero(sc.instance == 2)[0]] == OTHER_CLASS
    # the scene file trains and evaluates: ReferDataset computes the online superpoints
    save_scene_npz(tmp_path / f"{t['scan']}.npz", sc)
    _write_sentences(tmp_path, t["scan"])
    anns = load_referit3d(tmp_path / "sentences" / "sr3d_dev.csv")
    ds = ReferDataset(tmp_path, anns, split="val")
    s = ds[0]
    assert [a.eval_type for a in ds.annotations] == ["multiple", "multiple"]
    np.testing.assert_array_equal(s.gt_point_masks[0], sc.instance == 0)
    assert s.inputs.n_superpoints > 4
    with pytest.raises(FileNotFoundError, match="lacks"):
        load_votenet_scene(tmp_path / "scannet_votenet50k", "scene0000_99", info)
    objs = np.empty(1, dtype=object)
    objs[0] = {"id": 0, "label": "chair"}
    np.save(tmp_path / "few.npy", objs, allow_pickle=True)
    assert load_objects_info(tmp_path / "few.npy") == [{"id": 0, "label": "chair"}]
    with pytest.raises(ValueError, match="not in"):
        load_votenet_scene(tmp_path / "scannet_votenet50k", t["scan"], tmp_path / "few.npy")


def test_axis_alignment_sources_and_label_map(tmp_path):
    m = np.array([[0, -1, 0, 1], [1, 0, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]], np.float64)
    (tmp_path / "mats.json").write_text(json.dumps({"scene0001_00": m.reshape(-1).tolist()}))
    mats = load_axis_alignments(tmp_path / "mats.json")
    np.testing.assert_array_equal(axis_alignment_for(tmp_path, "scene0001_00", mats), m)
    assert axis_alignment_for(tmp_path, "scene0002_00", mats) is None
    np.savez(tmp_path / "scene0002_00_vh_clean_2.v2_vertex_labels.npz", axis_align_matrix=np.diag([2, 2, 2, 1.0]))
    np.testing.assert_array_equal(axis_alignment_for(tmp_path, "scene0002_00"), np.diag([2, 2, 2, 1.0]))
    (tmp_path / "bad.json").write_text(json.dumps({"s": [1, 2, 3]}))
    with pytest.raises(ValueError, match="16"):
        load_axis_alignments(tmp_path / "bad.json")
    (tmp_path / "t.tsv").write_text("id\traw_category\tnyu40class\n1\tCouch\tsofa\n2\ttv\ttelevision\n")
    lm = load_label_map(tmp_path / "t.tsv")
    assert lm == {"couch": "sofa", "tv": "television"}
    assert class_id_for("couch", lm) == CLASS_ID["sofa"] and class_id_for("couch") == OTHER_CLASS
    assert class_id_for("tv", lm) == OTHER_CLASS and class_id_for("trash can", {"trash can": "otherprop"}) == CLASS_ID["trash can"]
    (tmp_path / "u.tsv").write_text("id\tname\n")
    with pytest.raises(ValueError, match="raw_category"):
        load_label_map(tmp_path / "u.tsv")


# ---------------------------------------------------------------- chance baseline, records, summary
def _hand_scene() -> ScanNetScene:
    """Three chairs (0, 1, 3), a table (2), two unrelated 'other' objects (4 'piano', 5 'guitar')."""
    inst = np.repeat([0, 1, 2, 3, 4, 5, -1], 10)
    cls = {0: CLASS_ID["chair"], 1: CLASS_ID["chair"], 2: CLASS_ID["table"], 3: CLASS_ID["chair"],
           4: OTHER_CLASS, 5: OTHER_CLASS, -1: -1}
    sem = np.asarray([cls[i] for i in inst])
    names = np.array(["chair", "armchair", "table", "chair", "piano", "guitar"])
    n = inst.size
    return ScanNetScene("hand", np.zeros((n, 3), np.float32), np.zeros((n, 3), np.uint8), np.arange(n), sem, inst, names)


def test_chance_baseline_on_a_hand_made_scene():
    sc = _hand_scene()
    assert same_class_ids(3, sc.instance, sc.semantic, sc.object_names, len(CLASSES)).tolist() == [0, 1, 3]
    assert same_class_ids(4, sc.instance, sc.semantic, sc.object_names, len(CLASSES)).tolist() == [4]
    assert res_eval_type(2, sc.instance, sc.semantic, sc.object_names, len(CLASSES)) == "unique"
    third = chance_res(sc.instance, 3, [0, 1, 3])
    assert third == pytest.approx({"mIoU": 1 / 3, "Acc@0.25": 1 / 3, "Acc@0.5": 1 / 3})
    assert chance_res(sc.instance, 2, [2]) == {"mIoU": 1.0, "Acc@0.25": 1.0, "Acc@0.5": 1.0}
    assert chance_res(sc.instance, 2, [0, 1]) == {"mIoU": 0.0, "Acc@0.25": 0.0, "Acc@0.5": 0.0}
    with pytest.raises(ValueError, match="no points"):
        chance_res(sc.instance, 9, [9])
    with pytest.raises(ValueError, match="no candidate"):
        chance_res(sc.instance, 1, [])


def test_records_and_summary_on_synthetic_predictions():
    sc = _hand_scene()
    rows = np.arange(sc.instance.size)
    anns = [Annotation("hand", [3], "chair", "0", "the chair", extra={"source": "sr3d"}),  # exact
            Annotation("hand", [0], "chair", "1", "a chair", extra={"source": "sr3d"}),  # 5 of 10 points + none else
            Annotation("hand", [2], "table", "0", "the table", extra={"source": "scanrefer"}),  # wrong object
            Annotation("hand", [4], "piano", "2", "the piano", extra={"source": "nr3d"})]  # nothing answered
    preds = [rows[sc.instance == 3], rows[sc.instance == 0][:5], rows[sc.instance == 1], np.zeros(0, np.int64)]
    recs = [sentence_record(sc, a, p, points="test") for a, p in zip(anns, preds)]
    assert [r["iou"] for r in recs] == [1.0, 0.5, 0.0, 0.0]
    assert [r["eval_type"] for r in recs] == ["multiple", "multiple", "unique", "unique"]
    assert [r["n_same_class"] for r in recs] == [3, 3, 1, 1]
    assert recs[0]["chance"]["Acc@0.5"] == pytest.approx(1 / 3) and recs[2]["chance"]["mIoU"] == 1.0
    assert recs[1]["source"] == "sr3d" and recs[1]["points"] == "test" and recs[1]["n_pred"] == 5
    s = summarize_real(recs)
    assert list(s) == ["overall", "unique", "multiple", "nr3d", "nr3d/unique", "scanrefer", "scanrefer/unique",
                       "sr3d", "sr3d/multiple"]
    ref = summarize_res(recs)  # the same figures as the project's RES summary
    for k in ("mIoU", "Acc@0.25", "Acc@0.5"):
        assert s["overall"]["model"][k] == pytest.approx(ref[k])
        assert s["multiple"]["model"][k] == pytest.approx(ref["multiple"][k])
    assert s["overall"]["model"]["Acc@0.25"] == 0.5 and s["overall"]["model"]["Acc@0.5"] == 0.25  # IoU 0.5 is not > 0.5
    assert s["overall"]["chance"]["Acc@0.5"] == pytest.approx((1 / 3 + 1 / 3 + 1 + 1) / 4)
    assert s["sr3d"]["count"] == 2 and s["sr3d"]["chance"]["mIoU"] == pytest.approx(1 / 3)
    table = format_real_summary(s)
    assert "sr3d/multiple" in table and "(100.0)" in table and " 33.3)" in table
    with pytest.raises(ValueError, match="no records"):
        summarize_real([])


def test_superpoint_asa_rows():
    sc = _hand_scene()
    sc.xyz[:] = np.repeat(np.arange(7)[:, None] * np.array([[1.0, 0, 0]]), 10, axis=0)[:, :3]
    sc.xyz += np.random.default_rng(0).random(sc.xyz.shape).astype(np.float32) * 0.05
    rows = superpoint_asa(RealScene(sc, "test", np.repeat(np.arange(7), 10)))
    by = {r["method"]: r for r in rows}
    assert set(by) == {"ours", "scannet mesh", "grid 0.25 m"}
    assert by["scannet mesh"]["asa"] == 1.0 and by["scannet mesh"]["segments"] == 7
    assert by["grid 0.25 m"]["asa"] == 1.0 and by["grid 0.25 m"]["n_labelled"] == 60
    assert "grid 0.25 m" in format_asa_table(rows)


# ---------------------------------------------------------------- the benchmark end to end (tiny folder)
class _Oracle:
    """Stands in for ``Segmenter``: answers each sentence with its own ground truth (or nothing),
    so the benchmark's plumbing, not a model, is what is checked."""

    def __init__(self, instance_of: dict[str, int]) -> None:
        self.instance_of = instance_of
        self.prepared = []

    class _Cache:
        def __init__(self, inst: np.ndarray) -> None:
            self.inst = inst

    def prepare(self, xyz, rgb, superpoints=None):
        self.prepared.append((len(xyz), superpoints is not None))
        return self._Cache(self._inst)

    def query(self, cache, texts, task="res"):
        assert task == "res"
        out = []
        for t in texts:
            oid = self.instance_of.get(t, -2)
            out.append(type("R", (), {"point_indices": np.flatnonzero(cache.inst == oid)})())
        return out


def test_evaluate_real_on_a_tiny_folder(tmp_path, capsys):
    t = _tiny_votenet(tmp_path)
    _write_sentences(tmp_path, t["scan"])
    layout = check_real_dir(tmp_path)
    assert layout.scans == [t["scan"]] and layout.fullres == {}
    anns = load_real_sentences(layout)
    assert sorted(a.extra["source"] for a in anns) == ["nr3d", "scanrefer", "sr3d", "sr3d"]
    seg = _Oracle({"the chair closest to the couch": 0, "the couch, near the chairs": 2})
    seg._inst = t["ins"].astype(np.int64) - 1
    out = evaluate_real(seg, layout, progress=False, chunk=2, oracle=False)  # the stand-in has no query masks
    assert seg.prepared == [(len(t["xyz"]), False)]
    recs = {(r["source"], r["ann_id"]): r for r in out["records"]}
    assert recs[("sr3d", "0")]["iou"] == 1.0 and recs[("sr3d", "1")]["iou"] == 0.0
    assert recs[("nr3d", "0")]["eval_type"] == "unique" and recs[("scanrefer", "0")]["eval_type"] == "multiple"
    assert out["summary"]["overall"]["count"] == 4 and out["summary"]["overall"]["model"]["Acc@0.5"] == 0.5
    assert {r["method"] for r in out["asa"]} == {"ours", "grid 0.25 m"}
    assert evaluate_real(seg, layout, progress=False, limit=1, asa=False, oracle=False)["summary"]["overall"]["count"] == 1
    with pytest.raises(ValueError, match="not in"):
        evaluate_real(seg, layout, ["scene0555_00"], progress=False, oracle=False)
    # the command: a clear error for a missing or malformed folder
    assert main(["--checkpoint", "x.pth", "--real-dir", str(tmp_path / "nothing")]) == 2
    assert "real-data folder not found" in capsys.readouterr().err
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "sentences").mkdir()
    assert main(["--checkpoint", "x.pth", "--real-dir", str(tmp_path / "half")]) == 2
    assert "lacks" in capsys.readouterr().err
    assert main(["--checkpoint", str(tmp_path / "no.pth"), "--real-dir", str(tmp_path)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    # --asa-only: the superpoint table without a model, with its per-scan time and sizes
    assert main(["--asa-only", "--real-dir", str(tmp_path), "--json", str(tmp_path / "asa.json")]) == 0
    printed = capsys.readouterr().out
    assert "pts/seg" in printed and t["scan"] in printed
    rows = json.loads((tmp_path / "asa.json").read_text())["asa"]
    assert {r["method"] for r in rows} == {"ours", "grid 0.25 m"}
    assert [r["ms"] is not None for r in rows] == [r["method"] == "ours" for r in rows]
    with pytest.raises(SystemExit):
        main(["--real-dir", str(tmp_path)])  # neither a checkpoint nor --asa-only


# ---------------------------------------------------------------- the real files (skip without them)
@needs_real
def test_real_sentence_files_load():
    sr = load_referit3d(REAL / "sentences" / "sr3d_dev.csv")
    nr = load_referit3d(REAL / "sentences" / "nr3d_dev.csv")
    sc = load_scanrefer(REAL / "sentences" / "scanrefer_dev.json")
    assert len(sr) > 100 and len(nr) > 5 and len(sc) > 5
    assert {a.extra["source"] for a in sr} == {"sr3d"} and {a.extra["source"] for a in nr} == {"nr3d"}
    assert all(a.extra["anchor_ids"] and all(isinstance(i, int) for i in a.extra["anchor_ids"]) for a in sr)
    assert all(isinstance(a.extra["mentions_target_class"], bool) for a in nr)
    # every target is an object of its scan's votenet labels, with the label the sentence names
    for a in sr[::25] + nr + sc:
        ins = np.load(REAL / "scannet_votenet50k" / f"{a.scene_id}_ins_label.npy").astype(np.int64) - 1
        info = load_objects_info(REAL / "scannet_meta" / "objects_info" / f"objects_info_{a.scene_id}.npy")
        assert (ins == a.object_ids[0]).any(), (a.scene_id, a.object_ids)
        label = {o["id"]: o["label"] for o in info}[a.object_ids[0]]
        assert label == a.object_name.replace("_", " ")


@needs_real
def test_real_votenet_scan_lines_up_with_sentences():
    layout = check_real_dir(REAL)
    assert "scene0000_00" in layout.fullres and len(layout.scans) >= 6
    info = REAL / "scannet_meta" / "objects_info" / "objects_info_scene0002_00.npy"
    sc = load_votenet_scene(REAL / "scannet_votenet50k", "scene0002_00", info, layout.label_map)
    assert sc.xyz.shape == (50000, 3) and sc.instance.min() == -1
    objs = load_objects_info(info)
    for o in objs[:10]:  # the objects_info boxes are in the points' frame: centres agree
        m = sc.instance == o["id"]
        if m.sum() > 50:
            mid = (sc.xyz[m].min(0) + sc.xyz[m].max(0)) / 2
            assert np.abs(mid - np.asarray(o["center_position"])).max() < 0.1
    for a in load_real_sentences(layout):
        if a.scene_id == "scene0002_00":
            assert sc.object_names[a.object_ids[0]] == a.object_name.replace("_", " ")


@needs_real
def test_real_scene0000_00_preprocess_and_dataset(tmp_path):
    t0 = time.perf_counter()
    src = REAL / "scannet_scene0000_00_fullres"
    paths = preprocess_scannet(src, tmp_path, superpoints="scannet", align=True, progress=False,
                               axis_alignments=REAL / "scannet_meta" / "axis_alignment_matrices.json",
                               label_map=REAL / "scannet_meta" / "scannetv2-labels.combined.tsv")
    assert paths == [tmp_path / "scene0000_00.npz"]
    z = load_scene_npz(paths[0])
    assert z["xyz"].shape == (81369, 3) and z["superpoint"].max() + 1 == 668
    with np.load(src / "scene0000_00_vh_clean_2.v2_vertex_labels.npz") as v:
        np.testing.assert_array_equal(z["instance"], v["object_id"])
    info = load_objects_info(REAL / "scannet_meta" / "objects_info" / "objects_info_scene0000_00.npy")
    for o in info:  # aligned: object boxes match the published axis-aligned ones within 1 cm
        m = z["instance"] == o["id"]
        mid = (z["xyz"][m].min(0) + z["xyz"][m].max(0)) / 2
        assert np.abs(mid - np.asarray(o["center_position"])).max() < 0.01, o["id"]
        assert z["object_names"][o["id"]] == o["label"]
    couch = int(np.flatnonzero(z["object_names"] == "couch")[0])  # a class only the NYU40 table names
    assert (z["semantic"][z["instance"] == couch] == CLASS_ID["sofa"]).all()
    anns = [a for a in load_referit3d(REAL / "sentences" / "nr3d_dev.csv") if a.scene_id == "scene0000_00"]
    ds = ReferDataset(tmp_path, anns, split="val", lang_per_scene=4)
    s = ds[0]
    assert s.inputs.n_points == 81369 and s.inputs.n_superpoints == 668
    np.testing.assert_array_equal(s.gt_point_masks[0], z["instance"] == anns[0].object_ids[0])
    assert all(a.eval_type in ("unique", "multiple") for a in ds.annotations)
    assert time.perf_counter() - t0 < 20


def test_evaluate_real_through_a_random_weight_segmenter(tmp_path, one_torch_thread):
    """The product's own ``Segmenter`` (config/tiny.yaml, random weights) in the benchmark: every
    sentence answered and scored, answers indexing the scan's points."""
    from bqnet_model.pipeline import Segmenter

    t = _tiny_votenet(tmp_path)
    _write_sentences(tmp_path, t["scan"])
    seg = Segmenter.from_config(Path(__file__).resolve().parents[1] / "config" / "tiny.yaml", device="cpu", seed=0)
    out = evaluate_real(seg, check_real_dir(tmp_path), progress=False, asa=False)
    assert len(out["records"]) == 4 and out["skipped"] == []
    assert all(0.0 <= r["iou"] <= 1.0 and 0 <= r["n_pred"] <= len(t["xyz"]) for r in out["records"])
    assert out["scan_points"] == {t["scan"]: f"votenet50k ({len(t['xyz'])} points)"}
