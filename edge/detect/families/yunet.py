"""YuNet (faces): pre- and post-processing as pure numpy functions.

Layout (../shared/models/README.md): input float32 NCHW, BGR 0..255, H and W multiples of 32.
Outputs per stride 8/16/32: cls, obj [N,A,1] (already sigmoid), bbox [N,A,4], kps [N,A,10].
"""
from __future__ import annotations

import numpy as np

from edge.detect.filters import FilterGroup, check_filter, filter_output_names
from edge.frame import BadDetections

STRIDES = (8, 16, 32)
MULTIPLE = 32
CHANNELS = "BGR"
PAD_VALUE = 0  # what the padding of an input is filled with
# edge.detect.graph.append_filter: one group per stride, score sqrt(cls * obj), the bbox row kept
FILTER_GROUPS = tuple(FilterGroup(f"s{s}", ((f"cls_{s}", 1, 0), (f"obj_{s}", 1, 0)), f"bbox_{s}", 4) for s in STRIDES)


def _boxes(anchor: np.ndarray, bbox: np.ndarray, stride: int, cols: int) -> np.ndarray:
    """xyxy in input pixels of the anchors' regressions (the anchor index runs row-major over the grid)."""
    b = bbox.astype(np.float32)
    cx = (anchor % cols + b[:, 0]) * stride
    cy = (anchor // cols + b[:, 1]) * stride
    # exp of a wild regression value would be inf; a face is never larger than the input
    bw = np.exp(np.minimum(b[:, 2], 12.0)) * stride
    bh = np.exp(np.minimum(b[:, 3], 12.0)) * stride
    return np.column_stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])


def _result(boxes: list[np.ndarray], scores: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, None]:
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), None
    return np.concatenate(boxes).astype(np.float32), np.concatenate(scores).astype(np.float32), None


def candidates(outputs: list[np.ndarray], input_hw: tuple[int, int], score_threshold: float,
               batch_index: int = 0) -> tuple[np.ndarray, np.ndarray, None]:
    """Boxes (xyxy, input pixels), scores above the threshold and quads (None: faces have none), before NMS.

    Raises BadDetections when the outputs do not have the layout the model promises or hold
    non-finite values: a detector that says something malformed has found nothing trustworthy.
    """
    if len(outputs) != 12:
        raise BadDetections(f"YuNet returned {len(outputs)} outputs, expected 12")
    h, w = input_hw
    boxes, scores = [], []
    for k, stride in enumerate(STRIDES):
        rows, cols = h // stride, w // stride
        n = rows * cols
        cls, obj, bbox = (np.asarray(outputs[k + 3 * j]) for j in range(3))
        for arr, last in ((cls, 1), (obj, 1), (bbox, 4)):
            if arr.ndim != 3 or arr.shape[1:] != (n, last) or arr.shape[0] <= batch_index:
                raise BadDetections(f"YuNet stride {stride}: output shape {arr.shape}, expected (N, {n}, {last})")
        cls, obj, bbox = cls[batch_index, :, 0], obj[batch_index, :, 0], bbox[batch_index]
        if not (np.isfinite(cls).all() and np.isfinite(obj).all() and np.isfinite(bbox).all()):
            raise BadDetections(f"YuNet stride {stride}: non-finite values in the outputs")
        score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
        idx = np.flatnonzero(score >= score_threshold)
        if idx.size:
            boxes.append(_boxes(idx, bbox[idx], stride, cols))
            scores.append(score[idx])
    return _result(boxes, scores)


def filtered_candidates(outputs: dict[str, np.ndarray], input_hw: tuple[int, int], score_threshold: float,
                        batch_index: int, batch: int) -> tuple[np.ndarray, np.ndarray, None]:
    """`candidates` from the outputs of a model rewritten by `append_filter` with FILTER_GROUPS.

    The graph already dropped the rows under its score floor; rows of other images of the batch
    and under this window's own threshold are dropped here. Raises BadDetections as `candidates`
    does: a non-finite checksum (some raw output was NaN or inf), or rows that do not fit the grid.
    """
    check_filter(outputs, FILTER_GROUPS)
    h, w = input_hw
    boxes, scores = [], []
    for stride, group in zip(STRIDES, FILTER_GROUPS):
        rows, cols = h // stride, w // stride
        n = rows * cols
        index, score, bbox = (outputs[k] for k in filter_output_names(group.name))
        if len(index) and (index.min() < 0 or index.max() >= batch * n):
            raise BadDetections(f"YuNet stride {stride}: row index outside a batch of {batch} x {n} anchors")
        sel = np.flatnonzero((index // n == batch_index) & (score >= score_threshold))
        if sel.size:
            boxes.append(_boxes(index[sel] % n, bbox[sel], stride, cols))
            scores.append(score[sel])
    return _result(boxes, scores)

