"""RViz markers for a referring-segmentation result: a box, a centroid sphere and a score label.

Every array starts with a DELETEALL marker of the namespace, so a new result (found or not)
replaces the previous one in RViz instead of piling up. The per-object ids are fixed
(3 i, 3 i + 1, 3 i + 2) so consumers can tell box, sphere and label apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

__all__ = ["MarkerStyle", "ObjectLike", "box_line_points", "result_markers", "PALETTE"]

RGBA = tuple[float, float, float, float]
# One colour per object (GRES may find several), cycled.
PALETTE: tuple[RGBA, ...] = (
    (0.10, 0.90, 0.20, 1.0),
    (1.00, 0.60, 0.05, 1.0),
    (0.20, 0.60, 1.00, 1.0),
    (0.95, 0.20, 0.80, 1.0),
    (1.00, 1.00, 0.20, 1.0),
)
# The 12 edges of a box as index pairs into its 8 corners (corner bit k set = max along axis k).
_EDGES = np.array(
    [(0, 1), (2, 3), (4, 5), (6, 7),  # along x
     (0, 2), (1, 3), (4, 6), (5, 7),  # along y
     (0, 4), (1, 5), (2, 6), (3, 7)],  # along z
    dtype=np.int64,
)
_CORNER_BITS = ((np.arange(8)[:, None] >> np.arange(3)[None, :]) & 1).astype(bool)  # (8, 3)


class ObjectLike(Protocol):
    """What a marker needs of an object: bqnet_model's TargetObject fits."""

    score: float
    centroid: np.ndarray
    box_min: np.ndarray
    box_max: np.ndarray


@dataclass
class MarkerStyle:
    """Sizes (metres) and colours of the markers."""

    ns: str = "bqnet"
    line_width: float = 0.02
    sphere_diameter: float = 0.12
    text_height: float = 0.15
    text_color: RGBA = (1.0, 1.0, 1.0, 1.0)
    max_label_chars: int = 48
    lifetime_s: float = 0.0  # 0: until replaced

    def __post_init__(self) -> None:
        for name in ("line_width", "sphere_diameter", "text_height"):
            v = getattr(self, name)
            if not np.isfinite(v) or v <= 0:
                raise ValueError(f"MarkerStyle.{name} must be a positive number, got {v!r}")
        if not np.isfinite(self.lifetime_s) or self.lifetime_s < 0:
            raise ValueError(f"MarkerStyle.lifetime_s must be >= 0, got {self.lifetime_s!r}")
        if self.max_label_chars < 4:
            raise ValueError(f"MarkerStyle.max_label_chars must be >= 4, got {self.max_label_chars}")


def _vec3(value: object, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (3,):
        raise ValueError(f"{name} must have shape (3,), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got {arr.tolist()}")
    return arr


def box_line_points(box_min: object, box_max: object) -> np.ndarray:
    """(24, 3) float64: the 12 edges of an axis-aligned box as consecutive point pairs (LINE_LIST)."""
    lo = _vec3(box_min, "box_min")
    hi = _vec3(box_max, "box_max")
    if (hi < lo).any():
        raise ValueError(f"box_max {hi.tolist()} is below box_min {lo.tolist()} on some axis")
    corners = np.where(_CORNER_BITS, hi[None, :], lo[None, :])  # (8, 3)
    return corners[_EDGES.reshape(-1)]


def _color(rgba: RGBA) -> ColorRGBA:
    r, g, b, a = (float(c) for c in rgba)
    return ColorRGBA(r=r, g=g, b=b, a=a)


def _label(text: str, score: float, max_chars: int) -> str:
    t = " ".join(text.split())
    if len(t) > max_chars:
        t = t[: max_chars - 3] + "..."
    return f"{t} ({score:.2f})" if t else f"{score:.2f}"


def result_markers(
    objects: Sequence[ObjectLike],
    *,
    frame_id: str,
    stamp: Time | None = None,
    text: str = "",
    style: MarkerStyle | None = None,
) -> MarkerArray:
    """DELETEALL, then per object a LINE_LIST box, a SPHERE at the centroid and a label.

    An empty ``objects`` gives only the DELETEALL: the previous result disappears.
    """
    if not isinstance(frame_id, str):
        raise TypeError(f"frame_id must be a str, got {type(frame_id).__name__}")
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    style = style or MarkerStyle()
    stamp = stamp if stamp is not None else Time()
    sec = int(style.lifetime_s)
    lifetime = Duration(sec=sec, nanosec=int(round((style.lifetime_s - sec) * 1e9)))

    clear = Marker()
    clear.header.frame_id = frame_id
    clear.header.stamp = stamp
    clear.ns = style.ns
    clear.action = Marker.DELETEALL
    out = MarkerArray()
    out.markers.append(clear)

    for i, obj in enumerate(objects):
        score = float(obj.score)
        if not np.isfinite(score):
            raise ValueError(f"object {i} has a non-finite score {score!r}")
        centroid = _vec3(obj.centroid, f"object {i} centroid")
        lines = box_line_points(obj.box_min, obj.box_max)
        top = float(np.asarray(obj.box_max, dtype=np.float64)[2])
        colour = _color(PALETTE[i % len(PALETTE)])

        def base(mid: int, mtype: int) -> Marker:
            m = Marker()
            m.header.frame_id = frame_id
            m.header.stamp = stamp
            m.ns = style.ns
            m.id = mid
            m.type = mtype
            m.action = Marker.ADD
            m.pose.orientation.w = 1.0
            m.lifetime = lifetime
            return m

        box = base(3 * i, Marker.LINE_LIST)
        box.scale.x = float(style.line_width)
        box.color = colour
        box.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in lines.tolist()]

        sphere = base(3 * i + 1, Marker.SPHERE)
        sphere.pose.position = Point(x=float(centroid[0]), y=float(centroid[1]), z=float(centroid[2]))
        d = float(style.sphere_diameter)
        sphere.scale.x = sphere.scale.y = sphere.scale.z = d
        sphere.color = colour

        label = base(3 * i + 2, Marker.TEXT_VIEW_FACING)
        label.pose.position = Point(
            x=float(centroid[0]), y=float(centroid[1]), z=top + 1.5 * float(style.text_height)
        )
        label.scale.z = float(style.text_height)
        label.color = _color(style.text_color)
        label.text = _label(text, score, style.max_label_chars)
        out.markers.extend([box, sphere, label])
    return out
