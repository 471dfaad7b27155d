#!/usr/bin/env bash
# Install (if needed) and run the fast test suite; pass pytest arguments through (e.g. -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export BINCOUNT_NO_PROGRESS=1
exec .venv/bin/python -m pytest "$@"
