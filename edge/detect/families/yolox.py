"""YOLOX (COCO persons, vehicles...): one run yields boxes of several classes, decoded as pure numpy.

Layout (../shared/models/README.md): input float32 NCHW, BGR 0..255 with no normalisation, letterboxed
top-left and padded with 114, H and W multiples of 32. One output [N, A, 85] over the grids of strides
8, 16, 32 in that order: per anchor (cx, cy, log w, log h) offsets, objectness and 80 class scores,
all already sigmoids; score = objectness x class score.

A card's `classes` are names of GROUPS (a group is a set of COCO classes, e.g. vehicle = car,
motorcycle, bus, truck); `labelled` returns, per box, the index of its best group among those asked for.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from edge.frame import BadDetections

STRIDES = (8, 16, 32)
MULTIPLE = 32
CHANNELS = "BGR"
PAD_VALUE = 114  # what the model was trained with around a letterboxed image
COCO_CLASSES = 80
FILTER_GROUPS = ()  # no in-graph score threshold (a score is objectness x the best of a group's classes)
GROUPS: dict[str, tuple[int, ...]] = {"person": (0,), "bicycle": (1,), "vehicle": (2, 3, 5, 7)}


@lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Per anchor (col, row) and stride, in output order, for an input of (h, w)."""
    cells, strides = [], []
    for s in STRIDES:
        rows, cols = h // s, w // s
        yy, xx = np.mgrid[:rows, :cols]
        cells.append(np.column_stack([xx.ravel(), yy.ravel()]))
        strides.append(np.full(rows * cols, s))
    return np.concatenate(cells).astype(np.float32), np.concatenate(strides).astype(np.float32)


def checked_rows(outputs: list[np.ndarray], input_hw: tuple[int, int], batch_index: int,
                 classes: int = COCO_CLASSES) -> np.ndarray:
    """The (A, 5 + classes) rows of one image, checked for shape and finiteness."""
    if len(outputs) != 1:
        raise BadDetections(f"YOLOX returned {len(outputs)} outputs, expected 1")
    out = np.asarray(outputs[0])
    h, w = input_hw
    n = sum((h // s) * (w // s) for s in STRIDES)
    if out.ndim != 3 or out.shape[1:] != (n, 5 + classes) or out.shape[0] <= batch_index:
        raise BadDetections(f"YOLOX output shape {out.shape}, expected (N, {n}, {5 + classes})")
    rows = out[batch_index]
    if not np.isfinite(rows).all():
        raise BadDetections("YOLOX: non-finite values in the outputs")
    return rows


def anchor_boxes(rows: np.ndarray, idx: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    """The xyxy boxes (input pixels) of anchors `idx` from their raw offsets."""
    cell, stride = _grid(*input_hw)
    r, c, s = rows[idx, :4].astype(np.float32), cell[idx], stride[idx]
    cx, cy = (c[:, 0] + r[:, 0]) * s, (c[:, 1] + r[:, 1]) * s
    # exp of a wild regression value would be inf; no object is larger than the input
    bw, bh = np.exp(np.minimum(r[:, 2], 12.0)) * s, np.exp(np.minimum(r[:, 3], 12.0)) * s
    return np.column_stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]).astype(np.float32)


def labelled(outputs: list[np.ndarray], input_hw: tuple[int, int], score_threshold: float,
             groups: tuple[tuple[int, ...], ...], batch_index: int = 0
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (xyxy, input pixels), scores and the index into `groups` of each box's best group, before NMS.

    A group's score is objectness x its best COCO class's score; an anchor is its best group's box.
    Raises BadDetections when the output does not have the promised layout or holds non-finite values.
    """
    rows = checked_rows(outputs, input_hw, batch_index)
    if not groups or any(not g or min(g) < 0 or max(g) >= COCO_CLASSES for g in groups):
        raise ValueError(f"groups must be non-empty lists of COCO ids 0..{COCO_CLASSES - 1}, got {groups}")
    per_group = np.column_stack([rows[:, [5 + k for k in g]].max(axis=1) for g in groups]) * rows[:, 4:5]
    best = per_group.argmax(axis=1)
    score = per_group[np.arange(len(rows)), best]
    idx = np.flatnonzero(score >= score_threshold)
    return anchor_boxes(rows, idx, input_hw), score[idx].astype(np.float32), best[idx].astype(np.int32)


def candidates(outputs: list[np.ndarray], input_hw: tuple[int, int], score_threshold: float,
               batch_index: int = 0) -> tuple[np.ndarray, np.ndarray, None]:
    """The single-class view (DECODER_API): boxes of any of GROUPS' classes, scored by their best one."""
    xyxy, score, _ = labelled(outputs, input_hw, score_threshold, tuple(GROUPS.values()), batch_index)
    return xyxy, score, None
