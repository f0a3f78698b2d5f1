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

``sentence_objects`` and ``match_objects`` state the rule for one sentence. The batch functions
(``batch_objects``, ``match_batch``, ``sampling_targets``) apply the same rule to all sentences
at once, with the objects of the batch in one sentence-major list: a Python loop over the
sentences cost ~25 tensor ops and two host synchronisations (``unique``, ``nonzero``) per
sentence, which made the training step bound by the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["LossTargets", "Matching", "ObjectSet", "ObjectKeys", "BatchObjects", "match_objects", "sentence_objects",
           "object_keys", "batch_objects", "match_batch", "sampling_targets"]


@dataclass
class ObjectKeys:
    """Which objects the sentences of a batch have, in ``BatchObjects``'s order: object ``g`` is
    instance ``ids[g]`` of sentence ``t_idx[g]``; ``first (T,)`` as ``BatchObjects.first``."""

    t_idx: Tensor
    ids: Tensor
    first: Tensor


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
    names), read only by the auxiliary anchor-mask term (``loss.anchor_mask``). ``objects`` /
    ``anchor_objects`` (optional): the objects of ``sp_inst`` / ``sp_anchor`` found beforehand
    (``targets.build_tables``, on the host), so that ``batch_objects`` needs no ``unique`` and no
    read-back of the largest id on the device; None = found in the loss. ``sem_labelled`` /
    ``sem_max`` (optional): the flat indices of the labelled entries of ``sem`` and its largest
    label, found on the host (``losses.semantic_loss``'s ``labelled`` / ``max_label``)."""

    sp_inst: Tensor
    sp_pad: Tensor
    sp_xyz: Tensor
    sp_ref: Tensor
    token_maps: dict[str, Tensor] | None = None
    sem: Tensor | None = None
    sp_anchor: Tensor | None = None
    objects: ObjectKeys | None = None
    anchor_objects: ObjectKeys | None = None
    sem_labelled: Tensor | None = None
    sem_max: int | None = None

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
class BatchObjects:
    """The target objects of every sentence of a batch, sentence-major (each sentence's objects by
    increasing id, as ``sentence_objects`` orders them): object ``g`` belongs to sentence
    ``t_idx[g]``, has instance ``ids[g]``, superpoint mask ``masks[g] (S,)`` bool and centroid
    ``centroids[g] (3,)``; ``first (T,)``: the index of each sentence's first object, so object
    ``g`` is number ``g - first[t_idx[g]]`` of its sentence."""

    t_idx: Tensor
    ids: Tensor
    masks: Tensor
    centroids: Tensor
    first: Tensor

    def sentence(self, t: int) -> ObjectSet:
        """The objects of sentence ``t`` as ``sentence_objects`` gives them."""
        sel = self.t_idx == t
        return ObjectSet(self.ids[sel], self.masks[sel], self.centroids[sel])


@dataclass
class Matching:
    """Matched pairs of a batch: pair ``p`` trains query ``q_idx[p]`` of sentence ``t_idx[p]`` on
    ``targets[p]`` (S,) float, the mask of object ``k_idx[p]`` of that sentence. ``matched (T,Q)``:
    queries in at least one pair; ``num_insts``: the number of pairs (the authors' normaliser).
    Pairs are sentence-major; within a sentence the nearest pairs come first (``match_objects``).
    ``objects``: the sentences' objects (``k_idx`` numbers them within their sentence)."""

    t_idx: Tensor
    q_idx: Tensor
    k_idx: Tensor
    targets: Tensor
    matched: Tensor
    objects: BatchObjects

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


def object_keys(sp_inst: Tensor) -> ObjectKeys:
    """The objects of every sentence of ``sp_inst (T,S)`` (-1 = none), on its device: one sorted
    list of (sentence, id) keys, sentence-major, ids ascending within a sentence. The largest id is
    read back once to size the key space (a host sync on CUDA: ``targets.build_tables`` calls this
    on the host, in the loader's workers)."""
    T = sp_inst.shape[0]
    dev = sp_inst.device
    span = int(sp_inst.max()) + 1 if sp_inst.numel() else 0
    if span <= 0:
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        return ObjectKeys(empty, empty.clone(), torch.zeros(T, dtype=torch.long, device=dev))
    keys = torch.arange(T, device=dev).unsqueeze(1) * span + sp_inst
    uniq = torch.unique(keys[sp_inst >= 0])
    t_idx = torch.div(uniq, span, rounding_mode="floor")
    ids = uniq - t_idx * span
    return ObjectKeys(t_idx, ids, torch.searchsorted(t_idx, torch.arange(T, device=dev)))


def batch_objects(sp_inst: Tensor, sp_xyz: Tensor, keys: ObjectKeys | None = None) -> BatchObjects:
    """``sentence_objects`` of every sentence at once: ``sp_inst (T,S)``, ``sp_xyz (T,S,3)``.
    ``keys``: the objects already found (``object_keys`` of the same ``sp_inst``, on its device):
    then only their masks and centroids are computed here, with no host synchronisation."""
    keys = object_keys(sp_inst) if keys is None else keys
    masks = sp_inst.index_select(0, keys.t_idx) == keys.ids.unsqueeze(1)  # (K, S)
    w = masks.to(sp_xyz.dtype)
    sums = torch.bmm(w.unsqueeze(1), sp_xyz.index_select(0, keys.t_idx)).squeeze(1)  # (K, 3)
    centroids = sums / w.sum(1, keepdim=True).clamp_min(1.0)
    return BatchObjects(keys.t_idx, keys.ids, masks, centroids, keys.first)


def _match_all(pos: Tensor, labels: Tensor, objs: BatchObjects,
               exclude: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``match_objects`` of every sentence at once: candidates ``pos (T,N,3)`` with ``labels (T,N)``.

    Returns ``(cand (P,), obj (P,), nearest (K,))`` with ``obj`` indexing ``objs`` (global) and the
    pairs in ``match_objects``'s order within each sentence, sentences one after the other.
    ``exclude (T,N)`` bool (optional): candidates whose pairs are dropped afterwards (they still
    count as their object's nearest, so no other candidate is paired in their place): the pairs of
    the rule less those, in the same order, found with the same single ``nonzero``."""
    dev = pos.device
    K, N = int(objs.ids.numel()), pos.shape[1]
    if K == 0 or N == 0:
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        return empty, empty, empty
    own = objs.t_idx
    d = torch.cdist(pos.float().index_select(0, own), objs.centroids.float().unsqueeze(1))  # (K, N, 1)
    nearest = d.squeeze(-1).argmin(dim=1)  # (K,), ties: the lowest index
    taken = torch.zeros(pos.shape[:2], dtype=torch.bool, device=dev)
    taken[own, nearest] = True
    inside = (labels.index_select(0, own) == objs.ids.unsqueeze(1)) & ~taken.index_select(0, own)  # (K, N)
    if exclude is None:
        k_in, c_in = torch.nonzero(inside, as_tuple=True)  # object by object, candidates ascending
        cand = torch.cat([nearest, c_in])
        obj = torch.cat([torch.arange(K, device=dev), k_in])
    else:  # the kept entries of [nearest pairs, inside pairs (row-major)]: the order of the cat above
        inside = inside & ~exclude.index_select(0, own)
        sel = torch.nonzero(torch.cat([~exclude[own, nearest], inside.flatten()])).squeeze(1)
        is_near = sel < K
        j = (sel - K).clamp_min(0)  # position in inside.flatten() (0 for the nearest entries, unused)
        row = torch.div(j, N, rounding_mode="floor")
        obj = torch.where(is_near, sel, row)
        cand = torch.where(is_near, nearest.index_select(0, sel.clamp_max(K - 1)), j - row * N)
    # Sentence-major with each sentence's nearest pairs first: a stable sort by sentence keeps the
    # order of the concatenation within a sentence.
    order = torch.sort(own[obj], stable=True).indices
    return cand[order], obj[order], nearest


def _gather_xyz(sp_xyz: Tensor, idx: Tensor) -> Tensor:
    return sp_xyz.gather(1, idx.unsqueeze(-1).expand(-1, -1, 3))


def match_batch(seed_idx: Tensor, sample_idx: Tensor, targets: LossTargets, exclude: Tensor | None = None) -> Matching:
    """Match the queries of every sentence (``seed_idx (T,F)``, ``sample_idx (T,Q)`` of the decoder
    output) to its objects; positions come from ``targets.sp_xyz`` so seeds and centroids share a frame.
    The pairs are those of ``match_objects`` on each sentence, in that order, sentence by sentence.
    ``exclude (T,Q)`` bool (optional): queries whose pairs are dropped (``losses.anchor_matching``:
    the queries a target took), with no further host synchronisation."""
    T, Q = sample_idx.shape
    dev = sample_idx.device
    query_sp = seed_idx.gather(1, sample_idx)  # (T, Q)
    objs = batch_objects(targets.sp_inst, targets.sp_xyz, targets.objects)
    q_idx, obj, _ = _match_all(_gather_xyz(targets.sp_xyz, query_sp), targets.sp_inst.gather(1, query_sp), objs,
                               exclude)
    t_idx = objs.t_idx[obj]
    k_idx = obj - objs.first[t_idx]
    tgt = objs.masks[obj].float()
    matched = torch.zeros(T, Q, dtype=torch.bool, device=dev)
    matched[t_idx, q_idx] = True
    return Matching(t_idx, q_idx, k_idx, tgt, matched, objs)


@torch.no_grad()
def sampling_targets(seed_idx: Tensor, targets: LossTargets, objects: BatchObjects) -> Tensor:
    """Soft targets ``(T,F)`` of the sampling loss, composed as the authors do:

    1. every seed starts at 0.5 * ``sp_ref`` of its superpoint (context objects give 0.25, target
       superpoints 0.5);
    2. seeds matched to an object by the rule above (nearest or inside) get exp(-0.5 d^2), d = the
       seed's distance in metres to that object's centroid;
    3. each object's nearest seed gets 1.
    Sentences without objects keep step 1 only. ``objects``: ``Matching.objects`` (``batch_objects``)."""
    tgt = 0.5 * targets.sp_ref.gather(1, seed_idx).float()
    if objects.ids.numel() == 0:
        return tgt
    pos = _gather_xyz(targets.sp_xyz, seed_idx).float()  # (T, F, 3)
    cand, obj, nearest = _match_all(pos, targets.sp_inst.gather(1, seed_idx), objects)
    t = objects.t_idx[obj]
    d = (pos[t, cand] - objects.centroids[obj].float()).norm(dim=-1)
    tgt[t, cand] = torch.exp(-0.5 * d.square())
    tgt[objects.t_idx, nearest] = 1.0
    return tgt
