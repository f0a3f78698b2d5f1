"""segment_node with ``incremental_maps:=true``, through real rclpy topics: a grown map is prepared
by ``Segmenter.update`` (only the changed region re-encoded), answers keep the full contract, and a
map that changed too much falls back to a full prepare."""

from __future__ import annotations

import numpy as np

from ros_harness import PARAMS_FILE, check_result, room_cloud, spinning, tiny_segmenter


def _grown(scene, stamp_sec: int, extra: int = 300):
    """The scene's points plus a small box of new points in one corner (a growing fused map)."""
    from builtin_interfaces.msg import Time

    from bqnet_ros.conversions import numpy_to_pointcloud2

    rng = np.random.default_rng(0)
    lo = scene.xyz.min(axis=0)
    box = (lo + np.array([0.3, 0.3, 0.0]) + rng.uniform(0.0, 0.3, (extra, 3))).astype(np.float32)
    xyz = np.concatenate([scene.xyz.astype(np.float32), box])
    rgb = np.concatenate([scene.rgb, np.full((extra, 3), 200, np.uint8)])
    return numpy_to_pointcloud2(xyz, rgb, frame_id="map", stamp=Time(sec=stamp_sec, nanosec=0))


def test_grown_map_is_updated_incrementally(ros_context_factory):
    from bqnet_ros.segment_node import SegmentNode

    ctx = ros_context_factory(["--params-file", str(PARAMS_FILE), "-p", "allow_untrained:=true",
                               "-p", "device:=cpu", "-p", "incremental_maps:=true"])
    node = SegmentNode(context=ctx, segmenter=tiny_segmenter())
    assert node.params.incremental_maps
    with spinning(ctx, node) as client:
        first, scene = room_cloud(seed=3, stamp_sec=700)
        client.publish_map(first)
        check_result(client.call("the chair"), first, "the chair")
        assert node.worker.prepared.cache.update_info["mode"] == "full"  # nothing cached yet
        grown = _grown(scene, stamp_sec=701)
        client.publish_map(grown)
        client.wait_for(lambda: node.worker.prepared is not None and node.worker.prepared.version == 2,
                        what="the grown map prepared")
        info = node.worker.prepared.cache.update_info
        assert info["mode"] == "incremental", info
        check_result(client.call("the chair"), grown, "the chair")
        other, _ = room_cloud(seed=4, stamp_sec=702)  # another room: most voxels change
        client.publish_map(other)
        client.wait_for(lambda: node.worker.prepared.version == 3, what="the other map prepared")
        assert node.worker.prepared.cache.update_info["mode"] == "full"
        check_result(client.call("the table"), other, "the table")
