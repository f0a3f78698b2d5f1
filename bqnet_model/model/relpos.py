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

With ``text`` (``decoder.rel_pos_text``) the offset a head prefers depends on the sentence, as in
ViL3DRel's language-conditioned spatial self-attention (Chen et al., NeurIPS 2022): the MLP's
output layer gets a per-sentence weight on top of its own,

    B_h(q, p) = (W_h + U_h s) . phi(c_p - c_q) + b_h        (s = the sentence's mean word feature)

so "next to" and "far from" can ask for different distances in the same head. Without it the bias
is the same for every sentence: a prior on where to look, not a relation. ``U`` starts at zero
too, so a model trained without it answers the same after switching it on.
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
    """``(T,Q,3)`` query positions [+ ``(T,D)`` sentence vectors] -> ``(T,H,Q,Q)`` additive
    attention logits (zero at init). ``text_dim`` None: the bias ignores the sentence."""

    def __init__(self, nhead: int, hidden: int = 32, text_dim: int | None = None) -> None:
        super().__init__()
        if nhead < 1 or hidden < 1 or (text_dim is not None and text_dim < 1):
            raise ValueError("RelativePositionBias needs nhead >= 1, hidden >= 1 and text_dim >= 1 or None, "
                             f"got {nhead}, {hidden}, {text_dim}")
        self.nhead, self.hidden = nhead, hidden
        self.mlp = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, nhead))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)
        self.text = None
        if text_dim is not None:
            self.text = nn.Linear(text_dim, nhead * hidden)  # U (per-sentence part of the output weight)
            nn.init.zeros_(self.text.weight)
            nn.init.zeros_(self.text.bias)

    def forward(self, pos: Tensor, sentence: Tensor | None = None) -> Tensor:
        if pos.dim() != 3 or pos.shape[-1] != 3:
            raise ValueError(f"positions must be (T, Q, 3), got {tuple(pos.shape)}")
        if (sentence is None) != (self.text is None):
            raise ValueError("a sentence vector is needed exactly when the bias was built with text_dim")
        feats = pair_features(pos.detach().float())
        phi = self.mlp[1](self.mlp[0](feats))  # (T,Q,Q,hidden)
        bias = self.mlp[2](phi)  # (T,Q,Q,H)
        if self.text is not None:
            assert sentence is not None
            if sentence.dim() != 2 or sentence.shape[0] != pos.shape[0]:
                raise ValueError(f"sentence vectors must be (T, D) with T = {pos.shape[0]}, got {tuple(sentence.shape)}")
            u = self.text(sentence.float()).view(-1, self.nhead, self.hidden)  # (T,H,hidden)
            bias = bias + torch.einsum("tqpk,thk->tqph", phi, u)
        return bias.permute(0, 3, 1, 2)
