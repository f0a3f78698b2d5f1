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

__all__ = ["SuperpointTable", "superpoint_table", "superpoint_geometry", "table_on_device", "pool_rows"]


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
                     params: SuperpointParams, num_threads: int = 0, device: Any = None,
                     xyz_device: torch.Tensor | None = None, rgb_device: torch.Tensor | None = None) -> SuperpointTable:
    """Superpoints of the cleaned cloud (``given``: the caller's labels for the uncleaned rows,
    ``index`` the cleaned -> caller row map) and their point table. ``params`` and ``num_threads``
    (0 = torch's thread count) are ``inference.superpoints`` / ``inference.superpoint_threads``.
    ``device``: the segmenter's; on CUDA the oversegmentation runs on the GPU (its Borůvka form,
    ``bqnet_model.superpoints_cuda``; the CPU when ``_C_cuda`` is not built) and the labels come back
    to the host as the finished table (built on the GPU, ``table_on_device``). ``xyz_device`` / ``rgb_device``:
    the same cleaned points and colours already on ``device`` (saves their copies)."""
    t0 = time.perf_counter()
    if given is None:
        from bqnet_model.superpoints import oversegment_detailed

        on_gpu = device is not None and torch.device(device).type == "cuda"
        src_xyz = xyz_device if on_gpu and xyz_device is not None else xyz
        src_rgb = rgb_device if on_gpu and rgb_device is not None else rgb8
        res = oversegment_detailed(src_xyz, src_rgb, params=params, num_threads=num_threads or None, device=device)
        sp, spacing = res.labels, res.spacing
        if isinstance(sp, torch.Tensor):  # the GPU port's labels: the table is built where they are
            xt = src_xyz if isinstance(src_xyz, torch.Tensor) else torch.from_numpy(np.asarray(xyz))
            built = table_on_device(sp, xt.to(sp.device))
            if built is not None:
                labels, n_sp, order, start, geometry = built
                return SuperpointTable(labels, n_sp, order, start, (time.perf_counter() - t0) * 1e3, geometry,
                                       spacing)
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


def table_on_device(labels: torch.Tensor, xyz: torch.Tensor) -> tuple[
        np.ndarray, int, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]] | None:
    """``superpoint_table``'s table computed where dense labels already are (the GPU port's), then
    copied to the host once: (labels, S, order, start, geometry), equal to the numpy path's (order,
    start, minima and maxima exactly; sums to float64 rounding). None when the labels are not dense
    0..S-1 (the caller then takes the numpy path, which renumbers them).

    Why on the device: on a million points the numpy table (sort, bincount, three gathers and
    reductions) costs several times the GPU oversegmentation itself. Deterministic: a stable sort,
    order-free minima and maxima (scatter min / max), and sums as differences of one float64 prefix
    sum per coordinate in point order.
    """
    n = int(labels.shape[0])
    if n == 0:
        return None
    lo, hi = (int(v) for v in torch.stack(torch.aminmax(labels)).tolist())
    if lo < 0:
        return None
    n_sp = hi + 1
    counts = torch.bincount(labels, minlength=n_sp)
    if not bool((counts > 0).all()):
        return None
    order = torch.sort(labels, stable=True).indices
    start = torch.zeros(n_sp + 1, dtype=torch.int64, device=labels.device)
    start[1:] = torch.cumsum(counts, 0)
    # Coordinates as three contiguous rows (3, M): CUDA scans the innermost dimension in parallel, while a
    # cumsum down the M rows of an (M, 3) tensor runs one thread per column over all M points.
    cols = xyz.float().t().contiguous()
    bounds = labels.unsqueeze(0).expand(3, n)
    mins = torch.full((3, n_sp), float("inf"), device=labels.device).scatter_reduce_(1, bounds, cols, "amin")
    maxs = torch.full((3, n_sp), float("-inf"), device=labels.device).scatter_reduce_(1, bounds, cols, "amax")
    prefix = torch.zeros(3, n + 1, dtype=torch.float64, device=labels.device)
    prefix[:, 1:] = torch.cumsum(cols[:, order].double(), 1)
    sums = (prefix[:, start[1:]] - prefix[:, start[:-1]]).t()
    mins, maxs = mins.t(), maxs.t()
    host = [t.cpu().numpy() for t in (labels, order, start, sums, mins.double(), maxs.double())]
    return host[0].astype(np.int64, copy=False), n_sp, host[1], host[2], (host[3], host[4], host[5])


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
