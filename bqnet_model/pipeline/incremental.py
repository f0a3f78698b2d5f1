"""``Segmenter.update``: a grown map re-encoded where it changed, the rest taken from the cache.

A robot's fused map grows a little between versions. ``update(cache, xyz, rgb)`` finds the voxels
(at the model's voxel size, on the cached grid) that are new, removed or changed (``change_region``)
and then:

* superpoints: keeps every old superpoint whose points are all still there and lie outside the
  changed voxels dilated by ``superpoint_margin`` (default: two kNN reaches of the
  oversegmentation, since an edge weight uses both ends' normals), re-runs the oversegmentation
  (``superpoints.oversegment_detailed``, unchanged, at the cached spacing) on every other point,
  and numbers the union by first point as the oversegmentation does (FPS starts at superpoint 0).
  FH is global, so the labels are not those of a full run; ``test/test_incremental.py`` bounds the
  ASA difference against ground-truth instances;
* backbone: with ``R = receptive_field`` voxels, runs the sparse U-Net on the new voxels within
  ``feature_reach + R`` of a change and splices its outputs for the voxels within ``feature_reach``
  (exact: their whole receptive field was in the run); every other voxel keeps its cached
  features. ``feature_reach`` None (default) = ``R``: every voxel feature then equals a full pass
  (up to float rounding). 0 = only the changed voxels are recomputed; the ring within ``R`` of a
  change keeps stale features (cheaper, answers checked by the tests within their tolerance);
* pooling and FPS seeds: recomputed in full over the new superpoints (linear in points, cheap next
  to the backbone), so they are exactly a function of the spliced voxel features.

Where it runs: on the segmenter's device, as torch ops (point matching ``change_region.match_points_torch``,
the merge and renumbering ``region_superpoints``, the table as a full prepare builds it there). The
state keeps what the next update reads (the cleaned points, their labels, voxel map and sorted
hashes) as tensors on that device, so no per-point array crosses to the host and back; what does
come back is what the cache holds for answers (the cleaned cloud, the superpoint table), one copy
each as in a full prepare, plus a few counts (the region's size, the superpoint count).

The backbone input holds each voxel's position minus the map's mean point (``voxel_inputs_torch``).
A new point moves that mean, which would change every input and, through the U-Net, every output;
the cache's centre is therefore kept (pinned) across updates that splice. A full prepare of the new
map centres on its own mean, so spliced features equal a full prepare's only within the tolerance
the tests state; ``max_centre_shift`` bounds the drift (beyond it: a full prepare). When the reach
covers (nearly) the whole map, as a room-sized map with a 4-level U-Net, the backbone runs on all of
it on the new mean: its features are then exactly a full prepare's and the pin is released.

Fall back to a full prepare (``update_info['reason']`` says why, logged at INFO): no voxel state in
the cache (a plain ``prepare`` result, or the first map), a different model or inference config,
test-time rotations, a thinned map (``max_points``), a moved grid origin (the map's minimum corner
changed: strided convs group voxels by absolute grid position), a changed fraction over
``max_changed_fraction`` of the voxels, or a centre drift over ``max_centre_shift``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bqnet_model.ingest import voxel_inputs_torch
from bqnet_model.model.bqnet import sync_time
from bqnet_model.model.inputs import MIN_SPATIAL_SHAPE, set_batch_superpoints

from .change_region import (boundary_reach, diff_voxels, match_points_torch, pack_keys, receptive_field,
                            sorted_hashes, unpack_keys, within_reach)
from .absence import semantic_maps
from .region_superpoints import merge_superpoints, number_by_first_point, updated_table
from .results import SceneCache
from .superpoint_table import pool_rows, superpoint_table

__all__ = ["IncrementalParams", "VoxelState", "IncrementalCache", "prepare_with_state", "update_scene",
           "number_by_first_point"]

log = logging.getLogger(__name__)

# When the backbone would run on at least this fraction of the voxels anyway, it runs on all of
# them: same cost, and every feature is then exact rather than spliced.
FULL_RUN_FRACTION = 0.9


@dataclass(frozen=True)
class IncrementalParams:
    """Knobs of ``Segmenter.update`` (module docstring)."""

    max_changed_fraction: float = 0.3  # changed voxels / voxels above which a full prepare runs
    xyz_tol: float = 1e-5  # metres: a voxel whose mean point moved less is unchanged
    colour_tol: float = 1e-5  # backbone colour units ([-1, 1]): same for its mean colour
    superpoint_margin: int | None = None  # voxels; None = two kNN reaches of the oversegmentation
    feature_reach: int | None = None  # voxels; None = the backbone's receptive field (exact)
    max_centre_shift: float = 0.25  # metres between the pinned centre and the new map's mean

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_changed_fraction <= 1.0:
            raise ValueError(f"max_changed_fraction must be in [0, 1], got {self.max_changed_fraction}")
        for name in ("xyz_tol", "colour_tol", "max_centre_shift"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be finite and >= 0, got {getattr(self, name)}")
        for name in ("superpoint_margin", "feature_reach"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise ValueError(f"{name} must be None or an int >= 0 (voxels), got {v!r}")


@dataclass
class VoxelState:
    """What an update needs beyond ``SceneCache``: the voxels, their backbone features, the grid."""

    fingerprint: tuple  # inference settings the state was made with
    model: Any  # weakref.ref to the model that made it (a reloaded model is another model)
    keys: torch.Tensor  # int64 (V,) packed voxel coordinates, ascending
    counts: torch.Tensor  # int64 (V,) points per voxel
    means: torch.Tensor  # float64 (V, 6): mean colour (backbone units) and mean position (metres)
    feats: torch.Tensor  # (V, C) backbone outputs
    origin: torch.Tensor  # float64 (3,) grid origin (the first map's minimum corner)
    centre: torch.Tensor  # float64 (3,) the pinned centre of the backbone's position inputs
    spatial_shape: list[int]
    point_voxel: torch.Tensor  # int64 (M,) cleaned point -> voxel row
    spacing: float  # the oversegmentation's scale (0 when the caller gives superpoints)
    hash_sorted: torch.Tensor  # int64 (M,) sorted point hashes (change_region.sorted_hashes)
    hash_order: torch.Tensor  # int64 (M,) their stable argsort
    point_xyz: torch.Tensor  # float32 (M, 3) the cleaned points (as SceneCache.point_xyz)
    point_superpoint: torch.Tensor  # int64 (M,) their superpoints (as SceneCache.point_superpoint)

    @property
    def p2v(self) -> np.ndarray:
        """Host copy of ``point_voxel`` (for inspection; the update reads the device tensor)."""
        return self.point_voxel.cpu().numpy()


@dataclass
class IncrementalCache(SceneCache):
    """A ``SceneCache`` that ``Segmenter.update`` can update (``query`` takes it as any cache)."""

    state: VoxelState | None = None
    # What made this cache: mode 'full' (with its reason) or 'incremental', and the sizes involved.
    update_info: dict[str, Any] = field(default_factory=dict)


def _fingerprint(seg: Any) -> tuple:
    inf = seg.inference
    return (str(seg.device), inf.voxel_size, inf.superpoints, inf.max_points, inf.tta_rotations,
            dataclasses.astuple(seg.model.cfg.backbone), inf.amp, inf.amp_dtype)


def _wrap(base: SceneCache, state: VoxelState | None, info: dict[str, Any]) -> IncrementalCache:
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(SceneCache)}
    return IncrementalCache(**fields, state=state, update_info=info)


def _means(vi: Any, centre_of_inputs: torch.Tensor) -> torch.Tensor:
    """(V, 6) float64 voxel means (colour in backbone units, position in metres) from ``vi.feats``,
    whose position channels are centred on ``centre_of_inputs``."""
    m = vi.feats.double()
    return torch.cat([m[:, :3], m[:, 3:] + centre_of_inputs], dim=1)


def prepare_with_state(seg: Any, xyz: Any, rgb: Any = None, superpoints: Any = None, image_features: Any = None,
                       reason: str = "requested") -> IncrementalCache:
    """``Segmenter.prepare`` (its own path, ``_prepare_parts``) plus the voxel state later updates
    start from."""
    inf = seg.inference
    info = {"mode": "full", "reason": reason}
    if inf.tta_rotations > 1:
        info["reason"] = f"{reason}; no voxel state kept: inference.tta_rotations > 1 turns the whole map"
        return _wrap(seg.prepare(xyz, rgb, superpoints, image_features), None, info)
    base, parts = seg._prepare_parts(xyz, rgb, superpoints, image_features)  # the one prepare path
    cloud, vi, vox, dxyz = parts.dcloud.host, parts.voxels, parts.voxel_feats, parts.dcloud.xyz
    spacing = parts.table.spacing
    centre = dxyz.double().mean(dim=0)
    hashes, order = sorted_hashes(dxyz)
    labels = torch.from_numpy(parts.table.labels).to(seg.device)  # the prepare's table is a host one
    state = VoxelState(
        fingerprint=_fingerprint(seg), model=weakref.ref(seg.model), keys=pack_keys(vi.coords), counts=vi.counts,
        means=_means(vi, centre), feats=vox, origin=vi.origin, centre=centre,
        spatial_shape=list(parts.batch["spatial_shape"]), point_voxel=vi.p2v, spacing=spacing,
        hash_sorted=hashes, hash_order=order, point_xyz=dxyz, point_superpoint=labels)
    info.update(n_voxels=vi.n_voxels, n_points=cloud.n_points)
    return _wrap(base, state, info)


def _pool(seg: Any, vox: torch.Tensor, p2v: torch.Tensor, xyz: torch.Tensor, labels: torch.Tensor, table: Any,
          point_image: np.ndarray | None, index: np.ndarray, timings: dict[str, float]) -> Any:
    """Superpoint pooling and FPS seeds (``BQNet.pool_scene``) over device tensors: the batch holds
    only what pooling reads (no voxel coordinates: the backbone has run)."""
    batch: dict[str, Any] = {"p2v": p2v, "point_xyz": xyz}
    set_batch_superpoints(batch, labels, table.n_superpoints)
    batch["sp_image_feats"] = None if point_image is None else \
        torch.from_numpy(pool_rows(point_image[index], table)).to(seg.device)
    return seg.model.pool_scene(vox, batch, timings, fps_kernel=seg.inference.fps_cuda_kernel)


def _scene_cache(scene: Any, cloud: Any, table: Any, n_voxels: int, timings: dict[str, float],
                 dev: torch.device, sem: tuple[np.ndarray | None, np.ndarray | None]) -> SceneCache:
    return SceneCache(
        scene=scene, point_index=cloud.index, point_xyz=cloud.xyz, point_superpoint=table.labels,
        sp_order=table.order, sp_start=table.start, n_input=cloud.n_input, n_voxels=n_voxels,
        timings_ms=timings, device=str(dev), sp_sum=table.geometry[0], sp_min=table.geometry[1],
        sp_max=table.geometry[2], n_nonfinite=cloud.n_nonfinite, n_duplicates=cloud.n_duplicates,
        n_downsampled=cloud.n_downsampled, sp_class=sem[0], sp_prob=sem[1])


def _full(seg: Any, reason: str, xyz: Any, rgb: Any, superpoints: Any, image_features: Any) -> IncrementalCache:
    log.info("map update: full prepare (%s)", reason)
    return prepare_with_state(seg, xyz, rgb, superpoints, image_features, reason=reason)


def _splice_backbone(seg: Any, st: VoxelState, keys: torch.Tensor, vi_feats: torch.Tensor, mean: torch.Tensor,
                     shape: list[int], diff: Any, reach: int,
                     timings: dict[str, float]) -> tuple[torch.Tensor, torch.Tensor, dict[str, int]]:
    """Backbone features of the new voxels and the centre their inputs used: recomputed within
    ``reach`` of a change (from a run on every voxel within ``R`` of those), cached elsewhere, on
    the pinned centre. When the run covers (nearly) the whole map it covers all of it, on the new
    map's own mean: every feature is then exactly a full prepare's and the pin is released.
    ``timings``: ``backbone`` (the U-Net run) and ``splice`` (choosing its voxels, assembling the
    features around it)."""
    R = receptive_field(seg.model.cfg.backbone)
    dev = keys.device
    t_in = sync_time(dev)
    coords = unpack_keys(keys)
    v = int(keys.shape[0])
    replace = (diff.changed | within_reach(coords, diff.seeds, reach)) if reach > 0 else diff.changed.clone()
    # Run wherever a replaced voxel can look: then each replaced output sees its whole field.
    run = within_reach(coords, coords[replace], R)
    run_idx = torch.nonzero(run).flatten()
    n_run = int(run_idx.shape[0])
    full = n_run >= FULL_RUN_FRACTION * v
    centre = st.centre.to(dev)
    feats = vi_feats
    if full:
        run_idx = torch.arange(v, device=dev)
        n_run = v
        centre = mean
    else:
        feats = vi_feats.clone()
        feats[:, 3:] += (mean - centre).float()  # position inputs centred on the pinned centre
    t0 = sync_time(dev)
    out = None
    if n_run:  # none when nothing changed (the same map again): every voxel keeps its features
        c4 = torch.zeros((n_run, 4), dtype=torch.int32, device=dev)
        c4[:, 1:] = coords[run_idx].int()
        out = seg.model.backbone(feats[run_idx], c4, shape, 1)
    t1 = sync_time(dev)
    timings["backbone"] = (t1 - t0) * 1e3
    if full:
        timings["splice"] = (t0 - t_in) * 1e3
        return out, centre, {"run_voxels": v, "replaced_voxels": v}
    old_of_new = diff.old_of_new
    # One read-back for the guard and the count: a kept voxel must have an old row, as every new
    # voxel is a change.
    orphan, n_replaced = (int(x) for x in torch.stack([((old_of_new < 0) & ~replace).sum(), replace.sum()]).tolist())
    if orphan:
        raise RuntimeError("a new voxel was left out of the recomputed region (change_region bug)")
    vox = st.feats[old_of_new.clamp_min(0)]
    if out is not None:
        slot = torch.zeros(v, dtype=torch.long, device=dev)
        slot[run_idx] = torch.arange(n_run, device=dev)
        vox = torch.where(replace[:, None], out[slot].to(vox.dtype), vox)
    timings["splice"] = (t0 - t_in + sync_time(dev) - t1) * 1e3
    return vox, centre, {"run_voxels": n_run, "replaced_voxels": n_replaced}


def update_scene(seg: Any, cache: SceneCache | None, xyz: Any, rgb: Any = None, superpoints: Any = None,
                 image_features: Any = None, params: IncrementalParams | None = None) -> IncrementalCache:
    """The cache of the new map ``xyz``/``rgb``: incremental when it can be (module docstring), a
    full prepare otherwise. Arguments as ``Segmenter.prepare``."""
    p = IncrementalParams() if params is None else params
    if not isinstance(p, IncrementalParams):
        raise TypeError(f"params must be an IncrementalParams, got {type(p).__name__}")
    args = (xyz, rgb, superpoints, image_features)
    st = cache.state if isinstance(cache, IncrementalCache) else None
    if cache is None:
        return _full(seg, "no cached map", *args)
    if st is None:
        return _full(seg, "the cache holds no voxel state (it came from prepare, or tta_rotations > 1)", *args)
    if st.fingerprint != _fingerprint(seg) or st.model() is not seg.model:
        return _full(seg, "the cache was made with another model or other inference settings", *args)
    if (superpoints is None) != (st.spacing > 0):
        return _full(seg, "superpoints given for one map version and not the other", *args)
    if cache.n_downsampled:
        return _full(seg, "the cached map was thinned (inference.max_points): thinning is global", *args)
    inf = seg.inference
    dev = seg.device
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    given, point_image, dcloud = seg._clean_input(xyz, rgb, superpoints, image_features)
    cloud = dcloud.host
    if cloud.n_downsampled:
        return _full(seg, "the new map is thinned (inference.max_points): thinning is global", *args)
    t1 = sync_time(dev)
    timings["clean"] = (t1 - t0) * 1e3
    vi = voxel_inputs_torch(dcloud.xyz, dcloud.rgb, inf.voxel_size)
    if not torch.equal(vi.origin, st.origin.to(vi.origin.device)):
        return _full(seg, f"the grid origin would move from {st.origin.tolist()} to {vi.origin.tolist()} "
                          "(the map's minimum corner changed)", *args)
    mean = dcloud.xyz.double().mean(dim=0)
    centre = st.centre.to(dev)
    shift = float((mean - centre).norm())
    if shift > p.max_centre_shift:
        return _full(seg, f"the map's mean moved {shift:.3f} m from the pinned centre "
                          f"(max_centre_shift {p.max_centre_shift} m)", *args)
    keys = pack_keys(vi.coords)
    shape = [max(int(v), MIN_SPATIAL_SHAPE) for v in vi.spatial_shape]
    new_means = _means(vi, mean)
    diff = diff_voxels(st.keys, st.counts, st.means, keys, vi.counts, new_means, p.xyz_tol, p.colour_tol,
                       st.spatial_shape, shape, boundary_reach(seg.model.cfg.backbone))
    frac = diff.n_changed / max(int(keys.shape[0]), int(st.keys.shape[0]))
    t2 = sync_time(dev)
    timings["diff"] = (t2 - t1) * 1e3
    if frac > p.max_changed_fraction:
        return _full(seg, f"{100 * frac:.1f} % of the voxels changed (max_changed_fraction "
                          f"{100 * p.max_changed_fraction:.0f} %)", *args)
    info: dict[str, Any] = {"mode": "incremental", "reason": "", "changed_voxels": diff.n_changed,
                            "changed_fraction": frac, "voxels": int(keys.shape[0])}
    if given is None:
        margin = p.superpoint_margin
        if margin is None:
            reach_m = 2.0 * inf.superpoints.max_edge * (inf.superpoints.spacing or st.spacing)
            margin = int(math.ceil(reach_m / inf.voxel_size)) + 1
        old_row = match_points_torch(st.point_xyz, st.hash_sorted, st.hash_order, dcloud.xyz)
        old_near = within_reach(unpack_keys(st.keys), diff.seeds, margin)[st.point_voxel]
        merged = merge_superpoints(st.point_superpoint, cache.n_superpoints, old_row, old_near, dcloud.xyz,
                                   dcloud.rgb, inf.superpoints, st.spacing, inf.superpoint_threads or None, dev)
        info.update(kept_superpoints=merged.kept_superpoints, resegmented_points=merged.resegmented_points,
                    superpoint_margin=margin)
        labels = merged.labels
        table = updated_table(labels, merged.n_superpoints, dcloud.xyz, cloud.xyz, inf.superpoints)
    else:  # the caller's labels: the host table of a full prepare, as it builds it
        table = superpoint_table(cloud.xyz, None, given, cloud.index, inf.superpoints)
        labels = torch.from_numpy(table.labels).to(dev)
    t3 = sync_time(dev)
    timings["superpoints"] = (t3 - t2) * 1e3
    reach = receptive_field(seg.model.cfg.backbone) if p.feature_reach is None else p.feature_reach
    with torch.inference_mode(), seg._autocast():
        vox, new_centre, bb_info = _splice_backbone(seg, st, keys, vi.feats, mean, shape, diff, reach, timings)
        info.update(bb_info, feature_reach=reach)
        scene = _pool(seg, vox, vi.p2v, dcloud.xyz, labels, table, point_image, cloud.index, timings)
    t4 = sync_time(dev)
    sem = semantic_maps(seg.model, scene)
    t5 = sync_time(dev)
    timings["semantic"] = (t5 - t4) * 1e3
    base = _scene_cache(scene, cloud, table, vi.n_voxels, timings, dev, sem)
    hashes, order = sorted_hashes(dcloud.xyz)
    new_state = VoxelState(
        fingerprint=st.fingerprint, model=st.model, keys=keys, counts=vi.counts, means=new_means, feats=vox,
        origin=st.origin, centre=new_centre, spatial_shape=shape, point_voxel=vi.p2v, spacing=st.spacing,
        hash_sorted=hashes, hash_order=order, point_xyz=dcloud.xyz, point_superpoint=labels)
    out = _wrap(base, new_state, info)
    t6 = sync_time(dev)
    timings["state"] = (t6 - t5) * 1e3
    timings["total"] = (t6 - t0) * 1e3  # the dict is the cache's: every stage of the wall time
    return out
