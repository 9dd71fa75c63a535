#!/usr/bin/env python3
"""What the paint stages cost and protect, replayed on detections collected once.

    EDGE_MODEL_PATH=../shared/models python scripts/sweep_paint.py [-c CONFIG] [--set k=v] [--only SET]
        [--cache out/paint-cache.npz] [--grid 'vehicles.zone_width=0.3,0.5' ...] [--utility] [--json F]

1. The config's detector (every enabled stage: faces, plates, the context stage and its crops) runs ONCE
   per image of every dev set (or `--only`); its raw detections are cached (`--cache`: written once, then
   read, so a sweep of paint settings costs no inference).
2. For each point of the grid (the product of the `--grid KEY=V1,V2,...` lists, applied as `--set`
   overrides on the config), the product's own paint stages (edge.compose.paint_stages: head growth and
   head zones, the plate filter, plate zones) and mask regions (edge.mask.regions) turn the cached
   detections into the painted map, scored with edge.eval.evaluate's rules: a labelled object is
   protected when >= 70% of its pixels are painted; over-masking = paint outside every labelled box.
3. Per set and point: protected share per class, over-masking, and the plate-zone fallback's share of it
   (zones per frame, share of the detected vehicles that got one, zone paint outside labelled boxes).
   A grid key `min_score.CLASS` (e.g. `--grid min_score.plate=0.2,0.3`) drops that class's cached
   detections below the score before painting: a threshold sweep on one cache collected at the lowest
   threshold (the whole-frame pass and the crops' plates share the class, so they share the threshold).
   With `--utility`: the share of persons and vehicles the judge (edge.eval.utility, as `edge-anon eval`
   judges) finds on the raw image that it still finds once the regions are painted in the point's
   mask.style (so `--grid mask.style=pixelate,blur,solid` compares styles on the same regions).

Settings that change what the detector finds (thresholds, crops) need a fresh cache. `edge-anon eval`
re-measures the chosen point end to end with the solid-fill cross-check this replay skips.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
from pathlib import Path

import numpy as np

from benchlib import SHARED, harden_tool

from edge import compose, mask, vehicles as veh
from edge.config import ConfigError
from edge.eval import evaluate, utility
from edge.frame import Detections
from edge.models.registry import ModelError
from edge.pipeline import split


def collect(cfg, sets, cache: dict) -> dict:
    """Raw detections of every image (xyxy, score, class) by '<set>/<image>', from the cache or the detector."""
    missing = [(dev, item) for dev in sets for item in dev.items if f"{dev.name}/{item.path.name}" not in cache]
    if not missing:
        return cache
    detector = compose.build_detector(cfg)
    for n, (dev, item) in enumerate(missing):
        image = evaluate.read_image(item.path)
        d = detector.detect(image)
        key = f"{dev.name}/{item.path.name}"
        cache[key] = np.column_stack([d.xyxy, d.score, d.class_id]).astype(np.float32).reshape(-1, 6)
        cache[key + "#shape"] = np.array(image.shape[:2], np.int64)
        if n % 50 == 0:
            print(f"  collected {n + 1}/{len(missing)}", flush=True)
    detector.close()
    return cache


class Useful:
    """The judge, with its raw-image findings kept per image (they do not change between points)."""

    def __init__(self, cfg) -> None:
        self.judge, self.raw = utility.Judge(cfg), {}

    def add(self, key: str, image: np.ndarray, boxes: np.ndarray, style: mask.MaskStyle,
            tally: utility.UtilityTally) -> None:
        if key not in self.raw:
            self.raw[key] = self.judge.find(image)
        masked = image.copy()
        mask.apply(masked, boxes, style)
        tally.add(*utility.kept_flags(self.raw[key], self.judge.find(masked)))


def score_point(cfg, sets, cache: dict, useful: Useful | None = None, min_score: dict | None = None) -> dict:
    classes = compose.class_table(cfg)
    floors = {classes.id(name): float(v) for name, v in (min_score or {}).items()}
    stages = compose.paint_stages(cfg, classes)
    tight = mask.tight_ids(classes)
    zone_id = classes.id(veh.PLATE_ZONE) if veh.PLATE_ZONE in classes.names else -1
    vehicle_id = classes.id(veh.VEHICLE) if veh.VEHICLE in classes.names else -1
    out = {}
    for dev in sets:
        tallies = {name: evaluate.Tally() for name in dev.labelled}
        zones = vehicles = zoned_px = outside = total = 0
        kept = utility.UtilityTally()
        for item in dev.items:
            key = f"{dev.name}/{item.path.name}"
            raw, shape = cache[key], tuple(cache[key + "#shape"].tolist())
            dets = Detections(raw[:, :4].copy(), raw[:, 4].copy(), raw[:, 5].astype(np.int32))
            for cid, floor in floors.items():
                dets = dets.take(np.flatnonzero((dets.class_id != cid) | (dets.score >= floor)))
            masked, context = split(dets, classes)
            for stage in stages:
                masked = stage.to_paint(masked, context, shape)
            boxes = mask.regions(masked, shape, cfg.mask, tight)
            painted = mask.painted_map(shape, boxes)
            if useful is not None:
                useful.add(key, evaluate.read_image(item.path), boxes, cfg.mask, kept)
            labels = item.labels()
            for name, tally in tallies.items():
                tally.add(painted, item.boxes[labels == evaluate.EVAL_CLASSES[name]])
            outside_labels = ~evaluate.labelled_map(shape, item.boxes)  # outside every labelled box, any class
            outside += int((painted & outside_labels).sum())
            # the zones' own cost: their pixels outside every labelled box and every other region
            is_zone = masked.class_id == zone_id
            zones += int(is_zone.sum())
            vehicles += int((context.class_id == vehicle_id).sum())
            if is_zone.any():
                others = mask.painted_map(shape, mask.regions(masked.take(np.flatnonzero(~is_zone)), shape, cfg.mask, tight))
                zmap = mask.painted_map(shape, mask.regions(masked.take(np.flatnonzero(is_zone)), shape, cfg.mask, tight))
                zoned_px += int((zmap & ~others & outside_labels).sum())
            total += shape[0] * shape[1]
        res = {"images": len(dev.items), "zones_per_frame": round(zones / max(len(dev.items), 1), 3),
               "zoned_vehicle_share": round(zones / max(vehicles, 1), 3),
               "zone_only_overmask": round(zoned_px / max(total, 1), 5), "overmask": round(outside / max(total, 1), 5)}
        if useful is not None:
            res["utility"] = {k: v["share"] for k, v in kept.result().items()}
            res["utility_counts"] = kept.result()
        for name, tally in tallies.items():
            r = tally.result()
            res[name] = {"protected": r["protected_share"], "buckets": {k: v["share"] for k, v in r["buckets"].items()},
                         "objects": r["objects"]}
        out[dev.name] = res
    return out


def grid_points(args, cfg) -> list[tuple[list[str], object, dict[str, float]]]:
    """Each point of the grid: its KEY=VALUE list, its config and its per-class score floors; a bad key or
    value is a ConfigError naming the grid."""
    classes = compose.class_table(cfg)
    axes = []
    for g in args.grid:
        key, eq, values = g.partition("=")
        if not eq or not values:
            raise ConfigError(f"--grid {g!r}: expected KEY=V1,V2,...")
        axes.append((key, values.split(",")))
        if key.startswith("min_score."):
            name = key.removeprefix("min_score.")
            for v in axes[-1][1]:
                try:
                    floor = float(v)
                except ValueError:
                    floor = float("nan")
                if not 0.0 <= floor <= 1.0:
                    raise ConfigError(f"--grid {key}={v}: expected a score within 0..1")
            if name not in classes.names:
                raise ConfigError(f"--grid {key}: the run has no class {name!r} (classes: {', '.join(classes.names)})")
    out = []
    for values in itertools.product(*[v for _, v in axes]) if axes else [()]:
        chosen = [f"{k}={v}" for (k, _), v in zip(axes, values)]
        overrides = [f"{k}={v}" for (k, _), v in zip(axes, values) if not k.startswith("min_score.")]
        floors = {k.removeprefix("min_score."): float(v) for (k, _), v in zip(axes, values) if k.startswith("min_score.")}
        try:
            point = compose.load_config(args.config, [*args.set, *overrides])
        except ConfigError as e:
            raise ConfigError(f"--grid: {e}") from None
        if compose.class_table(point) != classes:
            raise ConfigError(f"--grid {' '.join(overrides)} changes the run's classes; the cached detections "
                              f"do not fit it (switch a stage off by its thresholds instead, or use a fresh --cache)")
        out.append((chosen, point, floors))
    return out


def main() -> int:
    harden_tool()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-c", "--config")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--cache", default="", help="an .npz of the raw detections per image: written once, then read")
    ap.add_argument("--grid", action="append", default=[], help="KEY=V1,V2,... (paint settings only)")
    ap.add_argument("--utility", action="store_true", help="judge persons and vehicles kept after masking")
    ap.add_argument("--json", help="write every point's figures here")
    args = ap.parse_args()
    if (SHARED / "models").is_dir():
        os.environ.setdefault("EDGE_MODEL_PATH", str(SHARED / "models"))
    try:
        cfg = compose.load_config(args.config, args.set)
        grid = grid_points(args, cfg)  # every point checked before the detector runs for minutes
        sets = evaluate.discover(evaluate.shared_root() / "data" / "eval", args.only)
        cache = dict(np.load(args.cache)) if args.cache and Path(args.cache).exists() else {}
        before = len(cache)
        cache = collect(cfg, sets, cache)
    except (ConfigError, ModelError, evaluate.DatasetError, OSError) as e:
        ap.exit(2, f"{ap.prog}: {e}\n")
    if args.cache and len(cache) != before:
        np.savez(args.cache, **cache)
    points, useful = [], Useful(cfg) if args.utility else None
    for chosen, point, floors in grid:
        res = score_point(point, sets, cache, useful, floors)
        points.append({"overrides": chosen, "sets": res})
        print(" ".join(chosen) or "(config as is)")
        for name, r in res.items():
            cls = "  ".join(f"{c} {r[c]['protected'] * 100:.1f}%" for c in ("face", "plate") if c in r)
            print(f"  {name:13s} {cls:28s} over-masking {r['overmask'] * 100:.2f}%  zones/frame "
                  f"{r['zones_per_frame']:.2f} ({r['zoned_vehicle_share'] * 100:.0f}% of vehicles, "
                  f"{r['zone_only_overmask'] * 100:.2f}% of frame zone-only)"
                  + "".join(f"  {k} kept {v['share'] * 100:.1f}% of {v['found_raw']}"
                          for k, v in r.get("utility_counts", {}).items() if v["share"] is not None),
                  flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"config": args.config, "set": args.set, "points": points}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
