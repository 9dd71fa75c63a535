"""Calibration frames -> the exact float32 tensors the runtime feeds the network.

The reader does not rebuild the preprocessing: it runs the runtime's own `OnnxDetector` (the
configured passes: scales, tiles, batching of windows) over each frame with a tap in place of the
model, and records every blob the detector hands to `model.run`. The tap forwards the blob to the
real fp32 session, so the detector's later steps see real outputs. What the quantizer is calibrated
on is therefore what `edge.detect.backends.host.host_blob` (through `HostBackend.run`) produces at run
time, whatever the config says. (With runtime.graph_preprocess the same numbers are computed inside
the graph, see edge/detect/graph.py, so one calibration serves both paths.)

Blobs are network inputs, i.e. the frames themselves: they stay in this process's memory and never
reach disk (a spilled file would outlive a killed run). They are kept as uint8 whenever that is
exact, which it is for every host blob (resized uint8 pixels, zero padding): a 720p input is 2.8 MB
instead of 11 MB. onnxruntime's histogram calibrators still get them one at a time (see quantize.py).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from onnxruntime.quantization import CalibrationDataReader

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov")


@dataclass(frozen=True)
class FrameRef:
    """Where a calibration frame came from, for the model card's description of the set."""

    source: str
    index: int


def _video_frames(path: Path, every: int, limit: int | None) -> Iterator[tuple[FrameRef, np.ndarray]]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open video {path}")
    try:
        n = taken = 0
        while limit is None or taken < limit:
            ok, image = cap.read()
            if not ok:
                break
            if n % every == 0:
                taken += 1
                yield FrameRef(str(path), n), image
            n += 1
    finally:
        cap.release()


def iter_frames(sources: list[str | Path], *, every: int = 1, per_source: int | None = None
                ) -> Iterator[tuple[FrameRef, np.ndarray]]:
    """BGR uint8 frames from image files, folders of images and videos (every `every`-th video frame)."""
    for src in map(Path, sources):
        if src.is_dir():
            files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            for i, p in enumerate(files[:per_source]):
                yield from _image(p, FrameRef(str(src), i))
        elif src.suffix.lower() in VIDEO_SUFFIXES:
            yield from _video_frames(src, max(1, every), per_source)
        elif src.suffix.lower() in IMAGE_SUFFIXES:
            yield from _image(src, FrameRef(str(src), 0))
        else:
            raise ValueError(f"{src}: not an image, an image folder or a video ({', '.join(VIDEO_SUFFIXES)})")


def _image(path: Path, ref: FrameRef) -> Iterator[tuple[FrameRef, np.ndarray]]:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}")
    yield ref, image


class _Tap:
    """Stands in for the detector's model: records each input blob, answers with the real model's outputs."""

    def __init__(self, model, sink) -> None:
        self.model, self.sink = model, sink
        self.name, self.sha256 = model.name, model.sha256

    def run(self, blob: np.ndarray) -> list[np.ndarray]:
        self.sink(blob)
        return self.model.run(blob)


def runtime_detector(cfg, class_name: str):
    """The runtime's OnnxDetector for `class_name` (its main model and passes), on the CPU numpy path."""
    import dataclasses

    from edge.compose import class_table, load_model
    from edge.detect.backends.frames import graph_scales
    from edge.detect.detector import OnnxDetector
    from edge.detect.multiscale import passes_from_config

    # calibration always sees the float blob: the graph-preprocessed path computes the same numbers
    cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, provider="cpu", graph_preprocess=False,
                                                               fp16=False))
    cls_cfg = cfg.detect.get(class_name)
    passes = passes_from_config(cls_cfg)
    backend, card = load_model(cfg, cls_cfg.model, graph_scales(passes))
    return OnnxDetector(backend, class_id=class_table(cfg).id(class_name),
                        score_threshold=cls_cfg.score_threshold, nms_iou=cls_cfg.nms_iou, passes=passes), card


class RuntimeCalibrationReader(CalibrationDataReader):
    """onnxruntime CalibrationDataReader over the blobs a runtime detector builds from the given frames.

    `detector` is an OnnxDetector on a HostBackend (see `runtime_detector`); the backend's model is
    swapped for a recording tap while the frames are run. Supports `len` and `set_range` so quantize_static can take the blobs
    one at a time (its CalibStridedMinMax option, which every calibration method honours).
    """

    def __init__(self, detector, frames, input_name: str | None = None) -> None:
        backend = detector.backend
        self.input_name = input_name or backend.model.input_names[0]
        self.blobs: list[np.ndarray] = []
        self.frames: list[FrameRef] = []
        self.shapes: set[tuple[int, ...]] = set()
        real = backend.model
        backend.model = _Tap(real, self._keep)
        try:
            for ref, image in frames:
                self.frames.append(ref)
                detector.detect(image)
        finally:
            backend.model = real
        if not self.blobs:
            raise ValueError("no calibration frames: the sources gave nothing to calibrate on")
        self._start, self._end, self._next = 0, len(self.blobs), 0
        log.info("calibration: %d frames -> %d network inputs, shapes %s", len(self.frames), len(self.blobs),
                 sorted(self.shapes))

    def _keep(self, blob: np.ndarray) -> None:
        small = blob.astype(np.uint8)
        self.blobs.append(small if np.array_equal(small, blob) else blob.copy())
        self.shapes.add(tuple(blob.shape))

    def __len__(self) -> int:
        return len(self.blobs)

    def blob(self, index: int) -> np.ndarray:
        """The index-th network input, float32 as the network takes it."""
        return self.blobs[index].astype(np.float32)

    def largest(self) -> np.ndarray:
        return self.blob(max(range(len(self.blobs)), key=lambda i: self.blobs[i].size))

    def set_range(self, start_index: int, end_index: int) -> None:
        self._start, self._end = start_index, min(end_index, len(self.blobs))
        self._next = self._start

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._end:
            return None
        blob = self.blob(self._next)
        self._next += 1
        return {self.input_name: blob}

    def rewind(self) -> None:
        self.set_range(0, len(self.blobs))

    def describe(self) -> str:
        """One line for the model card: sources, frame and input counts, input shapes."""
        per_source: dict[str, int] = {}
        for ref in self.frames:
            per_source[ref.source] = per_source.get(ref.source, 0) + 1
        parts = ", ".join(f"{Path(s).name} ({n})" for s, n in per_source.items())
        shapes = ", ".join("x".join(map(str, s)) for s in sorted(self.shapes))
        return f"{len(self.frames)} frames from {parts}; {len(self.blobs)} network inputs of shape {shapes}"
