#!/usr/bin/env bash
# Train the shipped demo model and its ablation side by side on a 2-GPU machine, evaluate both
# on held-out synthetic rooms (RES and GRES), export slim checkpoints. Run from the repo root
# with the .gpu bundle present (../shared/gpu/make-bundle; tools/pack_text_encoder.py):
#   bash tools/device_train.sh OUT_DIR [TRAIN_SECONDS] [N_TRAIN] [N_VAL]
set -uo pipefail
OUT=${1:?output folder}; SECS=${2:-300}; NTRAIN=${3:-400}; NVAL=${4:-30}
mkdir -p "$OUT"
source tools/device_setup.sh || exit 1
nvidia-smi -L
DATA=/tmp/synth; RUNS=/tmp/runs
t0=$(date +%s)
[ -f $DATA/val_scanrefer.json ] || tools/make_synthetic.sh $DATA "$NTRAIN" "$NVAL" 30 || exit 1
echo "[device] data ready after $(( $(date +%s) - t0 )) s"
ngpu=$(nvidia-smi -L | wc -l)
train() {  # name config gpu
  CUDA_VISIBLE_DEVICES=$3 python3 tools/train.py $2 --gpu_id 0 --data-root $DATA --work-dir $RUNS/$1 --task gres \
    --max-steps 900 --time-budget "$SECS" --num-workers 14 --amp-dtype bf16 --no-eval > $RUNS/$1.train.log 2>&1
  echo "[device] $1 trained: $(tail -c 300 $RUNS/$1.train.log | tr '\r' '\n' | tail -1)"
}
mkdir -p $RUNS
train full config/tiny.yaml 0 &
train ablation config/tiny_ablation.yaml $(( ngpu > 1 ? 1 : 0 )) &
wait
echo "[device] training done after $(( $(date +%s) - t0 )) s"
for name in full ablation; do
  python3 - $RUNS/$name/latest.pth "$OUT/$name.pth" <<'PYEOF'
import sys
from bqnet_model.checkpoint import load_checkpoint, save_checkpoint
model, cfg, meta = load_checkpoint(sys.argv[1], "cpu")
save_checkpoint(sys.argv[2], model, cfg, meta=meta)  # weights + config only, no optimizer state
PYEOF
  cp $RUNS/$name/metrics.jsonl "$OUT/$name.metrics.jsonl"
done
ls -la "$OUT"
evaluate() {  # name task gpu
  CUDA_VISIBLE_DEVICES=$3 python3 tools/train.py config/tiny.yaml --gpu_id 0 --data-root $DATA --work-dir $RUNS/eval_$1_$2 \
    --task $2 --checkpoint "$OUT/$1.pth" --num-workers 4 > $RUNS/eval_$1_$2.log 2>&1
  echo "== $1 $2"; grep -A4 "^evaluation" $RUNS/eval_$1_$2.log
}
evaluate full res 0 & evaluate full gres 0 &
evaluate ablation res $(( ngpu > 1 ? 1 : 0 )) & evaluate ablation gres $(( ngpu > 1 ? 1 : 0 )) &
wait
python3 - $RUNS "$OUT/evals.json" <<'PYEOF'
import json, sys
from pathlib import Path
runs = Path(sys.argv[1]); res = {}
for p in sorted(runs.glob("eval_*/eval_val.json")):
    res[p.parent.name] = json.loads(p.read_text())
Path(sys.argv[2]).write_text(json.dumps(res, indent=1))
PYEOF
echo "[device] evaluation done after $(( $(date +%s) - t0 )) s"
