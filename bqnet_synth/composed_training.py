"""Composed rooms as training data (``write_composed_rooms``): sentences and files.

A composed room (``composed_rooms.compose_room``) is labelled as a real scan is, so its sentences
come from ``real_scenes``: the grammar's claims checked on the boxes of the composed cloud, objects
kept from the generator keeping their fronts (real ones have none: no left/right claims about
them). The folder is written as ``real_training`` writes one: ``<scene>.npz`` per room (superpoint
-1: ``ReferDataset`` computes the online ones) and ``train_scanrefer.json`` /
``train_multi3drefer.json`` (``source`` 'composed'), so ``merge_real_into`` appends it to a
synthetic folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bqnet_model.data.scannet import save_scene_npz
from bqnet_synth import expressions as ex
from bqnet_synth.composed_rooms import FLOOR_LEVEL, ComposeConfig, ComposedRoom, ObjectBank, compose_room
from bqnet_synth.real_scenes import generate_real_expressions, real_scene_geometry
from bqnet_synth.real_training import _FILES, _number
from bqnet_synth.rooms import generate_room

__all__ = ["composed_expressions", "ComposedSummary", "write_composed_rooms", "format_summary"]

_SOURCE = "composed"


def composed_expressions(room: ComposedRoom, rng: np.random.Generator,
                         config: ex.ExpressionConfig | None = None) -> list[ex.Expression]:
    """The grammar's sentences checked on the composed cloud's boxes (kept objects keep their front)."""
    sc = room.scene
    geom = real_scene_geometry(sc.scene_id, sc.xyz, sc.rgb, sc.semantic, sc.instance, sc.object_names)
    if geom is None:
        return []
    for obj, sid in zip(geom.scene.objects, geom.scan_ids.tolist()):
        src = room.kept.get(int(sid))
        if src is not None and src.front is not None:
            obj.front = np.asarray(src.front, float).copy()
    return generate_real_expressions(geom, rng, config)


@dataclass
class ComposedSummary:
    """What ``write_composed_rooms`` wrote."""

    out_dir: str
    scene_ids: list[str]
    n_points: list[int]
    replaced: dict[str, int]  # class -> objects replaced by bank instances
    kept: dict[str, int]  # class -> replaceable objects (class in the bank) that stayed synthetic
    dropped: int
    sentences: int  # GRES entries
    res_sentences: int
    real_targets: int = 0  # targets (over GRES entries) that are placed real objects
    synthetic_targets: int = 0  # and that are objects kept from the generator
    files: list[str] = field(default_factory=list)


def write_composed_rooms(bank: ObjectBank, out_dir: str | os.PathLike, n_rooms: int, seed: int = 0, *,
                         first_index: int = 0, config: ComposeConfig | None = None,
                         expr_config: ex.ExpressionConfig | None = None, progress: bool = False) -> ComposedSummary:
    """Write rooms ``composed_<i>`` for i in [first_index, first_index + n_rooms): ``.npz`` per room
    and ``train_*.json``. Room i depends only on (bank, seed, i), so folders can be built in parts
    (then their entries joined: ann ids restart at 0 in each file, ids are per scene)."""
    if isinstance(n_rooms, bool) or not isinstance(n_rooms, (int, np.integer)) or n_rooms < 1:
        raise ValueError(f"n_rooms must be a positive integer, got {n_rooms!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = ComposedSummary(str(out), [], [], {}, {}, 0, 0, 0)
    items: list[tuple[dict | None, dict]] = []
    it: Any = range(int(first_index), int(first_index) + int(n_rooms))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="composed rooms", unit="room")
    bank_classes = set(bank.class_counts())
    for i in it:
        ss = np.random.SeedSequence([int(seed), 0xC0B0, int(i)])
        room_seed = int(ss.generate_state(1)[0])
        compose_rng, expr_rng = (np.random.default_rng(q) for q in ss.spawn(2))
        sid = f"composed_{int(i):05d}"
        room = compose_room(generate_room(room_seed, scene_id=sid), bank, compose_rng, config, sid)
        save_scene_npz(out / f"{sid}.npz", room.scene)
        s.scene_ids.append(sid)
        s.n_points.append(len(room.scene.xyz))
        for pl in room.placements:
            s.replaced[pl.cls] = s.replaced.get(pl.cls, 0) + 1
        for o in room.kept.values():
            if o.name in bank_classes and o.mount in FLOOR_LEVEL + ("on",):
                s.kept[o.name] = s.kept.get(o.name, 0) + 1
        s.dropped += len(room.dropped)
        real_ids = {p.instance_id for p in room.placements}
        for e in composed_expressions(room, expr_rng, expr_config):
            n_real = sum(int(t) in real_ids for t in e.target_ids)
            s.real_targets += n_real
            s.synthetic_targets += len(e.target_ids) - n_real
            gres = dict(e.to_multi3drefer(sid, 0), source=_SOURCE)
            res = dict(e.to_scanrefer(sid, 0), source=_SOURCE) if e.scanrefer_eval_type else None
            items.append((res, gres))
    res, gres = _number(items, 1)
    s.sentences, s.res_sentences = len(gres), len(res)
    for fmt, entries in (("res", res), ("gres", gres)):
        p = out / _FILES[fmt].format(split="train")
        p.write_text(json.dumps(entries, indent=1))
        s.files.append(str(p))
    return s


def format_summary(s: ComposedSummary) -> str:
    """The summary as text: rooms, points, objects replaced / kept per class, sentences."""
    n = np.asarray(s.n_points)
    rep = ", ".join(f"{c} {k}" for c, k in sorted(s.replaced.items(), key=lambda kv: -kv[1])) or "-"
    kept = ", ".join(f"{c} {k}" for c, k in sorted(s.kept.items(), key=lambda kv: -kv[1])) or "-"
    return (f"wrote {len(s.scene_ids)} composed rooms to {s.out_dir}: {int(n.mean())} points/room "
            f"(min {int(n.min())}, max {int(n.max())})\n"
            f"  replaced by real objects ({sum(s.replaced.values())}): {rep}\n"
            f"  left synthetic though the bank has the class ({sum(s.kept.values())}): {kept}\n"
            f"  dropped (no longer fit on a replaced support): {s.dropped}\n"
            f"  sentences: {s.sentences} GRES / {s.res_sentences} RES entries; their targets: "
            f"{s.real_targets} real objects, {s.synthetic_targets} generated ones")
