#!/usr/bin/env bash
# One command from a fresh clone: set up, then run the test suite (GPU tests skip without a GPU).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh
shared=${EDGE_SHARED:-$root/../shared}
if [ -d "$shared/models" ]; then
    export EDGE_MODEL_PATH="${EDGE_MODEL_PATH:+$EDGE_MODEL_PATH:}$shared/models"
fi
exec .venv/bin/python -m pytest "$@"
