#!/usr/bin/env bash
# Controlled runs on one GPU: a control and one or more variants trained side by side from the same
# weights, for the same time, on the same synthetic rooms and seed, the CPU cores split among their loaders.
# Run from the repo root on the GPU machine (the `device` tool), with the .gpu bundle present:
#   bash tools/device_side_by_side.sh OUT until:T
# Environment (each optional):
#   RUNS="A B"          the run names (default "A B": a control A and a variant B)
#   INIT=ckpt.pth       every run starts from these weights
#   PROFILE_STEPS=N     every run profiles N steps once warm (tools/device_train.sh; the profiles go into logs.tar.gz)
#   EXTRA_<name>        that run's tools/train.py options, e.g. EXTRA_B="--set model.loss.anchor_ref=0.5"
#   REAL_<name>         a packed real-scan training folder (tools/make_real_training.py --repeat K, then tar -cJf)
#                       merged into that run's rooms (bqnet_synth.real_training.merge_real_into, on links to the
#                       synthetic scenes); runs without one train on the synthetic rooms alone
#   SYNTH_<name>="--density-range 250 2000"  that run's rooms are generated apart (/tmp/synth_<name>: the same
#                       rooms and seeds as /tmp/synth, with these bqnet-synth options added to SYNTH_ARGS)
#   COMPOSED_<name>=bank.npz  also merge COMPOSED_ROOMS (default 300) composed rooms into that run's rooms: synthetic
#                       layouts furnished with the bank's real objects (tools/make_composed_rooms.py --save-bank),
#                       composed here in parallel parts, after the real scans
# Writes OUT/<name>.pth and OUT/logs.tar.gz (each run's metrics.jsonl, train.log, device.log, profile.txt; tools/device_train.sh
# with NOEVAL=1: evaluate on a CPU machine).
set -uo pipefail
OUT=${1:?output folder}; SECS=${2:?until:T}
[[ $SECS == until:* ]] || { echo "the second argument is until:T (seconds from this script's start)"; exit 2; }
t_script=$(date +%s)
mkdir -p "$OUT"
source tools/device_setup.sh || exit 1
[ -f /tmp/synth/val_scanrefer.json ] || tools/make_synthetic.sh /tmp/synth 1200 30 "$(nproc)" || exit 1
echo "[side-by-side] rooms ready after $(( $(date +%s) - t_script )) s"
# the packed text encoder must know every word the rooms' sentences use (tools/pack_text_encoder.py)
python3 tools/pack_text_encoder.py --check "$BQNET_MINILM_DIR" --json /tmp/synth/train_scanrefer.json \
  || echo "[side-by-side] WARNING: the packed text encoder zeroes words of the training sentences: re-pack it"
merge_into() {  # src dst: append a training folder's rooms and sentences to a data folder (counts on stderr)
  python3 -c "import sys; from bqnet_synth.real_training import merge_real_into as m; print(m(sys.argv[1], sys.argv[2]))" \
    "$1" "$2" >&2
}
with_real() {  # packed-folder -> a data folder holding the synthetic rooms and the real scans
  local src_rooms=${2:-/tmp/synth} dst=${2:-/tmp/synth}_real_$(basename "$1" .tar.xz)
  if [ ! -f "$dst/train_multi3drefer.json" ]; then
    rm -rf "/tmp/unpacked_$(basename "$1")" "$dst" && mkdir -p "/tmp/unpacked_$(basename "$1")" || return 1
    tar -xJf "$1" -C "/tmp/unpacked_$(basename "$1")" || return 1
    local src; src=$(dirname "$(find "/tmp/unpacked_$(basename "$1")" -name train_multi3drefer.json | head -1)")
    mkdir -p "$dst" && ln -s "$src_rooms"/*.npz "$dst"/ && cp "$src_rooms"/*.json "$dst"/ || return 1
    merge_into "$src" "$dst" || return 1
  fi
  echo "$dst"
}
with_composed() {  # data-folder bank -> a data folder holding that folder's rooms and the composed ones
  local bank; bank=$(basename "$2" .npz)
  local dst="$1_comp_$bank" parts_dir="/tmp/comp_$bank" rooms=${COMPOSED_ROOMS:-300} parts k
  if [ ! -f "$dst/.composed" ]; then
    rm -rf "$dst" "$parts_dir" && mkdir -p "$dst" "$parts_dir" || return 1
    ln -s "$1"/*.npz "$dst"/ && cp "$1"/*.json "$dst"/ || return 1
    parts=$(nproc); parts=$(( parts > rooms ? rooms : parts ))
    for k in $(seq 0 $(( parts - 1 ))); do  # room i depends on (bank, seed, i) only: parts equal one run
      OMP_NUM_THREADS=1 python3 tools/make_composed_rooms.py --bank "$2" --out "$parts_dir/p$k" \
        --rooms $(( (rooms * (k + 1)) / parts - (rooms * k) / parts )) --first-index $(( (rooms * k) / parts )) \
        > "$parts_dir/p$k.log" 2>&1 &
    done
    wait
    for k in $(seq 0 $(( parts - 1 ))); do  # one after another: the merges write the same JSON files
      merge_into "$parts_dir/p$k" "$dst" || return 1
    done
    touch "$dst/.composed"
  fi
  echo "$dst"
}
runs=(${RUNS:-A B})
declare -A data
for name in "${runs[@]}"; do  # every data folder first, so that the runs start together
  real_var="REAL_$name"; comp_var="COMPOSED_$name"; synth_var="SYNTH_$name"; data[$name]=/tmp/synth
  if [ -n "${!synth_var:-}" ]; then
    data[$name]=/tmp/synth_$name
    [ -f "${data[$name]}/val_scanrefer.json" ] || SYNTH_ARGS="${SYNTH_ARGS:-} ${!synth_var}" \
      tools/make_synthetic.sh "${data[$name]}" 1200 30 "$(nproc)" || exit 1
    echo "[side-by-side] $name: its own rooms (${!synth_var}) ready after $(( $(date +%s) - t_script )) s"
  fi
  if [ -n "${!real_var:-}" ]; then data[$name]=$(with_real "${!real_var}" "${data[$name]}") || exit 1; fi
  if [ -n "${!comp_var:-}" ]; then data[$name]=$(with_composed "${data[$name]}" "${!comp_var}") || exit 1; fi
done
workers=$(( $(nproc) / ${#runs[@]} - 2 )); workers=$(( workers < 2 ? 2 : workers ))
left="until:$(( ${SECS#until:} - ($(date +%s) - t_script) ))"
for name in "${runs[@]}"; do
  extra_var="EXTRA_$name"
  echo "[side-by-side] $name: data ${data[$name]}, options ${!extra_var:-none}"
  NAME=$name DATA=${data[$name]} WORKERS=$workers NOEVAL=1 EXPORT_MARGIN=${EXPORT_MARGIN:-45} EXTRA="${!extra_var:-}" \
    bash tools/device_train.sh "$OUT" "$left" > "$OUT/$name.device.log" 2>&1 &
done
wait
rm -f "$OUT/evals.json"  # NOEVAL: each run wrote an empty one
for name in "${runs[@]}"; do echo "== $name"; tail -n 3 "$OUT/$name.device.log"; done
# at most 8 files come back from a call: the weights one by one, the logs in one archive
(cd "$OUT" && shopt -s nullglob && logs=(*.metrics.jsonl *.train.log *.device.log *.profile.txt) \
  && tar -czf logs.tar.gz "${logs[@]}" && rm -f "${logs[@]}")
echo "[side-by-side] done after $(( $(date +%s) - t_script )) s"
return_csrc_build "$OUT"  # tools/device_setup.sh
