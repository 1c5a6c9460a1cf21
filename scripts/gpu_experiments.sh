#!/usr/bin/env bash
# The GPU experiment run (one call of a lent H100/H200; see results/README.md).
# Trains, through `collapse-kit reproduce --train-only` (i.e. `collapse-kit train --resume` per
# run), on one GPU with several runs at a time:
#   1. ML-100K: SASRec+, ADRec, DiffuRec, DreamRec x 3 seeds x {strict, official} + ablations
#   2. Beauty, Toys, Baby, Sports: SASRec+ and ADRec, seed 0, strict
#   3. Beauty: DiffuRec and DreamRec, seed 0, strict
# Stops every run at BUDGET seconds (runs are resumable), then packs light checkpoints and logs
# into $OUT (scripts/pack_runs.py). Usage: OUT=dir BUDGET=480 bash scripts/gpu_experiments.sh
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # many runs share 16 cores
R=gpu-runs
OUT=${OUT:-$R/out}
mkdir -p "$R" "$OUT"
BUDGET=${BUDGET:-480}
START=$(date +%s)
python3 -c "import torch, platform; print('torch', torch.__version__, torch.cuda.get_device_name(0), platform.node())"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
date -u
CK="python3 -m collapse_kit.cli"
$CK reproduce --datasets ml-100k --models sasrec adrec diffurec dreamrec --ablations \
  --seeds 3 --preset paper --out $R/ml100k --jobs ${JOBS_ML:-12} --train-only > $R/ml100k.log 2>&1 &
$CK reproduce --datasets beauty toys baby sports --models sasrec adrec --seeds 1 \
  --protocols strict --preset paper --out $R/amazon --jobs ${JOBS_AMZ:-4} --train-only > $R/amazon.log 2>&1 &
$CK reproduce --datasets beauty --models diffurec dreamrec --seeds 1 --protocols strict \
  --preset paper --out $R/amazon --jobs 2 --train-only > $R/amazon-diff.log 2>&1 &
while [ $(( $(date +%s) - START )) -lt "$BUDGET" ] && [ -n "$(jobs -r)" ]; do sleep 5; done
pkill -TERM -f "collapse_kit.cli" ; sleep 3; pkill -KILL -f "collapse_kit.cli"
echo "elapsed $(( $(date +%s) - START )) s"; date -u
tail -n 60 $R/*.log
python3 scripts/pack_runs.py $R "$OUT"
for f in $R/*.log; do echo "== $f"; cat "$f"; done > "$OUT/logs.txt"
ls -la "$OUT"
