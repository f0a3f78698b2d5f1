"""Fixture and small-object builders: bathroom and kitchen fixtures (toilet, sink, bathtub,
refrigerator), things that stand on furniture (monitor, lamp, box, plant), the trash can, and the
wall-mounted classes (door, window, picture, curtain).
"""

from __future__ import annotations

import numpy as np

from bqnet_synth.parts import CYL_BOTTOM, CYL_SIDE, CYL_TOP, NO_BOTTOM, ObjectModel, _Builder, _DARK, _METAL, _pick, _rgb, _u


def _toilet(rng: np.random.Generator, color: str, variant: str) -> ObjectModel:
    b = _Builder()
    c = _rgb(color)
    tw, d, h = _u(rng, 0.38, 0.46), _u(rng, 0.64, 0.74), _u(rng, 0.74, 0.84)
    td, bz = _u(rng, 0.16, 0.2), _u(rng, 0.38, 0.42)
    by0 = -d / 2 + 0.1
    b.cyl(0, (by0 + d / 2) / 2 + 0.02, 0.11, 0.0, bz - 0.12, c, ry=(d / 2 - by0) / 2 - 0.08, faces=CYL_SIDE)
    b.cyl(0, (by0 + d / 2) / 2, 0.18, bz - 0.14, bz - 0.02, c, ry=(d / 2 - by0) / 2, faces=CYL_SIDE | CYL_BOTTOM)
    b.cyl(0, (by0 + d / 2) / 2, 0.185, bz - 0.02, bz + 0.01, c, ry=(d / 2 - by0) / 2 + 0.005)
    b.box(-tw / 2, -d / 2, bz, tw / 2, -d / 2 + td, h, c)
    b.box(-0.1, -d / 2 + 0.02, bz - 0.14, 0.1, by0 + 0.05, bz, c, faces=NO_BOTTOM)
    b.box(tw / 2 - 0.08, -d / 2 + td, h - 0.08, tw / 2 - 0.03, -d / 2 + td + 0.02, h - 0.06, _METAL)
    return ObjectModel("toilet", variant, color, b.parts, floor_keep=0.0)


def _basin(b: _Builder, w: float, d: float, top: float, depth: float, c, rim: float = 0.045) -> None:
    """A hollow basin: four rims and a floor, so its inside shows like a scanned sink."""
    b.box(-w / 2, -d / 2, top - depth, w / 2, -d / 2 + rim + 0.05, top, c)
    b.box(-w / 2, d / 2 - rim, top - depth, w / 2, d / 2, top, c)
    b.box(-w / 2, -d / 2 + rim + 0.05, top - depth, -w / 2 + rim, d / 2 - rim, top, c)
    b.box(w / 2 - rim, -d / 2 + rim + 0.05, top - depth, w / 2, d / 2 - rim, top, c)
    b.box(-w / 2 + rim, -d / 2 + rim + 0.05, top - depth, w / 2 - rim, d / 2 - rim, top - depth + 0.02, c)
    b.cyl(0, -d / 2 + 0.05, 0.015, top, top + 0.14, _METAL, faces=CYL_SIDE | CYL_TOP)
    b.box(-0.015, -d / 2 + 0.05, top + 0.12, 0.015, -d / 2 + 0.16, top + 0.15, _METAL)


def _sink(rng: np.random.Generator, color: str, variant: str) -> ObjectModel:
    b = _Builder()
    c = _rgb(color)
    if variant == "vanity":
        w, d, top = _u(rng, 0.6, 1.0), _u(rng, 0.45, 0.55), _u(rng, 0.82, 0.88)
        body = _rgb(_pick(rng, ("white", "brown", "grey", "beige")))
        b.box(-w / 2, -d / 2, 0.06, w / 2, d / 2 - 0.02, top - 0.16, body, faces=NO_BOTTOM)
        b.box(-w / 2 + 0.02, -d / 2, 0.0, w / 2 - 0.02, d / 2 - 0.06, 0.06, _DARK, faces=NO_BOTTOM)
        _basin(b, w, d, top, 0.16, c, rim=min(0.12, w * 0.15))
        floor_keep = 0.0
    else:  # pedestal
        w, d, top = _u(rng, 0.48, 0.62), _u(rng, 0.4, 0.5), _u(rng, 0.8, 0.88)
        b.cyl(0, -0.02, 0.085, 0.0, top - 0.18, c, faces=CYL_SIDE)
        _basin(b, w, d, top, 0.18, c)
        floor_keep = 0.7
    return ObjectModel("sink", variant, color, b.parts, top_z=None, floor_keep=floor_keep)


def _bathtub(rng: np.random.Generator, color: str, variant: str) -> ObjectModel:
    b = _Builder()
    c = _rgb(color)
    w, d, h, r = _u(rng, 1.5, 1.8), _u(rng, 0.7, 0.82), _u(rng, 0.5, 0.6), _u(rng, 0.06, 0.1)
    b.box(-w / 2, -d / 2, 0, w / 2, -d / 2 + r, h, c, faces=NO_BOTTOM)
    b.box(-w / 2, d / 2 - r, 0, w / 2, d / 2, h, c, faces=NO_BOTTOM)
    b.box(-w / 2, -d / 2 + r, 0, -w / 2 + r, d / 2 - r, h, c, faces=NO_BOTTOM)
    b.box(w / 2 - r, -d / 2 + r, 0, w / 2, d / 2 - r, h, c, faces=NO_BOTTOM)
    b.box(-w / 2 + r, -d / 2 + r, 0, w / 2 - r, d / 2 - r, 0.1, c, faces=NO_BOTTOM)
    b.cyl(-w / 2 + r + 0.06, -d / 2 + r / 2, 0.015, h, h + 0.12, _METAL, faces=CYL_SIDE | CYL_TOP)
    return ObjectModel("bathtub", variant, color, b.parts, floor_keep=0.0)


def _refrigerator(rng: np.random.Generator, color: str, variant: str) -> ObjectModel:
    b = _Builder()
    c = _rgb(color)
    w, d, h = _u(rng, 0.6, 0.9), _u(rng, 0.62, 0.75), _u(rng, 1.6, 1.95)
    b.box(-w / 2, -d / 2, 0.0, w / 2, d / 2 - 0.04, h, c, faces=NO_BOTTOM)
    split = h * _u(rng, 0.3, 0.4) if variant == "bottom_freezer" else h * _u(rng, 0.65, 0.72)
    for z0, z1 in ((0.02, split - 0.01), (split + 0.01, h - 0.01)):
        b.box(-w / 2 + 0.005, d / 2 - 0.04, z0, w / 2 - 0.005, d / 2, z1, c, faces=0b111011)
        hx = w / 2 - 0.06
        zc = z1 - 0.15 if z0 < 0.1 else z0 + 0.15
        b.box(hx - 0.012, d / 2, zc - 0.15, hx + 0.012, d / 2 + 0.04, zc + 0.15, _METAL)
    return ObjectModel("refrigerator", variant, color, b.parts, top_z=h,
                       top_rect=(-w / 2 + 0.03, -d / 2 + 0.03, w / 2 - 0.03, d / 2 - 0.03), floor_keep=0.0)


def _monitor(rng: np.random.Generator, color: str, variant: str) -> ObjectModel:
    b = _Builder()
    c = _rgb(color)
    if variant == "tv":
        sw = _u(rng, 0.9, 1.4)
        sh, t, e = sw * _u(rng, 0.55, 0.6), _u(rng, 0.04, 0.07), _u(rng, 0.05, 0.1)
        for sx in (-1, 1):  # feet
            b.box(sx * sw * 0.38 - 0.03, -0.12, 0.0, sx * sw * 0.38 + 0.03, 0.1, 0.02, c)
            b.box(sx * sw * 0.38 - 0.015, -0.03, 0.02, sx * sw * 0.38 + 0.015, 0.0, e + 0.02, c)
    else:
        sw = _u(rng, 0.45, 0.72)
        sh, t, e = sw * _u(rng, 0.55, 0.65), _u(rng, 0.025, 0.045), _u(rng, 0.08, 0.15)
        b.box(-0.11, -0.1, 0.0, 0.11, 0.06, 0.015, c)
        b.box(-0.03, -0.06, 0.015, 0.03, -0.035, e + 0.05, c)
    z0 = e
    b.box(-sw / 2, -0.035 - t, z0, sw / 2, -0.035, z0 + sh, c)
    # The display: a dark, low-density front (screens reflect the scanner's light).
    b.box(-sw / 2 + 0.015, -0.035, z0 + 0.015, sw / 2 - 0.015, -0.03, z0 + sh - 0.015, (22, 24, 30),
          faces=1 << 3, density=0.7, pattern=6.0)
    return ObjectModel("monitor", variant, color, b.parts, floor_keep=0.0)


def _lamp(rng: np.random.Generator, color: str, variant: str) -> ObjectModel:
    b = _Builder()
    c = _rgb(color)
    stem = _pick(rng, (_DARK, _METAL, _rgb("brown"), _rgb("white")))
    if variant == "floor":
        rb, hp, rs, hs = _u(rng, 0.12, 0.16), _u(rng, 1.3, 1.6), _u(rng, 0.17, 0.24), _u(rng, 0.22, 0.3)
        pr = 0.013
    else:
        rb, hp, rs, hs = _u(rng, 0.06, 0.09), _u(rng, 0.25, 0.4), _u(rng, 0.1, 0.15), _u(rng, 0.12, 0.18)
        pr = 0.01
    b.cyl(0, 0, rb, 0.0, 0.03, stem, faces=CYL_SIDE | CYL_TOP)
    b.cyl(0, 0, pr, 0.03, hp, stem, faces=CYL_SIDE)
    b.cyl(0, 0, rs, hp, hp + hs, c, faces=CYL_SIDE, solid=False)
    b.cyl(0, 0, rs - 0.005, hp, hp + hs, c, faces=CYL_SIDE, solid=False, density=0.4)
    return ObjectModel("lamp", variant, color, b.parts, floor_keep=0.5, has_front=False)


def _trash_can(rng: np.random.Generator, color: str, variant: str) -> ObjectModel:
    b = _Builder()
    c = _rgb(color)
    h = _u(rng, 0.3, 0.6)
    if variant == "square":
        w, d, t = _u(rng, 0.22, 0.35), _u(rng, 0.2, 0.3), 0.012
        b.box(-w / 2, -d / 2, 0, w / 2, -d / 2 + t, h, c, faces=NO_BOTTOM)
        b.box(-w / 2, d / 2 - t, 0, w / 2, d / 2, h, c, faces=NO_BOTTOM)
        b.box(-w / 2, -d / 2 + t, 0, -w / 2 + t, d / 2 - t, h, c, faces=NO_BOTTOM)
        b.box(w / 2 - t, -d / 2 + t, 0, w / 2, d / 2 - t, h, c, faces=NO_BOTTOM)
        b.box(-w / 2 + t, -d / 2 + t, 0, w / 2 - t, d / 2 - t, 0.02, c, faces=1 << 5)
    else:
        r = _u(rng, 0.12, 0.2)
        b.cyl(0, 0, r, 0.0, h, c, faces=CYL_SIDE, solid=False)
        b.cyl(0, 0, r - 0.01, 0.02, h, c, faces=CYL_SIDE, solid=False, density=0.5)
        b.cyl(0, 0, r - 0.01, 0.0, 0.02, c, faces=CYL_TOP, solid=False)
    return ObjectModel("trash can", variant, color, b.parts, floor_keep=0.0, has_front=False)


def _box(rng: np.random.Generator, color: str, variant: str) -> ObjectModel:
    b = _Builder()
    c = _rgb(color)
    if variant == "small":
        w, d, h = _u(rng, 0.15, 0.3), _u(rng, 0.12, 0.25), _u(rng, 0.08, 0.2)
    else:
        w, d, h = _u(rng, 0.3, 0.6), _u(rng, 0.25, 0.5), _u(rng, 0.2, 0.5)
    b.box(-w / 2, -d / 2, 0, w / 2, d / 2, h, c, faces=NO_BOTTOM)
    if color == "brown" and rng.random() < 0.7:  # packing tape
        b.box(-w / 2 - 0.002, -0.025, h, w / 2 + 0.002, 0.025, h + 0.002, (200, 180, 140), faces=0b100011)
    return ObjectModel("box", variant, color, b.parts, floor_keep=0.0, has_front=False)


def _plant(rng: np.random.Generator, color: str, variant: str) -> ObjectModel:
    b = _Builder()
    c = _rgb(color)
    small = variant == "small"
    r = _u(rng, 0.06, 0.1) if small else _u(rng, 0.1, 0.2)
    hp = _u(rng, 0.08, 0.14) if small else _u(rng, 0.2, 0.38)
    b.cyl(0, 0, r, 0.0, hp, c, faces=CYL_SIDE)
    b.cyl(0, 0, r - 0.01, hp - 0.03, hp - 0.02, (70, 50, 35), faces=CYL_TOP)
    greens = np.array([[45, 110, 45], [60, 140, 55], [35, 90, 40], [80, 150, 60]], float)
    z_base = hp
    if variant == "tall":
        top = _u(rng, 1.0, 1.6)
        b.cyl(0, 0, 0.015, hp - 0.02, top, (95, 70, 45), faces=CYL_SIDE)
        z_base, spread = top - 0.35, 0.35
    else:
        spread = 2.2 * r
    k = int(rng.integers(3, 7))
    for _ in range(k):
        rx = _u(rng, 0.35, 0.7) * spread
        rz = _u(rng, 0.4, 0.8) * spread
        cx, cy = rng.uniform(-0.5, 0.5, 2) * spread
        cz = z_base + rz * _u(rng, 0.7, 1.4)
        b.ell(cx, cy, cz, rx, rx * _u(rng, 0.7, 1.3), rz, greens[int(rng.integers(4))], pattern=15.0)
    return ObjectModel("plant", variant, color, b.parts, floor_keep=0.0, colourable=False, has_front=False)


def _door(rng: np.random.Generator, color: str, variant: str, w: float | None = None,
          h: float | None = None) -> ObjectModel:
    """A closed door in a wall opening; local y = 0 is the wall's inner plane."""
    b = _Builder()
    c = _rgb(color)
    w = _u(rng, 0.8, 0.95) if w is None else w
    h = _u(rng, 2.0, 2.1) if h is None else h
    fc = c if rng.random() < 0.6 else _rgb(_pick(rng, ("white", "brown", "grey")))
    f = 0.06
    b.box(-w / 2, -0.07, 0.0, w / 2, -0.03, h, c)
    b.box(-w / 2 - f, -0.1, 0.0, -w / 2, 0.02, h + f, fc, faces=NO_BOTTOM)
    b.box(w / 2, -0.1, 0.0, w / 2 + f, 0.02, h + f, fc, faces=NO_BOTTOM)
    b.box(-w / 2, -0.1, h, w / 2, 0.02, h + f, fc)
    hx = w / 2 - 0.08 if variant != "left" else -w / 2 + 0.08
    b.box(hx - 0.07, -0.03, 0.95, hx + 0.03, 0.03, 0.99, _METAL)
    if rng.random() < 0.5:  # panels
        for z0, z1 in ((0.15, 0.9), (1.1, h - 0.15)):
            b.box(-w / 2 + 0.12, -0.03, z0, w / 2 - 0.12, -0.025, z1, c, faces=1 << 3)
    b.box(-w / 2 - f, -0.25, 0.0, w / 2 + f, 0.03, h + f, c, carve=True)
    return ObjectModel("door", variant, color, b.parts, floor_keep=1.0, in_wall=True, mount="in_wall")


def _window(rng: np.random.Generator, color: str, variant: str, w: float | None = None,
            h: float | None = None) -> ObjectModel:
    """A window in a wall opening, z from 0 (the sill) to h; local y = 0 is the wall's inner plane."""
    b = _Builder()
    c = _rgb(color)
    w = _u(rng, 0.6, 1.8) if w is None else w
    h = _u(rng, 0.8, 1.4) if h is None else h
    f = 0.05
    b.box(-w / 2 - f, -0.08, 0.0, -w / 2, 0.02, h, c)
    b.box(w / 2, -0.08, 0.0, w / 2 + f, 0.02, h, c)
    b.box(-w / 2, -0.08, h - f, w / 2, 0.02, h, c)
    b.box(-w / 2, -0.08, 0.0, w / 2, 0.02, f, c)
    if w > 1.0 or variant == "double":
        b.box(-0.025, -0.07, f, 0.025, 0.0, h - f, c)
    b.box(-w / 2 - f - 0.04, 0.0, -0.04, w / 2 + f + 0.04, _u(rng, 0.08, 0.16), 0.0, c)  # sill
    b.box(-w / 2, -0.05, f, w / 2, -0.045, h - f, (165, 188, 205), faces=1 << 3, density=0.08)  # glass
    b.box(-w / 2 - f, -0.25, 0.0, w / 2 + f, 0.03, h, c, carve=True)
    return ObjectModel("window", variant, color, b.parts, floor_keep=1.0, in_wall=True, mount="in_wall")


def _picture(rng: np.random.Generator, color: str, variant: str) -> ObjectModel:
    """A framed picture, back on the wall plane y = 0, z from 0 to h."""
    b = _Builder()
    c = _rgb(color)
    w, h = _u(rng, 0.3, 1.1), _u(rng, 0.25, 0.85)
    if variant == "landscape" and h > w:
        w, h = h, w
    t, f = _u(rng, 0.015, 0.04), _u(rng, 0.025, 0.05)
    fc = _rgb(_pick(rng, ("black", "brown", "white", "yellow", "grey")))
    b.box(-w / 2, 0.0, 0.0, -w / 2 + f, t, h, fc)
    b.box(w / 2 - f, 0.0, 0.0, w / 2, t, h, fc)
    b.box(-w / 2 + f, 0.0, 0.0, w / 2 - f, t, f, fc)
    b.box(-w / 2 + f, 0.0, h - f, w / 2 - f, t, h, fc)
    b.box(-w / 2 + f, 0.0, f, w / 2 - f, t - 0.005, h - f, c, faces=1 << 3, pattern=35.0)
    return ObjectModel("picture", variant, color, b.parts, floor_keep=1.0, mount="wall")


def _curtain(rng: np.random.Generator, color: str, variant: str, w: float | None = None,
             h: float | None = None) -> ObjectModel:
    """Pleated curtain hanging from a rod at z = h; local y = 0 is the wall plane."""
    b = _Builder()
    c = _rgb(color)
    w = _u(rng, 0.4, 1.0) if w is None else w
    h = _u(rng, 2.0, 2.4) if h is None else h
    n = max(3, int(np.ceil(w / 0.09)))
    pw = w / n
    z0 = 0.03 if variant != "short" else h * 0.4
    for k in range(n):
        y0 = 0.06 if k % 2 == 0 else 0.1
        b.box(-w / 2 + k * pw, y0, z0, -w / 2 + (k + 1) * pw, y0 + 0.02, h - 0.04, c, pattern=6.0)
    b.box(-w / 2 - 0.05, 0.04, h - 0.04, w / 2 + 0.05, 0.14, h - 0.02, _pick(rng, (_DARK, _METAL)))
    return ObjectModel("curtain", variant, color, b.parts, floor_keep=0.2, mount="wall")
