"""What each room type holds (bedroom, office, living room, kitchen, bathroom, conference room,
studio): one furnishing routine per type on top of ``_Layout``, and ``_layout_room``, which draws
a floor plan and furnishes it (retrying plans that cannot hold the type's required furniture).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from bqnet_synth.layout import _AXES, _Layout, _make_room
from bqnet_synth.scene import RoomConfig


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
