#!/usr/bin/env bash
# The speed benchmark on the GPU machine: every lever side by side, paper-size model
# (config/res.yaml with MiniLM in place of RoBERTa) and the tiny model, 100k / 300k / 1M points.
# Run from the repo root (sources tools/device_setup.sh itself when that was not done yet):
#   bash tools/device_bench.sh OUT_DIR [REPEATS] [WARMUP]
# Writes OUT_DIR/bench_res.{log,json}, OUT_DIR/bench_tiny.{log,json}, OUT_DIR/bench.png, OUT_DIR/gpu.txt.
# BQNET_BENCH_DEVICE / BQNET_BENCH_POINTS override device and sizes (a CPU dry run of this script).
# Each run has a hard timeout, and the JSON is rewritten after every map size, so a cut run still leaves its numbers.
set -uo pipefail
OUT=${1:?output folder}; REPEATS=${2:-7}; WARMUP=${3:-2}
DEVICE=${BQNET_BENCH_DEVICE:-cuda}; POINTS=${BQNET_BENCH_POINTS:-100000 300000 1000000}
mkdir -p "$OUT"
if [ -z "${BQNET_MINILM_DIR:-}" ] || ! python3 -c "import torch, spconv, bqnet_model._C" 2>/dev/null; then
  source tools/device_setup.sh || exit 1
fi
{ nvidia-smi -L 2>&1 || echo "no nvidia-smi"; } | tee "$OUT/gpu.txt"
export BQNET_GIT_COMMIT=${BQNET_GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
t0=$(date +%s)
run() {  # name config limit_s extra-args...
  local name=$1 cfg=$2 limit=$3; shift 3
  echo "[device_bench] $name: $cfg (limit ${limit} s)"
  # shellcheck disable=SC2086  # POINTS is a list of sizes
  timeout --signal=INT --kill-after=15 "$limit" python3 -u bench/pipeline.py --config "$cfg" --device "$DEVICE" \
    --points $POINTS --repeats "$REPEATS" --warmup "$WARMUP" --prepare-repeats 3 --prepare-warmup 1 \
    --batch 16 --out "$OUT/bench_$name.json" "$@" 2>&1 | tee "$OUT/bench_$name.log"
  echo "[device_bench] $name done (exit ${PIPESTATUS[0]}) after $(( $(date +%s) - t0 )) s"
}
run res config/res.yaml 240 --text-encoder minilm --raw-text  # no spaCy there: the parse is left out
run tiny config/tiny.yaml 120 --raw-text
jsons=()
for f in "$OUT"/bench_res.json "$OUT"/bench_tiny.json; do [ -f "$f" ] && jsons+=("$f"); done
if [ ${#jsons[@]} -gt 0 ]; then
  python3 bench/plot_pipeline.py "${jsons[@]}" --out "$OUT/bench.png" 2>&1 | tee -a "$OUT/bench_tiny.log"
fi
ls -la "$OUT"
echo "[device_bench] all done after $(( $(date +%s) - t0 )) s"
