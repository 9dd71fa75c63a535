"""The per-frame loop: detect, paint stages, hold, mask in place, hand over; any failure drops the frame or
masks it whole."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from edge import mask
from edge.checks import one_of, within
from edge.detect import Detector
from edge.frame import (BadDetections, BadFrame, ClassTable, Detections, DroppedFrame, Frame, MaskedFrame,
                        check_image)
from edge.metrics import Metrics
from edge.timing import Stopwatch
from edge.sinks import Sink
from edge.sources import EndOfStream, FrameSource

log = logging.getLogger(__name__)

ON_FAILURE = ("drop", "mask_whole")


class DeadlineMissed(TimeoutError):
    pass


@dataclass(frozen=True)
class Policy:
    on_failure: str = "drop"  # drop | mask_whole
    deadline_ms: float = 0.0  # from capture to masked; 0 = none (bench replay must keep every frame)

    def __post_init__(self) -> None:
        one_of(self, "on_failure", ON_FAILURE)
        within(self, "deadline_ms", 0.0, 60000.0)


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, DeadlineMissed):
        return "deadline"
    if isinstance(exc, mask.MaskIncomplete):
        return "mask_incomplete"
    if isinstance(exc, BadDetections):
        return "bad_output"
    return "detector_error"


class PaintStage(Protocol):
    """A step from what was detected to what is painted (edge.heads: faces grown to heads, head zones)."""

    def to_paint(self, masked: Detections, context: Detections, shape: tuple[int, int]) -> Detections:
        """The masked detections to paint (kept, grown or added to), given the frame's context detections
        and its (height, width)."""
        ...


def split(dets: Detections, classes: ClassTable) -> tuple[Detections, Detections]:
    """(masked classes, context classes); BadDetections for a class id outside the run's table."""
    classes.names_of(dets.class_id)
    ctx = classes.is_context(dets.class_id)
    return dets.take(np.flatnonzero(~ctx)), dets.take(np.flatnonzero(ctx))


class Pipeline:
    """Turns a Frame into a MaskedFrame or a DroppedFrame; never returns unmasked pixels."""

    def __init__(self, detector: Detector, style: mask.MaskStyle, policy: Policy = Policy(),
                 metrics: Metrics | None = None, tracker=None,
                 clock_ns: Callable[[], int] = time.monotonic_ns, classes: ClassTable | None = None,
                 stages: Sequence[PaintStage] = ()) -> None:
        self.detector, self.style, self.policy = detector, style, policy
        self.metrics = metrics or Metrics()
        self.tracker, self.clock_ns = tracker, clock_ns
        # without a class table every detection is of a masked class, painted as found
        self.classes, self.stages = classes, tuple(stages)
        self.tight = mask.tight_ids(classes)

    def process(self, frame: Frame) -> MaskedFrame | DroppedFrame:
        watch = Stopwatch()
        try:
            check_image(frame.image)  # the one check of the pixels: the detectors downstream rely on it
        except BadFrame as e:
            return self._dropped(frame, "bad_frame", str(e), watch)
        try:
            return self._mask(frame, watch)
        except Exception as e:  # any failure between capture and mask must end in drop or full mask
            return self._fail(frame, e, watch)

    def _mask(self, frame: Frame, watch: Stopwatch) -> MaskedFrame:
        dets = self.detector.detect(frame.image, watch)
        if not isinstance(dets, Detections):
            raise BadDetections(f"detector returned {type(dets).__name__}, expected Detections")
        context = Detections()
        if self.classes is not None:
            dets, context = split(dets, self.classes)
        t0 = time.perf_counter()
        for stage in self.stages:
            # grown faces and zones are masked regions: the invariant below covers them
            dets = stage.to_paint(dets, context, frame.image.shape[:2])
        held = np.zeros(len(dets), bool)
        if self.tracker is not None:
            # after the paint stages, so what they add (head zones, plate zones) is held like a face
            # when the detector behind it misses a frame
            dets = self.tracker.update(frame, dets)
            held = self.tracker.last_held.copy()
        boxes = mask.regions(dets, frame.image.shape, self.style, self.tight)
        mask.apply(frame.image, boxes, self.style)
        missed = mask.uncovered(dets.xyxy, boxes, frame.image.shape)
        if missed.size:  # the invariant, whatever the settings: every detection lies in painted pixels
            raise mask.MaskIncomplete(f"{missed.size} of {len(dets)} detections not inside the painted regions "
                                      f"(first {dets.xyxy[missed[0]].round(1).tolist()})")
        watch.lap("mask", t0)
        self._check_deadline(frame)
        self.metrics.count("frames_masked")
        self.metrics.count("objects_masked", len(boxes))
        return MaskedFrame(frame, boxes, dets, "masked", watch.as_dict(), self.detector.models, context, held)

    def _check_deadline(self, frame: Frame) -> None:
        if self.policy.deadline_ms:
            age_ms = (self.clock_ns() - frame.t_capture_mono_ns) / 1e6
            if age_ms > self.policy.deadline_ms:
                raise DeadlineMissed(f"{age_ms:.1f} ms after capture, deadline {self.policy.deadline_ms:g} ms")

    def _fail(self, frame: Frame, exc: Exception, watch: Stopwatch) -> MaskedFrame | DroppedFrame:
        reason = failure_reason(exc)
        if self.policy.on_failure == "mask_whole":
            mask.fill_whole(frame.image, self.style)
            h, w = frame.image.shape[:2]
            self.metrics.count(f"masked_whole_{reason}")
            self.metrics.count("frames_masked_whole")
            log.warning("camera %s seq %d: %s (%s); frame masked whole", frame.camera_id, frame.seq, reason, exc)
            return MaskedFrame(frame, np.array([[0, 0, w, h]], np.int32), Detections(), "masked_whole",
                               watch.as_dict(), self.detector.models)
        return self._dropped(frame, reason, str(exc), watch)

    def _dropped(self, frame: Frame, reason: str, detail: str, watch: Stopwatch) -> DroppedFrame:
        self.metrics.count(f"dropped_{reason}")
        self.metrics.count("frames_dropped")
        log.warning("camera %s seq %d: dropped (%s: %s)", frame.camera_id, frame.seq, reason, detail)
        return DroppedFrame.of(frame, reason, watch.as_dict())


def run_loop(source: FrameSource, pipeline: Pipeline, sink: Sink, stop: threading.Event,
             on_tick: Callable[[MaskedFrame | DroppedFrame | None], None] | None = None,
             poll_s: float = 0.25, max_frames: int | None = None) -> int:
    """Pull frames until the source ends, `stop` is set or `max_frames` were processed.

    on_tick runs after every outcome handed to the sink, and on every empty poll, so a service
    watchdog is fed from the loop itself: a loop wedged inside a detector stops feeding it.
    """
    n = 0
    while not stop.is_set() and (max_frames is None or n < max_frames):
        try:
            frame = source.read(timeout=poll_s)
        except EndOfStream:
            break
        if frame is None:
            if on_tick:
                on_tick(None)
            continue
        pipeline.metrics.count("frames_in")
        outcome = pipeline.process(frame)
        del frame  # the outcome holds the only reference to the pixels now
        t0 = time.perf_counter()
        if not sink.send(outcome):
            pipeline.metrics.count("sink_dropped")
        outcome.timings_ms["send"] = (time.perf_counter() - t0) * 1e3
        if isinstance(outcome, MaskedFrame):
            outcome.timings_ms["end_to_end"] = (time.monotonic_ns() - outcome.frame.t_capture_mono_ns) / 1e6
        pipeline.metrics.observe_all(outcome.timings_ms)
        n += 1
        if on_tick:
            on_tick(outcome)
    return n
