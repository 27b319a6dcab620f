#!/usr/bin/env bash
# Set up a virtual environment in .venv with cerberus (distribution cerberus-pathology), its
# Ray extra and its test tools.
# On a machine without an NVIDIA GPU the CPU build of torch is installed first, so
# pip does not pull several GB of CUDA packages. Usage: scripts/setup.sh [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install -q torch          # CUDA build from PyPI
  else
    "$VENV/bin/python" -m pip install -q torch==2.13.0  # CPU build
  fi
fi
"$VENV/bin/python" -m pip install -q -e ".[test,ray]"
echo "cerberus-pathology installed in $VENV: $("$VENV/bin/cerberus" --version)"
