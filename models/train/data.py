"""Training crops from the licensed plate sets: pure numpy/OpenCV, one seeded generator per step.

A sample is a SIZE x SIZE crop, BGR 0..255 padded with 114 (what YOLOX was trained with), and its plate
boxes (xyxy, crop pixels). Most crops are centred near one plate rescaled to a width drawn log-uniformly
from PLATE_WIDTHS (so small, distant plates are as common as close ones); the rest are random crops of
a randomly scaled image, which also show the network street scenes with no plate in them. Each step
draws from its own generator seeded by (seed, step), so a resumed run sees exactly the samples a run
without the interruption would have.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.eval.evaluate import read_list

SIZE = 320
PAD = 114
PLATE_WIDTHS = (10.0, 200.0)  # px after rescaling; dashcam plates at 1088x608 are ~11-130 px wide
MAX_UPSCALE = 3.0  # beyond this a tiny source plate is only blur
MIN_VISIBLE = 0.5  # a plate cut by the crop border stays a target while this share of it is inside
MIN_SIDE = 2.0  # px: smaller boxes are not learnable targets


@dataclass(frozen=True)
class Source:
    """One annotated image: its encoded bytes (decoded per sample) and its plate boxes."""
    name: str
    data: np.ndarray
    boxes: np.ndarray


@dataclass(frozen=True)
class Recipe:
    weights: tuple[float, ...]  # probability of drawing from each set
    plate_centred: float = 0.85  # share of crops centred on a plate
    flip: float = 0.5
    blur: float = 0.15
    plate_widths: tuple[float, float] = PLATE_WIDTHS  # px: the range a centred plate is rescaled to
    # share of crops whose plates are smudged (blurred or pixelated until no character is left), boxes
    # kept: a plate blurred by motion, distance or an earlier anonymizer is still a plate to find, and
    # the dashcam dev footage is full of them; teaches the plate's shape and place, not only its text
    plate_blur: float = 0.0


def load_sets(folders: list[Path], limit: int | None = None) -> list[list[Source]]:
    """Each folder's images (images/ + gt_xyxy.txt), kept encoded in memory; `limit` keeps the first few."""
    sets = []
    for folder in folders:
        items = read_list(folder / "gt_xyxy.txt", default_class=None)[:limit]
        sources = [Source(item.path.name, np.fromfile(item.path, np.uint8), item.boxes.astype(np.float32))
                   for item in items]
        if not sources:
            raise ValueError(f"{folder}: no annotated images")
        sets.append(sources)
    return sets


def _decode(src: Source) -> np.ndarray:
    image = cv2.imdecode(src.data, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{src.name}: not a readable image")
    return image


def _place(image: np.ndarray, boxes: np.ndarray, scale: float, x0: float, y0: float
           ) -> tuple[np.ndarray, np.ndarray]:
    """The SIZE x SIZE window at (x0, y0) of the image scaled by `scale`, and the boxes inside it."""
    m = np.array([[scale, 0, -x0], [0, scale, -y0]], np.float32)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    crop = cv2.warpAffine(image, m, (SIZE, SIZE), flags=interp, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(PAD, PAD, PAD))
    if scale < 0.5:  # warpAffine has no area filter: pre-shrink so small plates are not aliased away
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        m = np.array([[1, 0, -x0], [0, 1, -y0]], np.float32)
        crop = cv2.warpAffine(small, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=(PAD, PAD, PAD))
    b = boxes * scale - np.array([x0, y0, x0, y0], np.float32)
    clipped = np.clip(b, 0, SIZE)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = ((inside >= MIN_VISIBLE * area) & (clipped[:, 2] - clipped[:, 0] >= MIN_SIDE)
            & (clipped[:, 3] - clipped[:, 1] >= MIN_SIDE))
    return crop, clipped[keep]


def _colour(rng: np.random.Generator, crop: np.ndarray) -> np.ndarray:
    hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-8, 8)) % 180
    hsv[..., 1] *= rng.uniform(0.6, 1.4)
    hsv[..., 2] = hsv[..., 2] * rng.uniform(0.6, 1.4) + rng.uniform(-20, 20)
    return cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2BGR)


def smudge_plates(rng: np.random.Generator, crop: np.ndarray, boxes: np.ndarray) -> None:
    """Blur or pixelate each plate box in place so that its characters are gone (the box stays a target)."""
    for x1, y1, x2, y2 in boxes:
        x1, y1 = int(np.floor(x1)), int(np.floor(y1))
        x2, y2 = int(np.ceil(x2)), int(np.ceil(y2))
        roi = crop[y1:y2, x1:x2]
        h, w = roi.shape[:2]
        if h < 2 or w < 2:
            continue
        if rng.random() < 0.5:
            roi[:] = cv2.GaussianBlur(roi, (0, 0), max(h * rng.uniform(0.15, 0.4), 0.8))
        else:
            cells = int(rng.integers(3, 9))
            small = cv2.resize(roi, (cells, max(1, round(cells * h / w))), interpolation=cv2.INTER_AREA)
            roi[:] = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def sample(rng: np.random.Generator, sets: list[list[Source]], recipe: Recipe) -> tuple[np.ndarray, np.ndarray]:
    """One augmented crop (H, W, 3) uint8 and its (N, 4) float32 plate boxes."""
    p = np.asarray(recipe.weights, np.float64)
    pool = sets[rng.choice(len(sets), p=p / p.sum())]
    src = pool[rng.integers(len(pool))]
    image = _decode(src)
    h, w = image.shape[:2]
    if len(src.boxes) and rng.random() < recipe.plate_centred:
        box = src.boxes[rng.integers(len(src.boxes))]
        width = float(np.exp(rng.uniform(*np.log(recipe.plate_widths))))
        scale = min(width / max(box[2] - box[0], 1.0), MAX_UPSCALE)
        cx, cy = (box[0] + box[2]) / 2 * scale, (box[1] + box[3]) / 2 * scale
        x0 = cx - SIZE / 2 + rng.uniform(-0.35, 0.35) * SIZE
        y0 = cy - SIZE / 2 + rng.uniform(-0.35, 0.35) * SIZE
    else:
        scale = float(rng.uniform(0.25, 1.25)) * SIZE / min(h, w) * rng.uniform(1.0, 2.5)
        x0 = rng.uniform(0, max(w * scale - SIZE, 0))
        y0 = rng.uniform(0, max(h * scale - SIZE, 0))
    crop, boxes = _place(image, src.boxes, scale, x0, y0)
    if rng.random() < recipe.flip:
        crop = np.ascontiguousarray(crop[:, ::-1])
        boxes = np.column_stack([SIZE - boxes[:, 2], boxes[:, 1], SIZE - boxes[:, 0], boxes[:, 3]])
    if recipe.plate_blur and len(boxes) and rng.random() < recipe.plate_blur:
        smudge_plates(rng, crop, boxes)
    crop = _colour(rng, crop)
    if rng.random() < recipe.blur:
        crop = cv2.GaussianBlur(crop, (0, 0), rng.uniform(0.5, 1.2))
    return crop, boxes.astype(np.float32).reshape(-1, 4)


def batch(seed: int, step: int, size: int, sets: list[list[Source]], recipe: Recipe
          ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Step `step`'s batch: images [B, 3, SIZE, SIZE] float32 and per image its boxes."""
    rng = np.random.default_rng([seed, step])
    crops, targets = zip(*(sample(rng, sets, recipe) for _ in range(size)))
    return np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32), list(targets)
