#!/usr/bin/env bash
# Generate a synthetic train/val set in parallel: tools/make_synthetic.sh OUT N_TRAIN N_VAL [JOBS]
# Each job writes a slice (bqnet-synth --first-index) into its own folder; the slices are merged
# into OUT/*.npz + OUT/{train,val}_{scanrefer,multi3drefer}.json. Scene i depends only on
# (seed, split, i), so the result equals one sequential run.
# Sentence styles (bqnet_synth.styles) by environment: SYNTH_ARGS is passed to every bqnet-synth call
# (e.g. SYNTH_ARGS="--styles 0.5 --typo-rate 0.05"), SYNTH_VAL_ARGS replaces it for the val split
# when set (SYNTH_VAL_ARGS="" gives a val set in the grammar's plain style). HELDOUT=1 also writes
# OUT/heldout_{scanrefer,multi3drefer}.json: the val rooms' sentences reworded with the held-out
# word pool only (--held-out-styles; the same rooms and claims as val, other wordings).
set -euo pipefail
OUT=$1; NTRAIN=$2; NVAL=$3; JOBS=${4:-$(nproc)}; PY=${PY:-python3}
SYNTH_ARGS=${SYNTH_ARGS:-}; SYNTH_VAL_ARGS=${SYNTH_VAL_ARGS-$SYNTH_ARGS}; HELDOUT=${HELDOUT:-0}
# one thread per job: with many jobs, numpy's thread pools would oversubscribe the cores
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$OUT/parts"
gen() {  # split n part-name extra-args (word-split on purpose: several options)
  local split=$1 n=$2 name=$3 extra=$4 per=$(( ($2 + JOBS - 1) / JOBS ))
  for ((k = 0; k * per < n; k++)); do
    local first=$((k * per)) cnt=$(( n - k * per < per ? n - k * per : per ))
    # shellcheck disable=SC2086
    $PY -m bqnet_synth --out "$OUT/parts/$name$k" --scenes $cnt --first-index $first --split $split --seed 0 $extra > "$OUT/parts/$name$k.log" 2>&1 &
  done
  wait
}
gen train "$NTRAIN" train "$SYNTH_ARGS"
gen val "$NVAL" val "$SYNTH_VAL_ARGS"
# The held-out set re-generates the val rooms (same seeds, so the same rooms and claims) without
# superpoints: only its JSON is kept, pointing at the val scenes.
if [ "$HELDOUT" = 1 ]; then gen val "$NVAL" heldout "$SYNTH_ARGS --held-out-styles --no-superpoints"; fi
$PY - "$OUT" <<'PYEOF'
import json, shutil, sys
from pathlib import Path
out = Path(sys.argv[1])
for name, split in (("train", "train"), ("val", "val"), ("heldout", "val")):
    parts = sorted(out.glob(f"parts/{name}*/"), key=lambda p: int(p.name[len(name):]))
    if not parts:
        continue
    for kind in ("scanrefer", "multi3drefer"):
        rows = []
        for part in parts:
            rows += json.loads((part / f"{split}_{kind}.json").read_text())
        (out / f"{name}_{kind}.json").write_text(json.dumps(rows))
        styles = {}
        for r in rows:
            styles[r.get("style", "plain")] = styles.get(r.get("style", "plain"), 0) + 1
        print(f"{name} {kind}: {len(rows)} sentences, per style {json.dumps(dict(sorted(styles.items())))}")
for npz in out.glob("parts/*/*.npz"):
    if npz.parent.name.startswith("heldout"):
        continue  # the val rooms again
    shutil.move(str(npz), out / npz.name)
print(len(list(out.glob("*.npz"))), "scenes")
PYEOF
rm -rf "$OUT/parts"
