"""BatchingDetector: concurrent camera loops share inference calls, each gets exactly its own frame's result
(real model, real threads), errors reach every frame of the batch, and no caller waits past its timeout."""
from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from conftest import WIDER, need
from edge.detect.batching import BatchingDetector
from edge.timing import Stopwatch

IMAGES = ["7_Cheering_Cheering_7_118.jpg", "2_Demonstration_Political_Rally_2_224.jpg", "3_Riot_Riot_3_604.jpg",
          "0_Parade_marchingband_1_465.jpg"]


@pytest.fixture(scope="module")
def frames():
    out = []
    for name in IMAGES:
        path = WIDER / "images" / name
        if path.exists():
            out.append(cv2.imread(str(path)))
    if len(out) < 3:
        need(WIDER / "images" / IMAGES[0])
        pytest.skip("fewer than 3 wider_dev images")
    return out


def call_together(det, images, watches=None):
    """Each image detected on its own thread, all released at once; results (or errors) in image order."""
    results: list = [None] * len(images)
    start = threading.Barrier(len(images))

    def run(i):
        start.wait()
        try:
            results[i] = det.detect(images[i], None if watches is None else watches[i])
        except BaseException as e:  # collected: the test checks what each caller got
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    return results


@pytest.mark.parametrize("max_batch", [8, 2])
def test_each_camera_gets_its_own_frames_result(face_detector, frames, max_batch):
    det = BatchingDetector(face_detector, cameras=len(frames), max_batch=max_batch, max_wait_ms=500)
    watches = [Stopwatch() for _ in frames]
    got = call_together(det, frames, watches)
    for frame, result in zip(frames, got, strict=True):
        expected = face_detector.detect(frame)
        assert len(expected) >= 1
        np.testing.assert_allclose(result.xyxy, expected.xyxy, atol=1e-3)
        np.testing.assert_array_equal(result.class_id, expected.class_id)
    assert det.frames == len(frames) and det.batches < len(frames)
    assert det.batches >= -(-len(frames) // max_batch)
    assert all("inference" in t and "batch_wait" in t for t in (w.as_dict() for w in watches))


def test_frames_of_different_sizes_are_batched_apart(face_detector, frames):
    small = np.ascontiguousarray(frames[1][:200, :300])
    det = BatchingDetector(face_detector, cameras=3, max_wait_ms=500)
    got = call_together(det, [frames[0], small, frames[2]])
    for image, result in zip([frames[0], small, frames[2]], got, strict=True):
        np.testing.assert_allclose(result.xyxy, face_detector.detect(image).xyxy, atol=1e-3)
    assert det.frames == 3 and det.batches >= 2


def test_one_camera_never_waits_for_others(face_detector, frames):
    det = BatchingDetector(face_detector, cameras=1, max_wait_ms=5000)
    watch = Stopwatch()
    det.detect(frames[0], watch)
    assert watch.as_dict()["batch_wait"] < 1000  # it did not sit out the 5 s gathering window


class Inner:
    """The parts of the Detector protocol the fakes below share; each fake has its own detect_batch."""

    models: tuple = ()
    providers = ("CPUExecutionProvider",)

    def detect(self, image, watch=None):
        return self.detect_batch([image], watch)[0]

    def close(self):
        pass


class Failing(Inner):
    models = (("broken", "0" * 64),)

    def __init__(self, error):
        self.error = error
        self.calls = 0

    def detect_batch(self, images, watch=None):
        self.calls += 1
        raise self.error


@pytest.mark.parametrize("error", [RuntimeError("CUDA failure"), TimeoutError("a detector took longer")])
def test_an_error_reaches_every_frame_of_the_batch(frames, error):
    inner = Failing(error)
    det = BatchingDetector(inner, cameras=3, max_wait_ms=500)
    got = call_together(det, frames[:3])
    assert all(r is error for r in got)


class Short(Inner):
    def detect_batch(self, images, watch=None):
        return []  # a broken inner detector: fewer results than frames


def test_a_short_result_list_is_an_error_not_a_guess(frames):
    got = call_together(BatchingDetector(Short(), cameras=2, max_wait_ms=500), frames[:2])
    assert all(isinstance(r, RuntimeError) and "0 results for" in str(r) for r in got)


class Stuck(Inner):
    def __init__(self):
        self.release = threading.Event()

    def detect_batch(self, images, watch=None):
        self.release.wait(10)
        raise RuntimeError("released")


def test_a_waiting_camera_times_out_while_the_batch_hangs(frames):
    inner = Stuck()
    det = BatchingDetector(inner, cameras=2, max_batch=1, max_wait_ms=0, timeout_s=0.3)
    got: dict[str, BaseException] = {}

    def run(name):
        try:
            det.detect(frames[0])
        except BaseException as e:  # collected for the asserts
            got[name] = e

    first = threading.Thread(target=run, args=("first",))
    first.start()
    while not det._busy:  # the first frame is inside the hung call
        threading.Event().wait(0.01)
    second = threading.Thread(target=run, args=("second",))
    second.start()
    second.join(5)
    # max_batch 1: the second frame waits behind the hung call and gives up at its timeout
    assert isinstance(got.get("second"), TimeoutError)
    inner.release.set()
    first.join(5)
    assert isinstance(got.get("first"), RuntimeError) and not det._pending


@pytest.mark.parametrize("kwargs", [{"cameras": 0}, {"cameras": 2, "max_batch": 0}, {"cameras": 2, "timeout_s": 0},
                                    {"cameras": 2, "max_wait_ms": -1}])
def test_bad_arguments(face_detector, kwargs):
    with pytest.raises(ValueError):
        BatchingDetector(face_detector, **kwargs)


def test_close_and_providers_are_the_inner_detectors(face_detector):
    class Closing(Inner):
        closed = False

        def detect_batch(self, images, watch=None):
            return []

        def close(self):
            self.closed = True

    inner = Closing()
    det = BatchingDetector(inner, cameras=2)
    det.close()
    assert inner.closed and det.providers == inner.providers and det.models == inner.models
