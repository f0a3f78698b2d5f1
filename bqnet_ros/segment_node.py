"""ROS 2 node: answers referring sentences against the newest point-cloud map with BQNet.

The node is thin: callbacks turn messages into worker requests (``bqnet_ros.worker`` owns the
model, the queues and the rule that every sentence gets exactly one answer), and answers into
messages (``bqnet_ros.answers``). Sentences come from the text topic (request ids
``topic:<n>``) or the ``~/segment`` service (the caller's ids); both answers go to ``~/result``
with a target cloud and markers, the service's also back to the caller. Parameters are the
table in ``bqnet_ros.parameters``; ``/diagnostics`` reports readiness, map, queue and device.

Set-up runs in two steps, ``_configure`` (model, worker, publishers, text subscription, service)
and ``_activate`` (map subscription, answering): this node runs both at construction; the
managed node of ``bqnet_ros.lifecycle_node`` runs them on its configure and activate
transitions.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSPolicyKind, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header, String
from visualization_msgs.msg import MarkerArray

from bqnet_ros.answers import (answer_header, answer_markers, result_json, result_message, target_centroid,
                               target_cloud)
from bqnet_ros.conversions import pointcloud2_to_numpy
from bqnet_ros.diagnostics import diagnostic_array, node_status
from bqnet_ros.interfaces import Interfaces, load_interfaces
from bqnet_ros.model_setup import configure_segmenter, image_channels, load_segmenter
from bqnet_ros.parameters import DEVICE_IN_USE, SPEC, NodeParams, StartupError, check_ros_arguments, declare_parameters
from bqnet_ros.text_check import english_warning
from bqnet_ros.worker import Answer, MapInput, Request, SegmenterLike, Settings, Worker, WorkerStats

__all__ = ["SegmentNode", "StartupError", "IMAGE_FEATURES_FIELD", "main"]

IMAGE_FEATURES_FIELD = "image_features"  # float32 field of count C in the map cloud
LOG_KEPT = 500  # log lines remembered for tests and tools (all of them go to the ROS log)
SHUTDOWN_GRACE_S = 0.5  # how long destroy_node waits for the worker's current step
# Which parameter fixes an incompatible map publisher, by the QoS policy that clashed.
_QOS_FIX = {
    QoSPolicyKind.DURABILITY: ("map_qos_durability", "volatile",
                               "the publisher is volatile; a latched map needs a transient_local publisher"),
    QoSPolicyKind.RELIABILITY: ("map_qos_reliability", "best_effort", "the publisher is best_effort"),
}


def _qos(depth: int, reliable: bool = True, transient: bool = False) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if transient else DurabilityPolicy.VOLATILE,
    )


class SegmentNode(Node):
    """Subscribes to a map and to sentences, serves ~/segment, publishes the referred object(s)."""

    def __init__(self, *, node_name: str = "segment_node", segmenter: SegmenterLike | None = None,
                 ros_args: Sequence[str] = (), **node_kwargs: Any) -> None:
        """``segmenter``: use this model instead of loading one from the parameters (embedding the
        node in another program). ``ros_args``: the command line the context was made with; its
        parameter files and -p values are checked for wrong-typed values that rcl drops silently
        (main passes them). Raises StartupError when the node cannot work."""
        super().__init__(node_name, **node_kwargs)
        self.log_lines: deque[tuple[int, str]] = deque(maxlen=LOG_KEPT)
        self._closing = False
        self._pub_lock = threading.Lock()  # publishing vs. destroying the publishers
        self._logged_once: set[str] = set()
        self._calls = threading.Condition()  # open ~/segment calls, waited for at shutdown
        self._calls_open = 0
        self.worker: Worker | None = None  # None: no model (a lifecycle node before configure)
        self.stats = WorkerStats()  # the current worker's from configure on
        self._segmenter: SegmenterLike | None = None
        self.device, self.model_source = "", "not loaded"
        self._pub_result: Any = None  # None: the answer publishers are closed (_closed_publishers)
        self._pub_diag: Any = None
        self._sub_map: Any = None
        try:
            check_ros_arguments(ros_args, self.get_fully_qualified_name())
            self._declare()
            self._start(segmenter)
        except BaseException:
            super().destroy_node()  # no half-built node left in the context
            raise

    # ----------------------------------------------------------------- set-up
    def _declare(self) -> None:
        """What the node has in every state: parameters, interfaces, /diagnostics."""
        self.params: NodeParams = declare_parameters(self)
        self._interfaces: Interfaces | None = load_interfaces()
        if self._interfaces is None:
            self._log(logging.WARNING, "bqnet_ros_interfaces is not built (run tools/build_msgs.sh): ~/result is "
                                       "published as JSON (std_msgs/String on ~/result_json), no ~/segment service")
        self._topic_seq = 0
        self._service_seq = 0
        self._last_frame = "map"
        self._pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = None
        if self.params.diagnostics_period > 0:
            self._diag_timer = self.create_timer(self.params.diagnostics_period, self.publish_diagnostics,
                                                 callback_group=MutuallyExclusiveCallbackGroup())
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)

    def _start(self, segmenter: SegmenterLike | None) -> None:
        """The plain node answers from construction on."""
        self._configure(segmenter)
        self._activate()
        self._log(logging.INFO, f"ready: {self._summary()}")

    def _summary(self) -> str:
        p = self.params
        return (f"map {p.map_topic} ({p.map_qos_durability}, {p.map_qos_reliability}), text {p.text_topic}, "
                f"service {self.get_fully_qualified_name()}/segment, task {p.task}, device {self.device} "
                f"(asked for {p.device!r}), model {self.model_source}"
                + (f", image features: {self._image_channels} channels" if self._image_channels else ""))

    def _configure(self, segmenter: SegmenterLike | None) -> None:
        """Load (or take) the model; create the worker, the answer publishers, the text
        subscription and ~/segment. StartupError when the model cannot be loaded."""
        p = self.params
        if segmenter is None:
            loaded = load_segmenter(p)
            segmenter, self.device, self.model_source = loaded.segmenter, loaded.device, loaded.source
            for w in loaded.warnings:
                self._log(logging.WARNING, w)
        else:  # the node's inference parameters (max_points, seed, ...) hold for a given model too
            for w in configure_segmenter(segmenter, p):
                self._log(logging.WARNING, w)
            self.device, self.model_source = str(getattr(segmenter, "device", "cpu")), "given"
        self._segmenter = segmenter
        if not self.has_parameter(DEVICE_IN_USE):  # a reconfigured lifecycle node: same device parameter
            self.declare_parameter(DEVICE_IN_USE, self.device, ParameterDescriptor(
                description="The torch device the model really runs on (after the CPU fallback); read-only.",
                read_only=True), ignore_override=True)
        self._image_channels = image_channels(segmenter)

        out_qos = _qos(p.qos_depth)
        self._pub_cloud = self.create_publisher(PointCloud2, "~/target_cloud", out_qos)
        self._pub_centroid = self.create_publisher(PointStamped, "~/target_centroid", out_qos)
        self._pub_markers = self.create_publisher(MarkerArray, "~/markers", out_qos)
        if self._interfaces is not None:
            self._pub_result = self.create_publisher(self._interfaces.ReferringSegmentation, "~/result", out_qos)
        else:
            self._pub_result = self.create_publisher(String, "~/result_json", out_qos)

        self.worker = Worker(segmenter=segmenter, settings=self._settings, deliver=self._publish_answer,
                             log=self._log, prepare_map=self._prepare_map)
        self.stats = self.worker.stats

        self._topics = MutuallyExclusiveCallbackGroup()
        # KEEP_ALL: DDS never drops a sentence silently; the worker's bounded queue (counted) does.
        text_qos = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.VOLATILE)
        self._sub_text = self.create_subscription(
            String, p.text_topic, self._on_text, text_qos, callback_group=self._topics,
            event_callbacks=SubscriptionEventCallbacks(incompatible_qos=self._on_text_incompatible))
        self._srv = None
        if self._interfaces is not None:
            # Reentrant: each call waits for its answer in its own executor thread.
            self._srv = self.create_service(self._interfaces.Segment, "~/segment", self._on_segment,
                                            callback_group=ReentrantCallbackGroup())

    def _activate(self) -> None:
        """Answer sentences; subscribe to the map (a latched map arrives again on each activation)."""
        assert self.worker is not None, "configure before activate"
        p = self.params
        self.worker.resume()
        map_qos = _qos(1, reliable=p.map_qos_reliability == "reliable",
                       transient=p.map_qos_durability == "transient_local")
        self._sub_map = self.create_subscription(
            PointCloud2, p.map_topic, self._on_map, map_qos, callback_group=self._topics,
            event_callbacks=SubscriptionEventCallbacks(incompatible_qos=self._on_map_incompatible))

    def _settings(self) -> Settings:
        p = self.params
        return Settings(task=p.task, score_threshold=p.score_threshold, max_batch=p.max_batch,
                        text_queue_size=p.text_queue_size, map_wait_timeout=p.map_wait_timeout,
                        max_points=p.max_points)

    # ----------------------------------------------------------------- parameters at run time
    def _validate_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Refuse read-only or invalid changes (rclpy already checked types and ranges)."""
        changes = {}
        for prm in params:
            spec = SPEC.get(prm.name)
            if spec is None:
                continue
            if not spec.dynamic:
                return SetParametersResult(successful=False, reason=f"{prm.name} is read-only")
            changes[prm.name] = prm.value
        try:
            self.params.replace(**changes)
        except (ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params: list[Parameter]) -> None:
        changes = {prm.name: prm.value for prm in params if prm.name in SPEC}
        if changes:
            self.params = self.params.replace(**changes)

    # ----------------------------------------------------------------- logging
    def _log(self, level: int, text: str) -> None:
        """ROS log line, remembered in log_lines; after shutdown began, worker leftovers stay quiet."""
        if self._closing and level >= logging.WARNING:
            level = logging.DEBUG
        self.log_lines.append((level, text))
        lg = self.get_logger()  # one call site per severity: rclpy refuses a site whose severity changes
        if level >= logging.ERROR:
            lg.error(text)
        elif level >= logging.WARNING:
            lg.warning(text)
        elif level >= logging.INFO:
            lg.info(text)
        else:
            lg.debug(text)

    def _log_once(self, key: str, level: int, text: str) -> None:
        if key not in self._logged_once:
            self._logged_once.add(key)
            self._log(level, text)

    def logged(self, level: int, part: str) -> bool:
        """Whether a line at ``level`` or above containing ``part`` was logged (tests, tools)."""
        return any(lv >= level and part in t for lv, t in list(self.log_lines))

    # ----------------------------------------------------------------- QoS events
    def _on_map_incompatible(self, info: Any) -> None:
        kind = QoSPolicyKind(info.last_policy_kind) if info.last_policy_kind else QoSPolicyKind.INVALID
        name, value, why = _QOS_FIX.get(kind, ("map_qos_durability / map_qos_reliability", "volatile / best_effort",
                                               f"policy {kind.name} differs"))
        p = self.params
        self._log(logging.ERROR,
                  f"a map publisher on {p.map_topic} is incompatible with this node's map subscription "
                  f"({p.map_qos_durability}, {p.map_qos_reliability}): {why}. No map from it will arrive: set "
                  f"parameter {name}:={value} (or make the publisher reliable + transient_local). "
                  f"[{info.total_count} incompatible publisher event(s)]")

    def _on_text_incompatible(self, info: Any) -> None:
        kind = QoSPolicyKind(info.last_policy_kind) if info.last_policy_kind else QoSPolicyKind.INVALID
        self._log(logging.ERROR,
                  f"a sentence publisher on {self.params.text_topic} is incompatible ({kind.name}): this node "
                  "subscribes reliable + volatile; publish the sentences reliable (ros2 topic pub's default).")

    # ----------------------------------------------------------------- callbacks
    def _on_map(self, msg: PointCloud2) -> None:
        worker = self.worker
        if worker is not None:  # None: cleaned up while the message was on its way
            worker.submit_map(lambda: self._map_input(msg))

    def _map_input(self, msg: PointCloud2) -> MapInput:
        """Runs in the worker: ValueError for a malformed cloud."""
        has_feats = any(f.name == IMAGE_FEATURES_FIELD for f in msg.fields)
        arrays = pointcloud2_to_numpy(msg, extra_fields=[IMAGE_FEATURES_FIELD] if has_feats else ())
        feats = arrays.fields.get(IMAGE_FEATURES_FIELD)
        if feats is not None:
            feats = np.asarray(feats, np.float32).reshape(arrays.n_points, -1)
        header = Header(frame_id=msg.header.frame_id, stamp=msg.header.stamp)
        if not header.frame_id:
            self._log(logging.WARNING, "map has an empty header.frame_id: results will carry an empty frame too")
        self._last_frame = header.frame_id or self._last_frame
        return MapInput(header=header, xyz=arrays.xyz, rgb=arrays.rgb, image_features=feats)

    def _prepare_map(self, m: MapInput) -> tuple[Any, list[str]]:
        """Runs in the worker: the message's arrays to the library, and this map's warnings."""
        warnings = []
        if m.rgb is None:
            warnings.append("map has no colour (no rgb/rgba or r,g,b fields): colour words cannot help; the model "
                            "sees grey")
            self._log(logging.WARNING, warnings[-1])
        kwargs: dict[str, Any] = {}
        c, feats = self._image_channels, m.image_features
        if c > 0 and feats is None:
            warnings.append(f"the model has a 2D image branch ({c} channels) but the map has no "
                            f"'{IMAGE_FEATURES_FIELD}' field: answered from 3D only")
            self._log_once("no_image_features", logging.WARNING, warnings[-1] + " (logged once)")
        elif c > 0 and feats.shape[1] != c:
            warnings.append(f"the map's '{IMAGE_FEATURES_FIELD}' has {feats.shape[1]} channels, the model takes {c}: "
                            "ignored, answered from 3D only")
            self._log(logging.WARNING, warnings[-1])
        elif c > 0:
            kwargs["image_features"] = feats
        elif feats is not None:
            self._log_once("unused_image_features", logging.WARNING,
                           f"maps carry '{IMAGE_FEATURES_FIELD}' but the model has no 2D branch: ignored (logged once)")
        if self.params.incremental_maps and hasattr(self._segmenter, "update"):
            return self._update_map(m, kwargs), warnings
        return self._segmenter.prepare(m.xyz, m.rgb, **kwargs), warnings

    def _update_map(self, m: MapInput, kwargs: dict[str, Any]) -> Any:
        """``incremental_maps``: the library decides between a local update and a full prepare."""
        prepared = self.worker.prepared if self.worker is not None else None
        cache = self._segmenter.update(prepared.cache if prepared is not None else None, m.xyz, m.rgb, **kwargs)
        info = getattr(cache, "update_info", {})
        self._log(logging.INFO, f"map prepared by {info.get('mode', 'full')} update"
                                + (f" ({info['reason']})" if info.get("reason") else ""))
        return cache

    def _request(self, text: str, request_id: str, task: str | None = None) -> Request:
        req = Request(text=text, request_id=request_id, stamp=self.get_clock().now().to_msg(), task=task)
        w = english_warning(text) if text.strip() else None
        if w:
            req.warnings.append(w)
            self._log(logging.WARNING, f"{request_id} {text[:60]!r}: {w}")
        return req

    def _on_text(self, msg: String) -> None:
        worker = self.worker
        if worker is None:  # cleaned up while the message was on its way: no publisher left to answer on
            self._log(logging.WARNING, f"sentence {str(msg.data)[:60]!r} arrived after cleanup: not answered")
            return
        self._topic_seq += 1
        worker.submit(self._request(str(msg.data), f"topic:{self._topic_seq}"))

    def _on_segment(self, request: Any, response: Any) -> Any:
        """~/segment: queue the sentence like a topic one, wait for its answer."""
        worker = self.worker
        if worker is None:  # a call that raced with cleanup (the service is gone after it)
            response.result = self._interfaces.ReferringSegmentation(text=request.text, request_id=request.request_id,
                                                                      reason="node not configured (lifecycle)")
            return response
        with worker.lock:
            self._service_seq += 1
            rid = request.request_id or f"service:{self._service_seq}"
        req = self._request(str(request.text), rid, str(request.task).strip() or None)
        done = threading.Event()
        box: list[Any] = []
        req.reply = lambda msg: (box.append(msg), done.set())
        with self._calls:
            self._calls_open += 1
        try:
            worker.submit(req)
            while not done.wait(0.1):
                if self._closing and not done.wait(SHUTDOWN_GRACE_S):
                    break
            if box:
                response.result = box[0]
            else:  # the worker answers everything at stop(); this only guards against a bug there
                response.result = self._interfaces.ReferringSegmentation(text=req.text, request_id=rid,
                                                                          reason="node shutting down")
            return response
        finally:
            with self._calls:
                self._calls_open -= 1
                self._calls.notify_all()

    # ----------------------------------------------------------------- publishing
    def _publish_answer(self, a: Answer) -> None:
        """Result, target cloud, markers (always) and centroid (when found); the service reply."""
        header = answer_header(a, self._last_frame)
        total_ms = (time.monotonic() - a.request.t_received) * 1e3
        if self._interfaces is not None:
            msg = result_message(self._interfaces, a, header, total_ms)
        else:
            msg = result_json(a, header, total_ms)
        with self._pub_lock:
            if not self._closed_publishers():
                try:
                    self._pub_cloud.publish(target_cloud(a, header))
                    centroid = target_centroid(a, header)
                    if centroid is not None:
                        self._pub_centroid.publish(centroid)
                    if self.params.publish_markers:
                        self._pub_markers.publish(answer_markers(a, header, self.params.marker_lifetime))
                    self._pub_result.publish(msg)
                except Exception as exc:  # the node never dies on one answer
                    self._log(logging.ERROR, f"publishing the answer to {a.request.request_id} failed: "
                                             f"{type(exc).__name__}: {exc}")
        reply = getattr(a.request, "reply", None)
        if reply is not None and self._interfaces is not None:
            reply(msg)
        lvl = logging.INFO if not a.found else logging.DEBUG
        self._log(lvl, f"{a.request.request_id} {a.request.text[:60]!r}: "
                       + (f"found {len(a.objects)} object(s), score {a.score:.2f}" if a.found
                          else f"not found ({a.reason})")
                       + " " + " ".join(f"{k}={v:.1f}" for k, v in a.latencies_ms.items()))

    def _closed_publishers(self) -> bool:
        return self._pub_result is None

    def _lifecycle_status(self) -> dict[str, str]:
        """Extra arguments of node_status: none for the plain node (the lifecycle node's state)."""
        return {}

    def publish_diagnostics(self) -> None:
        status = node_status(self.get_name(), self.worker, device=self.device, device_requested=self.params.device,
                             model=self.model_source, **self._lifecycle_status())
        with self._pub_lock:
            if self._pub_diag is not None:
                self._pub_diag.publish(diagnostic_array(self.get_clock().now().to_msg(), status))

    # ----------------------------------------------------------------- shutdown
    def shutdown(self) -> None:
        """Answer every pending sentence ('node shutting down'), then let the worker go: a
        running prepare is not waited for beyond SHUTDOWN_GRACE_S and its result is dropped."""
        if self._closing:
            return
        self._closing = True  # from here on, leftovers of the worker log at debug level
        self._stop_worker()

    def _stop_worker(self) -> None:
        """Answer what the worker holds ('node shutting down'), give the answered service calls
        SHUTDOWN_GRACE_S to send their responses and the thread the rest of it to end."""
        worker = self.worker
        if worker is None:
            return
        worker.stop()
        deadline = time.monotonic() + SHUTDOWN_GRACE_S
        with self._calls:
            while self._calls_open and time.monotonic() < deadline:
                self._calls.wait(deadline - time.monotonic())
        worker.join(max(0.0, deadline - time.monotonic()))

    def destroy_node(self) -> None:
        self.shutdown()
        with self._pub_lock:  # the worker may still finish a step: it publishes nothing now
            self._pub_result = self._pub_diag = None
        super().destroy_node()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        worker = self.worker
        return True if worker is None else worker.wait_idle(timeout)


def main(args: Sequence[str] | None = None, node_class: type[SegmentNode] = SegmentNode) -> int:
    """Console script: run the node until Ctrl-C or SIGTERM; exit code 1 (with ``cannot start:
    ...``) when it cannot start.

    rclpy's own signal handler would shut the context down before the node could answer the
    sentences still queued; this one only asks the spin loop to stop, and the node answers them
    ('node shutting down') while it can still publish; a prepare still running then is not
    waited for, and the process ends without finalizing the interpreter (``_exit_now``).
    ``node_class``: the node to run (the lifecycle node's console script passes its own).
    """
    argv = list(args) if args is not None else sys.argv
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    node: SegmentNode | None = None
    executor: MultiThreadedExecutor | None = None
    code = 0
    try:
        node = node_class(ros_args=argv)
        # Threads: the topics, the diagnostics timer, and service calls that wait for answers.
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except StartupError as exc:
        rclpy.logging.get_logger("segment_node").fatal(f"cannot start: {exc}")
        code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.shutdown()
            if executor is not None:
                executor.spin_once(timeout_sec=0.05)  # hand the last service responses out
            node.destroy_node()
        if executor is not None:
            executor.shutdown(timeout_sec=SHUTDOWN_GRACE_S)
        rclpy.try_shutdown()
    if Worker.threads_running():
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """End the process at once: the worker is still inside the model (a prepare that shutdown did
    not wait for), and Python's finalization would end that thread mid-C++, which aborts the
    process ('terminate called without an active exception', killed by SIGABRT)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    ctypes.CDLL(None).fflush(None)  # the C streams, where rcutils writes the ROS log lines
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
