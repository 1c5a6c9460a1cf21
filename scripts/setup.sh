#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: CPU torch first (so pip never pulls a multi-GB CUDA
# build), then this package with its test extras. On a machine that already has a torch (e.g. a
# CUDA build), that torch is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install -q "torch==2.13.0"
fi
# The import check runs outside the checkout: from its root the packages import through the
# working directory even when nothing is installed (a checkout carried to a fresh machine).
if ! (cd / && "$PY" -c "import collapse_kit, adrec, probes, openTSNE, pytest, hypothesis, nbclient") \
     >/dev/null 2>&1 \
   || [ pyproject.toml -nt .setup-stamp ]; then
  "$PY" -m pip install -q -e ".[test]"
  touch .setup-stamp
fi
