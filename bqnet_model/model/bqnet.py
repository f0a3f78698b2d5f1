"""BQNet: sparse U-Net scene encoder + frozen text encoder + the BQNet decoder.

The forward pass is split where the cost splits: ``encode_scene`` (backbone, superpoint pooling,
FPS seeds) depends only on the map, ``encode_text`` only on the sentences, ``decode`` on both.
``Segmenter`` caches the first and runs the other two per sentence; ``forward`` chains all three
for training, so training and inference compute exactly the same function.

Module names: ``backbone`` (holding SPFormer's ``input_conv``/``unet``/``output_layer``),
``text_encoder`` (``.model`` = the HF model), ``decoder`` (the official ``dec``); see checkpoint.py
for the official key mapping (the decoder's sub-modules carry the official ``dec.*`` names, see
decoder.py). 2D image features (the official model's per-superpoint CLIP features) enter through
``SceneFeatures.image_feats`` (or ``decode(image_feats=...)``); a batch may carry them as
``sp_image_feats`` (S_total, C), one row per superpoint like ``sp_offsets``. ``sem_cls_head`` (only when ``cfg.num_classes`` > 0): auxiliary
semantic classifier of the pooled superpoint features, trained by the ``sem`` loss term.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from bqnet_model.text import PreparedText

from .backbone import OffsetPadding, SparseUNetBackbone, pad_by_offsets, superpoint_pool
from .config import ModelConfig, TrainConfig
from .decoder import BQNetDecoder, DecoderOutput
from .losses import LossTargets, bqnet_loss
from .query_sampling import farthest_point_sample
from .targets import PADDING_KEY, TABLES_KEY, loss_targets
from .text_encoder import TextEncoder, TextFeatures

__all__ = ["BQNet", "SceneFeatures", "TextFeatures", "sync_time"]

_BATCH_KEYS = ("coords", "feats", "spatial_shape", "batch_size", "p2v", "point_xyz", "superpoints", "sp_offsets")


@dataclass
class SceneFeatures:
    """Per-scene superpoint features, padded over scenes (B scenes, S = most superpoints)."""

    sp_feats: torch.Tensor  # (B, S, C) float
    sp_xyz: torch.Tensor  # (B, S, 3) float, mean xyz of each superpoint's points
    sp_pad: torch.Tensor  # (B, S) bool, True = padding
    seed_idx: torch.Tensor  # (B, F) long, FPS seeds (indices into S)
    sp_sizes: torch.Tensor  # (B, S) long, points per superpoint (0 on padding)
    image_feats: torch.Tensor | None = None  # (B, S, C_img) per-superpoint image features, or None

    @property
    def batch_size(self) -> int:
        return int(self.sp_feats.shape[0])


def sync_time(device: torch.device) -> float:
    """``time.perf_counter`` after a CUDA synchronize when on GPU (honest stage timings)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class BQNet(nn.Module):
    """The network. ``cfg.decoder.in_channels``/``text_channels`` are set from the backbone and
    the loaded text encoder (the config object is updated so checkpoints record them).
    ``text_preparer``: the text encoder's framing of raw sentences (``TextEncoder``'s ``preparer``)."""

    def __init__(self, cfg: ModelConfig, text_pretrained: bool = True, text_preparer: Any = None) -> None:
        super().__init__()
        if not isinstance(cfg, ModelConfig):
            raise TypeError(f"BQNet expects a ModelConfig, got {type(cfg).__name__}")
        self.backbone = SparseUNetBackbone(cfg.backbone)
        self.text_encoder = TextEncoder(cfg.text, pretrained=text_pretrained, preparer=text_preparer)
        cfg.decoder = dataclasses.replace(
            cfg.decoder, in_channels=self.backbone.out_channels,
            text_channels=cfg.decoder.text_channels or self.text_encoder.hidden_size
        )
        self.cfg = cfg
        self.decoder = BQNetDecoder(cfg.decoder)
        self.sem_cls_head: nn.Module | None = None
        if cfg.num_classes > 0:
            c = self.backbone.out_channels
            self.sem_cls_head = nn.Sequential(nn.Linear(c, c), nn.ReLU(inplace=True), nn.Linear(c, cfg.num_classes))

    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    # ------------------------------------------------------------------ scene
    def encode_scene(self, batch: dict[str, Any], timings: dict[str, float] | None = None,
                     fps_kernel: bool = False) -> SceneFeatures:
        """Backbone -> point features (by ``p2v``) -> superpoint mean -> FPS seeds.

        ``timings`` (optional) receives ``backbone``, ``pooling``, ``fps`` in ms; ``fps_kernel``:
        as ``pool_scene``'s.
        """
        missing = [k for k in _BATCH_KEYS if k not in batch]
        if missing:
            raise KeyError(f"batch lacks {missing} (build it with bqnet_model.model.inputs.collate_scenes)")
        dev = self.device
        t0 = sync_time(dev)
        vox = self.encode_voxels(batch)
        t1 = sync_time(dev)
        scene = self.pool_scene(vox, batch, timings, fps_kernel=fps_kernel)
        if timings is not None:
            timings["backbone"] = (t1 - t0) * 1e3
        return scene

    def encode_voxels(self, batch: dict[str, Any]) -> torch.Tensor:
        """The backbone alone: voxel features (V, media). Needs no superpoints, which is what lets
        ``Segmenter.prepare`` run it while the superpoints are still being computed."""
        dev = self.device
        feats = batch["feats"].to(dev, non_blocking=True).float()
        coords = batch["coords"].to(dev, non_blocking=True)
        return self.backbone(feats, coords, batch["spatial_shape"], int(batch["batch_size"]))

    def pool_scene(self, vox: torch.Tensor, batch: dict[str, Any],
                   timings: dict[str, float] | None = None, fps_kernel: bool = False) -> SceneFeatures:
        """Voxel features -> point features (by ``p2v``) -> superpoint mean -> FPS seeds.

        ``timings`` (optional) receives ``pooling`` and ``fps`` in ms. ``fps_kernel``: the CUDA FPS
        kernel (``farthest_point_sample(kernel=...)``, ``inference.fps_cuda_kernel``).
        """
        if batch.get("superpoints") is None or batch.get("sp_offsets") is None:
            raise KeyError("batch has no superpoints yet (inputs.set_batch_superpoints)")
        dev = self.device
        t1 = sync_time(dev)
        p2v = batch["p2v"].to(dev, non_blocking=True)
        sp = batch["superpoints"].to(dev, non_blocking=True)
        xyz = batch["point_xyz"].to(dev, non_blocking=True).float()
        n_sp = int(batch["sp_offsets"][-1])
        if p2v.shape[0] != sp.shape[0] or xyz.shape[0] != sp.shape[0]:
            raise ValueError(f"p2v ({p2v.shape[0]}), superpoints ({sp.shape[0]}) and point_xyz ({xyz.shape[0]}) differ in length")
        pool = self.cfg.backbone.pool
        # float32 pooling: under fp16 autocast a large superpoint's feature sum could overflow
        sp_feats = superpoint_pool(vox[p2v].float(), sp, n_sp, pool)
        sp_xyz = superpoint_pool(xyz, sp, n_sp, "mean")
        # counts by a scatter (a CUDA bincount reads its maximum back to the host)
        sizes = torch.zeros(n_sp, dtype=torch.long, device=dev).index_add_(0, sp, torch.ones_like(sp))
        pre = batch.get(PADDING_KEY)  # built by the loader's workers (train_collate), else here
        pad_rows = (OffsetPadding.from_indices(pre["scene"], pre["local"], pre["pad"], dev) if pre is not None
                    else OffsetPadding(batch["sp_offsets"], dev))  # one set of indices for the tensors below
        sp_feats_b, sp_xyz_b, sizes_b = pad_rows(sp_feats), pad_rows(sp_xyz), pad_rows(sizes)
        sp_pad = pad_rows.pad
        image_b = None
        if batch.get("sp_image_feats") is not None:
            img = torch.as_tensor(batch["sp_image_feats"]).to(dev, non_blocking=True).float()
            if img.ndim != 2 or img.shape[0] != n_sp:
                raise ValueError(f"sp_image_feats must have shape ({n_sp}, C), one row per superpoint, got {tuple(img.shape)}")
            image_b = pad_rows(img)
        t2 = sync_time(dev)
        # OffsetPadding's pad is a suffix by construction; an empty scene is caught here, on the host
        # offsets, so the FPS need not read its pad back (three syncs on CUDA)
        off = torch.as_tensor(batch["sp_offsets"])
        on_host = off.device.type == "cpu"
        if on_host and bool((off[1:] <= off[:-1]).any()):
            raise ValueError("every scene of the batch needs at least one superpoint (sp_offsets must rise)")
        seed_idx = farthest_point_sample(self.centred(sp_xyz_b, sizes_b), self.cfg.decoder.fps_num, sp_pad,
                                         kernel=fps_kernel, check_pad=not on_host)
        t3 = sync_time(dev)
        if timings is not None:
            timings["pooling"] = (t2 - t1) * 1e3
            timings["fps"] = (t3 - t2) * 1e3
        return SceneFeatures(sp_feats_b, sp_xyz_b, sp_pad, seed_idx, sizes_b, image_b)

    @staticmethod
    def centred(sp_xyz: torch.Tensor, sp_sizes: torch.Tensor) -> torch.Tensor:
        """Superpoint centres ``(B,S,3)`` in each scene's mean-centred frame (the mean of its points,
        from the centres weighted by their point counts; padding stays 0). The authors' FPS runs in
        that frame, and its kernel never picks a point within ~3 cm of the origin (query_sampling.py),
        so the frame changes the seeds; distances between superpoints do not depend on it."""
        w = sp_sizes.to(torch.float64).unsqueeze(-1)  # (B, S, 1), 0 on padding
        mean = (sp_xyz.to(torch.float64) * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp_min(1.0)
        return ((sp_xyz.to(torch.float64) - mean) * (w > 0)).to(sp_xyz.dtype)

    # ------------------------------------------------------------------ text
    def encode_text(self, texts: str | Sequence[str]) -> TextFeatures:
        """Word features and mask of the sentences (cached when the encoder is frozen)."""
        if not isinstance(texts, str):
            texts = list(texts)
        return self.text_encoder(texts)

    # ------------------------------------------------------------------ decoder
    @staticmethod
    def _per_sentence(x: torch.Tensor, text_scene: torch.Tensor, n_scenes: int) -> torch.Tensor:
        """Scene rows for each sentence: a stride-0 ``expand`` for one scene, a gather otherwise."""
        if n_scenes == 1:
            return x.expand(text_scene.shape[0], *x.shape[1:])
        return x.index_select(0, text_scene)

    def decode(
        self,
        scene: SceneFeatures,
        text: TextFeatures,
        text_scene: torch.Tensor | Sequence[int] | None = None,
        keep_all_layers: bool = True,
        check_values: bool = True,
        image_feats: torch.Tensor | None = None,
        fine_mask_padding: bool | None = None,
    ) -> DecoderOutput:
        """Decoder over every sentence; ``text_scene[t]`` is sentence t's scene (default all 0).

        ``image_feats`` (B, S, C_img): per-superpoint image features of the scenes (default
        ``scene.image_feats``); None runs a 2D-branch model without them (the decoder warns).
        ``check_values`` False: no host synchronisation; ``fine_mask_padding``: None = the decoder
        config's (both: see ``BQNetDecoder.forward``)."""
        dev = scene.sp_feats.device
        T = len(text)
        if text_scene is None:
            if scene.batch_size != 1:
                raise ValueError("text_scene is required when the scene features hold several scenes")
            ts = torch.zeros(T, dtype=torch.long, device=dev)
        else:
            ts = torch.as_tensor(text_scene, dtype=torch.long)  # checked where it is (the batch's: CPU)
            if ts.ndim != 1 or ts.shape[0] != T:
                raise ValueError(f"text_scene must have one entry per sentence ({T}), got shape {tuple(ts.shape)}")
            if T and (int(ts.min()) < 0 or int(ts.max()) >= scene.batch_size):
                raise ValueError(f"text_scene values must be in [0, {scene.batch_size})")
            ts = ts.to(dev)
        B = scene.batch_size
        img = scene.image_feats if image_feats is None else image_feats
        if img is not None and self.decoder.input_proj_2d is None:
            img = None  # a model without the 2D branch ignores images it cannot use
        if img is not None and tuple(img.shape[:2]) != tuple(scene.sp_feats.shape[:2]):
            raise ValueError(f"image_feats must be (B, S, C) = {tuple(scene.sp_feats.shape[:2])} + (C,), got {tuple(img.shape)}")
        return self.decoder(
            self._per_sentence(scene.sp_feats, ts, B),
            self._per_sentence(scene.sp_xyz, ts, B),
            self._per_sentence(scene.sp_pad, ts, B),
            self._per_sentence(scene.seed_idx, ts, B),
            text.word_feats.to(dev),
            text.word_mask.to(dev),
            image_feats=None if img is None else self._per_sentence(img.to(dev), ts, B),
            keep_all_layers=keep_all_layers,
            check_values=check_values,
            fine_mask_padding=fine_mask_padding,
        )

    def forward(self, batch: dict[str, Any]) -> DecoderOutput:
        """All three stages on a batch of ``collate_scenes`` (texts and text_scene required).

        A model that reads the official string encodes the batch's ``prepared`` texts when the
        dataset gives them (``collate_fn``): the strings its loss maps index (ScanRefer mode
        included), as the authors' collate tokenizes them, with no second parse. On CUDA the seeds
        come from the FPS kernel when the extension has it (the torch loop's indices in one launch
        instead of a few hundred; ``farthest_point_sample``)."""
        texts = batch.get("texts")
        if not texts:
            raise ValueError("batch has no texts: forward needs at least one sentence")
        scene = self.encode_scene(batch, fps_kernel=True)
        prepared = batch.get("prepared")
        if self.cfg.text.official_prep and prepared is not None and len(prepared) == len(texts) \
                and all(isinstance(p, PreparedText) for p in prepared):
            texts = list(prepared)
        text = self.encode_text(texts)
        # training: no value checks in the decoder (its host syncs): the seeds come from the FPS
        # above, every scene has superpoints (checked there), every sentence has tokens
        out = self.decode(scene, text, batch["text_scene"], check_values=not self.training)
        if self.sem_cls_head is not None:
            out.sem_logits = self.semantic_logits(scene)
        return out

    def semantic_logits(self, scene: SceneFeatures) -> torch.Tensor:
        """(B, S, num_classes) logits of the auxiliary semantic head on the pooled superpoint
        features (padding rows are meaningless; the loss ignores them)."""
        if self.sem_cls_head is None:
            raise RuntimeError("this model has no semantic head (model.num_classes is 0)")
        return self.sem_cls_head(scene.sp_feats)

    # ------------------------------------------------------------------ training helpers
    @staticmethod
    def sentence_targets(batch: dict[str, Any], device: torch.device | None = None) -> LossTargets:
        """``LossTargets`` of a training batch, padded to the batch's most superpoints (token maps
        are added by ``loss``, which has the tokenizer).

        ``sp_inst`` comes from the batch's ``gt_sp_inst`` (``dataset.collate_fn``: the target
        instance holding each superpoint's majority) and ``sp_ref`` from its ``sp_ref_masks``; a
        batch that has only ``gt_sp_masks`` (``collate_scenes`` called directly) treats each
        sentence's target union as one object and uses that mask as ``sp_ref`` (no context
        objects). Superpoint centres are the mean of their points, as ``pool_scene`` computes them."""
        if batch.get("gt_sp_masks") is None:
            raise ValueError("batch has no gt_sp_masks (training batches need them)")
        sp_offsets = batch["sp_offsets"].long().cpu()
        counts = sp_offsets[1:] - sp_offsets[:-1]
        s_max = int(counts.max())
        ts = torch.as_tensor(batch["text_scene"]).long().cpu()
        T = ts.shape[0]
        sp = torch.as_tensor(batch["superpoints"]).long().cpu()
        xyz = torch.as_tensor(batch["point_xyz"]).float().cpu()
        n_sp = int(sp_offsets[-1])
        sums = torch.zeros(n_sp, 3).index_add_(0, sp, xyz)
        sizes = torch.bincount(sp, minlength=n_sp).clamp_min(1).unsqueeze(1)
        scene_xyz, _ = pad_by_offsets(sums / sizes, sp_offsets)
        gt_list = batch["gt_sp_masks"]
        # The per-sentence rows go into the padded (T, s_max) tables with one scatter per table
        # (a copy per sentence and table was most of this function's cost).
        lengths = [int(torch.as_tensor(g).shape[0]) for g in gt_list]
        rows = torch.repeat_interleave(torch.arange(T), torch.tensor(lengths, dtype=torch.long), output_size=sum(lengths))
        starts = torch.tensor([0, *lengths[:-1]], dtype=torch.long).cumsum(0)
        flat = rows * s_max + torch.arange(rows.shape[0]) - starts[rows]

        def table(values: list[Any] | None, name: str, fill: float, dtype: torch.dtype) -> torch.Tensor:
            out = torch.full((T, s_max), fill, dtype=dtype)
            got = [int(torch.as_tensor(v).shape[0]) for v in values]
            if got != lengths:
                raise ValueError(f"batch {name} rows have {got} superpoints where gt_sp_masks has {lengths}")
            if lengths:
                out.view(-1)[flat] = torch.cat([torch.as_tensor(v) for v in values]).to(dtype)
            return out

        gt = table(gt_list, "gt_sp_masks", 0.0, torch.float32)
        inst_list = batch.get("gt_sp_inst")
        ref_list = batch.get("sp_ref_masks")
        anchor_list = batch.get("gt_sp_anchor")
        if inst_list is not None:
            sp_inst = table(inst_list, "gt_sp_inst", -1, torch.long)
        else:
            sp_inst = torch.where(gt > 0.5, 0, -1)
        sp_ref = table(ref_list, "sp_ref_masks", 0.0, torch.float32) if ref_list is not None else gt
        sp_anchor = table(anchor_list, "gt_sp_anchor", -1, torch.long) if anchor_list is not None else None
        pad = torch.arange(s_max)[None, :] >= counts[ts][:, None]
        targets = LossTargets(sp_inst=sp_inst, sp_pad=pad, sp_xyz=scene_xyz[ts], sp_ref=sp_ref,
                              sem=BQNet.semantic_targets(batch), sp_anchor=sp_anchor)
        if device is not None:
            targets = LossTargets(**{k: (v.to(device) if isinstance(v, torch.Tensor) else v)
                                     for k, v in vars(targets).items()})
        return targets

    @staticmethod
    def semantic_targets(batch: dict[str, Any], device: torch.device | None = None) -> torch.Tensor | None:
        """Padded ``(B, S)`` int64 semantic label per superpoint (-1 = none / padding) from the
        batch's ``sp_semantic`` (S_total,), or None when the batch has none."""
        sem = batch.get("sp_semantic")
        if sem is None:
            return None
        sp_offsets = batch["sp_offsets"].long().cpu()
        sem = torch.as_tensor(sem).long().cpu()
        if sem.ndim != 1 or sem.shape[0] != int(sp_offsets[-1]):
            raise ValueError(f"sp_semantic must have shape ({int(sp_offsets[-1])},), got {tuple(sem.shape)}")
        counts = sp_offsets[1:] - sp_offsets[:-1]
        B, s_max = counts.shape[0], int(counts.max())
        scene = torch.repeat_interleave(torch.arange(B), counts)
        local = torch.arange(sem.shape[0]) - sp_offsets[:-1][scene]
        out = torch.full((B, s_max), -1, dtype=torch.long)
        out[scene, local] = sem
        return out if device is None else out.to(device)

    def loss(self, out: DecoderOutput, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``bqnet_loss`` of a ``forward`` output against the batch's targets: the tables of
        ``targets.build_tables`` when the batch carries them (``train.data.train_collate``), else
        ``sentence_targets`` of its per-sentence lists (the same values), with the sentences' span
        token maps when the contrastive term is on and the decoder gives token projections. The
        maps come from the ``PreparedText`` of each sentence: the output's ``prepared`` when the
        forward kept it, else the batch's (``dataset.collate_fn``), else ``text_prep.prepare_text``
        of the batch texts."""
        dev = out.layers[-1].masks.device
        tables = batch.get(TABLES_KEY)  # built by the loader's workers (train_collate), else here
        targets = (loss_targets(tables, batch["text_scene"], dev) if tables is not None
                   else self.sentence_targets(batch, dev))
        cfg = self.cfg.loss
        if cfg.align > 0 and any(getattr(p, "proj_tokens", None) is not None for p in out.layers):
            from bqnet_model.text import positive_maps, prepare_text

            prepared = getattr(out, "prepared", None) or batch.get("prepared")
            if prepared is None:
                prepared = [prepare_text(t) for t in batch["texts"]]
            prepared = list(prepared)
            L = int(out.word_pad.shape[1])
            tok = self.text_encoder.tokenizer([p.model_input for p in prepared])["input_ids"]
            real = (~out.word_pad).sum(1).tolist()
            bad = [t for t, (ids, n) in enumerate(zip(tok, real)) if len(ids) != int(n)]
            if bad:
                t = bad[0]
                raise ValueError(
                    f"the contrastive term's token maps index the tokens of PreparedText.model_input, but the text "
                    f"encoder read sentence {t} as {int(real[t])} tokens where {prepared[t].model_input!r} has "
                    f"{len(tok[t])}: encode the prepared text (bqnet_model.text) or set model.loss.align: 0")
            maps = positive_maps(self.text_encoder.tokenizer, prepared, length=L)
            targets.token_maps = {k: v.to(dev).float() for k, v in maps.items()}
        return bqnet_loss(out, targets, cfg)

    def param_groups(self, train_cfg: TrainConfig) -> list[dict[str, Any]]:
        """AdamW groups with the lr multipliers; frozen parameters (the text encoder) are left out."""
        groups = []
        for name, module, mult in (
            ("text_encoder", self.text_encoder, train_cfg.lr_mult_text),
            ("backbone", self.backbone, train_cfg.lr_mult_backbone),
            ("decoder", self.decoder, train_cfg.lr_mult_decoder),
            ("sem_cls_head", self.sem_cls_head, train_cfg.lr_mult_decoder),
        ):
            if module is None:
                continue
            params = [p for p in module.parameters() if p.requires_grad]
            if params:
                groups.append({"name": name, "params": params, "lr": train_cfg.lr * mult, "lr_mult": mult})
        return groups
