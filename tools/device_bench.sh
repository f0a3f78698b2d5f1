#!/usr/bin/env bash
# The speed benchmark on the GPU machine: every lever side by side, paper-size model
# (config/res.yaml with MiniLM in place of RoBERTa) and the tiny model, 100k / 300k / 1M points.
# Run from the repo root (sources tools/device_setup.sh itself when that was not done yet):
#   bash tools/device_bench.sh OUT_DIR [REPEATS] [WARMUP]
# Writes OUT_DIR/bench_res.{log,json}, OUT_DIR/bench_tiny.{log,json}, OUT_DIR/bench.png, OUT_DIR/gpu.txt.
# BQNET_BENCH_DEVICE / BQNET_BENCH_POINTS override device and sizes (a CPU dry run of this script).
# Each run has a hard timeout, and the JSON is rewritten after every map size, so a cut run still leaves its numbers.
set -uo pipefail
OUT=${1:?output folder}; REPEATS=${2:-7}; WARMUP=${3:-2}; KILL_AFTER=15
source tools/device_bench_lib.sh
bench_setup "$OUT" || exit 1
POINTS="100000 300000 1000000"
bench_pipeline res config/res.yaml 240 "$POINTS" --text-encoder minilm --raw-text  # no spaCy there: the parse is left out
bench_pipeline tiny config/tiny.yaml 120 "$POINTS" --raw-text
jsons=()
for f in "$OUT"/bench_res.json "$OUT"/bench_tiny.json; do [ -f "$f" ] && jsons+=("$f"); done
if [ ${#jsons[@]} -gt 0 ]; then
  python3 bench/plot_pipeline.py "${jsons[@]}" --out "$OUT/bench.png" 2>&1 | tee -a "$OUT/bench_tiny.log"
fi
ls -la "$OUT"
echo "[device_bench] all done after $(bench_elapsed) s"
