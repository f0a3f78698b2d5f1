"""Parametric furniture for the synthetic rooms: every object is a handful of primitive parts.

A part is an axis-aligned primitive given by its bounding box: a box, a vertical (elliptic)
cylinder inscribed in the box, or an ellipsoid inscribed in the box. Objects are built in a local
frame (x = width to the object's right, y = depth with the object's *front* at +y, z up, origin at
the centre of the footprint on the floor; wall-mounted objects have the wall's inner plane at
y = 0) and placed in the room by a rotation about z by a multiple of 90 degrees, which keeps every
part axis-aligned, so bounding boxes stay exact and sampling stays simple and vectorized.

Why parts and not single boxes: a scan of a chair is a seat, a back and four legs with floor
visible between them; a model trained on boxes learns boxes. The builders draw proportions,
variants and named colours from the generator's ``rng`` so that two rooms never look the same,
and report where other objects may stand on (``top_rect``) or under (``under_rect``) them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = [
    "ALL_FACES", "NO_BOTTOM", "CYL_SIDE", "CYL_BOTTOM", "CYL_TOP", "COLORS", "CLASS_PALETTE",
    "FLOOR_COLORS", "WALL_COLORS", "Part", "ObjectModel", "build", "place_parts", "rotate_face_bits",
    "BUILDERS", "VARIANTS", "local_rect_to_world",
]

# Face bits of a box part: bit f set = face f sampled; 0/1 = -x/+x, 2/3 = -y/+y, 4/5 = -z/+z
# (the numbering of ``synthetic.sample_box_surface``). Cylinders use bit 0 for the side and the
# z bits for their caps; ellipsoids ignore the bits.
ALL_FACES = 0b111111
NO_BOTTOM = 0b101111
CYL_SIDE, CYL_BOTTOM, CYL_TOP = 1, 1 << 4, 1 << 5

# Named colours (what expressions call them) -> base RGB.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (185, 35, 38), "green": (48, 135, 62), "blue": (40, 75, 175), "white": (232, 232, 226),
    "black": (30, 30, 33), "brown": (118, 76, 42), "grey": (128, 128, 128), "yellow": (226, 196, 46),
    "orange": (226, 122, 36), "pink": (232, 146, 178), "purple": (112, 54, 146), "beige": (214, 194, 156),
}
_ALL = tuple(COLORS)
_WOOD = ("brown", "white", "black", "grey", "beige")
# Plausible main colours per class (drawn uniformly; repeats weight a colour up).
CLASS_PALETTE: dict[str, tuple[str, ...]] = {
    "chair": _ALL, "table": _WOOD, "desk": _WOOD,
    "bed": ("white", "blue", "grey", "beige", "red", "green", "pink", "purple", "yellow", "brown"),
    "sofa": ("grey", "blue", "red", "green", "black", "brown", "beige", "white", "yellow", "purple"),
    "cabinet": ("brown", "white", "grey", "black", "beige", "blue", "green"),
    "bookshelf": _WOOD, "toilet": ("white", "white", "white", "beige", "grey"),
    "sink": ("white", "white", "grey", "beige"), "bathtub": ("white", "white", "beige", "grey"),
    "refrigerator": ("white", "grey", "black", "beige"), "monitor": ("black", "black", "grey", "white"),
    "lamp": ("white", "beige", "black", "yellow", "red", "blue", "green", "orange", "grey"),
    "trash can": ("black", "grey", "white", "blue", "green", "red", "yellow"),
    "box": ("brown", "brown", "brown", "white", "black", "red", "blue", "yellow", "green", "grey", "orange"),
    "plant": ("orange", "white", "black", "grey", "brown", "blue", "red"),
    "door": ("brown", "white", "grey", "black", "beige", "red", "blue"),
    "window": ("white", "brown", "black", "grey"), "picture": _ALL, "curtain": _ALL,
}
FLOOR_COLORS: tuple[tuple[int, int, int], ...] = ((150, 112, 74), (120, 120, 118), (190, 176, 150), (96, 70, 50))
WALL_COLORS: tuple[tuple[int, int, int], ...] = ((226, 224, 214), (214, 204, 180), (200, 204, 208), (196, 214, 220))
_METAL = (150, 150, 155)
_DARK = (38, 38, 40)


@dataclass
class Part:
    """One primitive: box, vertical cylinder or ellipsoid, inscribed in the box ``lo``..``hi``.

    ``solid`` parts hide the surface points of other parts that fall inside them (a seat hides the
    top of its legs, a cabinet the wall behind it); shells (a lamp shade, a bin) are not solid.
    ``carve`` parts are never sampled: they only cut openings into walls (doors, windows).
    """

    kind: str  # "box" | "cyl" | "ell"
    lo: np.ndarray  # (3,) float64
    hi: np.ndarray  # (3,) float64
    color: np.ndarray  # (3,) float64, 0..255
    faces: int = ALL_FACES
    solid: bool = True
    density: float = 1.0  # multiplier of the room's point density (glass, screens: low)
    pattern: float = 0.0  # amplitude of a blocky colour pattern (picture canvas, books)
    carve: bool = False


@dataclass
class ObjectModel:
    """A built object in its local frame, plus what the room layout needs to know about it."""

    cls: str
    variant: str
    color_name: str
    parts: list[Part]
    top_z: float | None = None  # height of the surface other objects may stand on
    top_rect: tuple[float, float, float, float] | None = None  # local (x0, y0, x1, y1) of that surface
    under_rect: tuple[float, float, float, float] | None = None  # local free floor area beneath it
    under_h: float = 0.0  # free height beneath it
    floor_keep: float = 0.0  # fraction of floor points kept under its footprint (legs: the floor shows)
    colourable: bool = True  # whether "the <colour> <noun>" makes sense for it
    has_front: bool = True  # whether "in front of / behind it" is defined
    in_wall: bool = False  # doors / windows: sit inside the wall slab, not cut by it
    mount: str = "floor"  # floor | wall | on | under | in_wall

    @property
    def lo(self) -> np.ndarray:
        return np.min([p.lo for p in self.parts if not p.carve], axis=0)

    @property
    def hi(self) -> np.ndarray:
        return np.max([p.hi for p in self.parts if not p.carve], axis=0)

    @property
    def size(self) -> np.ndarray:
        return self.hi - self.lo


class _Builder:
    """Collects parts; short helpers so the builders read like a parts list."""

    def __init__(self) -> None:
        self.parts: list[Part] = []

    def box(self, x0: float, y0: float, z0: float, x1: float, y1: float, z1: float, color,
            faces: int = ALL_FACES, **kw) -> None:
        lo = np.array([min(x0, x1), min(y0, y1), min(z0, z1)], float)
        hi = np.array([max(x0, x1), max(y0, y1), max(z0, z1)], float)
        self.parts.append(Part("box", lo, hi, np.asarray(color, float), faces, **kw))

    def cyl(self, cx: float, cy: float, rx: float, z0: float, z1: float, color, ry: float | None = None,
            faces: int = CYL_SIDE | CYL_TOP | CYL_BOTTOM, **kw) -> None:
        ry = rx if ry is None else ry
        self.parts.append(Part("cyl", np.array([cx - rx, cy - ry, z0], float),
                               np.array([cx + rx, cy + ry, z1], float), np.asarray(color, float), faces, **kw))

    def ell(self, cx: float, cy: float, cz: float, rx: float, ry: float, rz: float, color, **kw) -> None:
        self.parts.append(Part("ell", np.array([cx - rx, cy - ry, cz - rz], float),
                               np.array([cx + rx, cy + ry, cz + rz], float), np.asarray(color, float), **kw))


def _u(rng: np.random.Generator, a: float, b: float) -> float:
    return float(rng.uniform(a, b))


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _rgb(name: str) -> np.ndarray:
    return np.asarray(COLORS[name], float)


def _legs(b: _Builder, w: float, d: float, z1: float, s: float, inset: float, color, round_: bool = False) -> None:
    """Four legs of square side ``s`` (or round) under a ``w`` x ``d`` footprint."""
    for sx in (-1, 1):
        for sy in (-1, 1):
            cx = sx * (w / 2 - inset - s / 2)
            cy = sy * (d / 2 - inset - s / 2)
            if round_:
                b.cyl(cx, cy, s / 2, 0.0, z1, color, faces=CYL_SIDE)
            else:
                b.box(cx - s / 2, cy - s / 2, 0.0, cx + s / 2, cy + s / 2, z1, color, faces=NO_BOTTOM)


# ----------------------------------------------------------------------------------------------
# Builders: (rng, colour name, variant) -> ObjectModel. Sizes in metres.
# ----------------------------------------------------------------------------------------------

def _chair(rng: np.random.Generator, color: str, variant: str) -> ObjectModel:
    b = _Builder()
    c = _rgb(color)
    if variant == "office":
        w, d = _u(rng, 0.5, 0.62), _u(rng, 0.48, 0.58)
        sh, h = _u(rng, 0.45, 0.52), _u(rng, 0.92, 1.15)
        base = _pick(rng, (_DARK, _METAL))
        b.cyl(0, 0, w * 0.45, 0.03, 0.07, base, faces=CYL_SIDE | CYL_TOP)
        for sx in (-1, 1):  # casters
            for sy in (-1, 1):
                b.cyl(sx * w * 0.3, sy * w * 0.3, 0.025, 0.0, 0.03, _DARK, faces=CYL_SIDE)
        b.cyl(0, 0, 0.025, 0.07, sh - 0.08, base, faces=CYL_SIDE)
        b.box(-w / 2, -d / 2 + 0.04, sh - 0.08, w / 2, d / 2, sh, c)
        b.box(-0.03, -d / 2 + 0.02, sh - 0.06, 0.03, -d / 2 + 0.06, sh + 0.1, base)
        b.box(-w * 0.45, -d / 2, sh + 0.08, w * 0.45, -d / 2 + 0.06, h, c)
        if rng.random() < 0.6:
            for sx in (-1, 1):
                x = sx * (w / 2 - 0.03)
                b.box(x - 0.025, -0.05, sh, x + 0.025, 0.0, sh + 0.18, _DARK)
                b.box(x - 0.03, -0.15, sh + 0.18, x + 0.03, 0.12, sh + 0.21, _DARK)
        floor_keep = 0.6
    elif variant == "armchair":
        w, d = _u(rng, 0.72, 0.92), _u(rng, 0.72, 0.88)
        sh, h = _u(rng, 0.4, 0.45), _u(rng, 0.82, 1.0)
        aw, leg = _u(rng, 0.1, 0.16), 0.08
        _legs(b, w, d, leg, 0.04, 0.04, _pick(rng, (_DARK, _rgb("brown"))))
        b.box(-w / 2, -d / 2, leg, w / 2, d / 2, sh - 0.1, c)
        b.box(-w / 2 + aw, -d / 2 + 0.16, sh - 0.1, w / 2 - aw, d / 2, sh, c)
        b.box(-w / 2 + aw, -d / 2, sh - 0.1, w / 2 - aw, -d / 2 + 0.16, h, c)
        for sx in (-1, 1):
            x0 = sx * w / 2
            b.box(x0, -d / 2, sh - 0.1, x0 - sx * aw, d / 2, sh + 0.2, c)
        floor_keep = 0.1
    else:  # dining
        w, d = _u(rng, 0.42, 0.54), _u(rng, 0.42, 0.54)
        sh, h = _u(rng, 0.43, 0.48), _u(rng, 0.8, 1.0)
        legc = c if rng.random() < 0.5 else _pick(rng, (_DARK, _METAL))
        s = _u(rng, 0.03, 0.045)
        _legs(b, w, d, sh - 0.04, s, 0.01, legc, round_=bool(rng.random() < 0.4))
        b.box(-w / 2, -d / 2, sh - 0.04, w / 2, d / 2, sh, c)
        if rng.random() < 0.5:  # solid back
            b.box(-w / 2, -d / 2, sh, w / 2, -d / 2 + 0.03, h, c)
        else:  # two posts and rails
            for sx in (-1, 1):
                x = sx * (w / 2 - s / 2)
                b.box(x - s / 2, -d / 2, sh, x + s / 2, -d / 2 + s, h, c)
            b.box(-w / 2 + s, -d / 2, h - 0.16, w / 2 - s, -d / 2 + 0.025, h, c)
            b.box(-w / 2 + s, -d / 2, sh + 0.15, w / 2 - s, -d / 2 + 0.025, sh + 0.2, c)
        floor_keep = 0.6
    return ObjectModel("chair", variant, color, b.parts, floor_keep=floor_keep)


def _table(rng: np.random.Generator, color: str, variant: str) -> ObjectModel:
    b = _Builder()
    c = _rgb(color)
    if variant == "round":
        r, h, th = _u(rng, 0.4, 0.6), _u(rng, 0.7, 0.77), _u(rng, 0.03, 0.05)
        b.cyl(0, 0, r, h - th, h, c)
        b.cyl(0, 0, 0.05, 0.03, h - th, c, faces=CYL_SIDE)
        b.cyl(0, 0, r * 0.5, 0.0, 0.03, c, faces=CYL_SIDE | CYL_TOP)
        s = r * 0.65
        return ObjectModel("table", variant, color, b.parts, top_z=h, top_rect=(-s, -s, s, s),
                           floor_keep=0.4, has_front=False)
    if variant == "coffee":
        w, d, h = _u(rng, 0.8, 1.3), _u(rng, 0.45, 0.7), _u(rng, 0.36, 0.46)
    else:
        w, d, h = _u(rng, 0.9, 2.0), _u(rng, 0.65, 1.0), _u(rng, 0.7, 0.78)
    th, s, inset = _u(rng, 0.03, 0.05), _u(rng, 0.04, 0.07), _u(rng, 0.02, 0.08)
    b.box(-w / 2, -d / 2, h - th, w / 2, d / 2, h, c)
    legc = c if rng.random() < 0.7 else _pick(rng, (_DARK, _METAL))
    _legs(b, w, d, h - th, s, inset, legc, round_=bool(rng.random() < 0.3))
    apron = 0.0
    if variant == "coffee" and rng.random() < 0.5:
        b.box(-w / 2 + inset, -d / 2 + inset, 0.08, w / 2 - inset, d / 2 - inset, 0.1, c)
    elif rng.random() < 0.5:
        apron = 0.08
        for sy in (-1, 1):
            y = sy * (d / 2 - inset - s / 2)
            b.box(-w / 2 + inset + s, y - 0.01, h - th - apron, w / 2 - inset - s, y + 0.01, h - th, c)
    m = inset + s + 0.02
    under = (-w / 2 + m, -d / 2 + m, w / 2 - m, d / 2 - m)
    return ObjectModel("table", variant, color, b.parts, top_z=h,
                       top_rect=(-w / 2 + 0.03, -d / 2 + 0.03, w / 2 - 0.03, d / 2 - 0.03),
                       under_rect=under if variant != "coffee" else None, under_h=h - th - apron - 0.02,
                       floor_keep=0.4, has_front=False)


def _desk(rng: np.random.Generator, color: str, variant: str) -> ObjectModel:
    b = _Builder()
    c = _rgb(color)
    w, d, h, th = _u(rng, 1.0, 1.8), _u(rng, 0.55, 0.8), _u(rng, 0.72, 0.77), _u(rng, 0.025, 0.04)
    b.box(-w / 2, -d / 2, h - th, w / 2, d / 2, h, c)
    x0, x1 = -w / 2, w / 2
    if variant == "legs":
        s = _u(rng, 0.04, 0.06)
        _legs(b, w, d, h - th, s, 0.02, c if rng.random() < 0.5 else _DARK)
        x0, x1 = x0 + 0.02 + s, x1 - 0.02 - s
    else:  # panel sides, optional drawer unit on one side
        pt = 0.025
        b.box(-w / 2, -d / 2, 0, -w / 2 + pt, d / 2, h - th, c, faces=NO_BOTTOM)
        x0 += pt
        if variant == "drawers":
            dw = _u(rng, 0.35, 0.45)
            b.box(w / 2 - dw, -d / 2, 0, w / 2, d / 2 - 0.02, h - th, c, faces=NO_BOTTOM)
            n = int(rng.integers(2, 4))
            hh = (h - th - 0.05) / n
            for k in range(n):
                z0 = 0.03 + k * hh
                b.box(w / 2 - dw + 0.01, d / 2 - 0.02, z0 + 0.005, w / 2 - 0.01, d / 2 - 0.005, z0 + hh - 0.005, c)
                b.box(w / 2 - dw / 2 - 0.06, d / 2 - 0.005, z0 + hh - 0.06, w / 2 - dw / 2 + 0.06, d / 2 + 0.015,
                      z0 + hh - 0.04, _METAL)
            x1 -= dw
        else:
            b.box(w / 2 - pt, -d / 2, 0, w / 2, d / 2, h - th, c, faces=NO_BOTTOM)
            x1 -= pt
        b.box(x0, -d / 2 + 0.02, 0.3, x1, -d / 2 + 0.04, h - th, c)  # modesty panel
    under = (x0 + 0.03, -d / 2 + 0.06, x1 - 0.03, d / 2 - 0.03)
    return ObjectModel("desk", variant, color, b.parts, top_z=h,
                       top_rect=(-w / 2 + 0.03, -d / 2 + 0.03, w / 2 - 0.03, d / 2 - 0.03),
                       under_rect=under, under_h=h - th - 0.03, floor_keep=0.3)


def _bed(rng: np.random.Generator, color: str, variant: str) -> ObjectModel:
    b = _Builder()
    c = _rgb(color)
    frame = _rgb(_pick(rng, ("brown", "white", "black", "grey", "beige")))
    w = _u(rng, 0.9, 1.1) if variant == "single" else _u(rng, 1.4, 1.8)
    d, fh = _u(rng, 1.95, 2.15), _u(rng, 0.2, 0.34)
    mh = fh + _u(rng, 0.16, 0.24)
    hb = _u(rng, 0.85, 1.2)
    b.box(-w / 2, -d / 2 + 0.06, 0.0, w / 2, d / 2, fh, frame, faces=NO_BOTTOM)
    b.box(-w / 2 + 0.02, -d / 2 + 0.06, fh, w / 2 - 0.02, d / 2 - 0.02, mh, (236, 236, 232))
    b.box(-w / 2 - 0.02, -d / 2 + _u(rng, 0.5, 0.7), fh + 0.05, w / 2 + 0.02, d / 2, mh + 0.03, c,
          faces=NO_BOTTOM, pattern=10.0)  # blanket
    b.box(-w / 2, -d / 2, 0.0, w / 2, -d / 2 + 0.06, hb, frame, faces=NO_BOTTOM)  # headboard
    n_p = 1 if w < 1.2 else 2
    pc = _rgb(_pick(rng, ("white", "white", "beige", "grey", color)))
    for k in range(n_p):
        cx = (k + 0.5) * w / n_p - w / 2
        b.ell(cx, -d / 2 + 0.3, mh + 0.06, min(0.3, w / n_p / 2 - 0.06), 0.18, 0.07, pc)
    return ObjectModel("bed", variant, color, b.parts, floor_keep=0.0)


def _sofa(rng: np.random.Generator, color: str, variant: str) -> ObjectModel:
    b = _Builder()
    c = _rgb(color)
    w = _u(rng, 1.2, 1.5) if variant == "loveseat" else _u(rng, 1.6, 2.4)
    d, h, sh, aw = _u(rng, 0.8, 1.0), _u(rng, 0.75, 0.95), _u(rng, 0.42, 0.47), _u(rng, 0.12, 0.22)
    leg = 0.06
    _legs(b, w, d, leg, 0.05, 0.03, _DARK)
    b.box(-w / 2, -d / 2, leg, w / 2, d / 2, sh - 0.12, c)
    n = 2 if variant == "loveseat" else int(rng.integers(2, 4))
    cw = (w - 2 * aw) / n
    for k in range(n):
        x0 = -w / 2 + aw + k * cw
        b.box(x0 + 0.005, -d / 2 + 0.2, sh - 0.12, x0 + cw - 0.005, d / 2, sh, c)
    b.box(-w / 2 + aw, -d / 2, sh - 0.12, w / 2 - aw, -d / 2 + 0.2, h, c)
    for sx in (-1, 1):
        b.box(sx * w / 2, -d / 2, leg, sx * (w / 2 - aw), d / 2, sh + 0.2, c)
    return ObjectModel("sofa", variant, color, b.parts, floor_keep=0.05)


_CABINET_SIZE = {  # (w, d, h) ranges
    "wardrobe": ((0.8, 1.6), (0.5, 0.62), (1.8, 2.1)),
    "dresser": ((0.8, 1.4), (0.4, 0.55), (0.7, 1.0)),
    "nightstand": ((0.4, 0.55), (0.35, 0.45), (0.45, 0.62)),
    "kitchen": ((0.8, 2.2), (0.55, 0.62), (0.86, 0.92)),
    "tv_stand": ((1.1, 1.8), (0.38, 0.5), (0.4, 0.6)),
    "file": ((0.4, 0.5), (0.5, 0.6), (0.6, 1.3)),
}


def _cabinet(rng: np.random.Generator, color: str, variant: str) -> ObjectModel:
    b = _Builder()
    c = _rgb(color)
    (wa, wb), (da, db), (ha, hb) = _CABINET_SIZE[variant]
    w, d, h = _u(rng, wa, wb), _u(rng, da, db), _u(rng, ha, hb)
    plinth = 0.08 if variant != "nightstand" else 0.04
    b.box(-w / 2 + 0.02, -d / 2, 0.0, w / 2 - 0.02, d / 2 - 0.05, plinth, _DARK if rng.random() < 0.4 else c,
          faces=NO_BOTTOM)
    top = h
    if variant == "kitchen":
        top = h + 0.04
        counter = c if rng.random() < 0.6 else _rgb(_pick(rng, ("grey", "white", "black", "beige")))
        b.box(-w / 2, -d / 2, h, w / 2, d / 2 + 0.03, top, counter)
    b.box(-w / 2, -d / 2, plinth, w / 2, d / 2, h, c, faces=NO_BOTTOM)
    # Door / drawer fronts: thin panels with gaps, handles in metal.
    cols = max(1, int(round(w / 0.5)))
    rows = {"dresser": int(rng.integers(3, 5)), "file": int(rng.integers(2, 5)), "nightstand": 2}.get(variant, 1)
    fw, fh = w / cols, (h - plinth) / rows
    for i in range(cols):
        for j in range(rows):
            x0, z0 = -w / 2 + i * fw, plinth + j * fh
            b.box(x0 + 0.004, d / 2, z0 + 0.004, x0 + fw - 0.004, d / 2 + 0.015, z0 + fh - 0.004, c, faces=0b111011)
            if rows > 1:
                hx, hz = x0 + fw / 2, z0 + fh - 0.07
                b.box(hx - 0.06, d / 2 + 0.015, hz - 0.01, hx + 0.06, d / 2 + 0.035, hz + 0.01, _METAL)
            else:
                hx = x0 + (fw - 0.05 if i % 2 == 0 else 0.05)
                hz = min(z0 + fh - 0.1, 1.1)
                b.box(hx - 0.01, d / 2 + 0.015, hz - 0.1, hx + 0.01, d / 2 + 0.035, hz, _METAL)
    return ObjectModel("cabinet", variant, color, b.parts, top_z=top,
                       top_rect=(-w / 2 + 0.03, -d / 2 + 0.03, w / 2 - 0.03, d / 2 - 0.03), floor_keep=0.0)


def _bookshelf(rng: np.random.Generator, color: str, variant: str) -> ObjectModel:
    b = _Builder()
    c = _rgb(color)
    w, d = _u(rng, 0.6, 1.2), _u(rng, 0.28, 0.4)
    h = _u(rng, 0.85, 1.2) if variant == "low" else _u(rng, 1.6, 2.1)
    t = 0.02
    b.box(-w / 2, -d / 2, 0, -w / 2 + t, d / 2, h, c, faces=NO_BOTTOM)
    b.box(w / 2 - t, -d / 2, 0, w / 2, d / 2, h, c, faces=NO_BOTTOM)
    b.box(-w / 2 + t, -d / 2, h - t, w / 2 - t, d / 2, h, c)
    b.box(-w / 2 + t, -d / 2, 0, w / 2 - t, d / 2, 0.07, c, faces=NO_BOTTOM)
    b.box(-w / 2 + t, -d / 2, 0.07, w / 2 - t, -d / 2 + 0.01, h - t, c)  # back panel
    n_sh = max(2, int(round((h - 0.07) / 0.34)))
    gap = (h - 0.07 - t) / n_sh
    book_cols = [_rgb(k) for k in ("red", "blue", "green", "black", "white", "yellow", "brown", "orange", "grey")]
    for k in range(n_sh):
        z0 = 0.07 + k * gap
        if k > 0:
            b.box(-w / 2 + t, -d / 2 + 0.01, z0 - t, w / 2 - t, d / 2, z0, c)
        if rng.random() < 0.15:
            continue
        # Books: widths drawn at once, kept while they fit; heights below the next shelf.
        bw = rng.uniform(0.02, 0.05, 40)
        x = -w / 2 + t + np.concatenate([[0.0], np.cumsum(bw)])
        fill = _u(rng, 0.3, 0.95) * (w - 2 * t)
        nb = int(np.searchsorted(x[1:], -w / 2 + t + fill))
        bh = rng.uniform(0.55, 0.9, nb) * (gap - t)
        bd = rng.uniform(0.6, 0.9, nb) * (d - 0.02)
        ci = rng.integers(0, len(book_cols), nb)
        for i in range(nb):
            b.box(x[i] + 0.001, d / 2 - bd[i], z0, x[i + 1] - 0.001, d / 2 - 0.01, z0 + bh[i], book_cols[ci[i]],
                  faces=0b101011)
    return ObjectModel("bookshelf", variant, color, b.parts, top_z=h,
                       top_rect=(-w / 2 + 0.03, -d / 2 + 0.03, w / 2 - 0.03, d / 2 - 0.03), floor_keep=0.0)


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


BUILDERS: dict[str, Callable[..., ObjectModel]] = {
    "chair": _chair, "table": _table, "desk": _desk, "bed": _bed, "sofa": _sofa, "cabinet": _cabinet,
    "bookshelf": _bookshelf, "toilet": _toilet, "sink": _sink, "bathtub": _bathtub,
    "refrigerator": _refrigerator, "monitor": _monitor, "lamp": _lamp, "trash can": _trash_can, "box": _box,
    "plant": _plant, "door": _door, "window": _window, "picture": _picture, "curtain": _curtain,
}
VARIANTS: dict[str, tuple[str, ...]] = {
    "chair": ("dining", "office", "armchair"), "table": ("rect", "round", "coffee"),
    "desk": ("panel", "legs", "drawers"), "bed": ("single", "double"), "sofa": ("sofa", "loveseat"),
    "cabinet": tuple(_CABINET_SIZE), "bookshelf": ("tall", "low"), "toilet": ("standard",),
    "sink": ("pedestal", "vanity"), "bathtub": ("standard",), "refrigerator": ("top_freezer", "bottom_freezer"),
    "monitor": ("monitor", "tv"), "lamp": ("floor", "desk"), "trash can": ("round", "square"),
    "box": ("large", "small"), "plant": ("bush", "tall", "small"), "door": ("right", "left"),
    "window": ("single", "double"), "picture": ("portrait", "landscape"), "curtain": ("long", "short"),
}


def build(cls: str, rng: np.random.Generator, *, variant: str | None = None, color: str | None = None,
          **size) -> ObjectModel:
    """Build one object of class ``cls`` in its local frame.

    ``variant`` and ``color`` default to draws from ``VARIANTS[cls]`` and ``CLASS_PALETTE[cls]``;
    doors, windows and curtains accept ``w``/``h`` so that they fit the wall the layout chose.
    """
    if cls not in BUILDERS:
        raise ValueError(f"unknown furniture class {cls!r}; known: {sorted(BUILDERS)}")
    if variant is None:
        variant = _pick(rng, VARIANTS[cls])
    elif variant not in VARIANTS[cls]:
        raise ValueError(f"unknown variant {variant!r} for {cls!r}; known: {VARIANTS[cls]}")
    if color is None:
        color = _pick(rng, CLASS_PALETTE[cls])
    elif color not in COLORS:
        raise ValueError(f"unknown colour {color!r}; known: {sorted(COLORS)}")
    if size and cls not in ("door", "window", "curtain"):
        raise TypeError(f"{cls!r} takes no size arguments, got {sorted(size)}")
    return BUILDERS[cls](rng, color, variant, **size)


def _rotation(front: np.ndarray) -> np.ndarray:
    """2x2 matrix whose columns are the world directions of local +x and +y (= ``front``)."""
    f = np.asarray(front, float)
    if f.shape != (2,) or not np.isclose(np.abs(f).sum(), 1.0) or not np.isclose(np.abs(f).max(), 1.0):
        raise ValueError(f"front must be an axis direction like (0, 1), got {front!r}")
    return np.array([[f[1], f[0]], [-f[0], f[1]]])


def rotate_face_bits(bits: int, front: np.ndarray) -> int:
    """Map a box's face bits from the local frame to the world frame for a given ``front``."""
    r = _rotation(front)
    out = bits & 0b110000
    for f in range(4):
        if bits >> f & 1:
            n = np.zeros(2)
            n[f // 2] = 1.0 if f % 2 else -1.0
            wn = r @ n
            a = int(np.argmax(np.abs(wn)))
            out |= 1 << (2 * a + int(wn[a] > 0))
    return out


def place_parts(model: ObjectModel, origin: np.ndarray, front: np.ndarray) -> list[Part]:
    """The model's parts in the world: local +y turned to ``front`` (an axis direction), then moved
    to ``origin`` (x, y, z of the local origin)."""
    r = _rotation(front)
    origin = np.asarray(origin, float)
    lo = np.stack([p.lo for p in model.parts])
    hi = np.stack([p.hi for p in model.parts])
    a = lo[:, :2] @ r.T
    b = hi[:, :2] @ r.T
    wlo = np.concatenate([np.minimum(a, b) + origin[:2], lo[:, 2:] + origin[2]], axis=1)
    whi = np.concatenate([np.maximum(a, b) + origin[:2], hi[:, 2:] + origin[2]], axis=1)
    out = []
    for i, p in enumerate(model.parts):
        faces = rotate_face_bits(p.faces, front) if p.kind == "box" else p.faces
        out.append(Part(p.kind, wlo[i], whi[i], p.color, faces, p.solid, p.density, p.pattern, p.carve))
    return out


def local_rect_to_world(rect: tuple[float, float, float, float], origin: np.ndarray,
                        front: np.ndarray) -> np.ndarray:
    """A local (x0, y0, x1, y1) rectangle as a world (x0, y0, x1, y1) rectangle."""
    r = _rotation(front)
    a = r @ np.array([rect[0], rect[1]])
    b = r @ np.array([rect[2], rect[3]])
    o = np.asarray(origin, float)[:2]
    return np.concatenate([np.minimum(a, b) + o, np.maximum(a, b) + o])

