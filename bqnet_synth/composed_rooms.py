"""Synthetic rooms furnished with real objects cut out of labelled scans (``write_composed_rooms``).

Six real training scans give six object arrangements; the generator gives any number of layouts
but only its own clean geometry. A composed room takes a generated room's layout and structure
(floor, walls, doors, windows) and puts, at each furniture object whose class the *object bank*
holds, a real instance of that class: its own points, colours and sensor noise, turned about z and
set on the floor at the synthetic object's footprint (against its wall when it stood against one),
or on the top of its support for objects that stood on another (a box on a cabinet).

* ``ObjectBank``: every vocabulary instance of the training scans (never the held-out ones,
  ``real_training.DEFAULT_LEAVE_OUT``) whose raw label the grammar's nouns fit, points relative to
  its box's bottom centre, and the scans' floor point density (points per m^2).
* ``compose_room``: one room. A placement is skipped (the synthetic object stays) when its
  footprint leaves the floor or covers more than ``max_overlap`` of another object's footprint (or
  of its own, whichever is smaller). Objects on a replaced support move with it, or are dropped
  when they no longer fit on it. The synthetic points are thinned to the bank's density, so real
  and generated parts of a room are sampled alike.
* Labels: one instance id per object, its class, its raw label as ``object_names`` (as a scan's),
  so ``real_scenes`` builds the grammar's geometry and sentences on the composed cloud
  (``composed_training`` writes the rooms as a training folder).
"""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from bqnet_model.data.classes import CLASS_ID, CLASSES
from bqnet_model.data.scannet import ScanNetScene
from bqnet_synth.real_scenes import MIN_TARGET_POINTS, named_as
from bqnet_synth.real_training import DEFAULT_LEAVE_OUT
from bqnet_synth.relations import _STRUCTURE
from bqnet_synth.scene import SceneObject, SyntheticScene

__all__ = ["ObjectBank", "build_object_bank", "bank_from_real_dir", "ComposeConfig", "Placement",
           "ComposedRoom", "compose_room", "FLOOR_LEVEL"]

_N_CLASSES = len(CLASSES)
_DENSITY_CELL = 0.2  # metres: floor area = occupied cells of this size (sparse scans have holes)
FLOOR_LEVEL = ("floor", "under")  # mounts placed on the floor
_OCCUPYING = ("floor", "under", "in_wall")  # mounts whose footprint blocks the floor


def _floor_density(xyz: np.ndarray) -> float:
    """Points per m^2 of the occupied floor cells of floor points ``xyz`` (0 for none)."""
    if len(xyz) == 0:
        return 0.0
    cells = np.unique(np.floor(np.asarray(xyz)[:, :2] / _DENSITY_CELL).astype(np.int64), axis=0)
    return float(len(xyz) / (len(cells) * _DENSITY_CELL ** 2))


@dataclass
class ObjectBank:
    """Real object instances, concatenated: instance k is rows ``starts[k]:starts[k+1]`` of ``xyz``
    (metres, relative to its box's bottom centre) and ``rgb``; its class id, raw label, scan and
    object id there. ``floor_density``: median floor points per m^2 of the scans it came from."""

    xyz: np.ndarray  # (P, 3) float32
    rgb: np.ndarray  # (P, 3) uint8
    starts: np.ndarray  # (K + 1,) int64
    classes: np.ndarray  # (K,) int64, index into CLASSES
    raw_labels: np.ndarray  # (K,) str
    scans: np.ndarray  # (K,) str
    object_ids: np.ndarray  # (K,) int64
    floor_density: float = 0.0

    def __len__(self) -> int:
        return len(self.classes)

    def points(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Instance k's (xyz, rgb)."""
        a, b = int(self.starts[k]), int(self.starts[k + 1])
        return self.xyz[a:b], self.rgb[a:b]

    def of_class(self, cls: str) -> np.ndarray:
        """Indices of the instances of class ``cls``."""
        return np.flatnonzero(self.classes == CLASS_ID[cls])

    def class_counts(self) -> dict[str, int]:
        return dict(collections.Counter(CLASSES[int(c)] for c in self.classes))

    def save(self, path: str | os.PathLike) -> None:
        """One compressed ``.npz`` (the bank is shipped, not read every epoch)."""
        np.savez_compressed(path, xyz=self.xyz, rgb=self.rgb, starts=self.starts, classes=self.classes,
                            raw_labels=self.raw_labels.astype(str), scans=self.scans.astype(str),
                            object_ids=self.object_ids, floor_density=np.float64(self.floor_density))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ObjectBank":
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"object bank not found: {p} (write one with tools/make_composed_rooms.py "
                                    "--real-dir ... --save-bank FILE)")
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in ("xyz", "rgb", "starts", "classes", "raw_labels", "scans", "object_ids")
                       if k not in z.files]
            if missing:
                raise ValueError(f"{p} is not an object bank: it lacks {missing}")
            return cls(z["xyz"].astype(np.float32), z["rgb"].astype(np.uint8), z["starts"].astype(np.int64),
                       z["classes"].astype(np.int64), z["raw_labels"].astype(str), z["scans"].astype(str),
                       z["object_ids"].astype(np.int64), float(z["floor_density"]) if "floor_density" in z.files
                       else 0.0)


def build_object_bank(scenes: Iterable[ScanNetScene], leave_out: Sequence[str] = DEFAULT_LEAVE_OUT) -> ObjectBank:
    """The bank of labelled scans (arrays as ``ScanNetScene``): every instance of a vocabulary class
    other than the structure, with at least ``MIN_TARGET_POINTS`` points and a raw label the class's
    nouns fit (others would only be proxies, never targets). Scans in ``leave_out`` are skipped
    whatever the caller passes: held-out scans must not reach training through their objects."""
    held = set(leave_out)
    xyz, rgb, classes, raw, scans, oids, dens = [], [], [], [], [], [], []
    for sc in scenes:
        if sc.scene_id in held:
            continue
        inst, sem = np.asarray(sc.instance, np.int64), np.asarray(sc.semantic, np.int64)
        dens.append(_floor_density(np.asarray(sc.xyz)[sem == CLASS_ID["floor"]]))
        names = [str(s) for s in sc.object_names]
        for oid in np.unique(inst[inst >= 0]).tolist():
            m = inst == oid
            s = sem[m]
            s = s[(s >= 0) & (s < _N_CLASSES)]
            if m.sum() < MIN_TARGET_POINTS or s.size == 0:
                continue
            cid = int(np.bincount(s).argmax())
            label = names[oid] if oid < len(names) else ""
            if CLASSES[cid] in _STRUCTURE or (label and not named_as(label, CLASSES[cid])):
                continue
            p = np.asarray(sc.xyz, np.float64)[m]
            lo, hi = p.min(axis=0), p.max(axis=0)
            origin = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]])
            xyz.append((p - origin).astype(np.float32))
            rgb.append(np.asarray(sc.rgb, np.uint8)[m])
            classes.append(cid)
            raw.append(label or CLASSES[cid])
            scans.append(sc.scene_id)
            oids.append(oid)
    if not classes:
        raise ValueError("no object for the bank: every scan was held out or had no vocabulary instance "
                         f"(held out: {sorted(held)})")
    starts = np.r_[0, np.cumsum([len(p) for p in xyz])].astype(np.int64)
    return ObjectBank(np.concatenate(xyz), np.concatenate(rgb), starts, np.asarray(classes, np.int64),
                      np.asarray(raw, str), np.asarray(scans, str), np.asarray(oids, np.int64),
                      float(np.median([d for d in dens if d > 0])) if any(d > 0 for d in dens) else 0.0)


def bank_from_real_dir(real_dir: str | os.PathLike, leave_out: Sequence[str] = DEFAULT_LEAVE_OUT,
                       scans: Sequence[str] | None = None) -> ObjectBank:
    """The bank of a real-data folder's training scans (50k subsets, as ``real_training`` reads them);
    ``scans`` picks some (held-out ones are refused: ValueError)."""
    from bqnet_model.eval_real import check_real_dir, load_real_scene

    layout = check_real_dir(real_dir)
    todo = layout.select(scans)
    bad = sorted(set(todo) & set(leave_out))
    if scans is not None and bad:
        raise ValueError(f"scans {bad} are held out: they cannot give bank objects")
    return build_object_bank((load_real_scene(layout, s, points="votenet").scene for s in todo
                              if s not in set(leave_out)), leave_out)


@dataclass
class ComposeConfig:
    """``max_overlap``: largest share of the smaller footprint two objects may share. ``yaw``:
    'aligned' (quarter turns, long side as the synthetic object's: scans are axis-aligned, so boxes
    stay tight) or 'random' (any angle). ``match_density``: thin the generated points to the bank's
    floor density. ``p_replace``: chance each replaceable object is tried. ``fill_floor``: the
    generator samples no floor under furniture, and a hole larger than the object in it would mark
    every swap."""

    max_overlap: float = 0.2
    yaw: str = "aligned"
    match_density: bool = True
    p_replace: float = 1.0
    fill_floor: bool = True  # sample floor where a replaced object hid it and its successor does not
    wall_margin: float = 0.03  # metres a footprint may pass the floor's edge (scan noise)

    def __post_init__(self) -> None:
        if self.yaw not in ("aligned", "random"):
            raise ValueError(f"yaw must be 'aligned' or 'random', got {self.yaw!r}")
        if not 0.0 <= self.max_overlap <= 1.0 or not 0.0 <= self.p_replace <= 1.0:
            raise ValueError(f"max_overlap and p_replace must be in [0, 1], got {self.max_overlap}, {self.p_replace}")


@dataclass
class Placement:
    """A bank instance put in a room: ``xyz_room = R(yaw) @ xyz_bank + translation``."""

    synthetic_id: int  # the object it replaces
    bank_index: int
    cls: str
    yaw: float
    translation: np.ndarray  # (3,)
    instance_id: int = -1  # in the composed room


@dataclass
class ComposedRoom:
    """The composed cloud (``scene``: labels as a real scan's, object_names = raw labels), what was
    placed, which synthetic objects were kept (composed id -> synthetic object) or dropped."""

    scene: ScanNetScene
    placements: list[Placement]
    kept: dict[int, SceneObject]
    dropped: list[int] = field(default_factory=list)
    thinning: float = 1.0


def _rot(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rect(o: SceneObject) -> np.ndarray:
    return np.array([o.box_min[0], o.box_min[1], o.box_max[0], o.box_max[1]], float)


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection of two footprints over the smaller one's area."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return float(w * h / max(small, 1e-9))


def _choose_yaw(rng: np.random.Generator, pts: np.ndarray, o: SceneObject, mode: str) -> float:
    if mode == "random":
        return float(rng.uniform(0, 2 * np.pi))
    ext = pts[:, :2].max(axis=0) - pts[:, :2].min(axis=0)
    syn = np.asarray(o.box_max[:2], float) - np.asarray(o.box_min[:2], float)
    near_square = min(ext) > 0.85 * max(ext) or min(syn) > 0.85 * max(syn)
    turn = (ext[0] >= ext[1]) != (syn[0] >= syn[1])  # a quarter turn puts the long side where it was
    k = int(rng.integers(4)) if near_square else int(turn) + 2 * int(rng.integers(2))
    return k * np.pi / 2


def _place_xy(pts: np.ndarray, o: SceneObject, walls: dict[int, SceneObject], centre: np.ndarray) -> np.ndarray:
    """Footprint centre for rotated points ``pts``: ``centre``, moved along a wall's normal so the
    side facing the wall stays where the synthetic object's was."""
    c = np.array(centre, float)
    w = walls.get(o.wall)
    if w is not None and w.front is not None:
        n = np.asarray(w.front, float)
        a = int(np.argmax(np.abs(n)))
        half = (pts[:, a].max() - pts[:, a].min()) / 2
        back = o.box_min[a] if n[a] > 0 else o.box_max[a]
        c[a] = back + np.sign(n[a]) * half
    return c - (pts[:, :2].max(axis=0) + pts[:, :2].min(axis=0)) / 2


def _footprint(pts: np.ndarray) -> np.ndarray:
    return np.r_[pts[:, :2].min(axis=0), pts[:, :2].max(axis=0)]


def _inside(rect: np.ndarray, synth: SyntheticScene, margin: float) -> bool:
    if synth.room is None:
        return True
    r = rect + np.array([margin, margin, -margin, -margin])
    corners = np.array([[r[0], r[1]], [r[0], r[3]], [r[2], r[1]], [r[2], r[3]]])
    return bool(synth.room.contains(corners).all())


def _fit_on(o: SceneObject, support: SceneObject, support_pts: np.ndarray | None, support_shift: np.ndarray | None,
            taken: list[np.ndarray], max_overlap: float) -> Callable[[np.ndarray], tuple[np.ndarray, float] | None]:
    """A function: footprint (x0, y0, x1, y1) of something to put where ``o`` stood -> (its new
    footprint, the height it stands at) on ``support`` as placed (real points ``support_pts``, or
    the synthetic support moved by ``support_shift``), None when it does not fit there."""
    old = _rect(support)
    d = np.zeros(3) if support_shift is None else np.asarray(support_shift, float)
    if support_pts is not None:
        srect = _footprint(support_pts)
        scale = (srect[2:] - srect[:2]) / np.maximum(old[2:] - old[:2], 1e-6)
        centre = (srect[:2] + srect[2:]) / 2 + (o.center[:2] - (old[:2] + old[2:]) / 2) * scale
    else:
        srect, centre = old + np.tile(d[:2], 2), o.center[:2] + d[:2]

    def fit(fp: np.ndarray) -> tuple[np.ndarray, float] | None:
        half = (fp[2:] - fp[:2]) / 2
        if np.any(2 * half > srect[2:] - srect[:2]):
            return None
        c = np.clip(centre, srect[:2] + half, srect[2:] - half)
        rect = np.r_[c - half, c + half]
        if any(_overlap(rect, r) > max_overlap for r in taken):
            return None
        if support_pts is None:
            return rect, float(o.box_min[2] + d[2])
        near = np.abs(support_pts[:, :2] - c) <= half
        under = support_pts[near.all(axis=1)]
        if len(under) < 5:
            return None
        return rect, float(np.percentile(under[:, 2], 95))

    return fit


def _fill_floor(synth: SyntheticScene, holes: list[tuple[np.ndarray, np.ndarray]], factor: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Floor points (xyz, rgb) in each (old footprint, new footprint) pair's old one outside the new,
    at the synthetic floor's density times ``factor``; heights and colours drawn from its points."""
    floor = synth.semantic == CLASS_ID["floor"]
    fxyz, frgb = np.asarray(synth.xyz, np.float64)[floor], np.asarray(synth.rgb, np.uint8)[floor]
    density = _floor_density(fxyz) * factor
    xyz, rgb = [np.zeros((0, 3))], [np.zeros((0, 3), np.uint8)]
    for old, new in holes if len(fxyz) else ():
        p = old[:2] + rng.random((int(rng.poisson(density * np.prod(old[2:] - old[:2]))), 2)) * (old[2:] - old[:2])
        p = p[~((p >= new[:2]) & (p <= new[2:])).all(axis=1)]
        pick = rng.integers(len(fxyz), size=len(p))
        xyz.append(np.c_[p, fxyz[pick, 2]])
        rgb.append(frgb[pick])
    return np.concatenate(xyz), np.concatenate(rgb)


def compose_room(synth: SyntheticScene, bank: ObjectBank, rng: np.random.Generator,
                 config: ComposeConfig | None = None, scene_id: str | None = None) -> ComposedRoom:
    """Furnish ``synth`` with bank instances (see the module docstring); deterministic in ``rng``."""
    cfg = config or ComposeConfig()
    objs = synth.objects
    by_id = {o.instance_id: o for o in objs}
    walls = {o.instance_id: o for o in objs if o.name == "wall"}
    occupied = {o.instance_id: _rect(o) for o in objs if o.mount in _OCCUPYING}
    placed: dict[int, tuple[Placement, np.ndarray]] = {}  # synthetic id -> (placement, room points)
    shift: dict[int, np.ndarray] = {}  # kept synthetic objects moved with their support
    dropped: list[int] = []
    floor_objs = sorted((o for o in objs if o.mount in FLOOR_LEVEL and o.name not in _STRUCTURE),
                        key=lambda o: -float(np.prod(np.asarray(o.box_max[:2]) - np.asarray(o.box_min[:2]))))

    def candidate(o: SceneObject) -> tuple[int, float, np.ndarray] | None:
        ks = bank.of_class(o.name)
        if ks.size == 0 or rng.random() >= cfg.p_replace:
            return None
        k = int(ks[rng.integers(ks.size)])
        yaw = _choose_yaw(rng, bank.points(k)[0], o, cfg.yaw)
        return k, yaw, bank.points(k)[0].astype(np.float64) @ _rot(yaw).T

    for o in floor_objs:
        cand = candidate(o)
        if cand is None:
            continue
        k, yaw, pts = cand
        t = np.r_[_place_xy(pts, o, walls, o.center[:2]), 0.0]
        rect = _footprint(pts + t)
        pair = {o.support, *(q.instance_id for q in objs if q.support == o.instance_id)}
        clash = any(_overlap(rect, r) > cfg.max_overlap for i, r in occupied.items()
                    if i != o.instance_id and i not in pair)
        if clash or not _inside(rect, synth, cfg.wall_margin):
            continue
        occupied[o.instance_id] = rect
        placed[o.instance_id] = (Placement(o.instance_id, k, o.name, yaw, t), pts + t)

    on_objs = [o for o in objs if o.mount == "on" and o.support in by_id]
    on_ids = {o.instance_id for o in on_objs}
    tops: dict[int, dict[int, np.ndarray]] = collections.defaultdict(dict)  # support -> {object: footprint}
    for o in on_objs:  # as generated: valid while their support stays
        tops[o.support][o.instance_id] = _rect(o)
    decided: set[int] = set()
    settled: set[int] = set()  # footprints already in their final place
    for _ in range(3):  # supports first: an object on an object on a table is decided after both
        for o in on_objs:
            s = o.support
            if o.instance_id in decided or (s in on_ids and s not in decided):
                continue
            decided.add(o.instance_id)
            if s in dropped:
                dropped.append(o.instance_id)
                continue
            moved = s in placed or s in shift
            cand = candidate(o)
            if cand is None and not moved:
                continue  # stays where the generator put it
            taken = [r for i, r in tops[s].items() if i != o.instance_id and (not moved or i in settled)]
            fit = _fit_on(o, by_id[s], placed.get(s, (None, None))[1], shift.get(s), taken, cfg.max_overlap)
            if cand is not None:
                k, yaw, pts = cand
                got = fit(_footprint(pts))
                if got is not None:
                    (rect, top), fp = got, _footprint(pts)
                    tops[s][o.instance_id] = rect
                    settled.add(o.instance_id)
                    t = np.r_[rect[:2] - fp[:2], top]
                    placed[o.instance_id] = (Placement(o.instance_id, k, o.name, yaw, t), pts + t)
                    continue
                if not moved:
                    continue
            got = fit(_rect(o))
            if got is None:
                dropped.append(o.instance_id)
                continue
            rect, top = got
            tops[s][o.instance_id] = rect
            settled.add(o.instance_id)
            shift[o.instance_id] = np.r_[rect[:2] - _rect(o)[:2], top - float(o.box_min[2])]
    # objects still undecided (supports deeper than three levels) keep their generated place

    # The composed cloud: kept synthetic points (thinned, shifted), then the placed instances.
    factor = 1.0
    if cfg.match_density and bank.floor_density > 0:
        syn_d = _floor_density(synth.xyz[synth.semantic == CLASS_ID["floor"]])
        factor = min(1.0, bank.floor_density / syn_d) if syn_d > 0 else 1.0
    keep_obj = [o for o in objs if o.instance_id not in placed and o.instance_id not in dropped]
    new_id = np.full(len(objs), -1, np.int64)
    new_id[[o.instance_id for o in keep_obj]] = np.arange(len(keep_obj))
    inst = np.asarray(synth.instance, np.int64)
    keep = (new_id[inst] >= 0) & (rng.random(len(inst)) < factor)
    xyz = np.asarray(synth.xyz, np.float64)[keep]
    for sid, d in shift.items():
        xyz[inst[keep] == sid] += d
    parts_xyz, parts_rgb = [xyz], [np.asarray(synth.rgb, np.uint8)[keep]]
    parts_ins, parts_sem = [new_id[inst[keep]]], [np.asarray(synth.semantic, np.int64)[keep]]
    names = [o.name for o in keep_obj]
    floor_ids = [o.instance_id for o in keep_obj if o.name == "floor"]
    if cfg.fill_floor and floor_ids:
        holes = [(_rect(by_id[i]), _footprint(pts)) for i, (_, pts) in placed.items() if by_id[i].mount in FLOOR_LEVEL]
        fx, fc = _fill_floor(synth, holes, factor, rng)
        parts_xyz.append(fx)
        parts_rgb.append(fc)
        parts_ins.append(np.full(len(fx), new_id[floor_ids[0]], np.int64))
        parts_sem.append(np.full(len(fx), CLASS_ID["floor"], np.int64))
    placements = []
    for sid in sorted(placed):
        pl, pts = placed[sid]
        pl.instance_id = len(names)
        names.append(str(bank.raw_labels[pl.bank_index]))
        parts_xyz.append(pts)
        parts_rgb.append(bank.points(pl.bank_index)[1])
        parts_ins.append(np.full(len(pts), pl.instance_id, np.int64))
        parts_sem.append(np.full(len(pts), CLASS_ID[pl.cls], np.int64))
        placements.append(pl)
    n = sum(len(p) for p in parts_xyz)
    scene = ScanNetScene(scene_id or synth.scene_id, np.concatenate(parts_xyz).astype(np.float32),
                         np.concatenate(parts_rgb).astype(np.uint8), np.full(n, -1, np.int64),
                         np.concatenate(parts_sem), np.concatenate(parts_ins), np.asarray(names, str))
    kept = {int(new_id[o.instance_id]): o for o in keep_obj}
    return ComposedRoom(scene, placements, kept, sorted(dropped), factor)
