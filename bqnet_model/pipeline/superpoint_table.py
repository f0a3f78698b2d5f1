"""The superpoints of a cleaned map and the tables answers are read from.

``superpoint_table`` runs the oversegmentation (or takes the caller's labels), makes them dense and
builds the superpoint -> point CSR table and per-superpoint geometry that turn a superpoint mask
into point indices, a centroid and a box in O(its superpoints).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bqnet_model.model.inputs import dense_labels
from bqnet_model.superpoint_params import SuperpointParams

__all__ = ["SuperpointTable", "superpoint_table", "superpoint_geometry", "pool_rows"]


@dataclass
class SuperpointTable:
    """Dense labels, count, the superpoint -> point table and its geometry."""

    labels: np.ndarray  # int64 (M,), dense 0..S-1
    n_superpoints: int
    order: np.ndarray  # int64 (M,): points sorted by superpoint (stable)
    start: np.ndarray  # int64 (S+1,)
    ms: float
    geometry: tuple[np.ndarray, np.ndarray, np.ndarray]  # superpoint_geometry
    spacing: float = 0.0  # metres: the scale the online oversegmentation used (0: labels were given)


def superpoint_table(xyz: np.ndarray, rgb8: np.ndarray, given: np.ndarray | None, index: np.ndarray,
                     params: SuperpointParams, num_threads: int = 0, device: Any = None) -> SuperpointTable:
    """Superpoints of the cleaned cloud (``given``: the caller's labels for the uncleaned rows,
    ``index`` the cleaned -> caller row map) and their point table. ``params`` and ``num_threads``
    (0 = torch's thread count) are ``inference.superpoints`` / ``inference.superpoint_threads``.
    ``device``: the segmenter's; on CUDA the oversegmentation runs on the GPU (its Borůvka form,
    ``bqnet_model.superpoints_cuda``; the CPU when ``_C_cuda`` is not built) and the labels come back
    to the host for the table."""
    t0 = time.perf_counter()
    if given is None:
        from bqnet_model.superpoints import oversegment_detailed

        res = oversegment_detailed(xyz, rgb8, params=params, num_threads=num_threads or None, device=device)
        sp, spacing = res.labels, res.spacing
        if isinstance(sp, torch.Tensor):
            sp = sp.cpu().numpy()
    else:
        sp, spacing = np.asarray(given)[index], 0.0
    labels, n_sp = dense_labels(sp)
    # Stable sort by label; as uint16 numpy sorts by radix (O(M)) instead of a merge sort.
    keys = labels.astype(np.uint16) if n_sp <= 1 << 16 else labels
    order = np.argsort(keys, kind="stable").astype(np.int64, copy=False)
    counts = np.bincount(labels, minlength=n_sp)
    start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    geometry = superpoint_geometry(xyz, order, start)
    return SuperpointTable(labels, n_sp, order, start, (time.perf_counter() - t0) * 1e3, geometry, spacing)


def superpoint_geometry(xyz: np.ndarray, order: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-superpoint coordinate sums, minima and maxima (float64, (S, 3) each) from the CSR
    table (``order``, ``start``); superpoints without points get sum 0 and an empty box (+inf/-inf)."""
    n_sp = int(start.shape[0] - 1)
    sums = np.zeros((n_sp, 3), np.float64)
    mins = np.full((n_sp, 3), np.inf)
    maxs = np.full((n_sp, 3), -np.inf)
    if n_sp == 0 or order.size == 0:
        return sums, mins, maxs
    nonempty = start[1:] > start[:-1]
    heads = start[:-1][nonempty]  # reduceat over the non-empty runs only (an empty run would repeat a row)
    for k in range(3):  # per column: 1-D gathers and reductions are several times faster than (M, 3) ones
        col = np.ascontiguousarray(xyz[:, k])[order]
        sums[nonempty, k] = np.add.reduceat(col.astype(np.float64), heads)
        mins[nonempty, k] = np.minimum.reduceat(col, heads)
        maxs[nonempty, k] = np.maximum.reduceat(col, heads)
    return sums, mins, maxs


def pool_rows(values: np.ndarray, table: SuperpointTable) -> np.ndarray:
    """Mean of per-point rows (M, C) over each superpoint -> (S, C) float32 (zeros where empty)."""
    S = table.n_superpoints
    out = np.zeros((S, values.shape[1]), np.float64)
    np.add.at(out, table.labels, values.astype(np.float64, copy=False))
    counts = np.bincount(table.labels, minlength=S).astype(np.float64)
    return (out / np.maximum(counts, 1.0)[:, None]).astype(np.float32)
