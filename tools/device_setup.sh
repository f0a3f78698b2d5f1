# Sourced at the start of a command on the GPU machine (the `device` tool), from the repo root:
#   source tools/device_setup.sh
# Unpacks the carried .gpu bundle (spconv-cu124: the shared make-bundle script, then
# tools/gpu/slim_bundle.sh so that a call can also carry a checkpoint), the float16
# MiniLM copy (tools/pack_text_encoder.py), and builds the csrc extensions (bqnet_model._C and the CUDA
# superpoints bqnet_model._C_cuda, side by side) in place for the machine's Python and torch.
set -e
source .gpu/activate
if [ ! -f /tmp/te/text_encoder/config.json ]; then
  mkdir -p /tmp/te && tar -xJf .gpu/text_encoder.tar.xz -C /tmp/te
fi
export BQNET_MINILM_DIR=/tmp/te/text_encoder HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH=$PWD:$PYTHONPATH
if ! python3 -c "import torch, bqnet_model._C" 2>/dev/null || \
   { [ ! -f /tmp/build_ext_cuda.failed ] && ! python3 -c "import torch, bqnet_model._C_cuda" 2>/dev/null; }; then
  t0=$(date +%s)  # the CPU kernels and the CUDA superpoints (csrc/cuda) build side by side
  BQNET_NO_CUDA=1 python3 setup.py -q build_ext --inplace > /tmp/build_ext.log 2>&1 & pid_cpu=$!
  BQNET_ONLY_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} python3 setup.py -q build_ext --inplace \
    > /tmp/build_ext_cuda.log 2>&1 & pid_cuda=$!
  if ! wait $pid_cuda; then  # the node and training still run: superpoints fall back to the CPU
    touch /tmp/build_ext_cuda.failed; tail -15 /tmp/build_ext_cuda.log; echo "[device] CUDA superpoints not built"
  fi
  wait $pid_cpu || { tail -30 /tmp/build_ext.log; return 1; }
  echo "[device] csrc built in $(( $(date +%s) - t0 )) s"
fi
python3 -c "import torch, spconv; print('[device]', torch.__version__, 'spconv', spconv.__version__, torch.cuda.get_device_name(0))"
set +e
