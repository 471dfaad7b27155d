#!/usr/bin/env bash
# Create .venv at the project root and install bincount with every extra (idempotent).
# EXTRAS=all by default; e.g. EXTRAS=dev for a lighter install.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EXTRAS=${EXTRAS:-all}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch/torchvision first and pinned to the pair the pyproject range admits and a dev machine
# holds on disk; a bare `pip install torch` elsewhere would pull a newer CUDA build (GBs).
.venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.14.1}" "torchvision==${TORCHVISION_VERSION:-0.29.1}"
.venv/bin/python -m pip install -q -e ".[${EXTRAS}]"
echo "bincount installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
