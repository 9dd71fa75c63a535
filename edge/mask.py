"""Masking in place: pure functions from boxes to painted pixels.

`regions()` decides exactly which pixels get painted; `apply()` paints them and `painted_map()`
reports the same pixels, so evaluation measures what was really hidden, not what was detected.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge.checks import one_of, within
from edge.frame import PLATE, ClassTable, Detections
from edge.vehicles import PLATE_ZONE

STYLES = ("pixelate", "solid", "blur")  # the first is the default


@dataclass(frozen=True)
class MaskStyle:
    """How detected regions are painted: the [mask] table of the config, validated here once."""

    style: str = STYLES[0]
    margin: float = 0.15  # grown on every side, as a fraction of the box's width / height
    # Boxes smaller than this (sqrt of area, px) get an extra margin that grows as they shrink:
    # a small detection's position is less certain, and missing a few pixels of a 10 px face leaks it.
    small_box_px: float = 32.0
    small_margin: float = 0.35  # margin used for boxes at or below half of small_box_px
    min_margin_px: int = 2
    # plates and plate zones (tight_ids) are painted with this margin instead: a plate box holds the plate's
    # corners and a zone is already the region where a plate may be, so the face margins would only paint
    # scene (a 0.15 margin makes a box 1.69x its area); at least min_margin_px still
    plate_margin: float = 0.05
    # pixelate: the box becomes at most this many cells across its larger side (at most 8: with more,
    # a face stays recognisable)...
    pixel_cells: int = 6
    # ...and no cell is smaller than this, so a 12 px face is not just resampled (at least 2: 1-px
    # cells on a box of at most pixel_cells px return it unchanged)
    min_cell_px: int = 4
    blur_fraction: float = 0.5  # blur: kernel as a fraction of the box's larger side (at least a third)
    color: tuple[int, ...] = (0, 0, 0)  # solid, and the whole-frame fill: B, G, R

    def __post_init__(self) -> None:
        one_of(self, "style", STYLES)
        within(self, "margin", 0.0, 2.0)
        within(self, "small_box_px", 0.0, 1024.0)
        within(self, "small_margin", 0.0, 2.0)
        within(self, "min_margin_px", 0, 64)
        within(self, "plate_margin", 0.0, 2.0)
        within(self, "pixel_cells", 1, 8)
        within(self, "min_cell_px", 2, 256)
        within(self, "blur_fraction", 1 / 3, 2.0)
        if len(self.color) != 3 or any(not 0 <= c <= 255 for c in self.color):
            raise ValueError(f"color: expected [b, g, r] with each within 0..255, got {list(self.color)}")


def margins(wh: np.ndarray, style: MaskStyle) -> np.ndarray:
    """Per-box margin fraction: `margin` for large boxes, rising linearly to `small_margin` for small ones."""
    size = np.sqrt(np.clip(wh[:, 0] * wh[:, 1], 0, None))
    lo, hi = style.small_box_px / 2, style.small_box_px
    t = np.clip((hi - size) / max(hi - lo, 1e-9), 0, 1)
    return style.margin + t * max(style.small_margin - style.margin, 0)


def tight_ids(classes: ClassTable | None) -> np.ndarray:
    """The class ids painted with plate_margin: plates and plate zones (plates alone without a class table)."""
    if classes is None:
        return np.array([PLATE])
    return np.array([classes.id(n) for n in ("plate", PLATE_ZONE) if n in classes.names], np.int64)


def regions(dets: Detections, shape: tuple[int, ...], style: MaskStyle, tight: np.ndarray | None = None) -> np.ndarray:
    """Integer (N, 4) xyxy regions to paint: boxes grown by their margin and clipped to the frame.

    `tight` (ids, from tight_ids) names the classes grown by plate_margin instead of margin / small_margin."""
    h, w = shape[:2]
    if len(dets) == 0:
        return np.zeros((0, 4), np.int32)
    xyxy = dets.xyxy.astype(np.float32)
    wh = xyxy[:, 2:] - xyxy[:, :2]
    frac = margins(wh, style)
    if tight is not None and len(tight):
        frac = np.where(np.isin(dets.class_id, tight), style.plate_margin, frac)
    grow = np.maximum(wh * frac[:, None], style.min_margin_px)
    out = np.concatenate([np.floor(xyxy[:, :2] - grow), np.ceil(xyxy[:, 2:] + grow)], axis=1)
    out[:, 0::2] = np.clip(out[:, 0::2], 0, w)
    out[:, 1::2] = np.clip(out[:, 1::2], 0, h)
    out = out.astype(np.int32)
    return out[(out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])]


def _pixelate(roi: np.ndarray, cells: int, min_cell_px: int) -> None:
    rh, rw = roi.shape[:2]
    scale = 1.0 / max(max(rh, rw) / cells, min_cell_px)
    small = cv2.resize(roi, (max(1, round(rw * scale)), max(1, round(rh * scale))), interpolation=cv2.INTER_AREA)
    roi[:] = cv2.resize(small, (rw, rh), interpolation=cv2.INTER_NEAREST)


def _blur(roi: np.ndarray, fraction: float) -> None:
    k = max(3, int(max(roi.shape[:2]) * fraction) | 1)
    # two passes of a large box-ish Gaussian: a single small kernel leaves faces recognisable
    roi[:] = cv2.GaussianBlur(cv2.GaussianBlur(roi, (k, k), 0), (k, k), 0)


def apply(image: np.ndarray, boxes: np.ndarray, style: MaskStyle) -> None:
    """Paint every region of `boxes` (from regions()) in place."""
    for x1, y1, x2, y2 in boxes:
        roi = image[y1:y2, x1:x2]
        if style.style == "solid":
            roi[:] = style.color
        elif style.style == "pixelate":
            _pixelate(roi, style.pixel_cells, style.min_cell_px)
        else:
            _blur(roi, style.blur_fraction)


def fill_whole(image: np.ndarray, style: MaskStyle) -> None:
    """The fail-closed mask: nothing of the frame stays readable, whatever the style."""
    image[:] = style.color


def painted_map(shape: tuple[int, ...], boxes: np.ndarray) -> np.ndarray:
    """Boolean HxW map of exactly the pixels apply() paints for these regions."""
    out = np.zeros(shape[:2], bool)
    for x1, y1, x2, y2 in boxes:
        out[y1:y2, x1:x2] = True
    return out


class MaskIncomplete(RuntimeError):
    """Some detection of the frame is not inside the painted regions: the frame must not leave as masked."""


def uncovered(xyxy: np.ndarray, boxes: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Indices of the detection boxes (float xyxy) whose pixels, clipped to the frame, are not all painted.

    The regions come from the same boxes, so a box normally lies inside its own region; a box that no
    single region contains is checked pixel by pixel against the painted map (a union of regions can
    still cover it). Whatever made a region too small or dropped it (a non-finite margin, a bug), the
    result says so, and the caller refuses the frame.
    """
    h, w = shape[:2]
    if len(xyxy) == 0:
        return np.zeros((0,), np.int64)
    if not np.isfinite(xyxy).all():
        return np.arange(len(xyxy))
    px = np.empty((len(xyxy), 4), np.int64)  # the pixels each box touches, clipped to the frame
    px[:, 0] = np.floor(np.clip(xyxy[:, 0], 0, w))
    px[:, 1] = np.floor(np.clip(xyxy[:, 1], 0, h))
    px[:, 2] = np.ceil(np.clip(xyxy[:, 2], 0, w))
    px[:, 3] = np.ceil(np.clip(xyxy[:, 3], 0, h))
    visible = (px[:, 2] > px[:, 0]) & (px[:, 3] > px[:, 1])
    if len(boxes):
        inside = ((boxes[None, :, 0] <= px[:, None, 0]) & (boxes[None, :, 1] <= px[:, None, 1])
                  & (boxes[None, :, 2] >= px[:, None, 2]) & (boxes[None, :, 3] >= px[:, None, 3])).any(axis=1)
    else:
        inside = np.zeros(len(px), bool)
    doubt = np.flatnonzero(visible & ~inside)
    if not doubt.size:
        return doubt
    painted = painted_map(shape, boxes)
    return np.array([i for i in doubt if not painted[px[i, 1]:px[i, 3], px[i, 0]:px[i, 2]].all()], np.int64)
