"""A plate model's detection figures on the dev sets, per score threshold: to pick its operating point.

    python -m models.train.devsets -c configs/plates-own.toml --set detect.plate.score_threshold=0.1 \
        [--only berlin_dev ...] [--json F]

Runs the config's detector (as the pipeline builds it) once per image at the config's threshold, then,
for each threshold in THRESHOLDS at or above it: the share of labelled plates matched by a box at IoU >= 0.5
(per size bucket, sqrt of box area), and the false boxes per frame (boxes matching no plate: an upper
bound on ro_dev, oi_dev and openalpr_dev, which do not label every plate). This is a detection view;
`edge-anon eval` gives the painted-pixel view (protected share, over-masking).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from edge.compose import build_detector, load_config
from edge.config import ConfigError
from edge.detect.boxes import iou_matrix
from edge.eval.evaluate import BUCKETS, DatasetError, bucket_of, discover, shared_root
from edge.frame import PLATE

THRESHOLDS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7)
PLATE_SETS = ("berlin_dev", "ro_dev", "oi_dev", "openalpr_dev")
MATCH_IOU = 0.5


def matched(gt: np.ndarray, found: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching by score: per labelled box whether a found box matches it, per found box whether it matched."""
    gt_hit, box_hit = np.zeros(len(gt), bool), np.zeros(len(found), bool)
    if len(gt) and len(found):
        iou = iou_matrix(found, gt)
        for i in np.argsort(-score):
            free = np.where(gt_hit, -1.0, iou[i])
            j = int(np.argmax(free))
            if free[j] >= MATCH_IOU:
                gt_hit[j] = box_hit[i] = True
    return gt_hit, box_hit


def run_set(detector, dev) -> dict:
    """Per image: plate boxes, their sizes, found boxes and scores; and the ms per frame."""
    records, ms = [], []
    for item in dev.items:
        image = cv2.imread(str(item.path))
        if image is None:
            raise DatasetError(f"{item.path}: not a readable image")
        t = time.perf_counter()
        det = detector.detect(image)
        ms.append((time.perf_counter() - t) * 1e3)
        keep = det.class_id == PLATE
        gt = item.boxes[item.labels() == PLATE]
        records.append((gt, det.xyxy[keep], det.score[keep]))
    return {"records": records, "ms": ms}


def table(records, floor: float) -> list[dict]:
    rows = []
    for t in THRESHOLDS:
        if t < floor:
            continue
        per_bucket: dict[str, list[int]] = {name: [0, 0] for _, _, name in BUCKETS}
        false_boxes = 0
        for gt, found, score in records:
            sel = score >= t
            gt_hit, box_hit = matched(gt, found[sel], score[sel])
            false_boxes += int((~box_hit).sum())
            for box, hit in zip(gt, gt_hit):
                b = per_bucket[bucket_of(float(np.sqrt((box[2] - box[0]) * (box[3] - box[1]))))]
                b[0] += int(hit)
                b[1] += 1
        hits, total = sum(v[0] for v in per_bucket.values()), sum(v[1] for v in per_bucket.values())
        rows.append({"threshold": t, "found": hits / max(total, 1), "plates": total,
                     "false_per_frame": false_boxes / max(len(records), 1),
                     "buckets": {k: (v[0] / v[1] if v[1] else None, v[1]) for k, v in per_bucket.items()}})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.train.devsets", description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--only", action="append", default=[], help="a dev set (default: the four plate sets)")
    p.add_argument("--data", default=None, help="the eval root (default ../shared/data/eval)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images of each set")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    try:
        cfg = load_config(a.config, a.set)
        sets = [d.limited(a.limit) for d in discover(a.data or shared_root() / "data" / "eval", a.only or PLATE_SETS)]
        detector = build_detector(cfg)
    except (ConfigError, DatasetError, OSError, RuntimeError) as e:
        print(f"python -m models.train.devsets: {e}", file=sys.stderr)
        return 2
    out = {"config": a.config, "set": a.set, "limit": a.limit, "sets": {}}
    floor = cfg.detect.plate.score_threshold
    try:
        for dev in sets:
            r = run_set(detector, dev)
            rows = table(r["records"], floor)
            out["sets"][dev.name] = {"ms_p50": float(np.median(r["ms"])), "images": len(r["records"]), "rows": rows}
            print(f"{dev.name}: {len(r['records'])} images, {rows[0]['plates'] if rows else 0} plates, "
                  f"p50 {np.median(r['ms']):.0f} ms/frame (detection only)")
            for row in rows:
                cells = "  ".join(f"{k} {'-' if v[0] is None else f'{100 * v[0]:3.0f}%'} ({v[1]})"
                                  for k, v in row["buckets"].items())
                print(f"  >= {row['threshold']:.2f}: {100 * row['found']:5.1f}% found, "
                      f"{row['false_per_frame']:.2f} false boxes/frame | {cells}")
    finally:
        detector.close()
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
