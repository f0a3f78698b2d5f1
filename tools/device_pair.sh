#!/usr/bin/env bash
# A controlled pair on one GPU: a control and a variant trained side by side from the same weights, for
# the same time, on the same synthetic rooms and seed, each with half of the CPU cores for its loader.
# Run from the repo root on the GPU machine (the `device` tool), with the .gpu bundle present:
#   bash tools/device_pair.sh OUT until:T
# Environment (each optional):
#   INIT=ckpt.pth       both runs start from these weights
#   EXTRA_A / EXTRA_B   tools/train.py options of the control (A) and the variant (B), e.g. "--set model.loss.anchor_ref=0.5"
#   REAL_A / REAL_B     a packed real-scan training folder (tools/make_real_training.py, then tar -cJf) merged into
#                       that run's rooms; the other run trains on the synthetic rooms alone
#   REAL_REPEAT=K       the real training sentences K times (default 4: a few scans among 1,200 rooms)
# Writes OUT/{A,B}.{pth,metrics.jsonl,train.log} (tools/device_train.sh with NOEVAL=1: evaluate on a CPU machine).
set -uo pipefail
OUT=${1:?output folder}; SECS=${2:?until:T}
[[ $SECS == until:* ]] || { echo "the second argument is until:T (seconds from this script's start)"; exit 2; }
t_script=$(date +%s)
mkdir -p "$OUT"
source tools/device_setup.sh || exit 1
[ -f /tmp/synth/val_scanrefer.json ] || tools/make_synthetic.sh /tmp/synth 1200 30 "$(nproc)" || exit 1
echo "[pair] rooms ready after $(( $(date +%s) - t_script )) s"
with_real() {  # packed-folder -> a data folder holding the synthetic rooms and the real scans
  local dst=/tmp/synth_real_$(basename "$1" .tar.xz)
  if [ ! -f "$dst/train_multi3drefer.json" ]; then
    rm -rf /tmp/real_unpacked "$dst" && mkdir -p /tmp/real_unpacked "$dst" || return 1
    tar -xJf "$1" -C /tmp/real_unpacked || return 1
    local src; src=$(dirname "$(find /tmp/real_unpacked -name train_multi3drefer.json | head -1)")
    python3 tools/make_real_training.py merge --converted "$src" --synthetic /tmp/synth --into "$dst" \
      --repeat "${REAL_REPEAT:-4}" >&2 || return 1
  fi
  echo "$dst"
}
data_a=/tmp/synth; data_b=/tmp/synth
if [ -n "${REAL_A:-}" ]; then data_a=$(with_real "$REAL_A") || exit 1; fi
if [ -n "${REAL_B:-}" ]; then data_b=$(with_real "$REAL_B") || exit 1; fi
left="until:$(( ${SECS#until:} - ($(date +%s) - t_script) ))"
half=$(( $(nproc) / 2 - 2 )); half=$(( half < 2 ? 2 : half ))
NAME=A DATA=$data_a WORKERS=$half NOEVAL=1 EXTRA="${EXTRA_A:-}" bash tools/device_train.sh "$OUT" "$left" > "$OUT/A.device.log" 2>&1 &
NAME=B DATA=$data_b WORKERS=$half NOEVAL=1 EXTRA="${EXTRA_B:-}" bash tools/device_train.sh "$OUT" "$left" > "$OUT/B.device.log" 2>&1 &
wait
rm -f "$OUT/evals.json"  # NOEVAL: both runs wrote an empty one
tail -n 4 "$OUT/A.device.log" "$OUT/B.device.log"
echo "[pair] done after $(( $(date +%s) - t_script )) s"
