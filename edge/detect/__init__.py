"""Detectors: ONNX models behind one protocol; pure pre/post-processing per model family."""
from __future__ import annotations

from typing import Protocol

import numpy as np

from edge.frame import Detections


class Detector(Protocol):
    #: (name, sha256) of every model this detector runs, for headers and audit records
    models: tuple[tuple[str, str], ...]

    def detect(self, image: np.ndarray, timings: dict[str, float] | None = None) -> Detections:
        """Boxes in the pixel coordinates of `image` (HxWx3 uint8 BGR).

        If `timings` is given, per-stage milliseconds (preprocess, inference, decode) are added to it.
        """
