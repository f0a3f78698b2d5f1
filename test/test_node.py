"""segment_node with real rclpy: plumbing, parameters, robustness, launch/RViz files, play_scene.

One node (a randomly initialised tiny model: found / not found is random, so the plumbing is
tested, not the accuracy) runs in-process on a private ROS domain, started with
``--params-file config/segment_node.yaml`` plus ``test/data`` overrides, as the launch file
does. A client node publishes maps and sentences and collects every output topic.
"""

from __future__ import annotations

import ast
import functools
import os
import py_compile
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = ROOT / "config" / "segment_node.yaml"
SHIPPED_MODEL = ROOT / "models" / "bqnet_tiny_synth.pth"
N_POINTS = 20_000  # the main test map: small, to keep CPU time low
SMALL = 8_000  # the robustness tests' map
# Test overrides on top of the shipped file: the untrained tiny model, a small text queue (the
# burst test overflows it), a small max_points (every map is downsampled: indices must map back).
TEST_OVERRIDES: dict[str, Any] = {
    "allow_untrained": True,
    "model_config": "config/tiny.yaml",
    "text_queue_size": 8,
    "max_batch": 4,
    "max_points": 15_000,
    "qos_depth": 200,
}
WAIT = 60.0  # seconds: generous on a loaded 2-core machine


def _file_params() -> dict[str, Any]:
    return yaml.safe_load(PARAMS_FILE.read_text())["/**"]["ros__parameters"]


# --------------------------------------------------------------------------- harness
class Client:
    """Publishes maps and sentences, records everything the node publishes."""

    def __init__(self, ctx: Any, seg_node: Any) -> None:
        import rclpy
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from geometry_msgs.msg import PointStamped
        from sensor_msgs.msg import PointCloud2
        from std_msgs.msg import String
        from visualization_msgs.msg import MarkerArray

        from bqnet_ros.interfaces import load_interfaces

        self.node = rclpy.create_node("test_client", context=ctx)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        deep = QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE)
        self.map_pub = self.node.create_publisher(PointCloud2, "/map_cloud", latched)
        self.text_pub = self.node.create_publisher(String, "/referring_text", deep)
        self.lock = threading.Lock()
        self.results: list[Any] = []
        self.clouds: list[Any] = []
        self.centroids: list[Any] = []
        self.markers: list[Any] = []
        iface = load_interfaces(required=True)
        for typ, topic, store in (
            (iface.ReferringSegmentation, "/segment_node/result", self.results),
            (PointCloud2, "/segment_node/target_cloud", self.clouds),
            (PointStamped, "/segment_node/target_centroid", self.centroids),
            (MarkerArray, "/segment_node/markers", self.markers),
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

    def wait_for(self, cond: Callable[[], bool], timeout: float = WAIT, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; stats {self.seg.stats}")
            time.sleep(0.02)

    def wait_connected(self) -> None:
        self.wait_for(lambda: self.text_pub.get_subscription_count() > 0
                      and self.map_pub.get_subscription_count() > 0, what="discovery")
        # and the node's result publisher has found our subscriber
        self.wait_for(lambda: self.seg._pub_result.get_subscription_count() > 0, what="result subscription")

    def publish_map(self, msg: Any) -> int:
        """Publish a map and wait until the node has taken it (prepared or rejected)."""
        before = self.seg.stats.maps_prepared + self.seg.stats.maps_rejected
        self.map_pub.publish(msg)
        self.wait_for(lambda: self.seg.stats.maps_prepared + self.seg.stats.maps_rejected > before,
                      what="the map to be processed")
        assert self.seg.wait_idle(WAIT)
        return self.seg.stats.maps_prepared

    def use_map(self, msg: Any) -> None:
        """Make ``msg`` the node's current map, publishing it only when it is not already."""
        prepared = self.seg._prepared
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.width * msg.height)
        if prepared is not None and (prepared.header.stamp.sec, prepared.header.stamp.nanosec,
                                     prepared.num_points) == key:
            return
        self.publish_map(msg)

    def ask(self, texts: list[str]) -> list[Any]:
        """Send sentences over DDS, return their results (in arrival order)."""
        from std_msgs.msg import String

        start = len(self.results)
        for t in texts:
            self.text_pub.publish(String(data=t))
        self.wait_for(lambda: len(self.results) >= start + len(texts), what=f"{len(texts)} result(s)")
        with self.lock:
            return self.results[start:start + len(texts)]


@functools.lru_cache(maxsize=16)
def room_cloud(seed: int = 0, n_points: int = N_POINTS, stamp_sec: int = 100) -> tuple[Any, Any]:
    """(PointCloud2 in frame 'map', the scene) of the synthetic room (cached: treat as read-only)."""
    from builtin_interfaces.msg import Time

    from bqnet_ros.conversions import numpy_to_pointcloud2
    from bqnet_ros.play_scene import load_scene

    scene = load_scene("demo" if _has_demo_room() else "minimal", n_points=n_points, seed=seed)
    msg = numpy_to_pointcloud2(scene.xyz, scene.rgb, frame_id="map", stamp=Time(sec=stamp_sec, nanosec=5))
    return msg, scene


def _has_demo_room() -> bool:
    from bqnet_model.data import synthetic

    return hasattr(synthetic, "demo_room")


@pytest.fixture(scope="module")
def overrides_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("params") / "test_overrides.yaml"
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": TEST_OVERRIDES}}))
    return path


@contextmanager
def spinning(ctx: Any, node: Any) -> Iterator[Client]:
    """A test client beside ``node``, both on a 2-thread executor in a background thread; the
    client is connected when this yields, and everything is stopped and destroyed after."""
    from rclpy.executors import MultiThreadedExecutor

    client = Client(ctx, node)
    ex = MultiThreadedExecutor(num_threads=2, context=ctx)
    ex.add_node(node)
    ex.add_node(client.node)
    th = threading.Thread(target=ex.spin, daemon=True)
    th.start()
    try:
        client.wait_connected()
        yield client
    finally:
        ex.shutdown()
        th.join(10)
        node.destroy_node()
        client.node.destroy_node()


@pytest.fixture(scope="module")
def running(overrides_file, ros_domain_id) -> Any:
    """(segment node, client) spinning on a MultiThreadedExecutor in a background thread."""
    import rclpy
    from rclpy.context import Context

    from bqnet_ros.segment_node import SegmentNode

    old_cwd = os.getcwd()
    os.chdir(ROOT)  # relative model_config, as `ros2 run` from the checkout
    ctx = Context()
    rclpy.init(args=["test", "--ros-args", "--params-file", str(PARAMS_FILE), "--params-file",
                     str(overrides_file)], context=ctx, domain_id=ros_domain_id)
    node = SegmentNode(context=ctx)
    with spinning(ctx, node) as client:
        yield node, client
    rclpy.try_shutdown(context=ctx)
    os.chdir(old_cwd)


def check_result(res: Any, map_msg: Any, text: str, client: Client | None = None) -> None:
    """Every field of one result is consistent with the map and with itself."""
    n = map_msg.width * map_msg.height
    assert res.text == text
    assert res.task in ("res", "gres")
    assert res.header.frame_id == map_msg.header.frame_id
    assert (res.header.stamp.sec, res.header.stamp.nanosec) == (map_msg.header.stamp.sec, map_msg.header.stamp.nanosec)
    assert res.map_num_points == n
    idx = np.asarray(res.point_indices, dtype=np.int64)
    assert (np.diff(idx) > 0).all(), "union indices sorted and unique"
    assert idx.size == 0 or (idx.min() >= 0 and idx.max() < n)
    assert res.found == (len(res.objects) > 0)
    assert res.found == (idx.size > 0)
    assert (res.reason == "") == res.found
    union = set()
    scores = [o.score for o in res.objects]
    assert scores == sorted(scores, reverse=True)
    for o in res.objects:
        oi = np.asarray(o.point_indices, dtype=np.int64)
        assert o.num_points == oi.size > 0
        assert (np.diff(oi) > 0).all() and oi.max() < n
        assert 0.0 <= o.score <= 1.0
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


# --------------------------------------------------------------------------- parameters
def test_params_file_sets_every_parameter(running):
    """Each declared parameter is in the file, and the node holds the file's value (or the
    test's override): what `ros2 launch` with the params file gives."""
    from bqnet_ros.segment_node import PARAMS

    node, _ = running
    file_params = _file_params()
    declared = {p.name for p in PARAMS}
    assert set(file_params) == declared, "config/segment_node.yaml and the declared parameters differ"
    expected = {**file_params, **TEST_OVERRIDES}
    for name in declared:
        value = node.get_parameter(name).value
        assert value == expected[name], f"{name}: node has {value!r}, file says {expected[name]!r}"
        assert getattr(node.params, name) == expected[name]
        assert node.describe_parameter(name).description, f"{name} has no description"


def test_file_defaults_equal_declared_defaults():
    """The shipped file documents the defaults: a node without the file behaves the same."""
    from bqnet_ros.segment_node import PARAMS

    file_params = _file_params()
    for p in PARAMS:
        assert file_params[p.name] == p.default, p.name


def test_cuda_without_gpu_falls_back_to_cpu(running):
    import torch

    node, _ = running
    assert node.get_parameter("device").value == "cuda"
    if torch.cuda.is_available():
        assert node.device == "cuda"
    else:
        assert node.device == "cpu"
        assert any("CUDA is not available" in w for w in node.stats.warnings)
    # the fixture's empty checkpoint means the shipped model when it exists, else the random-init one
    untrained = any("RANDOMLY INITIALISED" in w for w in node.stats.warnings)
    assert untrained == (not SHIPPED_MODEL.exists())


def test_dynamic_and_read_only_parameters(running):
    from rclpy.parameter import Parameter

    node, _ = running
    ok = node.set_parameters([Parameter("score_threshold", value=0.25)])[0]
    assert ok.successful and node.params.score_threshold == 0.25
    bad = node.set_parameters([Parameter("task", value="nonsense")])[0]
    assert not bad.successful and "task" in bad.reason
    ro = node.set_parameters([Parameter("map_topic", value="/other")])[0]
    assert not ro.successful
    assert node.params.map_topic == "/map_cloud"
    node.set_parameters([Parameter("score_threshold", value=0.0)])


# --------------------------------------------------------------------------- the loop
def test_sentence_before_map_then_full_answer(running):
    """A sentence before any map waits; the map arrives; every output is published and consistent."""
    node, client = running
    from std_msgs.msg import String
    from visualization_msgs.msg import Marker

    text = "the chair next to the desk"
    assert node.stats.maps_prepared == 0
    n_res, n_cloud, n_cent, n_mark = client.counts()
    client.text_pub.publish(String(data=text))
    client.wait_for(lambda: node.stats.sentences_received >= 1, what="the sentence")
    time.sleep(0.3)
    assert client.counts()[0] == n_res, "answered before any map"
    assert len(node._texts) == 1

    map_msg, scene = room_cloud()
    client.map_pub.publish(map_msg)
    client.wait_for(lambda: client.counts()[0] > n_res, what="the queued sentence's answer")
    client.wait_for(lambda: client.counts()[1] > n_cloud and client.counts()[3] > n_mark, what="cloud and markers")
    res = client.results[n_res]
    check_result(res, map_msg, text)
    assert node.stats.maps_downsampled >= 1  # 20k points > max_points 15k
    assert any("downsampled" in w for w in node.stats.warnings)
    assert res.map_version == 1 and res.prepare_ms > 0

    # target cloud: the result's points, in the map frame, with an instance field
    from bqnet_ros.conversions import pointcloud2_to_numpy

    cloud = client.clouds[n_cloud]
    assert cloud.header.frame_id == "map"
    assert "instance" in [f.name for f in cloud.fields]
    arr = pointcloud2_to_numpy(cloud, extra_fields=["instance"])
    idx = np.asarray(res.point_indices, dtype=np.int64)
    assert arr.n_points == idx.size
    assert np.allclose(arr.xyz, scene.xyz[idx])
    if idx.size:
        assert set(np.unique(arr.fields["instance"]).tolist()) <= set(range(len(res.objects)))

    # markers: cleared, then 3 per object
    markers = client.markers[n_mark]
    assert markers.markers[0].action == Marker.DELETEALL
    assert len(markers.markers) == 1 + 3 * len(res.objects)

    # centroid only when found (it is published before the result)
    if res.found:
        client.wait_for(lambda: client.counts()[2] > n_cent, what="the centroid")
        c = client.centroids[n_cent]
        o = res.objects[0].centroid
        assert c.header.frame_id == "map"
        assert (c.point.x, c.point.y, c.point.z) == pytest.approx((o.x, o.y, o.z))
    else:
        time.sleep(0.2)
        assert client.counts()[2] == n_cent


def test_several_sentences_each_answered_once(running):
    node, client = running
    map_msg, _ = room_cloud(n_points=SMALL)
    client.use_map(map_msg)
    texts = ["the red chair", "the table in the middle of the room", "the blue cabinet", "the desk"]
    results = client.ask(texts)
    assert sorted(r.text for r in results) == sorted(texts)
    for r in results:
        check_result(r, map_msg, r.text)


def test_gres_task(running):
    from rclpy.parameter import Parameter

    node, client = running
    map_msg, _ = room_cloud(n_points=SMALL)
    client.use_map(map_msg)
    assert node.set_parameters([Parameter("task", value="gres")])[0].successful
    try:
        (res,) = client.ask(["all the chairs"])
    finally:
        node.set_parameters([Parameter("task", value="res")])
    assert res.task == "gres"
    check_result(res, map_msg, "all the chairs")


# --------------------------------------------------------------------------- robustness
def _malformed_clouds() -> dict[str, Any]:
    from sensor_msgs.msg import PointField

    good, _ = room_cloud(n_points=500)
    out = {}
    m = _copy(good)
    m.fields = [f for f in m.fields if f.name != "z"]
    out["missing z"] = m
    m = _copy(good)
    m.point_step = 8  # fields end beyond it
    m.row_step = m.point_step * m.width
    out["wrong point_step"] = m
    m = _copy(good)
    m.data = m.data[: len(m.data) // 2]
    out["truncated data"] = m
    m = _copy(good)
    m.is_bigendian = True
    out["big-endian"] = m
    m = _copy(good)
    m.fields = list(m.fields) + [PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1)]
    out["duplicate field"] = m
    return out


def _copy(msg: Any) -> Any:
    from rclpy.serialization import deserialize_message, serialize_message

    return deserialize_message(serialize_message(msg), type(msg))


@pytest.mark.parametrize("kind", ["missing z", "wrong point_step", "truncated data", "big-endian", "duplicate field"])
def test_malformed_map_is_rejected_and_node_still_answers(running, kind):
    node, client = running
    good, _ = room_cloud(n_points=SMALL)
    client.use_map(good)
    version = node._prepared.version
    rejected = node.stats.maps_rejected
    client.publish_map(_malformed_clouds()[kind])
    assert node.stats.maps_rejected == rejected + 1
    assert any("malformed" in w for w in node.stats.warnings)
    (res,) = client.ask(["the chair next to the desk"])
    assert res.map_version == version, "the previous map stays in use"
    check_result(res, good, "the chair next to the desk")


def test_nan_and_inf_points_are_dropped(running):
    from bqnet_ros.conversions import numpy_to_pointcloud2

    node, client = running
    _, scene = room_cloud(n_points=SMALL)
    xyz = scene.xyz.copy()
    bad = np.arange(0, len(xyz), 7)
    xyz[bad[::2], 0] = np.nan
    xyz[bad[1::2], 2] = np.inf
    msg = numpy_to_pointcloud2(xyz, scene.rgb, frame_id="map", stamp=200.0)
    client.publish_map(msg)
    (res,) = client.ask(["the chair next to the desk"])
    check_result(res, msg, "the chair next to the desk")
    assert not np.isin(np.asarray(res.point_indices), bad).any()


def test_empty_and_all_nan_maps(running):
    from bqnet_ros.conversions import numpy_to_pointcloud2

    node, client = running
    empty = numpy_to_pointcloud2(np.zeros((0, 3), np.float32), frame_id="map", stamp=300.0)
    client.publish_map(empty)
    (res,) = client.ask(["the desk"])
    assert not res.found and res.reason == "empty map" and res.map_num_points == 0
    nan = numpy_to_pointcloud2(np.full((10, 3), np.nan, np.float32), frame_id="map", stamp=301.0)
    client.publish_map(nan)
    (res,) = client.ask(["the desk"])
    assert not res.found and res.reason == "empty map" and res.map_num_points == 10
    good, _ = room_cloud(n_points=SMALL)
    client.publish_map(good)
    (res,) = client.ask(["the desk"])
    check_result(res, good, "the desk")


def test_empty_and_very_long_text(running):
    node, client = running
    good, _ = room_cloud(n_points=SMALL)
    client.use_map(good)
    empty_before = node.stats.sentences_empty
    long_text = "the chair that is next to the big brown desk near the wall " * 300  # ~18k chars
    res_empty, res_long = sorted(client.ask(["   ", long_text]), key=lambda r: len(r.text))
    assert not res_empty.found and res_empty.reason == "empty text"
    assert node.stats.sentences_empty == empty_before + 1
    assert res_long.text == long_text
    assert not res_long.reason.startswith("error")
    check_result(res_long, good, long_text)


def test_burst_of_100_sentences_bounded_queue(running):
    """100 sentences at once into a queue of 8: the oldest 92 are dropped, counted, logged and
    answered with found=false; the newest 8 are answered by the model; all 100 get a result."""
    from std_msgs.msg import String

    node, client = running
    good, _ = room_cloud(n_points=SMALL)
    client.use_map(good)
    start = len(client.results)
    dropped = node.stats.sentences_dropped
    texts = [f"the chair number {i}" for i in range(100)]
    with node._cv:  # hold the worker back: all 100 arrive before it takes any
        for t in texts:
            node._on_text(String(data=t))
    client.wait_for(lambda: len(client.results) >= start + 100, what="100 results")
    got = client.results[start:start + 100]
    assert sorted(r.text for r in got) == sorted(texts)
    assert node.stats.sentences_dropped == dropped + 92
    assert sum("queue full" in w for w in node.stats.warnings) >= 92
    by_text = {r.text: r for r in got}
    for t in texts[:92]:
        assert not by_text[t].found and by_text[t].reason == "dropped: text queue full"
    for t in texts[92:]:
        check_result(by_text[t], good, t)
        assert not by_text[t].reason.startswith("dropped")

    # the same over DDS, as fast as the client can publish: every sentence still gets one answer
    received = node.stats.sentences_received
    more = [f"the table number {i}" for i in range(30)]
    got = client.ask(more)
    assert sorted(r.text for r in got) == sorted(more)
    assert node.stats.sentences_received == received + 30
    assert all(r.found or r.reason in ("no target", "dropped: text queue full") for r in got)


def test_map_replaced_while_sentences_queued(running):
    """Sentences queued, then two maps: the first is replaced unprepared; all are answered
    against the newest map."""
    from std_msgs.msg import String

    node, client = running
    a, _ = room_cloud(seed=1, n_points=8_000, stamp_sec=400)
    b, _ = room_cloud(seed=2, n_points=12_000, stamp_sec=401)
    start = len(client.results)
    replaced, prepared = node.stats.maps_replaced, node.stats.maps_prepared
    with node._cv:
        for t in ("the desk", "the red chair", "the table"):
            node._on_text(String(data=t))
        node._on_map(a)
        node._on_map(b)
    client.wait_for(lambda: len(client.results) >= start + 3, what="3 results")
    assert node.stats.maps_replaced == replaced + 1
    assert node.stats.maps_prepared == prepared + 1
    for r in client.results[start:start + 3]:
        check_result(r, b, r.text)
        assert r.header.stamp.sec == 401


def test_huge_map_is_downsampled_indices_stay_valid(running):
    """A map above max_points (15k here; 5M in the field) is downsampled with a warning and the
    indices still refer to the full cloud."""
    node, client = running
    big, scene = room_cloud(seed=3, n_points=40_000, stamp_sec=500)
    downsampled = node.stats.maps_downsampled
    client.publish_map(big)
    assert node.stats.maps_downsampled == downsampled + 1
    (res,) = client.ask(["the chair next to the desk"])
    check_result(res, big, "the chair next to the desk")
    assert res.map_num_points == len(scene.xyz)


def test_play_scene_round_trip(running, capsys):
    """play_scene publishes a latched map, sends sentences and prints each answer."""
    from bqnet_ros import play_scene

    node, client = running
    code = play_scene.main(["--scene", "minimal", "--points", "6000", "--text", "the red chair",
                            "--text", "the table", "--timeout", str(WAIT)])
    out = capsys.readouterr().out
    assert code == 0
    lines = [ln for ln in out.splitlines() if ln.startswith("'")]
    assert len(lines) == 2 and "'the red chair'" in lines[0] and "'the table'" in lines[1]
    assert all(("found" in ln) for ln in lines)


def test_without_generated_messages_results_go_out_as_json(running, ros_context_factory, monkeypatch):
    """The messages not built: the node warns and still answers, as JSON on ~/result_json."""
    import json

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import String

    import bqnet_ros.segment_node as sn

    main_node, _ = running
    assert main_node.wait_idle(WAIT)
    monkeypatch.setattr(sn, "load_interfaces", lambda required=False: None)
    ctx = ros_context_factory(["-p", "map_topic:=/json_map", "-p", "text_topic:=/json_text"])
    # the running node's model, idle meanwhile (no model load twice)
    node = sn.SegmentNode(context=ctx, node_name="json_node", segmenter=main_node._segmenter)
    client = rclpy.create_node("json_client", context=ctx)
    got: list[String] = []
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    map_pub = client.create_publisher(PointCloud2, "/json_map", latched)
    text_pub = client.create_publisher(String, "/json_text", 10)
    client.create_subscription(String, "/json_node/result_json", got.append, 10)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    ex.add_node(client)
    th = threading.Thread(target=ex.spin, daemon=True)
    th.start()
    try:
        assert any("~/result_json" in w for w in node.stats.warnings)
        map_msg, _ = room_cloud(n_points=5_000)
        map_pub.publish(map_msg)
        deadline = time.monotonic() + WAIT
        while (text_pub.get_subscription_count() == 0 or node.stats.maps_prepared == 0
               or node._pub_result.get_subscription_count() == 0):
            assert time.monotonic() < deadline, "json node not ready"
            time.sleep(0.02)
        text_pub.publish(String(data="the desk"))
        while not got:
            assert time.monotonic() < deadline, "no JSON result"
            time.sleep(0.02)
        d = json.loads(got[0].data)
        assert d["text"] == "the desk" and d["frame_id"] == "map" and d["map_num_points"] == 5_000
        assert d["found"] == bool(d["objects"]) and all(i < 5_000 for i in d["point_indices"])
    finally:
        ex.shutdown()
        th.join(10)
        node.destroy_node()
        client.destroy_node()


def test_voxel_size_zero_keeps_the_models_and_an_override_warns(ros_context_factory, monkeypatch, tmp_path):
    """voxel_size 0 (the file's default) runs the model at the voxel size it was trained with; a
    different value is applied with a warning (a model is only good at its training scale)."""
    from bqnet_model.model.config import load_config
    from bqnet_ros import segment_node
    from bqnet_ros.segment_node import SegmentNode

    trained = load_config(ROOT / "config" / "tiny.yaml").inference.voxel_size
    monkeypatch.setattr(segment_node, "_search_roots", lambda: [tmp_path])  # no shipped model: the tiny config
    monkeypatch.chdir(ROOT)
    for value, expect, warns in ((0.0, trained, False), (0.05, 0.05, True)):
        ctx = ros_context_factory(["-p", "device:=cpu", "-p", "allow_untrained:=true", "-p",
                                   f"model_config:={ROOT / 'config' / 'tiny.yaml'}", "-p", f"voxel_size:={value}"])
        node = SegmentNode(context=ctx, node_name=f"voxel_{int(value * 100)}")
        try:
            assert node._segmenter.cfg.inference.voxel_size == pytest.approx(expect)
            assert any("overrides the" in w for w in node.stats.warnings) == warns
        finally:
            node.destroy_node()


def test_tta_rotations_zero_keeps_the_models_and_a_value_sets_it(ros_context_factory, monkeypatch, tmp_path):
    from bqnet_ros import segment_node
    from bqnet_ros.segment_node import SegmentNode

    monkeypatch.setattr(segment_node, "_search_roots", lambda: [tmp_path])
    monkeypatch.chdir(ROOT)
    for value, expect in ((0, 1), (3, 3)):  # config/tiny.yaml leaves it at 1
        ctx = ros_context_factory(["-p", "device:=cpu", "-p", "allow_untrained:=true", "-p",
                                   f"model_config:={ROOT / 'config' / 'tiny.yaml'}", "-p", f"tta_rotations:={value}"])
        node = SegmentNode(context=ctx, node_name=f"tta_{value}")
        try:
            assert node._segmenter.cfg.inference.tta_rotations == expect
        finally:
            node.destroy_node()


# --------------------------------------------------------------------------- start-up errors
def test_bad_checkpoint_is_fatal_in_process(ros_context_factory):
    from bqnet_ros.segment_node import SegmentNode, StartupError

    ctx = ros_context_factory(["-p", "checkpoint:=/nonexistent/model.pth", "-p", "device:=cpu"])
    with pytest.raises(StartupError, match="checkpoint '/nonexistent/model.pth' not found"):
        SegmentNode(context=ctx, node_name="bad_ckpt")


def test_no_checkpoint_without_allow_untrained_is_fatal(ros_context_factory, tmp_path, monkeypatch):
    from bqnet_ros import segment_node
    from bqnet_ros.segment_node import SegmentNode, StartupError

    # look for the default model only in an empty folder, as on a machine without the shipped model
    monkeypatch.setattr(segment_node, "_search_roots", lambda: [tmp_path])
    monkeypatch.chdir(tmp_path)
    ctx = ros_context_factory(["-p", "device:=cpu"])
    with pytest.raises(StartupError, match="no checkpoint.*allow_untrained"):
        SegmentNode(context=ctx, node_name="no_ckpt")


def test_unloadable_checkpoint_is_fatal(ros_context_factory, tmp_path):
    from bqnet_ros.segment_node import SegmentNode, StartupError

    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"this is not a torch checkpoint")
    ctx = ros_context_factory(["-p", f"checkpoint:={bad}", "-p", "device:=cpu"])
    with pytest.raises(StartupError, match=f"cannot load checkpoint {bad}"):
        SegmentNode(context=ctx, node_name="broken_ckpt")


@pytest.mark.parametrize(
    "arg,match",
    [
        ("task:=segment", "task must be 'res' or 'gres'"),
        ("map_qos_durability:=latched", "map_qos_durability"),
        ("device:=gpu0", "not a torch device"),
        ("text_topic:=/map_cloud", "same topic"),
        ("max_points:=-5", "max_points"),
    ],
)
def test_bad_parameters_are_fatal(ros_context_factory, arg, match):
    from rclpy.exceptions import InvalidParameterValueException

    from bqnet_ros.segment_node import SegmentNode, StartupError

    ctx = ros_context_factory(["-p", arg, "-p", "allow_untrained:=true"])
    with pytest.raises((StartupError, InvalidParameterValueException), match=match):
        SegmentNode(context=ctx, node_name="bad_param")


def _run_console(args: list[str], *, ready: str | None = None, timeout: float = 120) -> tuple[int, str]:
    """Run `python -m bqnet_ros.segment_node ARGS`; with ``ready``: wait for that log line, then
    send SIGINT (Ctrl-C). Returns (exit code, stderr+stdout)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_LOGGING_BUFFERED_STREAM="0")
    proc = subprocess.Popen([sys.executable, "-m", "bqnet_ros.segment_node", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    done = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if ready and ready in line:
                done.set()
        done.set()

    t = threading.Thread(target=read, daemon=True)
    t.start()
    try:
        if ready:
            assert done.wait(timeout), "".join(lines)
            time.sleep(0.3)
            proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    t.join(5)
    return code, "".join(lines)


def test_console_script_bad_checkpoint_exits_nonzero(ros_domain_id):
    code, out = _run_console(["--ros-args", "--params-file", str(PARAMS_FILE), "-p",
                              "checkpoint:=/nonexistent/model.pth"])
    assert code == 1, out
    assert "cannot start" in out and "/nonexistent/model.pth" in out and "Traceback" not in out


def test_console_script_runs_and_ctrl_c_is_clean(ros_domain_id, overrides_file):
    code, out = _run_console(["--ros-args", "--params-file", str(PARAMS_FILE), "--params-file",
                              str(overrides_file)], ready="ready:")
    assert code == 0, out
    assert "Traceback" not in out


# --------------------------------------------------------------------------- play_scene inputs
def test_load_scene_sources_and_errors(tmp_path):
    from bqnet_model.ply import write_ply
    from bqnet_ros.play_scene import load_scene

    demo = load_scene("demo", n_points=3_000)
    assert demo.xyz.shape == (3_000, 3) and demo.xyz.dtype == np.float32 and demo.rgb.dtype == np.uint8
    minimal = load_scene("minimal", n_points=2_000, seed=1)
    assert 0 < len(minimal.xyz) <= 2_000
    path = tmp_path / "room.ply"
    write_ply(path, minimal.xyz, minimal.rgb)
    ply = load_scene(str(path))
    assert np.allclose(ply.xyz, minimal.xyz) and np.array_equal(ply.rgb, minimal.rgb)
    capped = load_scene(str(path), n_points=500)
    assert len(capped.xyz) == 500
    with pytest.raises(ValueError, match="neither"):
        load_scene("room.xyz")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_scene(str(tmp_path / "missing.ply"))
    with pytest.raises(ValueError, match="points must be >= 1"):
        load_scene("demo", n_points=0)


def test_play_scene_exit_codes(ros_domain_id, capsys):
    from bqnet_ros import play_scene

    assert play_scene.main(["--scene", "nothing.txt"]) == 1
    assert "neither" in capsys.readouterr().err
    assert play_scene.main(["--scene", "minimal", "--timeout", "0"]) == 1
    # nobody listens on this topic: the player gives up after the timeout with code 2
    code = play_scene.main(["--scene", "minimal", "--points", "500", "--text", "the desk",
                            "--text-topic", "/nobody_listens", "--map-topic", "/unused_map", "--timeout", "1"])
    assert code == 2


# --------------------------------------------------------------------------- launch / RViz files
def test_launch_file_compiles_and_declares_the_arguments(tmp_path):
    path = ROOT / "launch" / "segment.launch.py"
    py_compile.compile(str(path), cfile=str(tmp_path / "launch.pyc"), doraise=True)
    tree = ast.parse(path.read_text())
    declared = set()
    calls: dict[str, list[ast.Call]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            calls.setdefault(name, []).append(node)
            if name == "DeclareLaunchArgument" and node.args and isinstance(node.args[0], ast.Constant):
                declared.add(node.args[0].value)
    assert {"map_topic", "text_topic", "device", "checkpoint", "params_file"} <= declared
    assert "generate_launch_description" in {f.name for f in tree.body if isinstance(f, ast.FunctionDef)}
    (node_call,) = calls["Node"]
    kw = {k.arg: k.value for k in node_call.keywords}
    assert kw["package"].value == "bqnet_ros" and kw["executable"].value == "segment_node"
    assert kw["name"].value == "segment_node"
    # the overrides tuple names exactly the four parameters
    overrides = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "OVERRIDES")
    assert {e.value for e in overrides.value.elts} == {"map_topic", "text_topic", "device", "checkpoint"}
    assert "segment_node.yaml" in path.read_text()
    # every override is a real parameter of the node
    from bqnet_ros.segment_node import PARAMS

    assert {e.value for e in overrides.value.elts} <= {p.name for p in PARAMS}


def test_rviz_config_is_valid():
    cfg = yaml.safe_load((ROOT / "config" / "bqnet.rviz").read_text())
    vm = cfg["Visualization Manager"]
    assert vm["Global Options"]["Fixed Frame"] == "map"
    displays = {d["Class"].split("/")[-1] + ":" + d.get("Topic", {}).get("Value", ""): d for d in vm["Displays"]}
    assert "Grid:" in displays
    m = displays["PointCloud2:/map_cloud"]
    assert m["Color Transformer"] == "RGB8" and m["Topic"]["Durability Policy"] == "Transient Local"
    t = displays["PointCloud2:/segment_node/target_cloud"]
    assert t["Color Transformer"] == "FlatColor" and t["Size (Pixels)"] > m["Size (Pixels)"]
    assert "MarkerArray:/segment_node/markers" in displays


# --------------------------------------------------------------------------- the shipped model
@pytest.mark.skipif(not SHIPPED_MODEL.exists(), reason="shipped model not trained yet")
def test_shipped_model_finds_the_chair_next_to_the_desk(ros_context_factory):
    """With the trained checkpoint (and its own inference settings: 4 turned copies of the map,
    config/segment_node.yaml's tta_rotations 0), the centroid lies inside the true chair's box."""
    from bqnet_model.data.synthetic import demo_room
    from bqnet_ros.conversions import numpy_to_pointcloud2
    from bqnet_ros.segment_node import SegmentNode

    ctx = ros_context_factory(["--params-file", str(PARAMS_FILE), "-p", "device:=cpu",
                               "-p", f"checkpoint:={SHIPPED_MODEL}"])
    node = SegmentNode(context=ctx, node_name="segment_node")
    with spinning(ctx, node) as client:
        scene = demo_room(seed=0)  # full density, as the model was trained
        client.publish_map(numpy_to_pointcloud2(scene.xyz, scene.rgb, frame_id="map", stamp=900.0))
        (res,) = client.ask(["the chair next to the desk"])
        assert res.found
        c = res.objects[0].centroid
        chairs = [o for o in scene.objects if o.name == "chair"]
        desk = next(o for o in scene.objects if o.name == "desk")
        target = min(chairs, key=lambda o: np.linalg.norm((o.box_min + o.box_max) / 2 - (desk.box_min + desk.box_max) / 2))
        margin = 0.05
        got = np.array([c.x, c.y, c.z])
        inside = (target.box_min - margin <= got).all() and (got <= target.box_max + margin).all()
        assert inside, f"centroid {got.round(2)} outside the chair's box {target.box_min.round(2)}..{target.box_max.round(2)}"
