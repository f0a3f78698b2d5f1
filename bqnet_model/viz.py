"""Headless pictures of scenes and results (matplotlib, Agg backend).

People would rather look than read: every job that finds something writes a PNG with a
top-down and an oblique view, the target highlighted and boxed, the sentence as title.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

HIGHLIGHT_COLORS = np.array([
    [1.00, 0.10, 0.60], [0.10, 0.90, 0.20], [1.00, 0.60, 0.00],
    [0.00, 0.70, 1.00], [0.70, 0.20, 1.00], [1.00, 1.00, 0.10],
])


@dataclass
class Highlight:
    """One highlighted object: point indices into the scene, optional box and label."""

    indices: np.ndarray
    box_min: np.ndarray | None = None
    box_max: np.ndarray | None = None
    label: str = ""


def _subsample(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))


def random_label_colors(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """A random RGB colour (0..1) per label, so neighbouring superpoints differ."""
    labels = np.asarray(labels)
    n = int(labels.max()) + 1 if labels.size else 0
    palette = np.random.default_rng(seed).uniform(0.15, 1.0, (max(n, 1), 3))
    return palette[np.clip(labels, 0, None)]


def _box_edges(lo: np.ndarray, hi: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    c = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    edges = []
    for i in range(8):
        for j in range(i + 1, 8):
            if np.count_nonzero(c[i] != c[j]) == 1:
                edges.append((c[i], c[j]))
    return edges


def finite_points(
    xyz: np.ndarray, colors: np.ndarray, highlights: Sequence[Highlight] = ()
) -> tuple[np.ndarray, np.ndarray, list[Highlight]]:
    """Drop NaN/Inf points (one would break the oblique view's scaling), remapping highlight indices."""
    xyz = np.asarray(xyz)
    finite = np.isfinite(xyz).all(axis=1)
    if finite.all():
        return xyz, np.asarray(colors), list(highlights)
    if not finite.any():
        raise ValueError("the cloud has no finite points to draw")
    new_index = np.cumsum(finite) - 1  # old row -> new row (valid where finite)
    kept = []
    for h in highlights:
        idx = np.asarray(h.indices, np.int64)
        idx = idx[finite[idx]]
        kept.append(Highlight(new_index[idx], h.box_min, h.box_max, h.label))
    return xyz[finite], np.asarray(colors)[finite], kept


def render_views(
    xyz: np.ndarray,
    colors: np.ndarray,
    out_png: str | Path,
    *,
    title: str = "",
    highlights: Sequence[Highlight] = (),
    max_points: int = 80_000,
    dim_background: bool = True,
    point_size: float = 1.2,
) -> Path:
    """Write a PNG with a top-down and an oblique 3D view.

    ``colors`` are per-point RGB in 0..1 (or uint8 0..255). Highlighted objects are drawn
    in bright colours over a dimmed room, with their boxes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xyz, colors, highlights = finite_points(xyz, colors, highlights)
    xyz = np.asarray(xyz, np.float64)
    if colors.dtype == np.uint8 or colors.max(initial=0) > 1.0:
        colors = colors.astype(np.float64) / 255.0
    colors = colors.copy()
    hl_mask = np.zeros(len(xyz), bool)
    for k, h in enumerate(highlights):
        idx = np.asarray(h.indices, np.int64)
        colors[idx] = HIGHLIGHT_COLORS[k % len(HIGHLIGHT_COLORS)]
        hl_mask[idx] = True
    if dim_background and highlights:
        colors[~hl_mask] = 0.55 * colors[~hl_mask] + 0.45 * 0.85
    sel = _subsample(len(xyz), max_points)
    sel = np.union1d(sel, np.flatnonzero(hl_mask)[: max_points // 4])
    # draw highlighted points last so they sit on top
    sel = np.concatenate([sel[~hl_mask[sel]], sel[hl_mask[sel]]])
    p, c = xyz[sel], colors[sel]
    sizes = np.where(hl_mask[sel], point_size * 4, point_size)

    fig = plt.figure(figsize=(13, 6), dpi=110)
    ax1 = fig.add_subplot(1, 2, 1)
    order = np.argsort(p[:, 2], kind="stable")  # higher points drawn later (seen from above)
    order = np.concatenate([order[~hl_mask[sel][order]], order[hl_mask[sel][order]]])
    ax1.scatter(p[order, 0], p[order, 1], c=c[order], s=sizes[order], linewidths=0)
    for k, h in enumerate(highlights):
        if h.box_min is not None and h.box_max is not None:
            lo, hi = h.box_min, h.box_max
            col = HIGHLIGHT_COLORS[k % len(HIGHLIGHT_COLORS)]
            ax1.plot([lo[0], hi[0], hi[0], lo[0], lo[0]], [lo[1], lo[1], hi[1], hi[1], lo[1]], color=col, lw=1.5)
            if h.label:
                ax1.text(lo[0], hi[1], h.label, color="black", fontsize=8,
                         bbox=dict(facecolor=col, alpha=0.7, lw=0, pad=1))
    ax1.set_aspect("equal")
    ax1.set_title("top-down")
    ax1.set_xlabel("x [m]")
    ax1.set_ylabel("y [m]")

    ax2 = fig.add_subplot(1, 2, 2, projection="3d")
    # leave out the ceiling-facing walls nearest the viewer? keep all; an oblique view from the -x,-y corner
    ax2.scatter(p[:, 0], p[:, 1], p[:, 2], c=c, s=sizes, linewidths=0, depthshade=False)
    for k, h in enumerate(highlights):
        if h.box_min is not None and h.box_max is not None:
            col = HIGHLIGHT_COLORS[k % len(HIGHLIGHT_COLORS)]
            for a, b in _box_edges(np.asarray(h.box_min), np.asarray(h.box_max)):
                ax2.plot(*zip(a, b), color=col, lw=1.5)
    ext = xyz.max(0) - xyz.min(0)
    ax2.set_box_aspect(tuple(np.maximum(ext, 1e-3)))
    ax2.view_init(elev=35, azim=-60)
    ax2.set_title("oblique")
    ax2.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png
