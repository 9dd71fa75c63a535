#!/usr/bin/env bash
# Create .venv (if missing) and install the project with its test, fleet and plot extras (so the tests run
# Ray and draw the profiler's plots). Idempotent.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv
fi
stamp=.venv/.installed-$(cat setup.cfg pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[test,fleet,plot]"
    rm -f .venv/.installed-*
    touch "$stamp"
fi
