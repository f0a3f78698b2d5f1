# Sourced at the start of a command on the GPU machine (the `device` tool), from the repo root:
#   source tools/device_setup.sh
# Unpacks the carried .gpu bundle (spconv-cu124: the shared make-bundle script, then
# tools/gpu/slim_bundle.sh so that a call can also carry a checkpoint), the float16
# MiniLM copy (tools/pack_text_encoder.py), and builds the csrc extensions (bqnet_model._C and the CUDA
# superpoints bqnet_model._C_cuda, side by side) in place for the machine's Python and torch.
return_csrc_build() {  # OUT: a csrc build made in this call goes back with the results, for .gpu/ (tools/gpu/csrc_cache.py)
  if [ -n "${BQNET_CSRC_BUILT:-}" ] && [ -f "$BQNET_CSRC_BUILT" ]; then cp "$BQNET_CSRC_BUILT" "$1/"; fi
}
set -e
source .gpu/activate
if [ ! -f /tmp/te/text_encoder/config.json ]; then
  mkdir -p /tmp/te && tar -xJf .gpu/text_encoder.tar.xz -C /tmp/te
fi
export BQNET_MINILM_DIR=/tmp/te/text_encoder HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH=$PWD:$PYTHONPATH
if ! python3 -c "import torch, bqnet_model._C" 2>/dev/null || \
   { [ ! -f /tmp/build_cuda.failed ] && ! python3 -c "import torch, bqnet_model._C_cuda" 2>/dev/null; }; then
  bash tools/device_build.sh /tmp || return 1  # a failed _C_cuda leaves the CPU superpoints
  if [ -f /tmp/csrc_build.tar.xz ]; then export BQNET_CSRC_BUILT=/tmp/csrc_build.tar.xz; fi  # the scripts return it
fi
python3 -c "import torch, spconv; print('[device]', torch.__version__, 'spconv', spconv.__version__, torch.cuda.get_device_name(0))"
set +e
