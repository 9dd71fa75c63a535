"""Where annotated plates lie in the vehicles the context stage finds, and what the plausibility filter drops.

    EDGE_MODEL_PATH=../shared/models python scripts/vehicle_plates.py [-c CONFIG] [--set k=v] [--only SET]

Per dev set with plates: how many plates lie in a detected vehicle (>= vehicles.plate_in_vehicle of
the plate box), the distribution of their position and size relative to the vehicle box (x / y
centre from its left / top, width, height: fractions of the vehicle box), plate aspect, and how many
annotated plates vehicles.* as configured would drop (edge.vehicles.plausible on the ground truth).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from edge import compose, vehicles as veh
from edge.eval import evaluate


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-c", "--config", default="configs/heads-context.toml")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--cache", default="", help="an .npz of the vehicle boxes per image: written once, then read")
    args = ap.parse_args()
    cfg = compose.load_config(args.config, args.set)
    classes = compose.class_table(cfg)
    cache = dict(np.load(args.cache)) if args.cache and Path(args.cache).exists() else {}
    fresh = not cache
    ctx = compose.build_context_detector(cfg, cfg.detect.context, classes) if fresh else None
    vid = classes.id(veh.VEHICLE)
    p = cfg.vehicles
    sets = [s for s in evaluate.discover(evaluate.shared_root() / "data" / "eval", args.only) if "plate" in s.labelled]
    for dev in sets:
        rel, inside, dropped, total, ar, zone_hit = [], 0, 0, 0, [], 0
        for item in dev.items:
            plates = item.boxes[item.labels() == 1]
            if not len(plates):
                continue
            key = f"{dev.name}/{item.path.name}"
            if fresh:
                found = ctx.detect(evaluate.read_image(item.path))
                cache[key] = found.xyxy[found.class_id == vid]
            cars = cache[key].reshape(-1, 4)
            frame_w = evaluate.read_image(item.path).shape[1]
            total += len(plates)
            wh = plates[:, 2:] - plates[:, :2]
            ar += (wh[:, 0] / np.maximum(wh[:, 1], 1e-6)).tolist()
            dropped += int((~veh.plausible(plates, cars, p)).sum())
            share = veh.inside_share(plates, cars)
            for i in range(len(plates)):
                ok = np.flatnonzero(share[i] >= p.plate_in_vehicle)
                if not len(ok):
                    continue
                inside += 1
                # the smallest vehicle holding the plate: its own, not the bus behind it
                j = ok[np.argmin(veh.widths(cars[ok]))]
                v = cars[j]
                vw, vh = v[2] - v[0], v[3] - v[1]
                b = plates[i]
                rel.append([((b[0] + b[2]) / 2 - v[0]) / vw, ((b[1] + b[3]) / 2 - v[1]) / vh,
                            (b[2] - b[0]) / vw, (b[3] - b[1]) / vh, vw])
                z = veh.zones(v[None], p, frame_w)
                zone_hit += int(veh.inside_share(b[None], z)[0, 0] >= 0.7)
        rel = np.array(rel).reshape(-1, 5)
        print(f"{dev.name}: {total} plates, {inside} in a detected vehicle, filter drops {dropped}, "
              f"zone covers >=70% of {zone_hit} of those in a vehicle")
        if len(rel):
            q = np.percentile(rel, [5, 25, 50, 75, 95], axis=0)
            for name, col in zip(("x-centre", "y-centre", "width", "height", "vehicle px"), q.T):
                print(f"  {name:10s} p5/25/50/75/95: " + " / ".join(f"{x:.3g}" for x in col))
        if ar:
            print("  plate w/h p1/5/50/95/99: " + " / ".join(f"{x:.2f}" for x in np.percentile(ar, [1, 5, 50, 95, 99])))
    if args.cache and fresh:
        np.savez(args.cache, **cache)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
