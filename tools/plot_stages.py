#!/usr/bin/env python3
"""Plot the held-out scores of the shipped training stages against the steps trained, with the
chance baselines (a random object of the named class), from ``docs/training/stages.json``.

    python tools/plot_stages.py docs/training/stages.json --out docs/img/training_stages.png

Why a picture: the stage tables of the training logs hold the same figures, but the question they
answer (is it still climbing, and how far is it from chance and from the targets) is read at a glance.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SERIES = (  # key in the stage records, label, colour
    ("synthetic RES Acc@0.5", "synthetic rooms, RES Acc@0.5", "tab:blue"),
    ("unseen wordings Acc@0.5", "same rooms, unseen wordings", "tab:cyan"),
    ("GRES mIoU", "synthetic rooms, GRES mIoU", "tab:green"),
    ("real Acc@0.25", "real scans, RES Acc@0.25", "tab:orange"),
    ("real Acc@0.5", "real scans, RES Acc@0.5", "tab:red"),
)
CHANCE = (("synthetic RES Acc@0.5", "chance, synthetic RES", "tab:blue"),
          ("real RES (held out)", "chance, real RES", "tab:red"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stages", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    data = json.loads(args.stages.read_text())
    stages = data["stages"]
    if not stages:
        raise SystemExit(f"{args.stages} holds no stages")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    steps = [s["steps"] for s in stages]
    for key, label, colour in SERIES:
        pts = [(s["steps"], s[key]) for s in stages if s.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), "o-", color=colour, label=label)
    for key, label, colour in CHANCE:
        if key in data.get("chance", {}):
            ax.axhline(data["chance"][key], color=colour, linestyle="--", linewidth=1, label=label)
    for s in stages:
        top = max(s[k] for k, _, _ in SERIES if s.get(k) is not None)
        ax.annotate(s["name"], (s["steps"], top + 3), ha="center", fontsize=8, color="0.3")
    ax.set_xlabel("optimizer steps (8 rooms each up to s7a, 32 from s8 on)")
    ax.set_ylabel("held-out score (%)")
    ax.set_xlim(min(steps) - 200, max(steps) + 200)
    ax.set_ylim(0, 100)
    ax.set_title("Shipped training stages, held out (chance dashed)")
    ax.legend(fontsize=8, loc="upper center", ncol=3)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
