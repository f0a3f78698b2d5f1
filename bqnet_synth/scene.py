"""The data types of a synthetic scene: the floor plan (``Room``, ``Wall``), the labelled objects
and point cloud (``SceneObject``, ``SyntheticScene``) and the generator's knobs (``RoomConfig``).

Labels: per-point ``instance`` (index into ``objects``; the floor and every wall are objects of
class floor / wall) and ``semantic`` (index into ``bqnet_model.data.classes.CLASSES``, the class
vocabulary the real-data loaders share, which is why it is not defined here).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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


@dataclass
class RoomConfig:
    """Knobs of the room generator (defaults give ~100k-300k points per room)."""

    density: float = 2000.0  # points per m^2 of visible surface, before scan thinning
    # (lo, hi): generate_dataset draws each room's density log-uniformly in it (overrides density),
    # so that rooms span the densities of real scans (ScanNet's 50k-point subsets: ~170-1,100 floor
    # points per m^2 against ~1,100 for the default density)
    density_range: tuple[float, float] | None = None
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
        if self.density_range is not None:
            lo, hi = (float(v) for v in self.density_range)
            if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo <= hi):
                raise ValueError(f"density_range must be (lo, hi) with 0 < lo <= hi, got {self.density_range!r}")
        if self.noise < 0 or self.color_noise < 0 or self.dropout_patches < 0:
            raise ValueError("noise, color_noise and dropout_patches must be >= 0, got "
                             f"{self.noise!r}, {self.color_noise!r}, {self.dropout_patches!r}")
        if not 0.0 <= self.l_shape_prob <= 1.0:
            raise ValueError(f"l_shape_prob must be in [0, 1], got {self.l_shape_prob!r}")
        if self.room_type is not None and self.room_type not in ROOM_TYPES:
            raise ValueError(f"room_type must be one of {ROOM_TYPES} or None, got {self.room_type!r}")
        if len(self.dropout_radius) != 2 or not 0 < self.dropout_radius[0] <= self.dropout_radius[1]:
            raise ValueError(f"dropout_radius must be (min, max) with 0 < min <= max, got {self.dropout_radius!r}")
