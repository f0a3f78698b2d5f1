#!/usr/bin/env python3
"""Plot the loss terms and the lr of one or more consecutive training stages (``metrics.jsonl``
files written by ``tools/train.py``), stage after stage on one step axis.

    python tools/plot_training.py docs/training/stage{1,2,3,4,5,6,7,8,9,10,11,12}.metrics.jsonl \
        --rooms-per-step 32 32 8 32 32 32 32 32 64 64 32 64 --evals docs/training/evals.json --out docs/img/training_curves.png

``--rooms-per-step`` (rooms per optimizer step of each stage, all GPUs together) puts the stages on
an axis of rooms seen, which compares stages of different batch sizes; ``--evals`` adds the
held-out scores (``eval_<stage>_res`` / ``eval_<stage>_gres`` entries) at the end of each stage.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TERMS = ("total", "mask_dice", "mask_bce", "indicator", "sem", "score", "sample")


def read_stage(path: Path) -> tuple[dict, list[dict], dict | None]:
    """The ``start`` record, the ``train`` rows and the ``stop`` record (None if the run has none)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    start = next((r for r in rows if r.get("event") == "start"), {})
    stop = next((r for r in rows if r.get("event") == "stop"), None)
    return start, [r for r in rows if r.get("event") == "train"], stop


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("metrics", nargs="+", type=Path, help="metrics.jsonl of each stage, in order")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--labels", nargs="*", default=None, help="one label per stage")
    ap.add_argument("--rooms-per-step", nargs="*", type=int, default=None,
                    help="rooms per optimizer step of each stage (all GPUs): x axis = rooms seen")
    ap.add_argument("--evals", type=Path, default=None, help="evals.json with eval_<stage>_res/gres summaries")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = json.loads(args.evals.read_text()) if args.evals else None
    if args.rooms_per_step is not None and len(args.rooms_per_step) != len(args.metrics):
        raise SystemExit("--rooms-per-step needs one value per metrics file")
    n_rows = 3 if evals else 2
    fig, axes = plt.subplots(n_rows, 1, figsize=(10, 9 if evals else 7), sharex=True,
                             gridspec_kw={"height_ratios": [3, 1, 1.4][:n_rows]})
    ax, axl = axes[0], axes[1]
    offset = 0.0
    ends: list[tuple[float, str]] = []
    for i, path in enumerate(args.metrics):
        start, rows, stop = read_stage(path)
        if not rows:
            raise SystemExit(f"{path}: no training rows")
        per = args.rooms_per_step[i] if args.rooms_per_step else 1
        steps = [offset + r["step"] * per for r in rows]
        label = args.labels[i] if args.labels and i < len(args.labels) else path.name.split(".")[0]
        world = start.get("world_size", 1)
        for j, term in enumerate(TERMS):
            if term in rows[0]:
                ax.plot(steps, [r[term] for r in rows], color=f"C{j}", lw=1.2, label=term if i == 0 else None)
        axl.plot(steps, [r["lr"] for r in rows], color="k", lw=1.2)
        ax.axvline(offset, color="grey", ls=":", lw=1)
        ax.text(offset, 0.02, f" {label}, {world} GPU{'s' if world > 1 else ''}", fontsize=7, va="bottom",
                ha="left", rotation=90, transform=ax.get_xaxis_transform())  # upright: narrow stages do not overlap
        offset = offset + (stop["step"] if stop else rows[-1]["step"]) * per
        ends.append((offset, path.name.split(".")[0]))
    ax.set_ylabel("loss (per term, weighted sum = total)")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, ncol=4)
    axl.set_ylabel("lr")
    xlabel = "rooms seen" if args.rooms_per_step else "optimizer step"
    axes[-1].set_xlabel(f"{xlabel} (stages one after the other)")
    axl.grid(True, alpha=0.3)
    if evals:
        axe = axes[2]
        for key, name, colour in (("res", "RES Acc@0.5", "C0"), ("gres", "GRES mIoU", "C1")):
            metric = "Acc@0.5" if key == "res" else "mIoU"
            pts = [(x, 100 * _summary(evals[f"eval_{stem}_{key}"])[metric]) for x, stem in ends
                   if f"eval_{stem}_{key}" in evals]
            if pts:
                axe.plot(*zip(*pts), "o-", color=colour, label=f"held-out {name}")
                for x, y in pts:
                    axe.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=7)
        axe.set_ylabel("held-out %")
        axe.grid(True, alpha=0.3)
        axe.legend(fontsize=8, loc="lower right")
    fig.suptitle("Training of the shipped model (synthetic rooms)")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


def _summary(entry: dict) -> dict:
    """An evals.json entry: the summary itself, or the evaluation record that holds it."""
    return entry.get("summary", entry)


if __name__ == "__main__":
    raise SystemExit(main())
