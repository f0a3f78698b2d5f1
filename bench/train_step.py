#!/usr/bin/env python3
"""Training throughput: optimizer steps/s and rooms/s of ``tools/train.py``'s step, per batch size.

Why: the shipped model is limited by how many rooms it sees in the device time a session has, so
the step's cost decides the recipe (batch size, model width). For each ``--batch`` value this runs
``--warmup`` steps, then times ``--steps`` steps (CUDA synchronized), on the real training data
set and loader (augmentation, cropping, ``lang_per_scene`` sentences per room), and prints steps/s,
rooms/s, sentences/s and peak GPU memory, with the ratio of rooms/s to the first batch size.
``--profile`` adds a torch.profiler table (top ops by device time, then by host time) for the
first batch size, to show whether the step is bound by kernels or by launches, with the op calls
per step (every op the profiler records, and the ``aten::`` ones) and the ops called most often.
``--max-points`` caps the points per training room (``train.max_points_train``): small rooms make
the kernels cheap, so what a CPU run then measures is the host overhead. The loader starts a new
epoch when a small data set runs out. The steps run as
``tools/train.py`` runs them (cuDNN left out of attention, ``train.use_training_attention_kernels``);
``--compare-cudnn`` first times the first batch size with cuDNN attention allowed, the baseline.

Example (GPU machine, data from tools/make_synthetic.sh)::

    python bench/train_step.py config/tiny.yaml --set train.data_root=/tmp/synth --batch 8 16 --profile

Host overhead on a CPU (docs/benchmarks.md, "Training step: host overhead")::

    OMP_NUM_THREADS=1 python bench/train_step.py config/tiny.yaml --set train.data_root=/tmp/synth_step \
        --max-points 20000 --batch 8 --steps 6 --warmup 1 --workers 0 --profile
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("--batch", type=int, nargs="+", default=[8])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key as bqnet-train does (train.data_root, train.lang_per_scene, ...)")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--max-points", type=int, default=None,
                    help="points per training room (train.max_points_train; default: the config's)")
    ap.add_argument("--checkpoint", default=None, help="start from these weights (default: random init)")
    ap.add_argument("--amp-dtype", choices=("fp16", "bf16"), default="bf16")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--compare-cudnn", action="store_true",
                    help="also time the first batch size with cuDNN attention allowed (the baseline)")
    ap.add_argument("--out", default=None, help="write the figures as JSON")
    args = ap.parse_args()

    from bqnet_model.model.bqnet import BQNet
    from bqnet_model.model.config import load_config
    from bqnet_model.train import EpochSampler, build_datasets, train_step, use_training_attention_kernels
    from bqnet_model.train.data import make_loader
    from bqnet_model.train.loop import _dtype

    extra = [] if args.max_points is None else [f"train.max_points_train={args.max_points}"]
    cfg = load_config(args.config, ["inference.task=gres", *args.overrides, *extra])
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    train_ds, _ = build_datasets(cfg, cfg.train.data_root, train=True)
    if args.checkpoint:
        from bqnet_model.checkpoint import load_checkpoint

        model = load_checkpoint(args.checkpoint, "cpu")[0].to(dev)
    else:
        model = BQNet(cfg.model).to(dev)
    opt = torch.optim.AdamW(model.param_groups(cfg.train), lr=1e-5)
    amp = dev.type == "cuda" and bool(cfg.train.amp)
    amp_dtype = _dtype(args.amp_dtype)
    scaler = torch.amp.GradScaler("cuda") if amp and amp_dtype == torch.float16 else None
    runs = [(b, "no cuDNN attention") for b in args.batch]
    if args.compare_cudnn and dev.type == "cuda":
        runs.insert(0, (args.batch[0], "cuDNN attention (baseline)"))
    rows = []
    for i, (bs, variant) in enumerate(runs):
        torch.backends.cuda.enable_cudnn_sdp(True)
        if variant.startswith("no"):
            use_training_attention_kernels(dev)
        loader = make_loader(train_ds, EpochSampler(len(train_ds), shuffle=True, seed=i), bs, args.workers, dev)
        it = _batches(loader, train_ds)
        for _ in range(args.warmup):
            train_step(model, model, next(it), opt, scaler, cfg, dev, amp, amp_dtype)
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        wait, n_texts, walls = 0.0, 0, []
        t0 = time.perf_counter()
        for _ in range(args.steps):
            tw = time.perf_counter()
            batch = next(it)
            wait += time.perf_counter() - tw
            n_texts += len(batch["texts"])
            ts = time.perf_counter()
            train_step(model, model, batch, opt, scaler, cfg, dev, amp, amp_dtype)  # ends on a host sync
            walls.append(time.perf_counter() - ts)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        row = dict(batch=bs, variant=variant, steps_per_s=args.steps / dt, rooms_per_s=args.steps * bs / dt,
                   sentences_per_s=n_texts / dt, loader_wait_s=wait / args.steps,
                   step_median_s=statistics.median(walls),
                   peak_gib=torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else 0.0)
        rows.append(row)
        print(f"batch {bs:3d} ({variant}): {row['steps_per_s']:.2f} steps/s, {row['rooms_per_s']:.1f} rooms/s "
              f"({row['rooms_per_s'] / rows[0]['rooms_per_s']:.2f}x the first row), "
              f"{row['sentences_per_s']:.0f} sentences/s, loader wait {row['loader_wait_s'] * 1000:.0f} ms/step, "
              f"median step {row['step_median_s'] * 1000:.0f} ms, "
              f"peak {row['peak_gib']:.2f} GiB", flush=True)
        if args.profile and bs == args.batch[0] and variant.startswith("no"):
            from torch.profiler import ProfilerActivity, profile

            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
            batches = [next(it) for _ in range(3)]
            with profile(activities=acts) as prof:
                for b in batches:
                    train_step(model, model, b, opt, scaler, cfg, dev, amp, amp_dtype)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
            ka = prof.key_averages()
            n_ops = sum(e.count for e in ka)
            n_aten = sum(e.count for e in ka if e.key.startswith("aten::"))
            print(f"profile over 3 steps: {n_ops} op calls ({n_ops / 3:.0f} per step, aten:: {n_aten / 3:.0f} per step)")
            print("most called:", ", ".join(f"{e.key} {e.count / 3:.0f}" for e in sorted(ka, key=lambda e: -e.count)[:12]))
            row.update(ops_per_step=n_ops / 3, aten_ops_per_step=n_aten / 3)
            if dev.type == "cuda":
                print(ka.table(sort_by="self_cuda_time_total", row_limit=25))
            print(ka.table(sort_by="self_cpu_time_total", row_limit=25))
        del loader, it
    if args.out:
        Path(args.out).write_text(json.dumps(dict(config=args.config, device=str(dev), rows=rows), indent=1))


def _batches(loader, ds):
    """The loader's batches without end: a new epoch (``set_epoch``) whenever one runs out, so a
    small data set still gives every warm-up, timed and profiled step."""
    epoch = 0
    while True:
        ds.set_epoch(epoch)
        loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


if __name__ == "__main__":
    main()
