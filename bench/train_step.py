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

Loss targets (``bqnet_model.model.targets``): by default the loader's workers build them
(``train.data.train_collate``); ``--targets-in-step`` builds them in the step as before
(``BQNet.sentence_targets``, ``BQNET_TARGETS_IN_STEP=1`` in training), ``--compare-targets`` times
both for every batch size, on the same batches. Each row gives the tensors per batch (what the
loader pins and the step copies on CUDA) and their size. ``--threads N``: the main process's torch
threads (``BQNET_THREADS`` in training). ``--sync-report``: one more step of the first row counted
for host read-backs (``train.readbacks``: torch's sync detector on CUDA, and on any device the
tensor calls that read values back, by function).

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
    ap.add_argument("--targets-in-step", action="store_true",
                    help="build the loss targets in the step (the path before train_collate)")
    ap.add_argument("--compare-targets", action="store_true",
                    help="time both target paths on the same batches, step by step in alternating order "
                         "(the loader gives collate_fn's batch; train_collate's tables are added outside "
                         "the timed step and timed apart: the workers' share)")
    ap.add_argument("--targets-only", action="store_true",
                    help="with --compare-targets: time only the targets' share (no training step), so "
                         "that a CPU can time the H200's batch sizes")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of this process (default: torch's)")
    ap.add_argument("--sync-report", action="store_true", help="count the host read-backs of one step")
    ap.add_argument("--out", default=None, help="write the figures as JSON")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

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
    in_step0 = args.targets_in_step or args.compare_targets
    runs = [(b, "no cuDNN attention", in_step0) for b in args.batch]
    if args.compare_cudnn and dev.type == "cuda":
        runs.insert(0, (args.batch[0], "cuDNN attention (baseline)", in_step0))
    print(f"device {dev}, torch threads {torch.get_num_threads()}, loader workers {args.workers}", flush=True)
    rows = []
    if args.compare_targets:
        for bs in args.batch:
            _compare_targets(bs, args, train_ds, model, opt, scaler, cfg, dev, amp, amp_dtype, rows)
            if args.out:
                Path(args.out).write_text(json.dumps(dict(config=args.config, device=str(dev), rows=rows), indent=1))
        return
    for i, (bs, variant, in_step) in enumerate(runs):
        torch.backends.cuda.enable_cudnn_sdp(True)
        if variant.startswith("no"):
            use_training_attention_kernels(dev)
        where = "targets in step" if in_step else "targets in loader"
        # the same batches for every variant of a batch size
        sampler = EpochSampler(len(train_ds), shuffle=True, seed=args.batch.index(bs))
        loader = make_loader(train_ds, sampler, bs, args.workers, dev, in_step=in_step)
        it = _batches(loader, train_ds)
        for _ in range(args.warmup):
            train_step(model, model, next(it), opt, scaler, cfg, dev, amp, amp_dtype)
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        wait, n_texts, walls, sizes = 0.0, 0, [], []
        t0 = time.perf_counter()
        for _ in range(args.steps):
            tw = time.perf_counter()
            batch = next(it)
            wait += time.perf_counter() - tw
            n_texts += len(batch["texts"])
            sizes.append(_tensors(batch))
            ts = time.perf_counter()
            train_step(model, model, batch, opt, scaler, cfg, dev, amp, amp_dtype)  # ends on a host sync
            walls.append(time.perf_counter() - ts)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        row = dict(batch=bs, variant=variant, targets=where,
                   tensors_per_batch=statistics.mean(n for n, _ in sizes),
                   batch_mib=statistics.mean(b for _, b in sizes) / 2**20, steps_per_s=args.steps / dt,
                   rooms_per_s=args.steps * bs / dt,
                   sentences_per_s=n_texts / dt, loader_wait_s=wait / args.steps,
                   step_median_s=statistics.median(walls),
                   peak_gib=torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else 0.0)
        rows.append(row)
        print(f"batch {bs:3d} ({variant}, {where}): {row['steps_per_s']:.2f} steps/s, {row['rooms_per_s']:.1f} rooms/s "
              f"({row['rooms_per_s'] / rows[0]['rooms_per_s']:.2f}x the first row), "
              f"{row['sentences_per_s']:.0f} sentences/s, loader wait {row['loader_wait_s'] * 1000:.0f} ms/step, "
              f"median step {row['step_median_s'] * 1000:.0f} ms (steps: "
              f"{', '.join(f'{w * 1000:.0f}' for w in walls)}), "
              f"{row['tensors_per_batch']:.0f} tensors per batch ({row['batch_mib']:.1f} MiB), "
              f"peak {row['peak_gib']:.2f} GiB", flush=True)
        if args.sync_report and i == 0:
            from bqnet_model.train.readbacks import ReadbackCounter

            b = next(it)
            kinds = ["host"] + (["cuda"] if dev.type == "cuda" else [])
            for kind in kinds:
                with ReadbackCounter(kind) as counter:
                    train_step(model, model, b, opt, scaler, cfg, dev, amp, amp_dtype)
                print(counter.report(), flush=True)
                row[f"readbacks_{kind}"] = counter.total
                row[f"readbacks_{kind}_sites"] = dict(counter.counts)
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


def _compare_targets(bs, args, train_ds, model, opt, scaler, cfg, dev, amp, amp_dtype, rows) -> None:
    """Both target paths on the same batches: each batch of ``collate_fn`` runs one step as it is
    (targets in the step) and one with ``with_target_tables`` applied beforehand (targets from the
    loader), in alternating order; the tables' build is timed apart (in training: the workers)."""
    from bqnet_model.train import EpochSampler, train_step
    from bqnet_model.train.data import make_loader, with_target_tables
    from torch.utils.data._utils.pin_memory import pin_memory

    loader = make_loader(train_ds, EpochSampler(len(train_ds), shuffle=True, seed=args.batch.index(bs)), bs,
                         args.workers, dev, in_step=True)
    it = _batches(loader, train_ds)
    from bqnet_model.model.backbone import OffsetPadding
    from bqnet_model.model.bqnet import BQNet
    from bqnet_model.model.targets import PADDING_KEY, TABLES_KEY, loss_targets

    walls: dict[str, list[float]] = {"in step": [], "from loader": []}
    part: dict[str, list[float]] = {"in step": [], "from loader": []}
    build, sizes = [], {"in step": [], "from loader": []}
    n_texts = 0
    for k in range(args.warmup + args.steps):
        old = next(it)
        n_texts += len(old["texts"])
        tb = time.perf_counter()
        new = with_target_tables(old)
        build.append(time.perf_counter() - tb)
        if dev.type == "cuda":
            new = pin_memory(new)  # as the loader's pinning thread does
        sizes["in step"].append(_tensors(old))
        sizes["from loader"].append(_tensors(new))
        if k >= args.warmup:  # the step's share of the targets alone: built from the lists, or moved
            tt = time.perf_counter()
            BQNet.sentence_targets(old, dev)
            OffsetPadding(old["sp_offsets"], dev)
            part["in step"].append(time.perf_counter() - tt)
            tt = time.perf_counter()
            loss_targets(new[TABLES_KEY], new["text_scene"], dev)
            OffsetPadding.from_indices(**new[PADDING_KEY], device=dev)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            part["from loader"].append(time.perf_counter() - tt)
        order = [("in step", old), ("from loader", new)]
        for name, b in (order if k % 2 == 0 else order[::-1]) if not args.targets_only else ():
            ts = time.perf_counter()
            train_step(model, model, b, opt, scaler, cfg, dev, amp, amp_dtype)  # ends on a host sync
            if k >= args.warmup:
                walls[name].append(time.perf_counter() - ts)
    for name in walls:
        n = statistics.mean(c for c, _ in sizes[name])
        nbytes = statistics.mean(b for _, b in sizes[name])
        row = dict(batch=bs, targets=name, steps=walls[name],
                   step_median_s=statistics.median(walls[name]) if walls[name] else None,
                   tensors_per_batch=n, batch_mib=nbytes / 2**20, targets_median_s=statistics.median(part[name]),
                   table_build_median_s=statistics.median(build[args.warmup:]) if name == "from loader" else 0.0)
        rows.append(row)
        steps = (f"median step {row['step_median_s'] * 1000:.0f} ms (steps: "
                 f"{', '.join(f'{w * 1000:.0f}' for w in walls[name])}), " if walls[name] else "")
        print(f"batch {bs:3d} ({n_texts // (args.warmup + args.steps)} sentences), targets {name:11s}: {steps}"
              f"{n:.0f} tensors per batch "
              f"({row['batch_mib']:.1f} MiB), the step's targets and padding {row['targets_median_s'] * 1000:.1f} ms"
              + (f", tables built in {row['table_build_median_s'] * 1000:.1f} ms (median; the workers' share)"
                 if name == "from loader" else ""), flush=True)
    if args.sync_report and not args.targets_only:
        from bqnet_model.train.readbacks import ReadbackCounter

        old = next(it)
        for name, b in (("in step", old), ("from loader", with_target_tables(old))):
            for kind in ["host"] + (["cuda"] if dev.type == "cuda" else []):
                with ReadbackCounter(kind) as counter:
                    train_step(model, model, b, opt, scaler, cfg, dev, amp, amp_dtype)
                print(f"targets {name}: {counter.report(40)}", flush=True)
                next(r for r in rows if r["targets"] == name)[f"readbacks_{kind}"] = counter.total


def _tensors(x) -> tuple[int, int]:
    """(tensors, bytes) in a batch, nested lists and dicts included: what ``pin_memory`` pins."""
    if isinstance(x, torch.Tensor):
        return 1, x.numel() * x.element_size()
    items = x.values() if isinstance(x, dict) else x if isinstance(x, (list, tuple)) else ()
    n = b = 0
    for v in items:
        dn, db = _tensors(v)
        n, b = n + dn, b + db
    return n, b


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
