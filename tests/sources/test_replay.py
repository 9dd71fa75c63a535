"""Replay sources on real decoded videos and real image files; pacing with a fake clock."""
from __future__ import annotations

import itertools
import logging
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.sources import EndOfStream, SourceError
from edge.sources import replay
from edge.sources.replay import ImageFolderSource, VideoFileSource, open_replay

from conftest import VIDEO

CAR_VIDEO = VIDEO / "udacity_CarND-Vehicle-Detection_test_video.mp4"  # 1280x720, 25 fps, 38 frames
SYNTH_FRAMES = 20
SYNTH_FPS = 10.0


class FakeClock:
    """Monotonic seconds that only move when the code under test sleeps (or a test says so)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def mono_ns(self) -> int:
        return round(self.now * 1e9)


def drain(source, limit: int = 10_000) -> list:
    frames = []
    for _ in range(limit):
        try:
            frame = source.read(timeout=1.0)
        except EndOfStream:
            return frames
        assert frame is not None
        frames.append(frame)
    raise AssertionError("source did not end")


def synth_frame(i: int) -> np.ndarray:
    # Mean brightness encodes the frame number so decoded frames can be told apart.
    image = np.full((48, 64, 3), i * 10, np.uint8)
    image[::4, ::4] = 255
    return image


@pytest.fixture
def synth_video(tmp_path: Path) -> Path:
    path = tmp_path / "synth.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), SYNTH_FPS, (64, 48))
    assert writer.isOpened()
    for i in range(SYNTH_FRAMES):
        writer.write(synth_frame(i))
    writer.release()
    return path


def frame_number_from_pixels(image: np.ndarray) -> int:
    expected = [synth_frame(i).mean() for i in range(SYNTH_FRAMES)]
    return int(np.argmin([abs(image.mean() - m) for m in expected]))


# -- video files -------------------------------------------------------------------------------

def test_video_delivers_every_frame_in_order_with_frame_number_names():
    reference = cv2.VideoCapture(str(CAR_VIDEO))
    wall = itertools.count(5_000)
    mono = itertools.count(7_000)
    source = VideoFileSource(CAR_VIDEO, "cam0", wall_ns=lambda: next(wall), mono_ns=lambda: next(mono))
    frames = drain(source)

    assert len(frames) == 38
    assert [f.seq for f in frames] == list(range(38))
    assert [f.name for f in frames] == [f"{i:06d}" for i in range(38)]
    assert {f.camera_id for f in frames} == {"cam0"}
    assert [f.t_capture_wall_ns for f in frames] == list(range(5_000, 5_038))
    assert [f.t_capture_mono_ns for f in frames] == list(range(7_000, 7_038))
    for frame in frames:
        ok, expected = reference.read()
        assert ok
        assert frame.image.shape == (720, 1280, 3) and frame.image.dtype == np.uint8
        assert np.array_equal(frame.image, expected)
    stats = source.stats()
    assert stats["frames"] == 38
    assert stats["expected_frames"] == 38
    assert stats["truncated"] is False
    assert stats["fps"] == pytest.approx(25.0)
    assert stats["finished"] is True


def test_video_end_and_close_raise_end_of_stream_and_close_is_idempotent(synth_video):
    source = VideoFileSource(synth_video)
    assert len(drain(source)) == SYNTH_FRAMES
    with pytest.raises(EndOfStream):
        source.read(timeout=0.1)
    source.close()
    source.close()
    with pytest.raises(EndOfStream):
        source.read(timeout=0.1)


def test_read_after_close_raises_end_of_stream_before_the_end(synth_video):
    source = VideoFileSource(synth_video)
    assert source.read(timeout=1.0).name == "000000"
    source.close()
    with pytest.raises(EndOfStream):
        source.read(timeout=1.0)
    assert source.stats()["closed"] is True


def _write_text(tmp_path: Path) -> Path:
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 50)
    return path


def _write_header_only(tmp_path: Path) -> Path:
    # A valid AVI header whose first frame is cut off: opens, but nothing decodes.
    good = tmp_path / "good.avi"
    writer = cv2.VideoWriter(str(good), cv2.VideoWriter_fourcc(*"MJPG"), SYNTH_FPS, (64, 48))
    for i in range(3):
        writer.write(synth_frame(i))
    writer.release()
    data = good.read_bytes()
    path = tmp_path / "header_only.avi"
    path.write_bytes(data[: data.find(b"movi") + 32])
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp: tmp / "missing.mp4", "no such file"),
        (lambda tmp: tmp, "not a file"),
        (_write_text, "cannot be opened"),
        (_write_header_only, "first frame does not decode"),
    ],
    ids=["missing", "directory", "not-a-video", "header-only"],
)
def test_video_that_cannot_be_opened_raises_source_error_naming_the_path(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(SourceError, match=message) as info:
        VideoFileSource(path)
    assert str(path) in str(info.value)


def _chop_tail(data: bytes) -> bytes:
    start, end = data.find(b"movi"), data.find(b"idx1")
    return data[: (start + end) // 2]


def _zero_middle(data: bytes) -> bytes:
    start, end = data.find(b"movi"), data.find(b"idx1")
    mid = (start + end) // 2
    return data[:mid] + b"\x00" * 200 + data[mid + 200:]


@pytest.mark.parametrize("damage", [_chop_tail, _zero_middle], ids=["cut-short", "corrupt-middle"])
def test_truncated_video_delivers_decodable_frames_then_ends_and_warns_once(synth_video, damage, caplog):
    damaged = synth_video.with_name("damaged.avi")
    damaged.write_bytes(damage(synth_video.read_bytes()))
    caplog.set_level(logging.WARNING, logger="edge.sources.replay")

    source = VideoFileSource(damaged, loop=True)
    frames = []
    # Two passes of the damaged file, then stop reading.
    while len(frames) < 2 * SYNTH_FRAMES:
        frames.append(source.read(timeout=1.0))
    source.close()

    first_pass = [f for f in frames if not f.name.startswith("p")]
    assert 0 < len(first_pass) < SYNTH_FRAMES
    # Every delivered frame is the frame its name says, in order: none skipped, none invented.
    assert [frame_number_from_pixels(f.image) for f in first_pass] == list(range(len(first_pass)))
    stats = source.stats()
    assert stats["truncated"] is True
    assert stats["expected_frames"] == SYNTH_FRAMES
    assert stats["passes"] >= 2
    warnings = [r for r in caplog.records if "truncated" in r.getMessage()]
    assert len(warnings) == 1
    assert str(damaged) in warnings[0].getMessage()


def test_loop_continues_seq_and_keeps_names_unique(synth_video):
    source = VideoFileSource(synth_video, loop=True)
    frames = [source.read(timeout=1.0) for _ in range(2 * SYNTH_FRAMES + 5)]
    source.close()

    assert [f.seq for f in frames] == list(range(2 * SYNTH_FRAMES + 5))
    names = [f.name for f in frames]
    assert len(set(names)) == len(names)
    assert names[SYNTH_FRAMES - 1] == f"{SYNTH_FRAMES - 1:06d}"
    assert names[SYNTH_FRAMES] == "p0001_000000"
    assert names[2 * SYNTH_FRAMES] == "p0002_000000"
    # The second pass decodes the same pictures again.
    assert frame_number_from_pixels(frames[SYNTH_FRAMES + 3].image) == 3
    assert source.stats()["passes"] == 3


class _CaptureReportingFps:
    """A real decoder on a real file whose container reports a useless frame rate."""

    def __init__(self, real, reported: float) -> None:
        self._real = real
        self._reported = reported

    def get(self, prop: int) -> float:
        return self._reported if prop == cv2.CAP_PROP_FPS else self._real.get(prop)

    def __getattr__(self, name: str):
        return getattr(self._real, name)


@pytest.mark.parametrize("reported", [0.0, math.nan])
def test_realtime_video_without_frame_rate_needs_explicit_fps(synth_video, monkeypatch, reported):
    real_capture = cv2.VideoCapture
    monkeypatch.setattr(
        replay.cv2, "VideoCapture", lambda *a: _CaptureReportingFps(real_capture(*a), reported),
    )

    with pytest.raises(SourceError, match="fps") as info:
        VideoFileSource(synth_video, realtime=True)
    assert str(synth_video) in str(info.value)

    # Not paced: no frame rate needed. Paced with an explicit one: fine.
    assert VideoFileSource(synth_video).read(timeout=1.0) is not None
    clock = FakeClock()
    paced = VideoFileSource(synth_video, realtime=True, fps=5.0, clock=clock, sleep=clock.sleep)
    paced.read(timeout=1.0)
    paced.read(timeout=1.0)
    assert clock.sleeps == [pytest.approx(0.2)]


# -- realtime pacing ---------------------------------------------------------------------------

def _paced(clock: FakeClock, path: Path = CAR_VIDEO, **kw) -> VideoFileSource:
    return VideoFileSource(path, realtime=True, clock=clock, sleep=clock.sleep, mono_ns=clock.mono_ns, **kw)


def test_realtime_sleeps_until_each_frame_is_due_at_the_file_frame_rate():
    clock = FakeClock()
    t0 = clock.now
    source = _paced(clock)
    frames = [source.read(timeout=1.0) for _ in range(6)]

    assert clock.sleeps == [pytest.approx(0.04)] * 5
    for i, frame in enumerate(frames):
        due_ns = round((t0 + i / 25.0) * 1e9)
        assert frame.t_capture_mono_ns >= due_ns - 1000


def test_realtime_fps_override_changes_the_pacing():
    clock = FakeClock()
    source = _paced(clock, fps=50.0)
    for _ in range(4):
        source.read(timeout=1.0)
    assert clock.sleeps == [pytest.approx(0.02)] * 3


def test_realtime_returns_none_after_timeout_when_next_frame_is_not_due_yet():
    clock = FakeClock()
    source = _paced(clock)
    first = source.read(timeout=1.0)

    assert source.read(timeout=0.01) is None
    assert clock.sleeps == [pytest.approx(0.01)]
    assert source.read(timeout=0.0) is None  # not due, nothing to sleep
    assert clock.sleeps == [pytest.approx(0.01)]

    second = source.read(timeout=1.0)
    assert clock.sleeps == [pytest.approx(0.01), pytest.approx(0.03)]
    assert (second.seq, second.name) == (first.seq + 1, "000001")  # the frame waited, not skipped


def test_realtime_consumer_behind_gets_due_frames_at_once_and_never_early():
    clock = FakeClock()
    t0 = clock.now
    source = _paced(clock)
    source.read(timeout=1.0)
    clock.now += 0.1  # slow consumer: frames 1 and 2 are overdue, frame 3 is due at +0.12

    behind = [source.read(timeout=1.0) for _ in range(2)]
    assert clock.sleeps == []
    assert [f.name for f in behind] == ["000001", "000002"]

    caught_up = source.read(timeout=1.0)
    assert clock.sleeps == [pytest.approx(0.02)]
    assert caught_up.t_capture_mono_ns >= round((t0 + 3 / 25.0) * 1e9) - 1000
    assert source.stats()["late"] == 2


def test_realtime_loop_keeps_one_timeline_across_passes(synth_video):
    clock = FakeClock()
    t0 = clock.now
    source = _paced(clock, synth_video, loop=True)
    frames = [source.read(timeout=1.0) for _ in range(SYNTH_FRAMES + 2)]

    assert frames[SYNTH_FRAMES].name == "p0001_000000"
    assert frames[SYNTH_FRAMES].t_capture_mono_ns == pytest.approx((t0 + SYNTH_FRAMES / SYNTH_FPS) * 1e9, abs=1e3)
    assert sum(clock.sleeps) == pytest.approx((SYNTH_FRAMES + 1) / SYNTH_FPS)


def test_close_while_waiting_for_a_due_frame_ends_the_stream():
    clock = FakeClock()
    sources: list[VideoFileSource] = []

    def sleep_then_closed_elsewhere(seconds: float) -> None:
        clock.sleep(seconds)
        sources[0].close()  # as another thread would during a real sleep

    source = VideoFileSource(
        CAR_VIDEO, realtime=True, clock=clock, sleep=sleep_then_closed_elsewhere, mono_ns=clock.mono_ns,
    )
    sources.append(source)
    source.read(timeout=1.0)
    with pytest.raises(EndOfStream):
        source.read(timeout=1.0)
    assert clock.sleeps == [pytest.approx(0.04)]


def test_without_realtime_nothing_sleeps():
    clock = FakeClock()
    source = VideoFileSource(CAR_VIDEO, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        source.read(timeout=0.0)
    assert clock.sleeps == []


# -- image folders -----------------------------------------------------------------------------

@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "a_000.png"), synth_frame(0))
    cv2.imwrite(str(folder / "a_001.jpg"), synth_frame(1))
    (folder / "a_002.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    cv2.imwrite(str(folder / "a_003.JPG"), synth_frame(3))
    cv2.imwrite(str(folder / "a_004.bmp"), synth_frame(4))
    (folder / "notes.txt").write_text("ignored")
    (folder / "sub.png").mkdir()  # a directory with an image suffix is not an image
    return folder


def test_folder_delivers_sorted_images_named_by_stem_and_skips_unreadable(image_folder, caplog):
    caplog.set_level(logging.WARNING, logger="edge.sources.replay")
    source = ImageFolderSource(image_folder, "bench")
    frames = drain(source)

    assert [f.name for f in frames] == ["a_000", "a_001", "a_003", "a_004"]
    assert [frame_number_from_pixels(f.image) for f in frames] == [0, 1, 3, 4]
    assert [f.seq for f in frames] == [0, 1, 3, 4]  # the unreadable image is a gap, like a lost frame
    assert all(f.image.shape == (48, 64, 3) for f in frames)
    stats = source.stats()
    assert (stats["frames"], stats["files"], stats["unreadable"]) == (4, 5, 1)
    assert any("a_002.jpg" in r.getMessage() for r in caplog.records)


def test_folder_loop_continues_seq_and_keeps_names_unique(image_folder):
    source = ImageFolderSource(image_folder, loop=True)
    frames = [source.read(timeout=1.0) for _ in range(9)]

    names = [f.name for f in frames]
    assert names[4:8] == ["p0001_a_000", "p0001_a_001", "p0001_a_003", "p0001_a_004"]
    assert len(set(names)) == len(names)
    seqs = [f.seq for f in frames]
    assert seqs == sorted(set(seqs)) and seqs[4] > seqs[3]
    assert source.stats()["unreadable"] == 2  # counted on each pass that hits it


def test_folder_files_sharing_a_stem_get_unique_names(tmp_path):
    cv2.imwrite(str(tmp_path / "x.png"), synth_frame(1))
    cv2.imwrite(str(tmp_path / "x.jpg"), synth_frame(2))
    cv2.imwrite(str(tmp_path / "y.png"), synth_frame(3))
    names = [f.name for f in drain(ImageFolderSource(tmp_path))]
    assert names == ["x.jpg", "x.png", "y"]


def _only_corrupt(tmp: Path) -> Path:
    (tmp / "bad.png").write_bytes(b"nope")
    return tmp


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp: tmp / "missing", "no such directory"),
        (lambda tmp: tmp, "no images"),
        (_only_corrupt, "can be decoded"),
    ],
    ids=["missing", "empty", "only-corrupt"],
)
def test_folder_that_cannot_be_replayed_raises_source_error_naming_the_path(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(SourceError, match=message) as info:
        ImageFolderSource(path)
    assert str(path) in str(info.value)


def test_folder_realtime_without_fps_raises_and_default_fps_paces(image_folder):
    with pytest.raises(SourceError, match="fps"):
        ImageFolderSource(image_folder, realtime=True, fps=None)
    assert ImageFolderSource(image_folder, fps=None).read(timeout=1.0) is not None

    clock = FakeClock()
    source = ImageFolderSource(image_folder, realtime=True, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        source.read(timeout=1.0)
    assert clock.sleeps == [pytest.approx(0.1)] * 2


# -- open_replay -------------------------------------------------------------------------------

def test_open_replay_picks_folder_or_video(image_folder, synth_video, tmp_path):
    assert isinstance(open_replay(image_folder), ImageFolderSource)
    video = open_replay(synth_video, camera_id="v", loop=True)
    assert isinstance(video, VideoFileSource)
    assert video.camera_id == "v" and video.stats()["loop"] is True
    with pytest.raises(SourceError, match="missing"):
        open_replay(tmp_path / "missing")


@pytest.mark.parametrize("kind, loop, expected", [
    ("video", False, SYNTH_FRAMES), ("video", True, None), ("folder", False, 5), ("folder", True, None),
])
def test_total_is_the_frames_a_replay_hands_out_and_unknown_when_looping(synth_video, image_folder, kind, loop,
                                                                          expected):
    source = (VideoFileSource(synth_video, loop=loop) if kind == "video" else ImageFolderSource(image_folder, loop=loop))
    assert source.total() == expected and source.stats()["total"] == expected
    if expected is not None and kind == "video":
        assert len(drain(source)) == expected
