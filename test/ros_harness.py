"""Shared helpers of the segment_node tests: a client node, maps, a controllable model.

The model is always the library's real ``Segmenter`` (config/tiny.yaml, random weights: found or
not is random, so the plumbing is tested, not the accuracy). ``GatedSegmenter`` wraps it to let a
test hold a prepare (shutdown during a prepare) or make one fail (a dropped map), which a real
map cannot do on demand.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = ROOT / "config" / "segment_node.yaml"
TINY = ROOT / "config" / "tiny.yaml"
WAIT = 60.0  # seconds: generous on a loaded 2-core machine


class GatedSegmenter:
    """The real segmenter, with ``hold`` (prepare waits until released) and ``fail_next``
    (the next prepare raises ValueError, as a prepare of a broken map does)."""

    def __init__(self, inner: Any, image_channels: int | None = None) -> None:
        """``image_channels``: report a 2D branch of this many channels (the features reach
        prepare, which records and drops them: the tiny model has no such branch)."""
        self.inner = inner
        self._cfg = inner.cfg
        if image_channels is not None:  # the inference settings stay the inner model's (the node sets them)
            import copy

            self._cfg = copy.copy(inner.cfg)
            self._cfg.model = copy.deepcopy(inner.cfg.model)
            self._cfg.model.decoder.image_channels = image_channels
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        self.fail_next = False
        self.prepare_kwargs: list[dict[str, Any]] = []

    @property
    def cfg(self) -> Any:
        return self._cfg

    @property
    def device(self) -> Any:
        return self.inner.device

    def prepare(self, xyz: np.ndarray, rgb: np.ndarray | None = None, **kwargs: Any) -> Any:
        self.entered.set()
        self.hold.wait()
        self.prepare_kwargs.append(dict(kwargs))
        if self.fail_next:
            self.fail_next = False
            raise ValueError("voxelize: test failure")
        kwargs.pop("image_features", None)  # the tiny model has no 2D branch; recorded above
        return self.inner.prepare(xyz, rgb, **kwargs)

    def query(self, cache: Any, texts: list[str], task: str | None = None) -> list[Any]:
        return self.inner.query(cache, texts, task=task)


@functools.lru_cache(maxsize=1)
def _tiny_model() -> Any:
    from bqnet_model.pipeline import Segmenter

    return Segmenter.from_config(str(TINY), device="cpu", seed=0)


def tiny_segmenter() -> Any:
    """The tiny random-weight model (built once) in a Segmenter of its own: a node writes its
    parameters (max_points, ...) into its segmenter's inference settings, which must not reach
    the next test's node."""
    import copy

    from bqnet_model.pipeline import Segmenter

    seg = _tiny_model()
    cfg = copy.copy(seg.cfg)
    cfg.inference = copy.deepcopy(seg.cfg.inference)
    return Segmenter(seg.model, cfg, "cpu")


@functools.lru_cache(maxsize=16)
def room_cloud(seed: int = 0, n_points: int = 8_000, stamp_sec: int = 100, colour: bool = True) -> tuple[Any, Any]:
    """(PointCloud2 in frame 'map', the scene) of a synthetic room (cached: treat as read-only)."""
    from builtin_interfaces.msg import Time

    from bqnet_ros.conversions import numpy_to_pointcloud2
    from bqnet_ros.play_scene import load_scene

    scene = load_scene("minimal", n_points=n_points, seed=seed)
    msg = numpy_to_pointcloud2(scene.xyz, scene.rgb if colour else None, frame_id="map",
                               stamp=Time(sec=stamp_sec, nanosec=5))
    return msg, scene


class Client:
    """Publishes maps and sentences, calls ~/segment, records everything the node publishes."""

    def __init__(self, ctx: Any, seg_node: Any, *, map_qos: Any = None, prefix: str = "/segment_node") -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PointStamped
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import PointCloud2
        from std_msgs.msg import String
        from visualization_msgs.msg import MarkerArray

        from bqnet_ros.interfaces import load_interfaces

        self.node = rclpy.create_node(f"test_client_{id(self)}", context=ctx)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        deep = QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE)
        self.iface = load_interfaces(required=True)
        self.map_pub = self.node.create_publisher(PointCloud2, seg_node.params.map_topic, map_qos or latched)
        self.text_pub = self.node.create_publisher(String, seg_node.params.text_topic, deep)
        self.segment = self.node.create_client(self.iface.Segment, f"{prefix}/segment")
        self.lock = threading.Lock()
        self.results: list[Any] = []
        self.clouds: list[Any] = []
        self.centroids: list[Any] = []
        self.markers: list[Any] = []
        self.diagnostics: list[Any] = []
        for typ, topic, store in (
            (self.iface.ReferringSegmentation, f"{prefix}/result", self.results),
            (PointCloud2, f"{prefix}/target_cloud", self.clouds),
            (PointStamped, f"{prefix}/target_centroid", self.centroids),
            (MarkerArray, f"{prefix}/markers", self.markers),
            (DiagnosticArray, "/diagnostics", self.diagnostics),
        ):
            self.node.create_subscription(typ, topic, self._recorder(store), deep)
        self.seg = seg_node

    def _recorder(self, store: list) -> Callable[[Any], None]:
        def cb(msg: Any) -> None:
            with self.lock:
                store.append(msg)
        return cb

    def counts(self) -> tuple[int, int, int, int]:
        with self.lock:
            return len(self.results), len(self.clouds), len(self.centroids), len(self.markers)

    def snapshot(self) -> tuple[int, int, int, int]:
        """counts() once every answer received so far has brought its target cloud and markers
        too (each answer publishes one of each): the start for ``answers_since``."""
        self.wait_for(lambda: (lambda c: c[0] == c[1] == c[3])(self.counts()),
                      what="a target cloud and markers for every result")
        return self.counts()

    def answers_since(self, since: tuple[int, int, int, int], n: int) -> list[tuple[Any, Any, Any]]:
        """The next ``n`` answers after ``since`` (a ``snapshot``) as (result, target cloud,
        markers); the node publishes them in the same order on each topic."""
        r0, c0, _, m0 = since
        self.wait_for(lambda: (lambda c: c[0] >= r0 + n and c[1] >= c0 + n and c[3] >= m0 + n)(self.counts()),
                      what=f"{n} answer(s) with target cloud and markers")
        with self.lock:
            return list(zip(self.results[r0:r0 + n], self.clouds[c0:c0 + n], self.markers[m0:m0 + n]))

    def status(self, name: str) -> tuple[Any, dict[str, str]]:
        """(status, its values as a dict) of the first DiagnosticStatus of node ``name`` published
        from now on (other nodes of the test session publish on /diagnostics too)."""
        with self.lock:
            start = len(self.diagnostics)

        def first() -> Any:
            with self.lock:
                return next((st for arr in self.diagnostics[start:] for st in arr.status
                             if st.name.startswith(f"{name}:")), None)
        self.wait_for(lambda: first() is not None, what=f"/diagnostics of {name}")
        st = first()
        return st, {kv.key: kv.value for kv in st.values}

    def wait_for(self, cond: Callable[[], bool], timeout: float = WAIT, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; stats {self.seg.stats}")
            time.sleep(0.02)

    def wait_connected(self) -> None:
        self.wait_for(lambda: self.text_pub.get_subscription_count() > 0
                      and self.map_pub.get_subscription_count() > 0, what="discovery")
        self.wait_for(lambda: self.seg._pub_result.get_subscription_count() > 0
                      and self.seg._pub_cloud.get_subscription_count() > 0
                      and self.seg._pub_markers.get_subscription_count() > 0, what="result subscriptions")
        assert self.segment.wait_for_service(timeout_sec=WAIT), "~/segment not available"

    def publish_map(self, msg: Any) -> None:
        """Publish a map and wait until the node has taken it (prepared or dropped)."""
        st = self.seg.stats
        before = st.maps_prepared + st.maps_rejected + st.maps_failed
        self.map_pub.publish(msg)
        self.wait_for(lambda: st.maps_prepared + st.maps_rejected + st.maps_failed > before,
                      what="the map to be processed")
        assert self.seg.wait_idle(WAIT)

    def use_map(self, msg: Any) -> None:
        """Make ``msg`` the node's current map, publishing it only when it is not already."""
        prepared = self.seg.worker.prepared
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.width * msg.height)
        if prepared is not None and (prepared.header.stamp.sec, prepared.header.stamp.nanosec,
                                     prepared.num_points) == key:
            return
        self.publish_map(msg)

    def ask(self, texts: list[str]) -> list[Any]:
        """Send sentences over the topic, return their results (in arrival order)."""
        from std_msgs.msg import String

        start = len(self.results)
        for t in texts:
            self.text_pub.publish(String(data=t))
        self.wait_for(lambda: len(self.results) >= start + len(texts), what=f"{len(texts)} result(s)")
        with self.lock:
            return self.results[start:start + len(texts)]

    def call(self, text: str, request_id: str = "", task: str = "", timeout: float = WAIT) -> Any:
        """Call ~/segment, return its result."""
        fut = self.segment.call_async(self.iface.Segment.Request(text=text, request_id=request_id, task=task))
        self.wait_for(fut.done, timeout, what=f"the ~/segment answer to {text!r}")
        return fut.result().result


@contextmanager
def spinning(ctx: Any, node: Any, connect: bool = True, **client_kwargs: Any) -> Iterator[Client]:
    """A test client beside ``node``, both on a 3-thread executor in a background thread (one
    thread may wait in a service call); connected when this yields (``connect``: a lifecycle node
    before configure has nothing to connect to), destroyed after."""
    from rclpy.executors import MultiThreadedExecutor

    client = Client(ctx, node, **client_kwargs)
    ex = MultiThreadedExecutor(num_threads=3, context=ctx)
    ex.add_node(node)
    ex.add_node(client.node)
    th = threading.Thread(target=ex.spin, daemon=True)
    th.start()
    try:
        if connect:
            client.wait_connected()
        yield client
    finally:
        node.destroy_node()
        ex.shutdown()
        th.join(10)
        client.node.destroy_node()


def copy_msg(msg: Any) -> Any:
    """An independent copy of a message (serialize + deserialize)."""
    from rclpy.serialization import deserialize_message, serialize_message

    return deserialize_message(serialize_message(msg), type(msg))


def check_result(res: Any, map_msg: Any, text: str) -> None:
    """Every field of one result is consistent with the map and with itself."""
    n = map_msg.width * map_msg.height
    assert res.text == text
    assert res.task in ("res", "gres")
    assert res.request_id
    assert res.header.frame_id == map_msg.header.frame_id
    assert (res.header.stamp.sec, res.header.stamp.nanosec) == (map_msg.header.stamp.sec, map_msg.header.stamp.nanosec)
    assert res.map_num_points == n
    idx = np.asarray(res.point_indices, dtype=np.int64)
    assert (np.diff(idx) > 0).all(), "union indices sorted and unique"
    assert idx.size == 0 or (idx.min() >= 0 and idx.max() < n)
    assert res.found == (len(res.objects) > 0) == (idx.size > 0)
    assert (res.reason == "") == res.found
    assert 0.0 <= res.score <= 1.0
    scores = [o.score for o in res.objects]
    assert scores == sorted(scores, reverse=True)
    if res.objects:
        assert res.score == scores[0]
    union = set()
    for o in res.objects:
        oi = np.asarray(o.point_indices, dtype=np.int64)
        assert o.num_points == oi.size > 0
        assert (np.diff(oi) > 0).all() and oi.max() < n
        lo = np.array([o.box_min.x, o.box_min.y, o.box_min.z])
        hi = np.array([o.box_max.x, o.box_max.y, o.box_max.z])
        c = np.array([o.centroid.x, o.centroid.y, o.centroid.z])
        assert (lo <= c + 1e-4).all() and (c <= hi + 1e-4).all()
        union |= set(oi.tolist())
    assert union == set(idx.tolist())
    for name in ("prepare_ms", "queue_ms", "text_ms", "decoder_ms", "post_ms", "total_ms"):
        v = getattr(res, name)
        assert np.isfinite(v) and v >= 0, name
    assert res.total_ms >= res.queue_ms


def check_cleared(answer: tuple[Any, Any, Any]) -> None:
    """A not-found answer (result, target cloud, markers) clears RViz: an empty target cloud and a
    marker array holding only the DELETEALL."""
    from visualization_msgs.msg import Marker

    res, cloud, markers = answer
    assert not res.found, (res.request_id, res.reason)
    assert cloud.width * cloud.height == 0 and len(cloud.data) == 0, (res.reason, cloud.width)
    assert [m.action for m in markers.markers] == [Marker.DELETEALL], res.reason
    assert cloud.header.frame_id == markers.markers[0].header.frame_id == res.header.frame_id
