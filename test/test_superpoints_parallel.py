"""The parallel port of the online superpoints (csrc/sp_parallel*.h: the kernels the CUDA build runs)
on its host backend (``_C.oversegment_parallel``): labels exactly equal to the CPU's ``merge="boruvka"``
labels (and the same normals, spacing, edge count and round counts) on synthetic rooms and real scans,
with xyz only, with colour, with given normals; deterministic over thread counts and runs; the same
results or the same errors on degenerate clouds. Plus the nvcc compile check of the device file and
the CUDA routing of ``bqnet_model.superpoints`` that a CPU-only machine can check."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import nvcc_compile

from bqnet_synth import minimal_room
from bqnet_model.superpoints import SuperpointParams, oversegment_detailed
from bqnet_model.superpoints_cuda import oversegment_host_port

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "real" / "scannet_votenet50k"
BORUVKA = SuperpointParams(merge="boruvka")


def _same(a, b) -> None:
    """The port's result equals the CPU Borůvka result in everything but the timings."""
    assert np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.normals, b.normals)
    assert (a.spacing, a.num_superpoints, a.num_edges) == (b.spacing, b.num_superpoints, b.num_edges)
    assert (a.merge_rounds, a.coplanar_rounds) == (b.merge_rounds, b.coplanar_rounds)


def _both(xyz, rgb=None, normals=None, params: SuperpointParams = BORUVKA, threads: int = 2):
    cpu = oversegment_detailed(xyz, rgb, normals, params=params, num_threads=threads)
    port = oversegment_host_port(xyz, rgb, normals, params=params, num_threads=threads)
    return cpu, port


@pytest.fixture(scope="module")
def room():
    return minimal_room(40_000, seed=5)


@pytest.mark.parametrize("inputs", ["xyz", "rgb", "normals"])
def test_port_equals_boruvka_on_a_room(room, inputs):
    rgb = None if inputs == "xyz" else room.rgb
    normals = None
    if inputs == "normals":  # the CPU's own estimate, flipped at random: used as given
        est = oversegment_detailed(room.xyz, params=BORUVKA).normals
        normals = est * np.where(np.random.default_rng(0).random(len(est)) < 0.5, -1.0, 1.0)[:, None].astype(np.float32)
    cpu, port = _both(room.xyz, rgb, normals)
    _same(cpu, port)
    assert port.merge_rounds > 0 and cpu.num_superpoints > 50


@pytest.mark.parametrize("params", [SuperpointParams(merge="boruvka", merge_max_size=0),  # pointer jumping
                                    SuperpointParams(merge="boruvka", max_size=200, min_size=30),
                                    SuperpointParams(merge="boruvka", refine_iters=0, merge_plane_rms=0.0),
                                    SuperpointParams(merge="boruvka", normal_pick=0, spacing=0.02)])
def test_port_equals_boruvka_for_other_parameters(room, params):
    _same(*_both(room.xyz, room.rgb, params=params))


def _real_scans() -> list[str]:
    if not REAL.is_dir():
        return ["absent"]
    return sorted(p.name[:12] for p in REAL.glob("*_vert.npy"))


@pytest.mark.parametrize("scan", _real_scans())
def test_port_equals_boruvka_on_real_scans(scan):
    if not REAL.is_dir():
        pytest.skip(f"real ScanNet scans not present at {REAL} (a clone without shared/ has none)")
    v = np.load(REAL / f"{scan}_vert.npy")
    xyz, rgb = v[:, :3], v[:, 3:6].astype(np.uint8)
    _same(*_both(xyz, rgb))
    _same(*_both(xyz))


def test_port_deterministic_across_threads_and_runs(room):
    one = oversegment_host_port(room.xyz, room.rgb, params=BORUVKA, num_threads=1)
    for threads in (2, 2, 3):
        again = oversegment_host_port(room.xyz, room.rgb, params=BORUVKA, num_threads=threads)
        assert np.array_equal(again.labels, one.labels) and np.array_equal(again.normals, one.normals)


def test_port_on_degenerate_clouds_equals_boruvka():
    rng = np.random.default_rng(0)
    line = np.c_[np.linspace(0, 1, 300), np.zeros(300), np.zeros(300)].astype(np.float32)
    plane = np.c_[rng.random((3000, 2)), np.zeros(3000)].astype(np.float32)
    blob = rng.random((4000, 3)).astype(np.float32) * [1.0, 1.0, 0.2]
    twice = np.concatenate([blob, blob])  # a map fused twice: exact duplicates
    far = np.r_[blob, [[50.0, 50.0, 50.0]]].astype(np.float32)  # one point no edge reaches
    clouds = {"line": line, "plane": plane, "twice": twice, "far": far, "one place": np.zeros((50, 3), np.float32),
              "two points": np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]),
              "float64 far away": blob.astype(np.float64) + [512_000.0, 4_096_000.0, 100.0]}
    for name, xyz in clouds.items():
        cpu, port = _both(xyz, params=SuperpointParams(merge="boruvka", min_size=10))
        assert np.array_equal(cpu.labels, port.labels), name
    two = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], np.float32)  # 170 spacings apart: no edge at all
    cpu, port = _both(two, params=SuperpointParams(merge="boruvka", spacing=0.01))
    assert cpu.labels.tolist() == port.labels.tolist() == [0, 1] and port.num_edges == 0
    port = oversegment_host_port(twice, params=SuperpointParams(min_size=10)).labels
    assert np.array_equal(port[: len(blob)], port[len(blob):])  # each copy gets its twin's label
    assert (oversegment_host_port(far).labels[:-1] != oversegment_host_port(far).labels[-1]).all()
    assert oversegment_host_port(np.zeros((50, 3), np.float32)).labels.tolist() == [0] * 50


@pytest.mark.parametrize(
    "xyz, match",
    [(np.zeros((0, 3), np.float32), "empty"), (np.zeros((1, 3), np.float32), "1 point"),
     (np.r_[np.zeros((9, 3)), [[np.nan, 0, 0]]].astype(np.float32), "1 of 10 points"),
     (np.zeros((10, 2), np.float32), r"shape \(N, 3\)")],
)
def test_port_errors_are_the_cpu_errors(xyz, match):
    for run in (oversegment_detailed, oversegment_host_port):
        with pytest.raises(ValueError, match=match):
            run(xyz)


_STRICT = """
import sys
from dataclasses import asdict
import numpy as np, torch
from bqnet_synth import minimal_room
from bqnet_model import _C
from bqnet_model.superpoints import SuperpointParams
room = minimal_room(20_000, seed=2)
clouds = [(room.xyz, torch.from_numpy(room.rgb), None), (room.xyz, None, torch.from_numpy(room.xyz * 0 + 1)),
          (np.zeros((50, 3), np.float32), None, None), (np.r_[room.xyz[:3000], [[50, 50, 50]]], None, None)]
for merge_max_size in (150, 0):
    p = asdict(SuperpointParams(merge="boruvka", merge_max_size=merge_max_size))
    for xyz, rgb, nrm in clouds:
        x = torch.from_numpy(np.ascontiguousarray(xyz, np.float32))
        a = _C.oversegment_parallel(x, rgb, nrm, **p, num_threads=2, strict_memory=True)
        b = _C.oversegment_parallel(x, rgb, nrm, **p, num_threads=2)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), "strict run differs"
print("strict ok")
"""


def test_port_touches_buffers_only_through_the_backend():
    """On the GPU every buffer is device memory: driver code that reads one on the host crashes there. The
    host backend's strict mode makes such a read fault here (buffers PROT_NONE outside backend calls); run
    in a subprocess so that a fault is a failure, not a crashed test session."""
    done = subprocess.run([sys.executable, "-c", _STRICT], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"})
    assert done.returncode == 0 and "strict ok" in done.stdout, (done.returncode, done.stderr[-3000:])


def test_nvcc_compiles_the_device_file(tmp_path):
    """The CUDA translation unit compiles with the flags setup.py uses (device code for sm_90, H200)."""
    obj = tmp_path / "superpoints_cuda.o"
    done = nvcc_compile(ROOT / "csrc" / "cuda" / "superpoints_cuda.cu", obj, "-O1")
    assert done.returncode == 0, done.stderr[-4000:]
    assert obj.stat().st_size > 0


def test_cuda_routing_picks_the_device_and_logs_a_missing_extension_once(monkeypatch, caplog):
    from bqnet_model import superpoints, superpoints_cuda

    assert superpoints._target_device(np.zeros((3, 3)), None).type == "cpu"
    assert superpoints._target_device(torch.zeros(3, 3), None).type == "cpu"
    assert superpoints._target_device(np.zeros((3, 3)), "cuda:0") == torch.device("cuda:0")
    monkeypatch.setattr(superpoints_cuda, "_EXT", {})
    monkeypatch.setitem(sys.modules, "bqnet_model._C_cuda", None)  # what an unbuilt extension looks like
    with caplog.at_level(logging.WARNING, logger="bqnet_model.superpoints_cuda"):
        assert superpoints_cuda.extension() is None
        assert superpoints_cuda.extension() is None
    lines = [r for r in caplog.records if "_C_cuda is not built" in r.getMessage()]
    assert len(lines) == 1 and "on the CPU" in lines[0].getMessage()


def _cuda_or_skip():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here: the GPU path runs in tools/device_superpoints_cuda.sh on the GPU machine")
    from bqnet_model.superpoints_cuda import extension

    if extension() is None:
        pytest.fail("a CUDA device is present but bqnet_model._C_cuda is not built (python setup.py build_ext --inplace)")


def test_cuda_labels_match_boruvka_and_are_deterministic(room):
    """On a GPU: CUDA labels equal the CPU Borůvka labels, or (acos / cos bits of the device's libm moved a
    near-tied edge) ASA within 0.005 with about the same segment count; identical over runs."""
    _cuda_or_skip()
    clouds = [("room", room.xyz, room.rgb, room.instance)]
    if REAL.is_dir():
        v = np.load(REAL / "scene0000_02_vert.npy")
        ins = np.load(REAL / "scene0000_02_ins_label.npy").astype(np.int64) - 1
        clouds.append(("real", v[:, :3], v[:, 3:6].astype(np.uint8), ins))
    from bqnet_model.superpoints import achievable_segmentation_accuracy as asa

    for name, xyz, rgb, inst in clouds:
        cpu = oversegment_detailed(xyz, rgb, params=BORUVKA).labels
        x, c = torch.from_numpy(xyz).cuda(), torch.from_numpy(rgb).cuda()
        runs = [oversegment_detailed(x, c, params=BORUVKA) for _ in range(3)]
        assert runs[0].labels.is_cuda and runs[0].normals.is_cuda
        gpu = [r.labels.cpu().numpy() for r in runs]
        assert all(np.array_equal(gpu[0], g) for g in gpu[1:]), name
        if not np.array_equal(gpu[0], cpu):
            assert abs(asa(gpu[0], inst) - asa(cpu, inst)) <= 0.005, name
            assert abs(int(gpu[0].max()) - int(cpu.max())) <= 0.05 * cpu.max(), name
    # the CPU's errors, raised before any kernel runs
    with pytest.raises(ValueError, match="1 of 10 points"):
        oversegment_detailed(torch.tensor(np.r_[np.zeros((9, 3)), [[np.nan, 0, 0]]], dtype=torch.float32).cuda())
    with pytest.raises(ValueError, match="1 point"):
        oversegment_detailed(torch.zeros(1, 3, device="cuda"))
    assert oversegment_detailed(torch.zeros(50, 3, device="cuda")).labels.tolist() == [0] * 50
