"""The generated bqnet_ros_interfaces messages and service: fields match msg/ and srv/,
serialize, travel over DDS.

They are built by tools/build_msgs.sh (make setup); a missing build fails here on purpose,
with the command to run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bqnet_ros.interfaces import Interfaces, MessagesNotBuiltError, load_interfaces

ROOT = Path(__file__).resolve().parents[1]
MSG_DIR = ROOT / "msg"


def _msgs() -> Interfaces:
    try:
        return load_interfaces(required=True)
    except MessagesNotBuiltError as exc:
        pytest.fail(f"messages not built: {exc}")


def _msg_fields(path: Path) -> list[tuple[str, str]]:
    """(type, name) of each field of a .msg file (comments and constants left out)."""
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or "=" in line:
            continue
        typ, name = line.split()[:2]
        out.append((typ, name))
    return out


_ROSIDL_TYPE = {
    "float32": "float", "uint32": "uint32", "bool": "boolean", "string": "string",
    "uint32[]": "sequence<uint32>", "string[]": "sequence<string>",
}
SRV_FILE = ROOT / "interfaces" / "bqnet_ros_interfaces" / "srv" / "Segment.srv"


def test_service_fields_match_the_srv_file():
    """Segment: request text, task, request_id; response one ReferringSegmentation."""
    seg = _msgs().Segment
    request, _, response = SRV_FILE.read_text().partition("\n---\n")
    req_fields = [n for _, n in _fields_of(request)]
    assert list(seg.Request.get_fields_and_field_types()) == req_fields == ["text", "task", "request_id"]
    assert seg.Response.get_fields_and_field_types() == {"result": "bqnet_ros_interfaces/ReferringSegmentation"}
    assert [t for t, _ in _fields_of(response)] == ["ReferringSegmentation"]


def _fields_of(text: str) -> list[tuple[str, str]]:
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line and "=" not in line:
            typ, name = line.split()[:2]
            out.append((typ, name))
    return out


@pytest.mark.parametrize("name", ["ReferringSegmentation", "ReferredObject"])
def test_generated_fields_match_msg_files(name):
    """The build is current: same field names and types, in order, as msg/<name>.msg."""
    cls = getattr(_msgs(), name)
    generated = cls.get_fields_and_field_types()  # ordered {name: rosidl type}
    declared = _msg_fields(MSG_DIR / f"{name}.msg")
    assert list(generated) == [n for _, n in declared], "rebuild with tools/build_msgs.sh"
    for typ, fname in declared:
        want = _ROSIDL_TYPE.get(typ)
        if want is None:  # nested message: pkg/Type or Type[] of this package
            base = typ.rstrip("[]")
            pkg, _, t = base.rpartition("/")
            want = f"{pkg or 'bqnet_ros_interfaces'}/{t}"
            if typ.endswith("[]"):
                want = f"sequence<{want}>"
        assert generated[fname] == want, f"{name}.{fname}"


def test_result_round_trip_serialization():
    from geometry_msgs.msg import Point
    from rclpy.serialization import deserialize_message, serialize_message

    m = _msgs()
    msg = m.ReferringSegmentation()
    msg.header.frame_id = "map"
    msg.header.stamp.sec = 12
    msg.text = "the chair next to the desk"
    msg.task = "gres"
    msg.found = True
    msg.request_id = "req-1"
    msg.score = 0.75
    msg.warnings = ["map has no colour"]
    idx = np.array([5, 7, 100_000], np.uint32)
    msg.objects = [
        m.ReferredObject(score=0.75, centroid=Point(x=1.0, y=2.0, z=0.5), box_min=Point(x=0.5),
                         box_max=Point(x=1.5, y=2.5, z=0.9), num_points=3, point_indices=idx),
    ]
    msg.point_indices = idx
    msg.map_num_points = 200_000
    msg.map_version = 3
    msg.total_ms = 12.5
    back = deserialize_message(serialize_message(msg), m.ReferringSegmentation)
    assert back == msg
    assert back.request_id == "req-1" and list(back.warnings) == ["map has no colour"]
    assert np.array_equal(np.asarray(back.objects[0].point_indices), idx)
    assert back.objects[0].box_max.y == pytest.approx(2.5)


def test_uint32_field_rejects_negative_indices():
    m = _msgs()
    msg = m.ReferringSegmentation()
    with pytest.raises((AssertionError, ValueError, OverflowError)):
        msg.point_indices = [-1]


def test_result_travels_over_dds(ros_context_factory):
    """Typesupport works end to end: publish and receive one message between two nodes."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    m = _msgs()
    ctx = ros_context_factory()
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pub_node = rclpy.create_node("msgs_pub", context=ctx)
    sub_node = rclpy.create_node("msgs_sub", context=ctx)
    got: list = []
    pub = pub_node.create_publisher(m.ReferringSegmentation, "/bqnet_test/result", qos)
    sub_node.create_subscription(m.ReferringSegmentation, "/bqnet_test/result", got.append, qos)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(pub_node)
    ex.add_node(sub_node)
    t = threading.Thread(target=ex.spin, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 10
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        msg = m.ReferringSegmentation(text="over dds", found=False, reason="no target", point_indices=[1, 2])
        pub.publish(msg)
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got, "no message received over DDS within 10 s"
        assert got[0].text == "over dds" and got[0].reason == "no target"
        assert list(got[0].point_indices) == [1, 2]
    finally:
        ex.shutdown()
        t.join(5)
        pub_node.destroy_node()
        sub_node.destroy_node()


def test_missing_build_gives_a_clear_error(tmp_path):
    """With nothing installed and no build found, load_interfaces says what to run."""
    code = (
        "import sys, importlib\n"
        "import bqnet_ros.interfaces as i\n"
        f"i.default_prefixes = lambda: [__import__('pathlib').Path({str(tmp_path)!r})]\n"
        "sys.modules.pop('bqnet_ros_interfaces', None)\n"
        "assert i.load_interfaces() is None\n"
        "try:\n"
        "    i.load_interfaces(required=True)\n"
        "except i.MessagesNotBuiltError as e:\n"
        "    print('ERR', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.pop("BQNET_MSGS_PREFIX", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "ERR" in out.stdout and "tools/build_msgs.sh" in out.stdout


def test_build_script_is_valid_and_prints_env():
    script = ROOT / "tools" / "build_msgs.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    out = subprocess.run(["bash", str(script), "--print-env"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert [ln.split("=")[0] for ln in lines] == [
        "export PYTHONPATH", "export LD_LIBRARY_PATH", "export AMENT_PREFIX_PATH"
    ]
    assert re.search(r"build/msgs/install/lib/python3\.\d+/site-packages", lines[0])
    bad = subprocess.run(["bash", str(script), "--bogus"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "usage" in bad.stderr


def test_interfaces_package_is_a_valid_ament_package():
    """package.xml / CMakeLists.txt name the same package and the msg files exist."""
    pkg = ROOT / "interfaces" / "bqnet_ros_interfaces"
    xml = (pkg / "package.xml").read_text()
    assert "<name>bqnet_ros_interfaces</name>" in xml
    assert "<member_of_group>rosidl_interface_packages</member_of_group>" in xml
    assert "<build_type>ament_cmake</build_type>" in xml
    cmake = (pkg / "CMakeLists.txt").read_text()
    assert "project(bqnet_ros_interfaces" in cmake
    for name in re.findall(r":msg/(\w+)\.msg", cmake):
        assert (MSG_DIR / f"{name}.msg").is_file()
    assert sorted(re.findall(r":msg/(\w+)\.msg", cmake)) == sorted(p.stem for p in MSG_DIR.glob("*.msg"))
    assert re.findall(r":srv/(\w+)\.srv", cmake) == ["Segment"] and SRV_FILE.is_file()
