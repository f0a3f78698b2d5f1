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

Speed levers (issue 7; all in ``InferenceConfig``, all giving the same answers): ``ingest``
(clean and voxelize with torch ops on the GPU, ``bqnet_model.ingest``), ``overlap_superpoints``
(the CPU oversegmentation in a worker thread while the GPU voxelizes and runs the backbone),
``cuda_graph`` (the per-sentence decoder replayed from a CUDA graph, ``bqnet_model.cuda_graphs``).
Per query call the decoder's answer leaves the device as one packed summary (``summarise``): one
device -> host copy, then the superpoint -> point mapping, boxes and centroids on the host.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bqnet_model.cuda_graphs import DecoderGraphs
from bqnet_model.ingest import clean_torch, voxel_inputs_torch
from bqnet_model.model.bqnet import BQNet, SceneFeatures, sync_time
from bqnet_model.model.config import Config, InferenceConfig, dataclass_from_dict, load_config
from bqnet_model.model.decoder import DecoderOutput, LayerPrediction
from bqnet_model.model.heads import select_res, target_probability
from bqnet_model.model.inputs import dense_labels, set_batch_superpoints, single_scene_batch, voxel_inputs
from bqnet_model.model.text_encoder import TextFeatures, validate_texts
from bqnet_model.pointcloud import clean

__all__ = ["Segmenter", "SceneCache", "Result", "TargetObject", "fuse_views", "resolve_device", "rotation_z",
           "turn_about_z"]

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
    # Per-superpoint geometry (float64, ``superpoint_geometry``): coordinate sums, AABB corners. An
    # answer's centroid and box then cost O(its superpoints), not O(its points) (a big answer at 300k
    # points was ~20 ms of numpy).
    sp_sum: np.ndarray  # (S, 3)
    sp_min: np.ndarray  # (S, 3)
    sp_max: np.ndarray  # (S, 3)
    # inference.tta_rotations > 1: the scene features of the map turned by 360/K, 2*360/K, ...
    # degrees about the vertical axis (same superpoints as ``scene``, which is the map as given).
    views: tuple[SceneFeatures, ...] = ()

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
        self._sp_pool: ThreadPoolExecutor | None = None  # prepare's superpoint worker (made on first use)
        self._graphs: DecoderGraphs | None = None  # inference.cuda_graph captures (made on first use)
        self._decode_lock = threading.Lock()  # graph buffers are shared by every caller of query()

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

    def _autocast(self, cache_enabled: bool = True) -> Any:
        on = self.inference.amp and self.device.type == "cuda"
        dtype = torch.bfloat16 if self.inference.amp_dtype == "bfloat16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype, enabled=on, cache_enabled=cache_enabled)

    @property
    def ingest_mode(self) -> str:
        """``torch`` or ``numpy``: where ``prepare`` cleans and voxelizes (``inference.ingest``)."""
        mode = self.inference.ingest
        return "torch" if mode == "auto" else mode

    @property
    def overlap_superpoints(self) -> bool:
        """Whether ``prepare`` runs the superpoints in a worker thread (``inference.overlap_superpoints``)."""
        return bool(self.inference.overlap_superpoints)  # None = off (measured slower, see InferenceConfig)

    @property
    def graph_stats(self) -> dict[str, int]:
        """CUDA graph counters (captures, replays, failures, eager runs); zeros when unused."""
        if self._graphs is None:
            return {"captures": 0, "replays": 0, "failures": 0, "eager": 0}
        return dict(self._graphs.stats)

    def close(self) -> None:
        """Drop the captured CUDA graphs (their memory pools) and stop the superpoint worker thread.

        The segmenter stays usable: both are made again on demand."""
        if self._graphs is not None:
            self._graphs.clear()
            self._graphs = None
        if self._sp_pool is not None:
            self._sp_pool.shutdown(wait=True)
            self._sp_pool = None

    def _sp_executor(self) -> ThreadPoolExecutor:
        if self._sp_pool is None:
            self._sp_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bqnet-superpoints")
        return self._sp_pool

    # ------------------------------------------------------------------ prepare
    def prepare(self, xyz: np.ndarray, rgb: np.ndarray | None = None, superpoints: np.ndarray | None = None) -> SceneCache:
        """Everything about the map that does not depend on the sentence (module docstring).

        ``rgb``: uint8 (N,3) or float in [0,1]; None = constant grey. ``superpoints``: (N,)
        labels to use instead of the online oversegmentation (e.g. ScanNet's mesh segments).

        Stages (``timings_ms``): clean, superpoints (oversegmentation + dense labels + the
        superpoint -> point table), voxelize, backbone, pooling, fps, total. With
        ``inference.overlap_superpoints`` the superpoints run in a worker thread during voxelize +
        backbone: then ``superpoints_wait`` is how long the main thread still waited for them and
        ``overlap`` how much of their time was hidden. ``inference.ingest`` picks the device of
        clean and voxelize; the cache is the same either way.
        """
        inf = self.inference
        timings: dict[str, float] = {}
        dev = self.device
        mode = self.ingest_mode
        overlap = self.overlap_superpoints
        t0 = time.perf_counter()
        if superpoints is not None:
            sp_in = np.asarray(superpoints)
            n_in = len(xyz) if hasattr(xyz, "__len__") else -1
            if sp_in.ndim != 1 or sp_in.shape[0] != n_in:
                raise ValueError(f"superpoints must have shape ({n_in},) like xyz, got {sp_in.shape}")
        dcloud = None
        if mode == "torch":
            dcloud = clean_torch(xyz, rgb, max_points=inf.max_points, seed=inf.seed, device=dev)
            cloud = dcloud.host
        else:
            cloud = clean(xyz, rgb, max_points=inf.max_points, seed=inf.seed)
        if cloud.n_downsampled:
            log.warning("map has %d points, more than inference.max_points=%d: randomly downsampled to %d (seed %d)",
                        cloud.n_points + cloud.n_downsampled, inf.max_points, cloud.n_points, inf.seed)
        if cloud.n_nonfinite:
            log.info("dropped %d non-finite points", cloud.n_nonfinite)
        rgb8 = cloud.rgb if cloud.rgb is not None else np.full((cloud.n_points, 3), _GREY, np.uint8)
        # what voxelize reads (the map, then its turned copies): device tensors with the torch ingest
        vox_xyz, vox_rgb = (dcloud.xyz, dcloud.rgb) if dcloud is not None else (cloud.xyz, rgb8)
        t1 = sync_time(dev)
        timings["clean"] = (t1 - t0) * 1e3

        sp_params = dict(inf.superpoints)
        if "num_threads" not in sp_params:
            # Read here, not in the worker: the CPU backbone lowers torch's thread count for a moment.
            n = torch.get_num_threads()
            # With the overlap on a GPU machine, leave one core to the thread that drives the GPU.
            sp_params["num_threads"] = max(1, n - 1) if (overlap and dev.type == "cuda" and n > 2) else n
        job = functools.partial(_superpoint_stage, cloud.xyz, rgb8, superpoints, cloud.index, sp_params)
        future: Future | None = None
        sp_stage: _SuperpointStage | None = None
        if overlap:
            future = self._sp_executor().submit(job)
        else:
            sp_stage = job()
        t2 = time.perf_counter()

        try:
            batch, n_voxels = self._voxel_batch(vox_xyz, vox_rgb)
            t3 = sync_time(dev)
            timings["voxelize"] = (t3 - t2) * 1e3
            with torch.inference_mode(), self._autocast():
                vox = self.model.encode_voxels(batch)
                t4 = sync_time(dev)
                timings["backbone"] = (t4 - t3) * 1e3
                if future is not None:
                    sp_stage = future.result()
                    future = None
                assert sp_stage is not None
                t5 = time.perf_counter()
                set_batch_superpoints(batch, sp_stage.labels, sp_stage.n_superpoints)
                scene = self.model.pool_scene(vox, batch, timings)
        finally:
            if future is not None:  # an error before the wait: let the worker finish quietly
                future.cancel()
        timings["superpoints"] = sp_stage.ms
        if overlap:
            timings["superpoints_wait"] = (t5 - t4) * 1e3
            timings["overlap"] = max(0.0, sp_stage.ms - timings["superpoints_wait"])
        views: tuple[SceneFeatures, ...] = ()
        if inf.tta_rotations > 1:
            t6 = time.perf_counter()
            views = tuple(self._turned_view(vox_xyz, vox_rgb, sp_stage, 2.0 * np.pi * k / inf.tta_rotations)
                          for k in range(1, inf.tta_rotations))
            timings["tta_views"] = (sync_time(dev) - t6) * 1e3
        timings["total"] = (time.perf_counter() - t0) * 1e3
        return SceneCache(
            scene=scene,
            point_index=cloud.index,
            point_xyz=cloud.xyz,
            point_superpoint=sp_stage.labels,
            sp_order=sp_stage.order,
            sp_start=sp_stage.start,
            n_input=cloud.n_input,
            n_voxels=n_voxels,
            timings_ms=timings,
            device=str(dev),
            sp_sum=sp_stage.geometry[0],
            sp_min=sp_stage.geometry[1],
            sp_max=sp_stage.geometry[2],
            views=views,
        )

    def _voxel_batch(self, xyz: np.ndarray | torch.Tensor, rgb: Any) -> tuple[dict[str, Any], int]:
        """The single-scene batch of cleaned points and its voxel count: torch ops when the points
        are a tensor (``inference.ingest`` torch), numpy otherwise."""
        vs = self.inference.voxel_size
        if isinstance(xyz, torch.Tensor):
            vi = voxel_inputs_torch(xyz, rgb, vs)
            return single_scene_batch(vi.coords, vi.feats, vi.p2v, xyz), vi.n_voxels
        coords, feats, p2v = voxel_inputs(xyz, rgb, vs)
        return single_scene_batch(coords, feats, p2v, xyz), int(coords.shape[0])

    def _turned_view(self, xyz: np.ndarray | torch.Tensor, rgb: Any, sp_stage: "_SuperpointStage",
                     angle: float) -> SceneFeatures:
        """Scene features of the cleaned map turned by ``angle`` about the vertical axis through
        its centre (``inference.tta_rotations``): voxelize, backbone, pooling with the given
        superpoints, FPS. Voxels differ from the unturned map's, so the features do too."""
        batch, _ = self._voxel_batch(turn_about_z(xyz, angle), rgb)
        with torch.inference_mode(), self._autocast():
            vox = self.model.encode_voxels(batch)
            set_batch_superpoints(batch, sp_stage.labels, sp_stage.n_superpoints)
            return self.model.pool_scene(vox, batch)

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

    def _summary_fn(self, task: str) -> Any:
        """scene, words, mask -> packed answer summary: the decoder and the heads, no host sync."""
        thr = self.inference.mask_threshold

        def fn(scene: SceneFeatures, word_feats: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
            out = self.model.decode(scene, TextFeatures(word_feats, word_mask), None,
                                    keep_all_layers=False, check_values=False)
            return summarise(out.final, scene.sp_pad, task, thr)

        return fn

    def _use_graphs(self) -> bool:
        return bool(self.inference.cuda_graph) and self.device.type == "cuda"

    def _decode_summary(self, scene: SceneFeatures, n_superpoints: int, text: TextFeatures,
                        task: str) -> tuple[torch.Tensor, int]:
        """The packed summary of one decoder call and the superpoint count it covers (a CUDA graph
        pads the superpoints to its bucket): by graph replay when enabled, else eagerly."""
        fn = self._summary_fn(task)
        dev = self.device
        word_feats, word_mask = text.word_feats.to(dev), text.word_mask.to(dev)
        if self._use_graphs():
            if self._graphs is None:
                self._graphs = DecoderGraphs(lambda: self._autocast(cache_enabled=False))
            key = (task, self.inference.mask_threshold, self.inference.amp, self.inference.amp_dtype)
            out = self._graphs.run(key, fn, scene, word_feats, word_mask)
            if out is not None:
                return out
        return fn(scene, word_feats, word_mask), n_superpoints

    def _query_chunk(self, cache: SceneCache, texts: list[str], task: str) -> list[Result]:
        dev = self.device
        t0 = sync_time(dev)
        with torch.inference_mode(), self._autocast():
            text = self.model.encode_text(texts)
            t1 = sync_time(dev)
            T = len(texts)
            if cache.views:  # inference.tta_rotations: every query's mask from every turned copy
                parts = []
                for scene in (cache.scene, *cache.views):
                    with self._decode_lock:
                        summary, S = self._decode_summary(scene, cache.n_superpoints, text, "gres")
                        host = summary.cpu().numpy()
                    part = unpack_summary(host, T, summary_queries(host.size, T, S, "gres"), S, "gres")
                    part["on"] = part["on"][..., :cache.n_superpoints]
                    parts.append(part)
                t2 = sync_time(dev)
                results = self._select_views(cache, parts, texts, task)
            else:
                with self._decode_lock:  # a graph's static output must be copied before the next replay
                    summary, S = self._decode_summary(cache.scene, cache.n_superpoints, text, task)
                    t2 = sync_time(dev)
                    host = summary.cpu().numpy()  # the one device -> host copy of the call
                Q = summary_queries(host.size, T, S, task)
                results = self._select_host(cache, host, T, Q, S, texts, task)
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
        sp_ids = np.asarray(sp_ids, np.int64)
        sp_ids = sp_ids[cache.sp_start[sp_ids + 1] > cache.sp_start[sp_ids]]  # superpoints with points
        return TargetObject(
            point_indices=cache.point_index[rows],  # ascending: clean() keeps the input order
            score=float(score),
            centroid=cache.sp_sum[sp_ids].sum(axis=0) / rows.size,
            box_min=cache.sp_min[sp_ids].min(axis=0),
            box_max=cache.sp_max[sp_ids].max(axis=0),
            queries=list(queries),
        )

    def _select(self, cache: SceneCache, pred: LayerPrediction, texts: list[str], task: str) -> list[Result]:
        """Answers from a decoder prediction (summary on the device, one copy, then the host)."""
        T, Q, S = pred.masks.shape
        host = summarise(pred, cache.scene.sp_pad, task, self.inference.mask_threshold).cpu().numpy()
        return self._select_host(cache, host, T, Q, S, texts, task)

    def _select_host(self, cache: SceneCache, host: np.ndarray, T: int, Q: int, S: int, texts: list[str],
                     task: str) -> list[Result]:
        inf = self.inference
        parts = unpack_summary(host, T, Q, S, task)
        parts["on"] = parts["on"][..., :cache.n_superpoints]  # beyond: a CUDA graph's padding (never on)
        prob_q = parts["prob"]  # (T, Q)
        empty = np.zeros(0, np.int64)
        results = []
        if task == "res":
            best, on = parts["best"], parts["on"]
            for t, text in enumerate(texts):
                q = int(best[t])
                obj = self._make_object(cache, np.flatnonzero(on[t]), prob_q[t, q], [q])
                objs = [] if obj is None else [obj]
                results.append(Result(text, bool(objs), objs, obj.point_indices if obj else empty, {}, task))
            return results

        positive, on = parts["positive"], parts["on"]  # (T, Q), (T, Q, S)
        weights = np.diff(cache.sp_start).astype(np.float64)  # points per superpoint
        for t, text in enumerate(texts):
            qs = np.flatnonzero(positive[t])
            # select_gres: found = a positive query and >= gres_min_points points in the union
            # of the positive queries' masks (superpoints above the threshold).
            masks = on[t, qs]  # (K, S)
            npts = float(weights[masks.any(axis=0)].sum()) if qs.size else 0.0
            if qs.size == 0 or npts < inf.gres_min_points:
                results.append(Result(text, False, [], empty, {}, task))
                continue
            groups = _merge_queries(masks, prob_q[t, qs], qs, weights, inf.gres_merge_iou)
            results.append(self._answer(cache, text, task, groups))
        return results

    def _answer(self, cache: SceneCache, text: str, task: str,
                groups: list[tuple[np.ndarray, float, list[int]]]) -> Result:
        """The Result of object candidates (superpoint mask, score, member queries): objects
        without points dropped, sorted by score; not found when none is left."""
        objects = [o for o in (self._make_object(cache, np.flatnonzero(m), score, members)
                               for m, score, members in groups) if o is not None]
        objects.sort(key=lambda o: -o.score)
        if not objects:
            return Result(text, False, [], np.zeros(0, np.int64), {}, task)
        union = _union_sorted([o.point_indices for o in objects], cache.n_input)
        return Result(text, True, objects, union, {}, task)

    def _select_views(self, cache: SceneCache, parts: list[dict[str, np.ndarray]], texts: list[str],
                      task: str) -> list[Result]:
        """Answers fused over the turned copies of the map (``fuse_views``). RES: the best object
        (none when every candidate mask is empty); GRES: every object whose fused score exceeds 0.5
        (a query is "target" when its probability does), "no target" below ``gres_min_points``."""
        inf = self.inference
        weights = np.diff(cache.sp_start).astype(np.float64)  # points per superpoint
        results = []
        for t, text in enumerate(texts):
            fused = fuse_views([p["prob"][t] for p in parts], [p["on"][t] for p in parts], weights,
                               inf.tta_candidates, inf.tta_match_iou)
            if task == "gres":
                fused = [f for f in fused if f[1] > 0.5]
                if fused and float(weights[np.logical_or.reduce([f[0] for f in fused])].sum()) < inf.gres_min_points:
                    fused = []
            else:
                fused = fused[:1]
            results.append(self._answer(cache, text, task, fused))
        return results


def rotation_z(angle: float) -> np.ndarray:
    """(3, 3) rotation by ``angle`` radians about +z (points turn as ``xyz @ R.T``)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def turn_about_z(xyz: np.ndarray | torch.Tensor, angle: float) -> np.ndarray | torch.Tensor:
    """Points turned by ``angle`` about the vertical axis through the centre of their bounding box;
    a torch tensor stays one (same device and dtype), anything else becomes a numpy array."""
    if isinstance(xyz, torch.Tensor):
        rot = torch.as_tensor(rotation_z(angle), dtype=xyz.dtype, device=xyz.device)
        centre = (xyz.amin(0) + xyz.amax(0)) * 0.5
        return ((xyz - centre) @ rot.T + centre).contiguous()
    xyz = np.asarray(xyz)
    centre = (xyz.min(axis=0) + xyz.max(axis=0)) * 0.5
    return ((xyz - centre) @ rotation_z(angle).T.astype(xyz.dtype) + centre).astype(xyz.dtype, copy=False)


def fuse_views(probs: list[np.ndarray], masks: list[np.ndarray], weights: np.ndarray, candidates: int,
               match_iou: float) -> list[tuple[np.ndarray, float, list[int]]]:
    """Fuse the queries of K views of one map (test-time augmentation) into scored objects.

    ``probs[v]`` (Q,) target probabilities and ``masks[v]`` (Q, S) bool superpoint masks of view
    v; ``weights`` (S,) points per superpoint. The ``candidates`` most probable queries of each
    view with a non-empty mask are taken by descending probability; each joins the object it
    overlaps most (an object's mask is that of its most probable query) when that point IoU exceeds
    ``match_iou``, else starts one. An object's score is the mean over the K views of its most
    probable query in that view (0 for a view with none): an object that one turned copy alone
    believes in scores 1/K of it. Returns (mask, score, member ids ``view * Q + query``) sorted by descending score.
    """
    if len(probs) != len(masks) or not probs:
        raise ValueError("fuse_views needs one probability vector and one mask array per view")
    K = len(probs)
    cand: list[tuple[float, int, int]] = []
    for v, (p, m) in enumerate(zip(probs, masks)):
        if m.shape[0] != p.shape[0]:
            raise ValueError(f"view {v}: {p.shape[0]} probabilities but {m.shape[0]} masks")
        nonempty = np.flatnonzero(m.any(axis=1))
        top = nonempty[np.argsort(-p[nonempty], kind="stable")[:candidates]]
        cand.extend((float(p[q]), v, int(q)) for q in top)
    cand.sort(key=lambda c: -c[0])
    reps: list[np.ndarray] = []
    best: list[np.ndarray] = []  # (K,) best probability per view
    members: list[list[int]] = []
    for p, v, q in cand:
        m = masks[v][q]
        if reps:
            g = np.stack(reps)
            iou = ((g & m) @ weights) / np.maximum((g | m) @ weights, 1e-9)
            j = int(np.argmax(iou))
            if iou[j] > match_iou:
                best[j][v] = max(best[j][v], p)
                members[j].append(v * masks[v].shape[0] + q)
                continue
        reps.append(m)
        b = np.zeros(K)
        b[v] = p
        best.append(b)
        members.append([v * masks[v].shape[0] + q])
    out = [(r, float(b.mean()), mem) for r, b, mem in zip(reps, best, members)]
    out.sort(key=lambda o: -o[1])
    return out


@dataclass
class _SuperpointStage:
    """What prepare needs from the superpoints: dense labels, count, the superpoint -> point table."""

    labels: np.ndarray  # int64 (M,), dense 0..S-1
    n_superpoints: int
    order: np.ndarray  # int64 (M,): points sorted by superpoint (stable)
    start: np.ndarray  # int64 (S+1,)
    ms: float
    geometry: tuple[np.ndarray, np.ndarray, np.ndarray]  # superpoint_geometry


def _superpoint_stage(xyz: np.ndarray, rgb8: np.ndarray, given: np.ndarray | None, index: np.ndarray,
                      params: dict[str, Any]) -> _SuperpointStage:
    """Superpoints of the cleaned cloud and their point table; runs in prepare's worker thread
    (the C++ oversegmentation releases the GIL) or inline."""
    t0 = time.perf_counter()
    if given is None:
        from bqnet_model.superpoints import oversegment

        sp = oversegment(xyz, rgb8, **params)
    else:
        sp = np.asarray(given)[index]
    labels, n_sp = dense_labels(sp)
    # Stable sort by label; as uint16 numpy sorts by radix (O(M)) instead of a merge sort.
    keys = labels.astype(np.uint16) if n_sp <= 1 << 16 else labels
    order = np.argsort(keys, kind="stable").astype(np.int64, copy=False)
    counts = np.bincount(labels, minlength=n_sp)
    start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    geometry = superpoint_geometry(xyz, order, start)
    return _SuperpointStage(labels, n_sp, order, start, (time.perf_counter() - t0) * 1e3, geometry)


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


# ---------------------------------------------------------------------- answer summary
def _packbits(mask: torch.Tensor) -> torch.Tensor:
    """bool (..., S) -> uint8 (..., ceil(S/8)), bit i of byte j = element 8j+i (numpy's 'little').

    Device ops only (no host tensor is made), so it can sit inside a CUDA graph.
    """
    S = mask.shape[-1]
    m = mask.to(torch.uint8)
    if S % 8:
        m = torch.nn.functional.pad(m, (0, 8 - S % 8))
    w = torch.bitwise_left_shift(torch.ones(8, dtype=torch.int32, device=mask.device),
                                 torch.arange(8, dtype=torch.int32, device=mask.device))
    return (m.reshape(*m.shape[:-1], -1, 8).to(torch.int32) * w).sum(-1).to(torch.uint8)


def _as_bytes(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous().view(torch.uint8).reshape(-1)


def summarise(pred: LayerPrediction, sp_pad: torch.Tensor, task: str, mask_threshold: float) -> torch.Tensor:
    """Everything the host needs to answer, as one uint8 tensor (one device -> host copy).

    RES: target probabilities (T,Q) float32, best query (T,) int32 (``select_res``), its mask
    ``sigmoid >= threshold`` off padding, (T,S) bits. GRES: probabilities, positive queries
    (indicator argmax == target) (T,Q) uint8, every query's thresholded mask (T,Q,S) bits.
    No host synchronisation: it is part of the captured CUDA graph.
    """
    T, Q, S = pred.masks.shape
    pad = sp_pad.expand(T, S)
    prob = target_probability(pred).float()
    if task == "res":
        sel = select_res(pred, pad)
        on = sel.sp_prob >= mask_threshold
        parts = [_as_bytes(prob), _as_bytes(sel.query.to(torch.int32)), _packbits(on).reshape(-1)]
    else:
        positive = pred.indi.argmax(dim=-1) == 1
        on = (torch.sigmoid(pred.masks.float()) >= mask_threshold) & ~pad.unsqueeze(1)
        parts = [_as_bytes(prob), positive.to(torch.uint8).reshape(-1), _packbits(on).reshape(-1)]
    return torch.cat(parts)


def _summary_sizes(T: int, Q: int, S: int, task: str) -> list[int]:
    nb = (S + 7) // 8
    if task == "res":
        return [T * Q * 4, T * 4, T * nb]
    return [T * Q * 4, T * Q, T * Q * nb]


def summary_queries(size: int, T: int, S: int, task: str) -> int:
    """Q from the byte size of a summary (the host knows T and S, not the decoder's Q)."""
    fixed = sum(_summary_sizes(T, 0, S, task))  # the layout is linear in Q
    per_q = sum(_summary_sizes(T, 1, S, task)) - fixed
    q, rem = divmod(size - fixed, per_q)
    if rem or q < 1:
        raise ValueError(f"summary of {size} bytes does not fit T={T}, S={S}, task={task}")
    return q


def unpack_summary(buf: np.ndarray, T: int, Q: int, S: int, task: str) -> dict[str, np.ndarray]:
    """Host views of ``summarise``'s parts: ``prob`` (T,Q) float32, then ``best`` (T,) and ``on``
    (T,S) bool for RES, ``positive`` (T,Q) bool and ``on`` (T,Q,S) bool for GRES."""
    sizes = _summary_sizes(T, Q, S, task)
    if buf.size != sum(sizes):
        raise ValueError(f"summary has {buf.size} bytes, expected {sum(sizes)} for T={T} Q={Q} S={S} {task}")
    offs = np.cumsum([0] + sizes)
    chunk = [buf[offs[i]:offs[i + 1]] for i in range(3)]
    nb = (S + 7) // 8
    out = {"prob": chunk[0].view(np.float32).reshape(T, Q)}
    if task == "res":
        out["best"] = chunk[1].view(np.int32).astype(np.int64)
        out["on"] = np.unpackbits(chunk[2].reshape(T, nb), axis=-1, count=S, bitorder="little").astype(bool)
    else:
        out["positive"] = chunk[1].reshape(T, Q).astype(bool)
        out["on"] = np.unpackbits(chunk[2].reshape(T, Q, nb), axis=-1, count=S, bitorder="little").astype(bool)
    return out


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
