"""The superpoint half of `make demo`: a picture and a coloured cloud of the demo room."""

from pathlib import Path

import numpy as np

from bqnet_model.demo import superpoint_demo
from bqnet_model.ply import read_ply


def test_superpoint_demo_writes_picture_and_cloud(tmp_path: Path, capsys) -> None:
    png, ply = superpoint_demo(tmp_path, n_points=20_000)
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cloud = read_ply(ply)
    sp = cloud.fields["superpoint"].astype(np.int64)
    assert cloud.n_points == len(sp) > 15_000
    assert np.array_equal(np.unique(sp), np.arange(sp.max() + 1))  # dense labels
    out = capsys.readouterr().out
    assert "superpoints in" in out and "ASA" in out and str(png) in out
