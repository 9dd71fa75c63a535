"""Backends: how a model is run. One signature for every way (host preprocessing, graph preprocessing, graph filter).

A backend takes same-size uint8 crops of frames with the scale they are to be seen at, resizes and
pads them as its family's network wants, runs the model once for all of them and returns the raw
outputs with the padded input (H, W); `decode` turns the outputs of one crop into boxes with the
family's decoder (edge.detect.families). The detector (edge.detect.detector) never asks which
backend it has.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from edge.timing import Stopwatch

Raw = Any  # a backend's outputs of one run, as its own `decode` reads them


class Backend(Protocol):
    name: str
    sha256: str
    provider: str  # the onnxruntime provider the model actually runs on

    def check(self, passes: tuple) -> None:
        """Raise ValueError if this backend cannot run some pass (edge.detect.multiscale.PassSpec)."""

    def run(self, crops: list[np.ndarray], sx: float, sy: float, floor: float, watch: Stopwatch
            ) -> tuple[Raw, tuple[int, int]]:
        """Outputs for HxWx3 uint8 BGR crops of one size resized by (sx, sy), and the padded input (H, W).

        `floor`: the lowest score threshold any crop is decoded with (a filtering graph drops rows under it).
        Preprocess, inference (and upload / download on a GPU) milliseconds go to `watch`.
        """

    def decode(self, raw: Raw, input_hw: tuple[int, int], score_threshold: float, index: int, batch: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Boxes (xyxy), scores and quads (or None), input pixels, of crop `index` of `batch`; BadDetections
        when the outputs are malformed or not finite."""
