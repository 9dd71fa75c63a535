"""Video sink for bench and fleet work: masked frames into one video file plus one JSON line per outcome.

FFV1 in Matroska (.mkv) is lossless: what OpenCV's FFmpeg backend writes it reads back bit for bit,
so a masked video is as good as a folder of PNGs in one file. mp4v in MP4 (.mp4) is the lossy option
(the PyPI OpenCV wheels have no H.264 encoder). The video is written under a temporary name beside
its final one and renamed into place only when it was closed complete, as edge.sinks.folder does for
each PNG: a half-written video never looks finished. A DroppedFrame has no pixels: it gets its line
(with its reason) and no video frame, so `video_frame` in a masked frame's line says which frame of
the file it is.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import threading
import time
from pathlib import Path

import cv2

from edge.frame import BUILTIN_CLASSES, ClassTable, DroppedFrame, MaskedFrame
from edge.sinks import require_outcome
from edge.sinks.folder import dropped_record, frame_stem, ident, masked_record, record_line

log = logging.getLogger(__name__)

CODECS = {".mkv": "FFV1", ".mp4": "mp4v"}  # by suffix of the output file
DEFAULT_FPS = 10.0  # image folders have no rate of their own (the replay source's default)


class VideoSinkError(OSError):
    """The video or its records cannot be created or written."""


def records_path(video: str | os.PathLike) -> Path:
    """Where a video's JSON lines go by default: beside it, `<stem>.jsonl`."""
    p = Path(video)
    return p.with_name(p.stem + ".jsonl")


def source_fps(source: str | os.PathLike) -> float:
    """The frame rate a replayed input's video is written at: the file's own, else DEFAULT_FPS."""
    p = Path(source)
    if p.is_dir() or not p.exists():
        return DEFAULT_FPS
    cap = cv2.VideoCapture(str(p))
    try:
        fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
    finally:
        cap.release()
    return fps if math.isfinite(fps) and 0 < fps <= 1000 else DEFAULT_FPS


class VideoSink:
    """Append each MaskedFrame to one video (FFV1 .mkv or mp4v .mp4) and every outcome to a JSON lines file.

    The frame size is fixed by the first frame; a frame of another size cannot go into the same
    stream and is refused (write_errors, the service counts it as not sent). close() renames the
    video into place when no frame was refused, else leaves no video at all: a video that lacks
    frames of its records is not complete. Thread-safe.
    """

    def __init__(self, path: str | os.PathLike, *, fps: float = DEFAULT_FPS, records: str | os.PathLike = "",
                 classes: ClassTable = BUILTIN_CLASSES, selftest_skipped: str = "") -> None:
        self.path = Path(path)
        fourcc = CODECS.get(self.path.suffix.lower())
        if fourcc is None:
            raise VideoSinkError(f"video {str(self.path)!r}: expected a {' or '.join(CODECS)} file")
        if not (math.isfinite(fps) and 0 < fps <= 1000):
            raise ValueError(f"fps {fps!r}, expected a number within (0, 1000]")
        self.fps, self.classes, self._fourcc = float(fps), classes, fourcc
        self.selftest_skipped = selftest_skipped  # in every record: the run went without its self-test
        self.records = Path(records) if records else records_path(self.path)
        self._lock = threading.Lock()
        self._stats = {"sent": 0, "sent_dropped_records": 0, "write_errors": 0, "dropped_closed": 0, "frames": 0}
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # created exclusively beside the final name, so the rename stays on one file system and a
            # symlink planted at either name is replaced, never followed
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.",
                                       suffix=f".partial{self.path.suffix}")
            os.close(fd)
            self._tmp = Path(tmp)
            fd = os.open(self.records, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            self._jsonl = os.fdopen(fd, "a", encoding="utf-8")
        except OSError as exc:
            with contextlib.suppress(OSError, AttributeError):
                os.unlink(self._tmp)
            raise VideoSinkError(f"cannot write the video {str(self.path)!r}: {exc}") from exc

    def send(self, item: MaskedFrame | DroppedFrame) -> bool:
        """Write the outcome; False (counted as write_errors) if it could not be written."""
        item = require_outcome(item)
        with self._lock:
            if self._closed:
                self._stats["dropped_closed"] += 1
                return False
            try:
                self._write(item)
            except OSError as exc:
                self._stats["write_errors"] += 1
                log.error("video sink %s: cannot write %s: %s", self.path, ident(item), exc)
                return False
            return True

    def _open(self, width: int, height: int) -> cv2.VideoWriter:
        writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*self._fourcc), self.fps, (width, height))
        if not writer.isOpened():
            raise OSError(f"OpenCV cannot write {self._fourcc} into {self.path.suffix} here")
        self._size = (width, height)
        return writer

    def _write(self, item: MaskedFrame | DroppedFrame) -> None:
        if isinstance(item, DroppedFrame):
            self._append(frame_stem(item.camera_id, item.seq, item.name), dropped_record(item))
            self._stats["sent_dropped_records"] += 1
            return
        frame = item.frame
        h, w = frame.image.shape[:2]
        if self._writer is None:
            self._writer = self._open(w, h)
        elif (w, h) != self._size:
            raise OSError(f"frame {w}x{h} in a {self._size[0]}x{self._size[1]} video")
        t0 = time.perf_counter_ns()
        self._writer.write(frame.image)
        write_ms = (time.perf_counter_ns() - t0) / 1e6
        self._append(frame_stem(frame.camera_id, frame.seq, frame.name),
                     masked_record(item, self.classes, write_ms, video_frame=self._stats["frames"]))
        self._stats["frames"] += 1
        self._stats["sent"] += 1

    def _append(self, name: str, record: dict) -> None:
        self._jsonl.write(record_line(name, record, self.selftest_skipped))
        self._jsonl.flush()

    def stats(self) -> dict:
        with self._lock:
            return dict(self._stats)

    def close(self, complete: bool = True) -> None:
        """Finish the video and rename it into place; a video that missed a frame is removed instead, and
        one of a run cut short (complete=False) is kept as NAME.partial.SUFFIX, never under the final name."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._jsonl.close()
            if self._writer is not None:
                self._writer.release()
            whole = self._writer is not None and not self._stats["write_errors"]
            try:
                if whole and complete:
                    os.replace(self._tmp, self.path)
                    return
                if whole:
                    partial = self.path.with_name(f"{self.path.stem}.partial{self.path.suffix}")
                    kept = self._tmp
                    if not partial.exists():
                        os.replace(self._tmp, partial)
                        kept = partial
                    log.warning("video sink %s: the run was cut short; the frames written so far are in %s",
                                self.path, kept)
                    return
            except OSError as exc:
                log.error("video sink %s: cannot rename the finished video into place: %s", self.path, exc)
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)
            if self._stats["write_errors"]:
                log.error("video sink %s: %d frame(s) could not be written; no video left behind", self.path,
                          self._stats["write_errors"])

    def __enter__(self) -> "VideoSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
