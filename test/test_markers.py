"""RViz markers of a result: box edges, marker layout, DELETEALL first, bad input."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from visualization_msgs.msg import Marker

from bqnet_ros.markers import PALETTE, MarkerStyle, box_line_points, result_markers


@dataclass
class Obj:
    score: float
    centroid: np.ndarray
    box_min: np.ndarray
    box_max: np.ndarray


def _obj(lo=(0.0, 1.0, 2.0), hi=(1.0, 3.0, 2.5), score=0.8) -> Obj:
    lo_a, hi_a = np.array(lo), np.array(hi)
    return Obj(score, (lo_a + hi_a) / 2, lo_a, hi_a)


def test_box_line_points_are_the_12_edges():
    lo, hi = np.array([0.0, 1.0, 2.0]), np.array([1.0, 3.0, 2.5])
    pts = box_line_points(lo, hi)
    assert pts.shape == (24, 3)
    seg = pts.reshape(12, 2, 3)
    diff = np.abs(seg[:, 1] - seg[:, 0])
    # every edge runs along exactly one axis, with that axis' full extent
    assert ((diff > 0).sum(axis=1) == 1).all()
    assert sorted(diff.max(axis=1).tolist()) == sorted([1.0] * 4 + [2.0] * 4 + [0.5] * 4)
    corners, counts = np.unique(pts, axis=0, return_counts=True)
    assert len(corners) == 8 and (counts == 3).all()  # each corner joins 3 edges
    assert np.allclose(corners.min(axis=0), lo) and np.allclose(corners.max(axis=0), hi)


def test_degenerate_box_is_allowed():
    pts = box_line_points([1, 1, 1], [1, 1, 1])
    assert np.allclose(pts, 1.0)


@pytest.mark.parametrize(
    "lo,hi,match",
    [
        ([0, 0], [1, 1, 1], "shape"),
        ([0, 0, np.nan], [1, 1, 1], "finite"),
        ([0, 0, 0], [1, -1, 1], "below"),
    ],
)
def test_box_line_points_rejects_bad_boxes(lo, hi, match):
    with pytest.raises(ValueError, match=match):
        box_line_points(lo, hi)


def test_result_markers_layout():
    objs = [_obj(score=0.9), _obj(lo=(2, 2, 0), hi=(3, 3, 1), score=0.4)]
    arr = result_markers(objs, frame_id="map", text="the chair next to the desk")
    m = arr.markers
    assert len(m) == 1 + 3 * len(objs)
    assert m[0].action == Marker.DELETEALL and m[0].ns == "bqnet"
    for i, o in enumerate(objs):
        box, sphere, label = m[1 + 3 * i: 4 + 3 * i]
        assert [box.id, sphere.id, label.id] == [3 * i, 3 * i + 1, 3 * i + 2]
        assert box.type == Marker.LINE_LIST and len(box.points) == 24
        assert sphere.type == Marker.SPHERE
        assert label.type == Marker.TEXT_VIEW_FACING
        assert all(x.action == Marker.ADD and x.header.frame_id == "map" for x in (box, sphere, label))
        assert np.allclose([sphere.pose.position.x, sphere.pose.position.y, sphere.pose.position.z], o.centroid)
        assert label.pose.position.z > o.box_max[2]
        assert f"({o.score:.2f})" in label.text and "chair" in label.text
        assert box.scale.x > 0 and sphere.scale.x > 0 and label.scale.z > 0
        assert box.pose.orientation.w == 1.0
        expected = PALETTE[i % len(PALETTE)]
        assert np.allclose([box.color.r, box.color.g, box.color.b, box.color.a], expected)
        pts = np.array([[p.x, p.y, p.z] for p in box.points])
        assert np.allclose(pts, box_line_points(o.box_min, o.box_max))


def test_nothing_found_only_clears():
    arr = result_markers([], frame_id="map")
    assert len(arr.markers) == 1 and arr.markers[0].action == Marker.DELETEALL


def test_long_label_is_shortened_and_style_applies():
    style = MarkerStyle(ns="x", line_width=0.05, max_label_chars=10, lifetime_s=1.5)
    arr = result_markers([_obj()], frame_id="odom", text="a" * 100, style=style)
    label = arr.markers[3]
    assert label.text.startswith("aaaaaaa...") and len(label.text) < 30
    assert arr.markers[1].scale.x == pytest.approx(0.05)
    assert all(m.ns == "x" for m in arr.markers)
    assert arr.markers[1].lifetime.sec == 1 and arr.markers[1].lifetime.nanosec == 500_000_000


def test_result_markers_rejects_bad_input():
    with pytest.raises(TypeError, match="frame_id"):
        result_markers([_obj()], frame_id=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="text"):
        result_markers([_obj()], frame_id="map", text=3)  # type: ignore[arg-type]
    bad = _obj()
    bad.centroid = np.array([np.inf, 0, 0])
    with pytest.raises(ValueError, match="centroid"):
        result_markers([bad], frame_id="map")
    bad = _obj(score=float("nan"))
    with pytest.raises(ValueError, match="score"):
        result_markers([bad], frame_id="map")
    with pytest.raises(ValueError, match="line_width"):
        MarkerStyle(line_width=0)
    with pytest.raises(ValueError, match="lifetime"):
        MarkerStyle(lifetime_s=-1)
