"""Box arithmetic shared by every decoder: NMS, letterbox geometry. Pure numpy (and cv2's NMS)."""
from __future__ import annotations

import cv2
import numpy as np


def nms(xyxy: np.ndarray, score: np.ndarray, iou: float, score_threshold: float = 0.0) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best first."""
    if len(xyxy) == 0:
        return np.zeros((0,), np.int64)
    xywh = np.column_stack([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]]).astype(np.float32)
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), score.astype(np.float32).tolist(), float(score_threshold), float(iou))
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
