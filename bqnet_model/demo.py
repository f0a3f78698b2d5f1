"""`make demo`: the main job on the bundled room.

1. The superpoint picture (the first thing to check on a new map).
2. The full referring-segmentation job (``bqnet_model.cli``) with the shipped model
   ``models/bqnet_tiny.pth`` on the synthetic demo room and its fixed sentences: one RES
   sentence with a spatial relation ("the chair next to the desk"), one GRES sentence with several
   targets and two GRES sentences with no target. Each answer is scored against the room's ground
   truth, and the pictures' paths are printed.

Without the shipped model the job stops with a clear message and a non-zero exit status; it never
falls back to random weights.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def superpoint_demo(out_dir: Path, n_points: int | None = None) -> tuple[Path, Path]:
    """Oversegment the bundled synthetic room; write a PNG and a coloured PLY."""
    from bqnet_model.ply import write_ply
    from bqnet_model.superpoints import achievable_segmentation_accuracy, oversegment
    from bqnet_model.synth_extra import load_synth
    from bqnet_model.viz import random_label_colors, render_views

    scene = load_synth().demo_room(n_points=n_points)  # the same room the full job segments
    t0 = time.perf_counter()
    labels = oversegment(scene.xyz, scene.rgb)
    dt = time.perf_counter() - t0
    asa = achievable_segmentation_accuracy(labels, scene.instance)
    colors = random_label_colors(labels)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = render_views(scene.xyz, colors, out_dir / "superpoints.png",
                       title=f"{labels.max() + 1} superpoints on {len(scene.xyz):,} points "
                             f"({dt * 1000:.0f} ms, ASA {asa:.3f})")
    ply = out_dir / "superpoints.ply"
    write_ply(ply, scene.xyz, (colors * 255).astype(np.uint8), superpoint=labels.astype(np.int32))
    print(f"[demo] {len(scene.xyz):,} points -> {labels.max() + 1} superpoints in {dt * 1000:.0f} ms, "
          f"ASA {asa:.3f} against the instance labels")
    print(f"[demo] picture: {png}\n[demo] coloured cloud: {ply}")
    return png, ply


@dataclass
class DemoAnswer:
    """One demo sentence: what was asked, what came back, how it compares with the ground truth."""

    text: str
    task: str
    n_targets_gt: int
    found: bool
    n_objects: int
    iou: float  # point IoU with the union of the ground-truth targets; zero-target rule for none
    png: Path


class DemoError(Exception):
    """The demo cannot run (no shipped model, ...): ``main`` prints it and exits with status 1."""


def demo_queries(scene: object) -> tuple[list[tuple[str, str]], list[list[int]]]:
    """The demo room's verified sentences as (text, task) and their target instance ids.

    A single-target sentence is asked as RES, the others (several / no targets) as GRES.
    """
    from bqnet_model.synth_extra import load_synth

    exprs = load_synth().demo_expressions(scene)  # type: ignore[arg-type]
    queries = [(e.text, "res" if len(e.target_ids) == 1 else "gres") for e in exprs]
    return queries, [list(e.target_ids) for e in exprs]


def referring_demo(out_dir: Path, checkpoint: str | None = None, device: str = "cpu",
                   density: float | None = None) -> list[DemoAnswer]:
    """Segment the demo sentences in the demo room with a trained checkpoint; score and print."""
    from bqnet_model import cli
    from bqnet_model.metrics import point_iou, union_mask
    from bqnet_model.pipeline import Segmenter

    try:
        ckpt = cli.resolve_checkpoint(checkpoint)
    except cli.CliError:
        looked = "\n  ".join(str(p) for p in cli.checkpoint_candidates(checkpoint))
        name = checkpoint or cli.DEFAULT_CHECKPOINT
        raise DemoError(
            f"the model {name} is missing; looked in:\n  {looked}\n"
            "The referring-segmentation demo needs a trained model and will not use random weights.\n"
            "The shipped model is part of the repository: restore it with "
            "`git checkout -- models/bqnet_tiny.pth`,\n"
            "or train one with `bqnet-train config/tiny.yaml` and run "
            "`python -m bqnet_model.demo --checkpoint PATH`."
        ) from None
    out_dir = cli.check_out_dir(out_dir)
    t0 = time.perf_counter()
    try:
        seg = Segmenter.from_checkpoint(ckpt, device=device)
    except (ValueError, TypeError, KeyError, RuntimeError, OSError) as exc:
        raise DemoError(f"cannot load the model {ckpt}: {exc}") from exc
    print(f"[demo] model {ckpt} loaded in {(time.perf_counter() - t0):.1f} s (device {seg.device})")
    cloud, scene = cli.demo_cloud(out_dir, density=density)
    print(f"[demo] demo room: {len(cloud.xyz):,} points, written to {out_dir / 'room.ply'}")
    queries, targets = demo_queries(scene)
    report = cli.segment_and_write(seg, cloud, queries, out_dir, meta={"model": f"checkpoint {ckpt}", "untrained": False})
    answers = []
    for out, (text, task), tgt in zip(report.outputs, queries, targets):
        pred = np.zeros(len(cloud.xyz), bool)
        pred[out.point_indices] = True
        gt = union_mask(scene.instance, tgt)
        iou = point_iou(pred, gt) if gt.any() else float(not pred.any())
        answers.append(DemoAnswer(text, task, len(tgt), out.found, out.n_objects, iou, out.png))
    print("[demo] against the room's ground truth:")
    for a in answers:
        want = {0: "no target", 1: "1 target"}.get(a.n_targets_gt, f"{a.n_targets_gt} targets")
        got = "no target" if not a.found else f"{a.n_objects} object{'s' if a.n_objects != 1 else ''}"
        print(f"[demo]   {a.task.upper():4s} \"{a.text}\": expected {want}, got {got}, IoU {a.iou:.2f}")
    print(f"[demo] pictures (top-down + oblique, target highlighted and boxed): {out_dir}/")
    for a in answers:
        print(f"[demo]   {a.png}")
    return answers


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    ap.add_argument("--checkpoint", default=None,
                    help="trained model (default: the shipped models/bqnet_tiny.pth)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--no-superpoints", action="store_true", help="skip the superpoint picture")
    args = ap.parse_args(argv)
    from bqnet_model.cli import CliError

    out = Path(args.out)
    t0 = time.perf_counter()
    if not args.no_superpoints:
        superpoint_demo(out)
    try:
        referring_demo(out / "segment", args.checkpoint, args.device)
    except (DemoError, CliError) as exc:
        print(f"[demo] error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    print(f"[demo] done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
