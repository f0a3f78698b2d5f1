"""PointCloud2 <-> numpy for the layouts mapping nodes publish, built with the real message classes."""

from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import PointCloud2, PointField

from bqnet_ros.conversions import CloudArrays, numpy_to_pointcloud2, pointcloud2_to_numpy


def _cloud(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(-5, 5, size=(n, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(n, 3), dtype=np.uint8)
    return xyz, rgb


def _msg(fields: list[tuple[str, int, int, int]], point_step: int, data: bytes, width: int,
         height: int = 1, row_step: int | None = None, bigendian: bool = False) -> PointCloud2:
    """A message assembled field by field, the way a C++/Python mapping node fills it."""
    msg = PointCloud2()
    msg.header.frame_id = "map"
    msg.header.stamp = Time(sec=12, nanosec=5)
    msg.height = height
    msg.width = width
    msg.fields = [PointField(name=nm, offset=off, datatype=dt, count=cnt) for nm, off, dt, cnt in fields]
    msg.is_bigendian = bigendian
    msg.point_step = point_step
    msg.row_step = point_step * width if row_step is None else row_step
    msg.is_dense = False
    msg.data = data
    return msg


def _pack_float_rgb(rgb: np.ndarray) -> np.ndarray:
    c = rgb.astype(np.uint32)
    return ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).view(np.float32)


def _pcl_xyzrgb(xyz: np.ndarray, rgb: np.ndarray) -> PointCloud2:
    """pcl::PointXYZRGB as pcl_conversions publishes it: x,y,z, 4 pad bytes, rgb float at 16, step 32."""
    n = len(xyz)
    raw = np.zeros((n, 32), np.uint8)
    raw[:, 0:12] = xyz.view(np.uint8).reshape(n, 12)
    raw[:, 12:16] = 0xAB  # padding garbage must not leak anywhere
    raw[:, 16:20] = _pack_float_rgb(rgb).view(np.uint8).reshape(n, 4)
    raw[:, 20:32] = 0xCD
    F = PointField
    return _msg([("x", 0, F.FLOAT32, 1), ("y", 4, F.FLOAT32, 1), ("z", 8, F.FLOAT32, 1), ("rgb", 16, F.FLOAT32, 1)],
                32, raw.tobytes(), n)


def test_pcl_style_xyz_pad_rgb_float() -> None:
    xyz, rgb = _cloud()
    msg = deserialize_message(serialize_message(_pcl_xyzrgb(xyz, rgb)), PointCloud2)  # over the wire
    out = pointcloud2_to_numpy(msg)
    assert isinstance(out, CloudArrays)
    assert out.xyz.dtype == np.float32 and out.xyz.shape == (40, 3)
    np.testing.assert_array_equal(out.xyz, xyz)
    assert out.rgb is not None and out.rgb.dtype == np.uint8
    np.testing.assert_array_equal(out.rgb, rgb)
    assert out.fields == {} and out.frame_id == "map" and (out.height, out.width) == (1, 40)


def test_separate_rgb_uint8_with_intensity_and_padding() -> None:
    xyz, rgb = _cloud(17, seed=1)
    n = len(xyz)
    intensity = np.linspace(0, 1, n, dtype=np.float32)
    dt = np.dtype({"names": ["x", "y", "z", "intensity", "r", "g", "b"],
                   "formats": ["<f4"] * 4 + ["u1"] * 3, "offsets": [0, 4, 8, 12, 16, 17, 18], "itemsize": 24})
    arr = np.zeros(n, dt)
    arr["x"], arr["y"], arr["z"] = xyz.T
    arr["intensity"] = intensity
    arr["r"], arr["g"], arr["b"] = rgb.T
    F = PointField
    msg = _msg([("x", 0, F.FLOAT32, 1), ("y", 4, F.FLOAT32, 1), ("z", 8, F.FLOAT32, 1), ("intensity", 12, F.FLOAT32, 1),
                ("r", 16, F.UINT8, 1), ("g", 17, F.UINT8, 1), ("b", 18, F.UINT8, 1)], 24, arr.tobytes(), n)
    out = pointcloud2_to_numpy(msg)
    np.testing.assert_array_equal(out.xyz, xyz)
    np.testing.assert_array_equal(out.rgb, rgb)
    assert out.fields == {}
    out = pointcloud2_to_numpy(msg, extra_fields=["intensity"])
    np.testing.assert_array_equal(out.fields["intensity"], intensity)
    assert set(pointcloud2_to_numpy(msg, extra_fields=True).fields) == {"intensity"}


def test_uint32_rgba_float64_xyz_and_extra_fields() -> None:
    xyz, rgb = _cloud(9, seed=2)
    n = len(xyz)
    xyz64 = xyz.astype(np.float64) + 1e-9
    c = rgb.astype(np.uint32)
    rgba = (np.uint32(0x7F) << 24) | (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]  # alpha must be ignored
    normal = np.random.default_rng(3).normal(size=(n, 3)).astype(np.float32)
    dt = np.dtype({"names": ["x", "y", "z", "rgba", "normal", "curvature"],
                   "formats": ["<f8", "<f8", "<f8", "<u4", ("<f4", (3,)), "<f4"],
                   "offsets": [0, 8, 16, 24, 32, 44], "itemsize": 64})
    arr = np.zeros(n, dt)
    arr["x"], arr["y"], arr["z"] = xyz64.T
    arr["rgba"] = rgba
    arr["normal"] = normal
    arr["curvature"] = 0.25
    F = PointField
    msg = _msg([("x", 0, F.FLOAT64, 1), ("y", 8, F.FLOAT64, 1), ("z", 16, F.FLOAT64, 1), ("rgba", 24, F.UINT32, 1),
                ("normal", 32, F.FLOAT32, 3), ("curvature", 44, F.FLOAT32, 1)], 64, arr.tobytes(), n)
    out = pointcloud2_to_numpy(msg, extra_fields=True)
    np.testing.assert_array_equal(out.xyz, xyz64.astype(np.float32))
    np.testing.assert_array_equal(out.rgb, rgb)
    assert set(out.fields) == {"normal", "curvature"}
    assert out.fields["normal"].shape == (n, 3)
    np.testing.assert_array_equal(out.fields["normal"], normal)
    np.testing.assert_array_equal(out.fields["curvature"], np.full(n, 0.25, np.float32))


def test_organized_cloud_with_row_padding_keeps_nan_points_aligned() -> None:
    h, w = 3, 4
    xyz, rgb = _cloud(h * w, seed=4)
    xyz[[1, 6, 11]] = np.nan  # invalid depth pixels
    step, row_step = 16, 16 * w + 8  # 8 padding bytes at the end of every row
    raw = np.full((h, row_step), 0xEE, np.uint8)
    body = np.zeros((h * w, step), np.uint8)
    body[:, 0:12] = xyz.view(np.uint8).reshape(-1, 12)
    body[:, 12:16] = _pack_float_rgb(rgb).view(np.uint8).reshape(-1, 4)
    raw[:, : w * step] = body.reshape(h, w * step)
    F = PointField
    msg = _msg([("x", 0, F.FLOAT32, 1), ("y", 4, F.FLOAT32, 1), ("z", 8, F.FLOAT32, 1), ("rgb", 12, F.FLOAT32, 1)],
               step, raw.tobytes(), w, height=h, row_step=row_step)
    out = pointcloud2_to_numpy(msg)
    assert out.xyz.shape == (12, 3) and (out.height, out.width) == (3, 4)
    np.testing.assert_array_equal(np.isnan(out.xyz).any(axis=1), np.isin(np.arange(12), [1, 6, 11]))
    np.testing.assert_array_equal(out.xyz, xyz)  # NaNs compared equal by position
    np.testing.assert_array_equal(out.rgb, rgb)


@pytest.mark.parametrize("layout", ["float32", "uint32", "rgb8"])
def test_round_trip_each_rgb_layout(layout: str) -> None:
    xyz, rgb = _cloud(33, seed=5)
    label = np.arange(33, dtype=np.int64) - 3
    normal = np.random.default_rng(1).normal(size=(33, 3)).astype(np.float32)
    msg = numpy_to_pointcloud2(xyz, rgb, frame_id="odom", stamp=Time(sec=3, nanosec=7), rgb_layout=layout,
                               extra_fields={"label": label, "normal": normal, "valid": label > 0})
    assert isinstance(msg, PointCloud2)
    assert msg.header.frame_id == "odom" and msg.header.stamp.sec == 3 and msg.header.stamp.nanosec == 7
    assert msg.height == 1 and msg.width == 33 and not msg.is_bigendian and msg.is_dense
    assert msg.row_step == msg.point_step * 33 and len(msg.data) == msg.row_step
    names = [f.name for f in msg.fields]
    expected_colour = ["r", "g", "b"] if layout == "rgb8" else ["rgb"]
    assert names == ["x", "y", "z", *expected_colour, "label", "normal", "valid"]
    types = {f.name: f.datatype for f in msg.fields}
    assert types["label"] == PointField.INT32 and types["valid"] == PointField.UINT8
    if layout != "rgb8":
        assert types["rgb"] == (PointField.FLOAT32 if layout == "float32" else PointField.UINT32)
    for f in msg.fields:  # every field aligned to its size
        assert f.offset % np.dtype({1: "i1", 2: "u1", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}[f.datatype]).itemsize == 0
    out = pointcloud2_to_numpy(deserialize_message(serialize_message(msg), PointCloud2), extra_fields=True)
    np.testing.assert_array_equal(out.xyz, xyz)
    np.testing.assert_array_equal(out.rgb, rgb)
    assert set(out.fields) == {"label", "normal", "valid"}
    np.testing.assert_array_equal(out.fields["label"], label)
    np.testing.assert_array_equal(out.fields["normal"], normal)
    np.testing.assert_array_equal(out.fields["valid"], (label > 0).astype(np.uint8))


def test_float_rgb_is_bit_packed_like_pcl() -> None:
    msg = numpy_to_pointcloud2(np.zeros((1, 3), np.float32), np.array([[255, 0, 16]], np.uint8), frame_id="map")
    rgb_off = next(f.offset for f in msg.fields if f.name == "rgb")
    word = np.frombuffer(msg.data, np.uint8)[rgb_off: rgb_off + 4].view("<u4")[0]
    assert word == 0x00FF0010


def test_no_rgb_nan_points_and_float64_input() -> None:
    xyz = np.array([[0, 0, 0], [np.nan, 1, 2], [1, 2, 3]], np.float64)
    msg = numpy_to_pointcloud2(xyz, frame_id="map", stamp=2.5)
    assert not msg.is_dense and [f.name for f in msg.fields] == ["x", "y", "z"] and msg.point_step == 12
    assert msg.header.stamp.sec == 2 and msg.header.stamp.nanosec == 500_000_000
    out = pointcloud2_to_numpy(msg)
    assert out.rgb is None
    np.testing.assert_array_equal(out.xyz, xyz.astype(np.float32))


def test_empty_cloud_round_trip() -> None:
    msg = numpy_to_pointcloud2(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), frame_id="map")
    assert msg.width == 0 and len(msg.data) == 0
    out = pointcloud2_to_numpy(msg)
    assert out.xyz.shape == (0, 3) and out.rgb.shape == (0, 3)


def test_float_channel_rgb_in_unit_range() -> None:
    xyz, rgb = _cloud(5, seed=6)
    dt = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "<f4"), ("g", "<f4"), ("b", "<f4")])
    arr = np.zeros(5, dt)
    arr["x"], arr["y"], arr["z"] = xyz.T
    arr["r"], arr["g"], arr["b"] = (rgb / 255.0).astype(np.float32).T
    F = PointField
    msg = _msg([(c, 4 * j, F.FLOAT32, 1) for j, c in enumerate("xyzrgb")], 24, arr.tobytes(), 5)
    np.testing.assert_array_equal(pointcloud2_to_numpy(msg).rgb, rgb)


# ---------------------------------------------------------------- refusals


def _xyz_msg(n: int = 4, **kw) -> PointCloud2:
    F = PointField
    return _msg([("x", 0, F.FLOAT32, 1), ("y", 4, F.FLOAT32, 1), ("z", 8, F.FLOAT32, 1)], 12, bytes(12 * n), n, **kw)


def test_big_endian_refused() -> None:
    with pytest.raises(ValueError, match="big-endian"):
        pointcloud2_to_numpy(_xyz_msg(bigendian=True))


def test_truncated_refused() -> None:
    msg = _xyz_msg()
    msg.data = bytes(12 * 4 - 5)
    with pytest.raises(ValueError, match=r"43 bytes, expected row_step 48 x height 1 = 48"):
        pointcloud2_to_numpy(msg)


def test_missing_z_refused() -> None:
    F = PointField
    msg = _msg([("x", 0, F.FLOAT32, 1), ("y", 4, F.FLOAT32, 1), ("intensity", 8, F.FLOAT32, 1)], 12, bytes(24), 2)
    with pytest.raises(ValueError, match=r"lacks field\(s\) \['z'\]"):
        pointcloud2_to_numpy(msg)


def test_malformed_layouts_refused() -> None:
    F = PointField
    xyz = [("x", 0, F.FLOAT32, 1), ("y", 4, F.FLOAT32, 1), ("z", 8, F.FLOAT32, 1)]
    with pytest.raises(ValueError, match="beyond point_step 12"):
        pointcloud2_to_numpy(_msg(xyz + [("rgb", 12, F.FLOAT32, 1)], 12, bytes(24), 2))
    with pytest.raises(ValueError, match="row_step 20 < width 2 x point_step 12"):
        pointcloud2_to_numpy(_msg(xyz, 12, bytes(20), 2, row_step=20))
    with pytest.raises(ValueError, match="unknown datatype 42"):
        pointcloud2_to_numpy(_msg(xyz + [("w", 0, 42, 1)], 12, bytes(24), 2))
    with pytest.raises(ValueError, match="field 'x' twice"):
        pointcloud2_to_numpy(_msg(xyz + [("x", 0, F.FLOAT32, 1)], 12, bytes(24), 2))
    with pytest.raises(ValueError, match="packed rgb field must be one float32 or uint32"):
        pointcloud2_to_numpy(_msg(xyz + [("rgb", 12, F.UINT8, 3)], 16, bytes(32), 2))
    with pytest.raises(ValueError, match=r"requested extra field\(s\) \['intensity'\]"):
        pointcloud2_to_numpy(_xyz_msg(), extra_fields=["intensity"])
    with pytest.raises(TypeError, match="not a string"):
        pointcloud2_to_numpy(_xyz_msg(), extra_fields="intensity")
    with pytest.raises(TypeError, match="PointCloud2"):
        pointcloud2_to_numpy(np.zeros((3, 3)))


def test_numpy_to_pointcloud2_errors() -> None:
    xyz, rgb = _cloud(6)
    with pytest.raises(ValueError, match="rgb_layout"):
        numpy_to_pointcloud2(xyz, rgb, frame_id="map", rgb_layout="bgr")
    with pytest.raises(TypeError, match="frame_id"):
        numpy_to_pointcloud2(xyz, frame_id=None)
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        numpy_to_pointcloud2(xyz[:, :2], frame_id="map")
    with pytest.raises(ValueError, match="rgb has 5 rows"):
        numpy_to_pointcloud2(xyz, rgb[:5], frame_id="map")
    with pytest.raises(ValueError, match="clashes"):
        numpy_to_pointcloud2(xyz, frame_id="map", extra_fields={"x": np.zeros(6)})
    with pytest.raises(ValueError, match="extra field 'label' must have shape"):
        numpy_to_pointcloud2(xyz, frame_id="map", extra_fields={"label": np.zeros(5)})
    with pytest.raises(ValueError, match="outside the int32 range"):
        numpy_to_pointcloud2(xyz, frame_id="map", extra_fields={"label": np.full(6, 2**40)})
    with pytest.raises(TypeError, match="stamp"):
        numpy_to_pointcloud2(xyz, frame_id="map", stamp="now")
