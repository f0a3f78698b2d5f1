"""play_scene against a real node, the JSON fallback, the RViz file, the shipped model."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import yaml

from ros_harness import PARAMS_FILE, ROOT, WAIT, room_cloud, spinning, tiny_segmenter

SHIPPED_MODEL = ROOT / "models" / "bqnet_tiny.pth"


def test_play_scene_round_trip_through_the_service(ros_context_factory, capsys):
    """play_scene publishes a latched map, asks ~/segment per sentence, prints each answer."""
    from bqnet_ros import play_scene
    from bqnet_ros.segment_node import SegmentNode

    ctx = ros_context_factory()
    node = SegmentNode(context=ctx, segmenter=tiny_segmenter())
    with spinning(ctx, node):
        code = play_scene.main(["--scene", "minimal", "--points", "6000", "--text", "the red chair",
                                "--text", "the table", "--timeout", str(WAIT)])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = [ln for ln in out.splitlines() if ln.startswith("'")]
    assert len(lines) == 2 and lines[0].startswith("'the red chair'") and lines[1].startswith("'the table'")
    assert node.stats.sentences_received == 2 and node.stats.maps_prepared == 1
    answered = [t.split(" ", 1) for _, t in node.log_lines if t.startswith("play_scene:")]
    assert sorted((rid, text.split("'")[1]) for rid, text in answered) == [
        ("play_scene:1", "the red chair"), ("play_scene:2", "the table")], "asked through ~/segment with its ids"


def test_play_scene_exit_codes(ros_domain_id, capsys):
    from bqnet_ros import play_scene

    assert play_scene.main(["--scene", "nothing.txt"]) == 1
    assert "neither" in capsys.readouterr().err
    assert play_scene.main(["--scene", "minimal", "--timeout", "0"]) == 1
    code = play_scene.main(["--scene", "minimal", "--points", "500", "--text", "the desk",
                            "--service", "/nobody/segment", "--map-topic", "/unused_map", "--timeout", "1"])
    assert code == 2


def test_load_scene_sources_and_errors(tmp_path):
    from bqnet_model.ply import write_ply
    from bqnet_ros.play_scene import load_scene

    minimal = load_scene("minimal", n_points=2_000, seed=1)
    assert 0 < len(minimal.xyz) <= 2_000 and minimal.rgb.dtype == np.uint8
    path = tmp_path / "room.ply"
    write_ply(path, minimal.xyz, minimal.rgb)
    ply = load_scene(str(path))
    assert np.allclose(ply.xyz, minimal.xyz) and np.array_equal(ply.rgb, minimal.rgb)
    assert len(load_scene(str(path), n_points=500).xyz) == 500
    with pytest.raises(ValueError, match="neither"):
        load_scene("room.xyz")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_scene(str(tmp_path / "missing.ply"))
    with pytest.raises(ValueError, match="points must be >= 1"):
        load_scene("demo", n_points=0)


def test_without_generated_messages_results_go_out_as_json(ros_context_factory, monkeypatch):
    """The interfaces not built: the node warns and still answers, as JSON on ~/result_json,
    request id included."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import String

    import bqnet_ros.segment_node as sn

    monkeypatch.setattr(sn, "load_interfaces", lambda required=False: None)
    ctx = ros_context_factory(["-p", "map_topic:=/json_map", "-p", "text_topic:=/json_text"])
    node = sn.SegmentNode(context=ctx, node_name="json_node", segmenter=tiny_segmenter())
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
        assert node.logged(30, "~/result_json")
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
        n = map_msg.width * map_msg.height
        assert d["text"] == "the desk" and d["frame_id"] == "map" and d["map_num_points"] == n
        assert d["request_id"] == "topic:1" and 0.0 <= d["score"] <= 1.0
        assert d["found"] == bool(d["objects"]) and all(i < n for i in d["point_indices"])
    finally:
        node.destroy_node()
        ex.shutdown()
        th.join(10)
        client.destroy_node()


def test_rviz_config_is_valid():
    cfg = yaml.safe_load((ROOT / "config" / "bqnet.rviz").read_text())
    vm = cfg["Visualization Manager"]
    assert vm["Global Options"]["Fixed Frame"] == "map"
    displays = {d["Class"].split("/")[-1] + ":" + d.get("Topic", {}).get("Value", ""): d for d in vm["Displays"]}
    m = displays["PointCloud2:/map_cloud"]
    assert m["Color Transformer"] == "RGB8" and m["Topic"]["Durability Policy"] == "Transient Local"
    t = displays["PointCloud2:/segment_node/target_cloud"]
    assert t["Color Transformer"] == "FlatColor" and t["Size (Pixels)"] > m["Size (Pixels)"]
    assert "MarkerArray:/segment_node/markers" in displays


@pytest.mark.skipif(not SHIPPED_MODEL.exists(), reason="shipped model not trained yet")
def test_shipped_model_finds_the_chair_next_to_the_desk(ros_context_factory):
    """With the trained checkpoint and its own inference settings, the centroid lies inside the
    true chair's box."""
    from bqnet_synth import demo_room
    from bqnet_ros.conversions import numpy_to_pointcloud2
    from bqnet_ros.segment_node import SegmentNode

    ctx = ros_context_factory(["--params-file", str(PARAMS_FILE), "-p", "device:=cpu",
                               "-p", f"checkpoint:={SHIPPED_MODEL}"])
    node = SegmentNode(context=ctx, node_name="segment_node")
    with spinning(ctx, node) as client:
        scene = demo_room(seed=0)
        client.publish_map(numpy_to_pointcloud2(scene.xyz, scene.rgb, frame_id="map", stamp=900.0))
        res = client.call("the chair next to the desk")
        assert res.found
        c = res.objects[0].centroid
        chairs = [o for o in scene.objects if o.name == "chair"]
        desk = next(o for o in scene.objects if o.name == "desk")
        target = min(chairs, key=lambda o: np.linalg.norm((o.box_min + o.box_max) / 2 - (desk.box_min + desk.box_max) / 2))
        got = np.array([c.x, c.y, c.z])
        inside = (target.box_min - 0.05 <= got).all() and (got <= target.box_max + 0.05).all()
        assert inside, f"centroid {got.round(2)} outside the chair's box"
