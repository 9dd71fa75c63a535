"""Peak resident memory and time of detection on one frame: what runtime.max_input_px bounds.

    prlimit --as=8000000000 .venv/bin/python scripts/peak_memory.py -c configs/plates-far.toml \\
        --image ../shared/data/eval/plates/openalpr_dev/eu7.jpg
    prlimit --as=8000000000 .venv/bin/python scripts/peak_memory.py --image FRAME --size 3840x2160 --runs 2

Always under an address-space limit (prlimit --as, ulimit -v): a config that cannot bound itself would
otherwise take the machine down. Prints one line: frame size, windows planned, boxes, the fastest
frame of --runs, the RSS once the detector is loaded and the peak (ru_maxrss). Time depends on load.
"""
from __future__ import annotations

import argparse
import resource
import time

import cv2

from benchlib import harden_tool

from edge.compose import build_detector, load_config
from edge.detect.detector import EnsembleDetector, OnnxDetector
from edge.detect.multiscale import plan


def windows(detector, h: int, w: int) -> int:
    """Windows of every class detector's passes for a frame of this size (the context stage: one)."""
    n = 0
    for d in detector.detectors:
        for member in d.members if isinstance(d, EnsembleDetector) else [d]:
            n += len(plan(h, w, member.passes, member.max_input_px)) if isinstance(member, OnnxDetector) else 1
    return n


def main() -> None:
    harden_tool()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-c", "--config", help="TOML config (default: the built-in defaults)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    ap.add_argument("--image", required=True, help="the frame")
    ap.add_argument("--size", help="resize the frame to WxH first (e.g. 3840x2160)")
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    cfg = load_config(args.config, args.set)
    image = cv2.imread(args.image)
    if image is None:
        raise SystemExit(f"cannot read {args.image}")
    if args.size:
        w, h = (int(v) for v in args.size.lower().split("x"))
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    detector = build_detector(cfg)
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    best = float("inf")
    for _ in range(max(1, args.runs)):
        t = time.perf_counter()
        found = detector.detect(image)
        best = min(best, time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    h, w = image.shape[:2]
    print(f"{args.config or 'defaults'} {w}x{h}: {windows(detector, h, w)} windows, {len(found)} boxes, "
          f"{best:.2f} s/frame (best of {max(1, args.runs)}), RSS loaded {loaded / 1e6:.2f} GB, "
          f"peak {peak / 1e6:.2f} GB")


if __name__ == "__main__":
    main()
