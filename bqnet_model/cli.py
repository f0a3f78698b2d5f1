"""``bqnet-segment``: segment the objects sentences name in a point-cloud map.

The main job for a new user: one map (a ``.ply`` file, or ``demo`` for the bundled synthetic
room), one or more sentences, a trained checkpoint. The map is prepared once (clean, voxelize,
superpoints, backbone) and every sentence is answered from that cache in one batched query, the
way the ROS node works. For each sentence the job writes a coloured PLY (target highlighted, the
rest dimmed, an ``instance`` field), a PNG (top-down + oblique views) and a JSON with the numbers.

Every user mistake (missing file, bad PLY, no checkpoint, empty sentence, unwritable folder) ends
with one clear message and a non-zero exit code, never a traceback. This module checks the
arguments and reads the map and the model; ``bqnet_model.cli_outputs`` answers and writes the
files (its names are re-exported here).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from bqnet_model.cli_outputs import (
    PROG,
    TASKS,
    CliError,
    JobReport,
    SentenceOutput,
    progress,
    result_to_dict,
    segment_and_write,
    slugify,
    summary_line,
    target_colors,
)
from bqnet_model.paths import PACKAGE_ROOT, resolve_resource, search_roots

__all__ = [
    "DEFAULT_CHECKPOINT",
    "CliError",
    "Cloud",
    "SentenceOutput",
    "JobReport",
    "build_parser",
    "checkpoint_candidates",
    "resolve_checkpoint",
    "check_texts",
    "check_out_dir",
    "demo_cloud",
    "load_cloud",
    "load_segmenter",
    "run",
    "summary_line",
    "slugify",
    "target_colors",
    "result_to_dict",
    "segment_and_write",
    "main",
]

DEFAULT_CHECKPOINT = "models/bqnet_tiny.pth"


@dataclass
class Cloud:
    """The map to segment: xyz float32 (N, 3), rgb uint8 (N, 3) or None, where it came from."""

    xyz: np.ndarray
    rgb: np.ndarray | None
    source: str
    image_features: np.ndarray | None = None  # (N, C) per-point 2D features (--image-features)


# ----------------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (separate so tests and docs can inspect it)."""
    ap = argparse.ArgumentParser(
        prog=PROG,
        description="Segment the object(s) a sentence names in a 3D point-cloud map with BQNet.",
        epilog=(
            "example: bqnet-segment --cloud demo --text 'the chair next to the desk' --out out/seg\n"
            "The shipped model (models/bqnet_tiny.pth, also used by `make demo`) comes with the "
            "repository;\ntrain your own with bqnet-train."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--cloud", required=True,
                    help="the map: a .ply file (x, y, z; colours optional) or 'demo' for the bundled synthetic room")
    ap.add_argument("--text", action="append", default=None, metavar="SENTENCE",
                    help="a referring sentence; repeat for several (all answered from one prepared map)")
    ap.add_argument("--task", choices=TASKS, default="res",
                    help="res: exactly one target per sentence; gres: any number of targets, possibly none "
                         "(default: res)")
    ap.add_argument("--checkpoint", default=None,
                    help=f"trained model (default: {DEFAULT_CHECKPOINT}); a relative path is looked up in the "
                         "current folder, then under the package root")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the network runs (default: cpu)")
    ap.add_argument("--untrained", action="store_true",
                    help="use a RANDOMLY INITIALISED model built from --config (for tests and timing only; "
                         "the answers are meaningless)")
    ap.add_argument("--config", default=None,
                    help="YAML model config: the model to build with --untrained, or the network of an official "
                         "CFNet/BQNet checkpoint (which carries no config; default config/res.yaml, or "
                         "config/gres.yaml with --task gres)")
    ap.add_argument("--tokenizer", default=None, metavar="DIR",
                    help="folder with the text encoder's tokenizer files, for official checkpoints whose "
                         "RoBERTa tokenizer is not otherwise on this machine (vocab.json + merges.txt)")
    ap.add_argument("--image-features", default=None, metavar="NPY",
                    help="per-point 2D image features for models with the image branch: a float .npy of shape "
                         "(N, C), one row per point of --cloud, in the cloud's order (the authors' models: C = 1024)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random init with --untrained (default: 0)")
    ap.add_argument("--tta", type=int, default=None, metavar="K",
                    help="test-time augmentation: answer from K copies of the map turned about the vertical "
                         "axis (about K times slower); 1 = off (default: the model's own setting, 4 for the "
                         "shipped model)")
    ap.add_argument("--out", required=True, help="output folder (created if needed)")
    ap.add_argument("--no-indices", action="store_true",
                    help="leave the point indices out of the JSON files (the .ply's instance field has them)")
    ap.add_argument("--quiet", action="store_true", help="only the per-sentence summary lines")
    return ap


def check_texts(texts: Sequence[str] | None) -> list[str]:
    """Sentences stripped of outer whitespace; refuses none at all and empty ones."""
    if not texts:
        raise CliError("no sentence given: pass at least one --text 'the chair next to the desk'")
    out = []
    for i, t in enumerate(texts, start=1):
        s = " ".join(t.split())
        if not s:
            raise CliError(f"--text number {i} is empty or only whitespace: give a sentence that names an object")
        out.append(s)
    return out


def check_out_dir(path: str | os.PathLike) -> Path:
    """Create the output folder and prove it is writable before any slow work starts."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".bqnet-write-test-"):
            pass
    except OSError as exc:
        raise CliError(f"cannot write to the output folder {out}: {exc.strerror or exc}") from exc
    return out


def checkpoint_candidates(arg: str | None) -> list[Path]:
    """Where a checkpoint argument may point, in ``bqnet_model.paths`` order (as given when
    absolute, else the current folder, then the package root). ``None`` means the shipped model."""
    return resolve_resource(arg or DEFAULT_CHECKPOINT, roots=search_roots(package_root=PACKAGE_ROOT))[1]


def resolve_checkpoint(arg: str | None) -> Path:
    """The checkpoint file to load; a missing one says where it looked and how to get one."""
    found, cands = resolve_resource(arg or DEFAULT_CHECKPOINT, roots=search_roots(package_root=PACKAGE_ROOT))
    if found is not None:
        return found
    looked = "\n  ".join(str(p) for p in cands)
    what = f"the shipped model {DEFAULT_CHECKPOINT}" if arg is None else f"checkpoint {arg!r}"
    raise CliError(
        f"{what} not found; looked in:\n  {looked}\n"
        f"How to get one: the shipped model comes with the repository (the one `make demo` uses); restore it "
        f"with `git checkout -- {DEFAULT_CHECKPOINT}` in the repository root, or train your own with "
        "`bqnet-train config/tiny.yaml` and pass --checkpoint PATH.\n"
        "(--untrained --config FILE runs a random model, for tests only.)"
    )


# ----------------------------------------------------------------------------- input


def demo_cloud(out_dir: Path | None = None, *, density: float | None = None) -> tuple[Cloud, Any]:
    """The bundled synthetic demo room as a ``Cloud`` (and the labelled scene, for ground truth);
    written as ``out_dir/room.ply`` (with ``gt_instance``/``gt_semantic`` fields) when given."""
    from bqnet_model.synth_extra import load_synth

    synth = load_synth()
    scene = synth.demo_room() if density is None else synth.demo_room(config=synth.RoomConfig(density=density))
    if out_dir is not None:
        from bqnet_model.ply import write_ply

        write_ply(out_dir / "room.ply", scene.xyz, scene.rgb,
                  gt_instance=np.asarray(scene.instance, np.int32),
                  gt_semantic=np.asarray(scene.semantic, np.int32))
    cloud = Cloud(np.ascontiguousarray(scene.xyz, np.float32), np.ascontiguousarray(scene.rgb, np.uint8),
                  f"demo ({scene.scene_id})")
    return cloud, scene


_T = TypeVar("_T")


def _read_input(path: Path, reader: Callable[[Path], _T], *, missing: str, unreadable: str,
               errors: tuple[type[Exception], ...] = (ValueError, OSError)) -> _T:
    """``reader(path)`` for one input file of the command: a missing file is ``CliError(missing)``,
    a reader error ``CliError("<unreadable>: <error>")``, so every input fails the same way."""
    if not path.is_file():
        raise CliError(missing)
    try:
        return reader(path)
    except errors as exc:
        raise CliError(f"{unreadable}: {exc}") from exc


def load_cloud(spec: str, out_dir: Path | None = None, *, demo_density: float | None = None) -> Cloud:
    """Read the map: a PLY file, or ``demo`` (the bundled synthetic room, also written as
    ``out_dir/room.ply`` so the input can be looked at; ``demo_density`` points per m^2 thins it)."""
    if spec == "demo":
        return demo_cloud(out_dir, density=demo_density)[0]
    path = Path(spec)
    if path.exists() and not path.is_file():
        raise CliError(f"--cloud {path} is not a file")
    from bqnet_model.ply import read_ply

    ply = _read_input(path, read_ply,
                     missing=f"cloud file not found: {path} (pass a .ply file, or 'demo' for the bundled room)",
                     unreadable=f"cannot read the cloud {path} as a PLY point cloud")
    n = ply.n_points
    if n == 0:
        raise CliError(f"the cloud {path} has no points")
    finite = np.isfinite(ply.xyz).all(axis=1)
    if not finite.any():
        raise CliError(f"the cloud {path} has no finite points (all x/y/z are NaN or Inf)")
    return Cloud(ply.xyz, ply.rgb, str(path))


def load_image_features(path: str | os.PathLike, n_points: int) -> np.ndarray:
    """A (N, C) float .npy of per-point image features for a cloud of ``n_points`` points."""
    p = Path(path)
    feats = _read_input(p, lambda q: np.load(q, allow_pickle=False), missing=f"--image-features: file not found: {p}",
                       unreadable=f"--image-features: cannot read {p} as a .npy array")
    if feats.ndim != 2 or feats.shape[0] != n_points or not np.issubdtype(feats.dtype, np.floating):
        raise CliError(f"--image-features: {p} must be a float array of shape ({n_points}, C), one row per point "
                       f"of the cloud; got {feats.dtype} {feats.shape}")
    return feats



# ----------------------------------------------------------------------------- main


_UNTRAINED_BANNER = """\
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!! WARNING: --untrained: the network has RANDOM weights (config {config}, seed {seed}).
!! Its answers are meaningless; use this for tests and timing only.
!! For real answers use the shipped model (no --untrained) or a trained --checkpoint.
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"""


def _pick_device(device: str) -> str:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print(f"[{PROG}] warning: --device cuda asked for but no GPU is available; running on the CPU",
                  file=sys.stderr, flush=True)
            return "cpu"
    return device


def load_segmenter(args: argparse.Namespace, device: str) -> tuple[Any, str]:
    """The ``Segmenter`` the arguments ask for on ``device``, and a note of what it is (for the JSON)."""
    from bqnet_model.pipeline import Segmenter

    if args.untrained:
        from bqnet_model.model.config import load_config

        cfg_path = Path(args.config)
        cfg = _read_input(cfg_path, load_config, missing=f"config file not found: {cfg_path}",
                         unreadable=f"bad config {cfg_path}", errors=(ValueError, TypeError))
        print(_UNTRAINED_BANNER.format(config=cfg_path, seed=args.seed), file=sys.stderr, flush=True)
        try:
            seg = Segmenter.from_config(cfg, device=device, seed=args.seed, **_overrides(args))
        except (ValueError, TypeError, OSError) as exc:
            raise CliError(f"cannot build the model from {cfg_path}: {exc}") from exc
        return seg, "UNTRAINED (random weights)"
    ckpt = resolve_checkpoint(args.checkpoint)
    official = _official_config(args, ckpt)
    try:
        seg = Segmenter.from_checkpoint(ckpt, device=device, config=official, **_overrides(args))
    except FileNotFoundError as exc:
        raise CliError(f"cannot load checkpoint {ckpt}: {exc}") from exc
    except (ValueError, TypeError, KeyError, RuntimeError, EOFError, OSError) as exc:
        msg = str(exc).strip() or type(exc).__name__
        raise CliError(f"cannot load checkpoint {ckpt}: {msg}\n(is it a bqnet checkpoint? train one with "
                       "bqnet-train or use the shipped models/bqnet_tiny.pth)") from exc
    return seg, f"checkpoint {ckpt}"


def _official_config(args: argparse.Namespace, ckpt: Path) -> Any:
    """The config to build an official checkpoint's network from (None for our own files, which
    carry theirs): ``--config`` or the authors' ``config/res.yaml`` / ``gres.yaml``; ``--tokenizer``
    fills in ``text.tokenizer``."""
    from bqnet_model.checkpoint import carries_config
    from bqnet_model.model.config import load_config

    if carries_config(ckpt):
        if args.config or args.tokenizer:
            raise CliError(f"{ckpt} carries its own config: --config and --tokenizer apply to official checkpoints only")
        return None
    path = Path(args.config) if args.config else PACKAGE_ROOT / "config" / f"{args.task}.yaml"
    cfg = _read_input(path, load_config,
                     missing=f"config file not found: {path} (an official checkpoint needs the config of its network)",
                     unreadable=f"bad config {path}", errors=(ValueError, TypeError))
    if args.tokenizer:
        cfg.model.text.tokenizer = args.tokenizer
    return cfg


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Inference settings the command line changes (``--tta``)."""
    return {} if getattr(args, "tta", None) is None else {"tta_rotations": args.tta}


def run(args: argparse.Namespace) -> JobReport:
    """The whole job for parsed arguments (cheap checks first, then model, map, sentences)."""
    texts = check_texts(args.text)
    if args.untrained and not args.config:
        raise CliError("--untrained needs --config FILE (e.g. config/tiny.yaml) to build the random model")
    if args.untrained and args.checkpoint:
        raise CliError("--untrained and --checkpoint exclude each other")
    if args.tta is not None and args.tta < 1:
        raise CliError(f"--tta must be >= 1 (1 = off), got {args.tta}")
    if not args.untrained:
        resolve_checkpoint(args.checkpoint)  # fail before reading a large map
    out_dir = check_out_dir(args.out)
    t0 = time.perf_counter()
    cloud = load_cloud(args.cloud, out_dir)
    if args.image_features:
        cloud.image_features = load_image_features(args.image_features, len(cloud.xyz))
    progress(f"read {len(cloud.xyz):,} points from {cloud.source} in {(time.perf_counter() - t0) * 1000:.0f} ms"
         + (f"; input room written to {out_dir / 'room.ply'}" if args.cloud == "demo" else ""), args.quiet)
    device = _pick_device(args.device)
    t0 = time.perf_counter()
    seg, what = load_segmenter(args, device)
    progress(f"model loaded in {(time.perf_counter() - t0) * 1000:.0f} ms ({what}, device {device})", args.quiet)
    prefix = "[UNTRAINED] " if args.untrained else ""
    report = segment_and_write(seg, cloud, [(t, args.task) for t in texts], out_dir, title_prefix=prefix,
                               meta={"model": what, "untrained": bool(args.untrained)}, quiet=args.quiet,
                               include_indices=not args.no_indices)
    progress(f"outputs in {out_dir}/ (per sentence: .ply coloured cloud, .png picture, .json numbers)", args.quiet)
    return report


def _setup_logging(quiet: bool) -> None:
    """Show the library's warnings (downsampling, dropped points, CPU fallback) on stderr, once."""
    lg = logging.getLogger("bqnet_model")
    if not any(isinstance(h, _StderrHandler) for h in lg.handlers):
        h = _StderrHandler()
        h.setFormatter(logging.Formatter(f"[{PROG}] %(levelname)s: %(message)s"))
        lg.addHandler(h)
    lg.setLevel(logging.WARNING if quiet else logging.INFO)


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (it may be redirected after set-up)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001 - logging must never break the job
            self.handleError(record)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry: parse, run, turn user errors into ``error: ...`` and exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.quiet)
    try:
        run(args)
    except CliError as exc:
        parser.exit(2, f"{PROG}: error: {exc}\n")
    except KeyboardInterrupt:
        parser.exit(130, f"{PROG}: interrupted\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
