"""Synthetic rooms and referring expressions: determinism, labels, geometry of every claim, files."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import bqnet_synth as E
import bqnet_synth as S
from bqnet_synth.furniture import BUILDERS, VARIANTS, build
from bqnet_synth.parts import place_parts, rotate_face_bits

FAST = S.RoomConfig(density=600.0)


def _cfg(**kw) -> S.RoomConfig:
    return S.RoomConfig(density=600.0, **kw)


@pytest.fixture(scope="module")
def rooms():
    """One room of every type (fixed seeds) and the demo room, each with its expressions."""
    out = [S.room_with_expressions(11 + k, config=_cfg(room_type=t)) for k, t in enumerate(S.ROOM_TYPES)]
    out.append(S.room_with_expressions(0, demo=True, config=FAST))
    return out


# ---- rooms ---------------------------------------------------------------------------------------

def test_minimal_room_kept():
    r = S.minimal_room(n_points=3000, seed=0)
    assert 2000 < len(r.xyz) <= 3000 and r.xyz.shape[1] == 3 and r.xyz.dtype == np.float32
    assert r.instance.dtype == np.int32 and len(r.objects) == 10
    assert [o.name for o in r.objects][:2] == ["floor", "wall"]


def test_room_is_deterministic_by_seed():
    a, b, c = S.generate_room(7, FAST), S.generate_room(7, FAST), S.generate_room(8, FAST)
    for k in ("xyz", "rgb", "instance", "semantic"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    assert [o.name for o in a.objects] == [o.name for o in b.objects]
    assert len(a.xyz) != len(c.xyz) or not np.array_equal(a.xyz, c.xyz)
    _, ea = S.room_with_expressions(7, config=FAST)
    _, eb = S.room_with_expressions(7, config=FAST)
    assert [(e.text, e.target_ids, e.eval_type) for e in ea] == [(e.text, e.target_ids, e.eval_type) for e in eb]


def test_labels_are_consistent(rooms):
    for scene, _ in rooms:
        n = len(scene.xyz)
        assert scene.xyz.dtype == np.float32 and scene.xyz.shape == (n, 3)
        assert scene.rgb.dtype == np.uint8 and scene.rgb.shape == (n, 3)
        assert scene.instance.dtype == np.int64 and scene.semantic.dtype == np.int64
        assert [o.instance_id for o in scene.objects] == list(range(len(scene.objects)))
        counts = np.bincount(scene.instance, minlength=len(scene.objects))
        assert len(counts) == len(scene.objects) and (counts >= FAST.min_object_points).all()
        cls = np.array([S.CLASS_ID[o.name] for o in scene.objects])
        np.testing.assert_array_equal(scene.semantic, cls[scene.instance])
        room = scene.room
        n_walls = 4 if room.shape == "rect" else 6
        assert [o.name for o in scene.objects[: n_walls + 1]] == ["floor"] + ["wall"] * n_walls
        assert "wall" not in [o.name for o in scene.objects[n_walls + 1:]]
        # Everything inside the room (doors and windows sit a little inside the wall slab).
        lo, hi = scene.xyz.min(0), scene.xyz.max(0)
        assert (lo > -0.2).all() and hi[0] < room.width + 0.2 and hi[1] < room.depth + 0.2
        assert hi[2] < room.height + 0.05
        # Object boxes hold their points (up to noise).
        for o in scene.objects[n_walls + 1:]:
            p = scene.xyz[scene.instance == o.instance_id]
            assert (p.min(0) > o.box_min - 0.03).all() and (p.max(0) < o.box_max + 0.03).all(), o


def test_hidden_surfaces_removed(rooms):
    """No floor under solid furniture, no wall behind tall furniture standing against it."""
    checked = 0
    for scene, _ in rooms:
        floor = scene.xyz[scene.instance == 0]
        for o in scene.objects:
            if o.name in ("cabinet", "bed", "refrigerator", "bookshelf", "bathtub") and o.mount == "floor":
                inner = ((floor[:, 0] > o.box_min[0] + 0.05) & (floor[:, 0] < o.box_max[0] - 0.05)
                         & (floor[:, 1] > o.box_min[1] + 0.05) & (floor[:, 1] < o.box_max[1] - 0.05))
                assert inner.sum() == 0, (scene.scene_id, o.name)
                checked += 1
            if o.name in ("bookshelf", "refrigerator") and o.wall >= 0:
                w = scene.objects[o.wall]
                a = int(np.argmax(np.abs(w.front)))
                lat = 1 - a
                wp = scene.xyz[scene.instance == o.wall]
                behind = ((wp[:, lat] > o.box_min[lat] + 0.05) & (wp[:, lat] < o.box_max[lat] - 0.05)
                          & (wp[:, 2] > 0.05) & (wp[:, 2] < o.box_max[2] - 0.05))
                assert behind.sum() == 0, (scene.scene_id, o.name)
                checked += 1
    assert checked >= 5


def test_class_coverage_and_room_shapes(rooms):
    seen = {o.name for scene, _ in rooms for o in scene.objects}
    assert set(S.CLASSES) <= seen, sorted(set(S.CLASSES) - seen)
    for shape, p in (("L", 1.0), ("rect", 0.0)):
        r = S.generate_room(3, _cfg(room_type="office", l_shape_prob=p))
        assert r.room.shape == shape
        if shape == "L":
            n = r.room.notch
            inside = ((r.xyz[:, 0] > n[0] + 0.05) & (r.xyz[:, 0] < n[2] - 0.05)
                      & (r.xyz[:, 1] > n[1] + 0.05) & (r.xyz[:, 1] < n[3] - 0.05))
            assert inside.sum() == 0 and len(r.room.walls) == 6
    sizes = {(round(s.room.width, 1), round(s.room.depth, 1)) for s, _ in rooms}
    assert len(sizes) >= 6


def test_default_density_and_colours():
    r = S.generate_room(21)
    assert 50_000 <= len(r.xyz) <= 400_000
    # A named colour is visible: the object's mean colour is nearer its name than most palette colours.
    from bqnet_synth.parts import COLORS

    pal = np.array(list(COLORS.values()), float)
    names = list(COLORS)
    hits = total = 0
    for o in r.objects:
        if o.name in ("sofa", "bed", "chair", "box", "curtain", "cabinet"):
            m = r.rgb[r.instance == o.instance_id].astype(float).mean(0)
            rank = np.argsort(np.linalg.norm(pal - m, axis=1)).tolist().index(names.index(o.color_name))
            hits += rank <= 2
            total += 1
    assert total >= 2 and hits >= 0.7 * total


# ---- expressions ---------------------------------------------------------------------------------

def _mentions(text: str, cls: str, variants) -> bool:
    nouns = E.class_nouns(cls, list(variants))
    return any(re.search(rf"\b{re.escape(n)}\b", text) or re.search(rf"\b{re.escape(E.pluralize(n))}\b", text)
               for n in nouns)


def test_expression_labels(rooms):
    kinds = set()
    types = set()
    for scene, exprs in rooms:
        g = E.SceneGeometry(scene.objects)
        names = g.names
        has_points = np.bincount(scene.instance, minlength=len(scene.objects)) > 0
        variants = {}
        for o in scene.objects:
            variants.setdefault(o.name, set()).add(o.variant)
        assert len(exprs) >= 8
        for e in exprs:
            types.add(e.eval_type)
            kinds.add(e.relation)
            assert e.eval_type in E.EVAL_TYPES and e.relation in E.RELATIONS and e.text.strip()
            members = [int(i) for i in np.flatnonzero(names == e.object_name)]
            assert sorted(e.target_ids + e.distractor_ids) == members
            assert all(has_points[t] and names[t] == e.object_name for t in e.target_ids)
            n_t = len(e.target_ids)
            expected = {0: "zt_w_d" if members else "zt_wo_d", 1: "st_w_d" if len(members) > 1 else "st_wo_d"}
            assert e.eval_type == expected.get(n_t, "mt"), e
            if e.eval_type == "st_wo_d":
                assert members == e.target_ids  # the only object of its class
            assert _mentions(e.text, e.object_name, variants.get(e.object_name, ())), e.text
            views = {d.viewpoint for d in e.descriptors if d.viewpoint >= 0}
            assert len(views) <= 1 and (not views or re.search(r"\b(fac|look)", e.text)), e.text
            # Every claim is true for every target; every other object of the class fails one.
            for d in e.descriptors:
                if e.target_ids:
                    assert (E.evaluate(g, d, e.target_ids) == E.TRUE).all(), (e.text, d)
                for a in (*d.anchors, *([d.viewpoint] if d.viewpoint >= 0 else [])):
                    assert names[a] not in ("floor", "wall")
                    same = np.flatnonzero(names == names[a])
                    if len(same) > 1:  # named by a colour only it has in its class
                        col = scene.objects[a].color_name
                        assert sum(scene.objects[s].color_name == col for s in same) == 1
                        assert col in e.text or (col == "grey" and "gray" in e.text) or \
                            (col == "beige" and "cream" in e.text), e.text
            if e.distractor_ids and e.eval_type != "zt_wo_d":
                states = np.stack([E.evaluate(g, d, e.distractor_ids) for d in e.descriptors]) if e.descriptors \
                    else np.zeros((0, len(e.distractor_ids)))
                if e.eval_type == "mt" and not e.descriptors:
                    pytest.fail(f"'all of class' sentence with distractors: {e}")
                assert (states == E.FALSE).any(0).all(), (e.text, states)
            if e.eval_type == "mt" and not e.descriptors:
                assert not e.distractor_ids
    assert types == set(E.EVAL_TYPES)
    assert {"category", "colour", "next_to", "between"} <= kinds
    assert len(kinds & {"left_of", "right_of"}) >= 1 and len(kinds & {"on", "under", "above"}) >= 2


def _pbox(scene, i):
    p = scene.xyz[scene.instance == i]
    return np.percentile(p, 1, axis=0), np.percentile(p, 99, axis=0), p.mean(0)


def test_relations_hold_in_the_point_cloud(rooms):
    """Independent of the object boxes: the claims hold for the sampled points themselves."""
    n = 0
    for scene, exprs in rooms:
        for e in exprs:
            for d in e.descriptors:
                for t in e.target_ids:
                    tlo, thi, tc = _pbox(scene, t)
                    if d.kind == "next_to":
                        alo, ahi, _ = _pbox(scene, d.anchors[0])
                        gap = np.linalg.norm(np.maximum(0, np.maximum(alo - thi, tlo - ahi)))
                        assert gap <= 0.55, (e.text, gap)
                    elif d.kind == "on":
                        alo, ahi, _ = _pbox(scene, d.anchors[0])
                        assert abs(tlo[2] - ahi[2]) <= 0.1 and (tc[:2] > alo[:2] - 0.05).all() \
                            and (tc[:2] < ahi[:2] + 0.05).all(), e.text
                    elif d.kind == "under":
                        alo, ahi, _ = _pbox(scene, d.anchors[0])
                        assert thi[2] < ahi[2] and (tc[:2] > alo[:2]).all() and (tc[:2] < ahi[:2]).all(), e.text
                    elif d.kind == "above":
                        _, ahi, _ = _pbox(scene, d.anchors[0])
                        assert tlo[2] > ahi[2], e.text
                    else:
                        continue
                    n += 1
    assert n >= 10


def _obj(i, name, lo, hi, front=None, color="red"):
    return S.SceneObject(i, name, color, np.array(lo, float), np.array(hi, float),
                         None if front is None else np.array(front, float))


def test_relation_geometry_by_hand():
    objs = [
        _obj(0, "floor", (0, 0, -0.1), (6, 5, 0), color=""),
        _obj(1, "door", (2.5, -0.1, 0), (3.5, 0.05, 2.0), front=(0, 1), color="brown"),
        _obj(2, "desk", (2.0, 2.0, 0), (3.0, 2.6, 0.75), front=(0, -1), color="brown"),
        _obj(3, "chair", (0.8, 2.0, 0), (1.3, 2.5, 0.9), front=(1, 0)),  # smaller x than the desk
        _obj(4, "chair", (3.7, 2.0, 0), (4.2, 2.5, 0.9), front=(-1, 0)),  # larger x
        _obj(5, "chair", (2.25, 1.3, 0), (2.75, 1.8, 0.9), front=(0, 1)),  # in front of the desk
        _obj(6, "monitor", (2.3, 2.4, 0.75), (2.8, 2.55, 1.2), front=(0, -1)),
        _obj(7, "trash can", (2.6, 2.1, 0), (2.9, 2.4, 0.4)),
        _obj(8, "picture", (2.2, 4.97, 1.5), (2.8, 5.0, 2.0), front=(0, -1)),
        _obj(9, "chair", (5.0, 4.0, 0), (5.5, 4.5, 1.4), front=(0, -1)),
    ]
    g = E.SceneGeometry(objs)
    chairs = [3, 4, 5, 9]
    # Facing the door (looking towards -y), the observer's right is -x: chair 3 is right of the desk.
    right = E.evaluate(g, E.Descriptor("right_of", (2,), viewpoint=1), chairs)
    left = E.evaluate(g, E.Descriptor("left_of", (2,), viewpoint=1), chairs)
    assert right.tolist()[:3] == [E.TRUE, E.FALSE, E.FALSE] and left.tolist()[:3] == [E.FALSE, E.TRUE, E.FALSE]
    assert E.evaluate(g, E.Descriptor("in_front_of", (2,)), chairs).tolist() == [E.FALSE, E.FALSE, E.TRUE, E.FALSE]
    assert E.evaluate(g, E.Descriptor("next_to", (2,)), [5, 9]).tolist() == [E.TRUE, E.FALSE]
    assert E.evaluate(g, E.Descriptor("on", (2,)), [6, 7]).tolist() == [E.TRUE, E.FALSE]
    assert E.evaluate(g, E.Descriptor("under", (2,)), [6, 7]).tolist() == [E.FALSE, E.TRUE]
    assert E.evaluate(g, E.Descriptor("between", (3, 4)), [2, 5, 9]).tolist() == [E.TRUE, E.UNSURE, E.FALSE]
    assert E.evaluate(g, E.Descriptor("closest", (1,)), chairs).tolist() == [E.FALSE, E.FALSE, E.TRUE, E.FALSE]
    assert E.evaluate(g, E.Descriptor("size", value="tallest"), chairs).tolist() == [E.FALSE] * 3 + [E.TRUE]
    # The grey zone: a gap of 0.6 m is neither next to nor clearly apart.
    objs2 = objs[:3] + [_obj(3, "box", (3.6, 2.0, 0), (3.9, 2.3, 0.3))]
    assert E.evaluate(objs2, E.Descriptor("next_to", (2,)), [3]).tolist() == [E.UNSURE]


def test_demo_room_sentences():
    scene, exprs = S.room_with_expressions(0, demo=True, config=FAST)
    first = exprs[:4]
    assert [e.text for e in first] == ["the chair next to the desk", "all the chairs around the table",
                                       "the bathtub next to the sofa", "the yellow chair"]
    assert [e.eval_type for e in first] == ["st_w_d", "mt", "zt_wo_d", "zt_w_d"]
    chairs = [o.instance_id for o in scene.objects if o.name == "chair"]
    desk = next(o.instance_id for o in scene.objects if o.name == "desk")
    assert len(chairs) == 4
    (t,) = first[0].target_ids
    assert scene.objects[t].color_name == "red" and len(first[1].target_ids) == 3 and t not in first[1].target_ids
    # The target is, by its points, the chair nearest the desk, by far.
    dlo, dhi, _ = _pbox(scene, desk)
    gaps = {c: np.linalg.norm(np.maximum(0, np.maximum(dlo - _pbox(scene, c)[1], _pbox(scene, c)[0] - dhi)))
            for c in chairs}
    assert min(gaps, key=gaps.get) == t and sorted(gaps.values())[1] > 1.0
    assert first[2].target_ids == [] and first[3].target_ids == [] and S.demo_room(0, FAST).scene_id == "synth_demo"
    small = S.demo_room(1, n_points=20_000)
    assert len(small.xyz) == 20_000 and [o.name for o in small.objects] == [o.name for o in scene.objects]
    assert [e.target_ids for e in E.demo_expressions(small)] == [e.target_ids for e in first]
    with pytest.raises(ValueError, match="n_points"):
        S.demo_room(0, n_points=5)


# ---- files ---------------------------------------------------------------------------------------

def test_generate_dataset_files(tmp_path):
    from bqnet_model.data.referit import load_multi3drefer, load_scanrefer
    from bqnet_model.data.scannet import load_scene_npz

    s = S.generate_dataset(tmp_path, 2, seed=3, split_name="val", config=FAST, superpoints=False)
    assert len(s.scene_ids) == 2 and s.superpoints is False
    for sid in s.scene_ids:
        with np.load(tmp_path / f"{sid}.npz") as z:
            assert sorted(z.files) == sorted(["xyz", "rgb", "superpoint", "semantic", "instance", "object_names"])
            assert z["xyz"].dtype == np.float32 and z["rgb"].dtype == np.uint8
            for k in ("superpoint", "semantic", "instance"):
                assert z[k].dtype == np.int64 and z[k].shape == (len(z["xyz"]),)
            assert (z["superpoint"] == -1).all()
            assert z["object_names"].dtype.kind == "U" and len(z["object_names"]) == z["instance"].max() + 1
            assert z["object_names"][0] == "floor"
        load_scene_npz(tmp_path / f"{sid}.npz")
    sr = json.loads((tmp_path / "val_scanrefer.json").read_text())
    m3 = json.loads((tmp_path / "val_multi3drefer.json").read_text())
    assert sr and m3 and len(m3) > len(sr)
    for d in sr:
        assert {"scene_id", "object_id", "object_name", "ann_id", "description", "eval_type"} <= set(d)
        assert isinstance(d["object_id"], str) and d["object_id"].isdigit() and isinstance(d["ann_id"], str)
        assert d["eval_type"] in ("unique", "multiple") and " " not in d["object_name"]
    for d in m3:
        assert d["eval_type"] in E.EVAL_TYPES and all(isinstance(i, int) for i in d["object_ids"])
        assert (len(d["object_ids"]) == 0) == d["eval_type"].startswith("zt")
    assert len({(d["scene_id"], d["ann_id"]) for d in m3}) == len(m3)
    assert sum(s.eval_type_counts.values()) == len(m3)
    assert len(load_scanrefer(tmp_path / "val_scanrefer.json")) == len(sr)
    assert len(load_multi3drefer(tmp_path / "val_multi3drefer.json")) == len(m3)
    # Scene i depends on (seed, split, i): another split gives other rooms.
    s2 = S.generate_dataset(tmp_path / "t", 1, seed=3, split_name="train", config=FAST, superpoints=False)
    with np.load(tmp_path / f"{s.scene_ids[0]}.npz") as a, np.load(tmp_path / "t" / f"{s2.scene_ids[0]}.npz") as b:
        assert a["xyz"].shape != b["xyz"].shape or not np.array_equal(a["xyz"], b["xyz"])


def test_superpoint_flag(tmp_path):
    try:
        import bqnet_model.superpoints  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="no-superpoints"):
            S.generate_dataset(tmp_path, 1, superpoints=True, config=_cfg(room_type="bathroom"))
        return
    s = S.generate_dataset(tmp_path, 1, superpoints=True, config=_cfg(room_type="bathroom"))
    with np.load(tmp_path / f"{s.scene_ids[0]}.npz") as z:
        sp = z["superpoint"]
    assert sp.min() == 0 and len(np.unique(sp)) == sp.max() + 1


def test_cli(tmp_path, capsys):
    rc = S.main(["--out", str(tmp_path), "--scenes", "1", "--seed", "5", "--split", "test", "--no-superpoints",
                 "--density", "500", "--room-type", "kitchen"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "points/room" in out and "eval_type" in out
    assert (tmp_path / "test_scanrefer.json").is_file() and (tmp_path / "synth_test_00000.npz").is_file()


def test_density_range_draws_each_rooms_density(tmp_path):
    """--density-range: rooms of one layout at drawn densities, deterministic; without it the rooms
    are those of a plain run (the draw has its own random stream)."""
    kw = dict(superpoints=False, config=_cfg(room_type="bedroom"))
    S.generate_dataset(tmp_path / "plain", 3, seed=2, **kw)
    rng_cfg = _cfg(room_type="bedroom", density_range=(150.0, 1200.0))
    for name in ("a", "b"):
        S.generate_dataset(tmp_path / name, 3, seed=2, superpoints=False, config=rng_cfg)
    n_plain, n_a = [], []
    for i in range(3):
        f = f"synth_train_{i:05d}.npz"
        with np.load(tmp_path / "plain" / f) as p, np.load(tmp_path / "a" / f) as a, np.load(tmp_path / "b" / f) as b:
            np.testing.assert_array_equal(a["xyz"], b["xyz"])  # deterministic
            n_plain.append(len(p["xyz"]))
            n_a.append(len(a["xyz"]))
            # same layout: the same furniture, so the room's extent agrees within the noise and holes
            np.testing.assert_allclose(a["xyz"].min(0), p["xyz"].min(0), atol=0.1)
            np.testing.assert_allclose(a["xyz"].max(0), p["xyz"].max(0), atol=0.1)
    ratios = np.array(n_a) / np.array(n_plain)  # plain rooms at 600 points per m^2
    assert len(set(np.round(ratios, 2))) == 3  # each room its own density
    assert (ratios > 150 / 600 * 0.7).all() and (ratios < 1200 / 600 * 1.3).all()
    assert S.main(["--out", str(tmp_path / "cli"), "--scenes", "1", "--no-superpoints",
                   "--density-range", "200", "400", "--room-type", "kitchen"]) == 0
    with pytest.raises(SystemExit):
        S.main(["--out", str(tmp_path / "bad"), "--scenes", "1", "--density-range", "400", "200"])
    with pytest.raises(ValueError, match="density_range"):
        S.RoomConfig(density_range=(0.0, 10.0))


# ---- furniture and bad input ----------------------------------------------------------------------

def test_furniture_builds_and_rotates():
    rng = np.random.default_rng(0)
    for cls in BUILDERS:
        for v in VARIANTS[cls]:
            m = build(cls, rng, variant=v)
            assert m.cls == cls and m.parts and (m.size > 0).all()
            for front, swap in (((0.0, 1.0), False), ((1.0, 0.0), True), ((0.0, -1.0), False)):
                parts = place_parts(m, np.array([1.0, 2.0, 0.0]), np.array(front))
                lo = np.min([p.lo for p in parts if not p.carve], 0)
                hi = np.max([p.hi for p in parts if not p.carve], 0)
                want = m.size[[1, 0, 2]] if swap else m.size
                np.testing.assert_allclose(hi - lo, want, atol=1e-9)
    # Facing +x, the local front face (+y, bit 3) is the world +x face (bit 1); top stays top.
    assert rotate_face_bits(1 << 3, np.array([1.0, 0.0])) == 1 << 1
    assert rotate_face_bits(1 << 5, np.array([0.0, -1.0])) == 1 << 5


def test_bad_input_is_rejected(tmp_path):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="density"):
        S.RoomConfig(density=0)
    with pytest.raises(ValueError, match="room_type"):
        S.RoomConfig(room_type="garage")
    with pytest.raises(TypeError, match="seed"):
        S.generate_room("3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_scenes"):
        S.generate_dataset(tmp_path, 0)
    with pytest.raises(ValueError, match="split_name"):
        S.generate_dataset(tmp_path, 1, split_name="a/b")
    with pytest.raises(ValueError, match="unknown furniture class"):
        build("piano", rng)
    with pytest.raises(ValueError, match="colour"):
        build("chair", rng, color="mauve")
    with pytest.raises(ValueError, match="variant"):
        build("chair", rng, variant="throne")
    with pytest.raises(ValueError, match="front"):
        place_parts(build("box", rng), np.zeros(3), np.array([0.6, 0.8]))
    scene = S.demo_room(0, FAST)
    with pytest.raises(ValueError, match="unknown descriptor"):
        E.evaluate(scene, E.Descriptor("touching", (1,)), [2])
    with pytest.raises(ValueError, match="out of range"):
        E.evaluate(scene, E.Descriptor("next_to", (1,)), [999])
    with pytest.raises(ValueError, match="anchor"):
        E.evaluate(scene, E.Descriptor("next_to"), [2])
    with pytest.raises(TypeError, match="SyntheticScene"):
        E.generate_expressions("room")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="per_object"):
        E.ExpressionConfig(per_object=-1)
    with pytest.raises(ValueError, match="superpoint"):
        S.save_scene(tmp_path / "x.npz", scene, np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="ScanRefer"):
        E.Expression("all the chairs", [1, 2], "mt", "category", "chair").to_scanrefer("s", 0)
