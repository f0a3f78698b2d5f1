"""Experiment: do edge weights LEARNED from instance labels lift superpoint ASA on real scans?

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python tools/learned_affinity.py [--real-dir ../shared/real]

Every hand-made weight term of the online superpoints has been tried (docs/benchmarks/superpoints.md:
at an equal segment size they move ASA by less than 0.01). This asks the remaining question: does a
classifier trained to tell "same instance" from "different instance" on the kNN edges, from cheap
local features, give FH a better weight than the hand formula?

Per cloud (the 9 real 50k scans and scene0000_00's mesh vertices, loaded by ``bqnet_model.eval_real``):
the shipped ``oversegment_detailed`` (defaults) gives the reference labels, normals and spacing; the
kNN graph is rebuilt with scipy (``knn`` nearest within ``max_edge`` spacings, symmetric union, as the
C++ graph); per edge ~30 features (normals at three scales, plane offsets, length, colour, chroma,
height, curvature, ...). Training is leave-one-room-out: scans of one room (scene0000_00/01/02 and the
mesh vertices; scene0002_00/01) are held out together, because a room's scans share its objects and a
classifier would otherwise be tested on what it saw. Edges with an unlabelled end are left out of
training (and of nothing else). The held-out edges get P(different instance) as their weight.

Three segmentations per cloud, at the shipped segmentation's segment count (FH's ``k_thresh`` bisected
for each ``min_size`` of a small grid until the count is within 1 % of the target):
* ``shipped``: ``oversegment_detailed`` with the defaults (normal pick, FH, coplanar merge, exchange);
* ``hand FH``: the shipped edge weight formula on the shipped normals, through the same plain FH
  (``_C.segment_graph``) as the learned weights: the control that isolates the weights from the rest
  of the pipeline;
* ``logreg FH`` / ``hgb FH``: logistic regression / a small gradient-boosted tree classifier;
* ``..., hand quantiles``: the learned order with the hand weights' values (``hand_quantiles``);
* ``hand + hgb FH``: the hand weight plus the learned probability;
* ``oracle FH``: the held-out labels as weights (1 across instances), a bound for any edge weighting
  of this graph under FH, not a method.
The min_size grid is the same for every method; the table shows a fixed min_size (the one best in
mean over all clouds for that method: one scalar picked on the test clouds, said so in the output)
and, separately, the per-cloud best over the grid (an optimistic bound).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch  # noqa: F401  (first: bqnet_model._C links against libtorch)
from scipy.spatial import cKDTree
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bqnet_model import _C
from bqnet_model.eval_real import check_real_dir, load_real_scene
from bqnet_model.superpoints import SuperpointParams, achievable_segmentation_accuracy, oversegment_detailed

MIN_SIZES = (4, 8, 12, 16)  # FH min_size grid, shared by every weighting
PCA_SCALES = (9, 17, 33)  # neighbourhood sizes (points, the point included) of the multi-scale PCA
TRAIN_EDGES = 400_000  # edges sampled from the training clouds per fold: keeps a fold to seconds on one core
COUNT_TOL = 0.01  # matched count: within 1 % of the shipped segmentation's


@dataclass
class Cloud:
    """One evaluated cloud: its points, the shipped segmentation and its kNN edges with features."""

    name: str
    room: str  # scans of one room are held out together
    instance: np.ndarray
    shipped: np.ndarray
    a: np.ndarray  # int32 edge ends
    b: np.ndarray
    hand_w: np.ndarray  # float32: the shipped weight formula
    feats: np.ndarray  # float32 (E, F)
    same: np.ndarray  # int8: 1 same instance, 0 different, -1 an end unlabelled


def load_clouds(real_dir: Path) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, xyz, rgb, instance) for every 50k scan and every full mesh of the folder."""
    layout = check_real_dir(real_dir)
    out = []
    for scan in layout.scans:
        rs = load_real_scene(layout, scan, "votenet")
        out.append((f"{scan} 50k", rs.scene.xyz, rs.scene.rgb, rs.scene.instance))
    for scan in sorted(layout.fullres):
        rs = load_real_scene(layout, scan, "auto")
        out.append((f"{scan} mesh", rs.scene.xyz, rs.scene.rgb, rs.scene.instance))
    return out


def knn_edges(xyz: np.ndarray, tree: cKDTree, knn: int, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Undirected edges (i < j): j among i's ``knn`` nearest within ``radius`` or i among j's (as in C++)."""
    d, idx = tree.query(xyz, k=knn + 2, distance_upper_bound=radius)
    n = xyz.shape[0]
    rows = np.repeat(np.arange(n), idx.shape[1]).reshape(idx.shape)
    ok = (idx < n) & (idx != rows)
    # keep the first knn valid neighbours of each point (self and misses dropped)
    rank = np.cumsum(ok, axis=1)
    ok &= rank <= knn
    i, j = rows[ok], idx[ok]
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    key = np.unique(lo.astype(np.int64) * n + hi)
    return (key // n).astype(np.int32), (key % n).astype(np.int32)


def multiscale_pca(xyz: np.ndarray, idx: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per scale m: (unit normal (N,3), curvature lambda_min / sum (N,), centroid (N,3)) of the m nearest."""
    out = {}
    for m in PCA_SCALES:
        pts = xyz[idx[:, :m]].astype(np.float64)
        c = pts.mean(axis=1)
        q = pts - c[:, None, :]
        cov = np.einsum("nki,nkj->nij", q, q) / m
        ev, vec = np.linalg.eigh(cov)
        curv = ev[:, 0] / np.maximum(ev.sum(axis=1), 1e-12)
        out[m] = (vec[:, :, 0].astype(np.float32), curv.astype(np.float32), c.astype(np.float32))
    return out


def edge_features(xyz: np.ndarray, rgb: np.ndarray, normals: np.ndarray, s: float, a: np.ndarray,
                  b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(features (E, F) float32, hand weight (E,) float32). Lengths are in spacings so that scans of
    different density share one classifier; per-end quantities enter as (min, max) so an edge's
    features do not depend on which end is first."""
    tree = cKDTree(xyz)
    _, idx = tree.query(xyz, k=max(PCA_SCALES))
    pca = multiscale_pca(xyz, idx)
    col = rgb.astype(np.float32)
    chroma = col / np.maximum(col.sum(axis=1, keepdims=True), 1.0)
    mean_col = col[idx[:, :17]].mean(axis=1)
    z0 = np.percentile(xyz[:, 2], 2)
    p, q = xyz[a].astype(np.float32), xyz[b].astype(np.float32)
    d = q - p
    length = np.linalg.norm(d, axis=1)
    ni, nj = normals[a], normals[b]
    off_i, off_j = np.abs((d * ni).sum(1)), np.abs((d * nj).sum(1))
    f: list[np.ndarray] = []

    def sym(u: np.ndarray, v: np.ndarray) -> None:
        f.extend([np.minimum(u, v), np.maximum(u, v)])

    dot = np.abs((ni * nj).sum(1))
    f.append(dot)
    sym(off_i / s, off_j / s)
    f.append(length / s)
    cdiff = np.linalg.norm(col[a] - col[b], axis=1) / 255.0
    f.append(cdiff)
    f.append(np.linalg.norm(chroma[a] - chroma[b], axis=1))
    f.append(np.abs(col[a].mean(1) - col[b].mean(1)) / 255.0)
    f.append(np.linalg.norm(mean_col[a] - mean_col[b], axis=1) / 255.0)
    sym(col[a].mean(1) / 255.0, col[b].mean(1) / 255.0)
    f.append(np.abs(d[:, 2]) / s)
    f.append(np.abs(d[:, 2]) / np.maximum(length, 1e-9))
    f.append(0.5 * (p[:, 2] + q[:, 2]) - z0)  # metres above the floor: floor / wall / ceiling boundaries
    sym(np.abs(ni[:, 2]), np.abs(nj[:, 2]))
    for m in PCA_SCALES:
        n_m, curv, cen = pca[m]
        f.append(np.abs((n_m[a] * n_m[b]).sum(1)))
        sym(curv[a], curv[b])
        # distance of each end to the other's plane at this scale, in spacings
        sym(np.abs(((q - cen[a]) * n_m[a]).sum(1)) / s, np.abs(((p - cen[b]) * n_m[b]).sum(1)) / s)
    hand = (1.0 - dot) + cdiff + SuperpointParams().offset_weight * (off_i + off_j) / (2.0 * s)
    f.append(hand)
    return np.stack(f, axis=1).astype(np.float32), hand.astype(np.float32)


def prepare(name: str, xyz: np.ndarray, rgb: np.ndarray, instance: np.ndarray) -> Cloud:
    """The shipped segmentation, the kNN graph and the edge features of one cloud."""
    p = SuperpointParams()
    res = oversegment_detailed(xyz, rgb, params=p, num_threads=1)
    xyz = np.asarray(xyz, dtype=np.float32)
    s = float(res.spacing)
    a, b = knn_edges(xyz, cKDTree(xyz), p.knn, p.max_edge * s)
    feats, hand = edge_features(xyz, rgb, np.asarray(res.normals, dtype=np.float32), s, a, b)
    ia, ib = instance[a], instance[b]
    same = np.where((ia < 0) | (ib < 0), -1, (ia == ib).astype(np.int8)).astype(np.int8)
    room = name.split("_")[0]
    return Cloud(name, room, instance, np.asarray(res.labels), a, b, hand, feats, same)


def fh(c: Cloud, w: np.ndarray, k: float, min_size: int) -> tuple[np.ndarray, int]:
    """Plain FH on the cloud's edges with weights ``w``: (labels, segment count)."""
    lab, ns = _C.segment_graph(torch.from_numpy(c.a), torch.from_numpy(c.b), torch.from_numpy(w.astype(np.float32)),
                               int(c.instance.size), float(k), int(min_size), 1)
    return lab.numpy(), int(ns)


def matched(c: Cloud, w: np.ndarray, min_size: int, target: int) -> tuple[float, int] | None:
    """(ASA, count) of FH with ``min_size`` and ``k_thresh`` bisected (log scale) to ``target`` segments,
    or None when no k reaches within ``COUNT_TOL`` (min_size alone leaves too few segments)."""
    lo, hi = 1e-6, 1e3  # count falls as k grows
    lab, ns = fh(c, w, lo, min_size)
    if ns < target * (1 - COUNT_TOL):
        return None
    best = (abs(ns - target), lab, ns)
    for _ in range(40):
        mid = float(np.sqrt(lo * hi))
        lab, ns = fh(c, w, mid, min_size)
        if abs(ns - target) < best[0]:
            best = (abs(ns - target), lab, ns)
        if abs(ns - target) <= COUNT_TOL * target:
            break
        lo, hi = (mid, hi) if ns > target else (lo, mid)
    if best[0] > COUNT_TOL * target:
        return None
    return achievable_segmentation_accuracy(best[1], c.instance), best[2]


def train_predict(train: list[Cloud], test: list[Cloud], seed: int) -> dict[str, list[np.ndarray]]:
    """Fit both classifiers on labelled edges of ``train`` (a sample), P(different) for ``test``'s edges."""
    x = np.concatenate([c.feats[c.same >= 0] for c in train])
    y = np.concatenate([1 - c.same[c.same >= 0] for c in train])  # 1 = different instance
    rng = np.random.default_rng(seed)
    if x.shape[0] > TRAIN_EDGES:
        pick = rng.choice(x.shape[0], TRAIN_EDGES, replace=False)
        x, y = x[pick], y[pick]
    models = {
        "logreg": make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=300)),
        "hgb": HistGradientBoostingClassifier(max_iter=150, max_leaf_nodes=31, learning_rate=0.1,
                                              early_stopping=False, random_state=seed),
    }
    out: dict[str, list[np.ndarray]] = {}
    for name, m in models.items():
        m.fit(x, y)
        out[name] = [m.predict_proba(c.feats)[:, 1].astype(np.float32) for c in test]
    return out


def hand_quantiles(p: np.ndarray, hand: np.ndarray) -> np.ndarray:
    """The learned ordering with the hand weights' values: edge of rank r gets the r-th smallest hand weight.

    FH compares an edge with Int(C) + k / |C|, so the scale of the weights matters, not only their
    order: the hand weights are near 0 on flat surfaces (segments grow there at any k), a classifier's
    P(different) is not (every edge pays its prior), which leaves the segments to the min-size pass.
    Mapping onto the hand weights' distribution keeps FH's working range and tests the ordering alone."""
    out = np.empty_like(hand)
    out[np.argsort(p, kind="stable")] = np.sort(hand)
    return out


def edge_auc(p: np.ndarray, same: np.ndarray) -> float:
    """ROC AUC of P(different) on the labelled edges (rank form, no sklearn.metrics import needed)."""
    keep = same >= 0
    y, s = 1 - same[keep], p[keep]
    r = np.argsort(np.argsort(s, kind="stable"), kind="stable") + 1.0
    n1, n0 = y.sum(), (1 - y).sum()
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2) / max(n1 * n0, 1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--real-dir", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "real")
    args = ap.parse_args()
    t0 = time.perf_counter()
    clouds = [prepare(*cl) for cl in load_clouds(args.real_dir)]
    print(f"prepared {len(clouds)} clouds in {time.perf_counter() - t0:.0f} s "
          f"({clouds[0].feats.shape[1]} edge features)", flush=True)
    weights: dict[str, dict[str, np.ndarray]] = {c.name: {"hand FH": c.hand_w} for c in clouds}
    auc: dict[str, dict[str, float]] = {c.name: {"hand FH": edge_auc(c.hand_w, c.same)} for c in clouds}
    for c in clouds:  # a bound, not a method: the held-out labels themselves, hand weights breaking ties
        weights[c.name]["oracle FH"] = (c.same == 0) + 0.1 * c.hand_w / max(float(c.hand_w.max()), 1e-9)
    for fold, room in enumerate(sorted({c.room for c in clouds})):
        test = [c for c in clouds if c.room == room]
        train = [c for c in clouds if c.room != room]
        pred = train_predict(train, test, seed=fold)
        for name, ps in pred.items():
            for c, pc in zip(test, ps):
                weights[c.name][f"{name} FH"] = pc
                weights[c.name][f"{name} FH, hand quantiles"] = hand_quantiles(pc, c.hand_w)
                weights[c.name][f"hand + {name} FH"] = c.hand_w + pc
                auc[c.name][f"{name} FH"] = edge_auc(pc, c.same)
        print(f"fold {room}: trained on {len(train)} clouds, {time.perf_counter() - t0:.0f} s", flush=True)

    methods = ["hand FH", "logreg FH", "hgb FH", "logreg FH, hand quantiles", "hgb FH, hand quantiles",
               "hand + hgb FH", "oracle FH"]
    # res[method][min_size][cloud] = (asa, count) or None
    res: dict[str, dict[int, dict[str, tuple[float, int] | None]]] = {m: {} for m in methods}
    for m in methods:
        for ms in MIN_SIZES:
            res[m][ms] = {c.name: matched(c, weights[c.name][m], ms, int(c.shipped.max()) + 1) for c in clouds}
    print(f"segmented in {time.perf_counter() - t0:.0f} s\n", flush=True)

    shipped = {c.name: achievable_segmentation_accuracy(c.shipped, c.instance) for c in clouds}

    def mean_of(m: str, ms: int) -> float:
        vals = [v[0] for v in res[m][ms].values() if v is not None]
        return float(np.mean(vals)) if len(vals) == len(clouds) else -1.0

    fixed = {m: max(MIN_SIZES, key=lambda ms: mean_of(m, ms)) for m in methods}
    print("held-out ASA at the shipped segment count (FH k_thresh bisected per cloud; "
          f"min_size fixed per method, chosen by mean ASA over these clouds: {fixed})")
    head = ["cloud", "pts/seg", "shipped"] + [f"{m} (ms {fixed[m]})" for m in methods] + ["edge AUC hand/lr/hgb"]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    cols: dict[str, list[float]] = {h: [] for h in head[2:-1]}
    best: dict[str, list[float]] = {m: [] for m in methods}
    for c in clouds:
        n_seg = int(c.shipped.max()) + 1
        row = [c.name, f"{c.instance.size / n_seg:.0f}", f"{shipped[c.name]:.4f}"]
        cols["shipped"].append(shipped[c.name])
        for m in methods:
            v = res[m][fixed[m]][c.name]
            row.append("-" if v is None else f"{v[0]:.4f}")
            cols[f"{m} (ms {fixed[m]})"].append(np.nan if v is None else v[0])
        for m in methods:
            vals = [(res[m][ms][c.name][0], ms) for ms in MIN_SIZES if res[m][ms][c.name] is not None]
            best[m].append(max(vals)[0] if vals else np.nan)
        row.append(" / ".join(f"{auc[c.name][m]:.3f}" for m in methods[:3]))
        print("| " + " | ".join(row) + " |")
    print("| **min** | | " + " | ".join(f"{np.nanmin(v):.4f}" for v in cols.values()) + " | |")
    print("| **mean** | | " + " | ".join(f"{np.nanmean(v):.4f}" for v in cols.values()) + " | |")
    print("\nper-cloud best min_size of the grid (optimistic: picked on the held-out labels), min / mean:")
    for m in methods:
        print(f"  {m}: {np.nanmin(best[m]):.4f} / {np.nanmean(best[m]):.4f}")
    print("\nper min_size, mean ASA over the clouds (-1: some cloud could not reach the count):")
    for m in methods:
        print(f"  {m}: " + ", ".join(f"ms {ms} {mean_of(m, ms):.4f}" for ms in MIN_SIZES))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
