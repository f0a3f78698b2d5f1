"""Data sets on disk: ``room_with_expressions``, ``generate_dataset`` (per-scene ``.npz`` plus
ScanRefer and Multi3DRefer JSON, as ``docs/architecture.md`` describes) and the ``bqnet-synth``
command line (``python -m bqnet_synth``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from bqnet_synth import expressions as ex
from bqnet_synth.furnish import _layout_room
from bqnet_synth.rooms import _finish, demo_room, generate_room
from bqnet_synth.scene import ROOM_TYPES, RoomConfig, SyntheticScene


def room_with_expressions(seed: int = 0, *, demo: bool = False, config: RoomConfig | None = None,
                          expr_config: Any = None) -> tuple[SyntheticScene, list[Any]]:
    """A room and its verified referring expressions (``expressions.Expression``).

    ``demo=True`` gives ``demo_room(seed)`` with the demo sentences first ("the chair next to the
    desk", a several-target and a zero-target sentence), then generated ones.
    """
    if demo:
        scene = demo_room(seed, config)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xE1]))
        return scene, ex.demo_expressions(scene) + ex.generate_expressions(scene, rng, expr_config)
    scene = generate_room(seed, config)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xE2]))
    return scene, ex.generate_expressions(scene, rng, expr_config)


def _superpoint_fn(mode: bool | None) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    """The online oversegmentation if wanted and available (None: write -1)."""
    if mode is False:
        return None
    try:
        from bqnet_model.superpoints import oversegment  # type: ignore[import-not-found]
    except ImportError as exc:
        if mode is True:
            raise ImportError("superpoints requested but bqnet_model.superpoints.oversegment is not "
                              f"importable ({exc}); use superpoints=False / --no-superpoints") from exc
        warnings.warn("bqnet_model.superpoints is not importable: writing superpoint = -1", RuntimeWarning,
                      stacklevel=3)
        return None
    return lambda xyz, rgb: np.asarray(oversegment(xyz, rgb), dtype=np.int64)


def save_scene(path: str | os.PathLike, scene: SyntheticScene, superpoint: np.ndarray | None = None) -> None:
    """Write the architecture's per-scene ``.npz`` (superpoint -1 when not given)."""
    n = len(scene.xyz)
    sp = np.full(n, -1, np.int64) if superpoint is None else np.asarray(superpoint, np.int64)
    if sp.shape != (n,):
        raise ValueError(f"superpoint must have shape ({n},), got {sp.shape}")
    np.savez(path, xyz=scene.xyz.astype(np.float32), rgb=scene.rgb.astype(np.uint8), superpoint=sp,
             semantic=scene.semantic.astype(np.int64), instance=scene.instance.astype(np.int64),
             object_names=scene.object_names)


@dataclass
class DatasetSummary:
    """What ``generate_dataset`` wrote and how long it took."""

    out_dir: str
    scene_ids: list[str]
    n_points: list[int]
    seconds_per_room: list[float]  # wall clock of room generation + sampling (not expressions, superpoints, I/O)
    cpu_seconds_per_room: list[float]  # the same in process CPU time (fair on a busy machine)
    eval_type_counts: dict[str, int]
    relation_counts: dict[str, int]
    scanrefer_json: str
    multi3drefer_json: str
    superpoints: bool
    style_counts: dict[str, int] = field(default_factory=dict)  # sentences per style ('plain': the grammar's)
    typo_count: int = 0


def _room_config(cfg: RoomConfig, rng: np.random.Generator) -> RoomConfig:
    """``cfg`` with its density drawn log-uniformly in ``cfg.density_range`` (``cfg`` itself without one)."""
    if cfg.density_range is None:
        return cfg
    lo, hi = (float(v) for v in cfg.density_range)
    return dataclasses.replace(cfg, density=float(np.exp(rng.uniform(np.log(lo), np.log(hi)))))


def generate_dataset(out_dir: str | os.PathLike, n_scenes: int, seed: int = 0, split_name: str = "train", *,
                     config: RoomConfig | None = None, expr_config: Any = None, superpoints: bool | None = None,
                     progress: bool = False, first_index: int = 0) -> DatasetSummary:
    """Write ``n_scenes`` rooms as ``<scene_id>.npz`` plus ``<split>_scanrefer.json`` (single-target
    sentences, ``eval_type`` unique/multiple) and ``<split>_multi3drefer.json`` (all sentences,
    ``eval_type`` zt_w_d / zt_wo_d / st_w_d / st_wo_d / mt).

    Scene ``i`` depends only on (seed, split_name, i), so splits with one seed differ and a data set
    can be extended. ``superpoints``: None = use ``bqnet_model.superpoints`` when importable (else -1
    with a warning), True = required, False = write -1.
    """
    if not isinstance(n_scenes, (int, np.integer)) or isinstance(n_scenes, bool) or n_scenes < 1:
        raise ValueError(f"n_scenes must be a positive int, got {n_scenes!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not split_name or not all(c.isalnum() or c in "_-" for c in split_name):
        raise ValueError(f"split_name must be a non-empty word of letters, digits, '_' or '-', got {split_name!r}")
    cfg = config or RoomConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sp_fn = _superpoint_fn(superpoints)
    salt = zlib.crc32(split_name.encode())
    scanrefer: list[dict[str, Any]] = []
    multi: list[dict[str, Any]] = []
    ids, npts, secs, cpu = [], [], [], []
    et_counts: dict[str, int] = {}
    rel_counts: dict[str, int] = {}
    style_counts: dict[str, int] = {}
    n_typo = 0
    it: Any = range(first_index, first_index + int(n_scenes))
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc=f"bqnet-synth {split_name}", unit="room")
    for i in it:
        ss = np.random.SeedSequence([int(seed), salt, int(i)])
        # a third child for the density draw: the first two (and so every room without
        # density_range) are the same as before it existed
        room_rng, expr_rng, density_rng = (np.random.default_rng(s) for s in ss.spawn(3))
        t0, c0 = time.perf_counter(), time.process_time()
        rcfg = _room_config(cfg, density_rng)
        room_type = rcfg.room_type or ROOM_TYPES[int(room_rng.integers(len(ROOM_TYPES)))]
        layout = _layout_room(room_rng, room_type, rcfg)
        scene_id = f"synth_{split_name}_{int(i):05d}"
        scene = _finish(scene_id, layout, rcfg, room_rng, room_type)
        secs.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        exprs = ex.generate_expressions(scene, expr_rng, expr_config)
        sp = sp_fn(scene.xyz, scene.rgb) if sp_fn is not None else None
        save_scene(out / f"{scene_id}.npz", scene, sp)
        ids.append(scene_id)
        npts.append(len(scene.xyz))
        for k, e in enumerate(exprs):
            et_counts[e.eval_type] = et_counts.get(e.eval_type, 0) + 1
            rel_counts[e.relation] = rel_counts.get(e.relation, 0) + 1
            style_counts[e.style] = style_counts.get(e.style, 0) + 1
            n_typo += int(e.typo)
            multi.append(e.to_multi3drefer(scene_id, k))
            if e.scanrefer_eval_type is not None:
                scanrefer.append(e.to_scanrefer(scene_id, k))
    sr_path = out / f"{split_name}_scanrefer.json"
    m3_path = out / f"{split_name}_multi3drefer.json"
    sr_path.write_text(json.dumps(scanrefer, indent=1))
    m3_path.write_text(json.dumps(multi, indent=1))
    return DatasetSummary(str(out), ids, npts, secs, cpu, et_counts, rel_counts, str(sr_path), str(m3_path),
                          sp_fn is not None, style_counts, n_typo)


def main(argv: Sequence[str] | None = None) -> int:
    """``bqnet-synth --out DIR --scenes N --seed S --split train``: write a synthetic data set."""
    ap = argparse.ArgumentParser(prog="bqnet-synth", description=main.__doc__)
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--scenes", type=int, required=True, help="number of rooms")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="train", help="split name (file prefix and seed salt)")
    ap.add_argument("--first-index", type=int, default=0, help="index of the first room (to extend a set)")
    ap.add_argument("--density", type=float, default=RoomConfig.density, help="points per m^2 before thinning")
    ap.add_argument("--density-range", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                    help="draw each room's density log-uniformly in [LO, HI] points per m^2 (overrides "
                         "--density): rooms as sparse as real scans' 50k-point subsets, e.g. 250 2000")
    ap.add_argument("--room-type", choices=ROOM_TYPES, default=None)
    ap.add_argument("--styles", type=float, default=0.0,
                    help="share of sentences reworded as commands, questions, Sr3D / ScanRefer / Nr3D styles "
                         "(bqnet_synth.styles); 0 = the grammar's sentences unchanged")
    ap.add_argument("--typo-rate", type=float, default=0.0, help="share of sentences with one misspelt word")
    ap.add_argument("--held-out-styles", action="store_true",
                    help="reword every sentence with the held-out word pool (a check set of wordings that "
                         "training never uses; --styles is then ignored)")
    sp = ap.add_mutually_exclusive_group()
    sp.add_argument("--superpoints", dest="superpoints", action="store_true", default=None,
                    help="compute superpoints (fail if bqnet_model.superpoints is missing)")
    sp.add_argument("--no-superpoints", dest="superpoints", action="store_false",
                    help="write superpoint = -1")
    args = ap.parse_args(argv)
    if args.scenes < 1:
        ap.error("--scenes must be >= 1")
    for k in ("styles", "typo_rate"):
        if not 0.0 <= getattr(args, k) <= 1.0:
            ap.error(f"--{k.replace('_', '-')} must be in [0, 1]")
    try:  # RoomConfig checks the values (density, density_range)
        cfg = RoomConfig(density=args.density, room_type=args.room_type,
                         density_range=None if args.density_range is None else tuple(args.density_range))
    except ValueError as exc:
        ap.error(str(exc))
    ecfg = ex.ExpressionConfig(styles=args.styles, typo_rate=args.typo_rate, held_out=args.held_out_styles)
    s = generate_dataset(args.out, args.scenes, args.seed, args.split, config=cfg, expr_config=ecfg,
                         superpoints=args.superpoints, progress=True, first_index=args.first_index)
    n = np.asarray(s.n_points)
    print(f"wrote {len(s.scene_ids)} rooms to {s.out_dir}: {int(n.mean())} points/room "
          f"(min {int(n.min())}, max {int(n.max())}), {np.mean(s.seconds_per_room):.3f} s/room "
          f"({np.mean(s.cpu_seconds_per_room):.3f} s CPU), "
          f"superpoints {'yes' if s.superpoints else 'no (-1)'}")
    print("expressions per eval_type:", json.dumps(dict(sorted(s.eval_type_counts.items()))))
    print("expressions per relation:", json.dumps(dict(sorted(s.relation_counts.items()))))
    print("expressions per style:", json.dumps(dict(sorted(s.style_counts.items()))), f"typos: {s.typo_count}")
    return 0
