"""Fit the head-zone ratios on berlin_dev: annotated head boxes against the persons YOLOX-Nano finds.

Each annotated face (a head box) is given to the smallest detected person that holds at least 70% of it
in its top half; the ratios of head to person size (by the person's aspect) are printed as medians and
quartiles. Tooling: run from the project root with EDGE_MODEL_PATH set.
    python scripts/fit_head_zones.py [--threshold 0.2]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from edge import config as config_mod
from edge.compose import build_pipeline, load_config
from edge.eval.evaluate import read_image, read_list, shared_root
from edge.frame import FACE, Frame


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threshold", type=float, default=0.2)
    ap.add_argument("--save", help="write the matched (head, person) pairs to this .npz")
    args = ap.parse_args()
    cfg = load_config("configs/heads-context.toml")
    cfg = config_mod.override(cfg, {"detect.context.score_threshold": args.threshold, "heads.fallback": False,
                                       "service.deadline_ms": 0.0})
    pipe = build_pipeline(cfg)
    person = None
    root = shared_root() / "data/eval/dashcam/berlin_dev"
    items = read_list(root / "gt_xyxy.txt", root / "images")
    rows, unmatched, pairs = [], [], []
    for seq, item in enumerate(items):
        image = read_image(Path(item.path))
        out = pipe.process(Frame(image, "fit", seq, 0, 0))
        ctx = out.context
        if person is None:
            person = pipe.classes.id("person")
        p = ctx.xyxy[ctx.class_id == person].astype(np.float64)
        for box, cls in zip(item.boxes, item.labels()):
            if cls != FACE:
                continue
            rows_for = _match(box, p)
            if rows_for is None:
                unmatched.append(box)
            else:
                rows.append(rows_for[0])
                pairs.append(rows_for[1])
    r = np.array(rows)
    if args.save:
        np.savez(args.save, pairs=np.array(pairs))
    print(f"faces matched to a person: {len(r)}, unmatched: {len(unmatched)}")
    cols = ["hh/ph", "hw/ph", "hw/pw", "hh/pw", "top/hh", "dx/pw", "p_aspect", "hh", "ph"]
    for name, sel in (("all", np.ones(len(r), bool)), ("tall (h/w>=2)", r[:, 6] >= 2),
                      ("wide or cut (h/w<2)", r[:, 6] < 2)):
        q = np.percentile(r[sel], [25, 50, 75], axis=0) if sel.any() else np.zeros((3, len(cols)))
        print(f"{name}: n={int(sel.sum())}")
        for c, (a, m, b) in zip(cols, q.T):
            print(f"  {c:9s} median {m:7.3f}  (q25 {a:7.3f}, q75 {b:7.3f})")


def _match(head: np.ndarray, persons: np.ndarray):
    if not len(persons):
        return None
    lt = np.maximum(persons[:, :2], head[:2])
    rb = np.minimum(persons[:, 2:], head[2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=1)
    area = max(float(np.prod(head[2:] - head[:2])), 1e-9)
    ph = persons[:, 3] - persons[:, 1]
    cy = (head[1] + head[3]) / 2
    ok = (inter / area >= 0.7) & (cy <= persons[:, 1] + ph / 2)
    if not ok.any():
        return None
    pa = np.prod(persons[:, 2:] - persons[:, :2], axis=1)
    k = np.flatnonzero(ok)[np.argmin(pa[ok])]
    px1, py1, px2, py2 = persons[k]
    pw, ph = px2 - px1, py2 - py1
    hw, hh = head[2] - head[0], head[3] - head[1]
    dx = ((head[0] + head[2]) / 2 - (px1 + px2) / 2) / pw
    return ([hh / ph, hw / ph, hw / pw, hh / pw, (head[1] - py1) / hh, dx, ph / pw, hh, ph],
            np.concatenate([head, persons[k]]))


if __name__ == "__main__":
    main()
