#!/usr/bin/env python3
"""Parse every training/evaluation sentence once with spaCy and write a text-prep cache file.

Why: the contrastive alignment loss needs each sentence's official parse, and the GPU machine
has no spaCy. This runs where spaCy is; the file it writes (``bqnet_model.text.prep_cache``,
gzip JSON) travels with the run and is named by ``--set train.text_prep_cache=FILE``.

    python tools/pack_text_prep.py DATA_ROOT [DATA_ROOT ...] --out FILE
    python tools/pack_text_prep.py --synth N_TRAIN N_VAL [--synth-args "--styles 0.5"] [--heldout] --out FILE

Sources: every annotation file of each DATA_ROOT that the training program would find for the
train, val and heldout splits (``bqnet_model.train.data.ANNOTATION_NAMES``), plus ``--json`` files.
``--synth`` regenerates the sentences of the rooms ``tools/make_synthetic.sh OUT N_TRAIN N_VAL``
writes (same seed, splits and ``SYNTH_ARGS`` / ``SYNTH_VAL_ARGS`` / ``HELDOUT=1`` as
``--synth-args`` / ``--synth-val-args`` / ``--heldout``; room i depends only on seed, split and i)
without superpoints, a few rooms at a time in a temporary folder that is deleted: no room is kept.

Keys: each description in raw-text mode (what ``train.dataset`` synthetic / multi3drefer and every
evaluation query read); ``--scanrefer-tokens`` adds the ScanRefer-mode key of each annotation
(its joined ``token`` field, what ``train.dataset: scanrefer`` reads).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bqnet_model.data.referit import load_annotations  # noqa: E402
from bqnet_model.text.prep_cache import spacy_info, write_cache  # noqa: E402
from bqnet_model.text.prepare import prepare_text  # noqa: E402
from bqnet_model.train.data import ANNOTATION_NAMES  # noqa: E402

SPLITS = ("train", "val", "heldout")
SYNTH_CHUNK = 20  # rooms generated per temporary folder (each room's .npz is several MB)


def annotation_files(root: Path) -> list[Path]:
    """The annotation JSON files of ``root`` for every split and task, each once."""
    found: list[Path] = []
    for split in SPLITS:
        for task in ("res", "gres"):
            for name in ANNOTATION_NAMES[task]:
                p = root / name.format(split=split)
                if p.is_file() and p.resolve() not in {f.resolve() for f in found}:
                    found.append(p)
    return found


def keys_of(path: Path, scanrefer_tokens: bool) -> Iterator[tuple[str, bool]]:
    """(text, scanrefer) pairs of one annotation file, as the datasets and evaluation ask for them."""
    for a in load_annotations(path):
        yield a.description, False
        if scanrefer_tokens:
            tokens = a.extra.get("token")
            ok = isinstance(tokens, list) and tokens and all(isinstance(t, str) for t in tokens)
            yield (" ".join(tokens) if ok else a.description), True


def synth_keys(n_train: int, n_val: int, train_args: str, val_args: str, heldout: bool, seed: int,
               scanrefer_tokens: bool) -> Iterator[tuple[str, bool]]:
    """The sentences of ``make_synthetic.sh``'s rooms, regenerated chunk by chunk without superpoints."""
    from tqdm import tqdm

    from bqnet_synth.dataset import main as synth_main

    jobs = [("train", n_train, train_args), ("val", n_val, val_args)]
    if heldout:
        jobs.append(("val", n_val, train_args + " --held-out-styles"))
    bar = tqdm(total=sum(n for _, n, _ in jobs), desc="rooms", unit="room", dynamic_ncols=True)
    for split, n, extra in jobs:
        for first in range(0, n, SYNTH_CHUNK):
            count = min(SYNTH_CHUNK, n - first)
            with tempfile.TemporaryDirectory(prefix="pack_text_prep_") as tmp:
                argv = ["--out", tmp, "--scenes", str(count), "--first-index", str(first), "--split", split,
                        "--seed", str(seed), *shlex.split(extra), "--no-superpoints"]
                log = io.StringIO()
                try:
                    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                        synth_main(argv)
                except SystemExit as exc:  # argparse: a wrong --synth-args option
                    raise SystemExit(f"bqnet_synth {' '.join(argv)} failed:\n{log.getvalue()}") from exc
                for kind in ("scanrefer", "multi3drefer"):
                    yield from keys_of(Path(tmp) / f"{split}_{kind}.json", scanrefer_tokens)
            bar.update(count)
    bar.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("roots", nargs="*", type=Path, help="data folders (annotation JSON of train/val/heldout)")
    ap.add_argument("--json", action="append", type=Path, default=[], help="another annotation file (repeatable)")
    ap.add_argument("--synth", nargs=2, type=int, metavar=("N_TRAIN", "N_VAL"),
                    help="regenerate the sentences of make_synthetic.sh OUT N_TRAIN N_VAL (no rooms written)")
    ap.add_argument("--synth-args", default="", help="bqnet_synth options, as SYNTH_ARGS of make_synthetic.sh")
    ap.add_argument("--synth-val-args", default=None, help="as SYNTH_VAL_ARGS (default: --synth-args)")
    ap.add_argument("--heldout", action="store_true", help="also the held-out val wordings (HELDOUT=1)")
    ap.add_argument("--seed", type=int, default=0, help="synthetic seed (make_synthetic.sh uses 0)")
    ap.add_argument("--scanrefer-tokens", action="store_true",
                    help="also the ScanRefer-mode parse of each annotation (for train.dataset: scanrefer)")
    ap.add_argument("--out", required=True, type=Path, help="cache file to write (.json.gz)")
    args = ap.parse_args(argv)
    if not args.roots and not args.json and not args.synth:
        ap.error("give DATA_ROOT folders, --json files or --synth N_TRAIN N_VAL")
    if not str(args.out).endswith((".json.gz", ".json")):
        ap.error("--out must end in .json.gz (or .json for an uncompressed file)")

    from tqdm import tqdm

    t0 = time.perf_counter()
    files: list[Path] = list(args.json)
    for root in args.roots:
        found = annotation_files(root)
        if not found:
            ap.error(f"no annotation files in {root} (looked for {sorted(ANNOTATION_NAMES['res'])} and "
                     f"{sorted(ANNOTATION_NAMES['gres'])} of splits {SPLITS})")
        files += found
    keys: dict[tuple[str, bool], None] = {}
    for f in files:
        keys.update(dict.fromkeys(keys_of(f, args.scanrefer_tokens)))
    total_rows = len(keys)
    if args.synth:
        n_train, n_val = args.synth
        val_args = args.synth_args if args.synth_val_args is None else args.synth_val_args
        for k in synth_keys(n_train, n_val, args.synth_args, val_args, args.heldout, args.seed,
                            args.scanrefer_tokens):
            keys[k] = None
    from_synth = len(keys) - total_rows
    t_gen = time.perf_counter() - t0
    for f in files:
        print(f"read {f}")

    versions = spacy_info()  # loads spaCy once, before the timed parse
    t1 = time.perf_counter()
    prepared = []
    failed: list[str] = []
    for text, scanrefer in tqdm(keys, desc="parse", unit="sentence", dynamic_ncols=True):
        try:
            prepared.append(prepare_text(text, scanrefer=scanrefer))
        except ValueError as exc:  # cleaning leaves no words: the datasets would fail on it as well
            failed.append(f"{text!r}: {exc}")
    t_parse = time.perf_counter() - t1
    no_spans = sum(1 for p in prepared if p.problem is not None)
    n = write_cache(args.out, prepared, spacy=versions, extra={
        "sources": [str(f) for f in files], "synth": {"n_train": args.synth[0], "n_val": args.synth[1],
                                                      "args": args.synth_args, "val_args": args.synth_val_args,
                                                      "heldout": args.heldout, "seed": args.seed}
        if args.synth else None, "scanrefer_tokens": args.scanrefer_tokens})
    size = args.out.stat().st_size
    print(f"wrote {args.out}: {n} sentences ({total_rows} keys from files, {from_synth} more from --synth), "
          f"{size / 1e6:.2f} MB ({size / max(n, 1):.0f} B/sentence); {no_spans} parsed without spans "
          f"(the official pipeline's failures); spaCy {versions['spacy']} {versions['model']} "
          f"{versions['model_version']}")
    print(f"time: sentences {t_gen:.1f} s, parse {t_parse:.1f} s ({1000 * t_parse / max(len(keys), 1):.1f} ms/sentence), "
          f"total {time.perf_counter() - t0:.1f} s")
    if failed:
        print(f"{len(failed)} sentences could not be prepared at all (not in the cache):", *failed[:10], sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
