"""The superpoints of an updated map: the old ones that a change cannot reach, plus a fresh
oversegmentation of every other point (``Segmenter.update``, ``incremental.py``).

Everything here runs as torch ops on the tensors' device, so on a GPU segmenter no per-point array
crosses to the host: ``merge_superpoints`` labels the new cleaned points, ``number_by_first_point_torch``
numbers them as the oversegmentation does, and ``updated_table`` builds the superpoint -> point
table as the segmenter's full prepare builds it on that device (``table_on_device`` on CUDA, the
numpy table on the CPU, where the C++ oversegmentation's labels are host arrays too), so an update
and a prepare share one table construction per device. ``number_by_first_point`` (numpy) is the
reference the tests compare the torch version with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from bqnet_model.superpoint_params import SuperpointParams

from .superpoint_table import SuperpointTable, superpoint_table, table_on_device

__all__ = ["number_by_first_point", "number_by_first_point_torch", "MergedSuperpoints", "merge_superpoints",
           "updated_table"]


def number_by_first_point(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels renumbered 0..S-1 in order of each one's first point (the oversegmentation's rule)."""
    order = np.argsort(labels, kind="stable")
    sorted_l = labels[order]
    head = np.flatnonzero(np.r_[True, sorted_l[1:] != sorted_l[:-1]])
    first = order[head]  # stable sort: the first row of each label's run is its first point
    rank = np.empty(int(labels.max()) + 1, np.int64)
    rank[sorted_l[head[np.argsort(first, kind="stable")]]] = np.arange(head.size)
    return rank[labels], int(head.size)


def _number_by_first_point(labels: Tensor, n_labels: int) -> tuple[Tensor, Tensor]:
    """``number_by_first_point_torch`` with the count left on the device (no synchronisation)."""
    m = int(labels.shape[0])
    dev = labels.device
    pos = torch.arange(m, device=dev)
    # First point of each label (m for a label without points): a min is order-free, so the scatter
    # is deterministic on any device.
    first = torch.full((n_labels,), m, dtype=torch.int64, device=dev).scatter_reduce_(0, labels, pos, "amin")
    # A label's new number = how many labels start at or before its first point, minus one: a
    # prefix sum over the points that start a label, no sort. Slot m collects the absent labels.
    head = torch.zeros(m + 1, dtype=torch.int64, device=dev)
    head[first] = 1  # every write is a 1: duplicates (the absent labels' slot m) are harmless
    starts = torch.cumsum(head[:m], 0)
    return starts[first[labels]] - 1, starts[-1]


def number_by_first_point_torch(labels: Tensor, n_labels: int | None = None) -> tuple[Tensor, int]:
    """``number_by_first_point`` on ``labels``' device (int64 (M,), >= 0): the same numbers, in
    O(M + n_labels) without a sort. ``n_labels``: a bound on max + 1 (saves reading the max back
    from the device); the count S is read back once."""
    if labels.ndim != 1:
        raise ValueError(f"labels must have shape (M,), got {tuple(labels.shape)}")
    if labels.shape[0] == 0:
        return labels.to(torch.int64).clone(), 0
    labels = labels.to(torch.int64)
    bound = int(labels.max()) + 1 if n_labels is None else int(n_labels)
    out, count = _number_by_first_point(labels, bound)
    return out, int(count)


@dataclass
class MergedSuperpoints:
    """``merge_superpoints``' result: dense labels of the new cleaned points on their device."""

    labels: Tensor  # int64 (M_new,), 0..S-1 numbered by first point
    n_superpoints: int
    kept_superpoints: int  # old superpoints taken over unchanged
    resegmented_points: int  # points the region's oversegmentation labelled


def merge_superpoints(old_labels: Tensor, n_old: int, old_row: Tensor, old_near: Tensor, xyz: Tensor, rgb: Tensor,
                      params: SuperpointParams, spacing: float, num_threads: int | None,
                      device: torch.device) -> MergedSuperpoints:
    """Labels of the new cleaned points ``xyz`` / ``rgb`` (device tensors): every old superpoint
    whose points are all still there and none of them ``old_near`` keeps its points, every other
    point is oversegmented afresh (``superpoints.oversegment_detailed`` on ``device``, at the old
    map's ``spacing`` when ``params.spacing`` is 0: the whole map's scale, not the region's), and the
    union is numbered by first point.

    ``old_labels`` (M_old,) the old cleaned points' dense labels (``n_old`` of them), ``old_row``
    (M_new,) the matching old point of each new one (-1 none, ``change_region.match_points_torch``),
    ``old_near`` bool (M_old,) inside the changed voxels plus the margin. Host synchronisations: the
    size of the region (its point list), then the label count and the kept count together."""
    from bqnet_model.superpoints import oversegment_detailed

    dev = old_labels.device
    m_old = int(old_labels.shape[0])
    matched = old_row >= 0
    # Old points still present. Unmatched new points write slot m_old (dropped): an index_put whose
    # duplicate writes all carry True, so it is deterministic, and no boolean mask forces a sync.
    present = torch.zeros(m_old + 1, dtype=torch.bool, device=dev)
    present[torch.where(matched, old_row, m_old)] = True
    lost = ~present[:m_old] | old_near
    bad = torch.zeros(n_old, dtype=torch.int32, device=dev).index_add_(0, old_labels, lost.to(torch.int32)) > 0
    old_label = old_labels[old_row.clamp_min(0)]
    keep_pt = matched & ~bad[old_label]
    rest = torch.nonzero(~keep_pt).flatten()
    n_rest = int(rest.shape[0])
    labels = torch.where(keep_pt, old_label, torch.full_like(old_label, n_old))  # one lone point: n_old
    if n_rest >= 2:
        if params.spacing == 0 and spacing > 0:
            params = dataclasses.replace(params, spacing=spacing)
        sub = oversegment_detailed(xyz[rest], rgb[rest], params=params, num_threads=num_threads, device=device).labels
        sub_t = sub if isinstance(sub, Tensor) else torch.from_numpy(np.asarray(sub))
        labels[rest] = n_old + sub_t.to(device=dev, dtype=torch.int64)
    merged, count = _number_by_first_point(labels, n_old + max(n_rest, 1))
    n_sp, kept = (int(v) for v in torch.stack([count, (~bad).sum()]).tolist())
    return MergedSuperpoints(merged, n_sp, kept, n_rest)


def updated_table(labels: Tensor, n_superpoints: int, xyz: Tensor, host_xyz: np.ndarray,
                  params: SuperpointParams) -> SuperpointTable:
    """The superpoint table of dense ``labels`` (on the segmenter's device), built as a full prepare
    on that device builds it: on CUDA ``table_on_device`` (one copy of the finished table to the
    host), on the CPU the numpy table (``labels`` is then a view of host memory: no copy).
    ``xyz`` the cleaned points on the labels' device, ``host_xyz`` their host copy."""
    if labels.device.type != "cpu":
        built = table_on_device(labels, xyz)
        if built is not None:
            lab, n_sp, order, start, geometry = built
            return SuperpointTable(lab, n_sp, order, start, 0.0, geometry)
    lab_h = labels.cpu().numpy()
    table = superpoint_table(host_xyz, None, lab_h, np.arange(lab_h.shape[0]), params)
    if table.n_superpoints != n_superpoints:  # the labels were dense 0..S-1: dense_labels kept them
        raise RuntimeError(f"superpoint table of {table.n_superpoints} superpoints for {n_superpoints} labels "
                           "(region_superpoints bug: the merged labels are not dense)")
    return table
