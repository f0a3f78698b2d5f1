#!/usr/bin/env bash
# Prepare (ingest) and new-sentence benchmark on the GPU machine, one device call, with the GPU superpoints
# (bqnet_model._C_cuda, built by tools/device_setup.sh): the shipped sizes (config/tiny.yaml) at 200k, 300k,
# 1M and 3M points and paper-size (config/res.yaml with MiniLM) at 300k, 1M and 3M, each with the
# superpoint table built on the GPU and by numpy (--numpy-table), a new sentence eager fp32 / CUDA graph
# fp32 with and without the text-encoder graph / CUDA graph bf16, 16 per call, peak GPU memory and the
# ratio to a full prepare + query per sentence; then Segmenter.update on the GPU (the 1M map and the demo
# room grown by 5 %), the FPS kernel against the torch loop (bench/fps.py: 2k / 17k / 54k superpoints,
# 256 seeds) with its GPU tests (test/test_fps_cuda.py), and the text-encoder graph's test (replay ==
# eager), pytest installed from .whl when the machine lacks it.
# Run from the repo root, carrying .gpu (spconv bundle + packed MiniLM) and .whl (pytest's wheels):
#   bash tools/device_bench_ingest.sh OUT_DIR
# Writes OUT_DIR/{gpu.txt, bench_tiny.{log,json}, bench_res.{log,json}, incremental.{log,json}, fps.{log,json},
# pytest.log, bench.png}. After the set-up (about 170 s cold) every step has a hard timeout;
# together they end within 390 s. BQNET_BENCH_DEVICE / BQNET_BENCH_POINTS / BQNET_BENCH_MAPS override device,
# sizes and the update maps for a CPU dry run (with BQNET_MINILM_DIR set, the set-up is skipped).
set -uo pipefail
OUT=${1:?output folder}; KILL_AFTER=${KILL_AFTER:-3}
REPEATS=${REPEATS:-5}; WARMUP=${WARMUP:-1}  # medians of 5 after 1 warm-up (which also holds the captures)
source tools/device_bench_lib.sh
bench_setup "$OUT" || exit 1
if [ "$DEVICE" = cuda ] && [ -f /tmp/build_cuda.failed ]; then
  echo "[device_bench] bqnet_model._C_cuda did not build (/tmp/build_cpu.log, /tmp/build_cuda.log): the superpoints run on the CPU"
  cp /tmp/build_cuda.log "$OUT/" 2>/dev/null
fi
VARIANTS=("eager fp32" "cuda graph fp32" "cuda graph fp32, eager text" "cuda graph bf16")
bench_pipeline tiny config/tiny.yaml 110 "200000 300000 1000000 3000000" --raw-text --numpy-table \
  --variants "${VARIANTS[@]}"
bench_pipeline res config/res.yaml 125 "300000 1000000 3000000" --text-encoder minilm --raw-text --numpy-table \
  --variants "${VARIANTS[@]}"  # no spaCy there: the parse and the absent-object checks are left out
echo "[device_bench] incremental (limit 45 s)"
maps=("1M map" "demo room"); [ -n "${BQNET_BENCH_MAPS:-}" ] && maps=("$BQNET_BENCH_MAPS")
timeout --signal=INT --kill-after="$KILL_AFTER" 45 python3 -u bench/incremental.py --device "$DEVICE" \
  --models config/tiny.yaml --raw-text --maps "${maps[@]}" --grow 0.05 --repeats 3 --threads "$(nproc)" \
  --out "$OUT/incremental.json" 2>&1 | tee "$OUT/incremental.log"
echo "[device_bench] incremental done (exit ${PIPESTATUS[0]}) after $(bench_elapsed) s"
echo "[device_bench] fps kernel vs torch loop, then the GPU tests of the fps kernel and the text graph (limit 12 + 50 s)"
timeout --signal=INT --kill-after="$KILL_AFTER" 12 python3 -u bench/fps.py --device "$DEVICE" --repeats 7 \
  --out "$OUT/fps.json" 2>&1 | tee "$OUT/fps.log"
echo "[device_bench] fps done (exit ${PIPESTATUS[0]}) after $(bench_elapsed) s"
# pytest is not on that machine: the wheels travel in .whl (carry it); -p no:hypothesispytest: that plugin's
# start-up alone took most of a 25 s limit there (2026-12-01)
python3 -c "import pytest" 2>/dev/null || { [ -d .whl ] && pip install -q --no-index --find-links .whl pytest >/dev/null 2>&1; }
if python3 -c "import pytest" 2>/dev/null; then
  OMP_NUM_THREADS=8 timeout --signal=INT --kill-after="$KILL_AFTER" 50 python3 -m pytest -q -rs -p no:cacheprovider \
    -p no:hypothesispytest test/test_fps_cuda.py test/test_text_graphs.py 2>&1 | tee "$OUT/pytest.log"
  echo "[device_bench] pytest exit ${PIPESTATUS[0]} after $(bench_elapsed) s" | tee -a "$OUT/pytest.log"
else
  echo "[device_bench] pytest is not installed (carry .whl): test/test_fps_cuda.py, test_text_graphs.py not run" \
    | tee "$OUT/pytest.log"
fi
jsons=()
for f in "$OUT"/bench_tiny.json "$OUT"/bench_res.json; do [ -f "$f" ] && jsons+=("$f"); done
if [ ${#jsons[@]} -gt 0 ]; then
  timeout 10 python3 bench/plot_pipeline.py "${jsons[@]}" --out "$OUT/bench.png" 2>&1 | tail -3
fi
ls -la "$OUT"
echo "[device_bench] all done after $(bench_elapsed) s"
