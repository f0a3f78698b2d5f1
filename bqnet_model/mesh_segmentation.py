"""ScanNet's mesh segmentation, for maps that come as a triangle mesh (``*_vh_clean_2.ply``).

The superpoints the original BQNet/IPDN pipeline trains and evaluates on are ScanNet's mesh
segments (``<scene>_vh_clean_2.0.010000.segs.json``), made by ScanNet's segmentator:
Felzenszwalb-Huttenlocher on the mesh edges. When a mesh exists, segmenting it the same way
gives the superpoints the paper used (and the instance annotations of ScanNet are unions of them),
which the point-cloud path (``bqnet_model.superpoints``) can only approximate. As described in
ScanNet's Segmentator README and implemented there (read for reference, not copied):

- vertex normal = mean of the unit normals of the faces around the vertex (not renormalised);
- graph = the three edges of every face (shared edges appear twice, as there);
- edge weight ``1 - n_a . n_b``, squared when the edge is convex (``n_b . (p_b - p_a) > 0``), so a
  rounded convex object stays whole while concave junctions (object on floor) cut;
- FH with ``kThresh`` = 0.01 over sizes in vertices, then segments below ``segMinVerts`` = 20 join
  their neighbour across the lightest edge.

The graph part runs in C++ (``bqnet_model._C.segment_mesh``). Ties in the weight sort are broken
by face order (ScanNet's sort is unstable), so a few segments can differ where weights tie
exactly; ``match_segmentations`` measures the agreement.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bqnet_model.superpoints import _C  # the extension; importing superpoints explains a missing build

__all__ = ["PlyMesh", "read_ply_mesh", "segment_mesh", "match_segmentations", "SCANNET_K_THRESH",
           "SCANNET_MIN_VERTS"]

SCANNET_K_THRESH = 0.01  # kThresh of ScanNet's *.0.010000.segs.json
SCANNET_MIN_VERTS = 20  # segMinVerts

_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
          "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
          "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


@dataclass
class PlyMesh:
    """Vertices and triangles of a PLY mesh."""

    xyz: np.ndarray  # float32 (V, 3)
    rgb: np.ndarray | None  # uint8 (V, 3) or None
    faces: np.ndarray  # int32 (F, 3)


def _parse_header(raw: bytes, path: str) -> tuple[str, list[tuple[str, int, list[tuple]]], int]:
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise ValueError(f"{path}: not a PLY file (no 'ply' magic or no end_header)")
    body = raw.index(b"\n", end) + 1
    fmt, elements = "", []
    for line in raw[:end].decode("ascii", "replace").splitlines()[1:]:
        tok = line.split()
        if not tok or tok[0] in ("comment", "obj_info"):
            continue
        if tok[0] == "format":
            fmt = tok[1]
        elif tok[0] == "element":
            elements.append((tok[1], int(tok[2]), []))
        elif tok[0] == "property":
            if not elements:
                raise ValueError(f"{path}: property before any element")
            if tok[1] == "list":
                elements[-1][2].append(("list", tok[4], _TYPES[tok[2]], _TYPES[tok[3]]))
            else:
                elements[-1][2].append(("scalar", tok[2], _TYPES[tok[1]]))
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise ValueError(f"{path}: unsupported PLY format {fmt!r}")
    return fmt, elements, body


def read_ply_mesh(path: str | os.PathLike) -> PlyMesh:
    """Vertices (x y z, optional red green blue) and triangle faces of a PLY file.

    Binary (either byte order) or ascii; the face element needs a list property ``vertex_indices``
    (or ``vertex_index``) of triangles, as ScanNet's meshes have. Raises ``ValueError`` naming what
    is missing (no face element: segment the vertices as a cloud with ``bqnet_model.superpoints``).
    """
    path = str(path)
    raw = Path(path).read_bytes()
    fmt, elements, off = _parse_header(raw, path)
    names = [e[0] for e in elements]
    if "vertex" not in names or "face" not in names:
        raise ValueError(f"{path}: needs 'vertex' and 'face' elements, has {names}; a cloud without faces "
                         "goes through bqnet_model.superpoints.oversegment")
    bo = {"binary_little_endian": "<", "binary_big_endian": ">"}.get(fmt, "")
    vert = face = None
    if fmt == "ascii":
        lines = raw[off:].decode("ascii").split("\n")
        row = 0
        for name, count, props in elements:
            chunk = lines[row:row + count]
            row += count
            if name == "vertex":
                cols = [p[1] for p in props]
                arr = np.loadtxt(chunk, ndmin=2)
                vert = {c: arr[:, i] for i, c in enumerate(cols)}
            elif name == "face":
                rows = [np.asarray(ln.split(), np.int64) for ln in chunk]
                if any(r[0] != 3 for r in rows):
                    raise ValueError(f"{path}: faces must be triangles")
                face = np.stack([r[1:4] for r in rows]) if rows else np.zeros((0, 3), np.int64)
        if vert is None or face is None:
            raise ValueError(f"{path}: incomplete ascii body")
    else:
        for name, count, props in elements:
            if all(p[0] == "scalar" for p in props):
                dt = np.dtype([(p[1], bo + p[2]) for p in props])
                arr = np.frombuffer(raw, dt, count, off)
                off += count * dt.itemsize
                if name == "vertex":
                    vert = {c: arr[c] for c in dt.names}
                continue
            if name != "face" or len(props) != 1:
                raise ValueError(f"{path}: element {name!r} with list properties is not supported before the faces")
            _, pname, ctype, itype = props[0]
            if pname not in ("vertex_indices", "vertex_index"):
                raise ValueError(f"{path}: face list property is {pname!r}, need vertex_indices")
            dt = np.dtype([("n", bo + ctype), ("i", bo + itype, (3,))])
            if off + count * dt.itemsize > len(raw):
                raise ValueError(f"{path}: truncated face data")
            arr = np.frombuffer(raw, dt, count, off)
            if count and (arr["n"] != 3).any():
                raise ValueError(f"{path}: faces must be triangles (found a face with {arr['n'].max()} vertices)")
            face = arr["i"]
            break
    if vert is None or face is None or not {"x", "y", "z"} <= set(vert):
        raise ValueError(f"{path}: vertex x y z or the faces could not be read")
    xyz = np.stack([vert["x"], vert["y"], vert["z"]], 1).astype(np.float32)
    rgb = None
    if {"red", "green", "blue"} <= set(vert):
        rgb = np.stack([vert["red"], vert["green"], vert["blue"]], 1).astype(np.uint8)
    return PlyMesh(xyz=xyz, rgb=rgb, faces=np.ascontiguousarray(face, dtype=np.int32))


def segment_mesh(
    xyz: np.ndarray,
    faces: np.ndarray,
    *,
    k_thresh: float = SCANNET_K_THRESH,
    min_size: int = SCANNET_MIN_VERTS,
    num_threads: int | None = None,
) -> np.ndarray:
    """ScanNet-style segment labels ``(V,) int64`` (dense ``0..S-1``) of a triangle mesh.

    xyz (V, 3) vertices, faces (F, 3) vertex indices. Vertices on no face stay single segments.
    """
    v = np.ascontiguousarray(np.asarray(xyz), dtype=np.float32)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] == 0:
        raise ValueError(f"xyz must have shape (V, 3) with V >= 1, got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"faces must be integer triangles of shape (F, 3), got {f.shape} {f.dtype}")
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"faces index vertices {f.min()}..{f.max()}, the mesh has {len(v)}")
    if not np.isfinite(v).all():
        raise ValueError("xyz contains NaN/Inf")
    if not (np.isfinite(k_thresh) and k_thresh >= 0) or min_size < 0:
        raise ValueError(f"k_thresh must be finite >= 0 and min_size >= 0, got {k_thresh}, {min_size}")
    nt = torch.get_num_threads() if num_threads is None else int(num_threads)
    labels, _ = _C.segment_mesh(torch.from_numpy(v), torch.from_numpy(np.ascontiguousarray(f, dtype=np.int32)),
                                float(k_thresh), int(min_size), max(1, nt))
    return labels.numpy()


def match_segmentations(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Agreement of two segmentations of the same points under the best one-to-one matching.

    ``matched_share``: the largest fraction of points whose segment in ``a`` is matched to their
    segment in ``b`` when each segment of ``a`` is paired with at most one of ``b`` (Hungarian
    assignment on the overlap counts); 1.0 = the same partition. Also the segment counts.
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix

    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"segmentations must be non-empty and of equal length, got {a.shape} and {b.shape}")
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    na, nb = int(ai.max()) + 1, int(bi.max()) + 1
    if na * nb > 50_000_000:
        raise ValueError(f"{na} x {nb} segments: too many for a dense assignment")
    overlap = coo_matrix((np.ones(a.size), (ai.ravel(), bi.ravel())), shape=(na, nb)).toarray()
    r, c = linear_sum_assignment(-overlap)
    return {"matched_share": float(overlap[r, c].sum() / a.size), "segments_a": na, "segments_b": nb}
