"""What ``bqnet-segment`` writes: one prepared map, every sentence answered, files per sentence.

``segment_and_write`` is the job's second half (the first, in ``bqnet_model.cli``, checks the
arguments and reads the map and the model): prepare the map once, one batched query per task,
then per sentence a coloured PLY (target highlighted, the rest dimmed, an ``instance`` field), a
PNG (top-down + oblique views) and a JSON with the numbers, and a summary line on stdout. The
demo (``bqnet_model.demo``) calls it too. ``bqnet_model.cli`` re-exports all of it.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    from bqnet_model.cli import Cloud

__all__ = [
    "PROG",
    "TASKS",
    "CliError",
    "SentenceOutput",
    "JobReport",
    "progress",
    "slugify",
    "target_colors",
    "result_to_dict",
    "segment_and_write",
    "summary_line",
]

PROG = "bqnet-segment"
TASKS = ("res", "gres")
_SLUG_MAX = 48


# Here rather than in cli.py because segment_and_write raises it too (bad task, unpreparable map)
# and this module must not import cli.py (cli.py imports it).
class CliError(Exception):
    """A user-facing error: ``main`` prints the message and exits with status 2."""



@dataclass
class SentenceOutput:
    """What one sentence produced: the answer in short and the files written for it."""

    text: str
    task: str
    found: bool
    n_objects: int
    n_points: int  # points of all targets together
    best_score: float | None
    best_centroid: list[float] | None
    ply: Path
    png: Path
    json: Path
    query_ms: float
    point_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # union, into the cloud
    reason: str = ""  # why nothing was found, when a check refused the answer ("" = no target)


@dataclass
class JobReport:
    """One run of the job: the map size, the prepare / query times and the outputs per sentence."""

    n_points: int
    prepare_ms: float
    query_ms: float
    prepare_timings_ms: dict[str, float]
    outputs: list[SentenceOutput] = field(default_factory=list)



def slugify(text: str, index: int, max_len: int = _SLUG_MAX) -> str:
    """``01_the-chair-next-to-the-desk``: numbered, lower-case ASCII letters, digits and dashes."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if len(s) > max_len:
        s = s[:max_len].rsplit("-", 1)[0] or s[:max_len]
    return f"{index:02d}_{s or 'sentence'}"


def target_colors(
    rgb: np.ndarray | None, n: int, objects_indices: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-point colours (uint8) with each target in a bright colour over a dimmed, greyish room,
    and the ``instance`` field: object rank 0..K-1 for target points, -1 for the rest. A point
    claimed by several (overlapping GRES) objects goes to the best-ranked one."""
    from bqnet_model.viz import HIGHLIGHT_COLORS

    base = np.full((n, 3), 160.0) if rgb is None else np.asarray(rgb, np.float64)
    col = 0.35 * base + 0.65 * 200.0  # dimmed
    inst = np.full(n, -1, np.int32)
    for k, idx in reversed(list(enumerate(objects_indices))):
        idx = np.asarray(idx, np.int64)
        col[idx] = HIGHLIGHT_COLORS[k % len(HIGHLIGHT_COLORS)] * 255.0
        inst[idx] = k
    return np.clip(np.rint(col), 0, 255).astype(np.uint8), inst


def result_to_dict(result: Any, task: str, n_cloud: int, *, include_indices: bool = True) -> dict[str, Any]:
    """The JSON of one ``Result``: the library's form (``bqnet_model.pipeline.results.answer_to_dict``)
    answered as ``task``, plus ``cloud_points``, the size of the cloud the indices point into."""
    from bqnet_model.pipeline.results import answer_to_dict

    data = answer_to_dict(result.text, task, result.found, result.objects, result.point_indices,
                          result.timings_ms, reason=getattr(result, "reason", "") or None,
                          include_indices=include_indices)
    if getattr(result, "warnings", None):
        data["warnings"] = list(result.warnings)
    data["cloud_points"] = int(n_cloud)
    return data


# A list of numbers as json.dumps(indent=...) spreads it over lines (strings never hold raw newlines).
_NUM_LIST = re.compile(r"\[\n\s*(-?[\d.eE+-]+(?:,\n\s*-?[\d.eE+-]+)*)\n\s*\]")


def _dump_json(data: dict[str, Any], path: Path) -> None:
    """Indented JSON with number lists kept on one line (indices stay readable in an editor)."""
    text = json.dumps(data, indent=2)
    text = _NUM_LIST.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text)
    path.write_text(text + "\n", encoding="utf-8")


def progress(msg: str, quiet: bool = False) -> None:
    """A progress line of the job on stdout, unless ``quiet``."""
    if not quiet:
        print(f"[{PROG}] {msg}", flush=True)


def _fmt_timings(t: dict[str, float]) -> str:
    return ", ".join(f"{k} {float(v):.0f}" for k, v in t.items())


def segment_and_write(
    segmenter: Any,
    cloud: Cloud,
    queries: Sequence[tuple[str, str]],
    out_dir: Path,
    *,
    title_prefix: str = "",
    meta: dict[str, Any] | None = None,
    quiet: bool = False,
    include_indices: bool = True,
    first_index: int = 1,
) -> JobReport:
    """Prepare the map once, answer every ``(sentence, task)`` (one batched query per task) and
    write ``NN_slug.ply/.png/.json`` per sentence into ``out_dir``; print a summary line each.
    ``meta`` (e.g. which model answered) is copied into every JSON."""
    from bqnet_model.ply import write_ply
    from bqnet_model.viz import Highlight, render_views

    bad = [t for _, t in queries if t not in TASKS]
    if bad:
        raise CliError(f"unknown task {bad[0]!r}; use one of {list(TASKS)}")
    n = int(cloud.xyz.shape[0])
    progress(f"preparing the map: {n:,} points from {cloud.source} "
         "(clean -> voxelize -> superpoints -> backbone -> seeds) ...", quiet)
    t0 = time.perf_counter()
    try:
        if cloud.image_features is None:
            cache = segmenter.prepare(cloud.xyz, cloud.rgb)
        else:
            cache = segmenter.prepare(cloud.xyz, cloud.rgb, image_features=cloud.image_features)
    except ValueError as exc:  # e.g. too few valid points to build a scene
        raise CliError(f"cannot prepare the map {cloud.source}: {exc}") from exc
    prepare_ms = (time.perf_counter() - t0) * 1000.0
    prep_t = {k: float(v) for k, v in dict(getattr(cache, "timings_ms", {}) or {}).items()}
    progress(f"map prepared in {prepare_ms:.0f} ms" + (f" ({_fmt_timings(prep_t)} ms)" if prep_t else ""), quiet)

    # One batched query per task, answers put back in the order the sentences came.
    answers: list[Any] = [None] * len(queries)
    query_ms = 0.0
    for task in TASKS:
        pos = [i for i, (_, t) in enumerate(queries) if t == task]
        if not pos:
            continue
        t1 = time.perf_counter()
        try:
            res = segmenter.query(cache, [queries[i][0] for i in pos], task=task)
        except ValueError as exc:  # a sentence the text encoder refuses
            raise CliError(f"cannot answer the {task.upper()} sentences: {exc}") from exc
        query_ms += (time.perf_counter() - t1) * 1000.0
        if len(res) != len(pos):
            raise RuntimeError(f"Segmenter.query returned {len(res)} results for {len(pos)} sentences")
        for i, r in zip(pos, res):
            answers[i] = r

    report = JobReport(n, prepare_ms, query_ms, prep_t)
    for j, ((text, task), r) in enumerate(zip(queries, answers)):
        stem = slugify(text, j + first_index)
        objs = list(r.objects)
        obj_idx = [np.asarray(o.point_indices, np.int64) for o in objs]
        for idx in obj_idx:
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise RuntimeError(f"point indices of {text!r} fall outside the cloud of {n} points")
        colors, inst = target_colors(cloud.rgb, n, obj_idx)
        ply_path, png_path, json_path = (out_dir / f"{stem}{ext}" for ext in (".ply", ".png", ".json"))
        write_ply(ply_path, cloud.xyz, colors, instance=inst)
        highlights = [
            Highlight(idx, np.asarray(o.box_min), np.asarray(o.box_max), f"#{k} score {float(o.score):.2f}")
            for k, (o, idx) in enumerate(zip(objs, obj_idx))
        ]
        if not r.found:
            verdict = getattr(r, "reason", "") or "no target"
        else:
            verdict = (f"{len(objs)} target{'s' if len(objs) != 1 else ''}, "
                       f"{'best ' if len(objs) > 1 else ''}score {float(objs[0].score):.2f}")
        shown = cloud.rgb if cloud.rgb is not None else np.full((n, 3), 160, np.uint8)
        render_views(cloud.xyz, shown, png_path, highlights=highlights,
                     title=f'{title_prefix}"{text}"  [{task.upper()}: {verdict}]')
        data = result_to_dict(r, task, n, include_indices=include_indices)
        data["cloud"] = cloud.source
        data["prepare_timings_ms"] = {k: round(v, 3) for k, v in prep_t.items()}
        data.update(meta or {})
        data["files"] = {"ply": ply_path.name, "png": png_path.name}
        _dump_json(data, json_path)
        best = objs[0] if objs else None
        out = SentenceOutput(
            text=text, task=task, found=bool(r.found), n_objects=len(objs),
            n_points=int(np.asarray(r.point_indices).size),
            best_score=None if best is None else float(best.score),
            best_centroid=None if best is None else list(data["objects"][0]["centroid"]),
            ply=ply_path, png=png_path, json=json_path,
            query_ms=float(dict(r.timings_ms).get("total", 0.0)) if r.timings_ms else 0.0,
            point_indices=np.asarray(r.point_indices, np.int64), reason=getattr(r, "reason", ""),
        )
        report.outputs.append(out)
        print(summary_line(out), flush=True)
    progress(f"timings: prepare {prepare_ms:.0f} ms once for the map; query {query_ms:.0f} ms for "
         f"{len(queries)} sentence(s) ({query_ms / max(len(queries), 1):.0f} ms each)", quiet)
    return report


def summary_line(o: SentenceOutput) -> str:
    """``"the chair ..." (res): found 1 object, score 0.91, centroid (1.05, 2.55, 0.45), 2,310 points -> png``."""
    head = f'"{o.text}" ({o.task}): '
    if not o.found:
        return head + f"none ({o.reason or 'no target'}) -> {o.png}"
    c = ", ".join(f"{v:.2f}" for v in (o.best_centroid or []))
    many = f"{o.n_objects} objects" if o.n_objects != 1 else "1 object"
    return head + f"found {many}, score {o.best_score:.2f}, centroid ({c}), {o.n_points:,} points -> {o.png}"

