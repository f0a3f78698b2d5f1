#!/usr/bin/env bash
# Generate a synthetic train/val set in parallel: tools/make_synthetic.sh OUT N_TRAIN N_VAL [JOBS]
# Each job writes a slice (bqnet-synth --first-index) into its own folder; the slices are merged
# into OUT/*.npz + OUT/{train,val}_{scanrefer,multi3drefer}.json. Scene i depends only on
# (seed, split, i), so the result equals one sequential run.
set -euo pipefail
OUT=$1; NTRAIN=$2; NVAL=$3; JOBS=${4:-$(nproc)}; PY=${PY:-python3}
# one thread per job: with many jobs, numpy's thread pools would oversubscribe the cores
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$OUT/parts"
gen() {  # split n
  local split=$1 n=$2 per=$(( ($2 + JOBS - 1) / JOBS ))
  for ((k = 0; k * per < n; k++)); do
    local first=$((k * per)) cnt=$(( n - k * per < per ? n - k * per : per ))
    $PY -m bqnet_synth --out "$OUT/parts/$split$k" --scenes $cnt --first-index $first --split $split --seed 0 > "$OUT/parts/$split$k.log" 2>&1 &
  done
  wait
}
gen train "$NTRAIN"
gen val "$NVAL"
$PY - "$OUT" <<'PYEOF'
import json, shutil, sys
from pathlib import Path
out = Path(sys.argv[1])
for split in ("train", "val"):
    for kind in ("scanrefer", "multi3drefer"):
        rows = []
        for part in sorted(out.glob(f"parts/{split}*/"), key=lambda p: int(p.name[len(split):])):
            rows += json.loads((part / f"{split}_{kind}.json").read_text())
        (out / f"{split}_{kind}.json").write_text(json.dumps(rows))
        print(f"{split} {kind}: {len(rows)} sentences")
for npz in out.glob("parts/*/*.npz"):
    shutil.move(str(npz), out / npz.name)
print(len(list(out.glob("*.npz"))), "scenes")
PYEOF
rm -rf "$OUT/parts"
