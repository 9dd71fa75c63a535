#!/usr/bin/env python3
"""Leaked frames per track on the synthetic clips, through the real pipeline, with and without the hold.

Real wider_dev faces are moved over the dashcam and pedestrian clips (edge/evalclips.py) with per-frame
ground truth; the detector runs once per frame and every variant (no tracker, each --hold, each
--min-hits) masks with the same detections. Prints a markdown table per size bucket (protected
face-frames, leaked frames, tracks with any leak) with the over-masked area, and writes JSON:

    .venv/bin/python scripts/eval_tracking.py -c configs/recall-faces.toml --hold 3 6 10 --max-frames 60 \
        --json out/tracking.json

(~3 min on 2 contended cores; without a config: --scales 1.0 2.0 --threshold 0.3.) --seed N draws
other trajectories and faces; --videos dashcam720 dashcam540 pets picks clips.
"""
import os
import sys

from benchlib import SHARED, harden_tool

from edge.eval.clips import main_eval

shared_models = SHARED / "models"
if shared_models.is_dir():  # the same lookup the tests use: models by sha256 from the shared mirror
    os.environ["EDGE_MODEL_PATH"] = os.pathsep.join(p for p in (os.environ.get("EDGE_MODEL_PATH"), str(shared_models)) if p)

if __name__ == "__main__":
    harden_tool()
    sys.exit(main_eval())
