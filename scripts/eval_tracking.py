#!/usr/bin/env python3
"""Leaked frames per track on the synthetic clips, through the real pipeline, with and without the hold.

    .venv/bin/python scripts/eval_tracking.py --scales 1.0 2.0 --threshold 0.3 --hold 3 6 --json out/tracking.json
"""
import os
import sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(root))
shared_models = Path(os.environ.get("EDGE_SHARED", root.parent / "shared")) / "models"
if shared_models.is_dir():  # the same lookup the tests use: models by sha256 from the shared mirror
    os.environ["EDGE_MODEL_PATH"] = os.pathsep.join(p for p in (os.environ.get("EDGE_MODEL_PATH"), str(shared_models)) if p)

from edge.evalclips import main_eval  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_eval())
