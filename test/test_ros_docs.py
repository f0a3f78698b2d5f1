"""docs/ros_interface.md's parameter table is the node's own (tools/gen_ros_params_doc.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_parameter_table_is_current():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_ros_params_doc.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_every_parameter_is_in_the_doc_with_its_default():
    from bqnet_ros.parameters import PARAMS

    doc = (ROOT / "docs" / "ros_interface.md").read_text()
    for p in PARAMS:
        assert f"| `{p.name}` |" in doc, p.name
    assert "| `device_in_use` |" in doc


def test_readme_ros_section_lists_the_interface_with_true_defaults():
    """The README's ROS section names the topics, the service, QoS and the main parameters; each
    default it gives (`name` = `value`) is the node's."""
    import re

    from bqnet_ros.parameters import SPEC

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## ROS 2"):readme.index("\n## ", readme.index("## ROS 2") + 1)]
    for part in ("/map_cloud", "/referring_text", "~/segment", "~/result", "~/target_cloud", "~/markers",
                 "/diagnostics", "transient local", "docs/ros_install.md"):
        assert part in section, part

    def shown(value) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        return '""' if value == "" else str(value)

    given = dict(re.findall(r"`(\w+)`\s+=\s+`([^`]*)`", section))
    assert {"map_topic", "text_topic", "device", "task", "max_points", "map_wait_timeout", "qos_depth",
            "map_qos_durability", "map_qos_reliability"} <= set(given)
    for name, value in given.items():
        assert value == shown(SPEC[name].default), name
