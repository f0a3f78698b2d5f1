"""`make demo`: the main job on the bundled room.

With the shipped model present it runs the full referring segmentation job (see
``bqnet_model.cli``); the superpoint picture is always written as well, since it is the
first thing to check on a new map.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def superpoint_demo(out_dir: Path, n_points: int = 120_000) -> tuple[Path, Path]:
    """Oversegment the bundled synthetic room; write a PNG and a coloured PLY."""
    from bqnet_model.data.synthetic import minimal_room
    from bqnet_model.ply import write_ply
    from bqnet_model.superpoints import achievable_segmentation_accuracy, oversegment
    from bqnet_model.viz import random_label_colors, render_views

    scene = minimal_room(n_points=n_points, seed=0)
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="out/demo", help="output folder")
    args = ap.parse_args(argv)
    superpoint_demo(Path(args.out))


if __name__ == "__main__":
    main()
