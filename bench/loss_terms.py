"""Host cost of the training loss alone (``BQNet.loss`` forward and backward), with and without
extra loss options, on the same batches and the same decoder outputs.

Why: the training step is host-bound on the GPU, and the recipe's options (the anchor terms,
``sem_balance``) add loss ops that the plain ``bench/train_step.py`` run does not have. Here the
decoder runs once per batch (no grad); its outputs become leaves, so the timed work is the loss's
ops and their backward only (matching, targets, terms), without the backbone's compute that
dominates a CPU step. Per variant: the median host time of one loss forward + backward, and the
profiler's op calls per batch, then the op kinds the ``--set`` options add.

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python bench/loss_terms.py config/tiny.yaml \\
        --set train.data_root=/tmp/synth --max-points 20000 --batch 8 \\
        --extra model.loss.sem_balance=0.5 model.loss.anchor_ref=1.0 model.loss.anchor_mask=0.5

``anchor_ref`` changes only the data set's sampling targets (no loss op); it is listed so that the
batches are those of the recipe.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for both variants (train.data_root=DIR, ...)")
    ap.add_argument("--extra", nargs="+", default=[], metavar="KEY=VALUE",
                    help="the overrides of the second variant (the first has none of them)")
    ap.add_argument("--max-points", type=int, default=None, help="train.max_points_train")
    ap.add_argument("--batch", type=int, default=8, help="rooms per batch")
    ap.add_argument("--batches", type=int, default=3, help="batches (each timed --reps times per variant)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2, help="the variants are timed in turn this many times")
    args = ap.parse_args()

    from torch.profiler import ProfilerActivity, profile

    from bqnet_model.model.bqnet import BQNet
    from bqnet_model.model.config import load_config
    from bqnet_model.train import EpochSampler, build_datasets
    from bqnet_model.train.data import make_loader

    torch.manual_seed(0)
    base = ["inference.task=gres", *args.overrides]
    if args.max_points is not None:
        base.append(f"train.max_points_train={args.max_points}")
    cfg = load_config(args.config, base + args.extra)  # the batches of the second variant (anchor_ref)
    variants = {"plain": copy.deepcopy(load_config(args.config, base).model.loss),
                "+extra": copy.deepcopy(cfg.model.loss)}
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ds, _ = build_datasets(cfg, cfg.train.data_root, train=True)
    loader = make_loader(ds, EpochSampler(len(ds), shuffle=True, seed=0), args.batch, 0, dev)
    model = BQNet(cfg.model).to(dev)
    model.train()
    batches, it = [], iter(loader)
    for _ in range(args.batches):
        b = next(it)
        with torch.no_grad():
            batches.append((b, model(b)))

    def leaves(out):
        o = copy.copy(out)
        o.layers = [dataclasses.replace(p, **{k: getattr(p, k).detach().requires_grad_(True)
                                              for k in ("masks", "scores", "indi")}) for p in out.layers]
        o.seed_scores = out.seed_scores.detach().requires_grad_(True)
        if getattr(out, "sem_logits", None) is not None:
            o.sem_logits = out.sem_logits.detach().requires_grad_(True)
        return o

    def run(loss_cfg, b, out) -> None:
        model.cfg.loss = loss_cfg
        loss, _ = model.loss(leaves(out), b)
        loss.backward()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    print(f"device {dev}, torch threads {torch.get_num_threads()}, {args.batch} rooms per batch, "
          f"extra: {' '.join(args.extra) or 'none'}", flush=True)
    counts: dict[str, dict[str, float]] = {}
    for _ in range(args.rounds):
        for name, lc in variants.items():
            for b, out in batches:  # warm
                run(lc, b, out)
            times = []
            for _ in range(args.reps):
                for b, out in batches:
                    t = time.perf_counter()
                    run(lc, b, out)
                    times.append(time.perf_counter() - t)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for b, out in batches:
                    run(lc, b, out)
            ka = prof.key_averages()
            counts[name] = {e.key: e.count / len(batches) for e in ka}
            n_aten = sum(v for k, v in counts[name].items() if k.startswith("aten::"))
            print(f"{name:7s}: loss forward + backward, median {statistics.median(times) * 1e3:.1f} ms host, "
                  f"{sum(counts[name].values()):.0f} op calls per batch (aten:: {n_aten:.0f})", flush=True)
    a, b_ = counts["plain"], counts["+extra"]
    diff = {k: b_.get(k, 0) - a.get(k, 0) for k in set(a) | set(b_)}
    print("op calls the extra options add per batch:",
          ", ".join(f"{k} {v:+.0f}" for k, v in sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:25] if v))


if __name__ == "__main__":
    main()
