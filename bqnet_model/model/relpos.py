"""Relative-position bias for the queries' global self-attention (``rra``): ours, not in the paper.

Why: "the chair next to the desk" is decided by what lies *around* a chair. In IPDN/BQNet a query's
cross-attention is confined to its own predicted mask (Mask2Former rule) and its local self-attention
(``scg``, DQF's graph) reaches only the few nearest queries, which mostly sit on the same object;
the global self-attention ``rra`` sees every query but not where it is. The held-out breakdown of
the shipped model (``tools/eval_breakdown.py``) found a third of the "multiple" sentences answered
with another object of the right class: the relation, not the mask, failed.

This module gives ``rra`` an additive per-head bias from the relative position of each pair of
queries, as in Swin's relative position bias but continuous (3D rooms have no grid):

    B_h(q, p) = MLP_h([c_p - c_q, ||c_p - c_q||])        (metres; c = the queries' current centres)

so a head can learn to listen to queries at a given offset ("beside", "left of", "under"). The last
layer of the MLP starts at zero: with the switch on, an already trained model computes exactly what
it computed before, and training starts from there (``--init-weights`` then reports the new keys as
missing and leaves them at zero).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["RelativePositionBias", "pair_features"]


def pair_features(pos: Tensor) -> Tensor:
    """``(T,Q,3)`` positions -> ``(T,Q,Q,4)`` [dx, dy, dz, distance] of key p seen from query q."""
    rel = pos.unsqueeze(1) - pos.unsqueeze(2)  # [t, q, p] = pos[t, p] - pos[t, q]
    return torch.cat([rel, rel.norm(dim=-1, keepdim=True)], dim=-1)


class RelativePositionBias(nn.Module):
    """``(T,Q,3)`` query positions -> ``(T,H,Q,Q)`` additive attention logits (zero at init)."""

    def __init__(self, nhead: int, hidden: int = 32) -> None:
        super().__init__()
        if nhead < 1 or hidden < 1:
            raise ValueError(f"RelativePositionBias needs nhead >= 1 and hidden >= 1, got {nhead}, {hidden}")
        self.mlp = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, nhead))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, pos: Tensor) -> Tensor:
        if pos.dim() != 3 or pos.shape[-1] != 3:
            raise ValueError(f"positions must be (T, Q, 3), got {tuple(pos.shape)}")
        feats = pair_features(pos.detach().float())
        return self.mlp(feats).permute(0, 3, 1, 2)
