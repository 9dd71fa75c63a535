#!/usr/bin/env bash
# Every GPU figure of the README in one run, for a lent GPU machine where the package runs from the
# source tree (PYTHONPATH) and onnxruntime-gpu was installed by ../shared/tools/gpu-wheels.sh.
#   scripts/gpu_measure.sh OUT_DIR [PROVIDER] [FRAMES]
# Each step is independent and time-limited: one failing step is reported, the others still run.
set -u
out=${1:?usage: scripts/gpu_measure.sh OUT_DIR [PROVIDER] [FRAMES]}
provider=${2:-cuda}
frames=${3:-300}
mkdir -p "$out"
py=${PYTHON:-python3}
shared=${EDGE_SHARED:-$PWD/../shared}
export EDGE_MODEL_PATH="${EDGE_MODEL_PATH:+$EDGE_MODEL_PATH:}$shared/models" PYTHONUNBUFFERED=1 ORT_DISABLE_TELEMETRY=1
cfg=configs/gpu-1080p.toml

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    echo "=== $name: $*"
    local t0=$SECONDS
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$out/$name.log"
    echo "=== $name: rc $rc in $((SECONDS - t0)) s"
}

step env 60 bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nproc; $py -c 'import onnxruntime as o, numpy, cv2; print(o.__version__, o.get_available_providers(), numpy.__version__, cv2.__version__)'"
step gpu_tests 240 $py -m pytest -q -p no:cacheprovider -m gpu tests
prof() { local name=$1; shift; step "$name" 200 $py scripts/profile_latency.py -c $cfg --provider "$provider" --json "$out/$name.json" --png "$out/$name.png" "$@"; }
# --preload: frames come from memory as from a camera; the short clip's reopen at every loop stays out
prof profile_1080p --resize 1920x1080 --frames "$frames" --preload
prof profile_1080p_file --resize 1920x1080 --frames "$frames"
prof profile_1080p_composite --resize 1920x1080 --composite --frames "$frames" --preload
prof profile_1080p_faces_only --resize 1920x1080 --frames "$frames" --preload --set detect.plate.enabled=false
prof profile_1080p_no_filter --resize 1920x1080 --frames "$frames" --preload --set runtime.graph_filter=false
prof profile_4k --resize 3840x2160 --frames $((frames / 3)) --preload --set runtime.cudnn_conv_algo_search=heuristic
prof profile_8x1080p30 --resize 1920x1080 --streams 8 --realtime --fps 30 --deadline --frames "$frames" --preload
prof profile_8x1080p30_batched --resize 1920x1080 --streams 8 --realtime --fps 30 --deadline --frames "$frames" --preload --batch
step bench_decode 120 $py scripts/bench_decode.py --provider "$provider" --json "$out/bench_decode.json"
step bench_plates 240 $py scripts/bench_plates.py --provider "$provider" --skip-eval --frames 100 --frame-config $cfg --json "$out/bench_plates.json"
step eval_faces 200 $py -m edge eval -c $cfg --set runtime.provider="$provider" --set detect.face.aspect=1.3 --json "$out/eval_faces.json"
step eval_plates 200 $py -m edge eval --dataset plates -c $cfg --set runtime.provider="$provider" --json "$out/eval_plates.json"
