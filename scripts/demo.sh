#!/usr/bin/env bash
# One command from a fresh clone: set up, then anonymize a recorded dashcam clip into out/demo, each
# painted region outlined and labelled (--annotate: class, score, "held"), so a person sees why it was painted.
#   scripts/demo.sh [VIDEO_OR_IMAGE_FOLDER] [extra edge-anon replay flags...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh
shared=${EDGE_SHARED:-$root/../shared}
if [ -d "$shared/models" ]; then
    export EDGE_MODEL_PATH="${EDGE_MODEL_PATH:+$EDGE_MODEL_PATH:}$shared/models"
fi
src=${1:-$shared/data/video/udacity_CarND-Vehicle-Detection_test_video.mp4}
shift || true
rm -rf out/demo
.venv/bin/edge-anon replay "$src" --output-dir out/demo --annotate "$@"
echo "masked frames, each painted region outlined and labelled, and detections.jsonl are in $root/out/demo"
echo "(the frames as the product writes them, without outlines: .venv/bin/edge-anon replay SOURCE --output-dir DIR)"
