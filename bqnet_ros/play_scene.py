"""Publish a scene as a latched map, send sentences, print the node's answers.

    play_scene --scene demo --text "the chair next to the desk"
    play_scene --scene room.ply --text "the red chair" --text "the table" --timeout 60
    play_scene --scene minimal            # just keep the map latched (RViz), until Ctrl-C

Lets anyone try the whole loop without a robot: the map goes out reliable + transient local
(depth 1), so a node started later still receives it. Each sentence is a call of the node's
``~/segment`` service (request id ``play_scene:<i>``), so every printed answer is the one to its
sentence; without the generated interfaces it falls back to the text topic and the JSON result.
Exit code 0 when every sentence was answered, 2 on timeout, 1 on bad arguments or an unreadable
scene.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import String

from bqnet_ros.conversions import numpy_to_pointcloud2
from bqnet_ros.interfaces import load_interfaces

__all__ = ["SceneArrays", "load_scene", "ScenePlayer", "ResultSummary", "summarize", "main"]

SYNTHETIC = ("demo", "minimal")
_DEMO_POINTS = 190_000  # demo_room's size at RoomConfig's default density


@dataclass
class SceneArrays:
    """A scene to publish: xyz float32 (N, 3), rgb uint8 (N, 3) or None, a name for logs."""

    xyz: np.ndarray
    rgb: np.ndarray | None
    name: str


def load_scene(spec: str, *, n_points: int | None = None, seed: int = 0) -> SceneArrays:
    """'demo' / 'minimal' (synthetic rooms) or a .ply file, at most ``n_points`` points.

    Raises ValueError / FileNotFoundError.
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError("scene must be 'demo', 'minimal' or a .ply file")
    if n_points is not None and n_points < 1:
        raise ValueError(f"points must be >= 1, got {n_points}")
    if spec in SYNTHETIC:
        from bqnet_model.synth_extra import load_synth

        synthetic = load_synth()

        if spec == "minimal":
            scene = synthetic.minimal_room(**({"n_points": n_points} if n_points else {}), seed=seed)
        else:
            cfg = synthetic.RoomConfig()
            if n_points is not None:  # the demo room has ~140k points at the default density
                cfg = synthetic.RoomConfig(density=cfg.density * min(1.0, 1.3 * n_points / _DEMO_POINTS))
            scene = synthetic.demo_room(seed=seed, config=cfg)
        xyz, rgb = np.asarray(scene.xyz, np.float32), np.asarray(scene.rgb, np.uint8)
        return _cap(SceneArrays(xyz, rgb, spec), n_points, seed)
    path = Path(spec).expanduser()
    if path.suffix.lower() != ".ply":
        raise ValueError(f"scene {spec!r} is neither 'demo', 'minimal' nor a .ply file")
    if not path.is_file():
        raise FileNotFoundError(f"scene file {path} not found")
    from bqnet_model.ply import read_ply

    cloud = read_ply(path)
    return _cap(SceneArrays(np.asarray(cloud.xyz, np.float32), cloud.rgb, path.name), n_points, seed)


def _cap(scene: SceneArrays, n_points: int | None, seed: int) -> SceneArrays:
    """At most ``n_points`` points (seeded random subset, input order kept)."""
    if n_points is None or len(scene.xyz) <= n_points:
        return scene
    from bqnet_model.pointcloud import random_downsample

    sel = random_downsample(len(scene.xyz), n_points, seed=seed)
    rgb = scene.rgb[sel] if scene.rgb is not None else None
    return SceneArrays(scene.xyz[sel], rgb, scene.name)


@dataclass
class ResultSummary:
    """What play_scene prints of one answer."""

    text: str
    found: bool
    reason: str = ""
    request_id: str = ""
    score: float = 0.0
    centroid: tuple[float, float, float] | None = None
    num_points: int = 0
    num_objects: int = 0
    total_ms: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        if not self.found:
            return f"{self.text!r}: not found ({self.reason}), best score {self.score:.2f} [{self.total_ms:.0f} ms]"
        c = ", ".join(f"{v:.2f}" for v in (self.centroid or (0.0, 0.0, 0.0)))
        return (f"{self.text!r}: found {self.num_objects} object(s), score {self.score:.2f}, "
                f"centroid ({c}), {self.num_points} points [{self.total_ms:.0f} ms]")


def summarize(msg: Any) -> ResultSummary:
    """A ReferringSegmentation message (or the node's JSON fallback String) -> ResultSummary."""
    if isinstance(msg, String):
        d = json.loads(msg.data)
        objs = d.get("objects", [])
        best = objs[0] if objs else None
        return ResultSummary(
            text=d["text"], found=bool(d["found"]), reason=d.get("reason", ""), request_id=d.get("request_id", ""),
            score=float(d.get("score", best["score"] if best else 0.0)),
            centroid=tuple(best["centroid"]) if best else None,
            num_points=len(d.get("point_indices", [])), num_objects=len(objs), total_ms=float(d.get("total_ms", 0)),
        )
    best = msg.objects[0] if len(msg.objects) else None
    return ResultSummary(
        text=msg.text, found=bool(msg.found), reason=msg.reason, request_id=msg.request_id,
        score=float(msg.score),
        centroid=(best.centroid.x, best.centroid.y, best.centroid.z) if best else None,
        num_points=len(msg.point_indices), num_objects=len(msg.objects), total_ms=float(msg.total_ms),
        extra=dict(prepare_ms=msg.prepare_ms, queue_ms=msg.queue_ms, text_ms=msg.text_ms,
                   decoder_ms=msg.decoder_ms, post_ms=msg.post_ms),
    )


class ScenePlayer(Node):
    """Publishes the map (latched), asks ~/segment (or the text topic), collects the answers."""

    def __init__(
        self,
        scene: SceneArrays,
        *,
        map_topic: str = "/map_cloud",
        text_topic: str = "/referring_text",
        result_topic: str = "/segment_node/result",
        service: str = "/segment_node/segment",
        frame_id: str = "map",
        node_name: str = "play_scene",
        **node_kwargs: Any,
    ) -> None:
        super().__init__(node_name, **node_kwargs)
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        events = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.VOLATILE)
        self.scene = scene
        self.map_pub = self.create_publisher(PointCloud2, map_topic, latched)
        self.text_pub = self.create_publisher(String, text_topic, events)
        self.results: list[Any] = []
        self.iface = iface = load_interfaces()
        self.client = None
        if iface is not None:
            self.client = self.create_client(iface.Segment, service)
        else:
            self.get_logger().warning("bqnet_ros_interfaces not built: listening to the JSON fallback")
            self.result_sub = self.create_subscription(String, result_topic + "_json", self.results.append, events)
        self.map_msg = numpy_to_pointcloud2(
            scene.xyz, scene.rgb, frame_id=frame_id, stamp=self.get_clock().now().to_msg()
        )

    def publish_map(self) -> None:
        self.map_pub.publish(self.map_msg)
        self.get_logger().info(f"published {self.scene.name}: {len(self.scene.xyz)} points (latched)")

    def ready(self) -> bool:
        """Whether the node is there: its service (or, without the interfaces, the text topic)."""
        if self.client is not None:
            return self.client.service_is_ready()
        return self.text_pub.get_subscription_count() > 0

    def send(self, text: str, request_id: str) -> Any:
        """Ask one sentence; a future of its answer (None on the topic fallback: results come in order)."""
        if self.client is not None:
            return self.client.call_async(self.iface.Segment.Request(text=text, request_id=request_id))
        self.text_pub.publish(String(data=text))
        return None


def _spin_until(node: Node, done: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        rclpy.spin_once(node, timeout_sec=min(0.1, left))
    return True


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="play_scene", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scene", default="demo", help="'demo', 'minimal' or a .ply file (default: demo)")
    ap.add_argument("--points", type=int, default=None, help="at most this many points (synthetic scenes are generated near it)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--text", action="append", default=[], help="a sentence to send (repeatable)")
    ap.add_argument("--map-topic", default="/map_cloud")
    ap.add_argument("--text-topic", default="/referring_text")
    ap.add_argument("--result-topic", default="/segment_node/result", help="JSON fallback only")
    ap.add_argument("--service", default="/segment_node/segment", help="the node's ~/segment service")
    ap.add_argument("--frame", default="map", help="frame_id of the map (default: map)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the node and each answer")
    ap.add_argument("--keep", action="store_true", help="keep the map latched after the answers (until Ctrl-C)")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``play_scene``. ROS arguments after ``--ros-args`` go to rclpy."""
    raw = list(sys.argv[1:] if argv is None else argv)
    ros_args = raw[raw.index("--ros-args"):] if "--ros-args" in raw else []
    mine = raw[: raw.index("--ros-args")] if ros_args else raw
    args = _parser().parse_args(mine)
    if args.timeout <= 0:
        print("play_scene: --timeout must be > 0", file=sys.stderr)
        return 1
    try:
        scene = load_scene(args.scene, n_points=args.points, seed=args.seed)
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"play_scene: {exc}", file=sys.stderr)
        return 1
    rclpy.init(args=["play_scene"] + ros_args)
    node = ScenePlayer(scene, map_topic=args.map_topic, text_topic=args.text_topic,
                       result_topic=args.result_topic, service=args.service, frame_id=args.frame)
    code = 0
    try:
        node.publish_map()
        if args.text:
            log = node.get_logger()
            if not _spin_until(node, node.ready, args.timeout):
                log.error(f"no segment_node answers on {args.service} / {args.text_topic} after {args.timeout:.0f} s: "
                          "is it running?")
                return 2
            futures = [node.send(text, f"play_scene:{i + 1}") for i, text in enumerate(args.text)]
            for i, fut in enumerate(futures):
                done = (lambda f=fut: f.done()) if fut is not None else (lambda i=i: len(node.results) > i)
                if not _spin_until(node, done, args.timeout):
                    log.error(f"timed out after {args.timeout:.0f} s waiting for answer {i + 1}/{len(args.text)}")
                    code = 2
                    break
                print(summarize(fut.result().result if fut is not None else node.results[i]).line(), flush=True)
        if args.keep or not args.text:
            node.get_logger().info("map stays latched; Ctrl-C to stop")
            rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
