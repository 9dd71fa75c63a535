"""What the in-graph score threshold saves (runtime.graph_filter): bytes out of the model and host decode time.

    .venv/bin/python scripts/bench_decode.py                         # CPU, configs/gpu-1080p.toml, 1080p
    .venv/bin/python scripts/bench_decode.py --provider cuda         # on the GPU machine

For each class of the config, one real 1080p dashcam frame through its model at scale 1.0, once with
every output downloaded whole and once with the threshold in the graph: the bytes the run returns and
the median time of the family's host decode of them (threshold: the class's own). The decoded boxes of
the two are checked to be the same, so the saving is not bought with a different answer.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from benchlib import ROOT, SHARED, harden_tool, read_frames

from edge import config as config_mod
from edge.compose import load_model
from edge.timing import Stopwatch

VIDEO = SHARED / "data/video/udacity_CarND-Vehicle-Detection_test_video.mp4"


def decode_ms(fn, repeats: int) -> tuple[float, tuple]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times)), out


def measure(cfg, frame: np.ndarray, repeats: int) -> dict:
    rows = {}
    for class_name, cls_cfg in cfg.detect.classes():
        if not cls_cfg.enabled:
            continue
        row = {}
        results = {}
        for graph_filter in (False, True):
            c = config_mod.override(cfg, {"runtime.graph_preprocess": True, "runtime.graph_filter": graph_filter})
            backend, _ = load_model(c, cls_cfg.model, (1.0,))
            raw, hw = backend.run([frame], 1.0, 1.0, cls_cfg.score_threshold, Stopwatch())
            ms, found = decode_ms(lambda: backend.decode(raw, hw, cls_cfg.score_threshold, 0, 1), repeats)
            outputs = raw.values() if isinstance(raw, dict) else raw  # the filter backend's outputs are named
            key = "filtered" if graph_filter else "whole"
            row[key] = {"bytes": int(sum(o.nbytes for o in outputs)), "decode_ms": round(ms, 3),
                        "boxes": int(len(found[0])), "provider": backend.provider}
            results[key] = found
        np.testing.assert_allclose(results["filtered"][0], results["whole"][0], atol=1e-4)
        rows[class_name] = row
    return rows


def main(argv: list[str] | None = None) -> int:
    harden_tool()  # no core dumps holding frames, onnxruntime telemetry off
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "-c", default=str(ROOT / "configs/gpu-1080p.toml"))
    p.add_argument("--provider", choices=("cpu", "cuda", "tensorrt"), default="cpu")
    p.add_argument("--size", default="1920x1080", help="frame size WxH (the clip is upscaled)")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if (SHARED / "models").is_dir():
        os.environ.setdefault("EDGE_MODEL_PATH", str(SHARED / "models"))
    cfg = config_mod.override(config_mod.load(args.config), {"runtime.provider": args.provider})
    w, h = (int(v) for v in args.size.lower().split("x"))
    frame = read_frames(VIDEO, 1, (w, h))[0]
    rows = measure(cfg, frame, args.repeats)
    print(f"{args.size}, {args.config}, provider {args.provider}; host decode median of {args.repeats}")
    print(f"{'class':8s} {'whole bytes':>12s} {'filtered bytes':>15s} {'whole ms':>9s} {'filtered ms':>12s} {'boxes':>6s}")
    for name, r in rows.items():
        print(f"{name:8s} {r['whole']['bytes']:12d} {r['filtered']['bytes']:15d} {r['whole']['decode_ms']:9.3f} "
              f"{r['filtered']['decode_ms']:12.3f} {r['filtered']['boxes']:6d}")
    if args.json:
        args.json.write_text(json.dumps({"size": args.size, "config": args.config, "provider": args.provider,
                                         "classes": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
