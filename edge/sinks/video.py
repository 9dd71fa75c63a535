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
from edge.sinks.folder import (WROTE, FrameNames, dropped_record, ident, masked_record, open_records, record_line,
                               remove_unused)

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

    The frame size is fixed by the first frame. A frame of another size cannot go into the same
    stream: the video so far is closed as it is and the frames go on in the next part,
    ``<stem>.part2<suffix>``, ``.part3``... (logged; the records name the part of every frame after
    the first part, ``video_file``). close() renames every part into place, or to
    ``<name>.partial<suffix>`` when the run was cut short: what was written is kept. A frame the
    writer could not take is counted (write_errors; the service counts it as not sent). Thread-safe.
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
        self._stats = {"sent": 0, "sent_dropped_records": 0, "write_errors": 0, "dropped_closed": 0, "frames": 0,
                       "parts": 0}
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self._part_frames = 0  # frames in the part being written: the next frame's video_frame
        self._parts: list[Path] = []  # temporary files of the parts so far, the last one being written
        self._closed = False
        self._names = FrameNames(f"video sink {self.path}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._parts.append(self._temporary())
            self._jsonl, self._made_records = open_records(self.records)
        except OSError as exc:
            for tmp in self._parts:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise VideoSinkError(f"cannot write the video {str(self.path)!r}: {exc}") from exc

    def _temporary(self) -> Path:
        # created exclusively beside the final name, so the rename stays on one file system and a
        # symlink planted at either name is replaced, never followed
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.",
                                   suffix=f".partial{self.path.suffix}")
        os.close(fd)
        return Path(tmp)

    def part_path(self, index: int) -> Path:
        """The final name of part `index` (0: the video's own name)."""
        return self.path if index == 0 else self.path.with_name(f"{self.path.stem}.part{index + 1}{self.path.suffix}")

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
        writer = cv2.VideoWriter(str(self._parts[-1]), cv2.VideoWriter_fourcc(*self._fourcc), self.fps, (width, height))
        if not writer.isOpened():
            raise OSError(f"OpenCV cannot write {self._fourcc} into {self.path.suffix} here")
        self._size = (width, height)
        self._part_frames = 0
        self._stats["parts"] += 1
        return writer

    def _next_part(self, width: int, height: int) -> None:
        assert self._writer is not None and self._size is not None
        self._writer.release()
        self._writer = None
        log.warning("video sink %s: frame size %dx%d after %dx%d; the video goes on in %s", self.path, width, height,
                    *self._size, self.part_path(len(self._parts)))
        self._parts.append(self._temporary())

    def _write(self, item: MaskedFrame | DroppedFrame) -> None:
        if isinstance(item, DroppedFrame):
            self._append(self._names.stem(item.camera_id, item.seq, item.name), dropped_record(item))
            self._stats["sent_dropped_records"] += 1
            return
        frame = item.frame
        h, w = frame.image.shape[:2]
        if self._writer is not None and (w, h) != self._size:
            self._next_part(w, h)
        if self._writer is None:
            self._writer = self._open(w, h)
        t0 = time.perf_counter_ns()
        self._writer.write(frame.image)
        write_ms = (time.perf_counter_ns() - t0) / 1e6
        part = len(self._parts) - 1
        where = {"video_frame": self._part_frames} | ({"video_file": self.part_path(part).name} if part else {})
        self._append(self._names.stem(frame.camera_id, frame.seq, frame.name),
                     masked_record(item, self.classes, write_ms, **where))
        self._part_frames += 1
        self._stats["frames"] += 1
        self._stats["sent"] += 1

    def _append(self, name: str, record: dict) -> None:
        self._jsonl.write(record_line(name, record, self.selftest_skipped))
        self._jsonl.flush()

    def stats(self) -> dict:
        with self._lock:
            return {**self._stats, "renamed": self._names.renamed}

    def close(self, complete: bool = True) -> None:
        """Finish the video and rename every part into place; the parts of a run cut short (complete=False)
        are kept as NAME.partial.SUFFIX, never under the final name. A part with no frame is removed."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._jsonl.close()
            if self._made_records and not any(self._stats[k] for k in WROTE):
                remove_unused(self.records, None)
            if self._writer is not None:
                self._writer.release()
            written = self._stats["parts"]  # the last temporary file has no frame when opening its writer failed
            for index, tmp in enumerate(self._parts):
                if index < written:
                    self._keep(tmp, self.part_path(index), complete)
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
            if self._stats["write_errors"]:
                log.error("video sink %s: %d frame(s) could not be written (their records say dropped or are "
                          "missing)", self.path, self._stats["write_errors"])

    def _keep(self, tmp: Path, final: Path, complete: bool) -> None:
        try:
            if complete:
                os.replace(tmp, final)
                return
            partial = final.with_name(f"{final.stem}.partial{final.suffix}")
            kept = tmp
            if not partial.exists():
                os.replace(tmp, partial)
                kept = partial
            log.warning("video sink %s: the run was cut short; the frames written so far are in %s", self.path, kept)
        except OSError as exc:
            log.error("video sink %s: cannot rename the finished video %s into place: %s; it stays as %s",
                      self.path, final.name, exc, tmp)

    def __enter__(self) -> "VideoSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
