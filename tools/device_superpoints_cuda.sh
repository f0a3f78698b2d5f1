#!/usr/bin/env bash
# The GPU oversegmentation on the GPU machine: build, compare with the CPU, time, test.
#   bash tools/device_superpoints_cuda.sh OUT_DIR [SCANS_DIR]
# 1. builds bqnet_model._C (CPU kernels) and bqnet_model._C_cuda (csrc/cuda/) in place, the two in
#    parallel (TORCH_CUDA_ARCH_LIST defaults to 9.0: the H200);
# 2. bench/superpoints_cuda.py: per cloud CPU fh / CPU boruvka / CUDA labels, agreement, ASA, segment
#    counts, times, determinism, on synthetic rooms of 200k, 300k, 1M, 3M points and every scan in
#    SCANS_DIR (<scan>.npz as tools/make_real_training.py writes, or shared/real's *_vert.npy);
# 3. pytest on test/test_superpoints_parallel.py and test/test_superpoints*.py (when pytest is installed).
# Writes OUT_DIR/{build.log,superpoints_cuda.log,superpoints_cuda.json,pytest.log,gpu.txt}. Every step
# has a hard timeout; a failing step is reported and the next one still runs.
set -uo pipefail
OUT=${1:?output folder}; SCANS=${2:-}
mkdir -p "$OUT"
t0=$(date +%s)
if [ -f .gpu/activate ]; then source .gpu/activate; fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
{ nvidia-smi -L 2>&1 || echo "no nvidia-smi"; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } | tee "$OUT/gpu.txt"
echo "[sp_cuda] building _C and _C_cuda" | tee "$OUT/build.log"
BUILD_TIMEOUT=240 bash tools/device_build.sh "$OUT" 2>&1 | tee -a "$OUT/build.log"
for f in "$OUT/build_cpu.log" "$OUT/build_cuda.log"; do grep -E "exit" "$f" | tee -a "$OUT/build.log"; done
echo "[sp_cuda] build done after $(( $(date +%s) - t0 )) s" | tee -a "$OUT/build.log"
python3 -c "import torch, bqnet_model._C, bqnet_model._C_cuda; print('[sp_cuda] both extensions import')" 2>&1 | tee -a "$OUT/build.log"
ARGS=("$OUT")
if [ -n "$SCANS" ]; then ARGS+=(--scans "$SCANS"); fi
timeout --signal=INT --kill-after=10 150 python3 -u bench/superpoints_cuda.py "${ARGS[@]}" 2>&1 | tee "$OUT/superpoints_cuda.log"
echo "[sp_cuda] bench exit ${PIPESTATUS[0]} after $(( $(date +%s) - t0 )) s" | tee -a "$OUT/superpoints_cuda.log"
if python3 -c "import pytest" 2>/dev/null; then
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-8} timeout --signal=INT --kill-after=10 120 python3 -m pytest -q -rs \
    test/test_superpoints_parallel.py test/test_superpoints.py test/test_superpoints_real.py 2>&1 | tee "$OUT/pytest.log"
  echo "[sp_cuda] pytest exit ${PIPESTATUS[0]}" | tee -a "$OUT/pytest.log"
else
  echo "[sp_cuda] pytest is not installed on this machine: tests not run (bundle it: EXTRA_WHEELS=\"pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 packaging\" ../shared/gpu/make-bundle, carry .gpu)" | tee "$OUT/pytest.log"
fi
echo "[sp_cuda] all done after $(( $(date +%s) - t0 )) s" | tee -a "$OUT/pytest.log"
