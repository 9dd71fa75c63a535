"""Detectors: ONNX models behind one protocol; backends run them, a decoder per model family reads their outputs."""
from __future__ import annotations

from typing import Protocol

import numpy as np

from edge.frame import Detections
from edge.timing import Stopwatch


class Detector(Protocol):
    #: (name, sha256) of every model this detector runs, each once (a model two stages run is one model),
    #: for headers and audit records
    models: tuple[tuple[str, str], ...]
    #: the onnxruntime providers its models actually run on, for STATUS= and the metrics
    providers: tuple[str, ...]

    def detect(self, image: np.ndarray, watch: Stopwatch | None = None) -> Detections:
        """Boxes in the pixel coordinates of `image` (HxWx3 uint8 BGR, already checked by the caller).

        If `watch` is given, per-stage milliseconds (preprocess, inference, decode...) are added to it.
        """

    def detect_batch(self, images: list[np.ndarray], watch: Stopwatch | None = None) -> list[Detections]:
        """`detect` for frames of one size at once (cameras sharing a detector share its inference calls)."""

    def close(self) -> None:
        """Stop whatever the detector runs in the background; it is not used afterwards."""
