#!/usr/bin/env python3
"""Plot ``bench/pipeline.py``'s JSON: latency vs map size, one line per lever variant.

Left: prepare (map ingest) total per ingest variant; right: one new sentence per call (query
total) per decoder variant, plus recomputing the whole model per sentence. Log-x (points),
log-y (ms); grey crosses mark the speed targets of the issue list for that configuration (``TARGETS``:
paper-size ``res.yaml`` and the shipped ``tiny.yaml``), a dotted line the older general ones for any other
config (prepare 150 ms, sentence 15 ms). Several JSON files (e.g. the paper-size and the tiny config) become
one row of panels each.

    python bench/plot_pipeline.py out/bench_res.json out/bench_tiny.json --out out/bench.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TARGET_PREPARE_MS = 150.0
TARGET_SENTENCE_MS = 15.0
# config file -> (prepare targets, sentence targets) as (points, ms) pairs (the issue list's, on an H200)
TARGETS: dict[str, tuple[list[tuple[int, float]], list[tuple[int, float]]]] = {
    "res.yaml": ([(300_000, 50.0), (1_000_000, 100.0), (3_000_000, 250.0)], [(300_000, 8.0)]),
    "tiny.yaml": ([(200_000, 60.0)], [(200_000, 10.0)]),
}


def _series(results: list[dict[str, Any]], section: str, metric: str) -> dict[str, tuple[list[int], list[float]]]:
    """variant -> (points, values) over the sizes where the variant has the metric."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for r in results:
        for name, v in r.get(section, {}).items():
            val = v.get("stages_ms", {}).get("total") if metric == "total" else v.get(metric)
            if isinstance(val, (int, float)):
                xs, ys = out.setdefault(name, ([], []))
                xs.append(int(r["points"]))
                ys.append(float(val))
    return out


def _panel(ax: Any, series: dict[str, tuple[list[int], list[float]]], target: float | list[tuple[int, float]], title: str,
           extra: dict[str, tuple[list[int], list[float]]] | None = None) -> None:
    """One line per variant (dashed: the baselines); ``extra``: thin dotted companions in the same
    colours (the per-sentence cost at N sentences per call)."""
    colours = {}
    for i, (name, (xs, ys)) in enumerate(series.items()):
        style = "--" if name.startswith(("baseline", "eager fp32", "recompute")) else "-"
        colours[name] = f"C{i}"
        ax.plot(xs, ys, style, marker="o", color=f"C{i}", label=name)
        ax.annotate(f"{ys[-1]:.0f}" if ys[-1] >= 10 else f"{ys[-1]:.1f}", (xs[-1], ys[-1]),
                    textcoords="offset points", xytext=(4, 0), fontsize=7, color=f"C{i}", va="center")
    for name, (xs, ys) in (extra or {}).items():
        base = name.split(" (")[0]
        ax.plot(xs, ys, ":", marker=".", lw=1, color=colours.get(base, "black"), label=name)
    if isinstance(target, list):
        ax.plot([x for x, _ in target], [y for _, y in target], "x", color="grey", ms=9, mew=2,
                label="target (" + ", ".join(f"{y:g} ms at {x / 1e6:g}M" for x, y in target) + ")")
    else:
        ax.axhline(target, color="grey", lw=1, ls=":", label=f"target {target:g} ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("points in the map")
    ax.set_ylabel("ms (median)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    n = len(ax.get_legend_handles_labels()[1])
    ax.legend(fontsize=6.5, loc="best", ncol=2 if n > 7 else 1, framealpha=0.85)


def plot(files: list[Path], out: Path) -> Path:
    runs = [json.loads(p.read_text()) for p in files]
    fig, axes = plt.subplots(len(runs), 2, figsize=(12, 4.6 * len(runs)), squeeze=False)
    for row, run in zip(axes, runs):
        res = run.get("results", [])
        dev = run.get("machine", {}).get("gpu") or run.get("machine", {}).get("cpu") or run.get("device", "?")
        head = f"{run.get('config', '?')} on {dev}, torch {run.get('versions', {}).get('torch', '?')}, {run.get('date', '')[:10]}"
        prep_t, sent_t = TARGETS.get(str(run.get("config", "")), (TARGET_PREPARE_MS, TARGET_SENTENCE_MS))
        _panel(row[0], _series(res, "prepare", "total"), prep_t, f"prepare (map ingest)\n{head}")
        q = _series(res, "query", "total")
        rec: tuple[list[int], list[float]] = ([], [])
        for r in res:
            ms = r.get("recompute", {}).get("wall_ms")
            if isinstance(ms, (int, float)):
                rec[0].append(int(r["points"]))
                rec[1].append(float(ms))
        if rec[0]:
            q["recompute whole model"] = rec
        batched: dict[str, tuple[list[int], list[float]]] = {}
        for r in res:
            for name, v in r.get("query", {}).items():
                if isinstance(v.get("batch_wall_ms"), (int, float)):
                    xs, ys = batched.setdefault(f"{name} (per sentence, {v['batch']} per call)", ([], []))
                    xs.append(int(r["points"]))
                    ys.append(v["batch_wall_ms"] / v["batch"])
        _panel(row[1], q, sent_t, f"one new sentence per query call (dotted: batched)\n{head}", batched)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", nargs="+", type=Path, help="bench/pipeline.py --out files")
    ap.add_argument("--out", type=Path, default=None, help="PNG path (default: next to the first JSON)")
    args = ap.parse_args(argv)
    out = args.out or args.json[0].with_suffix(".png")
    print(f"wrote {plot(args.json, out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
