#!/usr/bin/env bash
# Create the virtual environment (.venv at the project root, or $VENV) and install bincount in it (idempotent).
# bash scripts/setup.sh [EXTRAS]: every extra by default (all: the tests, SageMaker, ONNX, W&B, Optuna); "core" is
# bincount alone, all that train.py and eval.py need (the README's first command: about a minute less to install);
# or a list, e.g. dev,onnx. Running it again with more extras adds them.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${1:-${EXTRAS:-all}}
if [ "$EXTRAS" = core ]; then TARGET=.; else TARGET=".[${EXTRAS}]"; fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch/torchvision first and pinned to the pair the pyproject range admits and a dev machine
# holds on disk; a bare `pip install torch` elsewhere would pull a newer CUDA build (GBs).
"$VENV/bin/python" -m pip install -q "torch==${TORCH_VERSION:-2.14.1}" "torchvision==${TORCHVISION_VERSION:-0.29.1}"
"$VENV/bin/python" -m pip install -q -e "$TARGET"
echo "bincount ($EXTRAS) installed in $VENV ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
