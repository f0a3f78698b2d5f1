"""Loss targets and the authors' query-object matching (BQNet/CFNet ``match_sampled_ins``).

There is no Hungarian matching. For each ground-truth object of a sentence:

* the query whose seed lies **nearest to the object's centroid** is matched (always, so every
  object has at least one query even when no seed landed on it);
* every other query whose seed superpoint **carries the object's instance label** (the instance
  holding more than half of that superpoint's points) is matched too, except queries already
  taken as some object's nearest one.

Each matched pair (query, object) is trained on that object's superpoint mask. The objects'
centroids are the unweighted mean of the centres of their superpoints, as the authors compute
them (``scatter_mean`` of the superpoint coordinates over the object's superpoints).

The same rule on the FPS seeds (instead of the sampled queries) gives the soft targets of the
sampling loss (``sampling_targets``). Matching depends only on positions and labels, never on
the predictions, so it is computed once per batch and shared by every decoder layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["LossTargets", "Matching", "ObjectSet", "match_objects", "sentence_objects", "match_batch",
           "sampling_targets"]


@dataclass
class LossTargets:
    """Per-sentence ground truth of a batch, padded to the decoder's S superpoints.

    ``sp_inst (T,S)`` int64: instance id of the target object that holds the majority of each
    superpoint, -1 elsewhere (padding included); ``sp_pad (T,S)`` bool, True = padding;
    ``sp_xyz (T,S,3)``: superpoint centres in the frame the seeds were sampled in; ``sp_ref (T,S)``:
    the authors' ``sp_ref_masks`` (superpoint mean of 1 on target points, 0.5 on points of
    instances whose class the sentence names, 0 elsewhere); ``token_maps``: kind -> (T,L)
    normalised token maps of the sentence spans (``text_prep.positive_maps``: target, modify,
    pron, other_entity, rel), needed only by the contrastive term; ``sem (B,S)`` int64: majority
    semantic label per superpoint of each scene for the auxiliary semantic head (-1 = ignore);
    ``sp_anchor (T,S)`` int64: like ``sp_inst`` for the sentence's anchors (the other objects it
    names), read only by the auxiliary anchor-mask term (``loss.anchor_mask``)."""

    sp_inst: Tensor
    sp_pad: Tensor
    sp_xyz: Tensor
    sp_ref: Tensor
    token_maps: dict[str, Tensor] | None = None
    sem: Tensor | None = None
    sp_anchor: Tensor | None = None

    def check(self, T: int, S: int) -> None:
        """Raise when a field does not fit a decoder output of T sentences and S superpoints."""
        for name, want, dtype in (("sp_inst", (T, S), torch.long), ("sp_pad", (T, S), torch.bool),
                                  ("sp_xyz", (T, S, 3), None), ("sp_ref", (T, S), None)):
            v = getattr(self, name)
            if not isinstance(v, Tensor) or tuple(v.shape) != want:
                got = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
                raise ValueError(f"LossTargets.{name} must have shape {want} (padded like the masks), got {got}")
            if dtype is not None and v.dtype != dtype:
                raise TypeError(f"LossTargets.{name} must be {dtype}, got {v.dtype}")
            if dtype is None and not v.is_floating_point():
                raise TypeError(f"LossTargets.{name} must be a float tensor, got {v.dtype}")
        a = self.sp_anchor
        if a is not None and (not isinstance(a, Tensor) or tuple(a.shape) != (T, S) or a.dtype != torch.long):
            got = f"{tuple(a.shape)} {a.dtype}" if isinstance(a, Tensor) else type(a).__name__
            raise ValueError(f"LossTargets.sp_anchor must be an int64 tensor of shape {(T, S)} or None, got {got}")


@dataclass
class ObjectSet:
    """The target objects of one sentence: ``ids (K,)``, superpoint ``masks (K,S)`` bool and
    ``centroids (K,3)``."""

    ids: Tensor
    masks: Tensor
    centroids: Tensor


@dataclass
class Matching:
    """Matched pairs of a batch: pair ``p`` trains query ``q_idx[p]`` of sentence ``t_idx[p]`` on
    ``targets[p]`` (S,) float, the mask of object ``k_idx[p]`` of that sentence. ``matched (T,Q)``:
    queries in at least one pair; ``num_insts``: the number of pairs (the authors' normaliser)."""

    t_idx: Tensor
    q_idx: Tensor
    k_idx: Tensor
    targets: Tensor
    matched: Tensor
    objects: list[ObjectSet]

    @property
    def num_insts(self) -> int:
        return int(self.t_idx.numel())


def sentence_objects(sp_inst: Tensor, sp_xyz: Tensor) -> ObjectSet:
    """Objects of one sentence from its ``sp_inst (S,)`` and superpoint centres ``(S,3)``."""
    ids = torch.unique(sp_inst[sp_inst >= 0])  # sorted; the order changes no loss value
    masks = sp_inst.unsqueeze(0) == ids.unsqueeze(1)  # (K, S)
    w = masks.to(sp_xyz.dtype)
    centroids = (w @ sp_xyz) / w.sum(1, keepdim=True).clamp_min(1.0)
    return ObjectSet(ids, masks, centroids)


def match_objects(pos: Tensor, labels: Tensor, obj_ids: Tensor, obj_pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The authors' rule for one sentence: candidates at ``pos (N,3)`` with instance ``labels (N,)``
    against objects ``obj_ids (K,)`` at ``obj_pos (K,3)``.

    Returns ``(cand (P,), obj (P,), nearest (K,))``: first the nearest candidate of every object
    (ties: the lowest index), then, object by object, each candidate carrying that object's label
    that is nobody's nearest."""
    K = int(obj_ids.numel())
    dev = pos.device
    if K == 0 or pos.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        return empty, empty, empty
    nearest = torch.cdist(pos.float(), obj_pos.float()).argmin(dim=0)  # (K,)
    taken = torch.zeros(pos.shape[0], dtype=torch.bool, device=dev)
    taken[nearest] = True
    inside = (labels.unsqueeze(0) == obj_ids.unsqueeze(1)) & ~taken.unsqueeze(0)  # (K, N)
    k_in, c_in = torch.nonzero(inside, as_tuple=True)  # row-major: object by object, candidates ascending
    cand = torch.cat([nearest, c_in])
    obj = torch.cat([torch.arange(K, device=dev), k_in])
    return cand, obj, nearest


def match_batch(seed_idx: Tensor, sample_idx: Tensor, targets: LossTargets) -> Matching:
    """Match the queries of every sentence (``seed_idx (T,F)``, ``sample_idx (T,Q)`` of the decoder
    output) to its objects; positions come from ``targets.sp_xyz`` so seeds and centroids share a frame."""
    T, Q = sample_idx.shape
    dev = sample_idx.device
    query_sp = seed_idx.gather(1, sample_idx)  # (T, Q)
    t_parts, q_parts, k_parts, tgt_parts, objects = [], [], [], [], []
    for t in range(T):
        objs = sentence_objects(targets.sp_inst[t], targets.sp_xyz[t])
        objects.append(objs)
        q, k, _ = match_objects(targets.sp_xyz[t][query_sp[t]], targets.sp_inst[t][query_sp[t]],
                                objs.ids, objs.centroids)
        t_parts.append(torch.full_like(q, t))
        q_parts.append(q)
        k_parts.append(k)
        tgt_parts.append(objs.masks[k].float())
    t_idx, q_idx, k_idx = torch.cat(t_parts), torch.cat(q_parts), torch.cat(k_parts)
    S = targets.sp_inst.shape[1]
    tgt = torch.cat(tgt_parts) if tgt_parts else torch.zeros(0, S, device=dev)
    matched = torch.zeros(T, Q, dtype=torch.bool, device=dev)
    matched[t_idx, q_idx] = True
    return Matching(t_idx, q_idx, k_idx, tgt, matched, objects)


@torch.no_grad()
def sampling_targets(seed_idx: Tensor, targets: LossTargets, objects: list[ObjectSet]) -> Tensor:
    """Soft targets ``(T,F)`` of the sampling loss, composed as the authors do:

    1. every seed starts at 0.5 * ``sp_ref`` of its superpoint (context objects give 0.25, target
       superpoints 0.5);
    2. seeds matched to an object by the rule above (nearest or inside) get exp(-0.5 d^2), d = the
       seed's distance in metres to that object's centroid;
    3. each object's nearest seed gets 1.
    Sentences without objects keep step 1 only."""
    tgt = 0.5 * targets.sp_ref.gather(1, seed_idx).float()
    for t, objs in enumerate(objects):
        if objs.ids.numel() == 0:
            continue
        pos = targets.sp_xyz[t][seed_idx[t]].float()  # (F, 3)
        cand, obj, nearest = match_objects(pos, targets.sp_inst[t][seed_idx[t]], objs.ids, objs.centroids)
        d = (pos[cand] - objs.centroids[obj].float()).norm(dim=-1)
        tgt[t, cand] = torch.exp(-0.5 * d.square())
        tgt[t, nearest] = 1.0
    return tgt
