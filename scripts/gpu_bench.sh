#!/usr/bin/env bash
# The GPU benchmarks of issue 15, as one prepared call of a lent H100/H200 (under 8 minutes):
# SASRec+ Beauty epoch, ADRec Beauty validation pass, three-stage ADRec Beauty end to end, with
# its accuracy, written to benchmarks/gpu.md (benchmarks/bench_gpu.py says how each is measured).
# Installs nothing; runs alone on the GPU (nothing else may share it while it times).
#   bash scripts/gpu_bench.sh             # on the GPU machine
#   bash scripts/gpu_bench.sh --dry-run   # every step on the tiny preset, on any machine (CI)
# OUT=dir puts the report elsewhere; COMMIT=sha names the code where the copy has no .git.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
DRY=""
OUT=${OUT:-benchmarks}
for a in "$@"; do
  case "$a" in
    --dry-run) DRY="--dry-run" ;;
    *) echo "gpu_bench.sh: unknown argument '$a'; the only option is --dry-run" >&2; exit 2 ;;
  esac
done
if [ -z "$DRY" ] && command -v nvidia-smi >/dev/null; then
  # nothing else may use the GPU while it times
  busy=$(nvidia-smi --query-compute-apps=pid --format=csv,noheader | wc -l)
  if [ "$busy" -gt 0 ]; then
    echo "gpu_bench.sh: $busy other process(es) use the GPU; the timings need it alone" >&2
    exit 2
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
date -u
NAME=gpu.md; [ -n "$DRY" ] && NAME=gpu-dry-run.md
timeout 470 python3 benchmarks/bench_gpu.py $DRY --dataset beauty --out "$OUT/$NAME"
date -u
