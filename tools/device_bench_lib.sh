# Shared by the device benchmarks (sourced, from the repo root): set-up when it was not done yet, the GPU's
# name, and one bench/pipeline.py run under a hard timeout with its log tee'd into the output folder.
#   source tools/device_bench_lib.sh
#   bench_setup OUT_DIR                                  # OUT_DIR/gpu.txt; sets OUT, DEVICE, BENCH_T0
#   bench_pipeline NAME CONFIG LIMIT_S "POINTS" [bench/pipeline.py options...]   # OUT/bench_NAME.{log,json}
# Environment: BQNET_BENCH_DEVICE (default cuda) and BQNET_BENCH_POINTS (replaces every run's sizes) make a
# CPU dry run; REPEATS / WARMUP: timed / untimed query runs per variant (default 7 / 2); KILL_AFTER: seconds
# between the timeout's SIGINT and its SIGKILL (default 5). The bench rewrites its JSON after every map
# size, so a run cut by its timeout keeps the sizes it finished.

bench_setup() {  # out_dir
  OUT=$1
  DEVICE=${BQNET_BENCH_DEVICE:-cuda}
  REPEATS=${REPEATS:-7}; WARMUP=${WARMUP:-2}; KILL_AFTER=${KILL_AFTER:-5}
  mkdir -p "$OUT" || return 1
  if [ -z "${BQNET_MINILM_DIR:-}" ] || ! python3 -c "import torch, spconv, bqnet_model._C" 2>/dev/null; then
    source tools/device_setup.sh || return 1
  fi
  { nvidia-smi -L 2>&1 || echo "no nvidia-smi"; } | tee "$OUT/gpu.txt"
  export BQNET_GIT_COMMIT=${BQNET_GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
  BENCH_T0=$(date +%s)
}

bench_elapsed() {  # seconds since bench_setup
  echo $(( $(date +%s) - BENCH_T0 ))
}

bench_pipeline() {  # name config limit_s points extra-args...
  # Two untimed prepares per size (PREPARE_WARMUP): on 2026-12-01 the first size's backbone read 23.6 ms at
  # 300k against 19.9 ms at 1M (paper-size, one warm-up), as if the GPU or spconv's tuning had not settled.
  local name=$1 cfg=$2 limit=$3 points=${BQNET_BENCH_POINTS:-$4}
  shift 4
  echo "[device_bench] $name: $cfg, points $points (limit ${limit} s)"
  # shellcheck disable=SC2086  # points is a list of sizes
  timeout --signal=INT --kill-after="$KILL_AFTER" "$limit" python3 -u bench/pipeline.py --config "$cfg" \
    --device "$DEVICE" --points $points --repeats "$REPEATS" --warmup "$WARMUP" --prepare-repeats 3 \
    --prepare-warmup "${PREPARE_WARMUP:-2}" --batch 16 --out "$OUT/bench_$name.json" "$@" 2>&1 | tee "$OUT/bench_$name.log"
  echo "[device_bench] $name done (exit ${PIPESTATUS[0]}) after $(bench_elapsed) s"
}
