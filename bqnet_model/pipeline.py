"""``Segmenter``: a point-cloud map in, the object a sentence names out.

``prepare`` runs once per map version (clean -> superpoints -> voxelize -> backbone ->
superpoint pooling -> FPS seeds) and returns a ``SceneCache``; ``query`` runs per batch of
sentences over that cache (text encoder -> decoder -> selection -> point indices). The CLI, the
ROS node and evaluation all go through here, and the batch that ``prepare`` builds comes from
``bqnet_model.model.inputs`` exactly as in training.

Answers:
* RES: the query with the highest target probability; its mask (sigmoid >= mask_threshold) over
  superpoints, points inheriting their superpoint's value. ``found`` is False when that mask is
  empty. One ``TargetObject``, score = the query's target probability.
* GRES: every query whose indicator says "target" (``select_gres``); fewer than
  ``gres_min_points`` points in their union means "no target". Queries whose masks overlap with
  point IoU > ``gres_merge_iou`` are one object (several queries usually land on one object):
  queries are taken by descending target probability, each joins the existing object it
  overlaps most if that IoU exceeds the threshold, else starts a new one; an object's mask is
  the union of its queries' masks and its score their highest target probability. Objects are
  sorted by score; ``Result.point_indices`` is the union of all objects.

Point indices always index the ``xyz`` given to ``prepare`` (sorted ascending). Points dropped
by cleaning (NaN/Inf, exact duplicates, ``max_points`` downsampling) never appear in answers.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bqnet_model.model.bqnet import BQNet, SceneFeatures, sync_time
from bqnet_model.model.config import Config, InferenceConfig, dataclass_from_dict, load_config
from bqnet_model.model.decoder import DecoderOutput, LayerPrediction
from bqnet_model.model.heads import select_gres, select_res, target_probability
from bqnet_model.model.inputs import collate_scenes, scene_inputs
from bqnet_model.model.text_encoder import validate_texts
from bqnet_model.pointcloud import clean

__all__ = ["Segmenter", "SceneCache", "Result", "TargetObject", "resolve_device"]

log = logging.getLogger(__name__)

_GREY = 128


@dataclass
class TargetObject:
    """One answer object: point indices into the caller's cloud, score, centroid and AABB."""

    point_indices: np.ndarray  # int64 (K,), sorted
    score: float
    centroid: np.ndarray  # float64 (3,)
    box_min: np.ndarray  # float64 (3,)
    box_max: np.ndarray  # float64 (3,)
    queries: list[int] = field(default_factory=list)  # decoder queries merged into this object

    @property
    def n_points(self) -> int:
        return int(self.point_indices.shape[0])


@dataclass
class Result:
    """The answer to one sentence. ``timings_ms`` are those of the batched call the sentence
    was part of (``text``, ``decoder``, ``post``, ``total``)."""

    text: str
    found: bool
    objects: list[TargetObject]
    point_indices: np.ndarray  # int64, union of the objects' points, sorted
    timings_ms: dict[str, float]
    task: str = "res"


@dataclass
class SceneCache:
    """Everything ``query`` needs about one prepared map (tensors on the segmenter's device)."""

    scene: SceneFeatures
    point_index: np.ndarray  # int64 (M,): cleaned point -> row of the caller's cloud
    point_xyz: np.ndarray  # float32 (M, 3): cleaned points
    point_superpoint: np.ndarray  # int64 (M,): superpoint of each cleaned point, dense 0..S-1
    sp_order: np.ndarray  # int64 (M,): cleaned points sorted by superpoint
    sp_start: np.ndarray  # int64 (S+1,): sp s owns sp_order[sp_start[s]:sp_start[s+1]]
    n_input: int
    n_voxels: int
    timings_ms: dict[str, float]
    device: str

    @property
    def n_points(self) -> int:
        return int(self.point_index.shape[0])

    @property
    def n_superpoints(self) -> int:
        return int(self.sp_start.shape[0] - 1)

    def points_of(self, superpoints: np.ndarray) -> np.ndarray:
        """Cleaned-point rows of the given superpoints (vectorized CSR gather)."""
        sps = np.asarray(superpoints, np.int64)
        if sps.size == 0:
            return np.zeros(0, np.int64)
        starts = self.sp_start[sps]
        lens = self.sp_start[sps + 1] - starts
        total = int(lens.sum())
        offs = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
        return self.sp_order[offs + np.arange(total)]

    def sorted_points_of(self, superpoints: np.ndarray) -> np.ndarray:
        """``points_of`` in ascending order: a sort for small selections, a point mask
        (O(M), no sort) once they cover more than 1/16 of the map."""
        rows = self.points_of(superpoints)
        m = self.n_points
        if rows.size * 16 <= m:
            return np.sort(rows)
        mask = np.zeros(m, dtype=bool)
        mask[rows] = True
        return np.flatnonzero(mask)


def resolve_device(device: str | torch.device) -> torch.device:
    """``torch.device``; CUDA asked for but absent falls back to CPU with a warning."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"invalid device {device!r} (use 'cpu', 'cuda' or 'cuda:N')") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            log.warning("device %r requested but CUDA is not available: running on the CPU", str(device))
            return torch.device("cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif dev.type != "cpu":
        raise ValueError(f"unsupported device {device!r} (use 'cpu' or 'cuda')")
    return dev


def _check_superpoint_params(params: dict[str, Any]) -> None:
    """Refuse unknown ``inference.superpoints`` keys at start-up, not at the first map."""
    from bqnet_model.superpoints import SuperpointParams

    allowed = {f.name for f in dataclasses.fields(SuperpointParams)} | {"num_threads"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"inference.superpoints: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    try:
        SuperpointParams(**{k: v for k, v in params.items() if k != "num_threads"})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"inference.superpoints: {exc}") from exc


def _inference_overrides(inf: InferenceConfig, overrides: dict[str, Any]) -> InferenceConfig:
    if not overrides:
        return inf
    merged = {**dataclasses.asdict(inf), **overrides}
    return dataclass_from_dict(InferenceConfig, merged, "inference")


class Segmenter:
    """Model + inference settings on one device; see the module docstring."""

    def __init__(self, model: BQNet, cfg: Config | InferenceConfig | None = None, device: str | torch.device = "cpu") -> None:
        if not isinstance(model, BQNet):
            raise TypeError(f"model must be a BQNet, got {type(model).__name__}")
        if cfg is None:
            cfg = Config(model=model.cfg)
        elif isinstance(cfg, InferenceConfig):
            cfg = Config(model=model.cfg, inference=cfg)
        elif not isinstance(cfg, Config):
            raise TypeError(f"cfg must be a Config or an InferenceConfig, got {type(cfg).__name__}")
        _check_superpoint_params(cfg.inference.superpoints)
        self.cfg = cfg
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu",
                        config: str | Path | dict | Config | None = None, **overrides: Any) -> "Segmenter":
        """Load our checkpoint (strict), or an official one into a model built from ``config``.

        ``overrides`` replace inference settings (e.g. ``task='gres'``, ``mask_threshold=0.4``).
        """
        from bqnet_model.checkpoint import load_model

        dev = resolve_device(device)
        conf = None if config is None else copy.deepcopy(load_config(config))
        model, stored = load_model(path, device=dev, config=conf)
        if stored is not None and conf is not None:
            log.warning("%s carries its own config; the config given is ignored (pass inference overrides instead)", path)
        cfg = stored if stored is not None else conf
        assert cfg is not None  # load_model raises for a foreign file without a config
        cfg.model = model.cfg
        cfg.inference = _inference_overrides(cfg.inference, overrides)
        return cls(model, cfg, dev)

    @classmethod
    def from_config(cls, cfg: str | Path | dict | Config, device: str | torch.device = "cpu", seed: int = 0,
                    text_pretrained: bool = True, **overrides: Any) -> "Segmenter":
        """A randomly initialized model (tests; the node before a model exists). Deterministic per seed.

        ``text_pretrained=False`` also gives the text encoder random weights (benchmarks on
        machines that only hold the encoder's config and tokenizer).
        """
        conf = copy.deepcopy(load_config(cfg))
        conf.inference = _inference_overrides(conf.inference, overrides)
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            model = BQNet(conf.model, text_pretrained=text_pretrained)
        finally:
            torch.random.set_rng_state(state)
        conf.model = model.cfg
        return cls(model, conf, device)

    @property
    def inference(self) -> InferenceConfig:
        return self.cfg.inference

    def _autocast(self) -> Any:
        on = self.inference.amp and self.device.type == "cuda"
        return torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=on)

    # ------------------------------------------------------------------ prepare
    def prepare(self, xyz: np.ndarray, rgb: np.ndarray | None = None, superpoints: np.ndarray | None = None) -> SceneCache:
        """Everything about the map that does not depend on the sentence (module docstring).

        ``rgb``: uint8 (N,3) or float in [0,1]; None = constant grey. ``superpoints``: (N,)
        labels to use instead of the online oversegmentation (e.g. ScanNet's mesh segments).
        """
        inf = self.inference
        timings: dict[str, float] = {}
        dev = self.device
        t0 = time.perf_counter()
        if superpoints is not None:
            sp_in = np.asarray(superpoints)
            n_in = len(xyz) if hasattr(xyz, "__len__") else -1
            if sp_in.ndim != 1 or sp_in.shape[0] != n_in:
                raise ValueError(f"superpoints must have shape ({n_in},) like xyz, got {sp_in.shape}")
        cloud = clean(xyz, rgb, max_points=inf.max_points, seed=inf.seed)
        if cloud.n_downsampled:
            log.warning("map has %d points, more than inference.max_points=%d: randomly downsampled to %d (seed %d)",
                        cloud.n_points + cloud.n_downsampled, inf.max_points, cloud.n_points, inf.seed)
        if cloud.n_nonfinite:
            log.info("dropped %d non-finite points", cloud.n_nonfinite)
        rgb8 = cloud.rgb if cloud.rgb is not None else np.full((cloud.n_points, 3), _GREY, np.uint8)
        t1 = time.perf_counter()
        timings["clean"] = (t1 - t0) * 1e3

        if superpoints is None:
            from bqnet_model.superpoints import oversegment

            sp = oversegment(cloud.xyz, rgb8, **inf.superpoints)
        else:
            sp = np.asarray(superpoints)[cloud.index]
        t2 = time.perf_counter()
        timings["superpoints"] = (t2 - t1) * 1e3

        si = scene_inputs(cloud.xyz, rgb8, sp, inf.voxel_size)
        batch = collate_scenes([si])
        t3 = time.perf_counter()
        timings["voxelize"] = (t3 - t2) * 1e3

        with torch.inference_mode(), self._autocast():
            scene = self.model.encode_scene(batch, timings)
        sync_time(dev)
        sp_dense = si.superpoints
        order = np.argsort(sp_dense, kind="stable")
        counts = np.bincount(sp_dense, minlength=si.n_superpoints)
        start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        timings["total"] = (time.perf_counter() - t0) * 1e3
        return SceneCache(
            scene=scene,
            point_index=cloud.index,
            point_xyz=cloud.xyz,
            point_superpoint=sp_dense,
            sp_order=order.astype(np.int64, copy=False),
            sp_start=start,
            n_input=cloud.n_input,
            n_voxels=si.n_voxels,
            timings_ms=timings,
            device=str(dev),
        )

    # ------------------------------------------------------------------ query
    def _check_cache(self, cache: SceneCache) -> None:
        if not isinstance(cache, SceneCache):
            raise TypeError(f"cache must be a SceneCache from Segmenter.prepare, got {type(cache).__name__}")
        if cache.scene.sp_feats.device != self.device and not (
            cache.scene.sp_feats.device.type == self.device.type == "cuda"
        ):
            raise ValueError(f"cache was prepared on {cache.device}, this segmenter runs on {self.device}")

    def decode(self, cache: SceneCache, texts: str | list[str], keep_all_layers: bool = False) -> DecoderOutput:
        """Raw decoder output for sentences over a prepared map (one call, no chunking)."""
        self._check_cache(cache)
        texts = validate_texts(texts)
        with torch.inference_mode(), self._autocast():
            text = self.model.encode_text(texts)
            return self.model.decode(cache.scene, text, None, keep_all_layers=keep_all_layers)

    def query(self, cache: SceneCache, texts: str | list[str], task: str | None = None) -> list[Result]:
        """Answer sentences over a prepared map; batched (``inference.text_chunk`` per decoder call)."""
        self._check_cache(cache)
        texts = validate_texts(texts)
        task = self.inference.task if task is None else task
        if task not in ("res", "gres"):
            raise ValueError(f"task must be 'res' or 'gres', got {task!r}")
        results: list[Result] = []
        n = self.inference.text_chunk
        for i in range(0, len(texts), n):
            results.extend(self._query_chunk(cache, texts[i:i + n], task))
        return results

    def _query_chunk(self, cache: SceneCache, texts: list[str], task: str) -> list[Result]:
        dev = self.device
        t0 = sync_time(dev)
        with torch.inference_mode(), self._autocast():
            text = self.model.encode_text(texts)
            t1 = sync_time(dev)
            out = self.model.decode(cache.scene, text, None, keep_all_layers=False)
            t2 = sync_time(dev)
            results = self._select(cache, out.final, texts, task)
        t3 = time.perf_counter()
        timings = {"text": (t1 - t0) * 1e3, "decoder": (t2 - t1) * 1e3, "post": (t3 - t2) * 1e3,
                   "total": (t3 - t0) * 1e3}
        for r in results:
            r.timings_ms = dict(timings)
        return results

    # ------------------------------------------------------------------ selection
    def _make_object(self, cache: SceneCache, sp_ids: np.ndarray, score: float, queries: list[int]) -> TargetObject | None:
        rows = cache.sorted_points_of(sp_ids)
        if rows.size == 0:
            return None
        pts = cache.point_xyz[rows].astype(np.float64)
        return TargetObject(
            point_indices=cache.point_index[rows],  # ascending: clean() keeps the input order
            score=float(score),
            centroid=pts.mean(axis=0),
            box_min=pts.min(axis=0),
            box_max=pts.max(axis=0),
            queries=list(queries),
        )

    def _select(self, cache: SceneCache, pred: LayerPrediction, texts: list[str], task: str) -> list[Result]:
        inf = self.inference
        T = len(texts)
        sp_pad = cache.scene.sp_pad.expand(T, -1)
        prob_q = target_probability(pred).cpu().numpy()  # (T, Q)
        empty = np.zeros(0, np.int64)
        results = []
        if task == "res":
            sel = select_res(pred, sp_pad)
            on = (sel.sp_prob >= inf.mask_threshold).cpu().numpy()
            best = sel.query.cpu().numpy()
            for t, text in enumerate(texts):
                q = int(best[t])
                obj = self._make_object(cache, np.flatnonzero(on[t]), prob_q[t, q], [q])
                objs = [] if obj is None else [obj]
                results.append(Result(text, bool(objs), objs, obj.point_indices if obj else empty, {}, task))
            return results

        sizes = cache.scene.sp_sizes.expand(T, -1)
        sels = select_gres(pred, sp_pad, sizes, inf.gres_min_points, inf.mask_threshold)
        weights = cache.scene.sp_sizes[0].double().cpu().numpy()
        for t, (text, s) in enumerate(zip(texts, sels)):
            if not s.found or s.queries.numel() == 0:
                results.append(Result(text, False, [], empty, {}, task))
                continue
            qs = s.queries.cpu().numpy()
            masks = (torch.sigmoid(pred.masks[t, s.queries].float()) >= inf.mask_threshold)
            masks = (masks & ~cache.scene.sp_pad[0]).cpu().numpy()  # (K, S)
            objects = [
                o for o in (
                    self._make_object(cache, np.flatnonzero(m), score, members)
                    for m, score, members in _merge_queries(masks, prob_q[t, qs], qs, weights, inf.gres_merge_iou)
                ) if o is not None
            ]
            objects.sort(key=lambda o: -o.score)
            if not objects:
                results.append(Result(text, False, [], empty, {}, task))
                continue
            union = _union_sorted([o.point_indices for o in objects], cache.n_input)
            results.append(Result(text, True, objects, union, {}, task))
        return results


def _union_sorted(parts: list[np.ndarray], n: int) -> np.ndarray:
    """Sorted union of index arrays in [0, n): a mask for large unions, np.unique for small ones."""
    total = sum(int(p.size) for p in parts)
    if total * 16 <= n:
        return np.unique(np.concatenate(parts))
    mask = np.zeros(n, dtype=bool)
    for p in parts:
        mask[p] = True
    return np.flatnonzero(mask)


def _merge_queries(masks: np.ndarray, scores: np.ndarray, queries: np.ndarray, weights: np.ndarray,
                   iou_thr: float) -> list[tuple[np.ndarray, float, list[int]]]:
    """Greedy merge of query masks (K, S) bool by point IoU (``weights`` = points per superpoint).

    Returns (union mask, best score, member query ids) per object; empty masks are dropped.
    """
    keep = masks.any(axis=1)
    masks, scores, queries = masks[keep], scores[keep], queries[keep]
    order = np.argsort(-scores, kind="stable")
    groups: list[np.ndarray] = []
    best: list[float] = []
    members: list[list[int]] = []
    for i in order:
        m = masks[i]
        if groups:
            g = np.stack(groups)  # (G, S)
            inter = (g & m) @ weights
            union = (g | m) @ weights
            iou = inter / np.maximum(union, 1e-9)
            j = int(np.argmax(iou))
            if iou[j] > iou_thr:
                groups[j] = groups[j] | m
                best[j] = max(best[j], float(scores[i]))
                members[j].append(int(queries[i]))
                continue
        groups.append(m.copy())
        best.append(float(scores[i]))
        members.append([int(queries[i])])
    return list(zip(groups, best, members))
