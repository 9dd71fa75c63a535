#!/usr/bin/env python3
"""Project function calls per frame: the real `edge-anon replay` over a clip, calls counted in the frame loop.

    python scripts/count_calls.py [CLIP] [-c CONFIG] [--set KEY=VALUE ...]

Runs `edge-anon replay CLIP --bind ipc://<private dir>` (as fast as possible, no subscriber) under
`sys.setprofile` / `threading.setprofile` and counts the Python function calls whose code lies in the
`edge` package, made on the camera's frame-loop thread (`loop-<camera>`: read, detect, mask, send) and
on the detector's worker threads. Start-up and shutdown on the main thread are not counted. Prints
one JSON line: frames, calls, calls per frame, and the ten most called functions.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import threading
from pathlib import Path

from benchlib import SHARED, harden_tool

DEFAULT_CLIP = SHARED / "data" / "video" / "udacity_CarND-LaneLines-P1_solidWhiteRight.mp4"


def main(argv: list[str] | None = None) -> int:
    harden_tool()  # no core dumps holding frames, onnxruntime telemetry off
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("clip", nargs="?", default=str(DEFAULT_CLIP))
    p.add_argument("-c", "--config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    if not Path(args.clip).is_file():
        print(f"count_calls: no such clip {args.clip}", file=sys.stderr)
        return 2

    import edge
    from edge.cli import main as edge_main

    package = str(Path(edge.__file__).resolve().parent)
    counts: collections.Counter = collections.Counter()
    per_function: collections.Counter = collections.Counter()
    lock = threading.Lock()

    def profile(frame, event, arg):
        if event != "call":
            return
        name = threading.current_thread().name
        if not (name.startswith("loop-") or name.startswith("detect")):
            return
        code = frame.f_code
        if code.co_filename.startswith(package):
            with lock:
                counts["calls"] += 1
                per_function[f"{Path(code.co_filename).relative_to(package)}:{code.co_name}"] += 1

    frames = {"n": 0}
    with tempfile.TemporaryDirectory(prefix="count-calls-") as tmp:
        cli = ["replay", args.clip, "--bind", f"ipc://{tmp}/out.sock", "--log-level", "error"]
        if args.config:
            cli += ["-c", args.config]
        for s in args.set:
            cli += ["--set", s]
        threading.setprofile(profile)
        sys.setprofile(profile)
        try:
            rc = edge_main(cli)
        finally:
            sys.setprofile(None)
            threading.setprofile(None)
    # frames handed to the pipeline: one per call of the frame loop's detect entry point
    frames["n"] = max((v for k, v in per_function.items() if k.endswith("pipeline.py:process")), default=0)
    n = frames["n"]
    print(json.dumps({"rc": rc, "frames": n, "calls": counts["calls"],
                      "calls_per_frame": round(counts["calls"] / n, 1) if n else None,
                      "top": per_function.most_common(10)}))
    return 0 if rc == 0 and n else 1


if __name__ == "__main__":
    sys.exit(main())
