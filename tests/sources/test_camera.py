"""CameraSource with scripted captures and a real OpenCV capture on a real video file.

Timing is never measured: the grabber's progress is gated by semaphores, backoff delays are
recorded through the injected wait hook, and gap lengths come from a fake clock.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable

import cv2
import numpy as np
import pytest

from edge.sources import EndOfStream, SourceError
from edge.sources.camera import CameraSource, open_cv_capture, parse_camera_uri

from conftest import VIDEO

PETS = VIDEO / "vtest_pets2009_480x360.avi"  # 795 frames
PETS_FRAMES = 795


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.002)


class Gate:
    """Lets the test decide how many reads a capture may complete."""

    def __init__(self) -> None:
        self._sem = threading.Semaphore(0)
        self._wide = threading.Event()

    def allow(self, n: int) -> None:
        self._sem.release(n)

    def open_wide(self) -> None:
        self._wide.set()
        self._sem.release(1)

    def pass_(self) -> None:
        while not self._wide.is_set():
            if self._sem.acquire(timeout=0.05):
                return


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


class ScriptedCapture:
    """Delivers `frames` images (None: forever), then fails the way `fail` says."""

    def __init__(self, tag: int, frames: int | None, *, fail: str = "not-ok", gate: Gate | None = None,
                 before_read: Callable[[int], None] | None = None) -> None:
        self.tag = tag
        self.frames = frames
        self.fail = fail
        self.gate = gate
        self.before_read = before_read
        self.reads = 0
        self.released = False

    def isOpened(self) -> bool:
        return True

    def read(self):
        if self.gate is not None:
            self.gate.pass_()
        index = self.reads
        self.reads += 1
        if self.before_read is not None:
            self.before_read(index)
        if self.frames is not None and index >= self.frames:
            if self.fail == "raise":
                raise OSError("usb device gone")
            if self.fail == "none":
                return True, None
            if self.fail == "empty":
                return True, np.zeros((0, 0, 3), np.uint8)
            return False, None
        image = np.zeros((4, 4, 3), np.uint8)
        image[0, 0] = (self.tag, index % 256, 0)
        return True, image

    def release(self) -> None:
        self.released = True


class NeverOpened:
    def __init__(self) -> None:
        self.released = False

    def isOpened(self) -> bool:
        return False

    def read(self):
        raise AssertionError("read on a capture that is not open")

    def release(self) -> None:
        self.released = True


class Factory:
    """Hands out the scripted results in order: a capture, or an exception to raise."""

    def __init__(self, *script) -> None:
        self.script = list(script)
        self.opens = 0
        self.handed: list = []

    def __call__(self):
        item = self.script[min(self.opens, len(self.script) - 1)]
        self.opens += 1
        if isinstance(item, Exception):
            raise item
        self.handed.append(item)
        return item


class RecordingWait:
    """Backoff hook: records each delay and advances the fake clock by it instead of sleeping."""

    def __init__(self, clock: FakeClock | None = None, block_after: int | None = None) -> None:
        self.clock = clock
        self.block_after = block_after
        self.delays: list[float] = []
        self.blocked = threading.Event()

    def __call__(self, stop: threading.Event, seconds: float) -> bool:
        self.delays.append(seconds)
        if self.clock is not None:
            self.clock.now += seconds
        if self.block_after is not None and len(self.delays) >= self.block_after:
            self.blocked.set()
            return stop.wait(10.0)
        return stop.is_set()


@pytest.fixture
def cleanup():
    """Close sources and open gates at the end of a test, even when it fails."""
    sources: list[CameraSource] = []
    gates: list[Gate] = []
    yield sources, gates
    for gate in gates:
        gate.open_wide()
    for source in sources:
        source.close()
        assert not source.stats()["running"]


def tag_of(frame) -> tuple[int, int]:
    return int(frame.image[0, 0, 0]), int(frame.image[0, 0, 1])


# -- uri parsing -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "uri, expected",
    [
        (0, (0, cv2.CAP_V4L2)),
        (3, (3, cv2.CAP_V4L2)),
        ("1", (1, cv2.CAP_V4L2)),
        (" 2 ", (2, cv2.CAP_V4L2)),
        ("/dev/video0", ("/dev/video0", cv2.CAP_V4L2)),
        ("/dev/video12", ("/dev/video12", cv2.CAP_V4L2)),
        ("/dev/v4l/by-id/usb-Cam_123-video-index0", ("/dev/v4l/by-id/usb-Cam_123-video-index0", cv2.CAP_V4L2)),
        ("rtsp://10.0.0.5:554/stream1", ("rtsp://10.0.0.5:554/stream1", cv2.CAP_FFMPEG)),
        ("rtsps://user:pw@cam.local/live", ("rtsps://user:pw@cam.local/live", cv2.CAP_FFMPEG)),
        ("RTSP://cam/ch1", ("RTSP://cam/ch1", cv2.CAP_FFMPEG)),
        ("http://192.168.1.9/mjpg/video.mjpg", ("http://192.168.1.9/mjpg/video.mjpg", cv2.CAP_FFMPEG)),
        ("https://cam.example/stream", ("https://cam.example/stream", cv2.CAP_FFMPEG)),
        (
            "v4l2src device=/dev/video0 ! videoconvert ! appsink",
            ("v4l2src device=/dev/video0 ! videoconvert ! appsink", cv2.CAP_GSTREAMER),
        ),
    ],
)
def test_parse_camera_uri(uri, expected):
    assert parse_camera_uri(uri) == expected


@pytest.mark.parametrize(
    "uri", [-1, True, 1.5, None, "", "   ", "video.mp4", "/dev/sda", "/dev/videoX", "rtsp://", "ftp://cam/x", "cam0"],
)
def test_parse_camera_uri_rejects_unknown_forms_with_a_clear_message(uri):
    with pytest.raises(ValueError, match="camera") as info:
        parse_camera_uri(uri)
    if isinstance(uri, str) and uri.strip():
        assert repr(uri) in str(info.value)


# -- opening -----------------------------------------------------------------------------------

def test_capture_that_does_not_open_at_start_raises_source_error(cleanup):
    never = NeverOpened()
    source = CameraSource("rtsp://10.0.0.5/front", "front", open_capture=lambda: never)
    cleanup[0].append(source)
    with pytest.raises(SourceError, match=r"camera front \(rtsp://10\.0\.0\.5/front\): could not open"):
        source.start()
    assert never.released
    assert source.stats()["running"] is False
    with pytest.raises(RuntimeError, match="start"):
        source.read(timeout=0.01)


def test_capture_factory_raising_at_start_raises_source_error_with_the_cause():
    source = CameraSource("/dev/video0", "rear", open_capture=Factory(OSError("permission denied")))
    with pytest.raises(SourceError, match="camera rear .*permission denied"):
        source.start()


def test_real_opencv_on_missing_device_refuses_to_start():
    source = CameraSource("/dev/video99", "cab")
    with pytest.raises(SourceError, match=r"camera cab \(/dev/video99\): could not open"):
        source.start()


def test_bad_uri_with_default_capture_raises_source_error_at_construction():
    with pytest.raises(SourceError, match=r"camera cam0 \(clip\.mp4\).*unrecognised"):
        CameraSource("clip.mp4", "cam0")


def test_open_cv_capture_on_a_real_file_through_ffmpeg_with_timeouts():
    cap = open_cv_capture(str(PETS), cv2.CAP_FFMPEG, open_timeout=1.0, read_timeout=1.0)
    try:
        assert cap.isOpened()
        ok, image = cap.read()
        assert ok and image.shape == (360, 480, 3)
    finally:
        cap.release()


# -- newest frame ------------------------------------------------------------------------------

def test_slow_reader_gets_newest_frame_with_seq_gaps_and_no_backlog(cleanup):
    sources, gates = cleanup
    gate = Gate()
    gates.append(gate)
    wall, mono = itertools.count(10), itertools.count(20)
    source = CameraSource(
        "fake", "cam", open_capture=lambda: ScriptedCapture(1, None, gate=gate),
        wall_ns=lambda: next(wall), mono_ns=lambda: next(mono),
    )
    sources.append(source)
    source.start()

    gate.allow(5)
    wait_until(lambda: source.stats()["frames"] == 5)
    frame = source.read(timeout=1.0)
    assert (frame.seq, tag_of(frame)) == (4, (1, 4))
    assert (frame.camera_id, frame.name) == ("cam", "")
    assert (frame.t_capture_wall_ns, frame.t_capture_mono_ns) == (14, 24)
    assert source.stats()["overwritten"] == 4
    assert source.read(timeout=0.02) is None  # nothing queued behind the newest frame

    gate.allow(3)
    wait_until(lambda: source.stats()["frames"] == 8)
    frame = source.read(timeout=1.0)
    assert frame.seq == 7
    stats = source.stats()
    assert (stats["overwritten"], stats["delivered"], stats["connected"]) == (6, 2, True)


class GatedCapture:
    """A real cv2.VideoCapture whose reads the test lets through one by one."""

    def __init__(self, inner: cv2.VideoCapture, gate: Gate) -> None:
        self.inner = inner
        self.gate = gate

    def isOpened(self) -> bool:
        return self.inner.isOpened()

    def read(self):
        self.gate.pass_()
        return self.inner.read()

    def release(self) -> None:
        self.inner.release()


def reference_frame(index: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(PETS))
    try:
        for _ in range(index + 1):
            ok, image = cap.read()
            assert ok
        return image
    finally:
        cap.release()


def test_real_video_capture_newest_frame_is_the_right_picture(cleanup):
    sources, gates = cleanup
    gate = Gate()
    gates.append(gate)
    source = CameraSource("pets", "pets", open_capture=lambda: GatedCapture(cv2.VideoCapture(str(PETS)), gate))
    sources.append(source)
    source.start()

    gate.allow(3)
    wait_until(lambda: source.stats()["frames"] == 3)
    first = source.read(timeout=1.0)
    gate.allow(4)
    wait_until(lambda: source.stats()["frames"] == 7)
    second = source.read(timeout=1.0)

    assert (first.seq, second.seq) == (2, 6)
    assert np.array_equal(first.image, reference_frame(2))
    assert np.array_equal(second.image, reference_frame(6))
    assert source.stats()["overwritten"] == 5


def test_real_video_capture_end_is_a_gap_followed_by_reopen(cleanup, caplog):
    sources, gates = cleanup
    gate = Gate()
    gates.append(gate)
    clock = FakeClock()
    wait = RecordingWait(clock)
    source = CameraSource(
        "pets", "pets", open_capture=lambda: GatedCapture(cv2.VideoCapture(str(PETS)), gate),
        clock=clock, wait=wait,
    )
    sources.append(source)
    caplog.set_level(logging.WARNING, logger="edge.sources.camera")
    source.start()

    # Every frame of the file, the read that hits its end, then two frames after reopening.
    gate.allow(PETS_FRAMES + 1 + 2)
    wait_until(lambda: source.stats()["frames"] == PETS_FRAMES + 2)
    frame = source.read(timeout=1.0)

    assert frame.seq == PETS_FRAMES + 1
    assert np.array_equal(frame.image, reference_frame(1))
    stats = source.stats()
    assert (stats["gaps"], stats["reopens"], stats["reopen_failures"]) == (1, 1, 0)
    assert wait.delays == [0.5]
    assert stats["last_gap_s"] == pytest.approx(0.5)
    messages = [r.getMessage() for r in caplog.records]
    assert any("frames stopped (read failed)" in m for m in messages)
    assert any("frames back after a 0.5 s gap" in m for m in messages)


# -- failures, backoff, reopen -----------------------------------------------------------------

def test_reopen_after_failures_with_exponential_backoff_reset_after_success(cleanup, caplog):
    sources, gates = cleanup
    gate = Gate()
    gates.append(gate)
    clock = FakeClock()
    wait = RecordingWait(clock)
    first, fourth, fifth = (
        ScriptedCapture(1, 3), ScriptedCapture(4, 2, fail="raise"), ScriptedCapture(5, None, gate=gate),
    )
    never = NeverOpened()
    factory = Factory(first, never, OSError("usb reset"), fourth, fifth)
    source = CameraSource("fake", "cam", open_capture=factory, clock=clock, wait=wait)
    sources.append(source)
    caplog.set_level(logging.WARNING, logger="edge.sources.camera")
    source.start()

    wait_until(lambda: source.stats()["reopens"] == 2)
    assert factory.opens == 5
    assert wait.delays == [0.5, 1.0, 2.0, 0.5]
    stats = source.stats()
    assert (stats["frames"], stats["gaps"], stats["reopens"], stats["reopen_failures"]) == (5, 2, 2, 2)
    assert first.released and never.released and fourth.released and not fifth.released

    gate.allow(1)
    wait_until(lambda: source.stats()["frames"] == 6)
    frame = source.read(timeout=1.0)
    assert (frame.seq, tag_of(frame)) == (5, (5, 0))
    assert source.stats()["connected"] is True
    assert source.stats()["last_gap_s"] == pytest.approx(0.5)
    messages = [r.getMessage() for r in caplog.records]
    assert any("frames back after a 3.5 s gap" in m for m in messages)
    assert any("usb device gone" in m for m in messages)


@pytest.mark.parametrize("fail", ["not-ok", "raise", "none", "empty"])
def test_each_kind_of_bad_read_starts_a_gap_and_disconnects(cleanup, fail):
    sources, _ = cleanup
    wait = RecordingWait(block_after=1)
    capture = ScriptedCapture(1, 2, fail=fail)
    source = CameraSource("fake", "cam", open_capture=Factory(capture, NeverOpened()), wait=wait)
    sources.append(source)
    source.start()

    assert wait.blocked.wait(5.0)
    stats = source.stats()
    assert (stats["frames"], stats["gaps"], stats["read_failures"]) == (2, 1, 1)
    assert stats["connected"] is False and stats["in_gap"] is True
    assert capture.released


def test_backoff_doubles_up_to_the_maximum(cleanup):
    sources, _ = cleanup
    wait = RecordingWait(block_after=8)
    factory = Factory(ScriptedCapture(1, 0), NeverOpened())
    source = CameraSource("fake", "cam", open_capture=factory, wait=wait, backoff_initial=0.5, backoff_max=10.0)
    sources.append(source)
    source.start()

    assert wait.blocked.wait(5.0)
    assert wait.delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert source.stats()["reopen_failures"] == 7


def test_stalled_camera_is_reopened_and_the_late_frame_dropped(cleanup, caplog):
    sources, gates = cleanup
    gate = Gate()
    gates.append(gate)
    clock = FakeClock()

    def stall_on_third_read(index: int) -> None:
        if index == 2:
            clock.now += 3.0  # the read blocked past stall_timeout, then produced a frame

    stalling = ScriptedCapture(1, None, before_read=stall_on_third_read)
    stalling.frames = 3  # the stalled third frame is still a good image; fails afterwards
    factory = Factory(stalling, ScriptedCapture(2, None, gate=gate))
    source = CameraSource("fake", "cam", open_capture=factory, clock=clock, wait=RecordingWait(clock),
                          stall_timeout=2.0)
    sources.append(source)
    caplog.set_level(logging.WARNING, logger="edge.sources.camera")
    source.start()

    wait_until(lambda: factory.opens == 2)
    assert source.stats()["frames"] == 2  # the frame that arrived after the stall was not published
    assert stalling.released
    assert any("stalled" in r.getMessage() for r in caplog.records)

    gate.allow(1)
    wait_until(lambda: source.stats()["frames"] == 3)
    frame = source.read(timeout=1.0)
    assert tag_of(frame) == (2, 0)
    assert source.stats()["last_gap_s"] == pytest.approx(3.5)


# -- closing -----------------------------------------------------------------------------------

def test_close_during_backoff_returns_and_stops_the_thread(caplog):
    factory = Factory(ScriptedCapture(1, 1), NeverOpened())
    source = CameraSource("fake", "cam", open_capture=factory, backoff_initial=60.0, backoff_max=60.0)
    caplog.set_level(logging.WARNING, logger="edge.sources.camera")
    source.start()
    wait_until(lambda: source.stats()["read_failures"] == 1)

    source.close()
    assert source.stats()["running"] is False
    assert factory.opens == 1  # woke from the 60 s backoff without trying to reopen
    assert not any("did not stop" in r.getMessage() for r in caplog.records)


def test_read_after_close_raises_end_of_stream_and_close_is_idempotent(cleanup):
    sources, gates = cleanup
    gate = Gate()
    gates.append(gate)
    capture = ScriptedCapture(1, None, gate=gate)
    source = CameraSource("fake", "cam", open_capture=lambda: capture)
    source.start()
    gate.allow(1)
    wait_until(lambda: source.stats()["frames"] == 1)

    gate.open_wide()
    source.close()
    source.close()
    with pytest.raises(EndOfStream):
        source.read(timeout=1.0)
    assert capture.released
    with pytest.raises(SourceError, match="closed"):
        source.start()


def test_close_wakes_a_blocked_reader():
    # The camera fails at once and the grabber sits in a long backoff: no frame can come.
    factory = Factory(ScriptedCapture(1, 0), NeverOpened())
    source = CameraSource("fake", "cam", open_capture=factory, backoff_initial=60.0)
    source.start()
    wait_until(lambda: source.stats()["read_failures"] == 1)
    outcome: list[object] = []
    entered = threading.Event()

    def reader() -> None:
        entered.set()
        try:
            outcome.append(source.read(timeout=30.0))
        except EndOfStream as exc:
            outcome.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    assert entered.wait(5.0)
    source.close()
    thread.join(5.0)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], EndOfStream)


def test_grabber_crash_ends_the_stream_instead_of_hanging(cleanup, caplog):
    sources, _ = cleanup
    calls = itertools.count()

    def broken_mono_ns() -> int:
        if next(calls) >= 1:
            raise RuntimeError("clock broke")
        return 0

    source = CameraSource("fake", "cam", open_capture=lambda: ScriptedCapture(1, None), mono_ns=broken_mono_ns)
    sources.append(source)
    source.start()
    wait_until(lambda: not source.stats()["running"])

    first = source.read(timeout=1.0)
    assert first is not None and first.seq == 0
    with pytest.raises(EndOfStream, match="grabber"):
        source.read(timeout=1.0)
    assert source.stats()["connected"] is False
    assert any("grabber thread failed" in r.getMessage() for r in caplog.records)
