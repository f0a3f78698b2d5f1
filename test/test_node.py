"""segment_node with real rclpy topics and service: the answer contract, robustness, diagnostics.

One node runs in-process on a private ROS domain, started with ``--params-file
config/segment_node.yaml`` plus test overrides, its model the library's tiny random-weight
Segmenter (wrapped by ``GatedSegmenter`` so a test can make a prepare fail). A client node
publishes maps and sentences, calls ``~/segment`` and records every output topic.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pytest
import yaml

from ros_harness import (PARAMS_FILE, GatedSegmenter, check_cleared, check_result, copy_msg, room_cloud,
                         spinning, tiny_segmenter)

# On top of the shipped file: a small text queue (the burst test overflows it), a small
# max_points (maps above it are thinned), a short map wait (the timeout tests), fast diagnostics.
TEST_OVERRIDES: dict[str, Any] = {
    "allow_untrained": True,
    "text_queue_size": 8,
    "max_batch": 4,
    "max_points": 15_000,
    "qos_depth": 200,
    "map_wait_timeout": 30.0,
    "diagnostics_period": 0.2,
}


def _file_params() -> dict[str, Any]:
    return yaml.safe_load(PARAMS_FILE.read_text())["/**"]["ros__parameters"]


@pytest.fixture(scope="module")
def running(tmp_path_factory, ros_domain_id) -> Any:
    """(segment node, client, gated segmenter) spinning in a background thread."""
    import rclpy
    from rclpy.context import Context

    from bqnet_ros.segment_node import SegmentNode

    path = tmp_path_factory.mktemp("params") / "test_overrides.yaml"
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": TEST_OVERRIDES}}))
    ctx = Context()
    rclpy.init(args=["test", "--ros-args", "--params-file", str(PARAMS_FILE), "--params-file", str(path)],
               context=ctx, domain_id=ros_domain_id)
    gated = GatedSegmenter(tiny_segmenter())
    node = SegmentNode(context=ctx, segmenter=gated)
    with spinning(ctx, node) as client:
        yield node, client, gated
    rclpy.try_shutdown(context=ctx)


# --------------------------------------------------------------------------- parameters
def test_params_file_sets_every_parameter(running):
    from bqnet_ros.parameters import PARAMS

    node, _, _ = running
    file_params = _file_params()
    declared = {p.name for p in PARAMS}
    assert set(file_params) == declared, "config/segment_node.yaml and the declared parameters differ"
    expected = {**file_params, **TEST_OVERRIDES}
    for name in declared:
        assert node.get_parameter(name).value == expected[name], name
        assert getattr(node.params, name) == expected[name]
        assert node.describe_parameter(name).description, f"{name} has no description"


def test_file_defaults_equal_declared_defaults():
    from bqnet_ros.parameters import PARAMS, NodeParams

    file_params = _file_params()
    for p in PARAMS:
        assert file_params[p.name] == p.default, p.name
    assert NodeParams.defaults().max_points == file_params["max_points"]


def test_dynamic_and_read_only_parameters(running):
    from rclpy.parameter import Parameter

    node, _, _ = running
    ok = node.set_parameters([Parameter("score_threshold", value=0.25)])[0]
    assert ok.successful and node.params.score_threshold == 0.25
    bad = node.set_parameters([Parameter("task", value="nonsense")])[0]
    assert not bad.successful and "task" in bad.reason
    ro = node.set_parameters([Parameter("map_topic", value="/other")])[0]
    assert not ro.successful and node.params.map_topic == "/map_cloud"
    dev = node.set_parameters([Parameter("device_in_use", value="cuda")])[0]
    assert not dev.successful
    node.set_parameters([Parameter("score_threshold", value=0.0)])


# --------------------------------------------------------------------------- the loop
def test_sentence_before_map_then_full_answer(running):
    """A sentence before any map waits; the map arrives; every output is published and consistent."""
    from std_msgs.msg import String
    from visualization_msgs.msg import Marker

    from bqnet_ros.conversions import pointcloud2_to_numpy

    node, client, _ = running
    text = "the chair next to the desk"
    assert node.stats.maps_prepared == 0
    n_res, n_cloud, n_cent, n_mark = client.counts()
    client.text_pub.publish(String(data=text))
    client.wait_for(lambda: node.stats.sentences_received >= 1, what="the sentence")
    time.sleep(0.3)
    assert client.counts()[0] == n_res, "answered before any map"

    map_msg, scene = room_cloud(n_points=20_000)
    client.map_pub.publish(map_msg)
    client.wait_for(lambda: client.counts()[0] > n_res, what="the queued sentence's answer")
    client.wait_for(lambda: client.counts()[1] > n_cloud and client.counts()[3] > n_mark, what="cloud and markers")
    res = client.results[n_res]
    check_result(res, map_msg, text)
    assert res.request_id == "topic:1" and res.map_version == 1 and res.prepare_ms > 0
    # 20k points > max_points 15k: the library thins by its voxel grid, the answer says so
    from bqnet_model.pointcloud import clean

    cache = node.worker.prepared.cache
    assert cache.n_downsampled > 0 and cache.n_points <= 15_000
    assert np.array_equal(cache.point_index, clean(scene.xyz, scene.rgb, max_points=15_000).index)
    assert f"thinned to {cache.n_points} by the library's voxel grid (max_points 15000)" in " ".join(res.warnings)
    assert node.stats.maps_thinned == 1 and np.isin(res.point_indices, cache.point_index).all()

    cloud = client.clouds[n_cloud]
    arr = pointcloud2_to_numpy(cloud, extra_fields=["instance"])
    idx = np.asarray(res.point_indices, dtype=np.int64)
    assert cloud.header.frame_id == "map" and arr.n_points == idx.size
    assert np.allclose(arr.xyz, scene.xyz[idx])
    if idx.size:
        assert set(np.unique(arr.fields["instance"]).tolist()) <= set(range(len(res.objects)))
    markers = client.markers[n_mark]
    assert markers.markers[0].action == Marker.DELETEALL
    assert len(markers.markers) == 1 + 3 * len(res.objects)
    if res.found:
        client.wait_for(lambda: client.counts()[2] > n_cent, what="the centroid")
        o = res.objects[0].centroid
        c = client.centroids[n_cent].point
        assert (c.x, c.y, c.z) == pytest.approx((o.x, o.y, o.z))


def test_service_answers_with_the_callers_request_id(running):
    """~/segment returns the answer (also published on ~/result) with the caller's id; ids from
    the topic path count up; an empty id gets one from the node; task per request."""
    node, client, _ = running
    map_msg, _ = room_cloud()
    client.use_map(map_msg)
    n = len(client.results)
    res = client.call("the red chair", request_id="req-42")
    check_result(res, map_msg, "the red chair")
    assert res.request_id == "req-42" and res.task == "res"
    client.wait_for(lambda: any(r.request_id == "req-42" for r in client.results[n:]), what="the published copy")
    gres = client.call("all the chairs", task="gres")
    assert gres.task == "gres" and gres.request_id.startswith("service:")
    check_result(gres, map_msg, "all the chairs")
    since = client.snapshot()
    bad = client.call("the desk", task="segment")
    assert not bad.found and "invalid task" in bad.reason
    check_cleared(client.answers_since(since, 1)[0])
    a, b = client.ask(["the desk", "the table"])
    ids = sorted(int(r.request_id.split(":")[1]) for r in (a, b))
    assert ids[1] == ids[0] + 1 and all(r.request_id.startswith("topic:") for r in (a, b))


def test_score_threshold_keeps_the_score(running):
    """Objects below the threshold are dropped (found=false, RViz cleared) but the result still
    carries the model's best score, so a client can pick its own threshold."""
    from rclpy.parameter import Parameter

    node, client, _ = running
    map_msg, _ = room_cloud()
    client.use_map(map_msg)
    free = client.call("the red chair")
    assert free.found, f"the tiny model (seed 0) finds an object here: {free.reason}"
    assert node.set_parameters([Parameter("score_threshold", value=1.0)])[0].successful
    since = client.snapshot()
    try:
        strict = client.call("the red chair")
    finally:
        node.set_parameters([Parameter("score_threshold", value=0.0)])
    assert not strict.found and "score_threshold" in strict.reason
    assert strict.score == pytest.approx(free.score)
    assert len(strict.point_indices) == 0
    check_cleared(client.answers_since(since, 1)[0])


def test_every_not_found_answer_clears_rviz(running):
    """Empty text, a dropped sentence, an absent object (a word in no class vocabulary, RES and
    GRES) and an empty map: each answer publishes, besides its result, an empty target cloud and a
    DELETEALL-only marker array (the timeout and shutdown answers: their own tests)."""
    from std_msgs.msg import String

    from bqnet_ros.conversions import numpy_to_pointcloud2

    node, client, _ = running
    good, _ = room_cloud()
    client.use_map(good)
    for kind in ("empty text", "dropped: text queue full", "unknown object word 'helicopter'", "empty map"):
        since = client.snapshot()
        if kind == "empty text":
            expect = 1
            client.text_pub.publish(String(data="   "))
        elif kind == "dropped: text queue full":
            expect = node.params.text_queue_size + 1
            with node.worker.lock:  # all arrive before the worker takes any: the first one drops
                for i in range(expect):
                    node._on_text(String(data=f"the chair number {i}"))
        elif kind.startswith("unknown object"):
            expect = 2
            res, gres = client.call("the helicopter"), client.call("the helicopter", task="gres")
            assert kind in res.reason and res.score > 0, res.reason  # refused, the best score kept
            assert not gres.found and gres.task == "gres"
        else:
            expect = 1
            client.publish_map(numpy_to_pointcloud2(np.zeros((0, 3), np.float32), frame_id="map", stamp=300.0))
            client.text_pub.publish(String(data="the desk"))
        answers = client.answers_since(since, expect)
        assert any(kind in res.reason for res, _, _ in answers), kind
        for answer in answers:
            if not answer[0].found:
                check_cleared(answer)
    client.publish_map(good)


def test_no_usable_map_times_out_and_incompatible_qos_is_an_error(ros_context_factory):
    """Only a rejected map, then only a failed prepare: sentences (topic and service) are answered
    found=false after map_wait_timeout, the reason saying why no map is usable, and clear RViz;
    /diagnostics is ERROR. A volatile or best-effort map publisher never matches the
    transient_local, reliable subscription: the node logs an ERROR naming the parameter; a
    best-effort sentence publisher gets an ERROR too."""
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import String

    from bqnet_ros.segment_node import SegmentNode

    ctx = ros_context_factory(["-p", "map_topic:=/timeout_map", "-p", "text_topic:=/timeout_text",
                               "-p", "map_wait_timeout:=1.0", "-p", "diagnostics_period:=0.2"])
    gated = GatedSegmenter(tiny_segmenter())
    node = SegmentNode(context=ctx, node_name="timeout_node", segmenter=gated)
    with spinning(ctx, node, prefix="/timeout_node") as client:
        bad = copy_msg(room_cloud(n_points=500)[0])
        bad.fields = [f for f in bad.fields if f.name != "z"]
        client.publish_map(bad)
        since = client.snapshot()
        t0 = time.monotonic()
        (res,) = client.ask(["the desk"])
        waited = time.monotonic() - t0
        assert not res.found and res.reason.startswith("no usable map after 1 s: the last map was rejected")
        assert 0.8 <= waited < 10, waited
        srv = client.call("the table")
        assert not srv.found and srv.reason.startswith("no usable map") and srv.request_id.startswith("service:")
        for answer in client.answers_since(since, 2):
            check_cleared(answer)

        gated.fail_next = True
        client.publish_map(room_cloud(n_points=500)[0])
        assert node.logged(logging.ERROR, "map dropped: prepare failed (ValueError: voxelize: test failure); "
                                          "no map in use yet")
        since = client.snapshot()
        srv = client.call("the table", request_id="after-failed-prepare")
        assert srv.reason == ("no usable map after 1 s: the last map failed to prepare "
                              "(ValueError: voxelize: test failure)") and srv.request_id == "after-failed-prepare"
        check_cleared(client.answers_since(since, 1)[0])
        assert node.stats.sentences_timed_out == 3
        st, _ = client.status("timeout_node")
        assert st.level == DiagnosticStatus.ERROR and st.message.startswith("no usable map: the last map failed")

        volatile = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
        pub = client.node.create_publisher(PointCloud2, "/timeout_map", volatile)
        client.wait_for(lambda: node.logged(logging.ERROR, "map_qos_durability:=volatile"),
                        what="the incompatible-QoS error")
        best_effort = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
        pub2 = client.node.create_publisher(PointCloud2, "/timeout_map", best_effort)
        client.wait_for(lambda: node.logged(logging.ERROR, "map_qos_reliability:=best_effort"),
                        what="the incompatible-QoS error (reliability)")
        pub3 = client.node.create_publisher(String, "/timeout_text", QoSProfile(
            depth=10, reliability=ReliabilityPolicy.BEST_EFFORT))
        client.wait_for(lambda: node.logged(logging.ERROR, "sentence publisher on /timeout_text is incompatible"),
                        what="the incompatible-QoS error (sentences)")
        for p in (pub, pub2, pub3):
            client.node.destroy_publisher(p)


def test_map_versions_have_no_gaps_and_drops_say_which_map_stays(running):
    """A malformed map and a failed prepare are dropped with one ERROR line naming the map that
    stays in use (also in /diagnostics: WARN); the next good map is version +1 of the last good one."""
    from diagnostic_msgs.msg import DiagnosticStatus
    from sensor_msgs.msg import PointField

    node, client, gated = running
    good, _ = room_cloud(stamp_sec=610)
    client.publish_map(good)
    v = node.worker.prepared.version
    bad = copy_msg(good)
    bad.fields = list(bad.fields) + [PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1)]
    stays = f"; map v{v} ({good.width * good.height} points, frame 'map') stays in use"
    client.publish_map(bad)
    assert node.logged(logging.ERROR, "map dropped: malformed PointCloud2")
    assert [t for lv, t in node.log_lines if lv >= logging.ERROR][-1].endswith(stays)
    gated.fail_next = True
    other, _ = room_cloud(seed=4, stamp_sec=611)
    client.publish_map(other)
    assert node.logged(logging.ERROR, "map dropped: prepare failed (ValueError: voxelize: test failure)" + stays)
    assert not node.logged(logging.ERROR, "worker")
    st, _ = client.status("segment_node")
    assert st.level == DiagnosticStatus.WARN and "last map dropped: prepare failed" in st.message, st.message
    (res,) = client.ask(["the desk"])
    assert res.map_version == v and res.header.stamp.sec == 610, "the previous map stays in use"
    client.publish_map(room_cloud(seed=5, stamp_sec=612)[0])
    (res,) = client.ask(["the desk"])
    assert res.map_version == v + 1, "no gap for the dropped maps"


def test_text_warnings_for_non_english_and_no_colour(running):
    """French, Chinese and emoji text are answered with a warning; English is not; a map without
    colour adds its own warning to every answer against it."""
    node, client, _ = running
    client.publish_map(room_cloud(colour=False, stamp_sec=620)[0])
    en, fr, zh, emoji = (client.call(t) for t in ("the helicopter", "la chaise rouge", "桌子旁边的椅子", "🪑🪑"))
    nonenglish = [w for w in en.warnings if "English" in w]
    assert not nonenglish
    for r in (fr, zh, emoji):
        assert any("English" in w or "no letters" in w for w in r.warnings), r.text
    assert all(any("no colour" in w for w in r.warnings) for r in (en, fr, zh, emoji))
    client.publish_map(room_cloud(stamp_sec=621)[0])
    (res,) = client.ask(["the desk"])
    assert not any("colour" in w for w in res.warnings)


def test_image_features_field_reaches_the_library(running):
    """A map with a float32 'image_features' field (count C) hands (N, C) features to prepare;
    the tiny model has no 2D branch, so the node says once that it ignores them."""
    from bqnet_ros.conversions import numpy_to_pointcloud2

    node, client, gated = running
    _, scene = room_cloud()
    feats = np.random.default_rng(0).normal(size=(len(scene.xyz), 6)).astype(np.float32)
    msg = numpy_to_pointcloud2(scene.xyz, scene.rgb, frame_id="map", stamp=630.0,
                               extra_fields={"image_features": feats})
    client.publish_map(msg)
    assert node.logged(logging.WARNING, "no 2D branch")
    (res,) = client.ask(["the desk"])
    check_result(res, msg, "the desk")


def test_image_features_for_a_model_with_a_2d_branch(ros_context_factory):
    """A model taking C-channel image features: a map with the field hands (N, C) float32 to
    prepare; a map without it is answered from 3D with a warning, logged once."""
    from bqnet_ros.conversions import numpy_to_pointcloud2
    from bqnet_ros.segment_node import SegmentNode

    ctx = ros_context_factory(["-p", "map_topic:=/img_map", "-p", "text_topic:=/img_text"])
    gated = GatedSegmenter(tiny_segmenter(), image_channels=6)
    node = SegmentNode(context=ctx, node_name="img_node", segmenter=gated)
    with spinning(ctx, node, prefix="/img_node") as client:
        _, scene = room_cloud()
        feats = np.random.default_rng(0).normal(size=(len(scene.xyz), 6)).astype(np.float32)
        msg = numpy_to_pointcloud2(scene.xyz, scene.rgb, frame_id="map", stamp=640.0,
                                   extra_fields={"image_features": feats})
        client.publish_map(msg)
        got = gated.prepare_kwargs[-1]["image_features"]
        assert got.dtype == np.float32 and np.array_equal(got, feats)
        res = client.call("the desk")
        assert not any("image" in w for w in res.warnings)
        for stamp in (641.0, 642.0):
            client.publish_map(numpy_to_pointcloud2(scene.xyz, scene.rgb, frame_id="map", stamp=stamp))
            assert "image_features" not in gated.prepare_kwargs[-1]
        res = client.call("the desk")
        assert any("2D image branch (6 channels)" in w for w in res.warnings)
        assert sum("2D image branch" in t for _, t in node.log_lines) == 1, "logged once"


def test_diagnostics_report_readiness_queue_and_device(running):
    """/diagnostics: ready, the device really used, the map's version, size and age, the queue,
    the drop counters and the latencies, equal to the node's own state."""
    from diagnostic_msgs.msg import DiagnosticStatus

    node, client, _ = running
    client.use_map(room_cloud()[0])
    st, values = client.status("segment_node")
    assert st.name.startswith("segment_node")
    assert values["ready"] == "true" and values["device"] == node.device == node.get_parameter("device_in_use").value
    assert st.level == DiagnosticStatus.OK and st.hardware_id == node.device
    assert int(values["map_version"]) == node.worker.prepared.version
    assert int(values["map_points"]) == node.worker.prepared.num_points and values["map_frame"] == "map"
    assert int(values["queue_length"]) == 0 and float(values["map_age_s"]) >= 0
    assert int(values["sentences_dropped"]) == node.stats.sentences_dropped
    assert int(values["maps_rejected"]) == node.stats.maps_rejected
    assert float(values["last_prepare_ms"]) > 0 and float(values["last_total_ms"]) >= 0
    assert float(values["last_query_ms"]) >= 0 and values["device_requested"] == node.params.device


def test_burst_of_100_sentences_bounded_queue(running):
    """100 sentences at once into a queue of 8: the oldest 92 are dropped and answered
    found=false, the newest 8 by the model; all 100 get one result."""
    from std_msgs.msg import String

    node, client, _ = running
    good, _ = room_cloud()
    client.use_map(good)
    start = len(client.results)
    dropped = node.stats.sentences_dropped
    texts = [f"the chair number {i}" for i in range(100)]
    with node.worker.lock:
        for t in texts:
            node._on_text(String(data=t))
    client.wait_for(lambda: len(client.results) >= start + 100, what="100 results")
    got = client.results[start:start + 100]
    assert sorted(r.text for r in got) == sorted(texts)
    assert len({r.request_id for r in got}) == 100
    assert node.stats.sentences_dropped == dropped + 92
    by_text = {r.text: r for r in got}
    for t in texts[:92]:
        assert by_text[t].reason == "dropped: text queue full"
    for t in texts[92:]:
        check_result(by_text[t], good, t)


def test_map_replaced_while_sentences_queued(running):
    from std_msgs.msg import String

    node, client, _ = running
    a, _ = room_cloud(seed=1, stamp_sec=400)
    b, _ = room_cloud(seed=2, n_points=12_000, stamp_sec=401)
    start = len(client.results)
    replaced = node.stats.maps_replaced
    with node.worker.lock:
        for t in ("the desk", "the red chair", "the table"):
            node._on_text(String(data=t))
        node._on_map(a)
        node._on_map(b)
    client.wait_for(lambda: len(client.results) >= start + 3, what="3 results")
    assert node.stats.maps_replaced == replaced + 1
    for r in client.results[start:start + 3]:
        check_result(r, b, r.text)


def test_nan_points_never_answered(running):
    from bqnet_ros.conversions import numpy_to_pointcloud2

    node, client, _ = running
    _, scene = room_cloud()
    xyz = scene.xyz.copy()
    bad = np.arange(0, len(xyz), 7)
    xyz[bad, 0] = np.nan
    msg = numpy_to_pointcloud2(xyz, scene.rgb, frame_id="map", stamp=200.0)
    client.publish_map(msg)
    (res,) = client.ask(["the chair next to the desk"])
    check_result(res, msg, "the chair next to the desk")
    assert not np.isin(np.asarray(res.point_indices), bad).any()
