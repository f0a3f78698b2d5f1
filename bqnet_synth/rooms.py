"""The procedural rooms: ``generate_room`` (a drawn room type, furnished and sampled) and
``demo_room`` (a fixed office-like layout the demo and its sentences rely on). Deterministic for a
given seed.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from bqnet_model.data.classes import CLASS_ID
from bqnet_synth.furnish import _layout_room
from bqnet_synth.furniture import build
from bqnet_synth.layout import _Layout
from bqnet_synth.parts import Part
from bqnet_synth.render import _Shape, _render, _structure_parts
from bqnet_synth.scene import ROOM_TYPES, Room, RoomConfig, SceneObject, SyntheticScene, Wall


def _objects_of(layout: _Layout, cfg: RoomConfig, rng: np.random.Generator) -> tuple[_Shape, list[SceneObject]]:
    """Flatten the layout into part arrays and SceneObjects (floor 0, walls 1..K, then furniture)."""
    room = layout.room
    floor, walls = _structure_parts(room, rng, cfg.wall_thickness)
    K = len(walls)
    groups: list[list[Part]] = [floor] + walls + [p.parts for p in layout.objects]
    names = ["floor"] + ["wall"] * K + [p.model.cls for p in layout.objects]
    parts = [q for g in groups for q in g]
    part_obj = np.repeat(np.arange(len(groups)), [len(g) for g in groups])
    O = len(groups)
    floor_keep = np.ones(O)
    footprint = np.zeros((O, 4))
    on_floor = np.zeros(O, bool)
    in_wall = np.zeros(O, bool)
    is_wall = np.zeros(O, bool)
    is_wall[1:K + 1] = True
    objects: list[SceneObject] = []
    for i, g in enumerate(groups):
        real = [q for q in g if not q.carve]
        bmin = np.min([q.lo for q in real], axis=0)
        bmax = np.max([q.hi for q in real], axis=0)
        footprint[i] = [bmin[0], bmin[1], bmax[0], bmax[1]]
        if i == 0:
            objects.append(SceneObject(0, "floor", "", bmin, bmax, None, -1, "", "structure", -1))
            continue
        if i <= K:
            objects.append(SceneObject(i, "wall", "", bmin, bmax, room.walls[i - 1].normal.copy(), -1, "",
                                       "structure", -1))
            continue
        p = layout.objects[i - K - 1]
        m = p.model
        floor_keep[i] = m.floor_keep
        on_floor[i] = m.mount in ("floor", "under")
        in_wall[i] = m.in_wall
        front = p.front.copy() if m.has_front else None
        support = p.support + K + 1 if p.support >= 0 else -1
        wall = p.wall + 1 if p.wall >= 0 else -1
        objects.append(SceneObject(i, m.cls, m.color_name, bmin, bmax, front, support, m.variant, m.mount, wall))
    return _Shape(names, parts, part_obj, floor_keep, footprint, on_floor, in_wall, is_wall), objects


def _finish(scene_id: str, layout: _Layout, cfg: RoomConfig, rng: np.random.Generator, room_type: str
            ) -> SyntheticScene:
    shape, objects = _objects_of(layout, cfg, rng)
    xyz, rgb, inst = _render(shape, layout.room, rng, cfg)
    # Drop objects the scan barely saw, then renumber instances densely.
    counts = np.bincount(inst, minlength=len(objects))
    keep_obj = (counts >= cfg.min_object_points) | (np.arange(len(objects)) <= len(layout.room.walls))
    if not keep_obj.all():
        new_id = np.cumsum(keep_obj) - 1
        pts = keep_obj[inst]
        xyz, rgb, inst = xyz[pts], rgb[pts], new_id[inst[pts]]
        kept = []
        for o in objects:
            if not keep_obj[o.instance_id]:
                continue
            o.instance_id = int(new_id[o.instance_id])
            for attr in ("support", "wall"):
                v = getattr(o, attr)
                setattr(o, attr, int(new_id[v]) if v >= 0 and keep_obj[v] else -1)
            kept.append(o)
        objects = kept
    sem_of = np.array([CLASS_ID[o.name] for o in objects], np.int64)
    return SyntheticScene(scene_id, xyz, rgb, inst.astype(np.int64), sem_of[inst], objects, layout.room, room_type)


def generate_room(seed: int, config: RoomConfig | None = None, *, scene_id: str | None = None) -> SyntheticScene:
    """One procedural room, deterministic for ``seed`` (room type drawn unless the config fixes it)."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    cfg = config or RoomConfig()
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))
    room_type = cfg.room_type or ROOM_TYPES[int(rng.integers(len(ROOM_TYPES)))]
    layout = _layout_room(rng, room_type, cfg)
    return _finish(scene_id or f"synth_{int(seed):06d}", layout, cfg, rng, room_type)


# ---- the fixed demo room ------------------------------------------------------------------------

def _demo_layout(rng: np.random.Generator) -> _Layout:
    """A 6 x 5 m office / living room laid out by hand: one chair at the desk, three at the table."""
    walls = [Wall(np.array(a, float), np.array(b, float), np.array(n, float)) for a, b, n in (
        ((0, 0), (6, 0), (0, 1)), ((6, 0), (6, 5), (-1, 0)), ((6, 5), (0, 5), (0, -1)), ((0, 5), (0, 0), (1, 0)))]
    room = Room(6.0, 5.0, 2.6, "rect", None, walls)
    L = _Layout(rng, room)
    door = build("door", rng, variant="right", color="brown", w=0.9, h=2.05)
    L.on_wall(door, 0, 5.0, 0.0)
    L.rects.append(np.array([4.45, 0.0, 5.55, 0.9]))
    win = L.on_wall(build("window", rng, variant="double", color="white", w=1.4, h=1.2), 2, 3.0, 0.9)
    assert win is not None
    L.curtains(win, p_side=1.0)

    def put(cls: str, variant: str, color: str, origin: tuple[float, float, float], front: tuple[float, float],
            wall: int = -1, support: int = -1) -> int:
        m = build(cls, rng, variant=variant, color=color)
        if support >= 0:
            m.mount = "on"
        return L.add(m, np.array(origin, float), np.array(front, float), wall=wall, support=support,
                     footprint=support < 0)

    # Desk against the left wall (x = 0), facing +x; the red office chair in front of it.
    desk_m = build("desk", rng, variant="panel", color="brown")
    desk = L.add(desk_m, np.array([-desk_m.lo[1], 3.6, 0.0]), np.array([1.0, 0.0]), wall=3)
    L.facing(desk, "chair", "office", "red", side=np.array([1.0, 0.0]), gap=0.15)
    L.on(desk, "monitor", "monitor", "black", at_back=True)
    L.on(desk, "lamp", "desk", "white")
    L.under(desk, "trash can", "round", "grey")
    # Dining table in the middle with three green chairs.
    table = put("table", "rect", "white", (3.2, 2.3, 0.0), (0.0, 1.0))
    for side in ((0.0, 1.0), (0.0, -1.0), (1.0, 0.0)):
        L.facing(table, "chair", "dining", "green", side=np.array(side), gap=0.12)
    # Sofa on the right wall facing -x, a picture above it; bookshelf and cabinet on the bottom wall.
    sofa_m = build("sofa", rng, variant="sofa", color="blue")
    sofa = L.add(sofa_m, np.array([6.0 + sofa_m.lo[1], 3.6, 0.0]), np.array([-1.0, 0.0]), wall=1)
    L.picture(above=sofa)
    shelf_m = build("bookshelf", rng, variant="tall", color="brown")
    L.add(shelf_m, np.array([0.9, -shelf_m.lo[1], 0.0]), np.array([0.0, 1.0]), wall=0)
    cab_m = build("cabinet", rng, variant="dresser", color="white")
    cab = L.add(cab_m, np.array([2.6, -cab_m.lo[1], 0.0]), np.array([0.0, 1.0]), wall=0)
    L.on(cab, "box", "small", "yellow")
    plant_m = build("plant", rng, variant="bush", color="white")
    L.add(plant_m, np.array([0.4, 4.55, 0.0]), np.array([1.0, 0.0]))
    return L


_DEMO_POINTS_PER_DENSITY = 95.5  # demo_room points per unit of RoomConfig.density (measured)


def demo_room(seed: int = 0, config: RoomConfig | None = None, *, n_points: int | None = None) -> SyntheticScene:
    """The fixed demo room (layout, classes and colours never change; ``seed`` changes the sampling).

    It holds a desk with a red chair in front of it, a monitor and a lamp on it and a bin under it;
    a white table with three green chairs; a blue sofa with a picture above it; a bookshelf, a white
    cabinet with a yellow box on it, a plant, a door, a window with curtains. "the chair next to the
    desk" names exactly one of its four chairs. About 190k points at the default density;
    ``n_points`` sets the density for about that many instead and caps the count at it (a random
    subset, in the original order).
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    cfg = config or RoomConfig()
    if n_points is not None:
        if not isinstance(n_points, (int, np.integer)) or isinstance(n_points, bool) or n_points < 1000:
            raise ValueError(f"n_points must be an int >= 1000, got {n_points!r}")
        cfg = replace(cfg, density=1.1 * n_points / _DEMO_POINTS_PER_DENSITY,
                      min_object_points=min(cfg.min_object_points, 10))
    rng = np.random.default_rng(np.random.SeedSequence([0xDE40]))  # layout: fixed
    layout = _demo_layout(rng)
    srng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xDE41]))
    scene = _finish("synth_demo", layout, cfg, srng, "demo")
    if n_points is not None and len(scene.xyz) > n_points:
        keep = np.sort(srng.choice(len(scene.xyz), int(n_points), replace=False))
        scene.xyz, scene.rgb = scene.xyz[keep], scene.rgb[keep]
        scene.instance, scene.semantic = scene.instance[keep], scene.semantic[keep]
    return scene
