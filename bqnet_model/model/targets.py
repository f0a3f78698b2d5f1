"""Loss-target tables of a training batch, built once per batch where the batch is built.

``BQNet.sentence_targets`` builds the ``LossTargets`` in the training step, in the main process,
from the per-sentence lists of ``dataset.collate_fn`` (``gt_sp_masks``, ``gt_sp_inst``,
``sp_ref_masks``, ``gt_sp_anchor``: one small tensor per sentence and list). At 32 rooms x 16
sentences that is about 2,000 small tensors pinned and copied per batch, and a few dozen host ops
(``arange``, ``repeat_interleave``, ``full``, scatters) that cost milliseconds each on a loaded host.

``build_tables`` computes the same targets from the same batch as a few padded tables (one tensor
each, whatever the number of sentences), plus what depends only on the targets:

* ``sp_inst``, ``sp_ref``, ``sp_anchor`` ``(T,S)``, ``sp_pad`` ``(T,S)``, ``scene_xyz`` ``(B,S,3)``
  (superpoint centres per scene; the sentences' rows are gathered on the device), ``sem`` ``(B,S)``;
* ``sem_labelled`` (the flat indices of the labelled entries of ``sem``) and ``sem_max`` (its
  largest label), so that the semantic term reads nothing back (``losses.semantic_loss``);
* the objects of every sentence (``obj_t``, ``obj_ids``, ``obj_first``: ``matching.ObjectKeys``),
  and of its anchors: the sorted ``unique`` over (sentence, instance) keys and the key space's size,
  which the step read back from the device (two host syncs per matching);
* the scene padding indices of ``pool_scene`` (``sp_scene``, ``sp_local``, ``sp_scene_pad``:
  ``backbone.OffsetPadding.from_indices``).

``bqnet_model.train.data.train_collate`` runs it in the DataLoader's worker processes;
``loss_targets`` moves the tables to the device (``non_blocking``) and gives the ``LossTargets``.
The values are those of ``sentence_targets`` bit for bit (``test/test_train_targets.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .backbone import OffsetPadding
from .matching import LossTargets, ObjectKeys, object_keys

__all__ = ["TABLES_KEY", "PADDING_KEY", "build_tables", "loss_targets", "scene_padding"]

# Where train_collate puts the tables in the batch dict, and the padding indices of pool_scene.
TABLES_KEY = "loss_tables"
PADDING_KEY = "sp_padding"


def scene_padding(sp_offsets: Tensor) -> dict[str, Tensor]:
    """``OffsetPadding``'s indices for ``sp_offsets (B+1,)``, on the host: ``scene``, ``local``
    (S_total,) and ``pad`` (B, S_max) bool, True = padding (``OffsetPadding.from_indices``)."""
    p = OffsetPadding(sp_offsets, "cpu")
    return {"scene": p.scene, "local": p.local, "pad": p.pad}


def _rows(values: list[Any], name: str, lengths: list[int]) -> Tensor:
    got = [int(torch.as_tensor(v).shape[0]) for v in values]
    if got != lengths:
        raise ValueError(f"batch {name} rows have {got} superpoints where gt_sp_masks has {lengths}")
    return torch.cat([torch.as_tensor(v) for v in values]) if values else torch.zeros(0)


def build_tables(batch: dict[str, Any], padding: dict[str, Tensor] | None = None) -> dict[str, Any]:
    """The target tables of a ``dataset.collate_fn`` batch (module docstring), on the host. Raises
    as ``sentence_targets`` does when the batch has no ``gt_sp_masks`` or a list disagrees with it.
    ``padding``: ``scene_padding`` of the batch's ``sp_offsets`` when the caller has it already."""
    gt_list = batch.get("gt_sp_masks")
    if gt_list is None:
        raise ValueError("batch has no gt_sp_masks (training batches need them)")
    off = torch.as_tensor(batch["sp_offsets"]).long()
    pads = scene_padding(off) if padding is None else padding
    scene, local = pads["scene"], pads["local"]
    B, s_max = pads["pad"].shape
    n_sp = int(off[-1])
    counts = off[1:] - off[:-1]
    ts = torch.as_tensor(batch["text_scene"]).long()
    T = int(ts.shape[0])
    sp = torch.as_tensor(batch["superpoints"]).long()
    xyz = torch.as_tensor(batch["point_xyz"]).float()
    sums = torch.zeros(n_sp, 3).index_add_(0, sp, xyz)  # the ops of sentence_targets, in its order
    sizes = torch.bincount(sp, minlength=n_sp).clamp_min(1).unsqueeze(1)
    scene_xyz = torch.zeros(B, s_max, 3)
    scene_xyz[scene, local] = sums / sizes
    # Sentence t's rows fill positions 0..S_b-1 of row t: one scatter per table.
    lengths = [int(torch.as_tensor(g).shape[0]) for g in gt_list]
    n_rows = sum(lengths)
    rows = torch.repeat_interleave(torch.arange(T), torch.tensor(lengths, dtype=torch.long), output_size=n_rows)
    starts = torch.tensor([0, *lengths[:-1]], dtype=torch.long).cumsum(0)
    flat = rows * s_max + torch.arange(n_rows) - starts[rows]

    def table(values: list[Any], name: str, fill: float, dtype: torch.dtype) -> Tensor:
        out = torch.full((T, s_max), fill, dtype=dtype)
        if lengths:
            out.view(-1)[flat] = _rows(values, name, lengths).to(dtype)
        return out

    gt = table(gt_list, "gt_sp_masks", 0.0, torch.float32)
    inst_list, ref_list, anchor_list = batch.get("gt_sp_inst"), batch.get("sp_ref_masks"), batch.get("gt_sp_anchor")
    sp_inst = table(inst_list, "gt_sp_inst", -1, torch.long) if inst_list is not None else torch.where(gt > 0.5, 0, -1)
    sp_ref = table(ref_list, "sp_ref_masks", 0.0, torch.float32) if ref_list is not None else gt
    sp_anchor = table(anchor_list, "gt_sp_anchor", -1, torch.long) if anchor_list is not None else None
    sem = None
    if batch.get("sp_semantic") is not None:
        sem_flat = torch.as_tensor(batch["sp_semantic"]).long()
        if sem_flat.ndim != 1 or sem_flat.shape[0] != n_sp:
            raise ValueError(f"sp_semantic must have shape ({n_sp},), got {tuple(sem_flat.shape)}")
        sem = torch.full((B, s_max), -1, dtype=torch.long)
        sem[scene, local] = sem_flat
    sem_labelled, sem_max = None, None
    if sem is not None:
        flat_sem = sem.reshape(-1)
        sem_labelled = torch.nonzero(flat_sem >= 0).flatten()
        sem_max = int(flat_sem.max()) if flat_sem.numel() else -1
    objs = object_keys(sp_inst)
    tables: dict[str, Any] = {
        "sp_inst": sp_inst, "sp_ref": sp_ref, "sp_pad": torch.arange(s_max)[None, :] >= counts[ts][:, None],
        "scene_xyz": scene_xyz, "sem": sem, "sem_labelled": sem_labelled, "sem_max": sem_max, "sp_anchor": sp_anchor,
        "obj_t": objs.t_idx, "obj_ids": objs.ids, "obj_first": objs.first,
    }
    if sp_anchor is not None:
        a = object_keys(sp_anchor)
        tables.update(anchor_t=a.t_idx, anchor_ids=a.ids, anchor_first=a.first)
    return tables


def loss_targets(tables: dict[str, Any], text_scene: Tensor, device: torch.device | str) -> LossTargets:
    """The ``LossTargets`` of ``build_tables``'s tables on ``device``: every copy ``non_blocking``
    (from pinned memory when the loader pins), the sentences' superpoint centres gathered there."""
    dev = torch.device(device)

    def mv(v: Tensor | None) -> Tensor | None:
        return None if v is None else v.to(dev, non_blocking=True)

    ts = mv(torch.as_tensor(text_scene).long())
    anchors = None
    if tables.get("anchor_t") is not None:
        anchors = ObjectKeys(mv(tables["anchor_t"]), mv(tables["anchor_ids"]), mv(tables["anchor_first"]))
    return LossTargets(sp_inst=mv(tables["sp_inst"]), sp_pad=mv(tables["sp_pad"]),
                       sp_xyz=mv(tables["scene_xyz"]).index_select(0, ts), sp_ref=mv(tables["sp_ref"]),
                       sem=mv(tables["sem"]), sp_anchor=mv(tables["sp_anchor"]),
                       objects=ObjectKeys(mv(tables["obj_t"]), mv(tables["obj_ids"]), mv(tables["obj_first"])),
                       anchor_objects=anchors, sem_labelled=mv(tables.get("sem_labelled")),
                       sem_max=tables.get("sem_max"))
