"""PSC, Progressive Spatial Constraint: a 3D distance prior on query-to-superpoint attention.

BQNet's README names the module; the formula below is ours (bqnet-spec.md, "What BQNet adds").

Query position. Before decoder layer i (i = 0..N-1) each query q has a position c_q, the
mask-weighted centre of the mask it predicted before that layer:

    w_qs = sigmoid(M_qs) * [M_qs > 0] * [s not padded]          (M: previous mask logits)
    c_q  = (sum_s w_qs x_s + lambda * p_q) / (sum_s w_qs + lambda)

with x_s the superpoint centres, p_q the position of the query's seed and lambda =
``centre_prior`` (the seed counts as lambda superpoints, so an empty mask falls back to the
seed). Positions carry no gradient (like the Mask2Former attention mask they complement).

Bias. With d_qs = ||c_q - x_s|| and a radius r_i that shrinks geometrically from r_start to
r_end over the layers,

    r_i    = r_end * (r_start / r_end) ** (1 - i / (N - 1))      (r_0 = r_start, r_{N-1} = r_end)
    B_qs^i = - softplus(beta_i) / softplus(0) * d_qs^2 / (2 r_i^2)

is added to the attention logits of layer i's query-to-superpoint cross-attention (all heads),
together with the mask attention (-inf where the previous mask is below 0.5, IPDN's rule).
beta_i is one learnable scalar per layer, initialised so the strength starts at 1. r_start
defaults to the diagonal of the scene's bounding box (a nearly flat prior in layer 1), r_end to
object size (``radius_end`` metres), so attention narrows coarse to fine around each query's
current estimate of its object. r_start below r_end is raised to r_end (constant radius).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ProgressiveSpatialConstraint", "query_centres", "scene_extent", "radius_schedule"]


@torch.no_grad()
def query_centres(
    mask_logits: Tensor, sp_xyz: Tensor, sp_pad: Tensor, prior_pos: Tensor, prior_weight: float = 1.0
) -> Tensor:
    """Mask-weighted centre of each query's predicted mask, ``(T,Q,S) -> (T,Q,3)`` (no gradient).

    See the module docstring; ``prior_pos (T,Q,3)`` is used with weight ``prior_weight``.
    """
    valid = (~sp_pad).unsqueeze(1)  # (T, 1, S)
    m = mask_logits.float()
    w = torch.sigmoid(m) * ((m > 0) & valid)  # (T, Q, S)
    xyz = sp_xyz.float().masked_fill(sp_pad.unsqueeze(-1), 0.0)
    num = torch.bmm(w, xyz) + prior_weight * prior_pos.float()
    den = w.sum(-1, keepdim=True) + prior_weight
    return num / den.clamp_min(1e-12)


@torch.no_grad()
def scene_extent(sp_xyz: Tensor, sp_pad: Tensor) -> Tensor:
    """Diagonal of the bounding box of the real superpoints of each row, ``(T,)`` (0 if none)."""
    big = torch.finfo(torch.float32).max
    xyz = sp_xyz.float()
    lo = xyz.masked_fill(sp_pad.unsqueeze(-1), big).amin(dim=1)
    hi = xyz.masked_fill(sp_pad.unsqueeze(-1), -big).amax(dim=1)
    diag = (hi - lo).clamp_min(0.0).norm(dim=-1)
    return torch.where((~sp_pad).any(dim=1), diag, torch.zeros_like(diag))


def radius_schedule(start: Tensor, end: float, layer: int, num_layers: int) -> Tensor:
    """Geometric interpolation from ``start`` (per row, metres) at layer 0 to ``end`` at the last."""
    if end <= 0:
        raise ValueError(f"end radius must be > 0, got {end}")
    frac = layer / max(num_layers - 1, 1)
    start = start.clamp_min(end)
    return end * (start / end) ** (1.0 - frac)


def _pairwise_sq_dist(a: Tensor, b: Tensor) -> Tensor:
    """Squared distances ``(T,Q,3) x (T,S,3) -> (T,Q,S)`` via one batched matmul (memory: the output)."""
    a = a.float()
    b = b.float()
    d = torch.baddbmm(
        a.square().sum(-1, keepdim=True) + b.square().sum(-1).unsqueeze(1), a, b.transpose(1, 2), alpha=-2.0
    )
    return d.clamp_min_(0.0)


class ProgressiveSpatialConstraint(nn.Module):
    """Distance-decaying attention bias with a per-layer shrinking radius (module docstring)."""

    def __init__(
        self,
        num_layers: int,
        radius_end: float = 1.0,
        radius_start: float | None = None,
        centre_prior: float = 1.0,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if radius_end <= 0 or (radius_start is not None and radius_start <= 0):
            raise ValueError(f"PSC radii must be > 0, got start={radius_start} end={radius_end}")
        if centre_prior <= 0:
            raise ValueError(f"centre_prior must be > 0, got {centre_prior}")
        self.num_layers = num_layers
        self.radius_end = float(radius_end)
        self.radius_start = None if radius_start is None else float(radius_start)
        self.centre_prior = float(centre_prior)
        self.strength = nn.Parameter(torch.zeros(num_layers))  # softplus(0)/softplus(0) = 1 at init

    def radius(self, layer: int, extent: Tensor) -> Tensor:
        """Radius of ``layer`` per row ``(T,)``; ``extent`` is the scene diagonal per row."""
        start = extent if self.radius_start is None else torch.full_like(extent, self.radius_start)
        return radius_schedule(start, self.radius_end, layer, self.num_layers)

    def forward(self, layer: int, centres: Tensor, sp_xyz: Tensor, extent: Tensor) -> Tensor:
        """Additive bias ``(T, 1, Q, S)`` (broadcast over heads) for decoder layer ``layer``."""
        r = self.radius(layer, extent).float()  # (T,)
        d2 = _pairwise_sq_dist(centres, sp_xyz)  # (T, Q, S)
        scale = F.softplus(self.strength[layer]) / math.log(2.0)
        bias = d2 * (-0.5 / r.square()).view(-1, 1, 1)
        return (bias * scale).unsqueeze(1)
