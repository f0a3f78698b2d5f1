"""Loaders: ScanNet scan folders -> npz, ScanRefer / Multi3DRefer JSON, dataset, augmentation."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bqnet_model.data.augment import AugmentConfig, augment_xyz, elastic_distortion, random_crop
from bqnet_model.data.dataset import ReferDataset, collate_fn
from bqnet_model.data.referit import (
    Annotation,
    load_annotations,
    load_multi3drefer,
    load_scanrefer,
    res_eval_type,
    save_annotations,
)
from bqnet_model.data.scannet import (
    OTHER_CLASS,
    class_id_for,
    load_scannet_scene,
    load_scene_npz,
    preprocess_scannet,
    save_scene_npz,
    ScanNetScene,
)
from bqnet_model.data.classes import CLASS_ID
from bqnet_synth import minimal_room
from bqnet_model.ply import write_ply
from conftest import save_grid_room

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- tiny ScanNet scan in the real formats
def _write_mesh_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray, faces: np.ndarray) -> None:
    """ScanNet's *_vh_clean_2.ply layout: binary vertices (x y z red green blue alpha), then faces."""
    write_ply(path, xyz, rgb, alpha=np.full(len(xyz), 255, np.uint8))
    raw = path.read_bytes()
    head, body = raw.split(b"end_header\n", 1)
    head += f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n".encode()
    face_bytes = b"".join(struct.pack("<B3i", 3, *map(int, f)) for f in faces)
    path.write_bytes(head + body + face_bytes)


def _make_scan(root: Path, sid: str = "scene0007_00") -> dict:
    rng = np.random.default_rng(0)
    n = 120
    xyz = rng.random((n, 3)).astype(np.float32) * 2
    rgb = rng.integers(0, 256, (n, 3)).astype(np.uint8)
    # segments with sparse ids: 6 segments of 20 vertices
    seg_ids = np.array([5, 17, 100, 3, 42, 9])
    seg = np.repeat(seg_ids, 20)
    faces = np.stack([np.arange(0, n - 2), np.arange(1, n - 1), np.arange(2, n)], 1)[::3]
    d = root / sid
    d.mkdir(parents=True)
    _write_mesh_ply(d / f"{sid}_vh_clean_2.ply", xyz, rgb, faces)
    (d / f"{sid}_vh_clean_2.0.010000.segs.json").write_text(
        json.dumps({"params": {"kThresh": "0.0001"}, "sceneId": sid, "segIndices": seg.tolist()}))
    groups = [
        {"id": 0, "objectId": 0, "segments": [5, 17], "label": "chair"},
        {"id": 1, "objectId": 1, "segments": [100], "label": "office chair"},
        {"id": 2, "objectId": 3, "segments": [3], "label": "whiteboard"},
    ]  # segments 42 and 9 unlabelled, objectId 2 absent
    (d / f"{sid}.aggregation.json").write_text(json.dumps({"sceneId": sid, "segGroups": groups}))
    (d / f"{sid}.txt").write_text("axisAlignment = 0 -1 0 1  1 0 0 2  0 0 1 3  0 0 0 1\nsceneType = Office\n")
    return {"xyz": xyz, "rgb": rgb, "seg": seg, "dir": d, "sid": sid}


def test_class_mapping():
    assert class_id_for("chair") == CLASS_ID["chair"]
    assert class_id_for("Office Chair") == CLASS_ID["chair"]
    assert class_id_for("kitchen cabinets") == CLASS_ID["cabinet"]
    assert class_id_for("trash can") == CLASS_ID["trash can"]
    assert class_id_for("whiteboard") == OTHER_CLASS


def test_scannet_scan_to_npz(tmp_path):
    s = _make_scan(tmp_path / "scans")
    sc = load_scannet_scene(s["dir"])
    np.testing.assert_allclose(sc.xyz, s["xyz"])
    np.testing.assert_array_equal(sc.rgb, s["rgb"])
    # superpoints: segIndices made dense in sorted order of the ids
    exp_sp = np.searchsorted(np.unique(s["seg"]), s["seg"])
    np.testing.assert_array_equal(sc.superpoint, exp_sp)
    assert sc.superpoint.max() == 5
    inst = np.repeat([0, 0, 1, 3, -1, -1], 20)
    np.testing.assert_array_equal(sc.instance, inst)
    sem = np.repeat([CLASS_ID["chair"]] * 3 + [OTHER_CLASS, -1, -1], 20)
    np.testing.assert_array_equal(sc.semantic, sem)
    assert sc.object_names.tolist() == ["chair", "office chair", "", "whiteboard"]
    # unique / multiple from these labels: two chairs -> multiple; the whiteboard is alone
    assert res_eval_type(0, sc.instance, sc.semantic, sc.object_names, OTHER_CLASS) == "multiple"
    assert res_eval_type(1, sc.instance, sc.semantic, sc.object_names, OTHER_CLASS) == "multiple"
    assert res_eval_type(3, sc.instance, sc.semantic, sc.object_names, OTHER_CLASS) == "unique"
    with pytest.raises(ValueError, match="no points"):
        res_eval_type(2, sc.instance, sc.semantic, sc.object_names)
    # axis alignment
    al = load_scannet_scene(s["dir"], align=True)
    np.testing.assert_allclose(al.xyz[:, 0], -s["xyz"][:, 1] + 1, atol=1e-6)
    np.testing.assert_allclose(al.xyz[:, 2], s["xyz"][:, 2] + 3, atol=1e-6)
    # npz round trip through the architecture's keys
    save_scene_npz(tmp_path / "x.npz", sc)
    z = load_scene_npz(tmp_path / "x.npz")
    assert set(z) == {"xyz", "rgb", "superpoint", "semantic", "instance", "object_names"}
    assert z["xyz"].dtype == np.float32 and z["rgb"].dtype == np.uint8 and z["instance"].dtype == np.int64
    np.testing.assert_array_equal(z["instance"], inst)


def test_preprocess_tool(tmp_path):
    s = _make_scan(tmp_path / "scans")
    out = tmp_path / "npz"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "preprocess_scannet.py"), "--scans",
                        str(tmp_path / "scans"), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    z = load_scene_npz(out / f"{s['sid']}.npz")
    assert z["superpoint"].max() == 5 and len(z["xyz"]) == 120
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "preprocess_scannet.py"), "--scans",
                        str(tmp_path / "nothing"), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "not found" in r.stderr


def test_preprocess_one_scan_folder_with_alignment_json_and_label_map(tmp_path):
    """A scan folder given itself (any name), its matrix from a JSON, labels through a NYU40 table."""
    s = _make_scan(tmp_path / "scans")
    folder = s["dir"].rename(tmp_path / "copied_scan")
    (folder / f"{s['sid']}.txt").unlink()  # no ScanNet .txt: the matrix must come from the JSON
    m = [0, -1, 0, 1, 1, 0, 0, 2, 0, 0, 1, 3, 0, 0, 0, 1]
    (tmp_path / "mats.json").write_text(json.dumps({s["sid"]: m}))
    (tmp_path / "labels.tsv").write_text("id\traw_category\tnyu40class\n1\twhiteboard\tdesk\n")
    out = tmp_path / "npz"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "preprocess_scannet.py"), "--scans", str(folder),
                        "--out", str(out), "--align", "--axis-alignment", str(tmp_path / "mats.json"),
                        "--label-map", str(tmp_path / "labels.tsv")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    z = load_scene_npz(out / f"{s['sid']}.npz")
    np.testing.assert_allclose(z["xyz"][:, 0], -s["xyz"][:, 1] + 1, atol=1e-6)
    assert set(z["semantic"][z["instance"] == 3].tolist()) == {CLASS_ID["desk"]}  # whiteboard -> NYU40 'desk' here
    with pytest.raises(FileNotFoundError, match="no axisAlignment"):
        preprocess_scannet(folder, tmp_path / "npz2", align=True, progress=False)
    with pytest.raises(FileNotFoundError, match="not found under"):
        preprocess_scannet(folder, tmp_path / "npz2", ["scene0123_00"], progress=False)


def test_scannet_with_our_superpoints(tmp_path):
    s = _make_scan(tmp_path / "scans")
    ours = load_scannet_scene(s["dir"], superpoints="ours")
    assert ours.superpoint.shape == (120,) and ours.superpoint.min() == 0
    assert len(np.unique(ours.superpoint)) == ours.superpoint.max() + 1
    np.testing.assert_array_equal(ours.instance, load_scannet_scene(s["dir"]).instance)


def test_scannet_bad_inputs(tmp_path):
    s = _make_scan(tmp_path / "scans")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_scannet_scene(tmp_path / "nope")
    with pytest.raises(ValueError, match="superpoints"):
        load_scannet_scene(s["dir"], superpoints="mesh")
    segs = s["dir"] / f"{s['sid']}_vh_clean_2.0.010000.segs.json"
    segs.write_text(json.dumps({"segIndices": [0, 1, 2]}))
    with pytest.raises(ValueError, match="segIndices"):
        load_scannet_scene(s["dir"])
    segs.unlink()
    with pytest.raises(FileNotFoundError, match="segs.json"):
        load_scannet_scene(s["dir"])
    with pytest.raises(FileNotFoundError, match="no ScanNet|not found"):
        preprocess_scannet(tmp_path / "missing", tmp_path / "out")
    np.savez(tmp_path / "bad.npz", xyz=np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="lacks"):
        load_scene_npz(tmp_path / "bad.npz")


# ---------------------------------------------------------------- ScanRefer / Multi3DRefer JSON
def test_referit_loaders(tmp_path):
    sr = [{"scene_id": "scene0007_00", "object_id": "1", "object_name": "office_chair", "ann_id": "0",
           "description": "the chair by the window.", "token": ["the", "chair"]},
          {"scene_id": "scene0007_00", "object_id": "3", "object_name": "whiteboard", "ann_id": "1",
           "description": "the white board on the wall."}]
    (tmp_path / "sr.json").write_text(json.dumps(sr))
    anns = load_scanrefer(tmp_path / "sr.json")
    assert anns[0] == Annotation("scene0007_00", [1], "office_chair", "0", "the chair by the window.", None,
                                 {"token": ["the", "chair"]})
    # eval_type from the scene labels
    sc = load_scannet_scene(_make_scan(tmp_path / "scans")["dir"])
    save_scene_npz(tmp_path / "scene0007_00.npz", sc)
    anns = load_scanrefer(tmp_path / "sr.json", scene_dir=tmp_path)
    assert [a.eval_type for a in anns] == ["multiple", "unique"]
    assert load_annotations(tmp_path / "sr.json", tmp_path)[1].eval_type == "unique"

    m3 = [{"scene_id": "scene0007_00", "object_ids": [0, 1], "object_name": "chair", "ann_id": 4,
           "description": "the two chairs", "eval_type": "mt"},
          {"scene_id": "scene0007_00", "object_ids": [], "object_name": "sofa", "ann_id": 5,
           "description": "the sofa", "eval_type": "zt_wo_d"}]
    (tmp_path / "m3.json").write_text(json.dumps(m3))
    g = load_annotations(tmp_path / "m3.json")
    assert g[0].object_ids == [0, 1] and g[0].ann_id == "4" and g[1].object_ids == [] and g[1].eval_type == "zt_wo_d"
    save_annotations(tmp_path / "m3b.json", g, fmt="multi3drefer")
    assert load_multi3drefer(tmp_path / "m3b.json") == g
    save_annotations(tmp_path / "srb.json", anns)
    assert load_scanrefer(tmp_path / "srb.json") == anns

    (tmp_path / "bad1.json").write_text(json.dumps([{"scene_id": "s", "object_id": "1"}]))
    with pytest.raises(ValueError, match="lacks"):
        load_scanrefer(tmp_path / "bad1.json")
    (tmp_path / "bad2.json").write_text(json.dumps({"scene_id": "s"}))
    with pytest.raises(ValueError, match="JSON list"):
        load_scanrefer(tmp_path / "bad2.json")
    bad3 = [dict(sr[0], object_id="chair")]
    (tmp_path / "bad3.json").write_text(json.dumps(bad3))
    with pytest.raises(ValueError, match="non-integer object_id"):
        load_scanrefer(tmp_path / "bad3.json")
    (tmp_path / "bad4.json").write_text("[{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_scanrefer(tmp_path / "bad4.json")
    with pytest.raises(FileNotFoundError):
        load_multi3drefer(tmp_path / "none.json")
    with pytest.raises(ValueError, match="exactly one"):
        save_annotations(tmp_path / "x.json", g)


# ---------------------------------------------------------------- augmentation
def test_augment_is_seeded_rigid_parts_and_crop():
    room = minimal_room(n_points=4000, seed=1)
    cfg = AugmentConfig(matrix_jitter=0.0, scale_range=(1.0, 1.0), elastic=())
    a = augment_xyz(room.xyz, cfg, np.random.default_rng(3))
    b = augment_xyz(room.xyz, cfg, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    # rotation about z + flip only: pairwise distances and z are kept (scene centred)
    d0 = np.linalg.norm(room.xyz[:50, None] - room.xyz[None, :50], axis=-1)
    d1 = np.linalg.norm(a[:50, None] - a[None, :50], axis=-1)
    np.testing.assert_allclose(d0, d1, atol=1e-4)
    np.testing.assert_allclose(a[:, 2], room.xyz[:, 2] - room.xyz[:, 2].mean(), atol=1e-4)
    np.testing.assert_allclose(a.mean(0), 0, atol=1e-4)
    full = augment_xyz(room.xyz, AugmentConfig(), np.random.default_rng(4))
    assert full.shape == room.xyz.shape and np.isfinite(full).all()
    # elastic: smooth, bounded displacement (nearby points move alike)
    e = elastic_distortion(room.xyz.astype(np.float64), 0.2, 0.1, np.random.default_rng(0))
    disp = e - room.xyz
    assert 0 < np.abs(disp).max() < 0.2
    near = np.linalg.norm(room.xyz[:, None, :] - room.xyz[None, :200, :], axis=-1)[:200] < 0.02
    i, j = np.nonzero(near)
    assert np.abs(disp[i] - disp[j]).max() < 0.02
    # crop: exactly max_points rows, sorted, around a focus point
    rng = np.random.default_rng(0)
    focus = np.flatnonzero(room.instance == 6)
    idx = random_crop(room.xyz, 1000, rng, focus)
    assert len(idx) == 1000 and np.all(np.diff(idx) > 0)
    assert np.isin(focus, idx).any()
    np.testing.assert_array_equal(random_crop(room.xyz, 10**6, rng), np.arange(len(room.xyz)))
    with pytest.raises(ValueError, match="max_points"):
        random_crop(room.xyz, 0, rng)
    with pytest.raises(ValueError, match="scale_range"):
        AugmentConfig(scale_range=(1.2, 1.0))
    with pytest.raises(ValueError, match="shape"):
        augment_xyz(room.xyz[:, :2], cfg, rng)


# ---------------------------------------------------------------- dataset + collate
def _write_room_dataset(root: Path, n_scenes: int = 2, n_points: int = 3000) -> list[Annotation]:
    anns = []
    for k in range(n_scenes):
        room = minimal_room(n_points=n_points, seed=k)
        sid = f"room{k:02d}"
        names = save_grid_room(root, sid, room)
        for j, (oid, text) in enumerate([(6, "the red chair next to the desk"), (9, "the green chair"),
                                         (7, "the white table"), (8, "the blue cabinet"), (5, "the desk")]):
            anns.append(Annotation(sid, [oid], names[oid], str(j), text))
    return anns


def test_dataset_eval_covers_every_description(tmp_path):
    anns = _write_room_dataset(tmp_path)
    ds = ReferDataset(tmp_path, anns, split="val", task="res", augment=False, max_points=None, lang_per_scene=2)
    assert len(ds) == 6  # 2 scenes x ceil(5 / 2)
    seen = []
    for i in range(len(ds)):
        s = ds[i]
        seen += [(m["scene_id"], m["ann_id"]) for m in s.meta]
        assert s.inputs.n_points == len(ds.load_scene(s.scene_id)["xyz"])  # evaluation never crops
        for m, pm, spm in zip(s.meta, s.gt_point_masks, s.gt_sp_masks):
            data = ds.load_scene(m["scene_id"])
            np.testing.assert_array_equal(pm, data["instance"] == m["object_ids"][0])
            assert spm.shape == (s.inputs.n_superpoints,)
            # superpoints here never straddle objects: the vote gives exactly the target's superpoints
            np.testing.assert_array_equal(spm.astype(bool)[s.inputs.superpoints], pm)
    assert sorted(seen) == sorted((a.scene_id, a.ann_id) for a in anns)
    # eval_type filled from the labels: two chairs -> multiple, the rest unique
    types = {a.object_name: a.eval_type for a in ds.annotations}
    assert types == {"chair": "multiple", "table": "unique", "cabinet": "unique", "desk": "unique"}
    batch = collate_fn([ds[0], ds[3]])
    assert batch["batch_size"] == 2 and batch["text_scene"].tolist() == [0, 0, 1, 1]
    assert len(batch["gt_sp_masks"]) == 4 and batch["gt_point_masks"][2].dtype == torch.bool
    assert batch["sp_offsets"][-1] == int(batch["superpoints"].max()) + 1


def test_dataset_train_samples_augments_and_crops(tmp_path):
    anns = _write_room_dataset(tmp_path, n_scenes=2)
    ds = ReferDataset(tmp_path, anns, split="train", task="res", augment=True, max_points=1500,
                      lang_per_scene=3, seed=5)
    # one item = one scene and at most lang_per_scene consecutive descriptions: an epoch covers them all
    n_anns = {}
    for a in anns:
        n_anns[a.scene_id] = n_anns.get(a.scene_id, 0) + 1
    assert len(ds) == sum(-(-n // 3) for n in n_anns.values())
    s0 = ds[0]
    assert s0.inputs.n_points == 1500 and 1 <= len(s0.texts) <= 3
    assert len(s0.point_index) == 1500
    for pm, spm in zip(s0.gt_point_masks, s0.gt_sp_masks):
        assert pm.any() and pm.shape == (1500,)
        assert spm.shape == (s0.inputs.n_superpoints,)
    # reproducible for one epoch, different for the next
    again = ds[0]
    np.testing.assert_array_equal(again.inputs.xyz, s0.inputs.xyz)
    ds.set_epoch(1)
    assert not np.array_equal(ds[0].inputs.xyz, s0.inputs.xyz)
    # an (epoch, index) key gives that epoch's draw whatever set_epoch said (persistent workers)
    np.testing.assert_array_equal(ds[(0, 0)].inputs.xyz, s0.inputs.xyz)
    np.testing.assert_array_equal(ds[(1, 0)].inputs.xyz, ds[0].inputs.xyz)
    batch = collate_fn([ds[0], ds[1]])
    assert batch["coords"].shape[1] == 4 and batch["point_offsets"][-1] == 3000


def test_dataset_gres_zero_and_multi_targets(tmp_path):
    anns = _write_room_dataset(tmp_path, n_scenes=1)
    g = [Annotation("room00", [6, 9], "chair", "0", "the chairs", "mt"),
         Annotation("room00", [], "sofa", "1", "the sofa", "zt_wo_d")]
    ds = ReferDataset(tmp_path, g, split="val", task="gres")
    s = ds[0]
    inst = ds.load_scene("room00")["instance"]
    np.testing.assert_array_equal(s.gt_point_masks[0], np.isin(inst, [6, 9]))
    assert not s.gt_point_masks[1].any() and not s.gt_sp_masks[1].any()
    # per-superpoint instance ids of the targets: each chair's superpoints carry its own id
    si = s.gt_sp_inst[0]
    assert set(np.unique(si).tolist()) == {-1, 6, 9}
    np.testing.assert_array_equal(si[s.inputs.superpoints] >= 0, s.gt_sp_masks[0][s.inputs.superpoints] > 0)
    np.testing.assert_array_equal(si[s.inputs.superpoints][inst == 6], 6)
    assert (s.gt_sp_inst[1] == -1).all()
    b = collate_fn([s])
    assert [m.dtype for m in b["gt_sp_inst"]] == [torch.int64] * 2
    with pytest.raises(ValueError, match="exactly one target"):
        ReferDataset(tmp_path, g, split="val", task="res")
    with pytest.raises(ValueError, match="task"):
        ReferDataset(tmp_path, anns, task="seg")
    with pytest.raises(FileNotFoundError, match="no file"):
        ReferDataset(tmp_path, [Annotation("room99", [1], "x", "0", "y", "unique")])
    with pytest.raises(ValueError, match="lang_per_scene"):
        ReferDataset(tmp_path, anns, lang_per_scene=0)
    with pytest.raises(ValueError, match="empty"):
        ReferDataset(tmp_path, [])
    bad = ReferDataset(tmp_path, [Annotation("room00", [42], "x", "0", "y", "unique")], split="val")
    with pytest.raises(ValueError, match="no points"):
        bad[0]
    with pytest.raises(TypeError, match="ReferSample"):
        collate_fn([1])


def test_dataset_computes_missing_superpoints(tmp_path):
    """Scene files written without superpoints (-1) get the online oversegmentation once."""
    from bqnet_model.superpoints import oversegment

    room = minimal_room(n_points=2500, seed=3)
    names = np.array([o.name for o in room.objects])
    save_scene_npz(tmp_path / "r.npz", ScanNetScene("r", room.xyz, room.rgb, np.full(len(room.xyz), -1, np.int64),
                                                    room.semantic.astype(np.int64), room.instance.astype(np.int64),
                                                    names))
    ds = ReferDataset(tmp_path, [Annotation("r", [6], "chair", "0", "the red chair")], split="val")
    sp = ds.load_scene("r")["superpoint"]
    np.testing.assert_array_equal(sp, oversegment(room.xyz, room.rgb))
    s = ds[0]
    assert s.inputs.n_superpoints == sp.max() + 1 and s.gt_sp_masks[0].sum() >= 1
