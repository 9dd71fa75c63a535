#!/usr/bin/env bash
# One command from a fresh clone: set up, then anonymize a recorded dashcam clip into out/demo.
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
.venv/bin/edge-anon replay "$src" --output-dir out/demo "$@"
echo "masked frames and detections.jsonl are in $root/out/demo"
