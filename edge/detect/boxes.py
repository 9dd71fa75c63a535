"""Box arithmetic shared by every decoder: NMS, resize-then-pad geometry. Pure numpy (and cv2's NMS)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def nms(xyxy: np.ndarray, score: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best first."""
    if len(xyxy) == 0:
        return np.zeros((0,), np.int64)
    xywh = np.column_stack([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]]).astype(np.float32)
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), score.astype(np.float32).tolist(), 0.0, float(iou))
    return np.asarray(keep, np.int64).reshape(-1)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N,4) and (M,4) xyxy boxes."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """The smallest (H, W) at or above the given size that the network's strides divide."""
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


@dataclass(frozen=True)
class Fit:
    """An image of (height, width) resized by (sx, sy), then zero-padded at the right and bottom to the multiple."""

    resized_hw: tuple[int, int]  # the resized image inside the network input
    input_hw: tuple[int, int]  # the padded network input

    def factors(self, height: int, width: int) -> tuple[float, float]:
        """(fx, fy) mapping source pixels to input pixels: x_input = x_source * fx."""
        return self.resized_hw[1] / width, self.resized_hw[0] / height


def fit(height: int, width: int, sx: float, sy: float, multiple: int) -> Fit:
    """Resize-then-pad geometry, as the host preprocessing, the graph's Resize/Pad and the tiling compute it."""
    rh, rw = max(1, round(height * sy)), max(1, round(width * sx))
    return Fit((rh, rw), padded_size(rh, rw, multiple))
