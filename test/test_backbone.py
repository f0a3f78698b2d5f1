"""Sparse U-Net backbone, the spconv CPU fixes and superpoint pooling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bqnet_model.model.backbone import SparseUNetBackbone, pad_by_offsets, superpoint_pool
from bqnet_model.model.config import BackboneConfig
from bqnet_model.model.spconv_compat import set_conv_algorithm, spconv, stream_patched


def _sites(grid: int, p: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    occ = torch.rand(1, grid, grid, grid, generator=g) < p
    # nonzero() is column-major: spconv ignores strides, so indices must be made contiguous.
    return occ.nonzero().int().contiguous()


def _dense(feats: torch.Tensor, idx: torch.Tensor, grid: int) -> torch.Tensor:
    d = torch.zeros(1, grid, grid, grid, feats.shape[1], dtype=feats.dtype)
    d = d.index_put(tuple(idx.long().T), feats)
    return d.permute(0, 4, 1, 2, 3)


def _at(dense: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return dense.permute(0, 2, 3, 4, 1)[tuple(idx.long().T)]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the stream patch only applies without CUDA")
def test_stream_patch_applied_without_cuda() -> None:
    assert stream_patched()


def _assert_same_values_and_gradients(got: torch.Tensor, ref: torch.Tensor, inputs: list[torch.Tensor]) -> None:
    """``got`` equals the dense reference ``ref``, and so do the gradients of a random projection of
    both with respect to ``inputs`` (float64, atol 1e-10)."""
    assert torch.allclose(got, ref, atol=1e-10)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad((got * g).sum(), inputs), torch.autograd.grad((ref * g).sum(), inputs)):
        assert torch.allclose(a, b, atol=1e-10)


def test_spconv_cpu_forward_and_gradients_match_dense_conv3d() -> None:
    """Subm 3^3, strided 2^3 and inverse 2^3 convs against dense conv3d / conv_transpose3d (float64)."""
    torch.manual_seed(0)
    grid, cin, cout = 6, 3, 4
    idx = _sites(grid, 0.3, seed=1)
    feats = torch.randn(idx.shape[0], cin, dtype=torch.float64, requires_grad=True)
    x = spconv.SparseConvTensor(feats, idx, [grid] * 3, 1)

    subm = spconv.SubMConv3d(cin, cout, 3, padding=1, bias=False, indice_key="s").double()
    down = spconv.SparseConv3d(cin, cout, 2, stride=2, bias=False, indice_key="d").double()
    inv = spconv.SparseInverseConv3d(cout, cin, 2, bias=False, indice_key="d").double()
    for conv in (subm, down, inv):
        set_conv_algorithm(conv, "cpu")  # CUDA builds default to implicit GEMM, which has no CPU kernel
    for conv, kw in ((subm, dict(padding=1)), (down, dict(stride=2))):
        y = conv(x)
        # spconv 2 weights are (out, k, k, k, in); dense conv3d wants (out, in, k, k, k).
        ref_dense = F.conv3d(_dense(feats, idx, grid), conv.weight.permute(0, 4, 1, 2, 3), **kw)
        _assert_same_values_and_gradients(y.features, _at(ref_dense, y.indices), [feats, conv.weight])

    # Inverse conv: back onto the fine sites of the strided conv.
    xd = down(x)
    coarse = torch.randn(xd.features.shape[0], cout, dtype=torch.float64, requires_grad=True)
    y = inv(xd.replace_feature(coarse))
    assert torch.equal(y.indices, idx)
    ref_dense = F.conv_transpose3d(_dense(coarse, xd.indices, grid // 2), inv.weight.permute(4, 0, 1, 2, 3), stride=2)
    _assert_same_values_and_gradients(y.features, _at(ref_dense, idx), [coarse, inv.weight])


def test_spconv_cpu_forward_is_thread_safe() -> None:
    """Without the single-threaded scatter, 2 threads gave wrong outputs in ~1 of 10 calls."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        grid, c = 10, 16
        for trial in range(12):
            idx = _sites(grid, 0.3, seed=100 + trial)
            feats = torch.randn(idx.shape[0], c)
            conv = spconv.SubMConv3d(c, c, 3, padding=1, bias=False)
            set_conv_algorithm(conv, "cpu")
            with torch.no_grad():
                y = conv(spconv.SparseConvTensor(feats, idx, [grid] * 3, 1))
                ref = _at(F.conv3d(_dense(feats, idx, grid), conv.weight.permute(0, 4, 1, 2, 3), padding=1), y.indices)
            assert torch.allclose(y.features, ref, atol=1e-4), f"trial {trial}: max err {(y.features - ref).abs().max()}"
    finally:
        torch.set_num_threads(threads)


def test_backbone_keys_follow_spformer() -> None:
    net = SparseUNetBackbone(BackboneConfig())  # paper sizes: 32..160, 5 levels, 2 reps
    sd = net.state_dict()
    assert tuple(sd["input_conv.0.weight"].shape) == (32, 3, 3, 3, 6)
    assert "unet.blocks.block0.conv_branch.0.running_mean" in sd
    assert tuple(sd["unet.blocks.block1.conv_branch.2.weight"].shape) == (32, 3, 3, 3, 32)
    assert tuple(sd["unet.conv.2.weight"].shape) == (64, 2, 2, 2, 32)
    assert tuple(sd["unet.deconv.2.weight"].shape) == (32, 2, 2, 2, 64)
    assert tuple(sd["unet.blocks_tail.block0.i_branch.0.weight"].shape) == (32, 1, 1, 1, 64)
    assert tuple(sd["unet.u.u.u.u.blocks.block0.conv_branch.2.weight"].shape) == (160, 3, 3, 3, 160)
    assert "unet.u.u.u.u.conv.2.weight" not in sd  # the deepest level has no down conv
    assert "output_layer.0.weight" in sd
    eps = {m.eps for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d)}
    mom = {m.momentum for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d)}
    assert eps == {1e-4} and mom == {0.1}
    conv_weights = [k for k, v in sd.items() if k.endswith(".weight") and v.dim() == 5]
    assert len(conv_weights) > 40 and not any(k[: -len("weight")] + "bias" in sd for k in conv_weights)


def test_backbone_forward_shapes_and_errors() -> None:
    torch.manual_seed(0)
    cfg = BackboneConfig(media=8, levels=3)
    net = SparseUNetBackbone(cfg).eval()
    idx = _sites(12, 0.2, seed=3)
    coords = idx.clone()
    feats = torch.randn(idx.shape[0], 6)
    with torch.no_grad():
        out = net(feats, coords, [16, 16, 16], 1)
    assert out.shape == (idx.shape[0], 8) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and (out >= 0).all()  # ends in ReLU
    with pytest.raises(ValueError, match="feats must be"):
        net(torch.randn(idx.shape[0], 5), coords, [16] * 3, 1)
    with pytest.raises(ValueError, match="coords must be"):
        net(feats, coords[:, :3], [16] * 3, 1)


def test_superpoint_pool_mean_and_max() -> None:
    rng = np.random.default_rng(0)
    vals = torch.from_numpy(rng.normal(size=(50, 4)).astype(np.float32))
    idx = torch.from_numpy(rng.integers(0, 6, 50))
    idx[idx == 4] = 5  # group 4 empty
    mean = superpoint_pool(vals, idx, 7, "mean")
    mx = superpoint_pool(vals, idx, 7, "max")
    for g in range(7):
        sel = vals[idx == g]
        if len(sel):
            assert torch.allclose(mean[g], sel.mean(0), atol=1e-6)
            assert torch.allclose(mx[g], sel.max(0).values)
        else:
            assert (mean[g] == 0).all() and (mx[g] == 0).all()
    with pytest.raises(ValueError, match="unknown pooling mode"):
        superpoint_pool(vals, idx, 7, "median")
    with pytest.raises(ValueError, match="rows"):
        superpoint_pool(vals, idx[:10], 7)


def test_pad_by_offsets() -> None:
    rows = torch.arange(10, dtype=torch.float32)[:, None].repeat(1, 2)
    out, pad = pad_by_offsets(rows, torch.tensor([0, 3, 3 + 7]))
    assert out.shape == (2, 7, 2)
    assert pad.tolist() == [[False] * 3 + [True] * 4, [False] * 7]
    assert out[0, :3, 0].tolist() == [0, 1, 2] and (out[0, 3:] == 0).all()
    assert out[1, :, 0].tolist() == list(range(3, 10))
    with pytest.raises(ValueError, match="offsets"):
        pad_by_offsets(rows, torch.tensor([0, 3, 9]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_backbone_cuda_matches_cpu() -> None:
    """One model on either device: CPU uses the native algorithm, CUDA spconv's implicit GEMM."""
    torch.manual_seed(0)
    net = SparseUNetBackbone(BackboneConfig(media=16, levels=4)).eval()
    idx = _sites(24, 0.15, seed=5)
    feats = torch.randn(idx.shape[0], 6)
    with torch.no_grad():
        cpu = net(feats, idx, [32, 32, 32], 1)
        gpu = net.cuda()(feats.cuda(), idx.cuda(), [32, 32, 32], 1).cpu()
        cpu2 = net.cpu()(feats, idx, [32, 32, 32], 1)
    assert torch.allclose(cpu, gpu, atol=1e-3, rtol=1e-3)
    assert torch.equal(cpu, cpu2)
