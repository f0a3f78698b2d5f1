"""PLY reader and writer for point clouds (numpy structured dtypes, no plyfile/open3d).

Why our own: the package must read ScanNet meshes (``*_vh_clean_2.ply``: binary, a ``face``
element with list properties after the vertices) and the maps robots save (binary or ascii,
float or double coordinates, colours, normals, label fields) without pulling heavy dependencies.
Only the ``vertex`` element is read; elements after it are ignored (binary files are not read past
the vertices). Elements before ``vertex`` are skipped when they have no list properties (binary)
or line by line (ascii).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bqnet_model.pointcloud import as_xyz, narrow_scalar, rgb_to_uint8, stored_rgb_to_uint8

__all__ = ["PlyCloud", "read_ply", "write_ply"]

# PLY scalar types (original names and the sized aliases) -> numpy type code without byte order.
_PLY_TYPES: dict[str, str] = {
    "char": "i1", "int8": "i1",
    "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4",
    "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4",
    "double": "f8", "float64": "f8",
}
# numpy dtype -> PLY type name used when writing.
_WRITE_TYPES: dict[str, str] = {
    "i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort",
    "i4": "int", "u4": "uint", "f4": "float", "f8": "double",
}
_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}
_COLOUR_NAMES = (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue"))
_NORMAL_NAMES = ("nx", "ny", "nz")
_RESERVED = {"x", "y", "z", "red", "green", "blue", "nx", "ny", "nz"}
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MAX_HEADER = 1 << 20  # a header larger than 1 MiB is not a PLY header


@dataclass
class PlyCloud:
    """Vertices of a PLY file.

    ``fields`` holds every other per-vertex scalar property (``label``, ``instance``,
    ``superpoint``, ``alpha``, ``intensity``, ...) in the file's own type, native byte order.
    """

    xyz: np.ndarray  # float32 (N, 3)
    rgb: np.ndarray | None = None  # uint8 (N, 3)
    normals: np.ndarray | None = None  # float32 (N, 3)
    fields: dict[str, np.ndarray] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)

    @property
    def n_points(self) -> int:
        return int(self.xyz.shape[0])


@dataclass
class _Element:
    name: str
    count: int
    props: list[tuple[str, str]]  # (name, numpy type code) of scalar properties
    has_list: bool


@dataclass
class _Header:
    fmt: str
    elements: list[_Element]
    comments: list[str]
    size: int  # bytes up to and including the end_header line


def _parse_header(raw: bytes, path: str) -> _Header:
    """Parse the text header; ``raw`` starts at the beginning of the file."""
    first = raw.split(b"\n", 1)[0].strip()
    if first != b"ply":
        raise ValueError(f"{path}: not a PLY file (missing the 'ply' magic line)")
    end = raw.find(b"end_header")
    if end < 0:
        raise ValueError(f"{path}: PLY header has no 'end_header' line (truncated or not a PLY file)")
    nl = raw.find(b"\n", end)
    if nl < 0:
        raise ValueError(f"{path}: PLY header is truncated after 'end_header'")
    size = nl + 1
    try:
        text = raw[:end].decode("ascii")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: PLY header is not ASCII text") from exc
    fmt: str | None = None
    elements: list[_Element] = []
    comments: list[str] = []
    for lineno, line in enumerate(text.splitlines()[1:], start=2):
        parts = line.split()
        if not parts:
            continue
        key = parts[0]
        if key == "format":
            if len(parts) < 2 or parts[1] not in _FORMATS:
                raise ValueError(f"{path}:{lineno}: unsupported PLY format line {line.strip()!r}")
            fmt = parts[1]
        elif key in ("comment", "obj_info"):
            comments.append(line.strip()[len(key):].strip())
        elif key == "element":
            if len(parts) != 3 or not parts[2].isdigit():
                raise ValueError(f"{path}:{lineno}: bad element line {line.strip()!r}")
            elements.append(_Element(parts[1], int(parts[2]), [], False))
        elif key == "property":
            if not elements:
                raise ValueError(f"{path}:{lineno}: property before any element")
            el = elements[-1]
            if len(parts) >= 2 and parts[1] == "list":
                if len(parts) != 5 or parts[2] not in _PLY_TYPES or parts[3] not in _PLY_TYPES:
                    raise ValueError(f"{path}:{lineno}: bad list property {line.strip()!r}")
                el.has_list = True
                continue
            if len(parts) != 3:
                raise ValueError(f"{path}:{lineno}: bad property line {line.strip()!r}")
            if parts[1] not in _PLY_TYPES:
                raise ValueError(f"{path}:{lineno}: unknown PLY property type {parts[1]!r}")
            if any(parts[2] == name for name, _ in el.props):
                raise ValueError(f"{path}:{lineno}: duplicate property {parts[2]!r} in element {el.name!r}")
            el.props.append((parts[2], _PLY_TYPES[parts[1]]))
        else:
            raise ValueError(f"{path}:{lineno}: unknown PLY header keyword {key!r}")
    if fmt is None:
        raise ValueError(f"{path}: PLY header has no 'format' line")
    return _Header(fmt, elements, comments, size)


def _element_dtype(el: _Element, order: str) -> np.dtype:
    return np.dtype([(name, order + code) for name, code in el.props])


def _read_binary_vertices(f, head: _Header, vi: int, path: str) -> np.ndarray:
    order = _FORMATS[head.fmt]
    skip = 0
    for el in head.elements[:vi]:
        if el.has_list:
            raise ValueError(
                f"{path}: element {el.name!r} with list properties comes before 'vertex'; "
                "only fixed-size elements can be skipped in binary PLY files"
            )
        skip += el.count * _element_dtype(el, order).itemsize
    vertex = head.elements[vi]
    dt = _element_dtype(vertex, order)
    want = vertex.count * dt.itemsize
    f.seek(head.size + skip)
    data = f.read(want)
    if len(data) < want:
        raise ValueError(
            f"{path}: truncated PLY data: {vertex.count} vertices need {want} bytes, "
            f"found {len(data)}"
        )
    arr = np.frombuffer(data, dtype=dt, count=vertex.count)
    return arr if arr.dtype.isnative else arr.astype(dt.newbyteorder("="))


def _read_ascii_vertices(f, head: _Header, vi: int, path: str) -> np.ndarray:
    f.seek(head.size)
    text = f.read().decode("ascii", errors="replace")
    n_skip = sum(el.count for el in head.elements[:vi])
    if n_skip:
        # One line per element instance in ascii PLY (list properties included).
        parts = text.split("\n", n_skip)
        if len(parts) <= n_skip:
            raise ValueError(f"{path}: truncated PLY data before the vertex element")
        text = parts[n_skip]
    vertex = head.elements[vi]
    n, p = vertex.count, len(vertex.props)
    lines = text.split("\n", n)
    body = " ".join(lines[:n])
    tokens = body.split()
    if len(tokens) < n * p:
        raise ValueError(
            f"{path}: truncated PLY data: {n} vertices x {p} properties need {n * p} values, "
            f"found {len(tokens)}"
        )
    if len(tokens) > n * p:
        raise ValueError(
            f"{path}: vertex lines hold {len(tokens)} values, expected {n} x {p} = {n * p} "
            "(wrong property count in the header?)"
        )
    table = np.asarray(tokens).reshape(n, p)
    out = np.empty(n, dtype=_element_dtype(vertex, "="))
    for j, (name, code) in enumerate(vertex.props):  # per property, not per point
        try:
            if code[0] == "f":
                out[name] = table[:, j].astype(np.float64)
            else:
                col = table[:, j].astype(np.int64)
                info = np.iinfo(np.dtype(code))
                if n and (col.min() < info.min or col.max() > info.max):
                    raise ValueError(f"value out of range for {np.dtype(code)}")
                out[name] = col
        except ValueError as exc:
            raise ValueError(f"{path}: bad value in vertex property {name!r}: {exc}") from exc
    return out


def read_ply(path: str | os.PathLike) -> PlyCloud:
    """Read the vertex element of a PLY file (ascii, binary little- or big-endian).

    Colours come from red/green/blue (or r/g/b, diffuse_red/...), normals from nx/ny/nz; every
    other scalar vertex property lands in ``fields``. Float colours in [0, 1] are scaled to 0..255.
    Raises FileNotFoundError for a missing file and ValueError for anything that is not a readable
    PLY point cloud (bad magic, no vertex element, no x/y/z, truncated data).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"PLY file not found: {p}")
    with open(p, "rb") as f:
        head = _parse_header(f.read(_MAX_HEADER), str(p))
        names = [el.name for el in head.elements]
        if "vertex" not in names:
            raise ValueError(f"{p}: PLY file has no 'vertex' element (elements: {names})")
        vi = names.index("vertex")
        vertex = head.elements[vi]
        if vertex.has_list:
            raise ValueError(f"{p}: list properties in the vertex element are not supported")
        props = {name for name, _ in vertex.props}
        missing = [c for c in ("x", "y", "z") if c not in props]
        if missing:
            raise ValueError(f"{p}: vertex element lacks {missing} (properties: {sorted(props)})")
        if head.fmt == "ascii":
            arr = _read_ascii_vertices(f, head, vi, str(p))
        else:
            arr = _read_binary_vertices(f, head, vi, str(p))

    used = {"x", "y", "z"}
    xyz = np.stack([arr["x"], arr["y"], arr["z"]], axis=1).astype(np.float32, copy=False)
    rgb = None
    for names3 in _COLOUR_NAMES:
        if all(n in props for n in names3):
            rgb = stored_rgb_to_uint8(np.stack([arr[n] for n in names3], axis=1), scale_16bit=True)
            used.update(names3)
            break
    normals = None
    if all(n in props for n in _NORMAL_NAMES):
        normals = np.stack([arr[n] for n in _NORMAL_NAMES], axis=1).astype(np.float32, copy=False)
        used.update(_NORMAL_NAMES)
    fields = {
        name: np.ascontiguousarray(arr[name]).astype(arr.dtype[name].newbyteorder("="), copy=False)
        for name, _ in vertex.props
        if name not in used
    }
    return PlyCloud(
        xyz=np.ascontiguousarray(xyz),
        rgb=rgb,
        normals=None if normals is None else np.ascontiguousarray(normals),
        fields=fields,
        comments=head.comments,
    )


def _scalar_field(name: str, values: object, n: int) -> np.ndarray:
    """Validate one extra vertex property and narrow it to a PLY type."""
    if not _NAME_RE.match(name):
        raise ValueError(f"PLY property name {name!r} must be an identifier")
    if name in _RESERVED:
        raise ValueError(f"scalar field {name!r} clashes with a built-in property; pass it as xyz/rgb/normals")
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"scalar field {name!r} must have shape ({n},), got {arr.shape}")
    return narrow_scalar(arr, name, "PLY")


def write_ply(
    path: str | os.PathLike,
    xyz: np.ndarray,
    rgb: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    *,
    binary: bool = True,
    **scalar_fields: np.ndarray,
) -> None:
    """Write a point cloud as PLY (binary little-endian by default, or ascii).

    xyz and normals are stored as float32; rgb as uchar red/green/blue (uint8 0..255 or float
    0..1 accepted); each scalar field keeps its dtype, int64/uint64 narrowed to int/uint (ValueError
    when the values do not fit), bool as uchar.
    """
    xyz = as_xyz(xyz)
    n = int(xyz.shape[0])
    cols: list[tuple[str, np.ndarray]] = [
        ("x", xyz[:, 0]), ("y", xyz[:, 1]), ("z", xyz[:, 2])
    ]
    cols = [(name, c.astype(np.float32)) for name, c in cols]
    if normals is not None:
        nrm = np.asarray(normals)
        if nrm.ndim != 2 or nrm.shape != (n, 3):
            raise ValueError(f"normals must have shape ({n}, 3), got {nrm.shape}")
        if not np.issubdtype(nrm.dtype, np.floating):
            raise TypeError(f"normals must be a float array, got dtype {nrm.dtype}")
        cols += [(name, nrm[:, j].astype(np.float32)) for j, name in enumerate(_NORMAL_NAMES)]
    if rgb is not None:
        col8 = rgb_to_uint8(rgb, n)
        cols += [(name, col8[:, j]) for j, name in enumerate(_COLOUR_NAMES[0])]
    for name, values in scalar_fields.items():
        cols.append((name, _scalar_field(name, values, n)))

    codes = [np.dtype(c.dtype).newbyteorder("=").str[1:] for _, c in cols]
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0",
              "comment written by bqnet_model.ply", f"element vertex {n}"]
    header += [f"property {_WRITE_TYPES[code]} {name}" for (name, _), code in zip(cols, codes)]
    header.append("end_header")
    head_bytes = ("\n".join(header) + "\n").encode("ascii")

    if binary:
        dt = np.dtype([(name, "<" + code) for (name, _), code in zip(cols, codes)])
        table = np.empty(n, dtype=dt)
        for name, c in cols:
            table[name] = c
        with open(path, "wb") as f:
            f.write(head_bytes)
            f.write(table.tobytes())
        return
    # ascii: numpy's shortest round-trip repr per value, joined column-wise without a per-point loop.
    text = cols[0][1].astype(str)
    for _, c in cols[1:]:
        text = np.char.add(np.char.add(text, " "), c.astype(str))
    with open(path, "wb") as f:
        f.write(head_bytes)
        f.write(("\n".join(text.tolist()) + "\n").encode("ascii"))
