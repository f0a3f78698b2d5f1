#!/usr/bin/env bash
# Train the shipped demo model on every GPU of the device machine (torchrun, DDP), evaluate it on
# held-out synthetic rooms (RES and GRES) and export a slim checkpoint. Run from the repo root with
# the .gpu bundle present (spconv and the packed text encoder, tools/pack_text_encoder.py):
#   bash tools/device_train.sh OUT_DIR [TRAIN_SECONDS] [N_TRAIN] [N_VAL] [CONFIG]
# TRAIN_SECONDS=until:T trains until T seconds after this script started, less EXPORT_MARGIN (default 15 s) for the
# data set start-up and the export (runs side by side need more: tools/device_side_by_side.sh gives 45)
# A cold machine spends minutes on the build and the rooms first, and a device command that
# runs past its limit returns nothing.
# Environment: INIT=ckpt.pth starts from those weights (a continuation on a warm machine: the data in
# /tmp/synth and the built extension are reused); NAME=run name (default full); BATCH=rooms per step and GPU
# (default: the config's); EXTRA=more tools/train.py options, e.g. "--set train.lr=4e-4 --set train.lang_per_scene=24";
# NOEVAL=1 skips the held-out evaluation; CUDA_VISIBLE_DEVICES=1 trains on that GPU only (two runs side by side on a 2-GPU machine: a control and
# a variant, each with half of the CPU cores for its data loader); DATA=dir trains on that folder (default /tmp/synth, generated
# when missing); WORKERS=n sets the data-loader workers (two runs sharing one GPU: tools/device_pair.sh);
# PROFILE_STEPS=N profiles N steps once the run is warm (tools/train.py --profile-steps; default 0, off).
# Writes OUT_DIR/{NAME.pth, NAME.metrics.jsonl, NAME.train.log, evals.json}, and NAME.profile.txt with PROFILE_STEPS.
set -uo pipefail
OUT=${1:?output folder}; SECS=${2:-400}; NTRAIN=${3:-1200}; NVAL=${4:-30}; CONFIG=${5:-config/tiny.yaml}
NAME=${NAME:-full}
t_script=$(date +%s)
mkdir -p "$OUT"
source tools/device_setup.sh || exit 1
nvidia-smi -L
DATA=${DATA:-/tmp/synth}; RUNS=/tmp/runs
t0=$(date +%s)
[ -f $DATA/val_scanrefer.json ] || tools/make_synthetic.sh $DATA "$NTRAIN" "$NVAL" "$(nproc)" || exit 1
echo "[device] data ready after $(( $(date +%s) - t0 )) s"
if [[ $SECS == until:* ]]; then
  SECS=$(( ${SECS#until:} - ($(date +%s) - t_script) - ${EXPORT_MARGIN:-15} ))
  (( SECS > 30 )) || { echo "[device] no time left to train (set-up took $(( $(date +%s) - t_script )) s)"; exit 1; }
  echo "[device] training for $SECS s"
fi
nphys=$(nvidia-smi -L | wc -l)
gpus=($(seq 0 $(( nphys - 1 )))); [ -n "${CUDA_VISIBLE_DEVICES:-}" ] && gpus=(${CUDA_VISIBLE_DEVICES//,/ })
ngpu=${#gpus[@]}
workers=$(( $(nproc) / nphys - 3 )); workers=$(( workers < 2 ? 2 : workers > 12 ? 12 : workers )); workers=${WORKERS:-$workers}
extra=(); [ -n "${INIT:-}" ] && extra=(--init-weights "$INIT")
[ -n "${BATCH:-}" ] && extra+=(--set "train.batch_size=$BATCH")
[ -n "${EXTRA:-}" ] && extra+=($EXTRA)
mkdir -p $RUNS; rm -f $RUNS/$NAME/profile.txt  # a warm machine keeps an earlier call's run folder
launch=(torchrun --standalone --nproc_per_node "$ngpu"); [ "$ngpu" = 1 ] && launch=(python3)  # two 1-GPU runs: no shared port
"${launch[@]}" tools/train.py "$CONFIG" --set train.data_root=$DATA --set train.work_dir=$RUNS/$NAME \
  --set inference.task=gres --max-steps 1000000 --time-budget "$SECS" --save-every 500 --set train.num_workers=$workers --amp-dtype bf16 \
  --no-eval --profile-steps "${PROFILE_STEPS:-0}" "${extra[@]}" > $RUNS/$NAME.train.log 2>&1
echo "[device] $NAME trained: $(tail -c 300 $RUNS/$NAME.train.log | tr '\r' '\n' | tail -1)"
echo "[device] training done after $(( $(date +%s) - t0 )) s"
# weights + config only, no optimizer state; the model is not built (it may need spaCy, absent here)
python3 -c "import sys; from bqnet_model.checkpoint import export_weights as e; e(sys.argv[1], sys.argv[2])" \
  $RUNS/$NAME/latest.pth "$OUT/$NAME.pth"
cp $RUNS/$NAME/metrics.jsonl "$OUT/$NAME.metrics.jsonl"
[ -f $RUNS/$NAME/profile.txt ] && cp $RUNS/$NAME/profile.txt "$OUT/$NAME.profile.txt"
tr '\r' '\n' < $RUNS/$NAME.train.log | grep -v "step/s\]$" | tail -40 > "$OUT/$NAME.train.log"
evaluate() {  # task gpu
  CUDA_VISIBLE_DEVICES=$2 python3 tools/train.py "$CONFIG" --gpu_id 0 --set train.data_root=$DATA \
    --set train.work_dir=$RUNS/eval_${NAME}_$1 --set inference.task=$1 --checkpoint "$OUT/$NAME.pth" \
    --set train.num_workers=4 > $RUNS/eval_${NAME}_$1.log 2>&1
  echo "== $NAME $1"; tr '\r' '\n' < $RUNS/eval_${NAME}_$1.log | grep -A4 "^evaluation"  # after tqdm's \r
}
if [ -z "${NOEVAL:-}" ]; then  # NOEVAL=1: leave the evaluation to a CPU machine (more device time for training)
  evaluate res ${gpus[0]} & evaluate gres ${gpus[$(( ngpu > 1 ? 1 : 0 ))]} &
  wait
fi
python3 - $RUNS "$OUT/evals.json" "$NAME" <<'PYEOF'
import json, sys
from pathlib import Path
runs = Path(sys.argv[1]); res = {}
for p in sorted(runs.glob(f"eval_{sys.argv[3]}_*/eval_val.json")):
    res[p.parent.name] = json.loads(p.read_text())
Path(sys.argv[2]).write_text(json.dumps(res, indent=1))
PYEOF
echo "[device] evaluation done after $(( $(date +%s) - t0 )) s"
return_csrc_build "$OUT"  # tools/device_setup.sh
