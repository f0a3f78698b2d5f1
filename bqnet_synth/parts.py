"""Parametric parts of the synthetic furniture: every object is a few boxes, cylinders and
ellipsoids in its own frame (front towards +y, standing on z = 0, centred at x = y = 0), placed in
the room by a rotation about z by a multiple of 90 degrees, which keeps every box axis-aligned.
Also the named colours (what the expressions call them), the per-class palettes and the floor and
wall colours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


# Face bits of a box part: bit f set = face f sampled; 0/1 = -x/+x, 2/3 = -y/+y, 4/5 = -z/+z
# (the numbering of ``minimal.sample_box_surface``). Cylinders use bit 0 for the side and the
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
