"""Recorded feeds for bench testing: a video file or a folder of images behind FrameSource.

Unlike a live camera, a recording never drops frames: every decodable frame is handed out,
in order, however slow the consumer is. With ``realtime=True`` frames are paced to the
recording's frame rate so the pipeline sees camera-like timing; without it they come as fast
as ``read()`` is called.

Names and loops: frame names are unique over the whole run. The first pass uses the plain
name ("000012" for video frame 12, the file stem for images); later passes prefix the pass
number ("p0001_000012", "p0001_img_0042"). ``seq`` keeps increasing across passes.

Timestamps: ``t_capture_mono_ns`` / ``t_capture_wall_ns`` are taken when the frame is handed
out, because that is when it "arrives" from the pipeline's point of view and latency
deadlines are measured from it.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from edge.frame import Frame
from edge.sources import EndOfStream, SourceError
from edge.sources.images import IMAGE_SUFFIXES, check_frame_size, header_size, read_image

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], None]
NsClock = Callable[[], int]


def _pass_name(pass_no: int, name: str) -> str:
    return name if pass_no == 0 else f"p{pass_no:04d}_{name}"


class _ReplaySource:
    """Looping, pacing and frame stamping shared by the video and the image-folder sources.

    Subclasses provide ``_next_item()`` (the next decoded image of the current pass and its
    base name, or None when the pass is over), ``_rewind()`` and ``_release()``.
    """

    def __init__(
        self,
        camera_id: str,
        *,
        realtime: bool,
        loop: bool,
        fps: float | None,
        clock: Clock,
        sleep: Sleep,
        wall_ns: NsClock,
        mono_ns: NsClock,
    ) -> None:
        self.camera_id = camera_id
        self._realtime = realtime
        self._loop = loop
        self._fps = fps
        self._clock = clock
        self._sleep = sleep
        self._wall_ns = wall_ns
        self._mono_ns = mono_ns
        # Held while the decoder is used, so close() from another thread never releases a
        # capture in the middle of a read; never held while sleeping.
        self._lock = threading.Lock()
        self._closed = False
        self._finished = False
        self._pending: tuple[np.ndarray, str] | None = None
        self._pass_no = 0
        self._pass_index = 0  # frames handed out in the current pass: the pacing index
        self._pass_start: float | None = None  # t0 of the current pass on `clock`
        self._seq = 0
        self._frames = 0
        self._late = 0

    def _check_fps(self, what: str) -> None:
        if self._realtime and (self._fps is None or not math.isfinite(self._fps) or self._fps <= 0):
            raise SourceError(f"{what}: a realtime replay needs a frame rate (--fps, or fps in its [[cameras]] table)")

    # -- subclass hooks -------------------------------------------------------------------
    def _next_item(self) -> tuple[np.ndarray, str] | None:
        raise NotImplementedError

    def _rewind(self) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    def _skipped(self) -> int:
        """Items of the source that were lost (seq gaps); 0 unless a subclass skips some."""
        return 0

    def _pass_length(self) -> int | None:
        """Items one pass will hand out as far as known before decoding them; None when unknown."""
        return None

    def total(self) -> int | None:
        """Frames the whole replay will hand out (a progress bar's total); None when looping or unknown."""
        return None if self._loop else self._pass_length()

    # -- FrameSource ----------------------------------------------------------------------
    def read(self, timeout: float) -> Frame | None:
        with self._lock:
            self._check_open()
            if self._pending is None:
                self._pending = self._fetch()
        if self._realtime and not self._wait_until_due(timeout):
            return None
        with self._lock:
            self._check_open()  # closed while we slept
            return self._hand_out()

    def _check_open(self) -> None:
        if self._closed or self._finished:
            raise EndOfStream(f"{self.camera_id}: replay {'closed' if self._closed else 'finished'}")

    def _fetch(self) -> tuple[np.ndarray, str]:
        item = self._next_item()
        if item is None and self._loop and self._pass_index > 0:
            self._start_next_pass()
            item = self._next_item()
        if item is None:
            self._finish()
            raise EndOfStream(f"{self.camera_id}: end of replay after {self._frames} frames")
        return item

    def _start_next_pass(self) -> None:
        # The next pass continues the previous one's timeline so a loop is seamless in time.
        if self._pass_start is not None and self._fps:
            self._pass_start += self._pass_index / self._fps
        self._pass_no += 1
        self._pass_index = 0
        self._rewind()

    def _wait_until_due(self, timeout: float) -> bool:
        """Sleep until the pending frame is due; False (after sleeping `timeout`) if not due in time."""
        now = self._clock()
        if self._pass_start is None:
            self._pass_start = now
        assert self._fps
        due = self._pass_start + self._pass_index / self._fps
        wait = due - now
        if wait <= 0:
            # Behind schedule: hand out at once; frames of a recording are never skipped.
            if wait < 0:
                self._late += 1
            return True
        if wait > timeout:
            if timeout > 0:
                self._sleep(timeout)
            return False
        self._sleep(wait)
        return True

    def _hand_out(self) -> Frame:
        assert self._pending is not None
        image, name = self._pending
        self._pending = None
        frame = Frame(
            image=image,
            camera_id=self.camera_id,
            seq=self._seq + self._skipped(),
            t_capture_mono_ns=self._mono_ns(),
            t_capture_wall_ns=self._wall_ns(),
            name=_pass_name(self._pass_no, name),
        )
        self._seq += 1
        self._frames += 1
        self._pass_index += 1
        return frame

    def _finish(self) -> None:
        self._finished = True
        self._release()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._pending = None
            self._release()

    def stats(self) -> dict:
        return {
            "camera_id": self.camera_id,
            "frames": self._frames,
            "passes": self._pass_no + 1,
            "late": self._late,  # realtime frames handed out after they were due
            "fps": self._fps,
            "realtime": self._realtime,
            "loop": self._loop,
            "total": self.total(),
            "finished": self._finished,
            "closed": self._closed,
        }

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoFileSource(_ReplaySource):
    """Frames of a video file decoded with OpenCV; name is the 6-digit frame number.

    A file the decoder gives up on before its declared frame count (cut short, corrupt
    tail) is replayed up to the last decodable frame, then ends; ``stats()["truncated"]``
    says so and a warning is logged once.
    """

    def __init__(
        self,
        path: str | Path,
        camera_id: str = "replay",
        *,
        realtime: bool = False,
        loop: bool = False,
        fps: float | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        wall_ns: NsClock = time.time_ns,
        mono_ns: NsClock = time.monotonic_ns,
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise SourceError(f"video {self.path}: no such file")
        if not self.path.is_file():
            raise SourceError(f"video {self.path}: not a file")
        self._cap: cv2.VideoCapture | None = None
        self._truncated = False
        self._read_errors = 0
        if self.path.suffix.lower() in IMAGE_SUFFIXES:  # OpenCV opens one image as a video by decoding it
            size = header_size(self.path)
            if size is not None:
                check_frame_size(*size, f"video {self.path}")
        self._open_capture()
        assert self._cap is not None
        try:
            check_frame_size(int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                             int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), f"video {self.path}")
        except SourceError:
            self._release()
            raise
        file_fps = self._cap.get(cv2.CAP_PROP_FPS)
        count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.expected_frames: int | None = int(count) if math.isfinite(count) and count > 0 else None
        self.file_fps: float | None = file_fps if math.isfinite(file_fps) and file_fps > 0 else None
        super().__init__(
            camera_id, realtime=realtime, loop=loop, fps=fps if fps is not None else self.file_fps,
            clock=clock, sleep=sleep, wall_ns=wall_ns, mono_ns=mono_ns,
        )
        try:
            self._check_fps(f"video {self.path} (file reports fps {file_fps:g})")
            first = self._decode()
            if first is None:
                raise SourceError(f"video {self.path}: opened but its first frame does not decode")
        except SourceError:
            self._release()
            raise
        self._pending = first

    def _open_capture(self) -> None:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"video {self.path}: cannot be opened as a video (unknown format or corrupt)")
        self._cap = cap
        self._decoded = 0  # frames decoded in the current pass: the next frame's number

    def _decode(self) -> tuple[np.ndarray, str] | None:
        assert self._cap is not None
        try:
            ok, image = self._cap.read()
        except cv2.error as exc:
            log.warning("video %s: read error after frame %d: %s", self.path, self._decoded, exc)
            self._read_errors += 1
            ok, image = False, None
        if not ok or image is None or image.size == 0:
            return None
        name = f"{self._decoded:06d}"
        self._decoded += 1
        return image, name

    def _next_item(self) -> tuple[np.ndarray, str] | None:
        if self._cap is None:
            return None
        item = self._decode()
        if item is None:
            self._note_end_of_pass()
        return item

    def _note_end_of_pass(self) -> None:
        short = self.expected_frames is not None and self._decoded < self.expected_frames
        if (short or self._read_errors) and not self._truncated:
            self._truncated = True
            log.warning(
                "video %s: truncated, decoded %d of %s frames; replaying what could be decoded",
                self.path, self._decoded, self.expected_frames if self.expected_frames is not None else "?",
            )

    def _pass_length(self) -> int | None:
        return self.expected_frames  # the container's count: a truncated file ends earlier (and says so)

    def _rewind(self) -> None:
        self._release()
        self._open_capture()

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def stats(self) -> dict:
        return {
            **super().stats(),
            "source": str(self.path),
            "expected_frames": self.expected_frames,
            "truncated": self._truncated,
            "read_errors": self._read_errors,
        }


class ImageFolderSource(_ReplaySource):
    """Sorted image files of one folder (not recursive); name is the file stem.

    An image that cannot be decoded, or whose header says it is larger than a frame may be
    (edge.sources.images: refused before decoding), is skipped, logged and counted in
    ``stats()["unreadable"]``; it leaves a gap in ``seq`` like a frame a camera lost. If two
    files share a stem (``a.jpg`` and ``a.png``) both are named by their full file name so
    names stay unique.
    """

    def __init__(
        self,
        path: str | Path,
        camera_id: str = "replay",
        *,
        realtime: bool = False,
        loop: bool = False,
        fps: float | None = 10.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        wall_ns: NsClock = time.time_ns,
        mono_ns: NsClock = time.monotonic_ns,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise SourceError(f"image folder {self.path}: no such directory")
        self.files = sorted(
            p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if not self.files:
            raise SourceError(
                f"image folder {self.path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        self._names = self._unique_names(self.files)
        super().__init__(
            camera_id, realtime=realtime, loop=loop, fps=fps,
            clock=clock, sleep=sleep, wall_ns=wall_ns, mono_ns=mono_ns,
        )
        self._check_fps(f"image folder {self.path}")
        self._next_file = 0
        self._unreadable = 0
        self._skipped_total = 0
        self._unreadable_files: set[Path] = set()
        first = self._next_item()
        if first is None:
            raise SourceError(f"image folder {self.path}: none of its {len(self.files)} images can be decoded "
                              f"(the first: {self._first_skip})")
        self._pending = first

    @staticmethod
    def _unique_names(files: list[Path]) -> list[str]:
        stems = [p.stem for p in files]
        clashes = {s for s in stems if stems.count(s) > 1}
        return [p.name if p.stem in clashes else p.stem for p in files]

    def _next_item(self) -> tuple[np.ndarray, str] | None:
        while self._next_file < len(self.files):
            index = self._next_file
            self._next_file += 1
            try:
                return read_image(self.files[index]), self._names[index]
            except SourceError as e:
                self._skip(self.files[index], str(e))
        return None

    def _skip(self, file: Path, why: str) -> None:
        if not self._unreadable:
            self._first_skip = why
        self._unreadable += 1
        self._skipped_total += 1
        # One warning per file, not per loop pass.
        if file not in self._unreadable_files:
            self._unreadable_files.add(file)
            log.warning("image folder %s: skipping unreadable image %s", self.path, why)

    def _skipped(self) -> int:
        # The pending image was fetched after any files skipped before it, so the count
        # already includes exactly the gaps that precede it.
        return self._skipped_total

    def _pass_length(self) -> int | None:
        return len(self.files)  # an unreadable file is skipped, so a pass may hand out fewer

    def _rewind(self) -> None:
        self._next_file = 0

    def _release(self) -> None:
        self._next_file = len(self.files)

    def stats(self) -> dict:
        return {
            **super().stats(),
            "source": str(self.path),
            "files": len(self.files),
            "unreadable": self._unreadable,
        }


def open_replay(path: str | Path, **kw) -> VideoFileSource | ImageFolderSource:
    """A replay source for `path`: a folder of images or a video file."""
    p = Path(path)
    try:
        os.stat(p)  # is_dir() and exists() say False for a symlink loop: name the real reason
    except OSError as e:
        raise SourceError(f"replay {p}: {e.strerror.lower() if e.strerror else e}") from None
    if p.is_dir():
        return ImageFolderSource(p, **kw)
    return VideoFileSource(p, **kw)
