"""SPFormer-style sparse U-Net backbone and superpoint pooling.

The module tree is laid out so that the state-dict keys match SPFormer's / IPDN's
(``input_conv.0.weight``, ``unet.blocks.block0.conv_branch.2.weight``, ``unet.conv.2.weight``,
``unet.u.blocks...``, ``unet.deconv.2.weight``, ``unet.blocks_tail.block0.i_branch.0.weight``,
``output_layer.0.running_mean``): the official backbone checkpoint then loads by name, and the
checkpoint mapper only has to add the ``backbone.`` prefix.

Layout (pre-norm, ``normalize_before``): each level holds ``block_reps`` residual blocks
(BN -> ReLU -> subm conv 3^3 -> BN -> ReLU -> subm conv 3^3, plus an identity or 1x1 shortcut),
goes down with BN -> ReLU -> SparseConv3d(k=2, s=2), up with BN -> ReLU -> SparseInverseConv3d(k=2)
sharing the down conv's indice key, concatenates the skip features and reduces them with
``block_reps`` residual blocks (the first maps 2C -> C).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .config import BackboneConfig
from .spconv_compat import set_conv_algorithm, spconv

__all__ = [
    "ResidualBlock",
    "UBlock",
    "SparseUNetBackbone",
    "superpoint_pool",
    "pad_by_offsets",
    "OffsetPadding",
]


def _bn(channels: int, cfg: BackboneConfig) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(channels, eps=cfg.bn_eps, momentum=cfg.bn_momentum)


class ResidualBlock(spconv.SparseModule):
    """Pre-norm residual block of two submanifold 3x3x3 convs (1x1 shortcut when channels change)."""

    def __init__(self, in_channels: int, out_channels: int, cfg: BackboneConfig, indice_key: str) -> None:
        super().__init__()
        if in_channels == out_channels:
            self.i_branch = spconv.SparseSequential(nn.Identity())
        else:
            self.i_branch = spconv.SparseSequential(
                spconv.SubMConv3d(in_channels, out_channels, kernel_size=1, bias=False)
            )
        self.conv_branch = spconv.SparseSequential(
            _bn(in_channels, cfg),
            nn.ReLU(),
            spconv.SubMConv3d(in_channels, out_channels, kernel_size=3, padding=1, bias=False,
                              indice_key=indice_key),
            _bn(out_channels, cfg),
            nn.ReLU(),
            spconv.SubMConv3d(out_channels, out_channels, kernel_size=3, padding=1, bias=False,
                              indice_key=indice_key),
        )

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        out = self.conv_branch(x)
        return out.replace_feature(out.features + self.i_branch(x).features)


class UBlock(nn.Module):
    """One U-Net level; recursive (``u`` holds the next level)."""

    def __init__(self, planes: list[int], cfg: BackboneConfig, level: int = 1) -> None:
        super().__init__()
        self.planes = list(planes)
        c0 = planes[0]
        sub_key = f"subm{level}"
        self.blocks = spconv.SparseSequential(
            OrderedDict((f"block{i}", ResidualBlock(c0, c0, cfg, sub_key)) for i in range(cfg.block_reps))
        )
        if len(planes) > 1:
            c1 = planes[1]
            down_key = f"spconv{level}"
            self.conv = spconv.SparseSequential(
                _bn(c0, cfg), nn.ReLU(),
                spconv.SparseConv3d(c0, c1, kernel_size=2, stride=2, bias=False, indice_key=down_key),
            )
            self.u = UBlock(planes[1:], cfg, level + 1)
            self.deconv = spconv.SparseSequential(
                _bn(c1, cfg), nn.ReLU(),
                spconv.SparseInverseConv3d(c1, c0, kernel_size=2, bias=False, indice_key=down_key),
            )
            self.blocks_tail = spconv.SparseSequential(
                OrderedDict(
                    (f"block{i}", ResidualBlock(2 * c0 if i == 0 else c0, c0, cfg, sub_key))
                    for i in range(cfg.block_reps)
                )
            )

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        out = self.blocks(x)
        if len(self.planes) > 1:
            deep = self.deconv(self.u(self.conv(out)))
            # The inverse conv restores exactly ``out``'s active sites in ``out``'s order.
            out = out.replace_feature(torch.cat((out.features, deep.features), dim=1))
            out = self.blocks_tail(out)
        return out


class SparseUNetBackbone(nn.Module):
    """``input_conv`` -> ``unet`` -> ``output_layer``; voxel features in, voxel features (V, media) out."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.input_conv = spconv.SparseSequential(
            spconv.SubMConv3d(cfg.in_channels, cfg.media, kernel_size=3, padding=1, bias=False,
                              indice_key="subm1")
        )
        self.unet = UBlock([cfg.media * (i + 1) for i in range(cfg.levels)], cfg, level=1)
        self.output_layer = spconv.SparseSequential(_bn(cfg.media, cfg), nn.ReLU())
        self._algo_device = ""  # device type the conv algorithms are set for (CPU needs the native one)

    @property
    def out_channels(self) -> int:
        return self.cfg.media

    def forward(
        self, feats: torch.Tensor, coords: torch.Tensor, spatial_shape: list[int] | tuple[int, ...], batch_size: int
    ) -> torch.Tensor:
        """Voxel features (V, in_channels) at ``coords`` (V, 4) [batch, x, y, z] -> (V, media)."""
        if feats.ndim != 2 or feats.shape[1] != self.cfg.in_channels:
            raise ValueError(f"feats must be (V, {self.cfg.in_channels}), got {tuple(feats.shape)}")
        if coords.ndim != 2 or coords.shape[1] != 4 or coords.shape[0] != feats.shape[0]:
            raise ValueError(f"coords must be (V, 4) matching feats ({feats.shape[0]} rows), got {tuple(coords.shape)}")
        if feats.device.type != self._algo_device:
            set_conv_algorithm(self, feats.device.type)
            self._algo_device = feats.device.type
        x = spconv.SparseConvTensor(feats.contiguous(), coords.int().contiguous(), list(spatial_shape), int(batch_size))
        x = self.output_layer(self.unet(self.input_conv(x)))
        return x.features


def superpoint_pool(values: torch.Tensor, index: torch.Tensor, n_groups: int, mode: str = "mean") -> torch.Tensor:
    """Reduce rows of ``values`` (N, C) into ``n_groups`` groups given by ``index`` (N,): mean or max.

    Native torch (index_add_ / scatter_reduce); empty groups get zeros.
    """
    if values.shape[0] != index.shape[0]:
        raise ValueError(f"values has {values.shape[0]} rows but index has {index.shape[0]}")
    index = index.long()
    out = values.new_zeros((n_groups, values.shape[1]))
    if mode == "mean":
        out.index_add_(0, index, values)
        # counts by a scatter: a CUDA bincount reads the largest index back to the host (a sync)
        cnt = torch.zeros(n_groups, dtype=torch.long, device=index.device).index_add_(0, index, torch.ones_like(index))
        cnt = cnt.clamp_min(1).to(values.dtype)
        return out / cnt[:, None]
    if mode == "max":
        return out.scatter_reduce(0, index[:, None].expand_as(values), values, reduce="amax", include_self=False)
    raise ValueError(f"unknown pooling mode {mode!r} (expected 'mean' or 'max')")


class OffsetPadding:
    """The scatter indices that split concatenated rows (R, ...) by ``offsets`` (B+1,) into a padded
    (B, R_max, ...) tensor, built once on the host: on CUDA, reading the offsets and the largest
    scene back from the device costs host syncs, so several tensors of one batch share one
    ``OffsetPadding``. ``pad`` (B, R_max) bool on ``device``: True where padded."""

    def __init__(self, offsets: torch.Tensor, device: torch.device | str) -> None:
        off = torch.as_tensor(offsets).long().cpu()
        if off.ndim != 1 or off.shape[0] < 2 or int(off[0]) != 0 or bool((off[1:] < off[:-1]).any()):
            raise ValueError(f"offsets must rise from 0 (one entry per scene plus one), got {off.tolist()}")
        counts = off[1:] - off[:-1]
        self.rows = int(off[-1])
        self.shape = (int(counts.shape[0]), int(counts.max()))
        scene = torch.repeat_interleave(torch.arange(self.shape[0]), counts)
        local = torch.arange(self.rows) - off[:-1][scene]
        self.scene, self.local = scene.to(device), local.to(device)
        pad = torch.ones(self.shape, dtype=torch.bool)
        pad[scene, local] = False
        self.pad = pad.to(device)

    @classmethod
    def from_indices(cls, scene: torch.Tensor, local: torch.Tensor, pad: torch.Tensor,
                     device: torch.device | str) -> "OffsetPadding":
        """The padding of indices built beforehand (``targets.scene_padding``, in a loader worker):
        ``scene``/``local`` (R,) and ``pad`` (B, R_max), moved to ``device`` without blocking."""
        if scene.ndim != 1 or local.shape != scene.shape or pad.ndim != 2 or pad.dtype != torch.bool:
            raise ValueError(f"padding indices: scene and local (R,), pad (B, R_max) bool expected, got "
                             f"{tuple(scene.shape)}, {tuple(local.shape)}, {tuple(pad.shape)} {pad.dtype}")
        self = cls.__new__(cls)
        self.rows = int(scene.shape[0])
        self.shape = (int(pad.shape[0]), int(pad.shape[1]))
        self.scene, self.local = scene.to(device, non_blocking=True), local.to(device, non_blocking=True)
        self.pad = pad.to(device, non_blocking=True)
        return self

    def __call__(self, rows: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        if rows.shape[0] != self.rows:
            raise ValueError(f"offsets run to {self.rows} rows, the tensor has {rows.shape[0]}")
        out = rows.new_full((*self.shape, *rows.shape[1:]), fill)
        out[self.scene, self.local] = rows
        return out


def pad_by_offsets(rows: torch.Tensor, offsets: torch.Tensor, fill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Split concatenated rows (R, ...) by ``offsets`` (B+1,) into a padded (B, R_max, ...) tensor.

    Returns the padded tensor and the padding mask (B, R_max), True where padded.
    """
    padding = OffsetPadding(offsets, rows.device)
    return padding(rows, fill), padding.pad
