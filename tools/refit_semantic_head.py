#!/usr/bin/env python3
"""Refit a checkpoint's auxiliary semantic head (``sem_cls_head``) on frozen superpoint features.

The head only feeds the absent-object check (``bqnet_model.pipeline.absence``) and a training loss,
so it can be refitted without touching the backbone or the decoder: the features it reads
(``scene.sp_feats``) are those of the shipped model, computed once by the inference path itself.

    # 1. features of the maps (Segmenter.prepare, as inference runs; one file per set, in /tmp):
    PYTHONPATH=. OMP_NUM_THREADS=1 python tools/refit_semantic_head.py features --checkpoint CKPT \
        --synth-dir /tmp/rooms [--rooms 80] [--real-dir ../shared/real --scans scene0000_00 ...] --out train.npz
    # 2. accuracy of the checkpoint's head (or of a refitted one) on a feature file:
    PYTHONPATH=. python tools/refit_semantic_head.py eval --checkpoint CKPT --features heldout.npz
    # 3. refit (leave-one-scan-out over the real maps of the training features picks the real share
    #    among --real-share values), print the accuracies, write a checkpoint copy with the new head:
    PYTHONPATH=. python tools/refit_semantic_head.py fit --checkpoint CKPT --features train.npz \
        --real-share 0.25 0.5 --eval-features heldout.npz val.npz --write /tmp/ckpt_refit.pth

Loss ("points directly"): every labelled point is one sample with its superpoint's features, so a
superpoint's target is the histogram of its points' labels (unlabelled points, -1, left out); each
point is weighted by its class's count^-0.5 (counted over the training points of its domain) and the
real points together carry ``real_share`` of the total weight, so six scans are not drowned by many
synthetic rooms. Adam from the checkpoint's own head weights, full batch, fixed seed: the same files
give the same head.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from bqnet_model.data.classes import CLASSES

N_LABELS = len(CLASSES) + 1  # the vocabulary + "other" (OTHER_CLASS), the head's outputs
OBJECT_CLASSES = tuple(range(2, len(CLASSES)))  # the 20 object classes: all but floor and wall
HEAD = "sem_cls_head."


# ---------------------------------------------------------------------- features
def map_features(seg: Any, xyz: np.ndarray, rgb: np.ndarray, semantic: np.ndarray) -> dict[str, np.ndarray]:
    """One map's head inputs (S, C) and per-superpoint label histograms (S, N_LABELS) of the points
    ``prepare`` kept (cleaning may drop or thin points: their labels do not count)."""
    cache = seg.prepare(xyz, rgb)
    feats = cache.scene.sp_feats[0].float().cpu().numpy()
    n_sp = feats.shape[0]
    labels = np.asarray(semantic, np.int64)[cache.point_index]
    sp = np.asarray(cache.point_superpoint, np.int64)
    ok = labels >= 0
    if (labels[ok] >= N_LABELS).any():
        raise ValueError(f"semantic labels must be -1 or < {N_LABELS}, got max {int(labels.max())}")
    hist = np.zeros((n_sp, N_LABELS), np.float32)
    np.add.at(hist, (sp[ok], labels[ok]), 1.0)
    return {"feats": feats.astype(np.float32), "hist": hist}


def _synthetic_maps(synth_dir: Path, rooms: int | None) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    files = sorted(synth_dir.glob("*.npz"))
    if rooms is not None:
        files = files[:rooms]
    if not files:
        raise FileNotFoundError(f"no *.npz room in {synth_dir} (make some with python -m bqnet_synth)")
    out = []
    for f in files:
        z = np.load(f)
        out.append((f.stem, z["xyz"], z["rgb"], z["semantic"]))
    return out


def extract(seg: Any, synth_dir: Path | None, rooms: int | None, real_dir: Path | None,
            scans: Sequence[str]) -> dict[str, np.ndarray]:
    """Concatenated features of every map: ``feats``, ``hist``, ``map`` (row -> map index),
    ``map_names``, ``map_real`` (1 for a real scan)."""
    sources: list[tuple[str, bool, Any]] = []
    if synth_dir is not None:
        sources += [(name, False, (xyz, rgb, sem)) for name, xyz, rgb, sem in _synthetic_maps(synth_dir, rooms)]
    layout = None
    if scans:
        if real_dir is None:
            raise ValueError("--scans needs --real-dir")
        from bqnet_model.eval_real import check_real_dir

        layout = check_real_dir(real_dir)
        layout.select(scans)
        sources += [(s, True, None) for s in scans]
    feats, hists, maps = [], [], []
    for i, (name, real, arrays) in enumerate(sources):
        if real:
            from bqnet_model.eval_real import load_real_scene

            sc = load_real_scene(layout, name).scene
            arrays = (sc.xyz, sc.rgb, sc.semantic)
        f = map_features(seg, *arrays)
        feats.append(f["feats"])
        hists.append(f["hist"])
        maps.append(np.full(len(f["feats"]), i, np.int32))
        print(f"  {i + 1}/{len(sources)} {name}: {len(f['feats'])} superpoints", file=sys.stderr, flush=True)
    return {"feats": np.concatenate(feats), "hist": np.concatenate(hists), "map": np.concatenate(maps),
            "map_names": np.array([s[0] for s in sources]), "map_real": np.array([int(s[1]) for s in sources])}


def load_features(paths: Sequence[str | Path]) -> dict[str, np.ndarray]:
    """Several feature files as one (map indices renumbered)."""
    parts = [dict(np.load(p)) for p in paths]
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("feats", "hist", "map", "map_names", "map_real")}
    n_maps = 0
    for p in parts:
        for k in ("feats", "hist", "map_names", "map_real"):
            out[k].append(p[k])
        out["map"].append(p["map"] + n_maps)
        n_maps += len(p["map_names"])
    return {k: np.concatenate(v) for k, v in out.items()}


def subset(data: dict[str, np.ndarray], maps: np.ndarray) -> dict[str, np.ndarray]:
    """The rows of the maps ``maps`` (indices into ``map_names``), map indices kept."""
    rows = np.isin(data["map"], maps)
    return {**data, "feats": data["feats"][rows], "hist": data["hist"][rows], "map": data["map"][rows]}


# ---------------------------------------------------------------------- head
def head_from_state(state: dict[str, torch.Tensor]) -> torch.nn.Sequential:
    """The ``sem_cls_head`` of a checkpoint's state dict as a module (the model's own layout:
    Linear-ReLU-Linear), so its state dict drops back in under ``sem_cls_head.*``."""
    w0, w2 = state.get(HEAD + "0.weight"), state.get(HEAD + "2.weight")
    if w0 is None or w2 is None:
        raise ValueError("the checkpoint has no semantic head (model.num_classes 0): nothing to refit")
    head = torch.nn.Sequential(torch.nn.Linear(w0.shape[1], w0.shape[0]), torch.nn.ReLU(),
                               torch.nn.Linear(w2.shape[1], w2.shape[0]))
    head.load_state_dict({k[len(HEAD):]: v.float() for k, v in state.items() if k.startswith(HEAD)})
    return head


@torch.no_grad()
def predict(head: torch.nn.Module, feats: np.ndarray) -> np.ndarray:
    return head(torch.from_numpy(feats)).argmax(-1).numpy()


def accuracy(pred: np.ndarray, hist: np.ndarray) -> dict[str, Any]:
    """Point accuracy, superpoint accuracy (majority label) and per-class point recall (object classes)."""
    n = hist.sum(1)
    lab = hist.sum(0)
    has = n > 0
    major = hist.argmax(1)
    hit = hist[np.arange(len(pred)), pred]
    recall = {CLASSES[c]: (float(hit[pred == c].sum() / lab[c]) if lab[c] > 0 else None) for c in OBJECT_CLASSES}
    vals = [v for v in recall.values() if v is not None]
    return {"points": float(hit.sum() / max(n.sum(), 1)), "superpoints": float((major[has] == pred[has]).mean()),
            "mean_object_recall": float(np.mean(vals)) if vals else None, "recall": recall}


def sample_weights(hist: np.ndarray, real: np.ndarray, real_share: float) -> np.ndarray:
    """(S, N_LABELS) weights of the point-count targets: class count^-0.5 per domain, the real
    rows scaled to ``real_share`` of the total (module docstring)."""
    w = np.zeros_like(hist, dtype=np.float64)
    for dom in (False, True):
        rows = real == dom
        if not rows.any():
            continue
        count = hist[rows].sum(0).astype(np.float64)
        cw = np.where(count > 0, 1.0 / np.sqrt(np.maximum(count, 1.0)), 0.0)
        w[rows] = hist[rows] * cw
    if real.any() and (~real).any():
        tot_r, tot_s = w[real].sum(), w[~real].sum()
        w[real] *= real_share / tot_r
        w[~real] *= (1.0 - real_share) / tot_s
    else:
        w /= w.sum()
    return w.astype(np.float32)


def fit_head(state: dict[str, torch.Tensor], data: dict[str, np.ndarray], real_share: float, steps: int,
             lr: float, seed: int) -> torch.nn.Sequential:
    """The head refitted on ``data`` (module docstring), started from the state's head."""
    torch.manual_seed(seed)
    head = head_from_state(state)
    real = data["map_real"][data["map"]].astype(bool)
    w = torch.from_numpy(sample_weights(data["hist"], real, real_share))
    keep = w.sum(1) > 0
    x, w = torch.from_numpy(data["feats"])[keep], w[keep]
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = -(torch.log_softmax(head(x), -1) * w).sum()
        loss.backward()
        opt.step()
    return head.eval()


def loso(state: dict[str, torch.Tensor], data: dict[str, np.ndarray], real_share: float, steps: int, lr: float,
         seed: int) -> dict[str, float]:
    """Leave one real scan out: fit on the rest, point accuracy on the left-out scan, per scan."""
    real_maps = np.flatnonzero(data["map_real"])
    out = {}
    for m in real_maps:
        train = subset(data, np.setdiff1d(np.arange(len(data["map_names"])), [m]))
        test = subset(data, np.array([m]))
        head = fit_head(state, train, real_share, steps, lr, seed)
        out[str(data["map_names"][m])] = accuracy(predict(head, test["feats"]), test["hist"])["points"]
    return out


def report(name: str, head: torch.nn.Module, data: dict[str, np.ndarray]) -> dict[str, Any]:
    """Accuracies on the real and the synthetic maps of ``data`` separately."""
    out = {}
    for dom, label in ((1, "real"), (0, "synthetic")):
        maps = np.flatnonzero(data["map_real"] == dom)
        if not len(maps):
            continue
        part = subset(data, maps)
        out[label] = accuracy(predict(head, part["feats"]), part["hist"])
        a = out[label]
        mean = "-" if a["mean_object_recall"] is None else f"{a['mean_object_recall']:.3f}"
        print(f"{name} {label} ({len(maps)} maps): points {a['points']:.3f}  superpoints {a['superpoints']:.3f}  "
              f"mean object recall {mean}")
    return out


def write_checkpoint(src: Path, dst: Path, head: torch.nn.Module, note: str) -> Path:
    """A copy of ``src`` whose ``sem_cls_head.*`` weights are ``head``'s (same dtype), everything else as
    it was; ``meta['semantic_head']`` says how the head was made."""
    from bqnet_model.checkpoint import read_checkpoint, with_weights

    new = {HEAD + k: v for k, v in head.state_dict().items()}
    have = {k for k in read_checkpoint(src)["state_dict"] if k.startswith(HEAD)}
    if set(new) != have:
        raise ValueError(f"{src}: its semantic head keys {sorted(have)} differ from the refitted head's ({sorted(new)})")
    return with_weights(src, dst, new, {"semantic_head": note})


# ---------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("features", help="head inputs and label histograms of maps, via Segmenter.prepare")
    f.add_argument("--checkpoint", required=True)
    f.add_argument("--synth-dir", type=Path)
    f.add_argument("--rooms", type=int, help="only the first N rooms of --synth-dir")
    f.add_argument("--real-dir", type=Path)
    f.add_argument("--scans", nargs="*", default=[])
    f.add_argument("--out", type=Path, required=True, help="feature file (.npz)")
    e = sub.add_parser("eval", help="the checkpoint's head on feature files")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--features", nargs="+", required=True)
    e.add_argument("--json", type=Path, help="also write the accuracies here")
    t = sub.add_parser("fit", help="refit the head on feature files")
    t.add_argument("--checkpoint", required=True)
    t.add_argument("--features", nargs="+", required=True, help="training feature files")
    t.add_argument("--real-share", type=float, nargs="+", default=[0.25, 0.5],
                   help="share of the loss weight on the real points; with several, leave-one-scan-out picks")
    t.add_argument("--steps", type=int, default=300)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--eval-features", nargs="*", default=[], help="feature files only measured")
    t.add_argument("--write", type=Path, help="checkpoint copy with the refitted head")
    t.add_argument("--json", type=Path, help="also write the accuracies here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    if args.cmd == "features":
        from bqnet_model.pipeline import Segmenter

        seg = Segmenter.from_checkpoint(args.checkpoint, absent_class_prob={}, unknown_object="answer")
        data = extract(seg, args.synth_dir, args.rooms, args.real_dir, args.scans)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.out, **data)
        print(f"wrote {args.out}: {len(data['feats'])} superpoints of {len(data['map_names'])} maps")
        return 0

    from bqnet_model.checkpoint import read_checkpoint

    state = read_checkpoint(args.checkpoint)["state_dict"]
    results: dict[str, Any] = {}
    if args.cmd == "eval":
        head = head_from_state(state)
        for p in args.features:
            results[p] = report(f"{Path(p).stem}", head, load_features([p]))
    else:
        data = load_features(args.features)
        shares = args.real_share
        if len(shares) > 1:
            scores = {}
            for s in shares:
                per = loso(state, data, s, args.steps, args.lr, args.seed)
                scores[s] = float(np.mean(list(per.values())))
                print(f"leave-one-scan-out, real share {s:g}: mean point accuracy {scores[s]:.3f} "
                      + " ".join(f"{k} {v:.3f}" for k, v in per.items()))
                results[f"loso_{s:g}"] = per
            share = max(shares, key=lambda s: scores[s])
        else:
            share = shares[0]
        print(f"real share {share:g}")
        head = fit_head(state, data, share, args.steps, args.lr, args.seed)
        results["real_share"] = share
        before = head_from_state(state)
        for p in [*args.features, *args.eval_features]:
            d = load_features([p])
            results[p] = {"before": report(f"{Path(p).stem} before", before, d),
                          "after": report(f"{Path(p).stem} after", head, d)}
        if args.write:
            note = (f"refitted on frozen features (tools/refit_semantic_head.py): {', '.join(args.features)}; "
                    f"real share {share:g}, {args.steps} steps, lr {args.lr:g}, seed {args.seed}")
            write_checkpoint(Path(args.checkpoint), args.write, head, note)
            print(f"wrote {args.write}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
