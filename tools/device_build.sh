#!/usr/bin/env bash
# Builds bqnet_model._C (the CPU kernels) and bqnet_model._C_cuda (the CUDA superpoints, csrc/cuda/)
# in place, side by side, for the GPU machine's Python and torch. From the repo root:
#   bash tools/device_build.sh LOG_DIR
# Writes LOG_DIR/build_cpu.log and LOG_DIR/build_cuda.log (each ending with its exit status), and
# LOG_DIR/build_cuda.failed when _C_cuda did not build: everything still runs, the superpoints of CUDA
# clouds on the CPU. Exits 1 when _C did not build. BUILD_TIMEOUT (s, default 600) bounds each build;
# TORCH_CUDA_ARCH_LIST defaults to 9.0 (the H200). A .gpu/csrc_build.tar.xz of the same sources and toolchain
# (tools/gpu/csrc_cache.py) is used instead of building; after a build, /tmp/csrc_build.tar.xz holds the new one.
set -u
LOG=${1:?log folder}
mkdir -p "$LOG" && rm -f "$LOG/build_cuda.failed"
t0=$(date +%s)
limit=${BUILD_TIMEOUT:-600}
# A build carried from an earlier call (tools/gpu/csrc_cache.py: same sources and toolchain) saves the compile.
if python3 tools/gpu/csrc_cache.py unpack .gpu/csrc_build.tar.xz && python3 -c "import torch, bqnet_model._C" 2>/dev/null; then
  python3 -c "import torch, bqnet_model._C_cuda" 2>/dev/null || touch "$LOG/build_cuda.failed"
  echo "[build] csrc from the carried build in $(( $(date +%s) - t0 )) s"
  exit 0
fi
( BQNET_NO_CUDA=1 timeout "$limit" python3 setup.py -q build_ext --inplace > "$LOG/build_cpu.log" 2>&1
  echo "_C exit $?" >> "$LOG/build_cpu.log" ) &
( BQNET_ONLY_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} timeout "$limit" \
    python3 setup.py -q build_ext --inplace > "$LOG/build_cuda.log" 2>&1
  echo "_C_cuda exit $?" >> "$LOG/build_cuda.log" ) &
wait
if ! python3 -c "import torch, bqnet_model._C_cuda" 2>/dev/null; then
  touch "$LOG/build_cuda.failed"
  grep -E "error|exit" "$LOG/build_cuda.log" | tail -15
  echo "[build] CUDA superpoints not built: CUDA clouds are segmented on the CPU"
fi
if ! python3 -c "import torch, bqnet_model._C" 2>/dev/null; then
  grep -E "error|exit" "$LOG/build_cpu.log" | tail -30
  echo "[build] bqnet_model._C did not build"
  exit 1
fi
echo "[build] csrc built in $(( $(date +%s) - t0 )) s"
# for the next calls: the device scripts return it; put it into .gpu/ (tools/gpu/csrc_cache.py)
python3 tools/gpu/csrc_cache.py pack /tmp/csrc_build.tar.xz || true
