"""The ONNX detector: preprocessing, passes at one or more scales, decoding and merging."""
from __future__ import annotations

import time
from types import ModuleType

import cv2
import numpy as np

from edge.detect import centerface, yunet
from edge.detect.boxes import nms, padded_size
from edge.detect.session import OnnxModel
from edge.frame import Detections, check_image

FAMILIES: dict[str, ModuleType] = {"yunet": yunet, "centerface": centerface}


def preprocess(image: np.ndarray, scale: float, multiple: int, channels: str) -> tuple[np.ndarray, float, float]:
    """NCHW float32 blob of the image resized by `scale` and zero-padded to the network's multiple.

    Returns the blob and the (x, y) factors that map input pixels back: x_frame = x_input / fx.
    """
    h, w = image.shape[:2]
    sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
    if (sh, sw) != (h, w):
        interp = cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA
        image = cv2.resize(image, (sw, sh), interpolation=interp)
    ph, pw = padded_size(sh, sw, multiple)
    blob = np.zeros((1, 3, ph, pw), np.float32)
    src = image[..., ::-1] if channels == "RGB" else image
    blob[0, :, :sh, :sw] = src.transpose(2, 0, 1)
    return blob, sw / w, sh / h


def clip_boxes(xyxy: np.ndarray, height: int, width: int) -> np.ndarray:
    out = xyxy.copy()
    np.clip(out[:, 0::2], 0, width, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, height, out=out[:, 1::2])
    return out


def _add(timings: dict[str, float] | None, key: str, t0: float) -> float:
    t1 = time.perf_counter()
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + (t1 - t0) * 1e3
    return t1


class OnnxDetector:
    """One model, run at each configured scale over the whole frame; results merged by NMS."""

    def __init__(self, model: OnnxModel, family: str, *, class_id: int, score_threshold: float = 0.5,
                 nms_iou: float = 0.45, scales: tuple[float, ...] = (1.0,)) -> None:
        if family not in FAMILIES:
            raise ValueError(f"unknown detector family {family!r}; known: {sorted(FAMILIES)}")
        if not scales or min(scales) <= 0:
            raise ValueError(f"scales must be positive, got {scales}")
        self.model, self.family = model, FAMILIES[family]
        self.class_id, self.score_threshold, self.nms_iou = class_id, score_threshold, nms_iou
        self.scales = tuple(scales)
        self.models = ((model.name, model.sha256),)

    def detect(self, image: np.ndarray, timings: dict[str, float] | None = None) -> Detections:
        check_image(image)
        h, w = image.shape[:2]
        boxes, scores, quads = [], [], []
        for scale in self.scales:
            t = time.perf_counter()
            blob, fx, fy = preprocess(image, scale, self.family.MULTIPLE, self.family.CHANNELS)
            t = _add(timings, "preprocess", t)
            outputs = self.model.run(blob)
            t = _add(timings, "inference", t)
            xyxy, score, quad = self.family.candidates(outputs, blob.shape[2:], self.score_threshold)
            boxes.append(xyxy / np.array([fx, fy, fx, fy], np.float32))
            scores.append(score)
            quads.append(None if quad is None else quad / np.array([fx, fy], np.float32))
            _add(timings, "decode", t)
        t = time.perf_counter()
        xyxy = clip_boxes(np.concatenate(boxes), h, w)
        score = np.concatenate(scores)
        quad = None
        if any(q is not None for q in quads):
            quad = np.concatenate([q if q is not None else np.full((len(b), 4, 2), np.nan, np.float32)
                                   for q, b in zip(quads, boxes)])
        visible = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
        keep = np.flatnonzero(visible)[nms(xyxy[visible], score[visible], self.nms_iou)]
        _add(timings, "decode", t)
        return Detections(xyxy[keep], score[keep], np.full(len(keep), self.class_id, np.int32),
                          None if quad is None else quad[keep])


class MultiDetector:
    """Several detectors (faces, plates...) on the same frame; their results concatenated."""

    def __init__(self, detectors: list) -> None:
        if not detectors:
            raise ValueError("at least one detector is required")
        self.detectors = list(detectors)
        self.models = tuple(m for d in self.detectors for m in d.models)

    def detect(self, image: np.ndarray, timings: dict[str, float] | None = None) -> Detections:
        return Detections.concat([d.detect(image, timings) for d in self.detectors])
