"""The context stage: one general detector run per frame yields persons and vehicles (several classes).

Context boxes are detected, never painted themselves: the mask step (edge.pipeline, edge.heads)
uses them to place head zones, and they travel apart from the masked classes (edge.frame.ClassTable
knows which classes are context; MaskedFrame.context, the wire header's "context" list).

The frame is letterboxed on the host (resized keeping its aspect to fit `width` x `height`, top-left)
and the backend pads it to the network's multiple with the family's pad value: the backend then only
ever runs at scale 1, so one graph-preprocessed session serves every frame size. The letterbox is
shrunk further when its padded input would exceed the run's cap on one network input
(runtime.max_input_px, edge.detect.multiscale), as every other detector's windows are. The YOLOX export
fixes the batch size at 1 inside its Reshape nodes (two frames in one call come back merged), so
detect_batch runs one frame a call.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from types import ModuleType

import cv2
import numpy as np

from edge.checks import within
from edge.detect.backends import Backend
from edge.detect.boxes import nms, padded_size
from edge.detect.multiscale import MAX_INPUT_PX
from edge.detect.plausible import check_boxes
from edge.frame import CLASS_NAME, Detections
from edge.timing import Stopwatch


@dataclass(frozen=True)
class ContextParams:
    """The [detect.context] table: which model, which of its classes, at what input size and threshold."""

    enabled: bool = False
    model: str = "yolox_nano"
    classes: tuple[str, ...] = ("person", "vehicle")  # names the model card declares
    score_threshold: float = 0.3
    nms_iou: float = 0.5
    # the letterbox the frame is fitted into (network-input px): 1088 x 608 keeps a 1080p frame's
    # distant pedestrians at about half their pixels
    width: int = 1088
    height: int = 608

    def __post_init__(self) -> None:
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes: expected distinct class names, got {list(self.classes)}")
        bad = [c for c in self.classes if not CLASS_NAME.fullmatch(c) or c in ("face", "plate")]
        if bad:
            raise ValueError(f"classes: {bad} cannot be context classes (lowercase names other than face / plate)")
        within(self, "score_threshold", 0.01, 1.0)
        within(self, "nms_iou", 0.05, 1.0)
        within(self, "width", 32, 4096)
        within(self, "height", 32, 4096)


def letterbox(h: int, w: int, width: int, height: int, multiple: int, max_px: int) -> tuple[float, tuple[int, int]]:
    """The resize ratio and (w, h) of a frame fitted into width x height, shrunk until its input padded
    to `multiple` holds at most max_px pixels."""
    ratio = min(width / w, height / h)
    while True:
        rw, rh = max(1, round(w * ratio)), max(1, round(h * ratio))
        ph, pw = padded_size(rh, rw, multiple)
        if ph * pw <= max_px or (rw, rh) == (1, 1):
            return ratio, (rw, rh)
        ratio *= min(0.99, math.sqrt(max_px / (ph * pw)))


class ContextDetector:
    """Detector (edge.detect.Detector) of several context classes from one model run per frame."""

    def __init__(self, backend: Backend, family: ModuleType, *, class_ids: tuple[int, ...],
                 groups: tuple[tuple[int, ...], ...], params: ContextParams, max_input_px: int = MAX_INPUT_PX) -> None:
        if len(class_ids) != len(groups) or not groups:
            raise ValueError("one run class id per group of model classes")
        self.backend, self.family, self.params = backend, family, params
        self.max_input_px = max_input_px
        self.class_ids = np.asarray(class_ids, np.int32)
        self.groups = tuple(tuple(g) for g in groups)
        self.models = ((backend.name, backend.sha256),)
        self.providers = (backend.provider,)

    def detect(self, image: np.ndarray, watch: Stopwatch | None = None) -> Detections:
        watch = watch or Stopwatch()
        h, w = image.shape[:2]
        t = time.perf_counter()
        ratio, (rw, rh) = letterbox(h, w, self.params.width, self.params.height, self.family.MULTIPLE,
                                    self.max_input_px)
        boxed = cv2.resize(image, (rw, rh), interpolation=cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR)
        watch.lap("preprocess", t)
        raw, input_hw = self.backend.run([boxed], 1.0, 1.0, self.params.score_threshold, watch)
        t = time.perf_counter()
        xyxy, score, group = self.family.labelled(raw, input_hw, self.params.score_threshold, self.groups, 0)
        check_boxes(xyxy, (rw, rh), "context boxes")  # before clipping: absurd boxes would vanish in it
        xyxy = xyxy * np.array([w / rw, h / rh, w / rw, h / rh], np.float32)
        xyxy[:, 0::2] = np.clip(xyxy[:, 0::2], 0, w)
        xyxy[:, 1::2] = np.clip(xyxy[:, 1::2], 0, h)
        keep = []
        for g in range(len(self.groups)):  # NMS per class: a rider and the motorcycle overlap
            sel = np.flatnonzero(group == g)
            keep.append(sel[nms(xyxy[sel], score[sel], self.params.nms_iou)])
        kept = np.concatenate(keep)
        out = Detections(xyxy[kept], score[kept], self.class_ids[group[kept]])
        watch.lap("decode", t)
        return out

    def detect_batch(self, images: list[np.ndarray], watch: Stopwatch | None = None) -> list[Detections]:
        watch = watch or Stopwatch()
        out = []
        for image in images:  # one frame a call: the export's Reshape nodes fix the batch at 1
            out.append(self.detect(image, watch))
        return out

    def close(self) -> None:
        return None
