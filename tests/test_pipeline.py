"""Fail closed: every fault between capture and mask ends in a dropped frame or a frame masked whole.

Faults are injected around the real onnxruntime YuNet detector (a wrapper that raises, delays or
corrupts its real outputs), and outcomes go through a real sink, so the guarantee is checked on
the product's own code path.
"""
from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from conftest import VIDEO, WIDER, WrappedDetector, host, need
from edge import mask
from edge.detect.detector import OnnxDetector
from edge.frame import DroppedFrame, Frame, MaskedFrame
from edge.pipeline import Pipeline, Policy, run_loop
from edge.sinks.memory import MemorySink

FACES = "7_Cheering_Cheering_7_118.jpg"


def frame_of(image, seq=0, t_ns=1_000_000_000):
    return Frame(image, "cam", seq, t_ns, 1_700_000_000_000_000_000, f"{seq:06d}")


@pytest.fixture()
def faces_image():
    return cv2.imread(str(need(WIDER / "images" / FACES)))


class FaultyModel:
    """The real onnxruntime model, with its real outputs corrupted or replaced."""

    def __init__(self, model, fault):
        self.model, self.fault = model, fault
        self.name, self.sha256 = model.name, model.sha256
        self.provider = model.provider

    def run(self, blob):
        return self.fault(self.model.run(blob))


class RaisingDetector(WrappedDetector):
    def __init__(self, inner, exc):
        super().__init__(inner)
        self.exc = exc

    def detect(self, image, watch=None):
        self.inner.detect(image, watch)
        raise self.exc


class ReturnsDetector(WrappedDetector):
    def __init__(self, inner, value):
        super().__init__(inner)
        self.value = value

    def detect(self, image, watch=None):
        self.inner.detect(image, watch)
        return self.value


class SlowClock:
    """A detector 'delay': the pipeline's clock reads later than the deadline after detection."""

    def __init__(self, late_ms):
        self.late_ns = int(late_ms * 1e6)

    def __call__(self):
        return 1_000_000_000 + self.late_ns


def nan_outputs(outs):
    outs = [o.copy() for o in outs]
    outs[0][...] = np.nan
    return outs


def inf_boxes(outs):
    outs = [o.copy() for o in outs]
    outs[0][...] = 1.0
    outs[3][...] = 1.0
    outs[6][...] = np.inf
    return outs


FAULTS = {
    "raises": lambda m, d: (RaisingDetector(d, RuntimeError("CUDA error: out of memory")), None),
    "returns None": lambda m, d: (ReturnsDetector(d, None), None),
    "returns list": lambda m, d: (ReturnsDetector(d, [[0, 0, 10, 10]]), None),
    "NaN outputs": lambda m, d: (OnnxDetector(host(FaultyModel(m, nan_outputs), "yunet"), class_id=0), None),
    "inf boxes": lambda m, d: (OnnxDetector(host(FaultyModel(m, inf_boxes), "yunet"), class_id=0), None),
    "missing outputs": lambda m, d: (OnnxDetector(host(FaultyModel(m, lambda o: o[:6]), "yunet"), class_id=0), None),
    "wrong shapes": lambda m, d: (OnnxDetector(host(FaultyModel(m, lambda o: [x[:, :5] for x in o]), "yunet"), class_id=0), None),
    "late": lambda m, d: (d, SlowClock(late_ms=500)),
}
REASONS = {"raises": "detector_error", "returns None": "bad_output", "returns list": "bad_output",
           "NaN outputs": "bad_output", "inf boxes": "bad_output", "missing outputs": "bad_output",
           "wrong shapes": "bad_output", "late": "deadline"}


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("on_failure", ["drop", "mask_whole"])
def test_faults_never_let_pixels_out(yunet_model, face_detector, faces_image, fault, on_failure):
    detector, clock = FAULTS[fault](yunet_model, face_detector)
    kwargs = {"clock_ns": clock} if clock else {}
    pipeline = Pipeline(detector, mask.MaskStyle(), Policy(on_failure, deadline_ms=100), **kwargs)
    original = faces_image.copy()
    sink = MemorySink()
    sink.send(pipeline.process(frame_of(faces_image)))
    counters = pipeline.metrics.counters()
    if on_failure == "drop":
        [out] = sink.dropped
        assert out.reason == REASONS[fault]
        assert not sink.masked
        assert counters[f"dropped_{REASONS[fault]}"] == 1
    else:
        [out] = sink.masked
        assert out.status == "masked_whole"
        assert (out.frame.image == 0).all()
        assert not np.array_equal(out.frame.image, original)
        assert counters[f"masked_whole_{REASONS[fault]}"] == 1


@pytest.mark.parametrize("image, what", [
    (np.zeros((100, 100), np.uint8), "2-D"),
    (np.zeros((100, 100, 4), np.uint8), "4 channels"),
    (np.zeros((100, 100, 3), np.float32), "float"),
    (np.zeros((0, 100, 3), np.uint8), "empty"),
    (None, "not an array"),
])
def test_frame_of_wrong_shape_is_dropped(face_detector, image, what):
    pipeline = Pipeline(face_detector, mask.MaskStyle(), Policy("mask_whole"))
    out = pipeline.process(frame_of(image))
    assert isinstance(out, DroppedFrame) and out.reason == "bad_frame"
    assert pipeline.metrics.counters()["dropped_bad_frame"] == 1


def test_faces_masked_on_a_real_image(face_detector, faces_image, wider_gt):
    original = faces_image.copy()
    out = Pipeline(face_detector, mask.MaskStyle(style="solid")).process(frame_of(faces_image))
    assert isinstance(out, MaskedFrame) and out.status == "masked"
    assert len(out.regions) >= 6
    painted = mask.painted_map(original.shape, out.regions)
    changed = (out.frame.image != original).any(axis=2)
    # with a solid fill the painted map is the changed pixels (up to pixels already black)
    assert not changed[~painted].any()
    assert changed[painted].mean() > 0.95
    assert out.models == (("yunet_n", face_detector.backend.sha256),)
    assert {"preprocess", "inference", "decode", "mask"} <= set(out.timings_ms)


def test_exception_during_masking_drops(face_detector, faces_image, monkeypatch):
    def broken(image, boxes, style):
        image[: image.shape[0] // 2] = 0  # half-painted, then fails
        raise MemoryError("simulated")

    monkeypatch.setattr(mask, "apply", broken)
    out = Pipeline(face_detector, mask.MaskStyle()).process(frame_of(faces_image))
    assert isinstance(out, DroppedFrame) and out.reason == "detector_error"


class ListSource:
    camera_id = "cam"

    def __init__(self, frames, stop_at=None, stop=None):
        self.frames, self.stop_at, self.stop, self.closed = list(frames), stop_at, stop, False
        self.handed = 0

    def read(self, timeout):
        from edge.sources import EndOfStream

        if not self.frames:
            raise EndOfStream
        self.handed += 1
        if self.handed == self.stop_at:
            self.stop.set()  # a SIGTERM arriving while this frame is in flight
        return self.frames.pop(0)

    def stats(self):
        return {}

    def close(self):
        self.closed = True


def test_run_loop_on_a_real_video(face_detector):
    cap = cv2.VideoCapture(str(need(VIDEO / "vtest_pets2009_480x360.avi")))
    frames = []
    for i in range(8):
        ok, img = cap.read()
        assert ok
        frames.append(frame_of(img, seq=i))
    cap.release()
    sink = MemorySink()
    ticks = []
    n = run_loop(ListSource(frames), Pipeline(face_detector, mask.MaskStyle()), sink, threading.Event(),
                 on_tick=ticks.append)
    assert n == 8 and len(sink.masked) == 8 and len(ticks) == 8
    assert [m.frame.seq for m in sink.masked] == list(range(8))


def test_stop_flag_ends_the_loop_after_the_frame_in_flight(face_detector):
    stop = threading.Event()
    frames = [frame_of(np.zeros((64, 64, 3), np.uint8), seq=i) for i in range(10)]
    sink = MemorySink()
    n = run_loop(ListSource(frames, stop_at=3, stop=stop), Pipeline(face_detector, mask.MaskStyle()), sink, stop)
    assert n == 3 and len(sink.masked) == 3
