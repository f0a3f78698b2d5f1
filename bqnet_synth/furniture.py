"""The large furniture builders (chair, table, desk, bed, sofa, cabinet, bookshelf) and the
catalogue: ``BUILDERS`` and ``VARIANTS`` per class, and ``build``, which draws a colour and a
variant and returns an ``ObjectModel``. The fixtures and small objects live in ``fixtures.py``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from bqnet_synth.fixtures import _bathtub, _box, _curtain, _door, _lamp, _monitor, _picture, _plant, _refrigerator, _sink, _toilet, _trash_can, _window
from bqnet_synth.parts import CLASS_PALETTE, COLORS, CYL_SIDE, CYL_TOP, NO_BOTTOM, ObjectModel, _Builder, _DARK, _METAL, _legs, _pick, _rgb, _u


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
