"""YuNet (faces): pre- and post-processing as pure numpy functions.

Layout (../shared/models/README.md): input float32 NCHW, BGR 0..255, H and W multiples of 32.
Outputs per stride 8/16/32: cls, obj [N,A,1] (already sigmoid), bbox [N,A,4], kps [N,A,10].
"""
from __future__ import annotations

import numpy as np

from edge.frame import BadDetections

STRIDES = (8, 16, 32)
MULTIPLE = 32
CHANNELS = "BGR"


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
        if idx.size == 0:
            continue
        b = bbox[idx].astype(np.float32)
        cx = (idx % cols + b[:, 0]) * stride
        cy = (idx // cols + b[:, 1]) * stride
        # exp of a wild regression value would be inf; a face is never larger than the input
        bw = np.exp(np.minimum(b[:, 2], 12.0)) * stride
        bh = np.exp(np.minimum(b[:, 3], 12.0)) * stride
        boxes.append(np.column_stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]))
        scores.append(score[idx])
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), None
    return np.concatenate(boxes).astype(np.float32), np.concatenate(scores).astype(np.float32), None
