"""PLY reader/writer: round trips, the layouts real files use, and clear errors on bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bqnet_model.ply import PlyCloud, read_ply, write_ply


def _cloud(n: int = 50, seed: int = 0):
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(-3, 3, size=(n, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(n, 3), dtype=np.uint8)
    nrm = rng.normal(size=(n, 3))
    nrm = (nrm / np.linalg.norm(nrm, axis=1, keepdims=True)).astype(np.float32)
    label = rng.integers(-1, 20, size=n).astype(np.int64)
    return xyz, rgb, nrm, label


def _header(fmt: str, n: int, props: list[str], extra: str = "") -> bytes:
    lines = ["ply", f"format {fmt} 1.0", "comment made by hand", f"element vertex {n}"]
    lines += [f"property {p}" for p in props]
    return ("\n".join(lines) + "\n" + extra + "end_header\n").encode("ascii")


@pytest.mark.parametrize("binary", [True, False])
def test_round_trip_with_rgb_normals_labels(tmp_path: Path, binary: bool) -> None:
    xyz, rgb, nrm, label = _cloud()
    inst = np.arange(len(xyz), dtype=np.int32) % 7
    sp = np.arange(len(xyz), dtype=np.uint16)
    conf = np.linspace(0, 1, len(xyz))  # float64 -> double
    path = tmp_path / "cloud.ply"
    write_ply(path, xyz, rgb, nrm, binary=binary, label=label, instance=inst, superpoint=sp, conf=conf)
    head = path.read_bytes()[:60]
    assert (b"binary_little_endian" in head) == binary and (b"ascii" in head) == (not binary)
    cloud = read_ply(path)
    assert isinstance(cloud, PlyCloud)
    assert cloud.xyz.dtype == np.float32 and cloud.xyz.shape == (50, 3)
    np.testing.assert_array_equal(cloud.xyz, xyz)  # exact: float32 written in shortest round-trip form
    assert cloud.rgb is not None and cloud.rgb.dtype == np.uint8
    np.testing.assert_array_equal(cloud.rgb, rgb)
    assert cloud.normals is not None and cloud.normals.dtype == np.float32
    np.testing.assert_array_equal(cloud.normals, nrm)
    assert set(cloud.fields) == {"label", "instance", "superpoint", "conf"}
    assert cloud.fields["label"].dtype == np.int32  # int64 narrowed: PLY has no 64-bit ints
    np.testing.assert_array_equal(cloud.fields["label"], label)
    np.testing.assert_array_equal(cloud.fields["instance"], inst)
    assert cloud.fields["superpoint"].dtype == np.uint16
    np.testing.assert_array_equal(cloud.fields["superpoint"], sp)
    np.testing.assert_array_equal(cloud.fields["conf"], conf)


def test_round_trip_xyz_only_float64_and_float_rgb(tmp_path: Path) -> None:
    xyz = np.array([[0.5, 1.25, -2.0], [1e-3, 2.0, 3.0]], dtype=np.float64)
    rgb = np.array([[0.0, 0.5, 1.0], [1.0, 1.0, 0.0]])
    write_ply(tmp_path / "a.ply", xyz)
    c = read_ply(tmp_path / "a.ply")
    assert c.rgb is None and c.normals is None and c.fields == {}
    np.testing.assert_array_equal(c.xyz, xyz.astype(np.float32))
    write_ply(tmp_path / "b.ply", xyz, rgb)
    np.testing.assert_array_equal(read_ply(tmp_path / "b.ply").rgb, [[0, 128, 255], [255, 255, 0]])


def test_binary_with_face_element_after_vertices(tmp_path: Path) -> None:
    """ScanNet _vh_clean_2.ply layout: x,y,z float, red,green,blue,alpha uchar, then faces."""
    n = 6
    xyz, rgb, _, _ = _cloud(n, seed=1)
    vdt = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
                    ("blue", "u1"), ("alpha", "u1")])
    verts = np.zeros(n, vdt)
    verts["x"], verts["y"], verts["z"] = xyz.T
    verts["red"], verts["green"], verts["blue"] = rgb.T
    verts["alpha"] = 255
    fdt = np.dtype([("n", "u1"), ("idx", "<i4", (3,))])
    faces = np.zeros(4, fdt)
    faces["n"] = 3
    faces["idx"] = [[0, 1, 2], [2, 3, 4], [3, 4, 5], [0, 2, 5]]
    head = _header("binary_little_endian", n,
                   ["float x", "float y", "float z", "uchar red", "uchar green", "uchar blue", "uchar alpha"],
                   "element face 4\nproperty list uchar int vertex_indices\n")
    path = tmp_path / "scene0000_00_vh_clean_2.ply"
    path.write_bytes(head + verts.tobytes() + faces.tobytes())
    c = read_ply(path)
    np.testing.assert_array_equal(c.xyz, xyz)
    np.testing.assert_array_equal(c.rgb, rgb)
    assert list(c.fields) == ["alpha"] and (c.fields["alpha"] == 255).all()
    assert c.comments == ["made by hand"]


def test_ascii_with_face_element_after_vertices_and_crlf(tmp_path: Path) -> None:
    head = _header("ascii", 3, ["float x", "float y", "float z", "int label"],
                   "element face 1\nproperty list uchar int vertex_indices\n")
    body = "0 0 0 4\r\n1.5 -2 3e-1 5\r\n7 8 9 -1\r\n3 0 1 2\r\n"
    path = tmp_path / "a.ply"
    path.write_bytes(head.replace(b"\n", b"\r\n") + body.encode())
    c = read_ply(path)
    np.testing.assert_array_equal(c.xyz, np.array([[0, 0, 0], [1.5, -2, 0.3], [7, 8, 9]], np.float32))
    np.testing.assert_array_equal(c.fields["label"], [4, 5, -1])
    assert c.fields["label"].dtype == np.int32


def test_big_endian_any_order_and_type_aliases(tmp_path: Path) -> None:
    """Properties in an unusual order, mixed sizes and the sized type names, big-endian."""
    n = 5
    rng = np.random.default_rng(3)
    cols = {
        "label": rng.integers(-1000, 1000, n).astype(">i2"),
        "z": rng.normal(size=n).astype(">f8"),
        "green": rng.integers(0, 256, n).astype("u1"),
        "x": rng.normal(size=n).astype(">f4"),
        "red": rng.integers(0, 256, n).astype("u1"),
        "y": rng.normal(size=n).astype(">f8"),
        "blue": rng.integers(0, 256, n).astype("u1"),
        "seg": rng.integers(0, 2**31, n).astype(">u4"),
        "flag": rng.integers(-128, 128, n).astype("i1"),
    }
    types = {">i2": "int16", ">f8": "float64", "|u1": "uint8", ">f4": "float32", ">u4": "uint32", "|i1": "int8"}
    dt = np.dtype([(k, v.dtype) for k, v in cols.items()])
    data = np.zeros(n, dt)
    for k, v in cols.items():
        data[k] = v
    head = _header("binary_big_endian", n, [f"{types[v.dtype.str]} {k}" for k, v in cols.items()])
    path = tmp_path / "be.ply"
    path.write_bytes(head + data.tobytes())
    c = read_ply(path)
    expect = np.stack([cols["x"], cols["y"], cols["z"]], axis=1).astype(np.float32)
    np.testing.assert_array_equal(c.xyz, expect)
    np.testing.assert_array_equal(c.rgb, np.stack([cols["red"], cols["green"], cols["blue"]], axis=1))
    for k in ("label", "seg", "flag"):
        assert c.fields[k].dtype.isnative
        np.testing.assert_array_equal(c.fields[k], cols[k])


def test_classic_type_names_and_element_before_vertex(tmp_path: Path) -> None:
    """A fixed-size element before 'vertex' is skipped; r/g/b colour names; char/short/uint."""
    n = 3
    cam = np.zeros(1, np.dtype([("fx", "<f4"), ("fy", "<f4")]))
    vdt = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1"),
                    ("c", "i1"), ("s", "<i2"), ("u", "<u4")])
    verts = np.zeros(n, vdt)
    verts["x"] = [1, 2, 3]
    verts["r"], verts["g"], verts["b"] = [10, 20, 30], [40, 50, 60], [70, 80, 90]
    verts["c"], verts["s"], verts["u"] = [-1, 0, 1], [-300, 0, 300], [0, 1, 4000000000]
    lines = ["ply", "format binary_little_endian 1.0", "element camera 1", "property float fx",
             "property float fy", f"element vertex {n}", "property float x", "property float y",
             "property float z", "property uchar r", "property uchar g", "property uchar b",
             "property char c", "property short s", "property uint u", "end_header"]
    path = tmp_path / "cam.ply"
    path.write_bytes(("\n".join(lines) + "\n").encode() + cam.tobytes() + verts.tobytes())
    c = read_ply(path)
    np.testing.assert_array_equal(c.xyz[:, 0], [1, 2, 3])
    np.testing.assert_array_equal(c.rgb, [[10, 40, 70], [20, 50, 80], [30, 60, 90]])
    np.testing.assert_array_equal(c.fields["u"], [0, 1, 4000000000])
    np.testing.assert_array_equal(c.fields["s"], [-300, 0, 300])


def test_ascii_element_before_vertex_and_float_diffuse_colours(tmp_path: Path) -> None:
    text = ("ply\nformat ascii 1.0\nelement face 2\nproperty list uchar int vertex_indices\n"
            "element vertex 2\nproperty double x\nproperty double y\nproperty double z\n"
            "property float diffuse_red\nproperty float diffuse_green\nproperty float diffuse_blue\n"
            "end_header\n3 0 1 2\n4 0 1 2 3\n1 2 3 0 0.5 1\n4 5 6 1 1 0\n")
    (tmp_path / "d.ply").write_text(text)
    c = read_ply(tmp_path / "d.ply")
    np.testing.assert_array_equal(c.xyz, [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(c.rgb, [[0, 128, 255], [255, 255, 0]])


def test_zero_vertices(tmp_path: Path) -> None:
    (tmp_path / "e.ply").write_bytes(_header("binary_little_endian", 0, ["float x", "float y", "float z"]))
    c = read_ply(tmp_path / "e.ply")
    assert c.xyz.shape == (0, 3) and c.n_points == 0


# ---------------------------------------------------------------- bad files


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        read_ply(tmp_path / "nope.ply")


@pytest.mark.parametrize(
    "content, match",
    [
        (b"solid ascii stl\nfacet normal 0 0 1\n", "not a PLY"),
        (b"", "not a PLY"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n", "end_header"),
        (b"ply\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\nend_header\n0 0 0\n",
         "no 'format'"),
        (b"ply\nformat binary_middle_endian 1.0\nend_header\n", "unsupported PLY format"),
        (b"ply\nformat ascii 1.0\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n3 0 1 2\n",
         "no 'vertex' element"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nend_header\n0 0\n",
         r"lacks \['z'\]"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float128 x\nend_header\n0\n", "unknown PLY property type"),
        (b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
         b"end_header\n0 0 0\n1 1\n", "truncated PLY data"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\n"
         b"end_header\n0 zero 0\n", "bad value in vertex property 'y'"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\n"
         b"property uchar red\nend_header\n0 0 0 300\n", "out of range"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float x\nend_header\n",
         "duplicate property"),
        (b"ply\nformat binary_little_endian 1.0\nelement face 1\nproperty list uchar int vertex_indices\n"
         b"element vertex 1\nproperty float x\nproperty float y\nproperty float z\nend_header\n",
         "before 'vertex'"),
    ],
)
def test_bad_files(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "bad.ply"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        read_ply(path)


def test_truncated_binary(tmp_path: Path) -> None:
    xyz, rgb, _, _ = _cloud(20)
    path = tmp_path / "t.ply"
    write_ply(path, xyz, rgb)
    raw = path.read_bytes()
    path.write_bytes(raw[:-7])
    with pytest.raises(ValueError, match=r"truncated PLY data: 20 vertices need 300 bytes"):
        read_ply(path)


def test_write_errors(tmp_path: Path) -> None:
    xyz, rgb, nrm, label = _cloud(10)
    p = tmp_path / "w.ply"
    with pytest.raises(ValueError, match="shape"):
        write_ply(p, xyz[:, :2])
    with pytest.raises(ValueError, match="empty"):
        write_ply(p, np.zeros((0, 3), np.float32))
    with pytest.raises(ValueError, match="rgb has 9 rows"):
        write_ply(p, xyz, rgb[:9])
    with pytest.raises(ValueError, match="float rgb must be in"):
        write_ply(p, xyz, rgb.astype(np.float32))  # 0..255 floats: a mistake, not guessed
    with pytest.raises(ValueError, match="normals must have shape"):
        write_ply(p, xyz, normals=nrm[:3])
    with pytest.raises(ValueError, match="scalar field 'label' must have shape"):
        write_ply(p, xyz, label=label[:5])
    with pytest.raises(ValueError, match="outside the int32 range"):
        write_ply(p, xyz, label=label + 2**40)
    with pytest.raises(ValueError, match="clashes"):
        write_ply(p, xyz, red=label)
    with pytest.raises(TypeError, match="must be numeric"):
        write_ply(p, xyz, name=np.array(["a"] * 10))
    with pytest.raises(TypeError, match="float or integer"):
        write_ply(p, np.array([["a", "b", "c"]]))
