"""MultiDetector: classes run concurrently on the same frame, results in member order, timings summed, and any
member's error or overrun fails the whole detect (fail closed); real faces + plates agree with running alone."""
from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from conftest import PLATES, need
from edge.detect.detector import MultiDetector
from edge.frame import FACE, PLATE, BadDetections, Detections, Frame
from edge.timing import Stopwatch

WAIT_S = 5.0  # generous: a correct run never waits this long, a broken one fails instead of hanging


class Fake:
    """A detector that records its thread, can wait on / set events, and returns one box of its class."""

    def __init__(self, class_id: int, *, wait: threading.Event | None = None, sets: threading.Event | None = None,
                 error: Exception | None = None) -> None:
        self.class_id, self.wait, self.sets, self.error = class_id, wait, sets, error
        self.models = ((f"fake{class_id}", "0" * 64),)
        self.providers = ("CPUExecutionProvider",)
        self.threads: list[str] = []
        self.waited: list[bool] = []
        self.seen: list[np.ndarray] = []

    def _one(self, image: np.ndarray, watch: Stopwatch | None) -> Detections:
        self.threads.append(threading.current_thread().name)
        self.seen.append(image)
        if self.sets is not None:
            self.sets.set()
        if self.wait is not None:
            self.waited.append(self.wait.wait(WAIT_S))
        if watch is not None:
            watch.add("inference", 1.0 + self.class_id)
        if self.error is not None:
            raise self.error
        return Detections([[1, 2, 3 + self.class_id, 4]], [0.9], [self.class_id])

    def detect(self, image, watch=None):
        return self._one(image, watch)

    def detect_batch(self, images, watch=None):
        return [self._one(i, watch) for i in images]

    def close(self):
        pass


def test_a_model_two_members_run_is_named_once():
    # two stages running the same model (the plate model on the whole frame and in vehicle crops)
    face, plate, crops = Fake(FACE), Fake(PLATE), Fake(PLATE)
    multi = MultiDetector([face, plate, crops], concurrent=False)
    assert multi.models == (face.models[0], plate.models[0])


def test_members_overlap_in_time_and_share_the_frame():
    """The face member blocks until the plate member has started: only a concurrent run gets past that."""
    started = threading.Event()
    face, plate = Fake(FACE, wait=started), Fake(PLATE, sets=started)
    multi = MultiDetector([face, plate])
    image = np.zeros((8, 8, 3), np.uint8)
    dets = multi.detect(image)
    assert multi.concurrent and face.waited == [True]
    assert face.threads[0] != plate.threads[0]
    assert face.seen[0] is image and plate.seen[0] is image  # one decoded frame, no copies
    assert dets.class_id.tolist() == [FACE, PLATE]
    multi.close()


def test_sequential_mode_runs_on_the_calling_thread():
    face, plate = Fake(FACE), Fake(PLATE)
    multi = MultiDetector([face, plate], concurrent=False)
    assert multi.detect(np.zeros((8, 8, 3), np.uint8)).class_id.tolist() == [FACE, PLATE]
    assert not multi.concurrent
    assert face.threads == plate.threads == [threading.current_thread().name]


def test_a_single_member_needs_no_pool():
    assert not MultiDetector([Fake(FACE)]).concurrent


@pytest.mark.parametrize("concurrent", [True, False])
def test_timings_of_all_members_are_summed(concurrent):
    multi = MultiDetector([Fake(FACE), Fake(PLATE)], concurrent=concurrent)
    watch = Stopwatch()
    watch.add("inference", 10.0)
    multi.detect(np.zeros((8, 8, 3), np.uint8), watch)
    assert watch.as_dict() == {"inference": 10.0 + 1.0 + 2.0}
    multi.close()


@pytest.mark.parametrize("failing", [0, 1])
@pytest.mark.parametrize("concurrent", [True, False])
def test_any_member_error_fails_the_whole_detect(failing, concurrent):
    members = [Fake(FACE), Fake(PLATE)]
    members[failing].error = BadDetections("garbage from the model")
    multi = MultiDetector(members, concurrent=concurrent)
    with pytest.raises(BadDetections, match="garbage"):
        multi.detect(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(BadDetections, match="garbage"):
        multi.detect_batch([np.zeros((8, 8, 3), np.uint8)] * 2)
    multi.close()


def test_a_member_overrunning_the_timeout_fails_the_detect():
    release = threading.Event()
    multi = MultiDetector([Fake(FACE), Fake(PLATE, wait=release)], timeout_s=0.05)
    try:
        with pytest.raises(TimeoutError, match="longer than"):
            multi.detect(np.zeros((8, 8, 3), np.uint8))
    finally:
        release.set()
        multi.close()


def test_a_failing_member_drops_the_frame_in_the_pipeline():
    from edge.mask import MaskStyle
    from edge.pipeline import Pipeline, Policy

    multi = MultiDetector([Fake(FACE), Fake(PLATE, error=RuntimeError("plate model died"))])
    frame = Frame(np.full((8, 8, 3), 200, np.uint8), "cam", 1, 0, 0)
    out = Pipeline(multi, MaskStyle(), Policy("drop", deadline_ms=0.0)).process(frame)
    assert type(out).__name__ == "DroppedFrame"
    multi.close()


def test_batch_results_stay_per_frame_and_in_member_order():
    started = threading.Event()
    multi = MultiDetector([Fake(FACE, wait=started), Fake(PLATE, sets=started)])
    out = multi.detect_batch([np.zeros((8, 8, 3), np.uint8)] * 3)
    assert [d.class_id.tolist() for d in out] == [[FACE, PLATE]] * 3
    multi.close()


@pytest.mark.parametrize("bad", [dict(timeout_s=0), dict(timeout_s=-1)])
def test_bad_arguments(bad):
    with pytest.raises(ValueError):
        MultiDetector([Fake(FACE)], **bad)
    with pytest.raises(ValueError):
        MultiDetector([])


def test_real_faces_and_plates_concurrently_equal_each_alone(face_detector):
    from edge.compose import load_model
    from edge.config import Config
    from edge.detect.detector import OnnxDetector

    plates = OnnxDetector(load_model(Config(), "lpd_yunet")[0], class_id=PLATE, score_threshold=0.3, nms_iou=0.3)
    image = cv2.imread(str(need(PLATES / "test_001.jpg")))
    multi = MultiDetector([face_detector, plates])
    both = multi.detect(image)
    alone = Detections.concat([face_detector.detect(image), plates.detect(image)])
    assert (both.class_id == PLATE).sum() >= 1
    np.testing.assert_array_equal(both.class_id, alone.class_id)
    np.testing.assert_allclose(both.xyxy, alone.xyxy, atol=1e-3)
    multi.close()


def test_the_app_runs_classes_one_after_another_on_the_cpu():
    """On the CPU each session already takes every core: concurrent classes would only oversubscribe them."""
    from edge.compose import build_detector
    from edge.config import Config, override

    multi = build_detector(override(Config(), {"detect.plate.enabled": True, "runtime.provider": "cpu",
                                               "detect.context.enabled": False}))
    assert [d.class_id for d in multi.detectors] == [FACE, PLATE]
    assert not multi.concurrent
