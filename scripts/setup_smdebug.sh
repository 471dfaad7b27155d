#!/usr/bin/env bash
# Create .venv-smdebug: the Python environment of a SageMaker training job (torch plus the job's
# requirements, src/bincount/launch/sagemaker_requirements.txt), with bincount and pytest. smdebug
# pins numpy<2 and protobuf<=3.20.3, which clash with the main .venv (numpy 2, wandb's protobuf),
# hence a second environment. Idempotent: nothing to do while the requirements are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
ENV=.venv-smdebug
REQS=src/bincount/launch/sagemaker_requirements.txt
STAMP="$(sha256sum "$REQS" | cut -c1-16) torch==${TORCH_VERSION:-2.14.1}"
if [ -f "$ENV/.complete" ] && [ "$(cat "$ENV/.complete")" = "$STAMP" ]; then
  exit 0
fi
if [ ! -x "$ENV/bin/python" ]; then
  "$PYTHON" -m venv "$ENV"
  "$ENV/bin/python" -m pip install -q --upgrade pip
fi
# torch/torchvision pinned as in setup.sh (the pair on the dev machines' disk).
"$ENV/bin/python" -m pip install -q "torch==${TORCH_VERSION:-2.14.1}" "torchvision==${TORCHVISION_VERSION:-0.29.1}"
"$ENV/bin/python" -m pip install -q -r "$REQS" "pytest>=8"
"$ENV/bin/python" -m pip install -q --no-deps -e .
echo "$STAMP" > "$ENV/.complete"
echo "smdebug environment ready in $ENV"
