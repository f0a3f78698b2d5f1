"""``Segmenter``: prepare a map once, answer sentences over it many times.

``prepare``: clean (torch ops on the segmenter's device after one host -> device copy,
``bqnet_model.ingest``) -> superpoints (C++ oversegmentation, or the caller's labels) -> voxelize
-> backbone -> superpoint pooling -> FPS seeds, and the optional per-point image features pooled
onto the superpoints. ``query``: text encoder -> decoder (each replayed from a CUDA graph on a GPU) ->
one packed summary copied to the host -> ``selection`` -> point indices, centroid, box.

Point indices always index the ``xyz`` given to ``prepare`` (sorted ascending). Points dropped by
cleaning (NaN/Inf, exact duplicates, ``max_points`` downsampling) never appear in answers.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bqnet_model.cuda_graphs import DecoderGraphs, EncoderGraphs
from bqnet_model.ingest import clean_torch, voxel_inputs_torch
from bqnet_model.model.bqnet import BQNet, SceneFeatures, sync_time
from bqnet_model.model.config import Config, InferenceConfig, dataclass_from_dict, load_config
from bqnet_model.model.decoder import DecoderOutput
from bqnet_model.model.inputs import set_batch_superpoints, single_scene_batch
from bqnet_model.model.text_encoder import TextFeatures, validate_texts

from .absence import apply_checks, semantic_maps
from .device import resolve_device
from .results import Result, SceneCache
from .selection import answer, group_queries
from .summary import summarise, unpack_summary
from .superpoint_table import SuperpointTable, pool_rows, superpoint_table
from .views import turn_about_z

if TYPE_CHECKING:
    from .incremental import IncrementalParams

__all__ = ["Segmenter"]

log = logging.getLogger(__name__)

# Every decoder call of the segmenter masks padded superpoints out of the fine stage
# (``DecoderConfig.fine_mask_padding``), whatever the model's config says: one unpadded scene gives
# the same answer either way, and masking keeps it independent of the padding a CUDA graph's
# superpoint bucket adds. Passed per call, so the caller's model and config stay as they are.
FINE_MASK_PADDING = True


@dataclasses.dataclass
class PreparedParts:
    """What ``prepare`` computed on the way to its cache, kept by ``incremental`` for updates."""

    dcloud: Any  # ingest.clean_torch's result (device tensors + the host-side cloud)
    table: SuperpointTable
    voxels: Any  # ingest.voxel_inputs_torch's result
    batch: dict[str, Any]
    voxel_feats: torch.Tensor  # the backbone's per-voxel output


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
        self.cfg = cfg
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self._graphs: DecoderGraphs | None = None  # inference.cuda_graph captures (made on first use)
        self._text_graphs: EncoderGraphs | None = None  # inference.cuda_graph_text captures (made on first use)
        self._decode_lock = threading.Lock()  # graph buffers are shared by every caller of query()
        inf = self.cfg.inference
        if inf.compile_decoder and not self._decoder_graphs_on():
            log.warning("inference.compile_decoder is ignored: it compiles the decoder that inference.cuda_graph "
                        "captures, and this segmenter captures none (device %s, cuda_graph %s; CUDA only)",
                        self.device, inf.cuda_graph)
        if inf.unknown_object != "answer" or inf.absent_class_points > 0 or inf.absent_class_prob:
            from bqnet_model.text import load_spacy

            load_spacy()  # the absent-object checks parse the text: a missing spaCy fails here, not mid-query

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
        model, cfg = load_model(path, device=dev, config=conf)
        if conf is not None and cfg is not conf:
            log.warning("%s carries its own config; the config given is ignored (pass inference overrides instead)", path)
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
    def graph_stats(self) -> dict[str, float]:
        """CUDA graph counters (captures, replays, failures, eager runs, milliseconds spent capturing,
        compiled captures, compile failures); zeros when unused."""
        return dict((self._graphs.stats if self._graphs is not None else DecoderGraphs.STATS))

    @property
    def text_graph_stats(self) -> dict[str, float]:
        """The text encoder's CUDA graph counters (as ``graph_stats``, no compile); zeros when unused."""
        return dict((self._text_graphs.stats if self._text_graphs is not None else EncoderGraphs.STATS))

    def close(self) -> None:
        """Drop the captured CUDA graphs (their memory pools); they are made again on demand."""
        if self._graphs is not None:
            self._graphs.clear()
            self._graphs = None
        if self._text_graphs is not None:
            self._text_graphs.clear()
            self._text_graphs = None

    # ------------------------------------------------------------------ prepare
    def prepare(self, xyz: np.ndarray, rgb: np.ndarray | None = None, superpoints: np.ndarray | None = None,
                image_features: np.ndarray | None = None) -> SceneCache:
        """Everything about the map that does not depend on the sentence (module docstring).

        ``rgb``: uint8 (N,3) or float in [0,1]; None = constant grey. ``superpoints``: (N,)
        labels to use instead of the online oversegmentation (e.g. ScanNet's mesh segments).
        ``image_features``: per-point 2D features (N, C), or, with ``superpoints``, one row per
        given superpoint label (max label + 1, C); mean-pooled onto the superpoints the model uses.

        Stages (``timings_ms``): clean, superpoints (oversegmentation + dense labels + the
        superpoint -> point table), voxelize, backbone, pooling, fps, total.
        """
        return self._prepare_parts(xyz, rgb, superpoints, image_features)[0]

    def _prepare_parts(self, xyz: np.ndarray, rgb: np.ndarray | None, superpoints: np.ndarray | None,
                       image_features: np.ndarray | None) -> tuple[SceneCache, PreparedParts]:
        """``prepare``, plus the intermediate results a later ``update`` starts from."""
        inf = self.inference
        timings: dict[str, float] = {}
        dev = self.device
        t0 = time.perf_counter()
        superpoints, point_image, dcloud = self._clean_input(xyz, rgb, superpoints, image_features)
        cloud = dcloud.host
        if cloud.n_downsampled:
            log.warning("map has %d points, more than inference.max_points=%d: thinned by a voxel grid to %d "
                        "(uniform density; raise max_points to keep every point)",
                        cloud.n_points + cloud.n_downsampled, inf.max_points, cloud.n_points)
        if cloud.n_nonfinite:
            log.info("dropped %d non-finite points", cloud.n_nonfinite)
        rgb8 = dcloud.rgb.cpu().numpy() if cloud.rgb is None else cloud.rgb
        t1 = sync_time(dev)
        timings["clean"] = (t1 - t0) * 1e3

        table = superpoint_table(cloud.xyz, rgb8, superpoints, cloud.index, inf.superpoints,
                                 inf.superpoint_threads, device=dev, xyz_device=dcloud.xyz, rgb_device=dcloud.rgb)
        t2 = time.perf_counter()
        timings["superpoints"] = table.ms
        vi = voxel_inputs_torch(dcloud.xyz, dcloud.rgb, inf.voxel_size)
        batch, n_voxels = single_scene_batch(vi.coords, vi.feats, vi.p2v, dcloud.xyz), vi.n_voxels
        t3 = sync_time(dev)
        timings["voxelize"] = (t3 - t2) * 1e3
        sp_image = None
        if point_image is not None:
            sp_image = torch.from_numpy(pool_rows(point_image[cloud.index], table)).to(dev)
        with torch.inference_mode(), self._autocast():
            vox = self.model.encode_voxels(batch)
            t4 = sync_time(dev)
            timings["backbone"] = (t4 - t3) * 1e3
            set_batch_superpoints(batch, table.labels, table.n_superpoints)
            batch["sp_image_feats"] = sp_image
            scene = self.model.pool_scene(vox, batch, timings, fps_kernel=inf.fps_cuda_kernel)
            sp_class, sp_prob = semantic_maps(self.model, scene)
        views: tuple[SceneFeatures, ...] = ()
        if inf.tta_rotations > 1:
            t5 = time.perf_counter()
            views = tuple(self._turned_view(dcloud.xyz, dcloud.rgb, table, 2.0 * np.pi * k / inf.tta_rotations, sp_image)
                          for k in range(1, inf.tta_rotations))
            timings["tta_views"] = (sync_time(dev) - t5) * 1e3
        timings["total"] = (time.perf_counter() - t0) * 1e3
        cache = SceneCache(
            scene=scene, point_index=cloud.index, point_xyz=cloud.xyz, point_superpoint=table.labels,
            sp_order=table.order, sp_start=table.start, n_input=cloud.n_input, n_voxels=n_voxels,
            timings_ms=timings, device=str(dev), sp_sum=table.geometry[0], sp_min=table.geometry[1],
            sp_max=table.geometry[2], views=views, n_nonfinite=cloud.n_nonfinite,
            n_duplicates=cloud.n_duplicates, n_downsampled=cloud.n_downsampled, sp_class=sp_class,
            sp_prob=sp_prob,
        )
        return cache, PreparedParts(dcloud, table, vi, batch, vox)

    def update(self, cache: SceneCache | None, xyz: np.ndarray, rgb: np.ndarray | None = None,
               superpoints: np.ndarray | None = None, image_features: np.ndarray | None = None,
               params: IncrementalParams | None = None) -> SceneCache:
        """The cache of a new version of the map, re-encoding only where it changed from ``cache``
        (``incremental.py``: what is reused, what is exact, when it falls back to a full prepare).

        Arguments as ``prepare``; ``cache`` None (or a plain ``prepare`` result) gives a full prepare
        that keeps what later updates need. ``params``: tolerances, margins, fallback thresholds.
        The returned cache's ``update_info`` says what was done and why.
        """
        from .incremental import update_scene

        return update_scene(self, cache, xyz, rgb, superpoints, image_features, params)

    def _clean_input(self, xyz: np.ndarray, rgb: np.ndarray | None, superpoints: np.ndarray | None,
                     image_features: np.ndarray | None) -> tuple[np.ndarray | None, np.ndarray | None, Any]:
        """The caller's arrays checked and cleaned (``prepare`` and ``update`` alike): the given
        superpoint labels as an array (None: online), per-point image features, and
        ``ingest.clean_torch``'s result on the segmenter's device."""
        n_in = len(xyz) if hasattr(xyz, "__len__") else -1
        if superpoints is not None:
            superpoints = np.asarray(superpoints)
            if superpoints.ndim != 1 or superpoints.shape[0] != n_in:
                raise ValueError(f"superpoints must have shape ({n_in},) like xyz, got {superpoints.shape}")
        point_image = self._point_image_features(image_features, n_in, superpoints)
        dcloud = clean_torch(xyz, rgb, max_points=self.inference.max_points, device=self.device)
        return superpoints, point_image, dcloud

    def _point_image_features(self, feats: np.ndarray | None, n_points: int,
                              superpoints: np.ndarray | None) -> np.ndarray | None:
        """Per-point image features (N, C) float32 from what the caller gave (``prepare``)."""
        want = self.model.cfg.decoder.image_channels
        if feats is None:
            return None
        feats = np.asarray(feats)
        if want == 0:
            log.warning("image features given, but this model has no 2D branch "
                        "(decoder.image_channels 0): they are ignored")
            return None
        if feats.ndim != 2 or feats.shape[1] != want:
            raise ValueError(f"image_features must have shape (N, {want}), got {feats.shape}")
        if not np.issubdtype(feats.dtype, np.floating) or not np.isfinite(feats).all():
            raise ValueError("image_features must be finite floating-point numbers")
        if feats.shape[0] == n_points:
            return feats.astype(np.float32, copy=False)
        if superpoints is not None and superpoints.size and feats.shape[0] == int(superpoints.max()) + 1 \
                and int(superpoints.min()) >= 0:
            return feats[superpoints].astype(np.float32, copy=False)
        raise ValueError(f"image_features has {feats.shape[0]} rows: give one per point ({n_points}) or, "
                         "with superpoints, one per superpoint label (max label + 1)")

    def _voxel_batch(self, xyz: torch.Tensor, rgb: torch.Tensor) -> tuple[dict[str, Any], int]:
        """The single-scene batch of cleaned points and its voxel count."""
        vi = voxel_inputs_torch(xyz, rgb, self.inference.voxel_size)
        return single_scene_batch(vi.coords, vi.feats, vi.p2v, xyz), vi.n_voxels

    def _turned_view(self, xyz: torch.Tensor, rgb: torch.Tensor, table: SuperpointTable, angle: float,
                     sp_image: torch.Tensor | None) -> SceneFeatures:
        """Scene features of the cleaned map turned by ``angle`` about the vertical axis through
        its centre (``inference.tta_rotations``), with the map's superpoints."""
        batch, _ = self._voxel_batch(turn_about_z(xyz, angle), rgb)
        with torch.inference_mode(), self._autocast():
            vox = self.model.encode_voxels(batch)
            set_batch_superpoints(batch, table.labels, table.n_superpoints)
            batch["sp_image_feats"] = sp_image
            return self.model.pool_scene(vox, batch, fps_kernel=self.inference.fps_cuda_kernel)

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
            text = self._encode_text(texts)
            return self.model.decode(cache.scene, text, None, keep_all_layers=keep_all_layers,
                                     fine_mask_padding=FINE_MASK_PADDING)

    def query(self, cache: SceneCache, texts: str | list[str], task: str | None = None,
              keep_query_masks: bool = False) -> list[Result]:
        """Answer sentences over a prepared map; batched (``inference.text_chunk`` per decoder call).

        ``keep_query_masks``: also hand out, on each ``Result``, every decoder query's thresholded
        superpoint mask and target probability (``Result.query_masks`` / ``query_probs``: the very
        arrays the selection chose the answer from), for evaluation tools such as the oracle mask
        metric (``bqnet_model.mask_oracle``). Off by default: the node's answers do not copy them.
        """
        self._check_cache(cache)
        texts = validate_texts(texts)
        task = self.inference.task if task is None else task
        if task not in ("res", "gres"):
            raise ValueError(f"task must be 'res' or 'gres', got {task!r}")
        results: list[Result] = []
        n = self.inference.text_chunk
        for i in range(0, len(texts), n):
            results.extend(self._query_chunk(cache, texts[i:i + n], task, keep_query_masks))
        return results

    def summary_fn(self) -> Any:
        """scene, words, mask -> packed answer summary: the decoder and the heads, no host sync
        (what a CUDA graph captures)."""
        thr = self.inference.mask_threshold

        def fn(scene: SceneFeatures, word_feats: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
            out = self.model.decode(scene, TextFeatures(word_feats, word_mask), None, keep_all_layers=False,
                                    check_values=False, fine_mask_padding=FINE_MASK_PADDING)
            return summarise(out.final, scene.sp_pad, thr)

        return fn

    def _encode_text(self, texts: list[str]) -> TextFeatures:
        """The sentences' word features; on CUDA with ``inference.cuda_graph`` and ``cuda_graph_text``
        the frozen encoder's forward is replayed from a graph (``EncoderGraphs``) for the sentences
        the text cache misses. Call under the query's inference mode and autocast."""
        enc = self.model.text_encoder
        inf = self.inference
        if not (inf.cuda_graph and inf.cuda_graph_text and self.device.type == "cuda" and enc.frozen):
            return enc(texts)
        if self._text_graphs is None:
            pad = getattr(enc.tokenizer, "pad_token_id", None)
            self._text_graphs = EncoderGraphs(enc.model, 0 if pad is None else int(pad),
                                              lambda: self._autocast(cache_enabled=False), max_tokens=enc.max_tokens)
        graphs, key = self._text_graphs, (inf.amp, inf.amp_dtype)
        return enc(texts, runner=lambda ids, att, types: graphs.run(key, ids, att, types))

    def _decoder_graphs_on(self) -> bool:
        """Whether queries replay the decoder from CUDA graphs (``inference.cuda_graph`` on CUDA)."""
        return self.inference.cuda_graph and DecoderGraphs.capturable(self.device)

    def _decode_summary(self, scene: SceneFeatures, n_superpoints: int, text: TextFeatures) -> tuple[torch.Tensor, int]:
        """The packed summary of one decoder call and the superpoint count it covers (a CUDA graph
        pads the superpoints to its bucket): by graph replay when enabled (compiled first with
        ``inference.compile_decoder``), else eagerly."""
        fn = self.summary_fn()
        dev = self.device
        inf = self.inference
        word_feats, word_mask = text.word_feats.to(dev), text.word_mask.to(dev)
        if self._decoder_graphs_on():
            if self._graphs is None:
                self._graphs = DecoderGraphs(lambda: self._autocast(cache_enabled=False), compile=inf.compile_decoder)
            key = (inf.mask_threshold, inf.amp, inf.amp_dtype)
            out = self._graphs.run(key, fn, scene, word_feats, word_mask)
            if out is not None:
                return out
        return fn(scene, word_feats, word_mask), n_superpoints

    def _query_chunk(self, cache: SceneCache, texts: list[str], task: str, keep_query_masks: bool = False) -> list[Result]:
        dev = self.device
        inf = self.inference
        t0 = sync_time(dev)
        T, S = len(texts), cache.n_superpoints
        probs: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        with torch.inference_mode(), self._autocast():
            text = self._encode_text(texts)
            t1 = sync_time(dev)
            for scene in (cache.scene, *cache.views):
                with self._decode_lock:  # a graph's static output must be copied before the next replay
                    summary, Sb = self._decode_summary(scene, S, text)
                    host = summary.cpu().numpy()  # the one device -> host copy per view
                prob, on = unpack_summary(host, T, Sb)
                probs.append(prob)
                masks.append(on[..., :S])  # beyond S: a CUDA graph's padding (never on)
        t2 = time.perf_counter()
        weights = cache.sp_weights
        results = []
        for t, text_t in enumerate(texts):
            groups = group_queries([p[t] for p in probs], [m[t] for m in masks], weights,
                                   inf.candidates, inf.merge_iou)
            res = apply_checks(answer(cache, text_t, task, groups, inf.gres_min_points), cache, inf)
            if keep_query_masks:  # views one after the other: row v * Q + q, as Candidate.members
                res.query_masks = np.concatenate([m[t] for m in masks])
                res.query_probs = np.concatenate([p[t] for p in probs])
            results.append(res)
        t3 = time.perf_counter()
        timings = {"text": (t1 - t0) * 1e3, "decoder": (t2 - t1) * 1e3, "post": (t3 - t2) * 1e3,
                   "total": (t3 - t0) * 1e3}
        for r in results:
            r.timings_ms = dict(timings)
        return results
