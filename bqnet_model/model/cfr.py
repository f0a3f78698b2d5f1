"""CFR, Cross-layer Feature Refinement: superpoint features that follow the decoder's beliefs.

BQNet's README names the module; the formula below is ours (bqnet-spec.md). IPDN keeps the
superpoint features fixed through all decoder layers; CFR updates them before every layer i
(i = 0..N-1) from the prediction made before that layer, so later layers attend to and predict
masks from foreground-emphasised features.

Inputs of layer i: superpoint key/value features X (T,S,d) and mask features Xm (T,S,d), the
queries Z (T,Q,d), and the previous prediction (mask logits M (T,Q,S), indicator logits).

    p_q    = softmax(indi_q)[target]                                  target probability, no grad
    f_s    = max_q p_q * sigmoid(M_qs)              (0 on padding)    foreground probability, no grad
    a_qs   = softmax_q(M_qs + log p_q)                                which target query claims s, no grad
    c_s    = sum_q a_qs * (W_v z_q)                                   attended query content
    g_s    = sigmoid(W_g [x_s ; c_s])                                 per-channel gate
    x_s'   = LayerNorm(x_s + f_s * g_s * (W_u c_s))                   next layer's keys/values
    xm_s'  = xm_s + f_s * g_s * (W_m c_s)                             next layer's mask features

Background superpoints (f ~ 0) keep their features; foreground ones absorb the content of the
queries that claim them. The gate, value and update projections are learned per layer; the
refinement is local to each superpoint (no mixing across superpoints), so padded superpoints
never influence real ones.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["CrossLayerFeatureRefinement", "foreground_probability"]


@torch.no_grad()
def foreground_probability(mask_logits: Tensor, indi_logits: Tensor, sp_pad: Tensor) -> Tensor:
    """f_s = max_q p_q sigmoid(M_qs), ``(T,S)`` in [0, 1], 0 on padded superpoints (no gradient)."""
    p = indi_logits.float().softmax(-1)[..., 1]  # (T, Q)
    f = (torch.sigmoid(mask_logits.float()) * p.unsqueeze(-1)).amax(dim=1)
    return f.masked_fill(sp_pad, 0.0)


class CrossLayerFeatureRefinement(nn.Module):
    """One refinement step (one per decoder layer); formula in the module docstring."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.value = nn.Linear(d_model, d_model)
        self.gate = nn.Linear(2 * d_model, d_model)
        self.update = nn.Linear(d_model, d_model)
        self.mask_update = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self,
        feats: Tensor,
        mask_feats: Tensor,
        queries: Tensor,
        mask_logits: Tensor,
        indi_logits: Tensor,
        sp_pad: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Refined ``(feats, mask_feats)``, both ``(T,S,d)``; the inputs are not modified."""
        T, S, d = feats.shape
        with torch.no_grad():
            fg = foreground_probability(mask_logits, indi_logits, sp_pad)  # (T, S)
            p = indi_logits.float().softmax(-1)[..., 1]  # (T, Q)
            assign = (mask_logits.float() + p.clamp_min(1e-6).log().unsqueeze(-1)).softmax(dim=1)  # (T,Q,S)
        vals = self.value(queries)  # (T, Q, d)
        content = torch.bmm(assign.to(vals.dtype).transpose(1, 2), vals)  # (T, S, d)
        feats = feats.expand(T, S, d)
        gate = torch.sigmoid(self.gate(torch.cat([feats, content], dim=-1)))
        step = gate * fg.to(gate.dtype).unsqueeze(-1)
        new_feats = self.norm(feats + step * self.update(content))
        new_mask_feats = mask_feats + step * self.mask_update(content)
        return new_feats, new_mask_feats
