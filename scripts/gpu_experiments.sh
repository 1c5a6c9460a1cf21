#!/usr/bin/env bash
# The GPU experiment run (one call of a lent H100/H200; see results/README.md).
# Trains, through `collapse-kit reproduce --train-only` (i.e. `collapse-kit train --resume` per
# run), on one GPU with several runs at a time, what the 2-core CPU cannot (issue 13's parity
# grid with shuffled batches, the default; the CPU runs are in results/*-cpu-shuffled):
#   1. ML-100K: DiffuRec and DreamRec x 3 seeds x {strict, official}; ADRec's Table 4 ablations
#      (seed 0; reproduce also retrains the main ADRec runs they start from)
#   2. Baby, Beauty, Toys, Sports: DiffuRec and DreamRec, seed 0, strict
#   3. Sports: SASRec+ and ADRec, seed 0, {strict, official}
#   4. Baby and Beauty: ADRec's ablations, seed 0, strict
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
$CK reproduce --datasets ml-100k --models adrec diffurec dreamrec --ablations --seeds 3 \
  --preset paper --out $R/ml100k --jobs ${JOBS_ML:-10} --train-only > $R/ml100k.log 2>&1 &
$CK reproduce --datasets baby beauty toys sports --models diffurec dreamrec --seeds 1 \
  --protocols strict --preset paper --out $R/amazon --jobs ${JOBS_AMZ:-4} --train-only > $R/amazon-diff.log 2>&1 &
$CK reproduce --datasets sports --models sasrec adrec --seeds 1 --preset paper --out $R/amazon \
  --jobs 2 --train-only > $R/sports.log 2>&1 &
$CK reproduce --datasets baby beauty --models adrec --ablations --seeds 1 --protocols strict \
  --preset paper --out $R/amazon-ablations --jobs ${JOBS_ABL:-4} --train-only > $R/ablations.log 2>&1 &
while [ $(( $(date +%s) - START )) -lt "$BUDGET" ] && [ -n "$(jobs -r)" ]; do sleep 5; done
pkill -TERM -f "collapse_kit.cli" ; sleep 3; pkill -KILL -f "collapse_kit.cli"
echo "elapsed $(( $(date +%s) - START )) s"; date -u
tail -n 60 $R/*.log
python3 scripts/pack_runs.py $R "$OUT"
for f in $R/*.log; do echo "== $f"; cat "$f"; done > "$OUT/logs.txt"
ls -la "$OUT"
