"""Why each region was painted, drawn for a person: pure functions from a masked image and boxes to a copy.

The overlay only ever goes on a COPY of pixels that were already masked (a MaskedFrame's image, or an
evaluation's masked output), so an annotated frame can never show more than the masked one: it adds
outlines and labels, it removes no paint. Used by `replay --annotate` (edge.sinks.folder) and the
evaluation report; never by the service's own output.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge.frame import BUILTIN_CLASSES, ClassTable, MaskedFrame

__all__ = ["CLASS_COLOURS", "TRUTH_COLOURS", "annotate", "draw_regions", "draw_truth", "label_of", "pair_regions",
           "region_labels", "Style", "style_for"]

# BGR. Distinct hues per masked class; ground truth (green / red) uses hues no class uses, so the
# two kinds of box never read as one another in the evaluation report.
CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "face": (255, 0, 255),  # magenta
    "head": (0, 165, 255),  # orange
    "plate": (255, 255, 0),  # cyan
    "plate_zone": (255, 96, 0),  # blue
}
OTHER_COLOUR = (255, 255, 255)  # classes added by config (edge.frame.ClassTable), and a frame masked whole
TRUTH_COLOURS = {True: (0, 200, 0), False: (0, 0, 255)}  # protected: green, leaked: red
WHOLE_LABEL = "masked whole"
FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class Style:
    """Line and text sizes for one image size: read at 416 px as at 1080p."""

    font_scale: float
    thickness: int  # outlines
    text_thickness: int

    def text_size(self, text: str) -> tuple[int, int, int]:
        """(width, height above baseline, baseline) of `text` in pixels."""
        (w, h), base = cv2.getTextSize(text, FONT, self.font_scale, self.text_thickness)
        return w, h, base


def style_for(shape: tuple[int, ...]) -> Style:
    """Sizes scaled with the image's larger side; Hershey text under ~0.4 is a blur of pixels, so that is the floor."""
    s = max(shape[:2]) / 1280.0
    return Style(font_scale=float(np.clip(0.5 * s, 0.4, 1.5)), thickness=max(1, round(2 * s)),
                 text_thickness=max(1, round(1.5 * s)))


def label_of(name: str, score: float | None, held: bool) -> str:
    """'face 0.87', 'plate_zone 0.28 held', 'masked whole'."""
    parts = [name] + ([f"{score:.2f}"] if score is not None else []) + (["held"] if held else [])
    return " ".join(parts)


def pair_regions(regions: np.ndarray, xyxy: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """For each painted region, the index of the detection it was grown from (-1: none known).

    edge.mask.regions keeps the detections' order and leaves out only regions that clip to nothing,
    which happens only to boxes that themselves lie off the frame. Equal counts are one to one; with
    fewer regions, the off-frame boxes are the ones left out when there are exactly as many of them.
    Anything else (regions not from these boxes) pairs nothing rather than mislabel a region.
    """
    m, n = len(regions), len(xyxy)
    if m == n:
        return np.arange(m)
    out = np.full(m, -1, np.int64)
    if m > n:
        return out
    h, w = shape[:2]
    x = np.clip(np.asarray(xyxy, np.float64)[:, 0::2], 0, w)
    y = np.clip(np.asarray(xyxy, np.float64)[:, 1::2], 0, h)
    on_frame = np.flatnonzero((x[:, 1] > x[:, 0]) & (y[:, 1] > y[:, 0]))
    if len(on_frame) == m:
        out[:] = on_frame
    return out


def region_labels(item: MaskedFrame, classes: ClassTable = BUILTIN_CLASSES) -> tuple[list[str], list[bool]]:
    """A label and a held flag per painted region of `item` (class, score, 'held'; 'masked whole')."""
    if item.status == "masked_whole":
        return [WHOLE_LABEL] * len(item.regions), [False] * len(item.regions)
    dets = item.detections
    names = classes.names_of(dets.class_id)
    held = item.held_flags()
    labels, flags = [], []
    for j in pair_regions(item.regions, dets.xyxy, item.frame.image.shape).tolist():
        if j < 0:
            labels.append("painted")
            flags.append(False)
        else:
            labels.append(label_of(names[j], float(dets.score[j]), bool(held[j])))
            flags.append(bool(held[j]))
    return labels, flags


def colour_of(label: str) -> tuple[int, int, int]:
    return CLASS_COLOURS.get(label.split(" ", 1)[0], OTHER_COLOUR)


def _dashed_rect(image: np.ndarray, box: tuple[int, int, int, int], colour, thickness: int) -> None:
    x1, y1, x2, y2 = box
    dash = 4 * thickness + 4
    for (ax, ay), (bx, by) in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        length = max(abs(bx - ax), abs(by - ay))
        for start in range(0, length, 2 * dash):
            end = min(start + dash, length)
            p = (ax + (bx - ax) * start // max(length, 1), ay + (by - ay) * start // max(length, 1))
            q = (ax + (bx - ax) * end // max(length, 1), ay + (by - ay) * end // max(length, 1))
            cv2.line(image, p, q, colour, thickness)


def _label(image: np.ndarray, text: str, x: int, y: int, colour, style: Style) -> None:
    """`text` on a filled tab of `colour` just above (x, y), or just below it at the image's top edge."""
    h, w = image.shape[:2]
    tw, th, base = style.text_size(text)
    pad = max(1, style.thickness)
    tab_h = th + base + 2 * pad
    top = y - tab_h if y - tab_h >= 0 else min(y, max(0, h - tab_h))
    left = int(np.clip(x, 0, max(0, w - tw - 2 * pad)))
    cv2.rectangle(image, (left, top), (left + tw + 2 * pad, top + tab_h), colour, cv2.FILLED)
    ink = (0, 0, 0) if sum(colour) > 300 else (255, 255, 255)  # dark text on the light tabs
    cv2.putText(image, text, (left + pad, top + pad + th), FONT, style.font_scale, ink, style.text_thickness,
                cv2.LINE_AA)


def _boxes(boxes: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Integer corners inside the image: an outline at x2 = width would be drawn off the image."""
    h, w = shape[:2]
    b = np.round(np.asarray(boxes, np.float64).reshape(-1, 4)).astype(np.int64)
    b[:, 0::2] = np.clip(b[:, 0::2], 0, w - 1)
    b[:, 1::2] = np.clip(b[:, 1::2], 0, h - 1)
    return b


def draw_regions(image: np.ndarray, regions: np.ndarray, labels: list[str], held: list[bool] | None = None,
                 colours: list[tuple[int, int, int]] | None = None) -> np.ndarray:
    """A copy of `image` with each region outlined (dashed where held) and its label on a tab above it.

    Colours follow the class that starts each label (CLASS_COLOURS) unless `colours` are given.
    """
    if len(labels) != len(regions):
        raise ValueError(f"{len(regions)} regions, {len(labels)} labels")
    held = [False] * len(regions) if held is None else list(held)
    colours = [colour_of(t) for t in labels] if colours is None else list(colours)
    if len(held) != len(regions) or len(colours) != len(regions):
        raise ValueError(f"{len(regions)} regions, {len(held)} held flags, {len(colours)} colours")
    out = image.copy()
    style = style_for(out.shape)
    boxes = _boxes(regions, out.shape)
    for (x1, y1, x2, y2), colour, is_held in zip(boxes.tolist(), colours, held):
        if is_held:
            _dashed_rect(out, (x1, y1, x2, y2), colour, style.thickness)
        else:
            cv2.rectangle(out, (x1, y1), (x2, y2), colour, style.thickness)
    # labels after every outline, so no outline crosses a label's text
    for (x1, y1, _, _), text, colour in zip(boxes.tolist(), labels, colours):
        _label(out, text, x1, y1, colour, style)
    return out


def draw_truth(image: np.ndarray, boxes: np.ndarray, protected: np.ndarray, labels: list[str] | None = None) -> np.ndarray:
    """A copy of `image` with labelled ground-truth boxes: protected in green, leaked in red.

    `labels` default to 'protected' / 'leaked'; the evaluation report passes e.g. 'face 14px leaked'.
    """
    protected = np.asarray(protected, bool).reshape(-1)
    if len(protected) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes, {len(protected)} protected flags")
    if labels is None:
        labels = ["protected" if p else "leaked" for p in protected.tolist()]
    return draw_regions(image, boxes, labels, colours=[TRUTH_COLOURS[p] for p in protected.tolist()])


def annotate(item: MaskedFrame, classes: ClassTable = BUILTIN_CLASSES) -> np.ndarray:
    """A copy of the masked frame's image with every painted region outlined and labelled."""
    labels, held = region_labels(item, classes)
    return draw_regions(item.frame.image, item.regions, labels, held)
