"""The CUDA farthest point sampling (csrc/cuda/fps_cuda.cu, ``bqnet_model._C_cuda.farthest_point_sample``):
the nvcc compile check of its device file, its steps emulated on the host, the dispatch of
``farthest_point_sample`` (which a CPU-only machine checks with a stand-in kernel), and, on a machine
with CUDA, the kernel's indices against the torch implementation's (the reference, itself checked
against a literal emulation of the pointnet2 kernel in test_decoder.py) on random clouds, exact ties,
near-origin points, padding, short rows, several rows and large rows, plus its argument errors."""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import nvcc_compile

from bqnet_model.model import query_sampling
from bqnet_model.model.query_sampling import farthest_point_sample

ROOT = Path(__file__).resolve().parents[1]
def test_nvcc_compiles_the_fps_device_file(tmp_path):
    """fps_cuda.cu compiles for sm_90 (H200) with setup.py's flags, without spilling registers."""
    obj = tmp_path / "fps_cuda.o"
    done = nvcc_compile(ROOT / "csrc" / "cuda" / "fps_cuda.cu", obj, "-O3", "-Xptxas", "-v")
    assert done.returncode == 0, done.stderr[-4000:]
    assert obj.stat().st_size > 0
    assert "fps_kernel" in done.stderr and " 0 bytes spill stores" in done.stderr, done.stderr[-2000:]


# ---------------------------------------------------------------------- dispatch (CPU)
@pytest.fixture
def fresh_lookup(monkeypatch):
    """An empty kernel look-up, so that each test sees its own extension (or none)."""
    monkeypatch.setattr(query_sampling, "_KERNEL", {})


def test_dispatch_needs_the_switch_cuda_input_and_the_extension(monkeypatch, fresh_lookup):
    calls = []

    def fake(xyz, lengths, n):
        calls.append((tuple(xyz.shape), lengths.tolist(), n))
        return torch.zeros(xyz.shape[0], n, dtype=torch.long)

    monkeypatch.setitem(sys.modules, "bqnet_model._C_cuda", types.SimpleNamespace(farthest_point_sample=fake))
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert query_sampling._kernel_for(False, cuda) is None  # switch off: the torch loop
    assert query_sampling._kernel_for(True, cpu) is None  # CPU input: the torch loop
    got = query_sampling._kernel_for(True, cuda)  # the extension's function behind the argument checks
    assert got is not None and got.__wrapped__ is fake
    xyz = torch.rand(2, 9, 3, generator=torch.Generator().manual_seed(0))
    pad = torch.zeros(2, 9, dtype=torch.bool)
    pad[1, 6:] = True
    want = farthest_point_sample(xyz, 5, pad)
    assert torch.equal(farthest_point_sample(xyz, 5, pad, kernel=True), want) and not calls
    # What a CUDA call hands the kernel: float32 points, the real counts from pad, n.
    monkeypatch.setattr(query_sampling, "_kernel_for", lambda kernel, device: fake if kernel else None)
    assert farthest_point_sample(xyz.double(), 5, pad, kernel=True).shape == (2, 5)
    assert calls == [((2, 9, 3), [9, 6], 5)]


def test_a_missing_or_old_extension_falls_back_to_the_torch_loop_with_one_warning(monkeypatch, fresh_lookup, caplog):
    cuda = torch.device("cuda", 0)
    monkeypatch.setitem(sys.modules, "bqnet_model._C_cuda", None)  # what an unbuilt extension looks like
    with caplog.at_level(logging.WARNING, logger="bqnet_model.model.query_sampling"):
        assert query_sampling._kernel_for(True, cuda) is None
        assert query_sampling._kernel_for(True, cuda) is None
    lines = [r.getMessage() for r in caplog.records if "farthest_point_sample" in r.getMessage()]
    assert len(lines) == 1 and "not built" in lines[0] and "torch loop" in lines[0]
    caplog.clear()
    monkeypatch.setattr(query_sampling, "_KERNEL", {})
    monkeypatch.setitem(sys.modules, "bqnet_model._C_cuda", types.SimpleNamespace(oversegment=None))
    with caplog.at_level(logging.WARNING, logger="bqnet_model.model.query_sampling"):
        assert query_sampling._kernel_for(True, cuda) is None
    assert any("rebuild" in r.getMessage() for r in caplog.records)


@pytest.mark.usefixtures("one_torch_thread")
def test_the_inference_switch_reaches_fps_in_prepare(monkeypatch):
    """``inference.fps_cuda_kernel`` (on by default) is what prepare's FPS calls get, TTA views included."""
    from bqnet_synth import minimal_room
    from bqnet_model.model import bqnet
    from bqnet_model.model.config import InferenceConfig, load_config
    from bqnet_model.pipeline import Segmenter
    from tiny_model import tiny_config

    assert InferenceConfig().fps_cuda_kernel is True
    assert load_config({"inference": {"fps_cuda_kernel": False}}).inference.fps_cuda_kernel is False
    seen = []

    def recording(*args, kernel=False, **kw):
        seen.append(kernel)
        return farthest_point_sample(*args, kernel=kernel, **kw)

    monkeypatch.setattr(bqnet, "farthest_point_sample", recording)
    room = minimal_room(1500, seed=0)
    sp = np.unique(np.floor(room.xyz / 0.4).astype(np.int64), axis=0, return_inverse=True)[1].ravel()
    cfg = tiny_config()
    cfg["model"].setdefault("text", {})["official_prep"] = False  # + unknown_object "answer": no spaCy (none on the GPU machine)
    for flag in (True, False):
        seg = Segmenter.from_config(cfg, device="cpu", seed=0, fps_cuda_kernel=flag, tta_rotations=2,
                                    unknown_object="answer")
        seg.prepare(room.xyz, room.rgb, superpoints=sp)
        assert seen == [flag, flag]
        seen.clear()


# ---------------------------------------------------------------------- the kernel's steps on the host
def _layout(m: int) -> int:
    t = 1
    while t < 512 and 2 * t <= m:
        t *= 2
    return t


def _emulated_kernel(xyz: np.ndarray, m: int, n: int) -> list[int]:
    """fps_cuda.cu's steps for one row of m real points, written out with float32 numpy scalars:
    the per-thread scans with the near-origin sentinel, the shared-memory pairs down to 32 slots,
    then warp 0's shuffles (a lane past the warp reads its own value), the block size of the launch."""
    f = np.float32
    p = xyz.astype(f)
    block = max(32, _layout(min(len(p), 512)))
    T = _layout(m)
    sq = lambda a, b, c: f(f(f(a * a) + f(b * b)) + f(c * c))  # noqa: E731
    dist = [f(-1.0) if float(sq(*p[k])) <= 1e-3 else f(1e10) for k in range(m)]
    seeds, old = [0], 0
    for _ in range(1, n):
        best, best_k = [f(-1.0)] * block, [0] * block
        for t in range(T):
            for k in range(t, m, T):
                if dist[k] == f(-1.0):
                    continue
                d2 = min(sq(*(p[k] - p[old])), dist[k])
                dist[k] = d2
                if d2 > best[t]:
                    best[t], best_k[t] = d2, k
        half = T // 2
        while T > 32 and half >= 32:
            for t in range(half):
                if best[t + half] > best[t]:
                    best[t], best_k[t] = best[t + half], best_k[t + half]
            half //= 2
        half = min(T, 32) // 2
        while half >= 1:
            src = [lane + half if lane + half < 32 else lane for lane in range(32)]
            other, other_k = [best[s] for s in src], [best_k[s] for s in src]
            for lane in range(32):
                if other[lane] > best[lane]:
                    best[lane], best_k[lane] = other[lane], other_k[lane]
            half //= 2
        old = best_k[0]
        seeds.append(old)
    return seeds


def test_the_kernels_steps_give_the_torch_indices_on_the_host():
    """The kernel's control flow (not its CUDA code) against the torch implementation, on the CPU:
    every reduction shape (T = 1 ... 512), ties, near-origin points, short rows and padding."""
    g = torch.Generator().manual_seed(5)
    axis = torch.arange(4.0)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3) - 1.0
    clouds = [torch.rand(S, 3, generator=g) * 2 - 1 for S in (1, 2, 5, 33, 64, 100, 130, 600)] + [grid]
    clouds[3][4] = 0.01  # inside the 1e-3 ball
    for xyz in clouds:
        S = len(xyz)
        for n in (12, S + 4) if S < 64 else (12,):
            want = farthest_point_sample(xyz[None], n)[0].tolist()
            assert _emulated_kernel(xyz.numpy(), S, n) == want, S
    xyz = torch.rand(1, 140, 3, generator=g)  # a padded row: the launch's block is larger than its layout
    pad = torch.arange(140)[None] >= 70
    assert _emulated_kernel(xyz[0].numpy(), 70, 10) == farthest_point_sample(xyz, 10, pad)[0].tolist()


# ---------------------------------------------------------------------- the kernel (CUDA)
def _kernel_or_skip():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the FPS kernel is checked on the GPU machine (tools/device_bench_ingest.sh)")
    query_sampling._KERNEL.clear()
    run = query_sampling.fps_cuda_kernel()
    if run is None:
        pytest.fail("CUDA is here but bqnet_model._C_cuda has no farthest_point_sample: build it with "
                    "`python setup.py build_ext --inplace` (tools/device_build.sh)")
    return run


def _same_as_torch(run, xyz: torch.Tensor, n: int, pad: torch.Tensor | None = None) -> torch.Tensor:
    """The kernel's indices equal the torch implementation's on the GPU (both variants) and on the CPU."""
    xyz = xyz.cuda()
    pad = torch.zeros(xyz.shape[:2], dtype=torch.bool, device=xyz.device) if pad is None else pad.cuda()
    got = run(xyz.float().contiguous(), (~pad).sum(1), n)
    assert got.dtype == torch.long and got.shape == (xyz.shape[0], n) and got.device == xyz.device
    for matrix in (False, True) if xyz.shape[0] * xyz.shape[1] ** 2 <= query_sampling.FPS_MATRIX_MAX else (False,):
        want = farthest_point_sample(xyz, n, pad, matrix=matrix)
        assert torch.equal(got, want), (matrix, (got != want).nonzero()[:5].tolist())
    assert torch.equal(farthest_point_sample(xyz, n, pad, kernel=True), got)
    if xyz.shape[1] <= 4096:
        assert torch.equal(farthest_point_sample(xyz.cpu(), n, pad.cpu()), got.cpu())
    return got


@pytest.mark.parametrize("S", [1, 2, 3, 5, 31, 32, 33, 63, 64, 65, 127, 511, 512, 513, 1000, 2500, 3001])
def test_kernel_matches_torch_on_random_clouds(S):
    run = _kernel_or_skip()
    g = torch.Generator().manual_seed(S)
    xyz = (torch.rand(1, S, 3, generator=g) * 2 - 1) * torch.tensor([3.0, 2.5, 1.2])
    _same_as_torch(run, xyz, 256 if S >= 256 else 64)


def test_kernel_matches_torch_on_exact_ties():
    """Grid points: many equal distances at every step, so every pick is decided by the tie rule."""
    run = _kernel_or_skip()
    for side in (3, 4, 7, 10, 13):
        axis = torch.arange(float(side))
        grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(1, -1, 3)
        _same_as_torch(run, grid - (side - 1) / 2, min(256, grid.shape[1] + 5))
        _same_as_torch(run, grid * 0.25 + 1.0, 200)


def test_kernel_matches_torch_near_the_origin():
    """Points inside the 1e-3 ball (index 0 among them), points on its float32 boundary, all-near rows."""
    run = _kernel_or_skip()
    g = torch.Generator().manual_seed(7)
    r0 = math.sqrt(query_sampling.FPS_ORIGIN_RADIUS2)
    direction = torch.nn.functional.normalize(torch.randn(400, 3, generator=g), dim=1)
    shell = direction * (r0 + (torch.rand(400, 1, generator=g) - 0.5) * 2e-6)  # both sides of the boundary
    far = torch.rand(300, 3, generator=g) * 4 - 2
    inside = torch.rand(20, 3, generator=g) * 0.01
    for parts in ((inside, far, shell), (far, inside, shell), (shell, far), (inside,), (inside[:3], far[:2])):
        xyz = torch.cat(parts)[None]
        _same_as_torch(run, xyz, 64)
        _same_as_torch(run, xyz, xyz.shape[1] + 10)


def test_kernel_matches_torch_with_padding_short_rows_and_several_rows():
    """B rows of different real counts (padding after them, the layout from each row's own count),
    rows with fewer (choosable) points than n (indices repeat), duplicates; each row as its own call."""
    run = _kernel_or_skip()
    g = torch.Generator().manual_seed(11)
    counts = [700, 1, 2, 33, 512, 513, 64, 5, 300]
    S = max(counts)
    xyz = torch.rand(len(counts), S, 3, generator=g) * 3 - 1.5
    xyz[3, 10:20] = xyz[3, 0]  # duplicates of the first seed
    xyz[7, :3] = 0.0  # a short row with points at the origin
    pad = torch.arange(S)[None] >= torch.tensor(counts)[:, None]
    xyz[pad] = 0.0
    for n in (1, 16, 256):
        got = _same_as_torch(run, xyz, n, pad)
        for b, m in enumerate(counts):
            alone = run(xyz[b:b + 1, :m].cuda().contiguous(), torch.tensor([m], device="cuda"), n)
            assert torch.equal(got[b:b + 1], alone), b
            assert int(got[b].max()) < m


@pytest.mark.parametrize("S", [17_000, 50_000, 60_000])
def test_kernel_matches_torch_on_large_rows(S):
    """Rows of scene size: the running distances in shared memory (50k on an H200) and, past the
    shared-memory limit, in the global scratch row (60k)."""
    run = _kernel_or_skip()
    g = torch.Generator().manual_seed(S)
    xyz = (torch.rand(2, S, 3, generator=g) * 2 - 1) * torch.tensor([4.0, 3.0, 1.5])
    pad = torch.zeros(2, S, dtype=torch.bool)
    pad[1, S * 3 // 4:] = True
    _same_as_torch(run, xyz, 256, pad)
    again = run(xyz.cuda(), (~pad).sum(1).cuda(), 256)
    assert torch.equal(again, run(xyz.cuda(), (~pad).sum(1).cuda(), 256))  # deterministic


def test_kernel_argument_errors_say_what_is_wrong():
    run = _kernel_or_skip()
    xyz = torch.rand(2, 10, 3, device="cuda")
    lengths = torch.tensor([10, 4], device="cuda")
    with pytest.raises(RuntimeError, match="float32 CUDA tensor of shape"):
        run(xyz.cpu(), lengths.cpu(), 4)
    with pytest.raises(RuntimeError, match="float32 CUDA tensor of shape"):
        run(xyz.double(), lengths, 4)
    with pytest.raises(RuntimeError, match="float32 CUDA tensor of shape"):
        run(xyz[..., :2].contiguous(), lengths, 4)
    with pytest.raises(RuntimeError, match="lengths must be an int64 tensor"):
        run(xyz, lengths.int(), 4)
    with pytest.raises(RuntimeError, match="lengths must be an int64 tensor"):
        run(xyz, lengths[:1], 4)
    with pytest.raises(RuntimeError, match=r"lengths must lie in \[1, 10\]"):
        run(xyz, torch.tensor([11, 4], device="cuda"), 4)
    with pytest.raises(RuntimeError, match=r"lengths must lie in \[1, 10\]"):
        run(xyz, torch.tensor([0, 4], device="cuda"), 4)
    with pytest.raises(RuntimeError, match="n \\(seeds per row\\)"):
        run(xyz, lengths, 0)
    assert run(xyz[:0], lengths[:0], 4).shape == (0, 4)
    strided = torch.rand(2, 10, 6, device="cuda")[..., ::2]  # not contiguous: the binding copies it
    assert torch.equal(run(strided, lengths, 8), run(strided.contiguous(), lengths, 8))


def test_the_wrapper_refuses_bad_arguments_before_the_binding():
    """The binding's own errors crashed the process on the GPU machine (csrc/cuda/bindings_cuda.cpp),
    so ``fps_cuda_kernel()`` checks the arguments in Python first; a bad call never reaches it. The
    rules, on CPU tensors (``device_type`` "cpu" stands in for CUDA), as the GPU test above calls them."""
    calls = []
    run = query_sampling._checked_kernel(lambda *a: calls.append(a))
    xyz = torch.rand(2, 10, 3)
    with pytest.raises(RuntimeError, match=r"float32 CUDA tensor of shape \(B, S, 3\), got float32 \(2, 10, 3\) on cpu"):
        run(xyz, torch.tensor([10, 4]), 4)
    with pytest.raises(RuntimeError, match="got ndarray"):
        run(xyz.numpy(), torch.tensor([10, 4]), 4)
    assert calls == []
    err = lambda x, lens, n: query_sampling.kernel_argument_error(x, lens, n, device_type="cpu")  # noqa: E731
    lengths = torch.tensor([10, 4])
    assert err(xyz, lengths, 4) is None and err(xyz, lengths, np.int64(4)) is None
    assert "float32 CPU tensor" in err(xyz.double(), lengths, 4) and "float32 CPU tensor" in err(xyz[..., :2], lengths, 4)
    assert "between 1 and" in err(xyz[:, :0], lengths, 4)
    for bad_n in (0, -1, 2**31, 4.0, True, "4"):
        assert "n (seeds per row) must be an integer" in err(xyz, lengths, bad_n)
    assert "lengths must be an int64 tensor of shape (2,)" in err(xyz, lengths.int(), 4)
    assert "lengths must be an int64 tensor of shape (2,)" in err(xyz, lengths[:1], 4)
    assert "lengths must lie in [1, 10]" in err(xyz, torch.tensor([11, 4]), 4)
    assert "got [0, 4]" in err(xyz, torch.tensor([0, 4]), 4)
    assert err(xyz[:0], lengths[:0], 4) is None  # no rows: nothing to check, the kernel returns (0, n)
