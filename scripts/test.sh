#!/usr/bin/env bash
# Install (if needed) and run the fast test suite; pass pytest arguments through (e.g. -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the SageMaker job's environment with smdebug (numpy<2), for tests/test_debugger.py
bash scripts/setup_smdebug.sh
export BINCOUNT_NO_PROGRESS=1
exec .venv/bin/python -m pytest "$@"
