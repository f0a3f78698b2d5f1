#!/usr/bin/env bash
# Prepare (ingest) and new-sentence benchmark on the GPU machine, one device call, with the GPU superpoints
# (bqnet_model._C_cuda, built by tools/device_setup.sh): the shipped sizes (config/tiny.yaml) at 200k, 300k,
# 1M and 3M points and paper-size (config/res.yaml with MiniLM) at 300k, 1M and 3M, each prepared with the
# torch FPS loop and with the CUDA FPS kernel (the default; --fps-loop; add --numpy-table to bench_pipeline for the
# host-built superpoint table too, measured 2026-12-01 as slower), a new sentence eager fp32 / CUDA graph
# fp32 with and without the text-encoder graph / CUDA graph bf16, 16 per call, peak GPU memory and the
# ratio to a full prepare + query per sentence; then Segmenter.update on the GPU (the 1M map and the demo
# room grown by 5 %), the FPS kernel against the torch loop (bench/fps.py: 2k / 17k / 54k superpoints,
# 256 seeds) with its GPU tests (test/test_fps_cuda.py), and the text-encoder graph's test (replay ==
# eager), pytest installed from .whl when the machine lacks it.
# Run from the repo root, carrying .gpu (spconv bundle + packed MiniLM) and .whl (pytest's wheels):
#   bash tools/device_bench_ingest.sh OUT_DIR
# Writes OUT_DIR/results.tar.gz (gpu.txt, bench_tiny.{log,json}, bench_res.{log,json}, incremental.{log,json},
# fps.{log,json}, pytest.log: at most 8 files come back from the device) and OUT_DIR/bench.png; the test failures
# also go to the call's own output. After the set-up (about 170 s cold) every step has a hard timeout;
# together they end within 410 s. BQNET_BENCH_DEVICE / BQNET_BENCH_POINTS / BQNET_BENCH_MAPS override device,
# sizes and the update maps for a CPU dry run (with BQNET_MINILM_DIR set, the set-up is skipped).
# BQNET_BENCH_COMPILE=1 runs instead only the paper-size rows at 300k and 1M with and without
# inference.compile_decoder (eager fp32 / cuda graph bf16 / cuda graph bf16 compiled, prepared with the FPS loop
# and the kernel as above, so the naive baseline is the same), then the GPU test of the compiled capture
# (test/test_cuda_graphs.py). The compiled variant compiles for each sentence count and token bucket it meets
# (three: 1 x 16, 16 x 16, 16 x 32 tokens), once for both sizes (the superpoint axis is dynamic).
set -uo pipefail
OUT=${1:?output folder}; KILL_AFTER=${KILL_AFTER:-3}
REPEATS=${REPEATS:-5}; WARMUP=${WARMUP:-1}  # medians of 5 after 1 warm-up (which also holds the captures)
source tools/device_bench_lib.sh
bench_setup "$OUT" || exit 1
if [ "$DEVICE" = cuda ] && [ -f /tmp/build_cuda.failed ]; then
  echo "[device_bench] bqnet_model._C_cuda did not build (/tmp/build_cpu.log, /tmp/build_cuda.log): the superpoints run on the CPU"
  cp /tmp/build_cuda.log "$OUT/" 2>/dev/null
fi
if [ -n "${BQNET_BENCH_COMPILE:-}" ]; then
  bench_pipeline res config/res.yaml 300 "300000 1000000" --text-encoder minilm --raw-text --fps-loop \
    --variants "eager fp32" "cuda graph bf16" "cuda graph bf16 compiled"
  python3 -c "import pytest" 2>/dev/null || { [ -d .whl ] && pip install -q --no-index --find-links .whl pytest >/dev/null 2>&1; }
  OMP_NUM_THREADS=8 timeout --signal=INT --kill-after="$KILL_AFTER" 75 python3 -m pytest -q -rfEs --tb=short \
    -p no:cacheprovider -p no:hypothesispytest test/test_cuda_graphs.py -k on_the_gpu > "$OUT/pytest.log" 2>&1
  echo "[device_bench] pytest (compiled capture) exit $? after $(bench_elapsed) s" | tee -a "$OUT/pytest.log"
  tail -15 "$OUT/pytest.log"
else  # the full ingest bench
VARIANTS=("eager fp32" "cuda graph fp32" "cuda graph fp32, eager text" "cuda graph bf16")
bench_pipeline tiny config/tiny.yaml 100 "200000 300000 1000000 3000000" --raw-text --fps-loop \
  --variants "${VARIANTS[@]}"
bench_pipeline res config/res.yaml 110 "300000 1000000 3000000" --text-encoder minilm --raw-text --fps-loop \
  --variants "${VARIANTS[@]}"  # no spaCy there: the parse and the absent-object checks are left out
echo "[device_bench] incremental (limit 45 s)"
maps=("1M map" "demo room"); [ -n "${BQNET_BENCH_MAPS:-}" ] && maps=("$BQNET_BENCH_MAPS")
timeout --signal=INT --kill-after="$KILL_AFTER" 45 python3 -u bench/incremental.py --device "$DEVICE" \
  --models config/tiny.yaml --raw-text --maps "${maps[@]}" --grow 0.05 --repeats 3 --threads "$(nproc)" \
  --out "$OUT/incremental.json" 2>&1 | tee "$OUT/incremental.log"
echo "[device_bench] incremental done (exit ${PIPESTATUS[0]}) after $(bench_elapsed) s"
echo "[device_bench] fps kernel vs torch loop, then the GPU tests of the fps kernel and the text graph (limit 12 + 50 + 20 s)"
timeout --signal=INT --kill-after="$KILL_AFTER" 12 python3 -u bench/fps.py --device "$DEVICE" --repeats 7 \
  --out "$OUT/fps.json" 2>&1 | tee "$OUT/fps.log"
echo "[device_bench] fps done (exit ${PIPESTATUS[0]}) after $(bench_elapsed) s"
# pytest is not on that machine: the wheels travel in .whl (carry it); -p no:hypothesispytest: that plugin's
# start-up alone took most of a 25 s limit there (2026-12-01)
python3 -c "import pytest" 2>/dev/null || { [ -d .whl ] && pip install -q --no-index --find-links .whl pytest >/dev/null 2>&1; }
if python3 -c "import pytest" 2>/dev/null; then
  # the argument-error test alone, after the rest: it once crashed the process (2026-12-01), taking the rest with it
  errors=test/test_fps_cuda.py::test_kernel_argument_errors_say_what_is_wrong
  OMP_NUM_THREADS=8 timeout --signal=INT --kill-after="$KILL_AFTER" 50 python3 -m pytest -q -rfEs --tb=short \
    -p no:cacheprovider -p no:hypothesispytest test/test_fps_cuda.py test/test_text_graphs.py --deselect "$errors" \
    > "$OUT/pytest.log" 2>&1
  echo "[device_bench] pytest exit $? after $(bench_elapsed) s" | tee -a "$OUT/pytest.log"
  OMP_NUM_THREADS=8 timeout --signal=INT --kill-after="$KILL_AFTER" 20 python3 -X faulthandler -m pytest -q -rfEs \
    --tb=short -p no:cacheprovider -p no:hypothesispytest "$errors" >> "$OUT/pytest.log" 2>&1
  echo "[device_bench] pytest (argument errors) exit $? after $(bench_elapsed) s" | tee -a "$OUT/pytest.log"
  grep -v "^  File \"/opt\|^Extension modules" "$OUT/pytest.log" | tail -60  # the failures, in the call's own output
else
  echo "[device_bench] pytest is not installed (carry .whl): test/test_fps_cuda.py, test_text_graphs.py not run" \
    | tee "$OUT/pytest.log"
fi
fi  # BQNET_BENCH_COMPILE
jsons=()
for f in "$OUT"/bench_tiny.json "$OUT"/bench_res.json; do [ -f "$f" ] && jsons+=("$f"); done
if [ ${#jsons[@]} -gt 0 ]; then
  timeout 10 python3 bench/plot_pipeline.py "${jsons[@]}" --out "$OUT/bench.png" 2>&1 | tail -3
fi
# at most 8 files come back from the machine: the logs and JSON travel as one archive, the plot beside it
(cd "$OUT" && tar -czf results.tar.gz --exclude=results.tar.gz --exclude=bench.png -- * \
  && find . -maxdepth 1 -type f ! -name results.tar.gz ! -name bench.png -delete)
if declare -F return_csrc_build > /dev/null; then return_csrc_build "$OUT"; fi  # defined by tools/device_setup.sh, when bench_setup sourced it
ls -la "$OUT"
echo "[device_bench] all done after $(bench_elapsed) s"
