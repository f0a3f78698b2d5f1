#!/usr/bin/env python3
"""Real ScanNet scans as training data (``bqnet_synth.real_training``).

    python tools/make_real_training.py --real-dir ../shared/real --out /path/outside/the/repo \
        [--leave-out scene0002_00 scene0002_01 scene0005_00] [--repeat 1] [--seed 0] \
        [--no-generated] [--merge-into SYNTH_DIR]

Writes one ``<scan>.npz`` per scan of the real-data folder, ``train_scanrefer.json`` /
``train_multi3drefer.json`` (real sentences plus sentences of the synthetic grammar checked on the
scan's boxes) and, for the left-out scans, ``val_*.json`` with their real sentences only.
``--merge-into`` then appends the result to a synthetic data folder (``val_real_*.json`` for the
held-out sentences). ScanNet's terms forbid redistribution: write outside the repository.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bqnet_synth.real_training import (  # noqa: E402
    DEFAULT_LEAVE_OUT,
    build_real_training,
    format_summary,
    inside_repository,
    merge_for_cli,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--real-dir", required=True,
                    help="real-data folder (scannet_votenet50k/, scannet_meta/, sentences/)")
    ap.add_argument("--out", required=True, type=Path, help="output training folder (outside the repository)")
    ap.add_argument("--leave-out", nargs="*", default=list(DEFAULT_LEAVE_OUT),
                    help="held-out scans: val_*.json with their real sentences only (default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=1, help="write the real scans' training entries K times")
    ap.add_argument("--seed", type=int, default=0, help="seed of the generated sentences")
    ap.add_argument("--no-generated", action="store_true", help="real sentences only (no grammar sentences)")
    ap.add_argument("--merge-into", type=Path, default=None,
                    help="then append the result to this synthetic data folder")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    targets = [p for p in (args.out, args.merge_into) if p is not None]
    if any(inside_repository(p) for p in targets):
        ap.error("ScanNet data must not enter the repository: write --out / --merge-into outside it")
    try:
        s = build_real_training(args.real_dir, args.out, leave_out=args.leave_out, repeat=args.repeat,
                                seed=args.seed, generate=not args.no_generated, progress=True)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(s))
    return 0 if args.merge_into is None else merge_for_cli(args.out, args.merge_into)


if __name__ == "__main__":
    raise SystemExit(main())
