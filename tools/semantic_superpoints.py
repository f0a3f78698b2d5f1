"""Experiment: does the trained model's own per-point semantics lift superpoint ASA on real scans?

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python tools/semantic_superpoints.py --real-dir ../shared/real \
        [--checkpoint models/bqnet_tiny.pth] [--synth-dir /tmp/synth_val --synth-count 10]

The ASA the online superpoints lose sits at class boundaries that local geometry and colour do not
show (docs/benchmarks/superpoints.md, "Where the last 8-9 % goes"), and a per-edge classifier on local
features does not transfer across rooms (``tools/learned_affinity.py``). The shipped model has a
signal with a wider receptive field that needs no superpoints: its sparse U-Net
(``BQNet.encode_voxels``) and its auxiliary semantic head (``sem_cls_head``, trained on mean-pooled
superpoint features of the same width, so it also reads single points' features ``vox[p2v]``).

Per cloud: the batch is built as ``Segmenter.prepare`` builds it (``ingest.clean_torch``,
``voxel_inputs_torch``, ``single_scene_batch``), the backbone runs once, and every point gets (a) the
semantic head's softmax and (b) its L2-normalised backbone feature. Then, at the shipped
segmentation's segment count:
* ``hand FH``: the shipped weight formula through plain FH (the control of ``learned_affinity``);
* ``FH + tv lambda``: the hand weight plus lambda * 0.5 |p_i - p_j|_1 of the softmax;
* ``FH + cos lambda``: the hand weight plus lambda * (1 - cos) of the backbone features;
* ``split m``: the SHIPPED pipeline with its ``k_thresh`` bisected so that, after each segment is split
  by its points' argmax class (classes with at least ``m`` points of the segment; fewer join the
  segment's majority class), the count is the shipped one;
* ``move t``: the shipped segmentation, then boundary points moved to a neighbouring segment whose mean
  softmax is closer to theirs (total variation) by more than ``t``, three rounds; the count is unchanged.
* ``oracle ...``: the same with the ground-truth classes (``semantic``) in place of the head's (one-hot
  distributions; ``oracle FH + class lambda`` adds lambda where the two ends' classes differ): what a
  perfect semantic head could give these steps, a bound, not a method.
* ``mixed s: ...``: the oracle rows with the head's argmax in place of the true class on a random share
  ``s`` of the objects (the per-cloud table gives those labels' point accuracy): how good a head must be.
FH methods use one ``min_size`` of a small grid per method (the best in mean over the real clouds: one
scalar picked on the test clouds, said so in the output), ``k_thresh`` bisected per cloud to within 1 %.

The model saw most of these scans in training, so the clouds are reported in groups: ``unseen``
(scene0002_00 / 01), ``val`` (scene0005_00, its validation scan), ``trained`` (the others: an upper
bound only). Synthetic rooms (``--synth-dir``) check that nothing costs the rooms their ASA >= 0.99.
A prototype: no product code is touched, nothing imports this file.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

# tools/ is no package: its sibling learned_affinity is reached by path (loading, graph, FH, bisection)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from learned_affinity import MIN_SIZES, Cloud, edge_auc, matched, prepare  # noqa: E402

from bqnet_model.eval_real import check_real_dir, load_real_scene  # noqa: E402
from bqnet_model.ingest import clean_torch, voxel_inputs_torch  # noqa: E402
from bqnet_model.model.inputs import single_scene_batch  # noqa: E402
from bqnet_model.pipeline import Segmenter  # noqa: E402
from bqnet_model.superpoints import SuperpointParams, achievable_segmentation_accuracy, oversegment_detailed  # noqa: E402

LAMBDAS = (0.05, 0.1, 0.2, 0.5, 1.0)
SPLIT_MIN = (8, 16, 32)  # points of a class a shipped segment must hold to be split off
MOVE_MARGIN = (0.1, 0.3, 0.5)  # total-variation gain a boundary point needs to change segment
MOVE_ROUNDS = 3
MIXED_SHARES = (0.25, 0.5, 0.75)  # share of objects whose classes come from the head in the mixed rows
ORACLE_LAMBDAS = (0.2, 1.0)  # weight of "ground-truth classes differ" in the oracle FH rows
UNSEEN = ("scene0002_00", "scene0002_01")
VAL = ("scene0005_00",)


@dataclass
class Scan:
    """One evaluated cloud: the graph and hand weights (``learned_affinity.Cloud``) plus the model's view."""

    cloud: Cloud
    group: str  # unseen / val / trained / synth
    xyz: np.ndarray
    rgb: np.ndarray
    semantic: np.ndarray  # (N,) int64 ground-truth class, -1 unlabelled (the oracle rows only)
    prob: np.ndarray  # (N, classes) float32 softmax of the semantic head per point
    feat: np.ndarray  # (N, C) float32 unit backbone features per point
    tv: np.ndarray  # (E,) float32 0.5 |p_a - p_b|_1
    gt_diff: np.ndarray  # (E,) float32 1 where the ground-truth classes of the ends differ (oracle)
    cos: np.ndarray  # (E,) float32 1 - f_a . f_b
    backbone_ms: float  # clean + voxelize + backbone + head


def group_of(name: str) -> str:
    """unseen / val / trained: what the shipped model saw of this scan in training (module docstring)."""
    scan = name.split()[0]
    return "unseen" if scan in UNSEEN else "val" if scan in VAL else "trained"


def point_semantics(seg: Segmenter, xyz: np.ndarray, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(softmax (N, classes), unit features (N, C), ms of clean + voxelize + backbone + head) per input
    point, the batch built as ``Segmenter.prepare`` builds it. Points the cleaning drops (exact
    duplicates) take the values of the kept point at their place, so the arrays line up with the
    caller's points."""
    inf, model = seg.inference, seg.model
    t0 = time.perf_counter()
    dcloud = clean_torch(xyz, rgb, max_points=inf.max_points, device="cpu")
    vi = voxel_inputs_torch(dcloud.xyz, dcloud.rgb, inf.voxel_size)
    batch = single_scene_batch(vi.coords, vi.feats, vi.p2v, dcloud.xyz)
    with torch.inference_mode():
        vox = model.encode_voxels(batch).float()
        pf = vox[vi.p2v]
        prob = torch.softmax(model.sem_cls_head(pf), dim=-1).numpy()
        feat = torch.nn.functional.normalize(pf, dim=1).numpy()
    ms = (time.perf_counter() - t0) * 1e3
    index = dcloud.index.numpy()
    if index.size != xyz.shape[0]:
        _, near = cKDTree(dcloud.xyz.numpy()).query(np.asarray(xyz, np.float32))
        return prob[near], feat[near], ms
    out_p, out_f = np.empty_like(prob), np.empty_like(feat)
    out_p[index], out_f[index] = prob, feat
    return out_p, out_f, ms


def prepare_scan(seg: Segmenter, name: str, xyz: np.ndarray, rgb: np.ndarray, instance: np.ndarray,
                 semantic: np.ndarray, group: str) -> Scan:
    """The shipped segmentation, the kNN graph with hand weights, and the model's per-point view."""
    # learned_affinity's graph; its learned-edge features are not used here (dropped: memory)
    cloud = dataclasses.replace(prepare(name, xyz, rgb, instance), feats=np.zeros((0, 0), np.float32))
    a, b = cloud.a, cloud.b
    prob, feat, ms = point_semantics(seg, xyz, rgb)
    tv = 0.5 * np.abs(prob[a] - prob[b]).sum(1)
    cos = 1.0 - (feat[a] * feat[b]).sum(1)
    gt_diff = (semantic[a] != semantic[b]).astype(np.float32)
    return Scan(cloud, group, xyz, rgb, semantic, prob, feat, tv.astype(np.float32), gt_diff, cos.astype(np.float32), ms)


def gt_onehot(semantic: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, n_classes + 1) one-hot of the ground-truth class, unlabelled points in the last column."""
    out = np.zeros((semantic.size, n_classes + 1), np.float32)
    out[np.arange(semantic.size), np.where(semantic < 0, n_classes, semantic)] = 1.0
    return out


def split_by_class(labels: np.ndarray, cls: np.ndarray, n_classes: int, min_points: int) -> np.ndarray:
    """Each segment cut by its points' argmax class; a class with fewer than ``min_points`` points of
    the segment joins the segment's majority class (noise in the head must not shred segments)."""
    n_seg = int(labels.max()) + 1
    hist = np.bincount(labels * n_classes + cls, minlength=n_seg * n_classes).reshape(n_seg, n_classes)
    major = hist.argmax(1)
    keep = hist[labels, cls] >= min_points
    c = np.where(keep, cls, major[labels])
    _, dense = np.unique(labels.astype(np.int64) * n_classes + c, return_inverse=True)
    return dense.astype(np.int64)


def move_boundary(labels: np.ndarray, prob: np.ndarray, a: np.ndarray, b: np.ndarray, margin: float,
                  rounds: int) -> np.ndarray:
    """Boundary points moved to the neighbouring segment whose mean softmax is closer to theirs (total
    variation) by more than ``margin``; Jacobi rounds (all moves of a round from the previous labels)."""
    lab = labels.copy()
    n_seg = int(lab.max()) + 1
    for _ in range(rounds):
        cnt = np.bincount(lab, minlength=n_seg).astype(np.float64)
        mean = np.zeros((n_seg, prob.shape[1]))
        np.add.at(mean, lab, prob)
        mean /= np.maximum(cnt, 1.0)[:, None]
        own = 0.5 * np.abs(prob - mean[lab]).sum(1)
        cut = lab[a] != lab[b]
        src = np.concatenate([a[cut], b[cut]])
        dst = np.concatenate([lab[b[cut]], lab[a[cut]]])
        cost = 0.5 * np.abs(prob[src] - mean[dst]).sum(1)
        gain = own[src] - cost
        # per point the best candidate: sort by (point, -gain), keep the first of each point
        order = np.lexsort((-gain, src))
        src, dst, gain = src[order], dst[order], gain[order]
        first = np.ones(src.size, bool)
        first[1:] = src[1:] != src[:-1]
        go = first & (gain > margin) & (cnt[lab[src]] > 1)
        if not go.any():
            break
        lab[src[go]] = dst[go]
    _, dense = np.unique(lab, return_inverse=True)
    return dense.astype(np.int64)


def split_matched(sc: Scan, prob: np.ndarray, min_points: int, target: int) -> tuple[float, int]:
    """(ASA, count) of the shipped pipeline with ``k_thresh`` bisected so that the split by ``prob``'s
    argmax class lands on ``target`` segments (closest count found)."""
    cls = prob.argmax(1)
    nc = prob.shape[1]

    def run(k: float) -> tuple[np.ndarray, int]:
        lab = np.asarray(oversegment_detailed(sc.xyz, sc.rgb, params=SuperpointParams(k_thresh=k), num_threads=1).labels)
        out = split_by_class(lab, cls, nc, min_points)
        return out, int(out.max()) + 1

    # count falls as k grows; a noisy head splits much, so the shipped k may have to grow a hundredfold
    lo, hi = SuperpointParams().k_thresh, SuperpointParams().k_thresh * 1024
    lab, ns = run(lo)
    best = (abs(ns - target), lab, ns)
    for _ in range(18):
        if abs(ns - target) <= 0.01 * target:
            break
        mid = float(np.sqrt(lo * hi))
        lab, ns = run(mid)
        if abs(ns - target) < best[0]:
            best = (abs(ns - target), lab, ns)
        lo, hi = (mid, hi) if ns > target else (lo, mid)
    return achievable_segmentation_accuracy(best[1], sc.cloud.instance), best[2]


def evaluate(scans: list[Scan], picked_in: dict[str, int] | None = None
             ) -> tuple[dict[str, dict[str, tuple[float, int] | None]], dict[str, int]]:
    """(res[method][cloud name] = (ASA, count) or None (count out of reach), the FH min_size per
    method). FH methods run at ``picked_in``'s min_size (the synthetic rooms take the real clouds'),
    or else at the one of the grid best in mean over ``scans``. Methods named ``oracle ...`` use the
    ground-truth classes in place of the head's: bounds, not methods."""
    res: dict[str, dict[str, tuple[float, int] | None]] = {}
    shipped = {sc.cloud.name: (achievable_segmentation_accuracy(sc.cloud.shipped, sc.cloud.instance),
                               int(sc.cloud.shipped.max()) + 1) for sc in scans}
    res["shipped"] = shipped
    fh_methods: dict[str, dict[str, np.ndarray]] = {"hand FH": {sc.cloud.name: sc.cloud.hand_w for sc in scans}}
    for term in ("tv", "cos"):
        for lam in LAMBDAS:
            fh_methods[f"FH + {term} {lam:g}"] = {sc.cloud.name: sc.cloud.hand_w + lam * getattr(sc, term) for sc in scans}
    for lam in ORACLE_LAMBDAS:
        fh_methods[f"oracle FH + class {lam:g}"] = {sc.cloud.name: sc.cloud.hand_w + lam * sc.gt_diff for sc in scans}
    picked: dict[str, int] = {}
    for m, ws in fh_methods.items():
        grid = (picked_in[m],) if picked_in else MIN_SIZES
        per_ms = {ms: {sc.cloud.name: matched(sc.cloud, ws[sc.cloud.name], ms, shipped[sc.cloud.name][1])
                       for sc in scans} for ms in grid}

        def mean_of(ms: int) -> float:
            vals = [v[0] for v in per_ms[ms].values() if v is not None]
            return float(np.mean(vals)) if len(vals) == len(scans) else -1.0

        picked[m] = max(grid, key=mean_of)
        res[m] = per_ms[picked[m]]
    for src in ("model", "oracle"):
        probs = {sc.cloud.name: sc.prob if src == "model" else gt_onehot(sc.semantic, sc.prob.shape[1]) for sc in scans}
        pre = "" if src == "model" else "oracle "
        for mp in SPLIT_MIN:
            res[f"{pre}split {mp}"] = {sc.cloud.name: split_matched(sc, probs[sc.cloud.name], mp, shipped[sc.cloud.name][1])
                                       for sc in scans}
        for t in MOVE_MARGIN:
            out: dict[str, tuple[float, int] | None] = {}
            for sc in scans:
                lab = move_boundary(sc.cloud.shipped, probs[sc.cloud.name], sc.cloud.a, sc.cloud.b, t, MOVE_ROUNDS)
                out[sc.cloud.name] = (achievable_segmentation_accuracy(lab, sc.cloud.instance), int(lab.max()) + 1)
            res[f"{pre}move {t:g}"] = out
    # How good must a head be? The oracle with the head's argmax on a random share of the objects.
    ms_oracle = picked["oracle FH + class 1"]
    for share in MIXED_SHARES:
        fh_out: dict[str, tuple[float, int] | None] = {}
        mv_out: dict[str, tuple[float, int] | None] = {}
        for sc in scans:
            sem = mixed_semantic(sc, share)
            w = sc.cloud.hand_w + (sem[sc.cloud.a] != sem[sc.cloud.b]).astype(np.float32)
            fh_out[sc.cloud.name] = matched(sc.cloud, w, ms_oracle, shipped[sc.cloud.name][1])
            lab = move_boundary(sc.cloud.shipped, gt_onehot(sem, sc.prob.shape[1]), sc.cloud.a, sc.cloud.b, 0.1,
                                MOVE_ROUNDS)
            mv_out[sc.cloud.name] = (achievable_segmentation_accuracy(lab, sc.cloud.instance), int(lab.max()) + 1)
        res[f"mixed {share:g}: FH + class 1"] = fh_out
        picked[f"mixed {share:g}: FH + class 1"] = ms_oracle
        res[f"mixed {share:g}: move 0.1"] = mv_out
    return res, picked


def mixed_semantic(sc: Scan, share: float, seed: int = 0) -> np.ndarray:
    """Ground-truth classes, except on a random ``share`` of the labelled instances, whose points take
    the head's argmax: a head right on the other objects and as good as this one on those."""
    ids = np.unique(sc.cloud.instance[sc.cloud.instance >= 0])
    rng = np.random.default_rng(seed)
    pick = rng.choice(ids, int(round(share * ids.size)), replace=False)
    sem = sc.semantic.copy()
    on = np.isin(sc.cloud.instance, pick)
    sem[on] = sc.prob.argmax(1)[on]
    return sem


GROUPS = (("unseen", ("unseen",)), ("held-out", ("unseen", "val")), ("trained", ("trained",)),
          ("all", ("unseen", "val", "trained", "synth")))


def stat(res: dict[str, dict[str, tuple[float, int] | None]], m: str, names: list[str], fn: object) -> float:
    """``fn`` (nanmin / nanmean) of method ``m``'s ASA over ``names``; clouds out of reach are left out."""
    xs = [np.nan if res[m][n] is None else res[m][n][0] for n in names]
    return float("nan") if np.all(np.isnan(xs)) else float(fn(xs))  # type: ignore[operator]


def print_tables(scans: list[Scan], res: dict[str, dict[str, tuple[float, int] | None]], picked: dict[str, int],
                 title: str) -> None:
    """A summary (one row per method: min / mean ASA per group, count against the shipped), then the
    per-cloud ASA of the shipped, the control and each family's best member (best in mean over all)."""
    names_all = [sc.cloud.name for sc in scans]
    print(f"\n{title}: ASA at the shipped segment count (FH: min_size per method in brackets)")
    groups = [(g, [sc.cloud.name for sc in scans if sc.group in members]) for g, members in GROUPS]
    groups = [(g, ns) for g, ns in groups if ns]
    head = ["method"] + [f"{g} min / mean ({len(ns)})" for g, ns in groups] + ["count vs shipped"]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for m in res:
        cells = [f"{m} ({picked[m]})" if m in picked else m]
        for _, ns in groups:
            cells.append(f"{stat(res, m, ns, np.nanmin):.4f} / {stat(res, m, ns, np.nanmean):.4f}")
        r = [res[m][n][1] / res["shipped"][n][1] - 1.0 for n in names_all if res[m][n] is not None]
        miss = sum(res[m][n] is None for n in names_all)
        cells.append(f"{100 * min(r):+.1f} .. {100 * max(r):+.1f} %" + (f" ({miss} out of reach)" if miss else ""))
        print("| " + " | ".join(cells) + " |")

    def best(prefix: str) -> str:
        fam = [m for m in res if m.startswith(prefix)]
        return max(fam, key=lambda m: stat(res, m, names_all, np.nanmean))

    cols = ["shipped", "hand FH", best("FH + tv"), best("FH + cos"), best("split"), best("move"),
            best("oracle FH"), best("oracle split"), best("oracle move")] + [f"mixed {f:g}: move 0.1" for f in MIXED_SHARES]
    print(f"\n{title}, per cloud (each family's member best in mean over these clouds)")
    head = ["cloud", "group", "pts/seg", "head acc (mixed " + " / ".join(f"{f:g}" for f in MIXED_SHARES) + ")"] + cols + ["edge AUC hand / tv / cos"]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for sc in scans:
        nm = sc.cloud.name
        lab = sc.semantic >= 0
        acc = float((sc.prob.argmax(1)[lab] == sc.semantic[lab]).mean()) if lab.any() else float("nan")
        accs = [float((mixed_semantic(sc, f)[lab] == sc.semantic[lab]).mean()) for f in MIXED_SHARES]
        row = [nm, sc.group, f"{sc.cloud.instance.size / res['shipped'][nm][1]:.0f}",
               f"{acc:.3f} ({' / '.join(f'{x:.2f}' for x in accs)})"]
        row += ["-" if res[m][nm] is None else f"{res[m][nm][0]:.4f}" for m in cols]
        row.append(" / ".join(f"{edge_auc(w, sc.cloud.same):.3f}" for w in (sc.cloud.hand_w, sc.tv, sc.cos)))
        print("| " + " | ".join(row) + " |")


def load_real(real_dir: Path) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, xyz, rgb, instance, semantic) of every 50k scan and full mesh (as ``learned_affinity``)."""
    layout = check_real_dir(real_dir)
    out = []
    for scan in layout.scans:
        sc = load_real_scene(layout, scan, "votenet").scene
        out.append((f"{scan} 50k", sc.xyz, sc.rgb, sc.instance, sc.semantic))
    for scan in sorted(layout.fullres):
        sc = load_real_scene(layout, scan, "auto").scene
        out.append((f"{scan} mesh", sc.xyz, sc.rgb, sc.instance, sc.semantic))
    return out


def load_synth(synth_dir: Path, count: int) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, xyz, rgb, instance, semantic) of the first ``count`` synthetic validation rooms."""
    files = sorted(synth_dir.glob("*.npz"))[:count]
    if not files:
        raise FileNotFoundError(f"no synthetic rooms (*.npz) in {synth_dir}: make some with "
                                "`python -m bqnet_synth --out DIR --scenes 10 --split val --seed 0 --no-superpoints`")
    out = []
    for f in files:
        z = np.load(f)
        out.append((f.stem, z["xyz"], z["rgb"], z["instance"], z["semantic"]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--real-dir", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "real")
    ap.add_argument("--checkpoint", type=Path, default=Path("models/bqnet_tiny.pth"))
    ap.add_argument("--synth-dir", type=Path, default=Path("/tmp/synth_val"))
    ap.add_argument("--synth-count", type=int, default=10, help="synthetic rooms to check (0: none)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    seg = Segmenter.from_checkpoint(args.checkpoint, device="cpu")
    if seg.model.sem_cls_head is None:
        raise SystemExit(f"{args.checkpoint} has no semantic head (model.num_classes 0): nothing to test")
    scans = [prepare_scan(seg, n, x, c, i, sem, group_of(n)) for n, x, c, i, sem in load_real(args.real_dir)]
    print(f"prepared {len(scans)} real clouds in {time.perf_counter() - t0:.0f} s; backbone + head per cloud "
          + ", ".join(f"{sc.cloud.name} {sc.backbone_ms:.0f} ms" for sc in scans), flush=True)
    res, picked = evaluate(scans)
    print(f"segmented in {time.perf_counter() - t0:.0f} s", flush=True)
    print_tables(scans, res, picked, "real clouds (groups: unseen = never in training, val = its validation scan, "
                             "trained = in its training set, an upper bound)")
    if args.synth_count > 0:
        synth = [prepare_scan(seg, n, x, c, i, sem, "synth")
                 for n, x, c, i, sem in load_synth(args.synth_dir, args.synth_count)]
        print(f"prepared {len(synth)} synthetic rooms, {time.perf_counter() - t0:.0f} s", flush=True)
        sres, _ = evaluate(synth, picked)
        print_tables(synth, sres, picked, f"synthetic validation rooms ({len(synth)})")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
