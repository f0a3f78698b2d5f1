"""Synthetic rooms furnished with real objects (``bqnet_synth.composed_rooms``, ``composed_training``,
``tools/make_composed_rooms.py``).

Every test but the last runs on a fake bank (boxes of points labelled as a scan's objects) and on
rooms made here (a hand-built room, or the generator's); the last builds a bank from one scan of
``../shared/real`` beside the checkout and skips, saying so, when that folder is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bqnet_model.data.classes import CLASS_ID
from bqnet_model.data.dataset import ReferDataset
from bqnet_model.data.referit import load_annotations
from bqnet_model.data.scannet import ScanNetScene, load_scene_npz
from bqnet_synth.composed_rooms import (
    ComposeConfig,
    ObjectBank,
    bank_from_real_dir,
    build_object_bank,
    compose_room,
)
from bqnet_synth.composed_training import composed_expressions, format_summary, write_composed_rooms
from bqnet_synth.real_training import DEFAULT_LEAVE_OUT, merge_real_into
from bqnet_synth.scene import Room, SceneObject, SyntheticScene, Wall
from conftest import load_tool

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real"
ROOT = Path(__file__).resolve().parents[1]


def _box_points(rng: np.random.Generator, lo, hi, n: int) -> np.ndarray:
    return np.asarray(lo, float) + rng.random((n, 3)) * (np.asarray(hi, float) - np.asarray(lo, float))


def _fake_scan(scene_id: str, objects: list[tuple[str, str, tuple, tuple]], seed: int = 0) -> ScanNetScene:
    """A labelled scan: a floor at z = 0.4 (a scan's floor is rarely at 0) and (raw label, class, lo, hi) boxes."""
    rng = np.random.default_rng(seed)
    xyz, sem, ins = [_box_points(rng, (0, 0, 0.39), (5, 5, 0.41), 3000)], [np.full(3000, CLASS_ID["floor"])], \
        [np.zeros(3000, int)]
    names = ["floor"]
    for k, (raw, cls, lo, hi) in enumerate(objects, start=1):
        xyz.append(_box_points(rng, np.add(lo, (0, 0, 0.4)), np.add(hi, (0, 0, 0.4)), 300))
        sem.append(np.full(300, CLASS_ID[cls]))
        ins.append(np.full(300, k))
        names.append(raw)
    n = sum(len(p) for p in xyz)
    rgb = rng.integers(0, 255, (n, 3)).astype(np.uint8)
    return ScanNetScene(scene_id, np.concatenate(xyz).astype(np.float32), rgb, np.full(n, -1, np.int64),
                        np.concatenate(sem).astype(np.int64), np.concatenate(ins).astype(np.int64), np.asarray(names))


def _fake_bank(big_table: bool = False) -> ObjectBank:
    table = (0, 0, 0), ((2.4, 1.6, 0.7) if big_table else (1.0, 0.6, 0.7))
    scans = [
        _fake_scan("scene0091_00", [("office chair", "chair", (1, 1, 0), (1.5, 1.4, 0.9)),
                                    ("table", "table", *table), ("doorframe", "door", (3, 0, 0), (3.9, 0.1, 2.0)),
                                    ("sofa", "sofa", (2, 3, 0), (4, 3.9, 0.8))]),
        _fake_scan("scene0002_00", [("chair", "chair", (1, 1, 0), (1.5, 1.5, 1.0))], seed=1),  # held out
    ]
    return build_object_bank(scans)


def _room(box_on_table: bool = True, holes: bool = False, monitor: bool = False) -> SyntheticScene:
    """A 5 x 4 m room: floor, four walls, a table with a chair beside it, a box on the table, a
    sofa against the wall y = 0 (front +y). ``holes``: no floor under the furniture (as generated)."""
    rng = np.random.default_rng(7)
    walls = [Wall(np.array(a, float), np.array(b, float), np.array(n, float)) for a, b, n in (
        ((0, 0), (5, 0), (0, 1)), ((5, 0), (5, 4), (-1, 0)), ((5, 4), (0, 4), (0, -1)), ((0, 4), (0, 0), (1, 0)))]
    boxes = [("floor", (0, 0, -0.01), (5, 4, 0.0), "structure", -1, -1, None),
             ("wall", (0, -0.1, 0), (5, 0, 2.5), "structure", -1, -1, (0, 1)),
             ("wall", (5, 0, 0), (5.1, 4, 2.5), "structure", -1, -1, (-1, 0)),
             ("wall", (0, 4, 0), (5, 4.1, 2.5), "structure", -1, -1, (0, -1)),
             ("wall", (-0.1, 0, 0), (0, 4, 2.5), "structure", -1, -1, (1, 0)),
             ("table", (1.6, 1.8, 0), (3.0, 2.8, 0.72), "floor", -1, -1, None),
             ("chair", (3.2, 2.0, 0), (3.7, 2.5, 0.9), "floor", -1, -1, (-1, 0)),
             ("sofa", (1.0, 0.0, 0), (3.0, 0.9, 0.8), "floor", -1, 1, (0, 1))]
    if box_on_table:
        boxes.append(("box", (2.1, 2.1, 0.72), (2.4, 2.4, 0.95), "on", 5, -1, None))
    if monitor:
        boxes.append(("monitor", (2.5, 2.2, 0.72), (2.95, 2.6, 1.1), "on", 5, -1, None))
    xyz, ins, objs = [], [], []
    for i, (name, lo, hi, mount, support, wall, front) in enumerate(boxes):
        n = 4000 if name in ("floor", "wall") else 600
        xyz.append(_box_points(rng, lo, hi, n))
        ins.append(np.full(n, i))
        objs.append(SceneObject(i, name, "", np.asarray(lo, float), np.asarray(hi, float),
                                None if front is None else np.asarray(front, float), support, "", mount, wall))
    if holes:
        f = xyz[0][:, :2]
        under = np.zeros(len(f), bool)
        for o in objs[5:]:
            under |= ((f >= o.box_min[:2]) & (f <= o.box_max[:2])).all(axis=1)
        xyz[0], ins[0] = xyz[0][~under], ins[0][~under]
    inst = np.concatenate(ins).astype(np.int64)
    sem = np.asarray([CLASS_ID[o.name] for o in objs])[inst]
    rgb = rng.integers(0, 255, (len(inst), 3)).astype(np.uint8)
    return SyntheticScene("room", np.concatenate(xyz).astype(np.float32), rgb, inst, sem, objs,
                          Room(5.0, 4.0, 2.5, "rect", None, walls), "office")


_EXACT = ComposeConfig(match_density=False, fill_floor=False)


def test_bank_never_holds_held_out_scans_and_is_relative():
    bank = _fake_bank()
    assert set(bank.scans.tolist()) == {"scene0091_00"}
    assert set(DEFAULT_LEAVE_OUT).isdisjoint(bank.scans.tolist())
    assert bank.class_counts() == {"chair": 1, "table": 1, "sofa": 1}  # no floor, no "doorframe" door
    for k in range(len(bank)):
        p, _ = bank.points(k)
        lo, hi = p.min(axis=0), p.max(axis=0)
        assert abs(lo[2]) < 1e-6 and np.allclose((lo[:2] + hi[:2]) / 2, 0, atol=1e-6)
    assert bank.raw_labels[bank.of_class("chair")[0]] == "office chair"
    assert 100 < bank.floor_density < 200  # 3000 floor points on 25 m^2
    with pytest.raises(ValueError, match="held out"):
        build_object_bank([_fake_scan("scene0005_00", [("chair", "chair", (1, 1, 0), (2, 2, 1))])])


def test_bank_round_trip(tmp_path):
    bank = _fake_bank()
    bank.save(tmp_path / "bank.npz")
    back = ObjectBank.load(tmp_path / "bank.npz")
    assert np.array_equal(back.xyz, bank.xyz) and np.array_equal(back.rgb, bank.rgb)
    assert back.raw_labels.tolist() == bank.raw_labels.tolist() and back.floor_density == bank.floor_density
    with pytest.raises(FileNotFoundError, match="--save-bank"):
        ObjectBank.load(tmp_path / "none.npz")


def test_placement_on_the_floor_rigid_and_labelled():
    bank, synth = _fake_bank(), _room(box_on_table=False)
    room = compose_room(synth, bank, np.random.default_rng(0), _EXACT)
    sc = room.scene
    assert {p.cls for p in room.placements} == {"table", "chair", "sofa"}
    for p in room.placements:
        pts = sc.xyz[sc.instance == p.instance_id].astype(np.float64)
        src = bank.points(p.bank_index)[0].astype(np.float64)
        c, s = np.cos(p.yaw), np.sin(p.yaw)
        expect = src @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]).T + p.translation
        assert np.allclose(pts, expect, atol=1e-5)  # the bank instance, turned about z and moved: rigid
        assert abs(pts[:, 2].min()) < 1e-5  # standing on the floor
        assert np.allclose(np.rint(p.yaw / (np.pi / 2)) * np.pi / 2, p.yaw)  # 'aligned': quarter turns
        assert (sc.semantic[sc.instance == p.instance_id] == CLASS_ID[p.cls]).all()
        assert sc.object_names[p.instance_id] == str(bank.raw_labels[p.bank_index])
        syn = synth.objects[p.synthetic_id]
        if syn.wall < 0:  # free-standing: centred on the synthetic footprint
            assert np.allclose((pts[:, :2].min(0) + pts[:, :2].max(0)) / 2, syn.center[:2], atol=1e-5)
    sofa = next(p for p in room.placements if p.cls == "sofa")
    assert abs(sc.xyz[sc.instance == sofa.instance_id][:, 1].min()) < 1e-5  # its back against the wall y = 0
    # labels: dense ids, one class per instance, kept synthetic objects unchanged
    ids = np.unique(sc.instance)
    assert ids.tolist() == list(range(len(sc.object_names))) and (sc.instance >= 0).all()
    for i in ids:
        assert len(np.unique(sc.semantic[sc.instance == i])) == 1
    for new, o in room.kept.items():
        assert np.allclose(np.sort(sc.xyz[sc.instance == new], axis=0),
                           np.sort(synth.xyz[synth.instance == o.instance_id], axis=0))
        assert sc.object_names[new] == o.name
    assert room.thinning == 1.0 and len(sc.xyz) == sum(len(bank.points(p.bank_index)[0]) for p in room.placements) \
        + sum(int((synth.instance == o.instance_id).sum()) for o in room.kept.values())


def test_overlap_rule_keeps_the_synthetic_object():
    big = _fake_bank(big_table=True)  # a 2.4 x 1.6 m table would cover much of the chair beside it
    synth = _room(box_on_table=False)
    for seed in range(4):
        room = compose_room(synth, big, np.random.default_rng(seed), _EXACT)
        assert "table" not in {p.cls for p in room.placements}
        assert "table" in {o.name for o in room.kept.values()}
    loose = compose_room(synth, big, np.random.default_rng(0),
                         ComposeConfig(max_overlap=1.0, match_density=False, fill_floor=False))
    assert "table" in {p.cls for p in loose.placements}


def test_an_object_on_a_replaced_support_moves_onto_it():
    bank, synth = _fake_bank(), _room(box_on_table=True)  # the bank has no box: the box stays, on the new table
    room = compose_room(synth, bank, np.random.default_rng(0), _EXACT)
    sc = room.scene
    table = next(p for p in room.placements if p.cls == "table")
    box_id = next(i for i, o in room.kept.items() if o.name == "box")
    box, tab = sc.xyz[sc.instance == box_id], sc.xyz[sc.instance == table.instance_id]
    assert abs(box[:, 2].min() - np.percentile(tab[:, 2], 95)) < 0.05  # stands on the real table's top
    lo, hi = tab[:, :2].min(0), tab[:, :2].max(0)
    assert (box[:, :2].min(0) >= lo - 1e-5).all() and (box[:, :2].max(0) <= hi + 1e-5).all()


def test_objects_on_a_kept_support_do_not_overlap():
    synth = _room(box_on_table=True, monitor=True)
    for side, placed in ((0.9, False), (0.2, True)):  # a 0.9 m box would cover half of the monitor beside it
        bank = build_object_bank([_fake_scan("scene0093_00", [("box", "box", (1, 1, 0), (1 + side, 1 + side, 0.3))])])
        room = compose_room(synth, bank, np.random.default_rng(0), _EXACT)
        assert ("box" in {p.cls for p in room.placements}) == placed
        if placed:
            p = room.placements[0]
            pts = room.scene.xyz[room.scene.instance == p.instance_id]
            assert abs(pts[:, 2].min() - 0.72) < 1e-5  # on the table top the scene gives


def test_floor_filled_where_a_smaller_object_stands():
    bank, synth = _fake_bank(), _room(box_on_table=False, holes=True)
    room = compose_room(synth, bank, np.random.default_rng(0), ComposeConfig(match_density=False))
    sc = room.scene
    table = next(p for p in room.placements if p.cls == "table")  # 1.4 x 1 m synthetic, 1 x 0.6 m real
    new = sc.xyz[sc.instance == table.instance_id][:, :2]
    lo, hi = new.min(0), new.max(0)
    floor = sc.xyz[sc.semantic == CLASS_ID["floor"]][:, :2]
    old = synth.objects[table.synthetic_id]
    in_old = ((floor >= old.box_min[:2]) & (floor <= old.box_max[:2])).all(axis=1)
    in_new = ((floor >= lo) & (floor <= hi)).all(axis=1)
    uncovered = float(np.prod(old.box_max[:2] - old.box_min[:2]) - np.prod(np.minimum(hi, old.box_max[:2])
                                                                           - np.maximum(lo, old.box_min[:2])))
    density = (synth.semantic == CLASS_ID["floor"]).sum() / (20.0 - 1.4 - 0.25 - 1.8)
    assert uncovered > 0.3 and not in_new.any()
    assert abs((in_old & ~in_new).sum() - density * uncovered) < 0.35 * density * uncovered
    assert (sc.instance[sc.semantic == CLASS_ID["floor"]] == 0).all()


def test_density_matching_and_sentences():
    bank, synth = _fake_bank(), _room()
    room = compose_room(synth, bank, np.random.default_rng(0), ComposeConfig(fill_floor=False))
    assert 0 < room.thinning < 1  # the synthetic floor is denser than the fake scan's
    floor = room.scene.semantic == CLASS_ID["floor"]
    assert abs(floor.sum() - 4000 * room.thinning) < 200
    exprs = composed_expressions(room, np.random.default_rng(0))
    assert exprs and all(all(0 <= t < len(room.scene.object_names) for t in e.target_ids) for e in exprs)
    for e in exprs:
        for t in e.target_ids:  # a sentence's target is an object of the class it names
            assert e.object_name in ("", room.scene.object_names[t]) or \
                CLASS_ID.get(e.object_name, -1) == int(room.scene.semantic[room.scene.instance == t][0])


def _tree(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_written_rooms_are_deterministic_and_load(tmp_path):
    bank = _fake_bank()
    s = write_composed_rooms(bank, tmp_path / "a", 2, seed=3)
    write_composed_rooms(bank, tmp_path / "b", 2, seed=3)
    write_composed_rooms(bank, tmp_path / "c", 2, seed=4)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b") and _tree(tmp_path / "a") != _tree(tmp_path / "c")
    part = write_composed_rooms(bank, tmp_path / "d", 1, seed=3, first_index=1)
    assert part.scene_ids == ["composed_00001"]
    assert (tmp_path / "d" / "composed_00001.npz").read_bytes() == (tmp_path / "a" / "composed_00001.npz").read_bytes()
    assert s.scene_ids == ["composed_00000", "composed_00001"] and sum(s.replaced.values()) > 0
    n_targets = sum(len(e["object_ids"]) for e in json.loads((tmp_path / "a" / "train_multi3drefer.json").read_text()))
    assert s.real_targets > 0 and s.real_targets + s.synthetic_targets == n_targets
    text = format_summary(s)
    assert "2 composed rooms" in text and "sentences:" in text
    out = tmp_path / "a"
    z = load_scene_npz(out / "composed_00000.npz")
    assert (z["superpoint"] == -1).all() and len(z["object_names"]) == z["instance"].max() + 1
    res = load_annotations(out / "train_scanrefer.json", out)
    gres = load_annotations(out / "train_multi3drefer.json")
    assert len(res) == s.res_sentences > 0 and len(gres) == s.sentences >= len(res)
    assert {json.loads((out / "train_multi3drefer.json").read_text())[0]["source"]} == {"composed"}
    item = ReferDataset(out, res[:2], "train", "res")[0]
    assert item.inputs.n_superpoints > 5 and item.gt_point_masks[0].any()
    # merge_real_into takes the folder as it takes a real one
    synth = tmp_path / "synth"
    synth.mkdir()
    counts = merge_real_into(out, synth)
    assert counts["train_scanrefer.json"] == len(res) and (synth / "composed_00001.npz").is_file()


def test_cli_refuses_the_repository_and_writes(tmp_path, capsys):
    tool = load_tool("make_composed_rooms")
    _fake_bank().save(tmp_path / "bank.npz")
    with pytest.raises(SystemExit):
        tool.main(["--bank", str(tmp_path / "bank.npz"), "--out", str(ROOT / "composed_tmp"), "--rooms", "1"])
    assert "must not enter the repository" in capsys.readouterr().err and not (ROOT / "composed_tmp").exists()
    assert tool.main(["--bank", str(tmp_path / "none.npz"), "--out", str(tmp_path / "o"), "--rooms", "1"]) == 2
    assert tool.main(["--bank", str(tmp_path / "bank.npz"), "--out", str(tmp_path / "o"), "--rooms", "2",
                      "--seed", "1", "--first-index", "5"]) == 0
    text = capsys.readouterr().out
    assert "object bank: 3 objects from 1 scans" in text and "2 composed rooms" in text
    assert sorted(p.name for p in (tmp_path / "o").glob("*.npz")) == ["composed_00005.npz", "composed_00006.npz"]


@pytest.mark.skipif(not REAL.is_dir(), reason=f"real ScanNet data not present at {REAL} (a user's clone has no "
                                              "shared/); the fake-bank tests above cover the code")
def test_on_one_real_training_scan():
    from bqnet_synth.rooms import generate_room

    with pytest.raises(ValueError, match="held out"):
        bank_from_real_dir(REAL, scans=["scene0002_00"])
    bank = bank_from_real_dir(REAL, scans=["scene0001_00"])
    assert set(bank.scans.tolist()) == {"scene0001_00"} and {"sofa", "table", "chair"} <= set(bank.class_counts())
    for seed in range(20):  # a room with a chair, table or sofa to replace
        synth = generate_room(seed)
        if {"sofa", "table", "chair"} & {o.name for o in synth.objects}:
            break
    room = compose_room(synth, bank, np.random.default_rng(0))
    assert room.placements and 0 < room.thinning < 1
    for p in room.placements:
        assert abs(room.scene.xyz[room.scene.instance == p.instance_id][:, 2].min()
                   - (0.0 if synth.objects[p.synthetic_id].mount != "on" else p.translation[2])) < 1e-4
    assert len(composed_expressions(room, np.random.default_rng(0))) > 5
