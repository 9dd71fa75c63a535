#!/usr/bin/env python3
"""Tracker settings compared on the synthetic clips, on ONE detection run (edge.eval.clips.measure).

    EDGE_MODEL_PATH=../shared/models python scripts/hold_variants.py -c configs/recall-faces.toml \
        --variant track.full_hold_hits=1 --variant track.full_hold_hits=2 --max-frames 60 --json out/tracking_variants.json

Each --variant is a comma-separated list of track.* overrides (on the config's [track]); "no hold" and
the config's own [track] are always measured. Prints eval_tracking.py's table (protected face-frames,
leaked frames, tracks with any leak per size bucket, the over-masked area) and writes its JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from benchlib import harden_tool

from edge.compose import build_detector, load_config
from edge.config import parse_value
from edge.eval import clips as C
from edge.track import Tracker


def main() -> int:
    harden_tool()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-c", "--config")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--variant", action="append", default=[], help="track.KEY=VALUE[,track.KEY=VALUE...]")
    ap.add_argument("--videos", nargs="*")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tracks", type=int)
    ap.add_argument("--max-frames", type=int)
    ap.add_argument("--min-crop", type=float, default=20.0)
    ap.add_argument("--json")
    args = ap.parse_args()
    cfg = load_config(args.config, args.set)
    trackers = {"no hold": lambda: None, "config": lambda: Tracker(cfg.track)}
    for v in args.variant:
        changes = {}
        for part in v.split(","):
            key, _, value = part.partition("=")
            if not key.startswith("track."):
                raise SystemExit(f"--variant {v!r}: only track.* keys")
            changes[key.removeprefix("track.")] = parse_value(value)
        params = dataclasses.replace(cfg.track, **changes)
        trackers[v] = lambda p=params: Tracker(p)
    crops = C.load_face_crops(min_size=args.min_crop)
    specs = [s for s in C.DEFAULT_CLIPS if not args.videos or s.name in args.videos or s.video in args.videos]
    specs = [dataclasses.replace(s, seed=s.seed + args.seed, tracks=args.tracks or s.tracks,
                                 frames=min(s.frames, args.max_frames) if args.max_frames else s.frames) for s in specs]
    clips = [C.make_clip(s, crops) for s in specs]
    result = C.measure(clips, build_detector(cfg), cfg.mask, trackers)
    print(C.format_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
