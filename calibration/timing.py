"""Interleaved CPU timing of fp32 vs int8 models on one input size: python -m calibration.timing A.onnx B.onnx.

Runs alternate between the models (A, B, A, B...) so load from other processes hits both alike;
the figure is the median per model. Use it on a quiet machine for the numbers that matter.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge.runtime.hardening import harden_tool


def session(path: str, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def interleaved(paths: list[str], blob: np.ndarray, threads: int, runs: int) -> dict[str, dict]:
    sessions = [session(p, threads) for p in paths]
    names = [s.get_inputs()[0].name for s in sessions]
    for s, n in zip(sessions, names):
        s.run(None, {n: blob})
    times: list[list[float]] = [[] for _ in paths]
    for _ in range(runs):
        for k, (s, n) in enumerate(zip(sessions, names)):
            t = time.perf_counter()
            s.run(None, {n: blob})
            times[k].append((time.perf_counter() - t) * 1e3)
    return {p: {"median_ms": round(float(np.median(t)), 2), "p90_ms": round(float(np.percentile(t, 90)), 2)}
            for p, t in zip(paths, times)}


def main(argv: list[str] | None = None) -> int:
    harden_tool()
    p = argparse.ArgumentParser(prog="python -m calibration.timing", description=__doc__)
    p.add_argument("models", nargs="+")
    p.add_argument("--size", default="1280x736", help="network input WxH (multiples of 32)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    blob = np.random.default_rng(0).uniform(0, 255, (1, 3, h, w)).astype(np.float32)
    result = interleaved(args.models, blob, args.threads, args.runs)
    for path, r in result.items():
        print(f"{Path(path).name:40s} median {r['median_ms']:8.2f} ms  p90 {r['p90_ms']:8.2f} ms "
              f"({args.size}, {args.threads} threads, CPU)")
    if args.json:
        args.json.write_text(json.dumps({"size": args.size, "threads": args.threads, "runs": args.runs,
                                         "models": result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
