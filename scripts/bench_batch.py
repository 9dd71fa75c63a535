"""Throughput of `edge-anon batch` with 1 and 2 workers against `replay` of the same inputs, and Ray's start-up.

    .venv/bin/python scripts/bench_batch.py                       # the two shared dashcam clips, 2 CPUs
    .venv/bin/python scripts/bench_batch.py --repeats 3 --json /tmp/bench_batch.json

The inputs are the shared 960x540 (221 frames) and 1280x720 (38 frames) dashcam clips as they are (no
copy of their frames is written). Every command runs as a subprocess exactly as a user types it, with
the default config (faces and plates), PNG output into a private temporary folder removed at the end:

- replay: one `edge-anon replay` per input, one after another (what a user without batch does);
  wall time includes each process's start-up and model loading.
- batch 1 / batch 2: one `edge-anon batch` over all inputs with 1 actor (1 CPU share) or 2 actors
  (0.75 CPU each, so a paint task keeps its half CPU); wall time includes Ray's start-up, the actors'
  model loading and painting; the batch's own summary splits those out.
- Ray start-up alone: an embedded instance (edge.fleet.run.LocalRay) started and shut down.

On a shared 2-core machine the figures are noisy: take the medians of --repeats runs and say so.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

from benchlib import ROOT, SHARED, harden_tool

CLIPS = ("udacity_CarND-LaneLines-P1_solidWhiteRight.mp4", "udacity_CarND-Vehicle-Detection_test_video.mp4")
EDGE = [sys.executable, "-m", "edge"]
SUMMARY = re.compile(r"(\d+) frames detected in ([\d.]+) s \(([\d.]+) frames/s\) on (\d+) worker\(s\)"
                     r"(?:, (\d+) ms per frame in an actor)?; actors ready after ([\d.]+) s \(Ray start-up ([\d.]+) s\)")


def frame_count(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    return n


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    t = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.monotonic() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, proc.stderr


def ray_start_s(env: dict) -> float:
    code = ("import time; from edge.fleet.run import LocalRay; t=time.monotonic(); "
            "r=LocalRay(2, 100); s=time.monotonic()-t; r.close(); print(s)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunk-frames", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    harden_tool()
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
    if (SHARED / "models").is_dir():
        env["EDGE_MODEL_PATH"] = os.pathsep.join(p for p in (env.get("EDGE_MODEL_PATH", ""), str(SHARED / "models")) if p)
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))  # 0700, for the masked outputs
    try:
        inputs = [str(SHARED / "data/video" / name) for name in CLIPS]
        total = sum(frame_count(Path(p)) for p in inputs)
        rows: dict[str, list] = {"replay": [], "batch 1 worker": [], "batch 2 workers": [], "ray start-up": []}
        for r in range(args.repeats):
            wall = 0.0
            for i, src in enumerate(inputs):
                w, _ = timed([*EDGE, "replay", src, "--output-dir", str(work / f"replay{r}_{i}")], env)
                wall += w
            rows["replay"].append({"wall_s": wall, "fps": total / wall})
            for label, sets in (("batch 1 worker", ["fleet.workers=1", "fleet.cpus_per_actor=1"]),
                                ("batch 2 workers", ["fleet.workers=2", "fleet.cpus_per_actor=0.75"])):
                cmd = [*EDGE, "batch", *inputs, "--output-dir", str(work / f"{label}{r}".replace(" ", "_")),
                       "--set", f"fleet.chunk_frames={args.chunk_frames}", "--set", "fleet.num_cpus=2"]
                for s in sets:
                    cmd += ["--set", s]
                w, err = timed(cmd, env)
                m = SUMMARY.search(err)
                if m is None:
                    raise SystemExit(f"no batch summary in:\n{err[-2000:]}")
                rows[label].append({"wall_s": w, "fps": total / w, "detect_wall_s": float(m[2]),
                                    "actor_ms_per_frame": float(m[5] or 0), "actors_ready_s": float(m[6]),
                                    "ray_start_s": float(m[7])})
            rows["ray start-up"].append({"wall_s": ray_start_s(env)})
        result = {"frames": total, "inputs": [Path(p).name for p in inputs], "chunk_frames": args.chunk_frames,
                  "cpus": os.cpu_count(), "repeats": args.repeats,
                  "median": {k: {f: round(median([row[f] for row in v]), 2) for f in v[0]} for k, v in rows.items()},
                  "runs": rows}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{result['frames']} frames ({', '.join(result['inputs'])}), {result['cpus']} CPUs, "
          f"median of {args.repeats}:")
    for k, v in result["median"].items():
        print(f"  {k:16s} " + "  ".join(f"{f} {x:g}" for f, x in v.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
