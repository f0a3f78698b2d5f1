#!/usr/bin/env python3
"""Plot the loss terms and the lr of one or more consecutive training stages (``metrics.jsonl``
files written by ``tools/train.py``), stage after stage on one step axis.

    python tools/plot_training.py docs/training/stage{1,2,3}.metrics.jsonl --out docs/img/training_curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TERMS = ("total", "mask_dice", "mask_bce", "indicator", "sem", "score", "sample")


def read_stage(path: Path) -> tuple[dict, list[dict]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    start = next((r for r in rows if r.get("event") == "start"), {})
    return start, [r for r in rows if r.get("event") == "train"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("metrics", nargs="+", type=Path, help="metrics.jsonl of each stage, in order")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--labels", nargs="*", default=None, help="one label per stage")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, axl) = plt.subplots(2, 1, figsize=(10, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    offset = 0
    for i, path in enumerate(args.metrics):
        start, rows = read_stage(path)
        if not rows:
            raise SystemExit(f"{path}: no training rows")
        steps = [offset + r["step"] for r in rows]
        label = args.labels[i] if args.labels and i < len(args.labels) else path.stem
        world = start.get("world_size", 1)
        for j, term in enumerate(TERMS):
            if term in rows[0]:
                ax.plot(steps, [r[term] for r in rows], color=f"C{j}", lw=1.2, label=term if i == 0 else None)
        axl.plot(steps, [r["lr"] for r in rows], color="k", lw=1.2)
        ax.axvline(offset, color="grey", ls=":", lw=1)
        ax.text(offset, 0.98, f" {label} ({world} GPU{'s' if world > 1 else ''})", fontsize=8, va="top",
                transform=ax.get_xaxis_transform())
        offset = steps[-1]
    ax.set_ylabel("loss (per term, weighted sum = total)")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, ncol=4)
    axl.set_ylabel("lr")
    axl.set_xlabel("optimizer step (stages one after the other)")
    axl.grid(True, alpha=0.3)
    fig.suptitle("Training of the shipped model (synthetic rooms)")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
