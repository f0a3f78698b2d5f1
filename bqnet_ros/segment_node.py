"""ROS 2 node: answers referring sentences against the newest point-cloud map with BQNet.

Threading: subscription callbacks only enqueue (the map: latest wins, a newer map replaces a
queued one; sentences: a bounded deque whose overflow is counted, logged and answered with
``found=false``). One worker thread owns the ``Segmenter``: it prepares each new map once
(``Segmenter.prepare``), then answers queued sentences in batches against the newest prepared
map (``Segmenter.query``). A sentence that arrives before any map waits for one. Every sentence
gets exactly one ``~/result``; the node never dies on a message.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, PointStamped
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header, String
from visualization_msgs.msg import MarkerArray

from bqnet_ros.conversions import numpy_to_pointcloud2, pointcloud2_to_numpy
from bqnet_ros.interfaces import Interfaces, load_interfaces
from bqnet_ros.markers import MarkerStyle, result_markers

__all__ = [
    "SegmentNode",
    "NodeParams",
    "NodeStats",
    "ParamSpec",
    "PARAMS",
    "StartupError",
    "resolve_device",
    "resolve_model_file",
    "main",
]

DEFAULT_CHECKPOINT = "models/bqnet_tiny_synth.pth"
DEFAULT_MODEL_CONFIG = "config/tiny.yaml"
# Characters of a sentence handed to the model; the tokenizer keeps far fewer tokens anyway
# (78 by default), this only bounds the tokenizer's work on absurd inputs.
MAX_MODEL_TEXT_CHARS = 2000
WARNINGS_KEPT = 500  # warnings/errors remembered in NodeStats (all of them are logged)


class StartupError(RuntimeError):
    """The node cannot start (bad parameter, missing or unloadable checkpoint)."""


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter: default, description, whether it may change at run time."""

    name: str
    default: Any
    description: str
    dynamic: bool = False
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("map_topic", "/map_cloud", "PointCloud2 map to segment (x, y, z required; rgb optional)."),
    ParamSpec("text_topic", "/referring_text", "std_msgs/String: one referring sentence per message."),
    ParamSpec("device", "cuda", "torch device; 'cuda' falls back to 'cpu' with a warning when no GPU is present."),
    ParamSpec("checkpoint", "", "Model checkpoint (.pth). Empty: models/bqnet_tiny_synth.pth when present, "
              "else a random-init model from model_config if allow_untrained, else a fatal error."),
    ParamSpec("model_config", DEFAULT_MODEL_CONFIG, "Model config YAML for the untrained (random-init) model."),
    ParamSpec("allow_untrained", False, "Allow a randomly initialised model when no checkpoint is found "
              "(answers are meaningless; for tests and plumbing only)."),
    ParamSpec("seed", 0, "Seed of the random init (untrained model) and of map downsampling.",
              int_range=(0, 2**31 - 1)),
    ParamSpec("task", "res", "'res': the one best object; 'gres': zero, one or several objects.", dynamic=True),
    ParamSpec("score_threshold", 0.0, "Objects scoring below this are dropped; none left means found=false.",
              dynamic=True, float_range=(0.0, 1.0)),
    ParamSpec("voxel_size", 0.0, "Voxel edge in metres; 0 = the one the model was trained with (its "
              "checkpoint's config: 0.04 for the shipped demo model, 0.02 = the paper's scale 50). Another "
              "value overrides it, with a warning.", float_range=(0.0, 1.0)),
    ParamSpec("tta_rotations", 0, "Test-time augmentation: answer from this many copies of the map turned "
              "about the vertical axis (prepare and query cost about that many times more); 0 = the model's "
              "own setting (4 for the shipped demo model), 1 = off.", int_range=(0, 64)),
    ParamSpec("max_points", 1_000_000, "Maps with more finite points are randomly downsampled to this many "
              "(with a warning); 0 = no limit.", int_range=(0, 2**31 - 1)),
    ParamSpec("text_queue_size", 32, "Sentences waiting for the worker; beyond this the oldest is dropped "
              "(counted, logged, answered with found=false).", int_range=(1, 100_000)),
    ParamSpec("max_batch", 8, "Queued sentences answered together in one query.", int_range=(1, 1024)),
    ParamSpec("qos_depth", 10, "History depth of the publishers (the text subscription keeps all: "
              "overflow is handled by text_queue_size).",
              int_range=(1, 10_000)),
    ParamSpec("map_qos_durability", "transient_local", "Map subscription durability: 'transient_local' "
              "(receives a latched map) or 'volatile'."),
    ParamSpec("map_qos_reliability", "reliable", "Map subscription reliability: 'reliable' or 'best_effort'."),
    ParamSpec("publish_markers", True, "Publish RViz markers on ~/markers.", dynamic=True),
    ParamSpec("marker_lifetime", 0.0, "Marker lifetime in seconds (0: until the next result).",
              dynamic=True, float_range=(0.0, 3600.0)),
)
_SPEC = {p.name: p for p in PARAMS}


@dataclass
class NodeParams:
    """The node's parameters, validated; see PARAMS for their meaning."""

    map_topic: str = "/map_cloud"
    text_topic: str = "/referring_text"
    device: str = "cuda"
    checkpoint: str = ""
    model_config: str = DEFAULT_MODEL_CONFIG
    allow_untrained: bool = False
    seed: int = 0
    task: str = "res"
    score_threshold: float = 0.0
    voxel_size: float = 0.0
    tta_rotations: int = 0
    max_points: int = 1_000_000
    text_queue_size: int = 32
    max_batch: int = 8
    qos_depth: int = 10
    map_qos_durability: str = "transient_local"
    map_qos_reliability: str = "reliable"
    publish_markers: bool = True
    marker_lifetime: float = 0.0

    def __post_init__(self) -> None:
        for name in ("map_topic", "text_topic"):
            if not getattr(self, name).strip():
                raise ValueError(f"parameter {name} must not be empty")
        if self.map_topic == self.text_topic:
            raise ValueError(f"map_topic and text_topic are the same topic {self.map_topic!r}")
        if self.task not in ("res", "gres"):
            raise ValueError(f"parameter task must be 'res' or 'gres', got {self.task!r}")
        if self.map_qos_durability not in ("transient_local", "volatile"):
            raise ValueError("parameter map_qos_durability must be 'transient_local' or 'volatile', "
                             f"got {self.map_qos_durability!r}")
        if self.map_qos_reliability not in ("reliable", "best_effort"):
            raise ValueError("parameter map_qos_reliability must be 'reliable' or 'best_effort', "
                             f"got {self.map_qos_reliability!r}")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"parameter score_threshold must be in [0, 1], got {self.score_threshold}")
        if not (math.isfinite(self.voxel_size) and self.voxel_size >= 0):
            raise ValueError(f"parameter voxel_size must be >= 0 (0 = the model's own), got {self.voxel_size}")
        for name in ("text_queue_size", "max_batch", "qos_depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"parameter {name} must be >= 1, got {getattr(self, name)}")
        if self.tta_rotations < 0:
            raise ValueError(f"parameter tta_rotations must be >= 0 (0 = the model's own), got {self.tta_rotations}")
        if self.max_points < 0:
            raise ValueError(f"parameter max_points must be >= 0 (0 = no limit), got {self.max_points}")
        if self.marker_lifetime < 0:
            raise ValueError(f"parameter marker_lifetime must be >= 0, got {self.marker_lifetime}")


@dataclass
class NodeStats:
    """Counters of what the node did, for tests and diagnostics."""

    maps_received: int = 0
    maps_replaced: int = 0  # superseded by a newer map before the worker took them
    maps_rejected: int = 0  # malformed: logged, the previous map stays
    maps_prepared: int = 0
    maps_downsampled: int = 0
    sentences_received: int = 0
    sentences_dropped: int = 0  # text queue overflow
    sentences_empty: int = 0
    sentences_answered: int = 0  # answered by the model
    results_published: int = 0
    errors: int = 0
    warnings: deque[str] = field(default_factory=lambda: deque(maxlen=WARNINGS_KEPT))  # the latest ones


class SegmenterLike(Protocol):
    """The part of ``bqnet_model.pipeline.Segmenter`` the node uses."""

    def prepare(self, xyz: np.ndarray, rgb: np.ndarray | None) -> Any: ...

    def query(self, cache: Any, texts: list[str], task: str) -> list[Any]: ...


@dataclass
class _Sentence:
    text: str
    stamp: Time  # node clock at receipt
    t_received: float  # time.monotonic()


@dataclass
class _MapJob:
    msg: PointCloud2
    t_received: float


@dataclass
class _PreparedMap:
    """A map the worker prepared: the model's cache plus what maps its indices back."""

    header: Header
    version: int
    num_points: int  # points in the received message (width * height)
    cache: Any = None  # None: nothing to segment (see empty_reason)
    index: np.ndarray | None = None  # int64 (M,), rows of the received cloud given to the model
    xyz: np.ndarray | None = None  # float32 (M, 3) given to the model
    rgb: np.ndarray | None = None  # uint8 (M, 3) or None
    prepare_ms: float = 0.0
    empty_reason: str = ""


def resolve_device(requested: str) -> tuple[str, str | None]:
    """(device to use, warning or None): 'cuda*' without a GPU becomes 'cpu'. Raises ValueError
    for a string torch does not understand."""
    import torch

    name = requested.strip()
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"parameter device {requested!r} is not a torch device ({exc})") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        return "cpu", f"device {requested!r} requested but CUDA is not available: running on CPU (slow)"
    return name, None


def _search_roots() -> list[Path]:
    """Where relative model paths are looked up: cwd, the checkout (editable install), the
    package share folder (a colcon install)."""
    roots = [Path.cwd(), Path(__file__).resolve().parents[1]]
    try:
        from ament_index_python.packages import get_package_share_directory

        roots.append(Path(get_package_share_directory("bqnet_ros")))
    except (ImportError, LookupError, ValueError, OSError):  # not installed / no AMENT_PREFIX_PATH
        pass
    return roots


def resolve_model_file(path: str) -> tuple[Path | None, list[Path]]:
    """(existing file or None, the candidates tried) for an absolute or relative path."""
    p = Path(path).expanduser()
    candidates = [p] if p.is_absolute() else [r / p for r in _search_roots()]
    for c in candidates:
        if c.is_file():
            return c.resolve(), candidates
    return None, candidates


def _qos(depth: int, reliable: bool = True, transient: bool = False) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if transient else DurabilityPolicy.VOLATILE,
    )


def _ms(seconds: float) -> float:
    return float(seconds * 1000.0)


def _timing(timings: dict[str, float], *names: str) -> float:
    """First present key of a Result's timings_ms (the pipeline names stages, not us)."""
    for n in names:
        if n in timings:
            return float(timings[n])
    return 0.0


class SegmentNode(Node):
    """Subscribes to a map and to sentences, publishes the referred object(s)."""

    def __init__(
        self,
        *,
        node_name: str = "segment_node",
        segmenter: SegmenterLike | None = None,
        **node_kwargs: Any,
    ) -> None:
        """``segmenter``: use this model instead of loading one from the parameters (embedding
        the node in another program). Raises StartupError when the node cannot work."""
        super().__init__(node_name, **node_kwargs)
        try:
            self._setup(segmenter)
        except BaseException:
            super().destroy_node()  # no half-built node left in the context
            raise

    def _setup(self, segmenter: SegmenterLike | None) -> None:
        self.stats = NodeStats()
        self._declare_parameters()
        try:
            self.params = self._read_parameters()
        except (ValueError, TypeError) as exc:
            raise StartupError(str(exc)) from exc
        self.device = "cpu"
        self.model_source = "given"
        if segmenter is None:
            segmenter = self._load_segmenter()
        self._segmenter = segmenter
        self._interfaces: Interfaces | None = load_interfaces()
        if self._interfaces is None:
            self._warn("bqnet_ros_interfaces is not built (run tools/build_msgs.sh): ~/result is published "
                       "as a JSON std_msgs/String on ~/result_json instead")

        # Shared state between callbacks and the worker; the condition's lock is re-entrant so a
        # caller holding it (tests) can enqueue several messages atomically.
        self._cv = threading.Condition(threading.RLock())
        self._map_job: _MapJob | None = None
        self._texts: deque[_Sentence] = deque()
        self._rejected: list[tuple[_Sentence, str]] = []
        self._prepared: _PreparedMap | None = None
        self._map_version = 0
        self._stop = False
        self._busy = False

        p = self.params
        out_qos = _qos(p.qos_depth)
        self._pub_cloud = self.create_publisher(PointCloud2, "~/target_cloud", out_qos)
        self._pub_centroid = self.create_publisher(PointStamped, "~/target_centroid", out_qos)
        if self._interfaces is not None:
            self._pub_result = self.create_publisher(self._interfaces.ReferringSegmentation, "~/result", out_qos)
        else:
            self._pub_result = self.create_publisher(String, "~/result_json", out_qos)
        self._pub_markers = self.create_publisher(MarkerArray, "~/markers", out_qos)
        map_qos = _qos(1, reliable=p.map_qos_reliability == "reliable",
                       transient=p.map_qos_durability == "transient_local")
        self._sub_map = self.create_subscription(PointCloud2, p.map_topic, self._on_map, map_qos)
        # KEEP_ALL: DDS never drops a sentence silently; the node's bounded queue (counted) does.
        text_qos = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.VOLATILE)
        self._sub_text = self.create_subscription(String, p.text_topic, self._on_text, text_qos)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._worker = threading.Thread(target=self._run, name="bqnet_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"ready: map {p.map_topic} ({p.map_qos_durability}, {p.map_qos_reliability}), text {p.text_topic}, "
            f"task {p.task}, device {self.device}, model {self.model_source}"
        )

    # ----------------------------------------------------------------- parameters
    def _declare_parameters(self) -> None:
        for spec in PARAMS:
            desc = ParameterDescriptor(description=spec.description, read_only=not spec.dynamic)
            if spec.int_range is not None:
                desc.integer_range = [IntegerRange(from_value=spec.int_range[0], to_value=spec.int_range[1], step=0)]
            if spec.float_range is not None:
                desc.floating_point_range = [
                    FloatingPointRange(from_value=spec.float_range[0], to_value=spec.float_range[1], step=0.0)
                ]
            self.declare_parameter(spec.name, spec.default, desc)

    def _read_parameters(self) -> NodeParams:
        values: dict[str, Any] = {}
        for spec in PARAMS:
            v = self.get_parameter(spec.name).value
            expected = type(spec.default)
            if expected is float and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            if not isinstance(v, expected) or (expected is int and isinstance(v, bool)):
                raise TypeError(f"parameter {spec.name} must be {expected.__name__}, got {type(v).__name__} {v!r}")
            values[spec.name] = v
        return NodeParams(**values)

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Run-time changes of the dynamic parameters (task, score_threshold, markers)."""
        changes: dict[str, Any] = {}
        for prm in params:
            spec = _SPEC.get(prm.name)
            if spec is None:
                continue
            if not spec.dynamic:
                return SetParametersResult(successful=False, reason=f"{prm.name} is read-only")
            changes[prm.name] = prm.value
        try:
            merged = {**self.params.__dict__, **changes}
            new = NodeParams(**merged)
        except (ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        with self._cv:
            self.params = new
        return SetParametersResult(successful=True)

    # ----------------------------------------------------------------- model
    def _load_segmenter(self) -> SegmenterLike:
        p = self.params
        try:
            device, warning = resolve_device(p.device)
        except ValueError as exc:
            raise StartupError(str(exc)) from exc
        if warning:
            self._warn(warning)
        self.device = device
        ckpt_name = p.checkpoint.strip() or DEFAULT_CHECKPOINT
        ckpt, tried = resolve_model_file(ckpt_name)
        if ckpt is None and p.checkpoint.strip():
            raise StartupError(
                f"checkpoint {p.checkpoint!r} not found (looked at: {', '.join(str(t) for t in tried)})"
            )
        try:
            from bqnet_model.pipeline import Segmenter
        except ImportError as exc:  # a broken install
            raise StartupError(f"cannot import bqnet_model.pipeline: {exc}") from exc
        if ckpt is not None:
            try:
                seg = Segmenter.from_checkpoint(str(ckpt), device=device)
            except Exception as exc:  # corrupt file, config/key mismatch: fatal, with the reason
                raise StartupError(f"cannot load checkpoint {ckpt}: {type(exc).__name__}: {exc}") from exc
            self.model_source = str(ckpt)
        elif p.allow_untrained:
            cfg, cfg_tried = resolve_model_file(p.model_config)
            if cfg is None:
                raise StartupError(
                    f"model_config {p.model_config!r} not found (looked at: {', '.join(str(t) for t in cfg_tried)})"
                )
            self._warn(
                "!!! NO TRAINED MODEL: no checkpoint given and "
                f"{DEFAULT_CHECKPOINT} not found; using a RANDOMLY INITIALISED model from {cfg} "
                "(allow_untrained is true). Its answers are meaningless. !!!"
            )
            try:
                seg = Segmenter.from_config(str(cfg), device=device, seed=p.seed)
            except Exception as exc:
                raise StartupError(f"cannot build a model from {cfg}: {type(exc).__name__}: {exc}") from exc
            self.model_source = f"untrained ({cfg})"
        else:
            raise StartupError(
                f"no checkpoint: parameter checkpoint is empty and {DEFAULT_CHECKPOINT} was not found "
                f"(looked at: {', '.join(str(t) for t in tried)}). Set checkpoint:=<file.pth>, or "
                "allow_untrained:=true for a random-init model (plumbing tests only)."
            )
        self._configure_segmenter(seg)
        return seg

    def _configure_segmenter(self, seg: Any) -> None:
        """Hand the node's seed (and voxel size, when set) to the model's inference config. The
        node cleans and downsamples to max_points itself (it maps indices back to the received
        cloud), so the model's own limit is lifted to the node's. A model runs best at the voxel
        size it was trained with, so ``voxel_size`` 0 keeps the checkpoint's."""
        inf = getattr(getattr(seg, "cfg", None), "inference", None)
        if inf is None:
            return
        p = self.params
        if p.voxel_size > 0 and hasattr(inf, "voxel_size"):
            trained = float(inf.voxel_size)
            if abs(trained - float(p.voxel_size)) > 1e-9:
                self._warn(f"voxel_size {p.voxel_size} m overrides the {trained} m the model was trained with: "
                           "expect worse answers (set voxel_size 0 to use the model's)")
            inf.voxel_size = float(p.voxel_size)
        for name, value in (("seed", int(p.seed)), ("max_points", int(p.max_points or 2**31 - 1))):
            if hasattr(inf, name):
                setattr(inf, name, value)
        if p.tta_rotations > 0 and hasattr(inf, "tta_rotations"):
            inf.tta_rotations = int(p.tta_rotations)
        if hasattr(inf, "voxel_size"):
            self.get_logger().info(f"model voxel size {inf.voxel_size} m, "
                                   f"test-time rotations {getattr(inf, 'tta_rotations', 1)}")

    # ----------------------------------------------------------------- logging helpers
    def _warn(self, text: str) -> None:
        self.stats.warnings.append(text)
        self.get_logger().warning(text)

    def _error(self, text: str) -> None:
        self.stats.errors += 1
        self.stats.warnings.append(text)
        self.get_logger().error(text)

    # ----------------------------------------------------------------- callbacks (enqueue only)
    def _on_map(self, msg: PointCloud2) -> None:
        with self._cv:
            self.stats.maps_received += 1
            if self._map_job is not None:
                self.stats.maps_replaced += 1
                self.get_logger().info(
                    f"a newer map replaced one not yet prepared ({self.stats.maps_replaced} replaced so far)"
                )
            self._map_job = _MapJob(msg, time.monotonic())
            self._cv.notify_all()

    def _on_text(self, msg: String) -> None:
        sentence = _Sentence(str(msg.data), self.get_clock().now().to_msg(), time.monotonic())
        with self._cv:
            self.stats.sentences_received += 1
            if not sentence.text.strip():
                self.stats.sentences_empty += 1
                self._warn("received an empty sentence: answered with found=false (reason 'empty text')")
                self._rejected.append((sentence, "empty text"))
            else:
                if len(self._texts) >= self.params.text_queue_size:
                    old = self._texts.popleft()
                    self.stats.sentences_dropped += 1
                    self._warn(
                        f"text queue full ({self.params.text_queue_size}): dropped the oldest sentence "
                        f"{old.text[:60]!r} ({self.stats.sentences_dropped} dropped so far)"
                    )
                    self._rejected.append((old, "dropped: text queue full"))
                self._texts.append(sentence)
                if self._prepared is None and self._map_job is None:
                    self.get_logger().info("sentence queued until a map arrives")
            self._cv.notify_all()

    # ----------------------------------------------------------------- worker
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop and not self._has_work():
                    self._busy = False
                    self._cv.notify_all()
                    self._cv.wait()
                if self._stop:
                    self._busy = False
                    self._cv.notify_all()
                    return
                self._busy = True
                rejected, self._rejected = self._rejected, []
                job, self._map_job = self._map_job, None
                batch: list[_Sentence] = []
                if job is None:
                    n = min(len(self._texts), self.params.max_batch)
                    batch = [self._texts.popleft() for _ in range(n)]
                params = self.params
                prepared = self._prepared
            try:
                for sentence, reason in rejected:
                    self._publish_not_found(sentence, reason, prepared, params)
                if job is not None:
                    self._prepare(job)
                elif batch:
                    self._answer(batch, prepared, params)
            except Exception as exc:  # the worker never dies on a message
                self._error(f"worker: {type(exc).__name__}: {exc}")

    def _has_work(self) -> bool:
        return bool(self._rejected) or self._map_job is not None or (
            bool(self._texts) and self._prepared is not None
        )

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until nothing is queued and the worker is idle (or timeout); for tests/tools."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._busy or self._has_work():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def _prepare(self, job: _MapJob) -> None:
        msg = job.msg
        header = Header(frame_id=msg.header.frame_id, stamp=msg.header.stamp)
        try:
            arrays = pointcloud2_to_numpy(msg)
        except (ValueError, TypeError) as exc:
            with self._cv:
                self.stats.maps_rejected += 1
            keep = "the previous map stays in use" if self._prepared is not None else "no map yet"
            self._error(f"rejected a malformed map: {exc} ({keep})")
            return
        n = arrays.n_points
        with self._cv:
            self._map_version += 1
            version = self._map_version
        prepared = _PreparedMap(header=header, version=version, num_points=n)
        t0 = time.monotonic()
        if not header.frame_id:
            self._warn("map has an empty header.frame_id: results will carry an empty frame too")
        if n == 0:
            prepared.empty_reason = "empty map"
            self._warn("received an empty map (0 points): sentences are answered with found=false")
        else:
            from bqnet_model.pointcloud import clean

            max_points = self.params.max_points or None
            try:
                cleaned = clean(arrays.xyz, arrays.rgb, max_points=max_points, seed=self.params.seed)
            except ValueError as exc:  # e.g. every point NaN/Inf
                cleaned = None
                prepared.empty_reason = "empty map"
                self._warn(f"map has no usable point ({exc}): sentences are answered with found=false")
            if cleaned is not None:
                if cleaned.n_nonfinite:
                    self.get_logger().info(f"dropped {cleaned.n_nonfinite} NaN/Inf points of {n}")
                if cleaned.n_downsampled:
                    with self._cv:
                        self.stats.maps_downsampled += 1
                    self._warn(
                        f"map has {n - cleaned.n_nonfinite - cleaned.n_duplicates} points, more than max_points "
                        f"{self.params.max_points}: randomly downsampled to {len(cleaned.index)}"
                    )
                prepared.cache = self._segmenter.prepare(cleaned.xyz, cleaned.rgb)
                prepared.index, prepared.xyz, prepared.rgb = cleaned.index, cleaned.xyz, cleaned.rgb
        prepared.prepare_ms = _ms(time.monotonic() - t0)
        with self._cv:
            self._prepared = prepared
            self.stats.maps_prepared += 1
        self.get_logger().info(
            f"map v{version} ready: {n} points, frame '{header.frame_id}', prepared in {prepared.prepare_ms:.0f} ms"
        )

    def _answer(self, batch: list[_Sentence], prepared: _PreparedMap | None, params: NodeParams) -> None:
        if prepared is None:  # cannot happen (the worker waits for a map); keep the sentences
            with self._cv:
                self._texts.extendleft(reversed(batch))
            return
        if prepared.cache is None:
            for s in batch:
                self._publish_not_found(s, prepared.empty_reason or "empty map", prepared, params)
            return
        texts = []
        for s in batch:
            t = s.text
            if len(t) > MAX_MODEL_TEXT_CHARS:
                self._warn(f"sentence of {len(t)} characters cut to {MAX_MODEL_TEXT_CHARS} before tokenizing")
                t = t[:MAX_MODEL_TEXT_CHARS]
            texts.append(t)
        t_start = time.monotonic()
        try:
            results = self._segmenter.query(prepared.cache, texts, task=params.task)
        except Exception as exc:
            self._error(f"query failed for {len(texts)} sentence(s): {type(exc).__name__}: {exc}")
            for s in batch:
                self._publish_not_found(s, f"error: {type(exc).__name__}: {exc}"[:200], prepared, params)
            return
        if len(results) != len(batch):
            self._error(f"model returned {len(results)} results for {len(batch)} sentences")
            for s in batch:
                self._publish_not_found(s, "error: model returned a wrong number of results", prepared, params)
            return
        with self._cv:
            self.stats.sentences_answered += len(batch)
        for s, r in zip(batch, results):
            try:
                self._publish_result(s, r, prepared, params, t_start)
            except Exception as exc:
                self._error(f"publishing the result of {s.text[:60]!r} failed: {type(exc).__name__}: {exc}")
                self._publish_not_found(s, f"error: {type(exc).__name__}", prepared, params)

    # ----------------------------------------------------------------- publishing
    def _select(self, result: Any, prepared: _PreparedMap, threshold: float) -> list[tuple[Any, np.ndarray]]:
        """Objects at or above the threshold, best first, with indices into the received cloud."""
        assert prepared.index is not None
        m = len(prepared.index)
        kept = []
        for obj in result.objects:
            if float(obj.score) < threshold:
                continue
            idx = np.asarray(obj.point_indices, dtype=np.int64).reshape(-1)
            if idx.size and (idx.min() < 0 or idx.max() >= m):
                raise ValueError(f"model returned point indices outside [0, {m})")
            if idx.size == 0:
                continue
            kept.append((obj, idx))
        kept.sort(key=lambda t: -float(t[0].score))
        return kept

    def _publish_result(
        self, s: _Sentence, r: Any, prepared: _PreparedMap, params: NodeParams, t_start: float
    ) -> None:
        kept = self._select(r, prepared, params.score_threshold)
        index = prepared.index
        assert index is not None and prepared.xyz is not None
        found = bool(kept)
        if found:
            reason = ""
        elif r.objects:
            reason = f"no object above score_threshold {params.score_threshold:g}"
        else:
            reason = "no target"
        timings = dict(getattr(r, "timings_ms", {}) or {})
        queue_ms = _ms(t_start - s.t_received)

        # Union of the objects' points; each point's instance is its best object.
        if kept:
            local = np.concatenate([idx for _, idx in kept])
            inst = np.concatenate([np.full(idx.size, k, np.int32) for k, (_, idx) in enumerate(kept)])
            local_u, first = np.unique(local, return_index=True)
            inst_u = inst[first]
        else:
            local_u = np.zeros(0, np.int64)
            inst_u = np.zeros(0, np.int32)
        xyz = prepared.xyz[local_u]
        rgb = prepared.rgb[local_u] if prepared.rgb is not None else None
        map_idx = np.sort(index[local_u])

        objects = []
        for obj, idx in kept:
            objects.append(
                dict(
                    score=float(obj.score),
                    centroid=np.asarray(obj.centroid, np.float64).reshape(3),
                    box_min=np.asarray(obj.box_min, np.float64).reshape(3),
                    box_max=np.asarray(obj.box_max, np.float64).reshape(3),
                    indices=np.sort(index[idx]),
                )
            )
        header = prepared.header
        cloud = numpy_to_pointcloud2(
            xyz, rgb, frame_id=header.frame_id, stamp=header.stamp, extra_fields={"instance": inst_u}
        )
        self._pub_cloud.publish(cloud)
        if found:
            c = objects[0]["centroid"]
            self._pub_centroid.publish(
                PointStamped(header=header, point=Point(x=float(c[0]), y=float(c[1]), z=float(c[2])))
            )
        if params.publish_markers:
            style = MarkerStyle(lifetime_s=params.marker_lifetime)
            targets = [_MarkerObject(o["score"], o["centroid"], o["box_min"], o["box_max"]) for o in objects]
            self._pub_markers.publish(
                result_markers(targets, frame_id=header.frame_id, stamp=header.stamp, text=s.text, style=style)
            )
        latencies = dict(
            prepare_ms=prepared.prepare_ms,
            queue_ms=queue_ms,
            text_ms=_timing(timings, "text_ms", "text", "text_encoder", "encode_text"),
            decoder_ms=_timing(timings, "decoder_ms", "decoder", "decode"),
            post_ms=_timing(timings, "post_ms", "post", "postprocess"),
        )
        self._publish_message(s, prepared, params, found, reason, objects, map_idx, latencies)
        self.get_logger().debug(
            f"{s.text[:60]!r}: found={found} objects={len(objects)} points={map_idx.size} "
            + " ".join(f"{k}={v:.1f}" for k, v in latencies.items())
        )

    def _publish_not_found(
        self, s: _Sentence, reason: str, prepared: _PreparedMap | None, params: NodeParams
    ) -> None:
        """A found=false answer that did not need the model (empty text, dropped, empty map)."""
        latencies = dict(prepare_ms=prepared.prepare_ms if prepared else 0.0, queue_ms=0.0,
                         text_ms=0.0, decoder_ms=0.0, post_ms=0.0)
        self._publish_message(s, prepared, params, False, reason, [], np.zeros(0, np.int64), latencies)

    def _publish_message(
        self,
        s: _Sentence,
        prepared: _PreparedMap | None,
        params: NodeParams,
        found: bool,
        reason: str,
        objects: list[dict[str, Any]],
        map_idx: np.ndarray,
        latencies: dict[str, float],
    ) -> None:
        total_ms = _ms(time.monotonic() - s.t_received)
        header = prepared.header if prepared is not None else Header()
        iface = self._interfaces
        if iface is not None:
            msg = iface.ReferringSegmentation()
            msg.header = header
            msg.text = s.text
            msg.task = params.task
            msg.found = found
            msg.reason = reason
            for o in objects:
                ro = iface.ReferredObject()
                ro.score = o["score"]
                ro.centroid = Point(x=float(o["centroid"][0]), y=float(o["centroid"][1]), z=float(o["centroid"][2]))
                ro.box_min = Point(x=float(o["box_min"][0]), y=float(o["box_min"][1]), z=float(o["box_min"][2]))
                ro.box_max = Point(x=float(o["box_max"][0]), y=float(o["box_max"][1]), z=float(o["box_max"][2]))
                ro.num_points = int(o["indices"].size)
                ro.point_indices = o["indices"].astype(np.uint32)
                msg.objects.append(ro)
            msg.point_indices = map_idx.astype(np.uint32)
            msg.map_num_points = int(prepared.num_points) if prepared is not None else 0
            msg.map_version = int(prepared.version) if prepared is not None else 0
            msg.text_stamp = s.stamp
            msg.prepare_ms = float(latencies["prepare_ms"])
            msg.queue_ms = float(latencies["queue_ms"])
            msg.text_ms = float(latencies["text_ms"])
            msg.decoder_ms = float(latencies["decoder_ms"])
            msg.post_ms = float(latencies["post_ms"])
            msg.total_ms = float(total_ms)
        else:
            import json

            msg = String(data=json.dumps(dict(
                frame_id=header.frame_id, stamp=[header.stamp.sec, header.stamp.nanosec], text=s.text,
                task=params.task, found=found, reason=reason,
                objects=[dict(score=o["score"], centroid=o["centroid"].tolist(), box_min=o["box_min"].tolist(),
                              box_max=o["box_max"].tolist(), point_indices=o["indices"].tolist()) for o in objects],
                point_indices=map_idx.tolist(), map_num_points=prepared.num_points if prepared else 0,
                map_version=prepared.version if prepared else 0, total_ms=total_ms, **latencies,
            )))
        self._pub_result.publish(msg)
        with self._cv:
            self.stats.results_published += 1
        if not found:
            self.get_logger().info(f"{s.text[:60]!r}: not found ({reason})")

    # ----------------------------------------------------------------- shutdown
    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the worker (it finishes the step it is in) and wait for it."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._worker.is_alive() and threading.current_thread() is not self._worker:
            self._worker.join(timeout)

    def destroy_node(self) -> None:
        self.shutdown()
        super().destroy_node()


@dataclass
class _MarkerObject:
    score: float
    centroid: np.ndarray
    box_min: np.ndarray
    box_max: np.ndarray


def main(args: Sequence[str] | None = None) -> int:
    """Console script: run the node until Ctrl-C; exit code 1 when it cannot start."""
    rclpy.init(args=list(args) if args is not None else None)
    node: SegmentNode | None = None
    code = 0
    try:
        node = SegmentNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except StartupError as exc:
        rclpy.logging.get_logger("segment_node").fatal(f"cannot start: {exc}")
        code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
