"""Synthetic indoor scenes: procedural rooms, fused-scan-like point sampling, referring expressions.

``minimal_room`` is the small, fixed room the tests and the superpoint benchmark use: a floor, four
walls and a few furniture boxes. The procedural generator builds varied rooms on the same
conventions:

- **Rooms** (``generate_room``): rectangular or L-shaped, 2.2 - 8.5 m a side, 2.4 - 3.0 m high, of a
  type (bedroom, office, living room, kitchen, bathroom, conference room, studio) that decides the
  furniture; doors and windows are openings cut into the walls.
- **Furniture** (``furniture.py``): ScanNet-like classes built from parametric parts with varied
  proportions and named colours, placed without overlaps by 2D rejection sampling on the floor
  (against walls, free-standing, around tables, beside beds), on top of hosts (monitors on desks,
  lamps on nightstands, boxes on cabinets), under hosts (bins under desks) and on walls (pictures
  above beds and sofas, curtains beside windows).
- **Sampling** (like a fused RGB-D scan): points on the visible surfaces in proportion to area,
  uneven density (per object, smooth in space, thinner high up and on undersides), surfaces that
  are inside other solids removed (bottoms on the floor, backs against walls, the floor under
  cabinets, the wall behind a picture), less floor under legged furniture, random scan holes,
  gaussian noise, shading and per-room white balance. Vectorized: one room in well under a second.
- Labels: per-point ``instance`` (index into ``objects``; the floor and every wall are objects of
  class floor / wall) and ``semantic`` (index into ``CLASSES``).
- **Expressions** (``expressions.py``) and **data sets** (``generate_dataset`` / ``bqnet-synth``):
  per-scene ``.npz`` + ScanRefer and Multi3DRefer JSON, as ``docs/architecture.md`` describes.

Everything is deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from bqnet_model.data.furniture import (
    FLOOR_COLORS, WALL_COLORS, ObjectModel, Part, build, local_rect_to_world, place_parts,
)

# ScanNet-like class names; index = semantic label.
CLASSES: tuple[str, ...] = (
    "floor", "wall", "chair", "table", "desk", "bed", "sofa", "cabinet", "bookshelf",
    "toilet", "sink", "bathtub", "refrigerator", "monitor", "lamp", "trash can", "box",
    "plant", "door", "window", "picture", "curtain",
)
CLASS_ID = {name: i for i, name in enumerate(CLASSES)}
ROOM_TYPES: tuple[str, ...] = ("bedroom", "office", "living", "kitchen", "bathroom", "conference", "studio")


@dataclass
class SceneObject:
    """One labelled object of a synthetic scene.

    ``front`` is the world direction the object faces (a chair's seat side, a cabinet's doors, a
    door's room side), ``None`` for objects without one (tables, lamps, boxes). ``support`` is the
    instance id of the object it stands on (-1: the floor or a wall); ``wall`` the instance id of
    the wall it stands against or hangs on (-1: none).
    """

    instance_id: int
    name: str
    color_name: str
    box_min: np.ndarray  # (3,) float
    box_max: np.ndarray  # (3,) float
    front: np.ndarray | None = None  # (2,) float, unit axis direction
    support: int = -1
    variant: str = ""
    mount: str = "floor"  # floor | wall | on | under | in_wall | structure
    wall: int = -1

    @property
    def center(self) -> np.ndarray:
        return (np.asarray(self.box_min, float) + np.asarray(self.box_max, float)) / 2


@dataclass
class Wall:
    """An axis-aligned wall segment from ``p0`` to ``p1`` with its inward (room side) normal."""

    p0: np.ndarray  # (2,)
    p1: np.ndarray  # (2,)
    normal: np.ndarray  # (2,) unit, pointing into the room

    @property
    def axis(self) -> int:
        """The axis the normal lies on (0: the wall is a plane x = const)."""
        return int(np.argmax(np.abs(self.normal)))

    @property
    def coord(self) -> float:
        return float(self.p0[self.axis])

    @property
    def span(self) -> tuple[float, float]:
        lat = 1 - self.axis
        a, b = float(self.p0[lat]), float(self.p1[lat])
        return (min(a, b), max(a, b))

    @property
    def length(self) -> float:
        return float(np.abs(self.p1 - self.p0).sum())


@dataclass
class Room:
    """Floor polygon (a rectangle, or one with a corner ``notch`` cut out), height and walls."""

    width: float
    depth: float
    height: float
    shape: str  # "rect" | "L"
    notch: np.ndarray | None  # (4,) x0, y0, x1, y1 of the removed corner, or None
    walls: list[Wall]

    @property
    def area(self) -> float:
        a = self.width * self.depth
        if self.notch is not None:
            a -= float((self.notch[2] - self.notch[0]) * (self.notch[3] - self.notch[1]))
        return a

    def contains(self, xy: np.ndarray) -> np.ndarray:
        """Whether points (M, 2) lie on the floor."""
        xy = np.asarray(xy, float).reshape(-1, 2)
        ok = (xy[:, 0] >= 0) & (xy[:, 0] <= self.width) & (xy[:, 1] >= 0) & (xy[:, 1] <= self.depth)
        if self.notch is not None:
            n = self.notch
            ok &= ~((xy[:, 0] > n[0]) & (xy[:, 0] < n[2]) & (xy[:, 1] > n[1]) & (xy[:, 1] < n[3]))
        return ok

    def floor_rects(self) -> list[np.ndarray]:
        """The floor as disjoint rectangles (x0, y0, x1, y1): one, or two for an L."""
        if self.notch is None:
            return [np.array([0.0, 0.0, self.width, self.depth])]
        n = self.notch
        xa = (n[2], self.width) if n[0] <= 1e-9 else (0.0, n[0])
        ya = (n[3], self.depth) if n[1] <= 1e-9 else (0.0, n[1])
        return [np.array([xa[0], 0.0, xa[1], self.depth]), np.array([n[0], ya[0], n[2], ya[1]])]


@dataclass
class SyntheticScene:
    """A labelled point cloud: xyz metres, rgb uint8, per-point instance / class ids.

    ``minimal_room`` gives int32 labels (kept as it was); generated rooms give int64, as the
    per-scene file format. ``room`` is the floor plan of generated rooms (None for ``minimal_room``).
    """

    scene_id: str
    xyz: np.ndarray  # (N, 3) float32
    rgb: np.ndarray  # (N, 3) uint8
    instance: np.ndarray  # (N,) int, index into ``objects``
    semantic: np.ndarray  # (N,) int, index into CLASSES
    objects: list[SceneObject] = field(default_factory=list)
    room: Room | None = None
    room_type: str = ""

    @property
    def object_names(self) -> np.ndarray:
        """Class name per instance id (the ``object_names`` array of the per-scene file)."""
        return np.asarray([o.name for o in self.objects], dtype=str)


def sample_box_surface(
    rng: np.random.Generator, box_min: np.ndarray, box_max: np.ndarray, n: int,
    faces: tuple[int, ...] = (0, 1, 2, 3, 4, 5),
) -> np.ndarray:
    """Sample ``n`` points uniformly (by area) on the chosen faces of an axis-aligned box.

    Faces: 0/1 = -x/+x, 2/3 = -y/+y, 4/5 = -z/+z. Vectorized.
    """
    box_min = np.asarray(box_min, np.float64)
    box_max = np.asarray(box_max, np.float64)
    ext = box_max - box_min
    areas = np.array([ext[1] * ext[2], ext[1] * ext[2], ext[0] * ext[2], ext[0] * ext[2],
                      ext[0] * ext[1], ext[0] * ext[1]])
    mask = np.zeros(6, bool)
    mask[list(faces)] = True
    areas = np.where(mask, areas, 0.0)
    face = rng.choice(6, size=n, p=areas / areas.sum())
    pts = box_min + rng.random((n, 3)) * ext
    axis = face // 2
    side = face % 2
    pts[np.arange(n), axis] = np.where(side == 1, box_max[axis], box_min[axis])
    return pts


def _color(rng: np.random.Generator, base: tuple[int, int, int], n: int, noise: float = 8.0) -> np.ndarray:
    c = np.asarray(base, np.float64)[None] + rng.normal(0.0, noise, (n, 3))
    return np.clip(c, 0, 255).astype(np.uint8)


def minimal_room(n_points: int = 60_000, seed: int = 0, noise: float = 0.004) -> SyntheticScene:
    """A 5 x 4 x 2.5 m room: floor, 4 walls, a desk, a chair next to it, a table, a cabinet.

    Points are spread over the surfaces in proportion to area (floor under objects and
    box bottoms are left out, as in a fused scan), then jittered by ``noise`` metres.
    Deterministic for a given ``seed``.
    """
    rng = np.random.default_rng(seed)
    W, D, H, T = 5.0, 4.0, 2.5, 0.1
    parts: list[tuple[str, str, tuple[int, int, int], tuple[float, ...], tuple[float, ...], tuple[int, ...]]] = [
        ("floor", "grey", (128, 128, 120), (0, 0, -T), (W, D, 0), (5,)),
        ("wall", "white", (220, 220, 210), (-T, 0, 0), (0, D, H), (1,)),
        ("wall", "white", (215, 215, 205), (W, 0, 0), (W + T, D, H), (0,)),
        ("wall", "beige", (210, 200, 170), (0, -T, 0), (W, 0, H), (3,)),
        ("wall", "beige", (205, 195, 165), (0, D, 0), (W, D + T, H), (2,)),
        ("desk", "brown", (120, 80, 40), (0.3, 3.0, 0), (1.9, 3.8, 0.75), (0, 1, 2, 3, 5)),
        ("chair", "red", (200, 30, 30), (0.8, 2.3, 0), (1.3, 2.8, 0.9), (0, 1, 2, 3, 5)),
        ("table", "white", (235, 235, 235), (3.0, 1.2, 0), (4.2, 2.2, 0.72), (0, 1, 2, 3, 5)),
        ("cabinet", "blue", (40, 60, 170), (4.3, 3.2, 0), (4.9, 3.9, 1.6), (0, 1, 2, 3, 5)),
        ("chair", "green", (40, 150, 60), (3.3, 0.5, 0), (3.8, 1.0, 0.9), (0, 1, 2, 3, 5)),
    ]
    areas = []
    for _, _, _, lo, hi, faces in parts:
        e = np.subtract(hi, lo)
        fa = [e[1] * e[2]] * 2 + [e[0] * e[2]] * 2 + [e[0] * e[1]] * 2
        areas.append(sum(fa[f] for f in faces))
    counts = np.floor(np.asarray(areas) / np.sum(areas) * n_points).astype(int)
    counts[0] += n_points - counts.sum()
    xyz, rgb, inst, sem, objects = [], [], [], [], []
    for i, ((name, cname, col, lo, hi, faces), n) in enumerate(zip(parts, counts)):
        p = sample_box_surface(rng, np.array(lo), np.array(hi), int(n), faces)
        if name == "floor":  # no floor points under furniture (occluded in a real scan)
            keep = np.ones(len(p), bool)
            for _, _, _, lo2, hi2, _ in parts[5:]:
                keep &= ~((p[:, 0] > lo2[0]) & (p[:, 0] < hi2[0]) & (p[:, 1] > lo2[1]) & (p[:, 1] < hi2[1]))
            p = p[keep]
        xyz.append(p)
        rgb.append(_color(rng, col, len(p)))
        inst.append(np.full(len(p), i, np.int32))
        sem.append(np.full(len(p), CLASS_ID[name], np.int32))
        objects.append(SceneObject(i, name, cname, np.array(lo, float), np.array(hi, float)))
    xyz_a = np.concatenate(xyz)
    xyz_a = (xyz_a + rng.normal(0.0, noise, xyz_a.shape)).astype(np.float32)
    return SyntheticScene("minimal_room", xyz_a, np.concatenate(rgb), np.concatenate(inst),
                          np.concatenate(sem), objects)


# ==============================================================================================
# Procedural rooms
# ==============================================================================================

@dataclass
class RoomConfig:
    """Knobs of the room generator (defaults give ~100k-300k points per room)."""

    density: float = 2000.0  # points per m^2 of visible surface, before scan thinning
    noise: float = 0.005  # gaussian xyz noise, metres
    color_noise: float = 6.0  # gaussian rgb noise per point
    dropout_patches: float = 1.5  # mean number of scan holes per room (Poisson)
    dropout_radius: tuple[float, float] = (0.1, 0.35)
    l_shape_prob: float = 0.35
    room_type: str | None = None  # one of ROOM_TYPES, None = drawn
    min_object_points: int = 40  # objects left with fewer points are dropped
    wall_thickness: float = 0.1

    def __post_init__(self) -> None:
        if not (np.isfinite(self.density) and self.density > 0):
            raise ValueError(f"density must be a positive number of points per m^2, got {self.density!r}")
        if self.noise < 0 or self.color_noise < 0 or self.dropout_patches < 0:
            raise ValueError("noise, color_noise and dropout_patches must be >= 0, got "
                             f"{self.noise!r}, {self.color_noise!r}, {self.dropout_patches!r}")
        if not 0.0 <= self.l_shape_prob <= 1.0:
            raise ValueError(f"l_shape_prob must be in [0, 1], got {self.l_shape_prob!r}")
        if self.room_type is not None and self.room_type not in ROOM_TYPES:
            raise ValueError(f"room_type must be one of {ROOM_TYPES} or None, got {self.room_type!r}")
        if len(self.dropout_radius) != 2 or not 0 < self.dropout_radius[0] <= self.dropout_radius[1]:
            raise ValueError(f"dropout_radius must be (min, max) with 0 < min <= max, got {self.dropout_radius!r}")


_ROOM_SIZE: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "bedroom": ((3.2, 5.0), (3.0, 4.5)), "office": ((3.5, 7.0), (3.0, 6.0)), "living": ((4.0, 7.0), (3.5, 6.0)),
    "kitchen": ((3.0, 5.0), (2.8, 4.5)), "bathroom": ((2.4, 3.6), (2.2, 3.2)), "conference": ((5.0, 8.0), (4.0, 6.5)),
    "studio": ((5.0, 8.5), (4.5, 7.0)),
}


def _make_room(rng: np.random.Generator, room_type: str, l_prob: float) -> Room:
    (wa, wb), (da, db) = _ROOM_SIZE[room_type]
    W, D = round(float(rng.uniform(wa, wb)), 2), round(float(rng.uniform(da, db)), 2)
    H = round(float(rng.uniform(2.4, 3.0)), 2)
    corners = [np.array(c, float) for c in ((0, 0), (W, 0), (W, D), (0, D))]
    notch = None
    verts = corners
    if room_type != "bathroom" and rng.random() < l_prob:
        k = int(rng.integers(4))
        a, b = W * float(rng.uniform(0.3, 0.45)), D * float(rng.uniform(0.3, 0.45))
        c = corners[k]
        x0, x1 = (c[0], c[0] + a) if c[0] == 0 else (c[0] - a, c[0])
        y0, y1 = (c[1], c[1] + b) if c[1] == 0 else (c[1] - b, c[1])
        notch = np.array([x0, y0, x1, y1])
        d_in = corners[k] - corners[k - 1]
        d_in /= np.abs(d_in).sum()
        d_out = corners[(k + 1) % 4] - corners[k]
        d_out /= np.abs(d_out).sum()
        cut_in = a if abs(d_in[0]) > 0 else b
        cut_out = a if abs(d_out[0]) > 0 else b
        p1 = c - d_in * cut_in
        verts = corners[:k] + [p1, p1 + d_out * cut_out, c + d_out * cut_out] + corners[k + 1:]
    walls = []
    for i in range(len(verts)):
        p0, p1 = verts[i], verts[(i + 1) % len(verts)]
        t = (p1 - p0) / np.abs(p1 - p0).sum()
        walls.append(Wall(p0.copy(), p1.copy(), np.array([-t[1], t[0]])))
    return Room(W, D, H, "L" if notch is not None else "rect", notch, walls)


@dataclass
class _Placed:
    model: ObjectModel
    origin: np.ndarray  # (3,)
    front: np.ndarray  # (2,)
    parts: list[Part]
    rect: np.ndarray  # (4,) world footprint
    support: int = -1  # layout index of the host it stands on
    wall: int = -1  # wall index
    on_rects: list[np.ndarray] = field(default_factory=list)
    under_rects: list[np.ndarray] = field(default_factory=list)


def _model_rect(m: ObjectModel) -> tuple[float, float, float, float]:
    lo, hi = m.lo, m.hi
    return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))


def _overlap(r: np.ndarray, rs: np.ndarray, clearance: float) -> np.ndarray:
    return ((r[0] < rs[:, 2] + clearance) & (rs[:, 0] < r[2] + clearance)
            & (r[1] < rs[:, 3] + clearance) & (rs[:, 1] < r[3] + clearance))


_AXES = (np.array([1.0, 0.0]), np.array([-1.0, 0.0]), np.array([0.0, 1.0]), np.array([0.0, -1.0]))


class _Layout:
    """Furniture placement by 2D rejection sampling on the floor plan (and on walls and hosts)."""

    def __init__(self, rng: np.random.Generator, room: Room) -> None:
        self.rng = rng
        self.room = room
        self.objects: list[_Placed] = []
        self.rects: list[np.ndarray] = []  # occupied floor footprints and keep-out zones
        self.wall_occ: list[list[tuple[float, float, float, float]]] = [[] for _ in room.walls]
        self.occ_of: dict[int, tuple[float, float, float, float]] = {}  # wall-mounted object -> its interval

    # --- checks ---------------------------------------------------------------------------
    def inside(self, r: np.ndarray) -> bool:
        room = self.room
        if r[0] < -1e-6 or r[1] < -1e-6 or r[2] > room.width + 1e-6 or r[3] > room.depth + 1e-6:
            return False
        if room.notch is not None and _overlap(r, room.notch[None], -1e-6)[0]:
            return False
        return True

    def fits(self, r: np.ndarray, clearance: float = 0.05) -> bool:
        if not self.inside(r):
            return False
        return not (self.rects and _overlap(r, np.asarray(self.rects), clearance).any())

    def wall_free(self, w: int, l0: float, l1: float, z0: float, z1: float, margin: float = 0.05,
                  ignore: Sequence[tuple[float, float, float, float]] = ()) -> bool:
        a, b = self.room.walls[w].span
        if l0 < a - 1e-6 or l1 > b + 1e-6:
            return False
        for occ in self.wall_occ[w]:
            if any(occ is g for g in ignore):
                continue
            if l0 < occ[1] + margin and occ[0] < l1 + margin and z0 < occ[3] and occ[2] < z1:
                return False
        return True

    # --- adding ---------------------------------------------------------------------------
    def add(self, model: ObjectModel, origin: np.ndarray, front: np.ndarray, *, support: int = -1,
            wall: int = -1, footprint: bool = True) -> int:
        origin = np.asarray(origin, float)
        parts = place_parts(model, origin, front)
        rect = local_rect_to_world(_model_rect(model), origin, front)
        self.objects.append(_Placed(model, origin, np.asarray(front, float), parts, rect, support, wall))
        if footprint:
            self.rects.append(rect)
        if wall >= 0 and model.mount == "floor":
            lat = 1 - self.room.walls[wall].axis
            self.wall_occ[wall].append((rect[lat], rect[lat + 2], 0.0, origin[2] + float(model.hi[2])))
        return len(self.objects) - 1

    def _wall_origin(self, model: ObjectModel, wall: Wall, lat_start: float,
                     gap: float) -> tuple[np.ndarray, np.ndarray]:
        rel = local_rect_to_world(_model_rect(model), np.zeros(3), wall.normal)
        a, lat = wall.axis, 1 - wall.axis
        o = np.zeros(3)
        o[a] = wall.coord + gap - rel[a] if wall.normal[a] > 0 else wall.coord - gap - rel[a + 2]
        o[lat] = lat_start - rel[lat]
        return o, rel

    def _pick_wall(self, min_len: float) -> int | None:
        lengths = np.array([w.length for w in self.room.walls])
        ok = lengths >= min_len
        if not ok.any():
            return None
        p = np.where(ok, lengths, 0.0)
        return int(self.rng.choice(len(lengths), p=p / p.sum()))

    def against_wall(self, cls: str, variant: str | None = None, color: str | None = None, *,
                     tries: int = 40, corner: bool = False, wall: int | None = None) -> int | None:
        """A floor object with its back to a wall, facing into the room."""
        model = build(cls, self.rng, variant=variant, color=color)
        w_lat = float(model.size[0])
        h = float(model.hi[2])
        for _ in range(tries):
            wi = self._pick_wall(w_lat + 0.1) if wall is None else wall
            if wi is None:
                return None
            wl = self.room.walls[wi]
            a, b = wl.span
            if b - a < w_lat + 0.04:
                continue
            if corner:
                start = a + 0.02 if self.rng.random() < 0.5 else b - w_lat - 0.02
            else:
                start = float(self.rng.uniform(a + 0.02, b - w_lat - 0.02))
            o, rel = self._wall_origin(model, wl, start, float(self.rng.uniform(0.0, 0.003)))  # flush: hides the wall
            rect = np.concatenate([o[:2], o[:2]]) + rel
            lat = 1 - wl.axis
            if not self.fits(rect, 0.05) or not self.wall_free(wi, rect[lat], rect[lat + 2], 0.0, h):
                continue
            return self.add(model, o, wl.normal, wall=wi)
        return None

    def free(self, cls: str, variant: str | None = None, color: str | None = None, *, tries: int = 40,
             clearance: float = 0.3, near: int | None = None) -> int | None:
        """A free-standing floor object, random axis orientation (optionally within 1.2 m of ``near``)."""
        model = build(cls, self.rng, variant=variant, color=color)
        room = self.room
        for _ in range(tries):
            front = _AXES[int(self.rng.integers(4))]
            rel = local_rect_to_world(_model_rect(model), np.zeros(3), front)
            if near is not None:
                hr = self.objects[near].rect
                c = self.rng.uniform(hr[:2] - 1.2, hr[2:] + 1.2)
            else:
                c = self.rng.uniform([0.0, 0.0], [room.width, room.depth])
            o = np.array([c[0] - (rel[0] + rel[2]) / 2, c[1] - (rel[1] + rel[3]) / 2, 0.0])
            rect = np.concatenate([o[:2], o[:2]]) + rel
            if self.fits(rect, clearance):
                return self.add(model, o, front)
        return None

    def beside(self, host: int, cls: str, variant: str | None = None, color: str | None = None, *,
               side: int | None = None, tries: int = 6) -> int | None:
        """Next to a wall-standing host, along the same wall (nightstands, floor lamps, bins)."""
        hp = self.objects[host]
        if hp.wall < 0:
            return self.free(cls, variant, color, near=host, clearance=0.05)
        model = build(cls, self.rng, variant=variant, color=color)
        wl = self.room.walls[hp.wall]
        lat = 1 - wl.axis
        w_lat = float(model.size[0])
        h = float(model.hi[2])
        for _ in range(tries):
            s = side if side is not None else (1 if self.rng.random() < 0.5 else -1)
            gap = float(self.rng.uniform(0.03, 0.15))
            start = hp.rect[lat + 2] + gap if s > 0 else hp.rect[lat] - gap - w_lat
            o, rel = self._wall_origin(model, wl, start, 0.0)
            rect = np.concatenate([o[:2], o[:2]]) + rel
            if self.fits(rect, 0.02) and self.wall_free(hp.wall, rect[lat], rect[lat + 2], 0.0, h, margin=0.02):
                return self.add(model, o, wl.normal, wall=hp.wall)
        return None

    def facing(self, host: int, cls: str, variant: str | None = None, color: str | None = None, *,
               side: np.ndarray, gap: float, lateral: float = 0.0) -> int | None:
        """At ``side`` (a world axis) of the host, facing it: chairs at desks and tables."""
        hp = self.objects[host]
        model = build(cls, self.rng, variant=variant, color=color)
        u = np.asarray(side, float)
        front = -u
        rel = local_rect_to_world(_model_rect(model), np.zeros(3), front)
        a = int(np.argmax(np.abs(u)))
        lat = 1 - a
        o = np.zeros(3)
        o[a] = hp.rect[a + 2] + gap - rel[a] if u[a] > 0 else hp.rect[a] - gap - rel[a + 2]
        centre = (hp.rect[lat] + hp.rect[lat + 2]) / 2 + lateral
        o[lat] = centre - (rel[lat] + rel[lat + 2]) / 2
        rect = np.concatenate([o[:2], o[:2]]) + rel
        if not self.fits(rect, 0.02):
            return None
        return self.add(model, o, front)

    def on(self, host: int, cls: str, variant: str | None = None, color: str | None = None, *,
           at_back: bool = False, tries: int = 20) -> int | None:
        """Standing on the host's top surface; ``at_back`` near its back edge, facing its front."""
        hp = self.objects[host]
        if hp.model.top_rect is None or hp.model.top_z is None:
            return None
        model = build(cls, self.rng, variant=variant, color=color)
        top = local_rect_to_world(hp.model.top_rect, hp.origin, hp.front)
        z = hp.origin[2] + hp.model.top_z
        if z + float(model.hi[2]) > self.room.height - 0.1:
            return None
        for _ in range(tries):
            front = hp.front if (at_back and hp.model.has_front) else _AXES[int(self.rng.integers(4))]
            rel = local_rect_to_world(_model_rect(model), np.zeros(3), front)
            span = (top[2:] - top[:2]) - (rel[2:] - rel[:2])
            if (span < 0).any():
                return None
            lo = top[:2] - rel[:2] + self.rng.random(2) * span
            if at_back and hp.model.has_front:
                a = int(np.argmax(np.abs(front)))
                off = float(self.rng.uniform(0.0, 0.08))
                lo[a] = top[a] - rel[a] + off if front[a] > 0 else top[a + 2] - rel[a + 2] - off
            o = np.array([lo[0], lo[1], z])
            rect = np.concatenate([o[:2], o[:2]]) + rel
            if hp.on_rects and _overlap(rect, np.asarray(hp.on_rects), 0.03).any():
                continue
            hp.on_rects.append(rect)
            model.mount = "on"
            return self.add(model, o, front, support=host, footprint=False)
        return None

    def under(self, host: int, cls: str, variant: str | None = None, color: str | None = None, *,
              tries: int = 15) -> int | None:
        """On the floor beneath a host's top (bins and boxes under desks and tables)."""
        hp = self.objects[host]
        if hp.model.under_rect is None:
            return None
        model = build(cls, self.rng, variant=variant, color=color)
        if float(model.hi[2]) > hp.model.under_h:
            return None
        region = local_rect_to_world(hp.model.under_rect, hp.origin, hp.front)
        for _ in range(tries):
            front = _AXES[int(self.rng.integers(4))]
            rel = local_rect_to_world(_model_rect(model), np.zeros(3), front)
            span = (region[2:] - region[:2]) - (rel[2:] - rel[:2])
            if (span < 0).any():
                return None
            lo = region[:2] - rel[:2] + self.rng.random(2) * span
            o = np.array([lo[0], lo[1], 0.0])
            rect = np.concatenate([o[:2], o[:2]]) + rel
            if hp.under_rects and _overlap(rect, np.asarray(hp.under_rects), 0.03).any():
                continue
            hp.under_rects.append(rect)
            model.mount = "under"
            return self.add(model, o, front, footprint=False)
        return None

    def on_wall(self, model: ObjectModel, wi: int, centre: float, z0: float, *, margin: float = 0.1,
                ignore: Sequence[tuple[float, float, float, float]] = (), floor: bool = False) -> int | None:
        """Hang a wall-plane model (y = 0 on the wall) centred at ``centre`` along wall ``wi``."""
        wl = self.room.walls[wi]
        a, lat = wl.axis, 1 - wl.axis
        o = np.zeros(3)
        o[a] = wl.coord
        o[lat] = centre
        o[2] = z0
        rect = local_rect_to_world(_model_rect(model), o, wl.normal)
        z1 = z0 + float(model.hi[2])
        if not self.wall_free(wi, rect[lat], rect[lat + 2], z0, z1, margin=margin, ignore=ignore):
            return None
        if floor and not self.fits(rect, 0.02):
            return None
        idx = self.add(model, o, wl.normal, wall=wi, footprint=floor)
        self.occ_of[idx] = (rect[lat], rect[lat + 2], z0, z1)
        self.wall_occ[wi].append(self.occ_of[idx])
        return idx

    def door(self, tries: int = 30) -> int | None:
        model = build("door", self.rng, h=min(float(self.rng.uniform(2.0, 2.1)), self.room.height - 0.15))
        w = float(model.size[0])
        for _ in range(tries):
            wi = self._pick_wall(w + 0.5)
            if wi is None:
                return None
            wl = self.room.walls[wi]
            a, b = wl.span
            c = float(self.rng.uniform(a + w / 2 + 0.15, b - w / 2 - 0.15))
            idx = self.on_wall(model, wi, c, 0.0, margin=0.15)
            if idx is None:
                continue
            keep = np.zeros(4)
            lat, ax = 1 - wl.axis, wl.axis
            keep[lat], keep[lat + 2] = c - w / 2 - 0.1, c + w / 2 + 0.1
            keep[ax], keep[ax + 2] = sorted((wl.coord, wl.coord + float(wl.normal[ax]) * 0.9))
            self.rects.append(keep)
            return idx
        return None

    def window(self, tries: int = 30) -> int | None:
        H = self.room.height
        sill = float(self.rng.uniform(0.75, 1.0))
        h = float(min(self.rng.uniform(0.8, 1.4), H - sill - 0.3))
        model = build("window", self.rng, h=h)
        w = float(model.size[0])
        for _ in range(tries):
            wi = self._pick_wall(w + 0.4)
            if wi is None:
                return None
            a, b = self.room.walls[wi].span
            c = float(self.rng.uniform(a + w / 2 + 0.1, b - w / 2 - 0.1))
            idx = self.on_wall(model, wi, c, sill, margin=0.15)
            if idx is not None:
                return idx
        return None

    def curtains(self, win: int, p_side: float = 0.8) -> list[int]:
        """Curtains hanging at one or both sides of a window, partly over it."""
        wp = self.objects[win]
        wi = wp.wall
        wl = self.room.walls[wi]
        lat = 1 - wl.axis
        top = min(float(wp.origin[2] + wp.model.hi[2]) + 0.15, self.room.height - 0.05)
        color = None
        out: list[int] = []
        win_occ = [self.occ_of[win]]
        long_ = self.rng.random() < 0.7
        for s in (-1, 1):
            if self.rng.random() > p_side:
                continue
            cw = float(self.rng.uniform(0.3, 0.6))
            model = build("curtain", self.rng, variant="long" if long_ else "short", color=color, w=cw, h=top)
            color = model.color_name  # both sides alike
            edge = wp.rect[lat + 2] if s > 0 else wp.rect[lat]
            centre = edge + s * (cw / 2 - 0.12)
            idx = self.on_wall(model, wi, centre, 0.0, margin=0.02, ignore=win_occ, floor=long_)
            if idx is not None:
                out.append(idx)
        return out

    def picture(self, above: int | None = None, tries: int = 20) -> int | None:
        H = self.room.height
        model = build("picture", self.rng)
        h = float(model.hi[2])
        for _ in range(tries):
            if above is not None:
                hp = self.objects[above]
                if hp.wall < 0:
                    return None
                wi = hp.wall
                lat = 1 - self.room.walls[wi].axis
                c = float((hp.rect[lat] + hp.rect[lat + 2]) / 2)
                z0 = max(float(hp.origin[2] + hp.model.hi[2]) + float(self.rng.uniform(0.2, 0.45)), 1.0)
            else:
                wi = self._pick_wall(float(model.size[0]) + 0.3)
                if wi is None:
                    return None
                a, b = self.room.walls[wi].span
                w = float(model.size[0])
                c = float(self.rng.uniform(a + w / 2 + 0.1, b - w / 2 - 0.1))
                z0 = float(self.rng.uniform(1.1, 1.7))
            z0 = min(z0, H - h - 0.15)
            if z0 < 0.5:
                return None
            idx = self.on_wall(model, wi, c, z0)
            if idx is not None:
                return idx
            if above is not None:
                return None
        return None


# ---- furnishing recipes per room type ---------------------------------------------------------

def _chairs_around(L: _Layout, table: int, color: str | None, variant: str | None, p: float = 0.8) -> list[int]:
    """Chairs at the sides of a table, facing it; two on a long side when it is long enough."""
    hp = L.objects[table]
    ext = hp.rect[2:] - hp.rect[:2]
    out: list[int] = []
    for u in _AXES:
        a = int(np.argmax(np.abs(u)))
        side_len = ext[1 - a]
        n = 2 if side_len >= 1.4 else 1
        offs = [0.0] if n == 1 else [-side_len / 4, side_len / 4]
        for off in offs:
            if L.rng.random() < p:
                i = L.facing(table, "chair", variant, color, side=u, gap=float(L.rng.uniform(0.05, 0.25)),
                             lateral=off + float(L.rng.uniform(-0.05, 0.05)))
                if i is not None:
                    out.append(i)
    return out


def _workplace(L: _Layout, desk: int, p_monitor: float = 0.8) -> None:
    """A chair at the desk, things on it and maybe a bin under it."""
    rng = L.rng
    hp = L.objects[desk]
    L.facing(desk, "chair", "office" if rng.random() < 0.6 else "dining", None, side=hp.front,
             gap=float(rng.uniform(0.08, 0.3)), lateral=float(rng.uniform(-0.15, 0.15)))
    if rng.random() < p_monitor:
        for _ in range(1 if rng.random() < 0.7 else 2):
            L.on(desk, "monitor", "monitor", at_back=True)
    if rng.random() < 0.4:
        L.on(desk, "lamp", "desk")
    if rng.random() < 0.3:
        L.on(desk, "box", "small")
    if rng.random() < 0.2:
        L.on(desk, "plant", "small")
    if rng.random() < 0.5:
        L.under(desk, "trash can")


def _furnish_bedroom(L: _Layout) -> bool:
    rng = L.rng
    bed = L.against_wall("bed")
    _windows(L, 0.8)
    if bed is not None:
        for s in (-1, 1):
            if rng.random() < 0.7:
                ns = L.beside(bed, "cabinet", "nightstand", side=s)
                if ns is not None and rng.random() < 0.6:
                    L.on(ns, "lamp", "desk")
        if rng.random() < 0.6:
            L.picture(above=bed)
    if rng.random() < 0.7:
        cab = L.against_wall("cabinet", str(rng.choice(["wardrobe", "dresser"])))
        if cab is not None and rng.random() < 0.3:
            L.on(cab, "box") if rng.random() < 0.5 else L.on(cab, "monitor", "tv", at_back=True)
    if rng.random() < 0.5:
        desk = L.against_wall("desk")
        if desk is not None:
            _workplace(L, desk, 0.5)
    _extras(L, bookshelf=0.3, plant=0.4, bins=0.4, boxes=2, chair=0.3, lamp=0.3, pictures=1)
    return bed is not None


def _furnish_office(L: _Layout) -> bool:
    rng = L.rng
    desks = 0
    for _ in range(int(rng.integers(1, 4))):
        desk = L.against_wall("desk") if rng.random() < 0.7 else L.free("desk", clearance=0.9)
        if desk is not None:
            desks += 1
            _workplace(L, desk, 0.9)
    _windows(L, 0.4)
    for _ in range(int(rng.integers(1, 3))):
        L.against_wall("bookshelf")
    for _ in range(int(rng.integers(0, 3))):
        cab = L.against_wall("cabinet", "file")
        if cab is not None and rng.random() < 0.3:
            L.on(cab, "box")
    if rng.random() < 0.35:
        t = L.free("table", "rect", clearance=0.8)
        if t is not None:
            _chairs_around(L, t, None, "dining", 0.6)
    if rng.random() < 0.15:
        L.against_wall("sofa", "loveseat")
    if rng.random() < 0.1:
        L.against_wall("refrigerator")
    _extras(L, bookshelf=0.0, plant=0.7, bins=0.5, boxes=3, chair=0.3, lamp=0.2, pictures=2)
    return desks > 0


def _furnish_living(L: _Layout) -> bool:
    rng = L.rng
    sofa = L.against_wall("sofa")
    _windows(L, 0.8)
    if sofa is not None:
        ct = L.facing(sofa, "table", "coffee", side=L.objects[sofa].front, gap=float(rng.uniform(0.3, 0.5)))
        if ct is not None and rng.random() < 0.4:
            L.on(ct, "box", "small") if rng.random() < 0.5 else L.on(ct, "plant", "small")
        if rng.random() < 0.5:
            L.beside(sofa, "lamp", "floor")
        if rng.random() < 0.6:
            L.picture(above=sofa)
    if rng.random() < 0.8:
        stand = L.against_wall("cabinet", "tv_stand")
        if stand is not None:
            L.on(stand, "monitor", "tv", at_back=True)
    for _ in range(int(rng.integers(0, 3))):
        L.free("chair", "armchair", clearance=0.3)
    if rng.random() < 0.35:
        t = L.free("table", str(rng.choice(["rect", "round"])), clearance=0.8)
        if t is not None:
            _chairs_around(L, t, str(rng.choice(["brown", "black", "white"])), "dining")
    if rng.random() < 0.4:
        L.against_wall("cabinet", "dresser")
    _extras(L, bookshelf=0.6, plant=0.8, bins=0.3, boxes=2, chair=0.0, lamp=0.5, pictures=2)
    return sofa is not None


def _furnish_kitchen(L: _Layout) -> bool:
    rng = L.rng
    fridge = L.against_wall("refrigerator")
    sink = L.against_wall("sink", "vanity")
    t = L.free("table", str(rng.choice(["rect", "round"])), clearance=0.7)
    _windows(L, 0.4)
    for _ in range(int(rng.integers(1, 4))):
        cab = L.against_wall("cabinet", "kitchen")
        if cab is not None and rng.random() < 0.4:
            L.on(cab, "box", "small")
    if t is not None:
        _chairs_around(L, t, None if rng.random() < 0.4 else str(rng.choice(["brown", "white", "black", "red"])),
                       "dining")
    for _ in range(int(rng.integers(1, 3))):
        L.against_wall("trash can") if rng.random() < 0.6 else L.free("trash can", clearance=0.1)
    _extras(L, bookshelf=0.0, plant=0.3, bins=0.0, boxes=2, chair=0.0, lamp=0.1, pictures=1)
    return fridge is not None and sink is not None and t is not None


def _furnish_bathroom(L: _Layout) -> bool:
    rng = L.rng
    ok = L.against_wall("bathtub", corner=True) is not None
    ok &= L.against_wall("toilet") is not None
    ok &= L.against_wall("sink") is not None
    _windows(L, 0.3, 0, 2)
    if rng.random() < 0.7:
        L.against_wall("trash can", corner=True) if rng.random() < 0.5 else L.free("trash can", clearance=0.1)
    if rng.random() < 0.4:
        L.against_wall("cabinet", str(rng.choice(["nightstand", "file"])))
    _extras(L, bookshelf=0.0, plant=0.2, bins=0.0, boxes=1, chair=0.0, lamp=0.0, pictures=1)
    return ok


def _furnish_conference(L: _Layout) -> bool:
    rng = L.rng
    tables = 0
    for _ in range(int(rng.integers(1, 3))):
        t = L.free("table", "rect", clearance=0.9)
        if t is not None:
            tables += 1
            _chairs_around(L, t, None if rng.random() < 0.5 else str(rng.choice(["black", "grey", "blue"])),
                           str(rng.choice(["dining", "office"])), 0.85)
    if rng.random() < 0.7:
        stand = L.against_wall("cabinet", str(rng.choice(["tv_stand", "dresser"])))
        if stand is not None:
            L.on(stand, "monitor", "tv", at_back=True)
    if rng.random() < 0.4:
        desk = L.against_wall("desk")
        if desk is not None:
            _workplace(L, desk, 0.7)
    _windows(L, 0.4)
    _extras(L, bookshelf=0.4, plant=0.6, bins=0.6, boxes=2, chair=0.3, lamp=0.1, pictures=2)
    return tables > 0


def _furnish_studio(L: _Layout) -> bool:
    rng = L.rng
    bed = L.against_wall("bed")
    if bed is not None and rng.random() < 0.7:
        ns = L.beside(bed, "cabinet", "nightstand")
        if ns is not None and rng.random() < 0.5:
            L.on(ns, "lamp", "desk")
    sofa = L.against_wall("sofa")
    if sofa is not None:
        L.facing(sofa, "table", "coffee", side=L.objects[sofa].front, gap=float(rng.uniform(0.3, 0.5)))
        if rng.random() < 0.5:
            L.picture(above=sofa)
    _windows(L, 0.6)
    cab = L.against_wall("cabinet", "kitchen")
    if cab is not None and rng.random() < 0.4:
        L.on(cab, "box", "small")
    if rng.random() < 0.6:
        L.against_wall("refrigerator")
    if rng.random() < 0.5:
        L.against_wall("sink", "vanity")
    if rng.random() < 0.6:
        desk = L.against_wall("desk")
        if desk is not None:
            _workplace(L, desk, 0.6)
    if rng.random() < 0.5:
        t = L.free("table", str(rng.choice(["rect", "round"])), clearance=0.7)
        if t is not None:
            _chairs_around(L, t, None, "dining", 0.6)
    _extras(L, bookshelf=0.5, plant=0.6, bins=0.5, boxes=2, chair=0.2, lamp=0.4, pictures=2)
    return bed is not None and sofa is not None


def _extras(L: _Layout, *, bookshelf: float, plant: float, bins: float, boxes: int, chair: float,
            lamp: float, pictures: int) -> None:
    """Small things every room type may have, in numbers drawn from the given rates."""
    rng = L.rng
    if rng.random() < bookshelf:
        L.against_wall("bookshelf")
    if rng.random() < plant:
        L.against_wall("plant", corner=True) if rng.random() < 0.6 else L.free("plant", clearance=0.1)
    if rng.random() < 0.3 * plant:
        L.free("plant", clearance=0.1)
    if rng.random() < bins:
        L.against_wall("trash can") if rng.random() < 0.5 else L.free("trash can", clearance=0.1)
    for _ in range(int(rng.integers(0, boxes + 1))):
        L.free("box", clearance=0.05) if rng.random() < 0.6 else L.against_wall("box")
    if rng.random() < chair:
        L.free("chair", clearance=0.3)
    if rng.random() < lamp:
        L.against_wall("lamp", "floor", corner=True)
    for _ in range(int(rng.integers(0, pictures + 1))):
        L.picture()


def _windows(L: _Layout, curtain_p: float, lo: int = 1, hi: int = 4) -> None:
    """Windows on wall stretches still free (after the key furniture), some with curtains."""
    for _ in range(int(L.rng.integers(lo, hi))):
        w = L.window()
        if w is not None and L.rng.random() < curtain_p:
            L.curtains(w)


_FURNISH: dict[str, Callable[[_Layout], bool]] = {
    "bedroom": _furnish_bedroom, "office": _furnish_office, "living": _furnish_living,
    "kitchen": _furnish_kitchen, "bathroom": _furnish_bathroom, "conference": _furnish_conference,
    "studio": _furnish_studio,
}


def _layout_room(rng: np.random.Generator, room_type: str, cfg: RoomConfig) -> _Layout:
    """Doors, the room type's key furniture, windows, the rest; redrawn (up to 8 times) until the key
    furniture fits, so that every bedroom has a bed and every bathroom a toilet."""
    for _ in range(8):
        room = _make_room(rng, room_type, cfg.l_shape_prob)
        L = _Layout(rng, room)
        for _ in range(1 if rng.random() < 0.75 else 2):
            L.door()
        if _FURNISH[room_type](L):
            break
    return L


# ==============================================================================================
# Fused-scan-like sampling
# ==============================================================================================

_KIND = {"box": 0, "cyl": 1, "ell": 2}


@dataclass
class _Shape:
    """Objects of a room (floor, walls, furniture) as flat part arrays for vectorized sampling."""

    names: list[str]
    parts: list[Part]
    part_obj: np.ndarray  # (P,) object index of each part
    floor_keep: np.ndarray  # (O,)
    footprint: np.ndarray  # (O, 4) world xy rect of each object
    on_floor: np.ndarray  # (O,) bool: stands on the floor (its footprint shadows the floor)
    in_wall: np.ndarray  # (O,) bool
    is_wall: np.ndarray  # (O,) bool


def _structure_parts(room: Room, rng: np.random.Generator, T: float) -> tuple[list[Part], list[list[Part]]]:
    """Floor slabs (top face only) and one slab per wall (inner face only), outside the room."""
    fc = np.asarray(FLOOR_COLORS[int(rng.integers(len(FLOOR_COLORS)))], float)
    wc = np.asarray(WALL_COLORS[int(rng.integers(len(WALL_COLORS)))], float)
    floor = [Part("box", np.array([r[0], r[1], -T]), np.array([r[2], r[3], 0.0]), fc, 1 << 5, pattern=8.0)
             for r in room.floor_rects()]
    walls = []
    for wl in room.walls:
        a, lat = wl.axis, 1 - wl.axis
        lo, hi = np.zeros(3), np.zeros(3)
        l0, l1 = wl.span
        lo[lat], hi[lat] = l0, l1
        if wl.normal[a] > 0:
            lo[a], hi[a], bit = wl.coord - T, wl.coord, 2 * a + 1
        else:
            lo[a], hi[a], bit = wl.coord, wl.coord + T, 2 * a
        hi[2] = room.height
        walls.append([Part("box", lo, hi, wc + rng.normal(0, 3, 3), 1 << bit)])
    return floor, walls


def _ellipse_perimeter(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    h = ((a - b) / np.maximum(a + b, 1e-12)) ** 2
    return np.pi * (a + b) * (1 + 3 * h / (10 + np.sqrt(4 - 3 * h)))


def _sample_parts(parts: list[Part], part_obj: np.ndarray, density: np.ndarray, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points on the parts' sampled faces, by area: (xyz (N,3), normal (N,3), part index (N,))."""
    P = len(parts)
    kind = np.array([_KIND[p.kind] for p in parts])
    lo = np.stack([p.lo for p in parts])
    hi = np.stack([p.hi for p in parts])
    faces = np.array([p.faces for p in parts])
    pdens = np.array([0.0 if p.carve else p.density for p in parts]) * density[part_obj]
    ext = hi - lo
    # Patches: box faces 0..5; cylinder side (6), bottom (7), top (8); ellipsoid (9).
    area = np.zeros((P, 10))
    fa = np.stack([ext[:, 1] * ext[:, 2]] * 2 + [ext[:, 0] * ext[:, 2]] * 2 + [ext[:, 0] * ext[:, 1]] * 2, axis=1)
    bits = (faces[:, None] >> np.arange(6)[None]) & 1
    area[:, :6] = np.where((kind == 0)[:, None], fa * bits, 0.0)
    rx, ry, rz = ext[:, 0] / 2, ext[:, 1] / 2, ext[:, 2] / 2
    cyl = kind == 1
    area[:, 6] = np.where(cyl & (bits[:, 0] == 1), _ellipse_perimeter(rx, ry) * ext[:, 2], 0.0)
    area[:, 7] = np.where(cyl & (bits[:, 4] == 1), np.pi * rx * ry, 0.0)
    area[:, 8] = np.where(cyl & (bits[:, 5] == 1), np.pi * rx * ry, 0.0)
    pp = 1.6075
    ell_area = 4 * np.pi * (((rx * ry) ** pp + (rx * rz) ** pp + (ry * rz) ** pp) / 3) ** (1 / pp)
    area[:, 9] = np.where(kind == 2, ell_area, 0.0)
    # Undersides are seldom seen by a hand-held scanner: a third of the density.
    mult = np.ones(10)
    mult[4] = mult[7] = 0.3
    counts = rng.poisson(area * mult[None] * pdens[:, None])
    flat = counts.reshape(-1)
    pidx = np.repeat(np.repeat(np.arange(P), 10), flat)
    ptype = np.repeat(np.tile(np.arange(10), P), flat)
    n = len(pidx)
    u = rng.random((n, 3))
    plo, pext = lo[pidx], ext[pidx]
    xyz = plo + u * pext
    nrm = np.zeros((n, 3))
    # Box faces.
    m = ptype < 6
    ax = ptype[m] // 2
    side = ptype[m] % 2
    rows = np.flatnonzero(m)
    xyz[rows, ax] = plo[rows, ax] + side * pext[rows, ax]
    nrm[rows, ax] = np.where(side == 1, 1.0, -1.0)
    # Cylinder side and caps.
    c_xy = plo[:, :2] + pext[:, :2] / 2
    r_xy = pext[:, :2] / 2
    theta = u[:, 0] * 2 * np.pi
    cs = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    m = ptype == 6
    xyz[m, :2] = c_xy[m] + r_xy[m] * cs[m]
    g = cs[m] / np.maximum(r_xy[m], 1e-9)
    nrm[m, :2] = g / np.linalg.norm(g, axis=1, keepdims=True)
    m = (ptype == 7) | (ptype == 8)
    rad = np.sqrt(u[m, 1])[:, None]
    xyz[m, :2] = c_xy[m] + r_xy[m] * cs[m] * rad
    top = ptype[m] == 8
    xyz[m, 2] = np.where(top, plo[m, 2] + pext[m, 2], plo[m, 2])
    nrm[m, 2] = np.where(top, 1.0, -1.0)
    # Ellipsoids: directions uniform on the sphere, scaled to the radii.
    m = ptype == 9
    v = rng.normal(size=(int(m.sum()), 3))
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    rr = pext[m] / 2
    xyz[m] = plo[m] + rr + v * rr
    g = v / np.maximum(rr, 1e-9)
    nrm[m] = g / np.linalg.norm(g, axis=1, keepdims=True)
    return xyz, nrm, pidx


def _hidden(xyz: np.ndarray, pidx: np.ndarray, parts: list[Part], part_obj: np.ndarray, shape: _Shape,
            eps: float = 0.004) -> np.ndarray:
    """True for points inside another part's solid (hidden surfaces) or inside a wall opening.

    Points are grouped by object and 1 m tile; each group is tested only against the solids whose
    bounding box meets the group's, so a room costs a few hundred small vectorized tests.
    """
    lo = np.stack([p.lo for p in parts]) - eps
    hi = np.stack([p.hi for p in parts]) + eps
    kind = np.array([_KIND[p.kind] for p in parts])
    solid = np.array([p.solid or p.carve for p in parts])
    carve = np.array([p.carve for p in parts])
    wall_part = shape.is_wall[part_obj]
    obj = part_obj[pidx]
    tile = (np.floor(xyz[:, 0]).astype(np.int64) + 64) * 256 + (np.floor(xyz[:, 1]).astype(np.int64) + 64)
    key = obj.astype(np.int64) * (1 << 20) + tile
    order = np.argsort(key, kind="stable")
    ks = key[order]
    starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    ends = np.r_[starts[1:], len(ks)]
    pts = xyz[order]
    glo = np.minimum.reduceat(pts, starts, axis=0)
    ghi = np.maximum.reduceat(pts, starts, axis=0)
    gobj = obj[order][starts]
    hit = (glo[:, None, :] <= hi[None]).all(-1) & (ghi[:, None, :] >= lo[None]).all(-1) & solid[None]
    # Openings cut walls only; walls do not cut what sits in their openings.
    hit &= ~carve[None] | shape.is_wall[gobj][:, None]
    hit &= ~(wall_part[None] & shape.in_wall[gobj][:, None])
    hidden = np.zeros(len(xyz), bool)
    for g in np.flatnonzero(hit.any(1)):
        cand = np.flatnonzero(hit[g])
        s, e = starts[g], ends[g]
        p = pts[s:e]
        own = pidx[order[s:e]]
        inside = np.zeros(len(p), bool)
        for k in (0, 1, 2):
            ck = cand[kind[cand] == k]
            if len(ck) == 0:
                continue
            clo, chi = lo[ck], hi[ck]
            in_box = ((p[:, None, :] > clo[None]) & (p[:, None, :] < chi[None])).all(-1)
            if k > 0:
                c = (clo + chi) / 2
                r = (chi - clo) / 2
                q = ((p[:, None, :] - c[None]) / r[None]) ** 2
                in_box &= (q[..., 0] + q[..., 1] < 1.0) if k == 1 else (q.sum(-1) < 1.0)
            in_box &= own[:, None] != ck[None]
            inside |= in_box.any(1)
        hidden[order[s:e]] = inside
    return hidden


def _hash_noise(cells: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic pseudo-random values in [-1, 1] per integer cell (M, 3)."""
    h = (cells[:, 0] * 73856093) ^ (cells[:, 1] * 19349663) ^ (cells[:, 2] * 83492791) ^ (salt * 2654435761)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h & 0xFFFF).astype(np.float64) / 32767.5) - 1.0


def _render(shape: _Shape, room: Room, rng: np.random.Generator, cfg: RoomConfig
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample the scene like a fused RGB-D scan: (xyz float32, rgb uint8, instance int64)."""
    parts, part_obj = shape.parts, shape.part_obj
    O = len(shape.names)
    obj_density = cfg.density * np.clip(rng.lognormal(0.0, 0.25, O), 0.6, 1.5)
    xyz, nrm, pidx = _sample_parts(parts, part_obj, obj_density, rng)
    keep = ~_hidden(xyz, pidx, parts, part_obj, shape)
    inst = part_obj[pidx]
    # Less floor under furniture standing on legs; none under solid bases (done by _hidden).
    floor_pts = np.flatnonzero(keep & (inst == 0))
    fp = xyz[floor_pts, :2]
    cand = np.flatnonzero(shape.on_floor & (shape.floor_keep < 1.0))
    if len(cand) and len(fp):
        r = shape.footprint[cand]
        under = ((fp[:, None, 0] > r[None, :, 0]) & (fp[:, None, 0] < r[None, :, 2])
                 & (fp[:, None, 1] > r[None, :, 1]) & (fp[:, None, 1] < r[None, :, 3]))
        p_keep = np.where(under, shape.floor_keep[cand][None], 1.0).min(1)
        keep[floor_pts] &= rng.random(len(floor_pts)) < p_keep
    # Uneven coverage: a smooth random field, thinner towards the ceiling.
    k = rng.normal(0.0, 1.0, (4, 3)) * (2 * np.pi / rng.uniform(1.5, 4.0, (4, 1)))
    phase = rng.uniform(0, 2 * np.pi, 4)
    proj = xyz[:, 0:1] * k[:, 0] + xyz[:, 1:2] * k[:, 1] + xyz[:, 2:3] * k[:, 2]  # no BLAS: it spins on busy cores
    field_ = 1.0 + 0.3 * np.sin(proj + phase).mean(1)
    hfall = 1.0 - 0.45 * np.clip((xyz[:, 2] - 1.8) / max(room.height - 1.8, 0.1), 0.0, 1.0)
    keep &= rng.random(len(xyz)) < np.clip(field_ * hfall / 1.15, 0.05, 1.0)
    # Scan holes: random spheres around surface points, never taking most of an object.
    n_holes = int(rng.poisson(cfg.dropout_patches))
    alive = np.flatnonzero(keep)
    if n_holes and len(alive):
        centres = xyz[alive[rng.integers(0, len(alive), n_holes)]]
        radii = rng.uniform(cfg.dropout_radius[0], cfg.dropout_radius[1], n_holes)
        d2 = ((xyz[alive, None, :] - centres[None]) ** 2).sum(-1)
        in_hole = (d2 < radii[None] ** 2).any(1)
        before = np.bincount(inst[alive], minlength=O)
        lost = np.bincount(inst[alive][in_hole], minlength=O)
        protect = lost > 0.5 * before
        keep[alive[in_hole & ~protect[inst[alive]]]] = False
    xyz, nrm, pidx, inst = xyz[keep], nrm[keep], pidx[keep], inst[keep]
    # Colour: part colour, per-object tint, blocky texture, shading, white balance, noise.
    base = np.stack([p.color for p in parts])
    tint = rng.normal(0.0, 7.0, (O, 3))
    pattern = np.array([p.pattern for p in parts])
    col = base[pidx] + tint[inst]
    pat_parts = np.flatnonzero(pattern[pidx] > 0)
    if len(pat_parts):
        cells = np.floor(xyz[pat_parts] / 0.06).astype(np.int64)
        amp = pattern[pidx[pat_parts]][:, None]
        col[pat_parts] += amp * np.stack([_hash_noise(cells, s) for s in (1, 2, 3)], axis=1)
    light = np.array([0.35, 0.25, 0.9])
    light /= np.linalg.norm(light)
    shade = 0.72 + 0.18 * (nrm * light).sum(1) + 0.1 * nrm[:, 2]
    gain = rng.uniform(0.92, 1.08, 3) * rng.uniform(0.9, 1.08)
    col = col * shade[:, None] * gain[None] + rng.normal(0.0, cfg.color_noise, col.shape)
    rgb = np.clip(np.rint(col), 0, 255).astype(np.uint8)
    xyz = xyz + rng.normal(0.0, cfg.noise, xyz.shape)
    return xyz.astype(np.float32), rgb, inst.astype(np.int64)


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


# ==============================================================================================
# Expressions and data sets
# ==============================================================================================

def room_with_expressions(seed: int = 0, *, demo: bool = False, config: RoomConfig | None = None,
                          expr_config: Any = None) -> tuple[SyntheticScene, list[Any]]:
    """A room and its verified referring expressions (``expressions.Expression``).

    ``demo=True`` gives ``demo_room(seed)`` with the demo sentences first ("the chair next to the
    desk", a several-target and a zero-target sentence), then generated ones.
    """
    from bqnet_model.data import expressions as ex

    if demo:
        scene = demo_room(seed, config)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xE1]))
        return scene, ex.demo_expressions(scene) + ex.generate_expressions(scene, rng, expr_config)
    scene = generate_room(seed, config)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xE2]))
    return scene, ex.generate_expressions(scene, rng, expr_config)


def _superpoint_fn(mode: bool | None) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    """The online oversegmentation if wanted and available (None: write -1)."""
    if mode is False:
        return None
    try:
        from bqnet_model.superpoints import oversegment  # type: ignore[import-not-found]
    except ImportError as exc:
        if mode is True:
            raise ImportError("superpoints requested but bqnet_model.superpoints.oversegment is not "
                              f"importable ({exc}); use superpoints=False / --no-superpoints") from exc
        warnings.warn("bqnet_model.superpoints is not importable: writing superpoint = -1", RuntimeWarning,
                      stacklevel=3)
        return None
    return lambda xyz, rgb: np.asarray(oversegment(xyz, rgb), dtype=np.int64)


def save_scene(path: str | os.PathLike, scene: SyntheticScene, superpoint: np.ndarray | None = None) -> None:
    """Write the architecture's per-scene ``.npz`` (superpoint -1 when not given)."""
    n = len(scene.xyz)
    sp = np.full(n, -1, np.int64) if superpoint is None else np.asarray(superpoint, np.int64)
    if sp.shape != (n,):
        raise ValueError(f"superpoint must have shape ({n},), got {sp.shape}")
    np.savez(path, xyz=scene.xyz.astype(np.float32), rgb=scene.rgb.astype(np.uint8), superpoint=sp,
             semantic=scene.semantic.astype(np.int64), instance=scene.instance.astype(np.int64),
             object_names=scene.object_names)


@dataclass
class DatasetSummary:
    """What ``generate_dataset`` wrote and how long it took."""

    out_dir: str
    scene_ids: list[str]
    n_points: list[int]
    seconds_per_room: list[float]  # wall clock of room generation + sampling (not expressions, superpoints, I/O)
    cpu_seconds_per_room: list[float]  # the same in process CPU time (fair on a busy machine)
    eval_type_counts: dict[str, int]
    relation_counts: dict[str, int]
    scanrefer_json: str
    multi3drefer_json: str
    superpoints: bool


def generate_dataset(out_dir: str | os.PathLike, n_scenes: int, seed: int = 0, split_name: str = "train", *,
                     config: RoomConfig | None = None, expr_config: Any = None, superpoints: bool | None = None,
                     progress: bool = False, first_index: int = 0) -> DatasetSummary:
    """Write ``n_scenes`` rooms as ``<scene_id>.npz`` plus ``<split>_scanrefer.json`` (single-target
    sentences, ``eval_type`` unique/multiple) and ``<split>_multi3drefer.json`` (all sentences,
    ``eval_type`` zt_w_d / zt_wo_d / st_w_d / st_wo_d / mt).

    Scene ``i`` depends only on (seed, split_name, i), so splits with one seed differ and a data set
    can be extended. ``superpoints``: None = use ``bqnet_model.superpoints`` when importable (else -1
    with a warning), True = required, False = write -1.
    """
    from bqnet_model.data import expressions as ex

    if not isinstance(n_scenes, (int, np.integer)) or isinstance(n_scenes, bool) or n_scenes < 1:
        raise ValueError(f"n_scenes must be a positive int, got {n_scenes!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not split_name or not all(c.isalnum() or c in "_-" for c in split_name):
        raise ValueError(f"split_name must be a non-empty word of letters, digits, '_' or '-', got {split_name!r}")
    cfg = config or RoomConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sp_fn = _superpoint_fn(superpoints)
    salt = zlib.crc32(split_name.encode())
    scanrefer: list[dict[str, Any]] = []
    multi: list[dict[str, Any]] = []
    ids, npts, secs, cpu = [], [], [], []
    et_counts: dict[str, int] = {}
    rel_counts: dict[str, int] = {}
    it: Any = range(first_index, first_index + int(n_scenes))
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc=f"bqnet-synth {split_name}", unit="room")
    for i in it:
        ss = np.random.SeedSequence([int(seed), salt, int(i)])
        room_rng, expr_rng = (np.random.default_rng(s) for s in ss.spawn(2))
        t0, c0 = time.perf_counter(), time.process_time()
        room_type = cfg.room_type or ROOM_TYPES[int(room_rng.integers(len(ROOM_TYPES)))]
        layout = _layout_room(room_rng, room_type, cfg)
        scene_id = f"synth_{split_name}_{int(i):05d}"
        scene = _finish(scene_id, layout, cfg, room_rng, room_type)
        secs.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        exprs = ex.generate_expressions(scene, expr_rng, expr_config)
        sp = sp_fn(scene.xyz, scene.rgb) if sp_fn is not None else None
        save_scene(out / f"{scene_id}.npz", scene, sp)
        ids.append(scene_id)
        npts.append(len(scene.xyz))
        for k, e in enumerate(exprs):
            et_counts[e.eval_type] = et_counts.get(e.eval_type, 0) + 1
            rel_counts[e.relation] = rel_counts.get(e.relation, 0) + 1
            multi.append(e.to_multi3drefer(scene_id, k))
            if e.scanrefer_eval_type is not None:
                scanrefer.append(e.to_scanrefer(scene_id, k))
    sr_path = out / f"{split_name}_scanrefer.json"
    m3_path = out / f"{split_name}_multi3drefer.json"
    sr_path.write_text(json.dumps(scanrefer, indent=1))
    m3_path.write_text(json.dumps(multi, indent=1))
    return DatasetSummary(str(out), ids, npts, secs, cpu, et_counts, rel_counts, str(sr_path), str(m3_path),
                          sp_fn is not None)


def main(argv: Sequence[str] | None = None) -> int:
    """``bqnet-synth --out DIR --scenes N --seed S --split train``: write a synthetic data set."""
    ap = argparse.ArgumentParser(prog="bqnet-synth", description=main.__doc__)
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--scenes", type=int, required=True, help="number of rooms")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="train", help="split name (file prefix and seed salt)")
    ap.add_argument("--first-index", type=int, default=0, help="index of the first room (to extend a set)")
    ap.add_argument("--density", type=float, default=RoomConfig.density, help="points per m^2 before thinning")
    ap.add_argument("--room-type", choices=ROOM_TYPES, default=None)
    sp = ap.add_mutually_exclusive_group()
    sp.add_argument("--superpoints", dest="superpoints", action="store_true", default=None,
                    help="compute superpoints (fail if bqnet_model.superpoints is missing)")
    sp.add_argument("--no-superpoints", dest="superpoints", action="store_false",
                    help="write superpoint = -1")
    args = ap.parse_args(argv)
    if args.scenes < 1:
        ap.error("--scenes must be >= 1")
    cfg = RoomConfig(density=args.density, room_type=args.room_type)
    s = generate_dataset(args.out, args.scenes, args.seed, args.split, config=cfg, superpoints=args.superpoints,
                         progress=True, first_index=args.first_index)
    n = np.asarray(s.n_points)
    print(f"wrote {len(s.scene_ids)} rooms to {s.out_dir}: {int(n.mean())} points/room "
          f"(min {int(n.min())}, max {int(n.max())}), {np.mean(s.seconds_per_room):.3f} s/room "
          f"({np.mean(s.cpu_seconds_per_room):.3f} s CPU), "
          f"superpoints {'yes' if s.superpoints else 'no (-1)'}")
    print("expressions per eval_type:", json.dumps(dict(sorted(s.eval_type_counts.items()))))
    print("expressions per relation:", json.dumps(dict(sorted(s.relation_counts.items()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
