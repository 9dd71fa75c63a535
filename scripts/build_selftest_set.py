#!/usr/bin/env python3
"""Rebuild the start-up self-test's reference set (edge/selftest/data) from ../shared/data/train.

Nine photos: seven Open Images street photos with people (CC BY 4.0, a Roboflow export, oi_train) and
two Romanian dashcam frames (RobertLucian/license-plate-dataset, MIT, ro_train), each shrunk so that
its faces are about 10-40 px and its plates about 20-60 px wide, as a vehicle camera sees them.

Face boxes: proposed by YuNet-n at 1x and 2x (score >= 0.8) on the full-size photo, every one looked
at by eye; false positives (a wheel) left out, faces the proposal missed stay unlabelled (the self-test
counts labelled objects only); each labelled as its head (HEAD_GROW). Plates: the sets' own labels,
except a sticker labelled as a plate and plates under MIN_PLATE_PX wide once shrunk (left unlabelled: a
floor is not a recall target).
Never from data/eval: those sets are for evaluation only.

    python scripts/build_selftest_set.py [--shared ../shared] [--out edge/selftest/data]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

MIN_PLATE_PX = 18.0
# A face is labelled as its head, as dashcam annotations box it (../shared/data/README.md: berlin_dev's
# head boxes are about 1.4x wider and 1.35x taller than a tight face box): the eye-checked face box grown
# by 0.2 of its width each side, 0.25 of its height up (hair) and 0.1 down. A mask that covers only the
# tight face leaves about half of such a box visible and does not count as protecting it.
HEAD_GROW = (0.2, 0.25, 0.1)  # side, up, down
JPEG_QUALITY = 90
OI = ("plates/oi_train", "Open Images (Google, CC BY 4.0) via a Roboflow export")
RO = ("plates/ro_train", "RobertLucian/license-plate-dataset (MIT)")

# source file, its set, shrink factor, face boxes in the source's pixels (x1 y1 x2 y2), plate labels to leave out
REFERENCE = [
    ("oi_train_1346.jpg", OI, 0.75, [(532, 190, 560, 223), (350, 168, 382, 208), (443, 174, 480, 220),
                                     (217, 196, 252, 237), (683, 206, 706, 230), (588, 182, 615, 215)], ()),
    ("oi_train_1303.jpg", OI, 0.70, [(453, 132, 474, 160), (348, 265, 384, 309), (632, 142, 671, 196),
                                     (282, 126, 306, 156), (481, 302, 508, 333), (395, 260, 425, 294)], ()),
    ("oi_train_0573.jpg", OI, 0.60, [(247, 128, 282, 174), (349, 109, 389, 160), (728, 134, 756, 170),
                                     (522, 123, 556, 172)], ()),
    ("oi_train_1038.jpg", OI, 0.60, [(316, 142, 360, 194), (510, 214, 547, 261), (632, 333, 667, 379)], ()),
    ("oi_train_0752.jpg", OI, 0.90, [(202, 138, 228, 172), (518, 126, 546, 160), (383, 125, 408, 162)], ()),
    # its one plate label is an "AUTO SPRINT" sticker on a boot lid
    ("oi_train_1181.jpg", OI, 0.55, [(373, 155, 397, 190), (503, 176, 524, 207), (322, 182, 348, 213),
                                     (185, 167, 213, 202), (546, 222, 571, 253), (306, 189, 328, 223)], (0,)),
    ("oi_train_1349.jpg", OI, 1.0, [(364, 224, 383, 249), (476, 226, 495, 250)], ()),
    ("ro_train_0356.jpg", RO, 0.35, [], ()),
    ("ro_train_0061.jpg", RO, 0.35, [], ()),
]


def head_box(face: np.ndarray) -> np.ndarray:
    side, up, down = HEAD_GROW
    w, h = face[2] - face[0], face[3] - face[1]
    return face + np.array([-side * w, -up * h, side * w, down * h])


def read_plates(gt_file: Path) -> dict[str, list[list[float]]]:
    out: dict[str, list[list[float]]] = {}
    name = None
    for line in gt_file.read_text().splitlines():
        if line.startswith("#"):
            name = line.split()[1]
            out[name] = []
        elif line.strip() and name is not None:
            out[name].append([float(v) for v in line.split()[:4]])
    return out


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=str(root.parent / "shared"), help="the shared data folder")
    ap.add_argument("--out", default=str(root / "edge/selftest/data"))
    args = ap.parse_args()
    train, out = Path(args.shared) / "data/train", Path(args.out)
    if not train.is_dir():
        print(f"build_selftest_set: {train}: no such folder", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    labels = ["# The self-test's reference set, made by scripts/build_selftest_set.py (sources: ATTRIBUTION.md).",
              "# List format of ../shared/data: '# <file> <W> <H>', then 'x1 y1 x2 y2 <class>' per object."]
    attribution = []
    plates_of: dict[str, dict] = {}
    total_bytes = 0
    for name, (folder, credit), shrink, faces, skip_plates in REFERENCE:
        src = train / folder / "images" / name
        image = cv2.imread(str(src), cv2.IMREAD_COLOR)
        if image is None:
            print(f"build_selftest_set: {src}: cannot read", file=sys.stderr)
            return 2
        if folder not in plates_of:
            plates_of[folder] = read_plates(train / folder / "gt_xyxy.txt")
        h, w = image.shape[:2]
        size = (round(w * shrink), round(h * shrink))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        sx, sy = size[0] / w, size[1] / h
        scale = np.array([sx, sy, sx, sy])
        rows = [(head_box(np.array(box, float)) * scale, "face") for box in faces]
        for i, box in enumerate(plates_of[folder].get(name, [])):
            box = np.array(box) * scale
            if i not in skip_plates and box[2] - box[0] >= MIN_PLATE_PX:
                rows.append((box, "plate"))
        ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            print(f"build_selftest_set: {name}: JPEG encoding failed", file=sys.stderr)
            return 2
        (out / name).write_bytes(buf.tobytes())
        total_bytes += len(buf)
        labels.append(f"# {name} {size[0]} {size[1]}")
        labels += [f"{b[0]:.1f} {b[1]:.1f} {b[2]:.1f} {b[3]:.1f} {cls}" for b, cls in rows]
        sizes = [f"{np.sqrt((b[2] - b[0]) * (b[3] - b[1])):.0f}" if c == "face" else f"{b[2] - b[0]:.0f}w"
                 for b, c in rows]
        attribution.append(f"| {name} | data/train/{folder}/images/{name} | {credit} | x{shrink:g} to "
                           f"{size[0]}x{size[1]} | {' '.join(sizes)} |")
    (out / "labels.txt").write_text("\n".join(labels) + "\n")
    head = (out / "ATTRIBUTION.md").read_text().split("<!-- table -->")[0] if (out / "ATTRIBUTION.md").exists() else ""
    table = ["<!-- table -->", "| file | source (../shared) | licence and attribution | made | objects (faces: sqrt "
             "area px, plates: width) |", "|---|---|---|---|---|", *attribution]
    (out / "ATTRIBUTION.md").write_text(head + "\n".join(table) + "\n")
    print(f"{len(REFERENCE)} images, {sum(1 for r in labels if r.endswith(' face'))} faces, "
          f"{sum(1 for r in labels if r.endswith(' plate'))} plates, {total_bytes / 1024:.0f} KiB of JPEG in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
