"""Floor plans and furniture placement: rectangular or L-shaped rooms, 2.2 - 8.5 m a side,
2.4 - 3.0 m high, and ``_Layout``, which places parametric furniture without overlaps by 2D
rejection sampling on the floor (against walls, free-standing, around tables, beside beds), on top
of hosts, under hosts and on walls (doors and windows are openings cut into the walls).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from bqnet_synth.furniture import build
from bqnet_synth.parts import ObjectModel, Part, local_rect_to_world, place_parts
from bqnet_synth.scene import Room, Wall


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
