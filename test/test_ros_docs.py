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
