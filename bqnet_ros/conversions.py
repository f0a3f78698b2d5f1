"""sensor_msgs/PointCloud2 <-> numpy, vectorized (``sensor_msgs_py`` is not installable here).

The message's fields become a numpy structured dtype with their offsets and the message's
``point_step``; the data buffer is viewed through it with (row_step, point_step) strides, so
padding bytes, unused fields and padded rows cost nothing and no per-point Python code runs.
Organized clouds (height > 1) are flattened row-major and NaN points are kept, so the indices the
node publishes stay aligned with the message it received; the caller cleans.
"""

from __future__ import annotations

import array
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import PointCloud2, PointField

from bqnet_model.pointcloud import narrow_scalar, stored_rgb_to_uint8

__all__ = ["CloudArrays", "pointcloud2_to_numpy", "numpy_to_pointcloud2", "RGB_LAYOUTS"]

# PointField datatype constant -> numpy little-endian type.
_FIELD_TO_NP: dict[int, np.dtype] = {
    PointField.INT8: np.dtype("i1"),
    PointField.UINT8: np.dtype("u1"),
    PointField.INT16: np.dtype("<i2"),
    PointField.UINT16: np.dtype("<u2"),
    PointField.INT32: np.dtype("<i4"),
    PointField.UINT32: np.dtype("<u4"),
    PointField.FLOAT32: np.dtype("<f4"),
    PointField.FLOAT64: np.dtype("<f8"),
}
_NP_TO_FIELD: dict[str, int] = {dt.str.lstrip("<|"): code for code, dt in _FIELD_TO_NP.items()}
RGB_LAYOUTS = ("float32", "uint32", "rgb8")
_XYZ = ("x", "y", "z")


@dataclass
class CloudArrays:
    """Arrays of one PointCloud2, flattened row-major (index ``row * width + col``)."""

    xyz: np.ndarray  # float32 (N, 3); NaN rows of organized clouds kept
    rgb: np.ndarray | None  # uint8 (N, 3) or None when the message has no colour
    fields: dict[str, np.ndarray] = field(default_factory=dict)  # requested extra fields, (N,) or (N, count)
    height: int = 1
    width: int = 0
    frame_id: str = ""

    @property
    def n_points(self) -> int:
        return int(self.xyz.shape[0])


def _message_dtype(msg: PointCloud2) -> np.dtype:
    """Structured dtype of one point from the message's PointFields (offsets honoured)."""
    names: list[str] = []
    formats: list[object] = []
    offsets: list[int] = []
    step = int(msg.point_step)
    for f in msg.fields:
        if f.name in names:
            raise ValueError(f"PointCloud2 has the field {f.name!r} twice")
        if f.datatype not in _FIELD_TO_NP:
            raise ValueError(f"PointCloud2 field {f.name!r} has unknown datatype {f.datatype}")
        base = _FIELD_TO_NP[f.datatype]
        count = max(int(f.count), 1)  # some publishers write count=0 for scalars
        fmt = base if count == 1 else (base, (count,))
        end = int(f.offset) + base.itemsize * count
        if end > step:
            raise ValueError(
                f"PointCloud2 field {f.name!r} (offset {f.offset}, {count} x {base}) ends at byte "
                f"{end}, beyond point_step {step}"
            )
        names.append(f.name)
        formats.append(fmt)
        offsets.append(int(f.offset))
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": step})


def _packed_rgb(values: np.ndarray) -> np.ndarray:
    """0x00RRGGBB packed in a float32 (bit-reinterpreted) or uint32/int32 -> uint8 (N, 3)."""
    if values.ndim != 1 or values.dtype.itemsize != 4:
        shape = "" if values.ndim == 1 else f" x {values.shape[1:]}"
        raise ValueError(f"packed rgb field must be one float32 or uint32, got {values.dtype}{shape}")
    bits = np.ascontiguousarray(values).view(np.uint32)
    out = np.empty((bits.shape[0], 3), dtype=np.uint8)
    out[:, 0] = (bits >> 16) & 0xFF
    out[:, 1] = (bits >> 8) & 0xFF
    out[:, 2] = bits & 0xFF
    return out


def pointcloud2_to_numpy(msg: PointCloud2, *, extra_fields: Iterable[str] | bool = ()) -> CloudArrays:
    """Convert a PointCloud2 into float32 xyz, uint8 rgb (or None) and requested extra fields.

    Colour comes from a packed ``rgb``/``rgba`` field (float32 bit-reinterpreted, or uint32/int32;
    0x00RRGGBB, alpha ignored) or from separate ``r``, ``g``, ``b`` fields. ``extra_fields`` names
    other fields to return (True: all of them); others are ignored. Raises ValueError for
    big-endian data, missing x/y/z, fields beyond point_step, a row_step shorter than the row, or
    a data length that is not ``row_step * height``.
    """
    if not isinstance(msg, PointCloud2):
        raise TypeError(f"expected sensor_msgs.msg.PointCloud2, got {type(msg).__name__}")
    if msg.is_bigendian:
        raise ValueError("big-endian PointCloud2 data is not supported (is_bigendian=True)")
    height, width = int(msg.height), int(msg.width)
    step, row_step = int(msg.point_step), int(msg.row_step)
    names = [f.name for f in msg.fields]
    missing = [c for c in _XYZ if c not in names]
    if missing:
        raise ValueError(f"PointCloud2 lacks field(s) {missing} (fields: {names})")
    dt = _message_dtype(msg)
    if row_step < width * step:
        raise ValueError(f"PointCloud2 row_step {row_step} < width {width} x point_step {step}")
    buf = np.frombuffer(msg.data, dtype=np.uint8)  # array.array('B') in rclpy: no copy
    if buf.size != row_step * height:
        raise ValueError(
            f"PointCloud2 data has {buf.size} bytes, expected row_step {row_step} x height {height} "
            f"= {row_step * height} (truncated or inconsistent message)"
        )
    packed = next((c for c in ("rgb", "rgba") if c in names), None)
    channels = ("r", "g", "b") if packed is None and all(c in names for c in ("r", "g", "b")) else ()
    colour = (packed,) if packed is not None else channels
    if isinstance(extra_fields, bool):
        wanted = [n for n in names if n not in _XYZ and n not in colour] if extra_fields else []
    elif isinstance(extra_fields, str):
        raise TypeError("extra_fields must be a list of field names or a bool, not a string")
    else:
        wanted = list(extra_fields)
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise ValueError(f"requested extra field(s) {unknown} not in the message (fields: {names})")
    n = height * width
    if n == 0:
        grid = np.zeros((height, width), dtype=dt)
    else:
        # A strided view: rows start every row_step bytes, points every point_step bytes.
        grid = np.ndarray(shape=(height, width), dtype=dt, buffer=buf, strides=(row_step, step))

    def column(name: str) -> np.ndarray:
        """One field, flattened row-major; a view when the rows are unpadded."""
        values = grid[name]
        return values.reshape((n,) + values.shape[2:])

    xyz = np.empty((n, 3), dtype=np.float32)
    for j, c in enumerate(_XYZ):
        xyz[:, j] = column(c)
    rgb = None
    if packed is not None:
        rgb = _packed_rgb(column(packed))
    elif channels:
        rgb = np.stack([stored_rgb_to_uint8(column(c)) for c in channels], axis=1)
    fields = {name: np.array(column(name)) for name in wanted}  # own copies: msg.data may be reused
    return CloudArrays(
        xyz=xyz, rgb=rgb, fields=fields, height=height, width=width, frame_id=str(msg.header.frame_id)
    )


def _align(offset: int, size: int) -> int:
    return (offset + size - 1) // size * size


def _extra_array(name: str, values: object, n: int) -> np.ndarray:
    """Validate an extra field and narrow it to a PointField datatype."""
    arr = np.asarray(values)
    if arr.ndim not in (1, 2) or arr.shape[0] != n:
        raise ValueError(f"extra field {name!r} must have shape ({n},) or ({n}, k), got {arr.shape}")
    return narrow_scalar(arr, name, "PointField")


def _stamp(stamp: Time | float | int | None) -> Time:
    if stamp is None:
        return Time()
    if isinstance(stamp, Time):
        return stamp
    if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) and stamp >= 0:
        sec, nsec = divmod(int(round(stamp * 1e9)), 1_000_000_000)
        return Time(sec=sec, nanosec=nsec)
    raise TypeError(f"stamp must be builtin_interfaces.msg.Time, seconds >= 0 or None, got {stamp!r}")


def numpy_to_pointcloud2(
    xyz: np.ndarray,
    rgb: np.ndarray | None = None,
    *,
    frame_id: str,
    stamp: Time | float | None = None,
    extra_fields: dict[str, np.ndarray] | None = None,
    rgb_layout: str = "float32",
) -> PointCloud2:
    """Build an unorganized (height 1) little-endian PointCloud2.

    Layout: x, y, z float32 at 0/4/8, then colour as ``rgb_layout``: 'float32' (packed 0x00RRGGBB
    in a float32, what PCL and RViz expect), 'uint32' (packed in a uint32) or 'rgb8' (separate
    r, g, b uint8 fields); then the extra fields, each aligned to its size ((N, k) arrays become a
    field with count k; int64 narrowed to int32 when it fits, bool as uint8). rgb: uint8 or float
    0..1. The buffer is filled in place: one copy of the data.
    """
    from bqnet_model.pointcloud import as_xyz, rgb_to_uint8

    if not isinstance(frame_id, str):
        raise TypeError(f"frame_id must be a str, got {type(frame_id).__name__}")
    if rgb_layout not in RGB_LAYOUTS:
        raise ValueError(f"rgb_layout must be one of {RGB_LAYOUTS}, got {rgb_layout!r}")
    arr = np.asarray(xyz)
    if arr.ndim == 2 and arr.shape == (0, 3):  # an empty cloud is a valid message
        n = 0
    else:
        arr = as_xyz(arr)
        n = int(arr.shape[0])
    col8 = None if rgb is None else rgb_to_uint8(rgb, n)

    names: list[str] = list(_XYZ)
    formats: list[object] = [np.float32] * 3
    offsets: list[int] = [0, 4, 8]
    pf: list[PointField] = [PointField(name=c, offset=4 * j, datatype=PointField.FLOAT32, count=1) for j, c in enumerate(_XYZ)]
    off = 12
    if col8 is not None:
        if rgb_layout == "rgb8":
            for j, c in enumerate(("r", "g", "b")):
                names.append(c); formats.append(np.uint8); offsets.append(off + j)
                pf.append(PointField(name=c, offset=off + j, datatype=PointField.UINT8, count=1))
            off += 3
        else:
            names.append("rgb"); formats.append(np.uint32); offsets.append(off)
            code = PointField.FLOAT32 if rgb_layout == "float32" else PointField.UINT32
            pf.append(PointField(name="rgb", offset=off, datatype=code, count=1))
            off += 4
    extras: dict[str, np.ndarray] = {}
    for name, values in (extra_fields or {}).items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"extra field names must be non-empty strings, got {name!r}")
        if name in names:
            raise ValueError(f"extra field {name!r} clashes with a built-in field")
        a = _extra_array(name, values, n)
        base = a.dtype.newbyteorder("<")
        count = 1 if a.ndim == 1 else int(a.shape[1])
        off = _align(off, base.itemsize)
        names.append(name); offsets.append(off)
        formats.append(base if count == 1 else (base, (count,)))
        pf.append(PointField(name=name, offset=off, datatype=_NP_TO_FIELD[base.str.lstrip("<|")], count=count))
        off += base.itemsize * count
        extras[name] = a
    step = _align(off, 4)
    dt = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": step})

    data = array.array("B", bytes(1)) * (n * step) if n else array.array("B")
    if n:
        table = np.frombuffer(data, dtype=dt)
        table["x"], table["y"], table["z"] = arr[:, 0], arr[:, 1], arr[:, 2]
        if col8 is not None:
            if rgb_layout == "rgb8":
                table["r"], table["g"], table["b"] = col8[:, 0], col8[:, 1], col8[:, 2]
            else:
                c32 = col8.astype(np.uint32)
                table["rgb"] = (c32[:, 0] << 16) | (c32[:, 1] << 8) | c32[:, 2]
        for name, a in extras.items():
            table[name] = a
        with np.errstate(invalid="ignore", over="ignore"):
            dense = bool(np.isfinite(arr.astype(np.float32, copy=False)).all())
    else:
        dense = True

    msg = PointCloud2()
    msg.header.frame_id = frame_id
    msg.header.stamp = _stamp(stamp)
    msg.height = 1
    msg.width = n
    msg.fields = pf
    msg.is_bigendian = False
    msg.point_step = step
    msg.row_step = step * n
    msg.is_dense = dense
    msg.data = data
    return msg
