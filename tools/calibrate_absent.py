#!/usr/bin/env python3
"""Calibrate and measure how a checkpoint refuses sentences naming absent objects.

    # 1. records of calibration rooms and scans (not the measured ones), then fit and store the
    #    per-class thresholds of the probability class check into the checkpoint:
    PYTHONPATH=. python tools/calibrate_absent.py --checkpoint CKPT --synth-dir CALIB_DIR --rooms 30 \
        --real-dir ../shared/real --scans ... --records calib.json
    PYTHONPATH=. python tools/calibrate_absent.py --checkpoint CKPT --calibration-records calib.json --write CKPT
    # 2. measure on held-out rooms and scans (the checkpoint's thresholds, or --calibration-records):
    PYTHONPATH=. python tools/calibrate_absent.py --checkpoint CKPT --synth-dir DIR --rooms 30 \
        --real-dir ../shared/real --scans ... [--records out.json | --from-records out.json]

Answers every sentence once with the refusal checks off (``inference.absent_class_points`` 0,
``absent_class_prob`` empty, ``unknown_object`` answer, ``absent_score`` 0) and records what each
check looks at: the best score, the named target (``bqnet_model.text.named_objects``), the points
the semantic head gives that class in the map, its presence scores (``absence.class_presence``),
the answer's IoU with the ground truth. Every setting of the table is then the library's rule
(``bqnet_model.pipeline.absence``) applied to those records. ``fit_class_thresholds`` turns
calibration records into ``inference.absent_class_prob`` (its docstring says how).

Sentences, all built deterministically from the given ones:

* ``present``: the sentence as written (synthetic ScanRefer-style RES sentences and
  Multi3DRefer-style GRES sentences with at least one target; real Sr3D / Nr3D / ScanRefer);
* ``absent-class``: the target noun swapped for a vocabulary class absent from the room (the
  ground truth's classes; floor and wall never), e.g. "the chair next to the desk" -> "the bathtub
  next to the desk";
* ``absent-oov``: the target noun swapped for an object no vocabulary holds ("the giraffe next to
  the desk"), and two fixed sentences per map ("the helicopter", "the giraffe next to the door");
* ``absent-zero`` (GRES, synthetic): Multi3DRefer's own zero-target sentences.

Per setting: ``refused`` = share of absent sentences answered found=false; ``found`` = share of
present sentences still found; ``Acc@0.5`` = share of present sentences found with IoU > 0.5
(RES: the answer's point IoU with the target; GRES: the union's IoU with the targets' union).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import sys
import zlib
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from bqnet_model.data.classes import CLASS_ID, CLASSES
from bqnet_model.model.config import InferenceConfig
from bqnet_model.pipeline.absence import (PRESENCE_TOP_POINTS, answer_probability, answer_share, class_points,
                                          class_presence, parse_named)
from bqnet_model.text.named_objects import CLASS_NAMES, OTHER_CLASS

OOV_NOUNS = ("giraffe", "helicopter", "elephant", "submarine", "tractor", "canoe", "dinosaur", "rocket")
FIXED_OOV = ("the helicopter", "the giraffe next to the door")
NEVER_SWAPPED = {CLASS_ID["floor"], CLASS_ID["wall"]}
SCORES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
CLASS_POINTS = (0, 1, 50, 200, 1000)
# presence statistics recorded per sentence (top-k points of p(c)); the library's k always among them
TOP_POINTS = tuple(sorted({50, 1000, 3000, PRESENCE_TOP_POINTS}))
TOP_SHARES = (0.005, 0.02)  # ... and top shares of the map's points
KEEP = 0.98  # the threshold starts from the lower 1 - KEEP quantile of a class's present sentences
MIN_SENTENCES = 10  # fewer present calibration sentences of a class: no threshold for it
MIN_DOMAIN = 5  # fewer in one domain (synthetic / real): that domain's quantile is not used
MARGIN = 0.5  # the threshold is this share of the quantile (chosen by --cross-check on calibration data)
MARGINS = (1.0, 0.8, 0.7, 0.6, 0.5, 0.4)  # what --cross-check compares
MIN_REFUSED = 0.25  # a threshold refusing fewer of the class's absent sentences is not worth its cost
_INF = InferenceConfig()
_DEFAULT = (_INF.absent_score, _INF.absent_class_points, _INF.unknown_object, False)  # the library's defaults


def _pick(key: str, options: Sequence[Any]) -> Any:
    """A deterministic choice among ``options`` for one sentence."""
    return options[zlib.crc32(key.encode()) % len(options)]


def _swap(text: str, key: str, absent: Sequence[int]) -> list[tuple[str, str]]:
    """(kind, sentence) variants of ``text`` with its parsed target noun swapped (module docstring)."""
    target = parse_named(text).target
    if target is None:
        return []
    a, b = target.span
    out = [("absent-oov", text[:a] + _pick(key, OOV_NOUNS) + text[b:])]
    if absent:
        out.append(("absent-class", text[:a] + CLASS_NAMES[CLASSES[_pick(key, absent)]][0] + text[b:]))
    return out


def _iou(pred: np.ndarray, gt: np.ndarray) -> float:
    union = int((pred | gt).sum())
    return 1.0 if union == 0 else float((pred & gt).sum()) / union


def _records(seg: Any, cache: Any, items: Iterable[tuple[str, str, str, np.ndarray | None]], n: int,
             where: str, map_id: str) -> list[dict[str, Any]]:
    """Answer (task, kind, text, gt mask or None) items over one prepared map."""
    items = list(items)
    counts = class_points(cache)
    presence: dict[str, np.ndarray] = {}
    if cache.sp_prob is not None:
        w = cache.sp_weights
        presence = {f"k{k}": class_presence(cache.sp_prob, w, k) for k in TOP_POINTS}
        presence.update({f"f{q:g}": class_presence(cache.sp_prob, w, q * float(w.sum())) for q in TOP_SHARES})
    out = []
    for task in ("res", "gres"):
        mine = [it for it in items if it[0] == task]
        if not mine:
            continue
        for (task_, kind, text, gt), r in zip(mine, seg.query(cache, [it[2] for it in mine], task=task)):
            pred = np.zeros(n, dtype=bool)
            pred[r.point_indices] = True
            target = parse_named(text).target
            cid = -2 if target is None else target.class_id
            out.append(dict(
                where=where, map=map_id, task=task, kind=kind, text=text, found=bool(r.found),
                score=max((float(o.score) for o in r.objects), default=0.0),
                iou=None if gt is None else _iou(pred, gt), target_class=cid,
                class_points=(None if counts is None or not 0 <= cid < OTHER_CLASS else float(counts[cid])),
                share=(answer_share(cache, r.point_indices, cid) if 0 <= cid < OTHER_CLASS else None),
                presence=({k: float(v[cid]) for k, v in presence.items()}
                          if presence and 0 <= cid < OTHER_CLASS else None),
                mask_prob=(answer_probability(cache, r.point_indices, cid)
                           if cache.sp_prob is not None and 0 <= cid < OTHER_CLASS else None),
            ))
    return out


def synthetic_records(seg: Any, synth_dir: Path, rooms: int) -> list[dict[str, Any]]:
    """Records of the held-out synthetic rooms (the first ``rooms`` of the folder)."""
    files = sorted(synth_dir.glob("*.npz"))[:rooms]
    res = json.loads((synth_dir / "val_scanrefer.json").read_text())
    gres = json.loads((synth_dir / "val_multi3drefer.json").read_text())
    out: list[dict[str, Any]] = []
    for k, f in enumerate(files):
        room = f.stem
        z = np.load(f)
        inst, sem = z["instance"], z["semantic"]
        absent = [c for c in range(len(CLASSES)) if c not in NEVER_SWAPPED and not (sem == c).any()]
        items: list[tuple[str, str, str, np.ndarray | None]] = []
        for a in (a for a in res if a["scene_id"] == room):
            gt = inst == int(a["object_id"])
            items.append(("res", "present", a["description"], gt))
            items += [("res", kind, t, None) for kind, t in _swap(a["description"], f"{room}/{a['ann_id']}", absent)]
        for a in (a for a in gres if a["scene_id"] == room):
            ids = [int(i) for i in a["object_ids"]]
            gt = np.isin(inst, ids)
            if not ids:
                items.append(("gres", "absent-zero", a["description"], gt))
                continue
            items.append(("gres", "present", a["description"], gt))
            items += [("gres", kind, t, None)
                      for kind, t in _swap(a["description"], f"{room}/g{a['ann_id']}", absent)]
        items += [(task, "absent-oov", t, None) for t in FIXED_OOV for task in ("res", "gres")]
        cache = seg.prepare(z["xyz"], z["rgb"])
        out += _records(seg, cache, items, len(inst), "synthetic", room)
        print(f"  synthetic {k + 1}/{len(files)} {room}: {len(items)} sentences", file=sys.stderr, flush=True)
    return out


def real_records(seg: Any, real_dir: Path, scans: Sequence[str] | None,
                 generated: bool = False) -> list[dict[str, Any]]:
    """Records of the real scans (points as ``eval_real`` takes them, online superpoints).

    ``generated``: also the grammar sentences built from each scan's own labels (single-target
    ones, checked on its boxes: ``real_training.generated_entries``, as real training data gets
    them), so that every class the scan holds has real present sentences, not only the classes
    its human sentences name. For calibration scans; measured scans keep their real sentences."""
    from bqnet_model.eval_real import check_real_dir, load_real_scene, load_real_sentences

    layout = check_real_dir(real_dir)
    by_scan: dict[str, list[Any]] = collections.defaultdict(list)
    for a in load_real_sentences(layout):
        by_scan[a.scene_id].append(a)
    todo = [s for s in (scans or layout.scans) if by_scan.get(s) or (generated and s in layout.scans)]
    out: list[dict[str, Any]] = []
    for k, scan in enumerate(todo):
        sc = load_real_scene(layout, scan).scene
        present_cls = set(np.unique(sc.semantic[sc.semantic >= 0]).tolist())
        absent = [c for c in range(len(CLASSES)) if c not in NEVER_SWAPPED and c not in present_cls]
        # (text, key for the deterministic swap, target object id): the human sentences, then the label ones
        sentences = [(a.description, f"{scan}/{a.extra.get('source')}/{a.ann_id}", int(a.object_ids[0]))
                     for a in by_scan[scan]]
        if generated:
            from bqnet_synth.real_training import generated_entries

            sentences += [(res["description"], f"{scan}/generated/{j}", int(res["object_id"]))
                          for j, (res, _) in enumerate(generated_entries(sc))
                          if res is not None]  # several targets: no RES entry
        items: list[tuple[str, str, str, np.ndarray | None]] = []
        for text, key, object_id in sentences:
            gt = sc.instance == object_id
            if not gt.any():
                continue  # a target without points in this cloud
            for task in ("res", "gres"):
                items.append((task, "present", text, gt))
                items += [(task, kind, t, None) for kind, t in _swap(text, key, absent)]
        items += [(task, "absent-oov", t, None) for t in FIXED_OOV for task in ("res", "gres")]
        cache = seg.prepare(sc.xyz, sc.rgb)
        out += _records(seg, cache, items, len(sc.xyz), "real", scan)
        print(f"  real {k + 1}/{len(todo)} {scan}: {len(items)} sentences", file=sys.stderr, flush=True)
    return out


def presence_of(r: dict[str, Any], top_points: int = PRESENCE_TOP_POINTS) -> float | None:
    """The record's presence score of its target class as the library computes it, or None."""
    return None if r.get("presence") is None else r["presence"].get(f"k{top_points}")


def refused(r: dict[str, Any], score: float, points: int, unknown: str,
            class_prob: dict[str, float] | None = None) -> bool:
    """Would the library refuse this record under the setting? (``absence.apply_checks``'s order.)"""
    if not r["found"]:
        return True
    cid = r["target_class"]
    if cid == -1 and unknown == "refuse":
        return True
    if points > 0 and r["class_points"] is not None and r["class_points"] < points:
        return True
    if class_prob and 0 <= cid < OTHER_CLASS:
        tau, presence = float(class_prob.get(CLASSES[cid], 0.0)), presence_of(r)
        if tau > 0 and presence is not None and presence < tau:
            return True
    return score > 0 and r["score"] < score


def fit_class_thresholds(records: Sequence[dict[str, Any]], *, keep: float = KEEP, min_sentences: int = MIN_SENTENCES,
                         min_domain: int = MIN_DOMAIN, min_refused: float = MIN_REFUSED, margin: float = MARGIN
                         ) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Per class, the presence threshold for its present sentences, and the per-class report.

    The threshold is ``margin`` times the lower ``1 - keep`` quantile of the present sentences'
    presence scores, taken per domain (``where``: synthetic rooms, real scans) that has at least
    ``min_domain`` of them, and the lowest of those. The quantile alone keeps ``keep`` of the
    calibration sentences but fewer on new maps: a class's lowest presence scores come from a few
    objects, and new maps bring others (``--cross-check`` measures it). A head is far less sure on real scans than on the rooms it was
    mostly trained on, and a threshold from the rooms alone would refuse most real present
    objects. A class gets a threshold (it is *trusted*) only with at least ``min_sentences``
    present sentences and when the threshold refuses at least ``min_refused`` of the absent-class
    sentences naming it: where the head's probabilities do not separate present from absent, the
    check would cost present answers for nothing. Every record given counts (calibrate on data
    that the measurement does not use)."""
    present: dict[int, dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    absent: dict[int, list[float]] = collections.defaultdict(list)
    for r in records:
        cid, v = r["target_class"], presence_of(r)
        if v is None or not 0 <= cid < OTHER_CLASS:
            continue
        if r["kind"] == "present":
            present[cid][r["where"]].append(v)
        elif r["kind"] == "absent-class":
            absent[cid].append(v)
    out: dict[str, float] = {}
    report = []
    for cid in sorted(set(present) | set(absent)):
        by_domain = {d: np.asarray(v) for d, v in present[cid].items()}
        p = np.concatenate(list(by_domain.values())) if by_domain else np.zeros(0)
        quantiles = [float(np.quantile(v, 1.0 - keep, method="lower")) for v in by_domain.values()
                     if v.size >= min_domain]
        tau = margin * min(quantiles, default=0.0)
        a = np.asarray(absent[cid])
        gain = float((a < tau).mean()) if a.size else 0.0
        trusted = p.size >= min_sentences and gain >= min_refused and tau > 0
        if trusted:
            out[CLASSES[cid]] = float(np.floor(tau * 1e4) / 1e4)  # rounded down: keeps at least ``keep``
        report.append(dict(cls=CLASSES[cid], n_present=int(p.size), n_absent=int(a.size), tau=tau,
                           kept=float((p >= tau).mean()) if p.size else float("nan"), refused=gain, trusted=trusted,
                           domains=", ".join(f"{d} {v.size}" for d, v in sorted(by_domain.items()))))
    return out, report


def _maps(records: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The records grouped by map, in order (each map's records end with its fixed OOV sentences)."""
    maps: list[list[dict[str, Any]]] = []
    cur: list[dict[str, Any]] = []
    for r in records:
        if cur and "map" in r and cur[-1].get("map") != r["map"]:
            maps.append(cur)
            cur = []
        cur.append(r)
        if "map" not in r and r["text"] == FIXED_OOV[-1] and r["task"] == "gres":
            maps.append(cur)
            cur = []
    return maps + ([cur] if cur else [])


def cross_check(records: Sequence[dict[str, Any]], base: Setting, margins: Sequence[float] = MARGINS,
                keep: float = KEEP) -> list[dict[str, Any]]:
    """Per margin: fit on every other map of the calibration records, measure on the rest, and
    the other way round; the mean change (points) of absent-class refused and present found per
    (where, task) against ``base`` (the checkpoint's other checks) alone. This chooses ``MARGIN`` without
    looking at the held-out maps."""
    maps = _maps(records)
    halves = []
    for where in sorted({m[0]["where"] for m in maps}):
        mine = [m for m in maps if m[0]["where"] == where]
        halves.append(([r for m in mine[0::2] for r in m], [r for m in mine[1::2] for r in m]))
    a = [r for h in halves for r in h[0]]
    b = [r for h in halves for r in h[1]]
    rows = []
    for margin in margins:
        deltas: dict[tuple[str, str], list[tuple[float, float]]] = collections.defaultdict(list)
        for fit_on, test_on in ((a, b), (b, a)):
            class_prob, _ = fit_class_thresholds(fit_on, keep=keep, margin=margin)
            off, on = (*base[:3], False), (*base[:3], True)
            got = {(r["where"], r["task"], r["prob"]): r for r in table(test_on, [off, on], class_prob)}
            for where, task, prob in got:
                if prob:
                    new, old = got[(where, task, True)], got[(where, task, False)]
                    deltas[(where, task)].append((new["refused absent-class"] - old["refused absent-class"],
                                                  new["found"] - old["found"]))
        for (where, task), d in sorted(deltas.items()):
            rows.append(dict(margin=margin, where=where, task=task, refused=100 * float(np.mean([x for x, _ in d])),
                             found=100 * float(np.mean([y for _, y in d]))))
    return rows


def format_fit(report: Sequence[dict[str, Any]]) -> str:
    """The per-class calibration as a markdown table."""
    lines = ["| class | present (per domain) | absent | threshold | present kept | absent refused | trusted |",
             "|---|---|---|---|---|---|---|"]
    for r in report:
        lines.append(f"| {r['cls']} | {r['n_present']} ({r['domains']}) | {r['n_absent']} | {r['tau']:.3f} "
                     f"| {100 * r['kept']:.1f} % | {100 * r['refused']:.1f} % | {'yes' if r['trusted'] else 'no'} |")
    return "\n".join(lines)


Setting = tuple[float, int, str, bool]  # absent_score, absent_class_points, unknown_object, absent_class_prob on


def table(records: Sequence[dict[str, Any]], settings: Iterable[Setting],
          class_prob: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """One row per (where, task, setting): refused share per absent kind, found and Acc@0.5 of
    present. A setting's last entry turns on the probability class check with ``class_prob``."""
    rows = []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = collections.defaultdict(list)
    for r in records:
        groups[(r["where"], r["task"])].append(r)
    for (where, task), recs in sorted(groups.items()):
        present = [r for r in recs if r["kind"] == "present"]
        kinds = sorted({r["kind"] for r in recs} - {"present"})
        for score, points, unknown, prob in settings:
            rule = dict(score=score, points=points, unknown=unknown, class_prob=class_prob if prob else None)
            row: dict[str, Any] = dict(where=where, task=task, score=score, points=points, unknown=unknown, prob=prob)
            for kind in kinds:
                mine = [r for r in recs if r["kind"] == kind]
                row[f"refused {kind}"] = float(np.mean([refused(r, **rule) for r in mine]))
                row[f"n {kind}"] = len(mine)
            kept = [not refused(r, **rule) for r in present]
            row["found"] = float(np.mean(kept)) if present else float("nan")
            row["Acc@0.5"] = float(np.mean([k and r["iou"] > 0.5 for k, r in zip(kept, present)])) if present \
                else float("nan")
            row["n present"] = len(present)
            rows.append(row)
    return rows


def format_table(rows: Sequence[dict[str, Any]], default: Setting | None = None) -> str:
    """Markdown, one block per (where, task); ``default`` (the checkpoint's setting) is marked."""
    lines: list[str] = []
    last = None
    for row in rows:
        key = (row["where"], row["task"])
        kinds = sorted(k[len("refused "):] for k in row if k.startswith("refused "))
        if key != last:
            counts = ", ".join(f"{row[f'n {k}']} {k}" for k in kinds)
            lines += ["", f"{row['where']} {row['task'].upper()} ({row['n present']} present, {counts})", "",
                      "| absent_score | absent_class_points | unknown_object | absent_class_prob | "
                      + " | ".join(f"refused {k}" for k in kinds) + " | found (present) | Acc@0.5 (present) |",
                      "|---|---|---|---|" + "---|" * (len(kinds) + 2)]
            last = key
        setting = (row["score"], row["points"], row["unknown"], row["prob"])
        mark = " (default)" if setting == default else ""
        cells = [f"{row['score']:g}{mark}", str(row["points"]), row["unknown"], "on" if row["prob"] else "off"]
        cells += [f"{100 * row[f'refused {k}']:.1f} %" for k in kinds]
        cells += [f"{100 * row['found']:.1f} %", f"{100 * row['Acc@0.5']:.1f} %"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def default_settings(default: Setting = _DEFAULT, with_prob: bool = False) -> list[Setting]:
    """The checkpoint's setting, each check alone over its range, then the class checks with each
    score threshold (the probability check only ``with_prob``: when there are thresholds)."""
    out = [default, *((s, 0, "answer", False) for s in SCORES)]
    out += [(0.0, p, "answer", False) for p in CLASS_POINTS[1:]]
    out += [(s, 0, "refuse", False) for s in SCORES]
    out += [(s, p, "refuse", False) for p in (50, 200) for s in SCORES]
    if with_prob:
        out += [(0.0, 0, "answer", True), *((s, 0, "refuse", True) for s in SCORES)]
    return list(dict.fromkeys(out))


def checkpoint_setting(path: str | Path) -> tuple[Setting, dict[str, float]]:
    """The absence setting and class thresholds a checkpoint stores (library defaults for what it lacks)."""
    from bqnet_model.checkpoint import read_checkpoint, stored_config

    inf = stored_config(read_checkpoint(path)).inference
    return (inf.absent_score, inf.absent_class_points, inf.unknown_object, bool(inf.absent_class_prob)), \
        dict(inf.absent_class_prob)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--synth-dir", type=Path, default=None, help="synthetic rooms (npz + val_*.json)")
    ap.add_argument("--rooms", type=int, default=30, help="first N rooms of --synth-dir")
    ap.add_argument("--real-dir", type=Path, default=None, help="real-data folder (bqnet_model.eval_real)")
    ap.add_argument("--scans", nargs="*", default=None)
    ap.add_argument("--real-generated", action="store_true",
                    help="real scans: also the grammar sentences built from their labels (calibration "
                         "scans: real present sentences for every class they hold)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--records", type=Path, default=None, help="write the per-sentence records (JSON) here")
    ap.add_argument("--from-records", type=Path, nargs="+", default=None,
                    help="tabulate saved records (one or more files) instead of running")
    ap.add_argument("--calibration-records", type=Path, nargs="+", default=None,
                    help="fit the per-class thresholds (inference.absent_class_prob) on these records (calibration "
                         "rooms and scans, not the measured ones) instead of using the checkpoint's")
    ap.add_argument("--keep", type=float, default=KEEP, help="quantile of the present calibration sentences kept")
    ap.add_argument("--margin", type=float, default=MARGIN, help="threshold = margin x that quantile")
    ap.add_argument("--cross-check", action="store_true",
                    help="with --calibration-records: fit on half of their maps, measure on the other half, per margin")
    ap.add_argument("--write", type=Path, default=None,
                    help="write a copy of --checkpoint with the fitted thresholds (needs --calibration-records; "
                         "the same path as --checkpoint updates it in place)")
    args = ap.parse_args(argv)
    if args.write is not None and args.calibration_records is None:
        ap.error("--write stores thresholds fitted on --calibration-records: give them")
    default, class_prob = checkpoint_setting(args.checkpoint)
    if args.calibration_records is not None:
        calib = [r for p in args.calibration_records for r in json.loads(p.read_text())]
        if args.cross_check:
            print(f"# cross-check on the calibration records (keep {args.keep:g}): change in points against "
                  f"absent_score {default[0]:g} alone\n\n| margin | set | absent-class refused | present found |\n"
                  "|---|---|---|---|")
            for row in cross_check(calib, default, keep=args.keep):
                print(f"| {row['margin']:g} | {row['where']} {row['task'].upper()} | {row['refused']:+.1f} "
                      f"| {row['found']:+.1f} |")
        class_prob, report = fit_class_thresholds(calib, keep=args.keep, margin=args.margin)
        print(f"# per-class presence thresholds (keep {args.keep:g}, margin {args.margin:g}, "
              f"top {PRESENCE_TOP_POINTS} points) from "
              + ", ".join(str(p) for p in args.calibration_records))
        print(format_fit(report))
        print("inference.absent_class_prob: " + json.dumps(class_prob))
        if args.write is not None:
            from bqnet_model.checkpoint import with_inference_values

            note = (f"inference.absent_score {default[0]:g} and inference.absent_class_prob (keep {args.keep:g}, "
                    f"margin {args.margin:g}, "
                    f"{len(class_prob)} trusted classes) from tools/calibrate_absent.py "
                    f"({datetime.date.today().isoformat()}, docs/experiments/2026-12-01_absent_objects.md)")
            with_inference_values(args.checkpoint, args.write, {"absent_class_prob": class_prob}, note)
            print(f"wrote {args.write}")
            default = (*default[:3], bool(class_prob))
    if args.from_records is not None:
        records = [r for p in args.from_records for r in json.loads(p.read_text())]
    elif args.synth_dir is None and args.real_dir is None:
        if args.calibration_records is not None:
            return 0  # fitted (and written) only
        ap.error("give --synth-dir and/or --real-dir (or --from-records)")
    else:
        from bqnet_model.pipeline import Segmenter

        seg = Segmenter.from_checkpoint(args.checkpoint, device=args.device, absent_class_points=0,
                                        unknown_object="answer", absent_score=0.0, absent_class_prob={})
        if seg.model.sem_cls_head is None:
            print("note: this model has no semantic head; the class checks never refuse", file=sys.stderr)
        records = []
        if args.synth_dir is not None:
            records += synthetic_records(seg, args.synth_dir, args.rooms)
        if args.real_dir is not None:
            records += real_records(seg, args.real_dir, args.scans, generated=args.real_generated)
        if args.records is not None:
            args.records.write_text(json.dumps(records))
    present = [r for r in records if r["kind"] == "present" and r["where"] == "synthetic"]
    print(f"# absent-object calibration, {datetime.date.today().isoformat()}, checkpoint {args.checkpoint}")
    if present:
        known = np.mean([0 <= r["target_class"] < OTHER_CLASS for r in present])
        print(f"synthetic present sentences whose parsed target is a vocabulary class: {100 * known:.1f} %")
    print(format_table(table(records, default_settings(default, bool(class_prob)), class_prob), default))
    return 0


if __name__ == "__main__":
    sys.exit(main())
