"""Online superpoints and the mesh segmentation on the real ScanNet scans in ../shared/real: regression
floors, the gain of the boundary steps, ScanNet's own mesh segments. Every test skips when the folder is
absent (a clone without shared/ has none); no data is copied into the repository."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bqnet_model.mesh_segmentation import match_segmentations, read_ply_mesh, segment_mesh
from bqnet_model.superpoints import SuperpointParams, achievable_segmentation_accuracy, oversegment_detailed

torch.set_num_threads(2)
REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real"


def _need_real() -> None:
    if not (REAL / "scannet_votenet50k").is_dir():
        pytest.skip(f"real ScanNet scans not present at {REAL} (a clone without shared/ has none)")


def _real_scans() -> list[str]:
    if not (REAL / "scannet_votenet50k").is_dir():
        return ["absent"]
    return sorted(p.name[:12] for p in (REAL / "scannet_votenet50k").glob("*_vert.npy"))


@pytest.mark.parametrize("scan", _real_scans())
def test_real_scannet_50k_subsets(scan):
    """Regression floor on real scans (labelled points only; ins_label 0 = unannotated)."""
    _need_real()
    v = np.load(REAL / "scannet_votenet50k" / f"{scan}_vert.npy")
    ins = np.load(REAL / "scannet_votenet50k" / f"{scan}_ins_label.npy").astype(np.int64) - 1
    r = oversegment_detailed(v[:, :3], v[:, 3:6].astype(np.uint8))
    assert achievable_segmentation_accuracy(r.labels, ins) >= 0.90
    assert 40 <= len(v) / r.num_superpoints <= 130


def test_real_scannet_boundary_steps_raise_asa():
    """On a hard real scan (cluttered, 3.3 cm spacing) each step must pay for itself against FH alone
    (min_size 15, the earlier default): the normal pick, then the exchange, then the coplanar merge each
    raise ASA with no more segments than FH alone. The whole pipeline is judged at min_size 16 (the
    default is 15, which gives a few more segments than FH alone here); the default must then be at
    least as good."""
    _need_real()
    v = np.load(REAL / "scannet_votenet50k" / "scene0000_02_vert.npy")
    ins = np.load(REAL / "scannet_votenet50k" / "scene0000_02_ins_label.npy").astype(np.int64) - 1
    xyz, rgb = v[:, :3], v[:, 3:6].astype(np.uint8)
    P = SuperpointParams
    fh = oversegment_detailed(xyz, rgb, params=P(min_size=15, normal_pick=0, refine_iters=0, merge_plane_rms=0.0))
    pick = oversegment_detailed(xyz, rgb, params=P(min_size=18, refine_iters=0, merge_plane_rms=0.0))
    ex = oversegment_detailed(xyz, rgb, params=P(min_size=18, merge_plane_rms=0.0))
    full = oversegment_detailed(xyz, rgb, params=P(min_size=16))
    dflt = oversegment_detailed(xyz, rgb)
    a_fh, a_pick, a_ex, a_full, a_dflt = (achievable_segmentation_accuracy(r.labels, ins)
                                          for r in (fh, pick, ex, full, dflt))
    assert max(pick.num_superpoints, ex.num_superpoints, full.num_superpoints) <= fh.num_superpoints
    assert a_fh < a_pick < a_pick + 0.007 <= a_ex < a_full <= a_dflt, (a_fh, a_pick, a_ex, a_full, a_dflt)
    assert a_full >= a_fh + 0.015, (a_fh, a_full)


def _fullres():
    _need_real()
    d = REAL / "scannet_scene0000_00_fullres"
    mesh = read_ply_mesh(d / "scene0000_00_vh_clean_2.ply")
    ins = np.load(d / "scene0000_00_vh_clean_2.v2_vertex_labels.npz")["object_id"].astype(np.int64)
    ref = np.asarray(json.loads((d / "scene0000_00_vh_clean_2.0.010000.segs.json").read_text())["segIndices"])
    return mesh, ins, ref


def test_real_scannet_full_resolution_cloud():
    mesh, ins, _ = _fullres()
    r = oversegment_detailed(mesh.xyz, mesh.rgb)
    assert achievable_segmentation_accuracy(r.labels, ins) >= 0.925
    assert 40 <= len(mesh.xyz) / r.num_superpoints <= 130


def test_mesh_segmentation_reproduces_scannet_segments():
    mesh, ins, ref = _fullres()
    assert mesh.faces.shape == (153_587, 3) and mesh.xyz.shape == (81_369, 3)
    lab = segment_mesh(mesh.xyz, mesh.faces)
    m = match_segmentations(lab, ref)
    assert m["matched_share"] >= 0.99 and abs(m["segments_a"] - m["segments_b"]) <= 20
    assert achievable_segmentation_accuracy(lab, ins) >= 0.999
