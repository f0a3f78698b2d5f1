"""Evaluation through ``Segmenter`` itself, so evaluation and the product give the same answers."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist

from bqnet_model.data.dataset import ReferDataset
from bqnet_model.metrics import DescriptionResult, format_summary, gres_record, res_record, summarize_gres, summarize_res

from .data import build_datasets
from .distributed import DistInfo
from .options import TrainOptions
from .schedule import EpochSampler

__all__ = ["evaluate", "gather_records", "summarize", "run_evaluation_only"]


def evaluate(segmenter: Any, dataset: ReferDataset, *, indices: Sequence[int] | None = None,
             limit: int | None = None, progress: bool = True) -> list[DescriptionResult]:
    """Score the sentences of ``dataset`` items (``indices``: this rank's share) through
    ``Segmenter`` itself, so evaluation and the product give the same answers: ``prepare`` once
    per scene (with the scene file's superpoints), ``query`` its sentences, the answer's
    ``point_indices`` against the union mask of the targets (``metrics.res_record`` /
    ``gres_record``)."""
    from bqnet_model.metrics import union_mask

    task = dataset.task
    todo = list(range(len(dataset)) if indices is None else indices)
    if limit is not None:
        todo = todo[:limit]
    records: list[DescriptionResult] = []
    it: Any = todo
    if progress:
        from tqdm import tqdm

        it = tqdm(todo, desc="eval", unit="item", leave=False, dynamic_ncols=True)
    score = res_record if task == "res" else gres_record
    cached_id, cache, data = None, None, None
    for i in it:
        scene_id, anns = dataset.item(i)
        if scene_id != cached_id:
            data = dataset.load_scene(scene_id)
            cache = segmenter.prepare(data["xyz"], data["rgb"], superpoints=data["superpoint"])
            cached_id = scene_id
        assert data is not None and cache is not None
        n = data["xyz"].shape[0]
        results = segmenter.query(cache, [a.description for a in anns], task=task)
        for a, r in zip(anns, results):
            pred = np.zeros(n, dtype=bool)
            pred[r.point_indices] = True
            records.append(score(pred, union_mask(data["instance"], a.object_ids), scene_id=scene_id,
                                 ann_id=a.ann_id, eval_type=a.eval_type or "", object_ids=a.object_ids))
    return records


def gather_records(records: list[DescriptionResult], info: DistInfo) -> list[DescriptionResult]:
    """All ranks' records on every rank, duplicates (sampler padding) removed."""
    if info.enabled:
        parts: list[Any] = [None] * info.world_size
        dist.all_gather_object(parts, records)
        records = [r for p in parts for r in p]
    seen: dict[tuple[str, str], DescriptionResult] = {}
    for r in records:
        seen.setdefault((r.scene_id, r.ann_id), r)
    return list(seen.values())


def summarize(records: list[DescriptionResult], task: str) -> dict[str, Any]:
    return summarize_res(records) if task == "res" else summarize_gres(records)


def run_evaluation_only(opt: TrainOptions, cfg: Any, info: DistInfo, device: torch.device) -> dict[str, Any]:
    """``--checkpoint``: our checkpoint (its own model config) or an official file (the config's
    model); data and inference settings come from the command's config."""
    from bqnet_model.checkpoint import is_our_format, read_checkpoint
    from bqnet_model.pipeline import Segmenter

    ours = is_our_format(read_checkpoint(opt.checkpoint))
    seg = Segmenter.from_checkpoint(opt.checkpoint, device=device, config=None if ours else cfg,
                                    **asdict(cfg.inference))
    _, eval_ds = build_datasets(cfg, cfg.train.data_root, train=False, eval_split=opt.eval_split)
    assert eval_ds is not None
    share = list(EpochSampler(len(eval_ds), shuffle=False, rank=info.rank, world_size=info.world_size))
    recs = gather_records(evaluate(seg, eval_ds, indices=share, limit=opt.eval_limit, progress=info.main), info)
    summary = summarize(recs, cfg.inference.task)
    if info.main:
        print(f"evaluation of {opt.checkpoint} on {opt.eval_split} ({len(recs)} descriptions, task {cfg.inference.task}):")
        print(format_summary(summary), flush=True)
        wd = Path(cfg.train.work_dir)
        wd.mkdir(parents=True, exist_ok=True)
        (wd / f"eval_{opt.eval_split}.json").write_text(json.dumps(
            {"checkpoint": str(opt.checkpoint), "summary": summary, "records": [r.to_dict() for r in recs]}, indent=1))
    return summary

