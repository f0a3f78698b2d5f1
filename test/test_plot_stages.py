"""tools/plot_stages.py draws the stage scores and refuses a file without stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import load_tool

ROOT = Path(__file__).resolve().parents[1]


def test_plot_of_the_shipped_stages(tmp_path: Path) -> None:
    tool = load_tool("plot_stages")
    out = tmp_path / "stages.png"
    assert tool.main([str(ROOT / "docs" / "training" / "stages.json"), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"stages": []}))
    with pytest.raises(SystemExit, match="no stages"):
        tool.main([str(empty), "--out", str(tmp_path / "x.png")])
