"""YOLOX with one class (our own plate detector, models/train): the COCO export's layout with 5 + 1 columns.

Output [N, A, 6] over the grids of strides 8, 16, 32: (cx, cy, log w, log h) offsets, then objectness
and the class score, both already sigmoids; score = objectness x class score. Input as YOLOX: BGR
0..255 with no normalisation, padded with 114 to multiples of 32.
"""
from __future__ import annotations

import numpy as np

from edge.detect.families.yolox import CHANNELS, MULTIPLE, PAD_VALUE, anchor_boxes, checked_rows

__all__ = ["CHANNELS", "FILTER_GROUPS", "MULTIPLE", "PAD_VALUE", "candidates"]

FILTER_GROUPS = ()  # no in-graph score threshold: its outputs are decoded on the host


def candidates(outputs: list[np.ndarray], input_hw: tuple[int, int], score_threshold: float,
               batch_index: int = 0) -> tuple[np.ndarray, np.ndarray, None]:
    """Boxes (xyxy, input pixels) and scores at or above the threshold, before NMS (DECODER_API)."""
    rows = checked_rows(outputs, input_hw, batch_index, classes=1)
    score = rows[:, 4] * rows[:, 5]
    idx = np.flatnonzero(score >= score_threshold)
    return anchor_boxes(rows, idx, input_hw), score[idx].astype(np.float32), None
