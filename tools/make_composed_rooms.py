#!/usr/bin/env python3
"""Synthetic rooms furnished with real objects cut out of the training scans (``bqnet_synth.composed_rooms``,
``bqnet_synth.composed_training``).

    python tools/make_composed_rooms.py --real-dir ../shared/real --out /path/outside/the/repo --rooms N \
        [--seed S] [--first-index K] [--yaw aligned|random] [--save-bank FILE] [--merge-into SYNTH_DIR]
    python tools/make_composed_rooms.py --bank BANK.npz --out DIR --rooms N ...

The object bank is built from the real-data folder's training scans (never the held-out
``real_training.DEFAULT_LEAVE_OUT``), or read from a file ``--save-bank`` wrote (a few MB: ship it
instead of the rooms and compose them where the training runs). Writes ``composed_<i>.npz`` per
room and ``train_scanrefer.json`` / ``train_multi3drefer.json``; ``--merge-into`` then appends them
to a data folder (``real_training.merge_real_into``). ScanNet's terms forbid redistribution: write
the rooms and the bank outside the repository.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bqnet_synth.composed_rooms import ComposeConfig, ObjectBank, bank_from_real_dir  # noqa: E402
from bqnet_synth.composed_training import format_summary, write_composed_rooms  # noqa: E402
from bqnet_synth.real_training import DEFAULT_LEAVE_OUT, inside_repository, merge_for_cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--real-dir", help="real-data folder (scannet_votenet50k/, scannet_meta/, sentences/)")
    src.add_argument("--bank", type=Path, help="an object bank written by --save-bank")
    ap.add_argument("--out", required=True, type=Path, help="output folder (outside the repository)")
    ap.add_argument("--rooms", required=True, type=int, help="number of rooms")
    ap.add_argument("--seed", type=int, default=0, help="seed of the rooms, placements and sentences")
    ap.add_argument("--first-index", type=int, default=0, help="index of the first room (to build a set in parts)")
    ap.add_argument("--leave-out", nargs="*", default=list(DEFAULT_LEAVE_OUT),
                    help="held-out scans, never in the bank (default: %(default)s)")
    ap.add_argument("--yaw", choices=("aligned", "random"), default="aligned",
                    help="quarter turns keeping the long side (default) or any angle")
    ap.add_argument("--max-overlap", type=float, default=0.2, help="largest shared share of the smaller footprint")
    ap.add_argument("--save-bank", type=Path, default=None, help="also write the object bank here (.npz)")
    ap.add_argument("--merge-into", type=Path, default=None, help="then append the rooms to this data folder")
    args = ap.parse_args(argv)
    if args.rooms < 1 or args.first_index < 0:
        ap.error("--rooms must be >= 1 and --first-index >= 0")
    if any(inside_repository(p) for p in (args.out, args.save_bank, args.merge_into) if p is not None):
        ap.error("ScanNet data must not enter the repository: write --out / --save-bank / --merge-into outside it")
    try:
        cfg = ComposeConfig(max_overlap=args.max_overlap, yaw=args.yaw)
        bank = ObjectBank.load(args.bank) if args.bank else bank_from_real_dir(args.real_dir, args.leave_out)
        held = sorted(set(bank.scans.tolist()) & set(args.leave_out))
        if held:
            raise ValueError(f"the bank holds objects of held-out scans {held}: build it again from --real-dir")
        print(f"object bank: {len(bank)} objects from {len(set(bank.scans.tolist()))} scans: "
              + ", ".join(f"{c} {n}" for c, n in sorted(bank.class_counts().items(), key=lambda kv: -kv[1])))
        if args.save_bank is not None:
            bank.save(args.save_bank)
            print(f"object bank written to {args.save_bank}")
        s = write_composed_rooms(bank, args.out, args.rooms, args.seed, first_index=args.first_index, config=cfg,
                                 progress=True)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(s))
    return 0 if args.merge_into is None else merge_for_cli(args.out, args.merge_into)


if __name__ == "__main__":
    raise SystemExit(main())
