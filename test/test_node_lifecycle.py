"""The managed segment node (bqnet_ros.lifecycle_node) with real rclpy: transitions, answers per state.

The state changes go through the node's real ``~/change_state`` and ``~/get_state`` services (as
``ros2 lifecycle set`` and lifecycle managers drive it) where the test is about the ROS
interface, and through the node's own ``trigger_*`` / ``shutdown`` where it is about timing.
The model is the library's tiny random-weight one: the plumbing is tested, not the accuracy.
"""

from __future__ import annotations

import ast
import gc
import logging
import signal
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from ros_harness import (ROOT, TINY, WAIT, Client, GatedSegmenter, check_result, room_cloud, spinning,
                         tiny_segmenter)


class Lifecycle:
    """Client of one node's lifecycle services."""

    def __init__(self, node: Any, fqn: str) -> None:
        from lifecycle_msgs.srv import ChangeState, GetState

        self._change = node.create_client(ChangeState, f"{fqn}/change_state")
        self._get = node.create_client(GetState, f"{fqn}/get_state")
        assert self._change.wait_for_service(timeout_sec=WAIT) and self._get.wait_for_service(timeout_sec=WAIT)

    def _call(self, client: Any, request: Any) -> Any:
        fut = client.call_async(request)
        deadline = time.monotonic() + WAIT
        while not fut.done():
            assert time.monotonic() < deadline, f"no answer from {client.srv_name}"
            time.sleep(0.01)
        return fut.result()

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState

        return self._call(self._get, GetState.Request()).current_state.label

    def change(self, transition_id: int) -> bool:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        return self._call(self._change, ChangeState.Request(transition=Transition(id=transition_id))).success


@contextmanager
def managed(ctx: Any, node: Any, name: str) -> Iterator[tuple[Client, Lifecycle]]:
    """The node and a test client on a 3-thread executor (one thread may wait in a service call)."""
    with spinning(ctx, node, connect=False, prefix=f"/{name}") as client:
        yield client, Lifecycle(client.node, f"/{name}")


def _connected(client: Client) -> None:
    """Sentence input, answer outputs and ~/segment of a configured node are matched."""
    seg = client.seg
    client.wait_for(lambda: client.text_pub.get_subscription_count() > 0
                    and seg._pub_result.get_subscription_count() > 0
                    and seg._pub_cloud.get_subscription_count() > 0, what="discovery")
    assert client.segment.wait_for_service(timeout_sec=WAIT)


def test_configure_activate_deactivate_cleanup_shutdown(ros_context_factory, monkeypatch, tmp_path):
    """The whole life through the lifecycle services: nothing before configure; inactive refuses
    (topic and service, found=false with the reason, on ~/result); active answers, from the
    latched map, again after a deactivate (re-prepared as the next version); cleanup drops the
    model and the service; shutdown ends it."""
    from diagnostic_msgs.msg import DiagnosticStatus
    from lifecycle_msgs.msg import Transition

    from bqnet_ros import model_setup
    from bqnet_ros.lifecycle_node import INACTIVE_REASON, SegmentLifecycleNode

    monkeypatch.setattr(model_setup, "search_roots", lambda: [tmp_path])  # no shipped model: the tiny config
    ctx = ros_context_factory(["-p", "allow_untrained:=true", "-p", f"model_config:={TINY}", "-p", "device:=cpu",
                               "-p", "map_topic:=/lc_map", "-p", "text_topic:=/lc_text", "-p", "qos_depth:=50",
                               "-p", "diagnostics_period:=0.2"])
    node = SegmentLifecycleNode(context=ctx, node_name="lc_node")
    with managed(ctx, node, "lc_node") as (client, lc):
        assert lc.state() == "unconfigured" and node.worker is None and not node.has_parameter("device_in_use")
        st, values = client.status("lc_node")
        assert st.level == DiagnosticStatus.WARN and values["lifecycle_state"] == "unconfigured"
        map_msg, _ = room_cloud()
        client.map_pub.publish(map_msg)  # latched: reaches the node only once it subscribes (activate)

        assert lc.change(Transition.TRANSITION_CONFIGURE) and lc.state() == "inactive"
        assert node.get_parameter("device_in_use").value == "cpu"
        model = weakref.ref(node._segmenter)
        _connected(client)
        srv = client.call("the desk", request_id="while-inactive")
        (top,) = client.ask(["the table"])
        for res in (srv, top):
            assert not res.found and res.reason == INACTIVE_REASON
        assert srv.request_id == "while-inactive" and top.request_id == "topic:1"
        assert node.stats.maps_received == 0 and node.stats.sentences_refused == 2
        st, values = client.status("lc_node")
        assert st.level == DiagnosticStatus.WARN and values["lifecycle_state"] == "inactive"
        assert values["ready"] == "false" and values["sentences_refused"] == "2"

        assert lc.change(Transition.TRANSITION_ACTIVATE) and lc.state() == "active"
        client.wait_for(lambda: node.stats.maps_prepared == 1, what="the latched map")
        res = client.call("the chair next to the desk")
        check_result(res, map_msg, "the chair next to the desk")
        assert res.map_version == 1
        st, values = client.status("lc_node")
        assert st.level == DiagnosticStatus.OK and values["lifecycle_state"] == "active" and values["ready"] == "true"

        assert lc.change(Transition.TRANSITION_DEACTIVATE) and lc.state() == "inactive"
        assert node.worker.prepared is None, "the map cache is freed"
        srv = client.call("the desk")
        (top,) = client.ask(["the red chair"])
        assert [r.reason for r in (srv, top)] == [INACTIVE_REASON] * 2 and not (srv.found or top.found)
        assert len(client.clouds[-1].data) == 0, "a refusal clears RViz like any not-found answer"

        assert lc.change(Transition.TRANSITION_ACTIVATE)
        client.wait_for(lambda: node.stats.maps_prepared == 2, what="the latched map, again")
        res = client.call("the desk")
        check_result(res, map_msg, "the desk")
        assert res.map_version == 2, "re-prepared as the next version"

        assert lc.change(Transition.TRANSITION_DEACTIVATE) and lc.change(Transition.TRANSITION_CLEANUP)
        assert lc.state() == "unconfigured" and node.worker is None and node._segmenter is None
        gc.collect()
        assert model() is None, "cleanup dropped the model"
        client.wait_for(lambda: not client.segment.service_is_ready(), what="~/segment to go away")
        assert lc.change(Transition.TRANSITION_ACTIVATE) is False, "activate needs configure first"

        assert lc.change(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        assert lc.state() == "finalized"
    assert not node.logged(logging.ERROR, "")


@pytest.mark.parametrize("state", ["unconfigured", "inactive", "active"])
def test_shutdown_from_any_state_is_quick(ros_context_factory, state):
    """shutdown() (what Ctrl-C runs) from each primary state: finalized without waiting for work; in active,
    during a prepare, the waiting service call is answered 'node shutting down'."""
    from rclpy.lifecycle import TransitionCallbackReturn

    from bqnet_ros.lifecycle_node import SegmentLifecycleNode

    name = f"sd_{state}"
    ctx = ros_context_factory(["-p", f"map_topic:=/{name}_map", "-p", f"text_topic:=/{name}_text"])
    gated = GatedSegmenter(tiny_segmenter())
    gated.hold.clear()
    node = SegmentLifecycleNode(context=ctx, node_name=name, segmenter=gated)
    with managed(ctx, node, name) as (client, lc):
        fut = None
        if state != "unconfigured":
            assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
            _connected(client)
        if state == "active":
            assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
            client.map_pub.publish(room_cloud()[0])
            assert gated.entered.wait(WAIT)
            fut = client.segment.call_async(client.iface.Segment.Request(text="the table", request_id="last"))
            client.wait_for(lambda: node.worker.queue_length() == 1, what="the service request")
        assert lc.state() == state
        t0 = time.monotonic()
        node.shutdown()
        took = time.monotonic() - t0
        # the prepare is still held (gated.hold is set only below): a shutdown that waited for it
        # would not have returned; the bound guards against a long join, it is not a timing test
        assert not gated.hold.is_set() and took < 5.0, took
        assert node.lifecycle_state == "finalized" and node.worker is None
        if fut is not None:
            client.wait_for(fut.done, what="the shutdown answer")
            assert fut.result().result.reason == "node shutting down"
        gated.hold.set()  # the prepare ends now; its result is dropped
    assert not node.logged(logging.ERROR, "")


def test_configure_failure_stays_unconfigured_and_says_why(ros_context_factory, monkeypatch, tmp_path):
    """A missing checkpoint fails configure (not the process): unconfigured, the reason in the log
    and as an ERROR status on /diagnostics."""
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.lifecycle import TransitionCallbackReturn

    from bqnet_ros import model_setup
    from bqnet_ros.lifecycle_node import SegmentLifecycleNode

    monkeypatch.setattr(model_setup, "search_roots", lambda: [tmp_path])
    ctx = ros_context_factory(["-p", "checkpoint:=/nonexistent/model.pth", "-p", "device:=cpu",
                               "-p", "diagnostics_period:=0.2", "-p", "map_topic:=/cf_map", "-p", "text_topic:=/cf_text"])
    node = SegmentLifecycleNode(context=ctx, node_name="cf_node")
    with managed(ctx, node, "cf_node") as (client, lc):
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert lc.state() == "unconfigured" and node.worker is None
        assert node.logged(logging.ERROR, "configure failed: checkpoint '/nonexistent/model.pth' not found")
        st, values = client.status("cf_node")
        assert st.level == DiagnosticStatus.ERROR and "configure failed" in st.message
        assert values["lifecycle_state"] == "unconfigured"


def test_console_script_configure_activate_then_ctrl_c(ros_context_factory, tmp_path):
    """`segment_lifecycle_node` starts unconfigured; configured and activated over its services it
    answers; Ctrl-C ends it quickly (code 0, no ERROR, no traceback)."""
    import os
    import subprocess
    import sys

    import rclpy
    from lifecycle_msgs.msg import Transition
    from rclpy.executors import SingleThreadedExecutor

    from bqnet_model.checkpoint import save_checkpoint
    from bqnet_ros.interfaces import load_interfaces

    seg = tiny_segmenter()
    ckpt = tmp_path / "tiny.pth"
    save_checkpoint(ckpt, seg.model, seg.cfg)
    env = dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_LOGGING_BUFFERED_STREAM="0")
    proc = subprocess.Popen([sys.executable, "-m", "bqnet_ros.lifecycle_node", "--ros-args", "-p", "device:=cpu",
                             "-p", f"checkpoint:={ckpt}", "-p", "map_topic:=/cs_map", "-p", "text_topic:=/cs_text",
                             "-p", "map_wait_timeout:=0.0"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    ctx = ros_context_factory()
    iface = load_interfaces(required=True)
    client = rclpy.create_node("cs_client", context=ctx)
    segment = client.create_client(iface.Segment, "/segment_node/segment")
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(client)
    th = threading.Thread(target=ex.spin, daemon=True)
    th.start()
    try:
        lc = Lifecycle(client, "/segment_node")
        assert lc.state() == "unconfigured"
        assert lc.change(Transition.TRANSITION_CONFIGURE) and lc.change(Transition.TRANSITION_ACTIVATE)
        assert segment.wait_for_service(timeout_sec=WAIT)
        fut = segment.call_async(iface.Segment.Request(text="the desk", request_id="cs"))
        deadline = time.monotonic() + WAIT
        while not fut.done():
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.02)
        res = fut.result().result
        assert res.request_id == "cs" and res.reason.startswith("no usable map"), "active: answered, no map yet"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(WAIT)
        stop_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ex.shutdown()
        th.join(5)
        client.destroy_node()
    reader.join(5)
    out = "".join(lines)
    assert code == 0, out
    assert "Traceback" not in out and "[ERROR]" not in out, out
    assert "unconfigured (lifecycle)" in out and "active: answering" in out, out
    assert stop_s < 5.0, stop_s  # a guard against waiting on work, not a timing test (process exit varies)


def test_launch_file_starts_the_managed_node_on_request():
    """lifecycle:= picks the LifecycleNode action of segment_lifecycle_node (same parameters and
    log level as the plain node); autostart:= emits configure, then activate once inactive."""
    from bqnet_ros.launch_args import LIFECYCLE_EXECUTABLE, launch_flag

    text = (ROOT / "launch" / "segment.launch.py").read_text()
    tree = ast.parse(text)
    calls: dict[str, list[ast.Call]] = {}
    for n in ast.walk(tree):
        if isinstance(n, ast.Call):
            calls.setdefault(getattr(n.func, "id", getattr(n.func, "attr", "")), []).append(n)
    declared = {c.args[0].value for c in calls["DeclareLaunchArgument"]}
    assert {"lifecycle", "autostart"} <= declared
    (lc_call,) = calls["LifecycleNode"]
    kw = {k.arg: k.value for k in lc_call.keywords}
    assert kw["executable"].id == "LIFECYCLE_EXECUTABLE" and kw["arguments"].func.id == "log_level_arguments"
    assert {"parameters", "name", "namespace", "on_exit"} <= set(kw)
    transitions = {getattr(k.value, "attr", "") for c in calls["ChangeState"] for k in c.keywords}
    assert {"TRANSITION_CONFIGURE", "TRANSITION_ACTIVATE"} <= transitions
    setup = (ROOT / "setup.py").read_text()
    assert f'"{LIFECYCLE_EXECUTABLE} = bqnet_ros.lifecycle_node:main"' in setup
    assert launch_flag("lifecycle", "True") and not launch_flag("lifecycle", "")
    with pytest.raises(ValueError, match="autostart must be true or false"):
        launch_flag("autostart", "sometimes")
