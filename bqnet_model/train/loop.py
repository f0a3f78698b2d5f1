"""The training loop: one optimizer step (``train_step``), the run (``run_training``) and the
command's entry (``main``).

AdamW over ``BQNet.param_groups`` (lr multipliers), the schedule of ``TrainConfig`` (the authors'
per-epoch poly, or per step) applied per step through ``LambdaLR``, gradient clipping, autocast on
CUDA (fp16 with a grad scaler, or bf16) when ``train.amp``, checkpoints every ``--save-every``
steps and every epoch, a JSON-lines log (``metrics.jsonl``) and tqdm bars. ``--time-budget``
stops after that many seconds (the schedule also decays over the elapsed share of it), which is
what the time-boxed GPU runs of ``tools/device_train.sh`` use. ``--profile-steps`` profiles a window
of steps once warm (``profiling.StepProfiler``; ``train_step`` opens its region ranges only there).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist

from bqnet_model.metrics import format_summary

from .data import build_datasets, encoder_preparer, make_loader
from .distributed import DistInfo, init_distributed, shared_time_fraction
from .evaluation import evaluate, gather_records, run_evaluation_only, summarize
from .options import TrainOptions, parse_args
from .profiling import StepProfiler, region
from .schedule import EpochSampler, lr_factor
from .state import JsonLog, load_training_state, save_training_state, set_rng_state

__all__ = ["train_step", "run_training", "main", "use_training_attention_kernels"]

log = logging.getLogger("bqnet.train")


def _amp_context(device: torch.device, enabled: bool, dtype: torch.dtype):
    if device.type == "cuda" and enabled:
        return torch.autocast(device_type="cuda", dtype=dtype)
    return torch.autocast(device_type=device.type, enabled=False)


def use_training_attention_kernels(device: torch.device) -> None:
    """Leave cuDNN out of ``scaled_dot_product_attention`` while training on CUDA. cuDNN builds an
    execution plan per new shape, and the training shapes change every step (rooms and sentences
    vary), so the step becomes host-bound (measured with ``bench/train_step.py --profile``; figures
    in ``docs/benchmarks.md``). The flash / memory-efficient kernels need no plan."""
    if device.type == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(False)


def train_step(model: torch.nn.Module, raw_model: Any, batch: dict[str, Any], optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler | None, cfg: Any, device: torch.device, amp: bool,
               amp_dtype: torch.dtype, regions: bool = False) -> dict[str, float]:
    """One optimizer step on a batch (``raw_model.loss``: the authors' losses, in float32 outside
    autocast); returns the loss parts as floats (``grad_norm`` included). ``regions``: open the
    profiler ranges ``train_step.forward`` / ``loss`` / ``backward`` / ``optimizer`` / ``readback``
    (a profiled step of ``--profile-steps``; off, the step enters no range)."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    with region("forward", regions), _amp_context(device, amp, amp_dtype):
        out = model(batch)
    with region("loss", regions):
        loss, parts = raw_model.loss(out, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} (parts: { {k: float(v) for k, v in parts.items()} })")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    with region("backward", regions):
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
    with region("optimizer", regions):
        clip = cfg.train.grad_clip
        gnorm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
    with region("readback", regions):  # the host waits here for the step's kernels, once
        res = _read_back({**parts, "loss": loss.detach(), "grad_norm": gnorm})
    return res


def _read_back(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """``float`` of every 0-d tensor, with one read-back per device (a stack and ``tolist``) instead
    of one per value: the same floats."""
    out: dict[str, float] = {}
    by_dev: dict[tuple[torch.device, torch.dtype], list[str]] = {}
    for k, v in values.items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            by_dev.setdefault((v.device, v.dtype), []).append(k)
        else:
            out[k] = float(v)
    for keys in by_dev.values():
        for k, x in zip(keys, torch.stack([values[k].reshape(()) for k in keys]).tolist()):
            out[k] = float(x)
    return {k: out[k] for k in values}


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _print(info: DistInfo, *args: Any) -> None:
    if info.main:
        print(*args, flush=True)


def _dtype(name: str) -> torch.dtype:
    return torch.bfloat16 if name == "bf16" else torch.float16


def run_training(opt: TrainOptions, cfg: Any, info: DistInfo, device: torch.device) -> dict[str, Any]:
    from torch.nn.parallel import DistributedDataParallel as DDP

    from bqnet_model.model.bqnet import BQNet

    tc = cfg.train
    _seed_everything(tc.seed + info.rank)
    work = Path(tc.work_dir)
    if info.main:
        work.mkdir(parents=True, exist_ok=True)
    resume_path = None
    if opt.resume:
        resume_path = Path(work / "latest.pth" if opt.resume == "auto" else opt.resume)
        if not resume_path.is_file():
            raise FileNotFoundError(f"--resume: checkpoint {resume_path} not found")
    train_ds, eval_ds = build_datasets(cfg, tc.data_root, train=True, eval_split=opt.eval_split)
    assert train_ds is not None
    model = BQNet(cfg.model, text_preparer=encoder_preparer(cfg)).to(device)
    if tc.pretrained_backbone and not opt.resume:
        from bqnet_model.checkpoint import load_backbone

        report = load_backbone(model, tc.pretrained_backbone)
        if not report.loaded:
            raise ValueError(f"train.pretrained_backbone {tc.pretrained_backbone}: nothing matched the backbone\n{report}")
        _print(info, f"backbone initialised from {tc.pretrained_backbone}\n{report}")
    if opt.init_weights and not opt.resume:
        from bqnet_model.checkpoint import load_checkpoint

        init_model, _, init_meta = load_checkpoint(opt.init_weights, "cpu")
        result = model.load_state_dict(init_model.state_dict(), strict=False)  # shapes still checked
        if result.unexpected_keys:
            raise ValueError(f"--init-weights {opt.init_weights}: weights this model has no place for "
                             f"(another architecture?): {result.unexpected_keys[:8]}")
        _print(info, f"weights initialised from {opt.init_weights} (meta {init_meta})")
        if result.missing_keys:  # a module switched on since (e.g. the 2D image branch): keeps its own init
            _print(info, f"--init-weights: {len(result.missing_keys)} new weights keep their initial values: "
                         f"{sorted({k.rsplit('.', 2)[0] for k in result.missing_keys})}")
    raw_model = model
    optimizer = torch.optim.AdamW(raw_model.param_groups(tc), lr=tc.lr, weight_decay=tc.weight_decay)
    sampler = EpochSampler(len(train_ds), shuffle=True, seed=tc.seed, rank=info.rank, world_size=info.world_size,
                           with_epoch=True)
    steps_per_epoch = math.ceil(sampler.per_rank / tc.batch_size)
    total_steps = opt.max_steps if opt.max_steps is not None else tc.epochs * steps_per_epoch
    n_epochs = math.ceil(total_steps / steps_per_epoch)
    clock = {"time_fraction": 0.0}  # elapsed share of --time-budget, rank 0's value on every rank
    by_epoch = tc.lr_schedule == "epoch"
    poly_epochs = (tc.poly_epochs or tc.epochs) if by_epoch else 0
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, tc.lr_power, tc.warmup_steps, clock["time_fraction"],
                                       steps_per_epoch=steps_per_epoch if by_epoch else 0, poly_epochs=poly_epochs))
    amp = bool(tc.amp) and device.type == "cuda"
    use_training_attention_kernels(device)
    amp_dtype = _dtype(opt.amp_dtype)
    scaler = torch.amp.GradScaler("cuda") if amp and amp_dtype == torch.float16 else None

    step, best = 0, None
    if resume_path is not None:
        path = resume_path
        st = load_training_state(path, raw_model)
        optimizer.load_state_dict(st["optimizer"])
        scheduler.load_state_dict(st["scheduler"])
        if scaler is not None and st.get("scaler"):
            scaler.load_state_dict(st["scaler"])
        step, best = int(st["step"]), st.get("best")
        set_rng_state(st["rng"])
        _print(info, f"resumed from {path} at step {step}")
    if info.enabled:
        model = DDP(raw_model, device_ids=[device.index] if device.type == "cuda" else None,
                    find_unused_parameters=opt.find_unused)
    jlog = JsonLog(work / "metrics.jsonl" if info.main else None)
    if info.main:
        (work / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
        jlog.write(event="start", step=step, total_steps=total_steps, steps_per_epoch=steps_per_epoch,
                   train_items=len(train_ds), eval_items=0 if eval_ds is None else len(eval_ds),
                   world_size=info.world_size, device=str(device), options=asdict(opt))

    def save(tag: str, epoch: int) -> None:
        if info.main:
            save_training_state(work / f"{tag}.pth", raw_model, cfg, optimizer=optimizer, scheduler=scheduler,
                                scaler=scaler, step=step, epoch=epoch, best=best)

    def run_eval(epoch: int) -> dict[str, Any] | None:
        nonlocal best
        if eval_ds is None:
            return None
        from bqnet_model.pipeline import Segmenter

        share = list(EpochSampler(len(eval_ds), shuffle=False, rank=info.rank, world_size=info.world_size))
        seg = Segmenter(raw_model, cfg, device)  # puts the model in eval mode; train_step switches back
        recs = gather_records(evaluate(seg, eval_ds, indices=share, limit=opt.eval_limit, progress=info.main), info)
        summary = summarize(recs, cfg.inference.task)
        jlog.write(event="eval", step=step, epoch=epoch, split=opt.eval_split, **summary)
        _print(info, f"[eval step {step}] {opt.eval_split}\n{format_summary(summary)}")
        if best is None or summary["mIoU"] > best:
            best = summary["mIoU"]
            save("best", epoch)
        return summary

    t_start = time.perf_counter()
    stop_reason = "done"
    last_eval: dict[str, Any] | None = None
    from tqdm import tqdm

    epoch = step // steps_per_epoch
    loader = make_loader(train_ds, sampler, tc.batch_size, tc.num_workers, device)  # workers live across epochs
    # --profile-steps: rank 0 profiles a window of steps once warm (bqnet_model.train.profiling)
    profiler = StepProfiler(opt.profile_steps if info.main else 0, step, total_steps, steps_per_epoch, device,
                            work, jlog)
    with profiler:
        while step < total_steps:
            start_in_epoch = (step % steps_per_epoch) * tc.batch_size
            train_ds.set_epoch(epoch)
            sampler.set_epoch(epoch, start_in_epoch)
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{n_epochs}", unit="step", disable=not info.main,
                       dynamic_ncols=True, leave=False)
            profiler.before_fetch(step)
            t_data = time.perf_counter()
            for batch in bar:
                data_s = time.perf_counter() - t_data
                lr = next(g["lr"] for g in optimizer.param_groups if g.get("name") == "decoder")
                parts = train_step(model, raw_model, batch, optimizer, scaler, cfg, device, amp, amp_dtype,
                                   regions=profiler.active)
                with warnings.catch_warnings():  # an fp16 step skipped by the scaler makes torch warn here
                    warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
                    scheduler.step()
                step += 1
                bar.set_postfix(loss=f"{parts['loss']:.3f}", lr=f"{lr:.2e}")
                if info.main and (step % max(1, tc.log_every) == 0 or step == 1 or step == total_steps):
                    jlog.write(event="train", step=step, epoch=epoch, lr=lr, data_s=round(data_s, 4),
                               texts=len(batch["texts"]), **parts)
                profiler.after_step(step, data_s)
                if opt.save_every and step % opt.save_every == 0:
                    save("latest", epoch)
                if step >= total_steps:
                    break
                if opt.time_budget is not None:
                    clock["time_fraction"] = shared_time_fraction(time.perf_counter() - t_start, opt.time_budget, info, device)
                    if clock["time_fraction"] >= 1.0:
                        stop_reason = "time budget"
                        break
                if step % steps_per_epoch:  # the epoch goes on; at its end the next epoch's start opens the window
                    profiler.before_fetch(step)
                t_data = time.perf_counter()
            bar.close()
            if stop_reason != "done" or step >= total_steps:
                break
            epoch += 1  # a full epoch is done
            save("latest", epoch)
            if tc.eval_every > 0 and epoch % tc.eval_every == 0 and not opt.no_eval:
                last_eval = run_eval(epoch)
        profiler.finish(step)  # a run stopped inside the window (time budget) writes what it profiled
    save("latest", step // steps_per_epoch)
    elapsed = time.perf_counter() - t_start
    jlog.write(event="stop", step=step, reason=stop_reason, seconds=round(elapsed, 2))
    _print(info, f"training stopped at step {step}/{total_steps} ({stop_reason}, {elapsed:.1f} s); "
                 f"checkpoint {work / 'latest.pth'}")
    if not opt.no_eval:
        last_eval = run_eval(epoch)
    return {"step": step, "total_steps": total_steps, "stop_reason": stop_reason, "eval": last_eval,
            "seconds": elapsed}


def _set_threads() -> None:
    """The main process's torch threads: at most ``BQNET_THREADS`` when set (on CUDA too: the step's
    host ops then do not compete with the loader's workers for the cores), else at most 2 on a
    machine without CUDA and torch's default with it."""
    env = os.environ.get("BQNET_THREADS", "")
    if env:
        n = int(env)
        if n < 1:
            raise ValueError(f"BQNET_THREADS must be a positive integer, got {env!r}")
        torch.set_num_threads(min(n, torch.get_num_threads()))  # lowers torch's default, never raises it
    elif torch.get_num_threads() > 2 and not torch.cuda.is_available():
        torch.set_num_threads(2)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry (``bqnet-train``); returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    opt = parse_args(argv)
    from bqnet_model.model.config import load_config

    try:
        cfg = load_config(opt.config, opt.overrides)
    except (FileNotFoundError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _set_threads()
    info, device = init_distributed(opt.gpu_id)
    try:
        if opt.checkpoint:
            run_evaluation_only(opt, cfg, info, device)
        else:
            run_training(opt, cfg, info, device)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if info.enabled and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
