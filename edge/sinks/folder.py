"""Folder sink for bench work: lossless PNGs of masked frames plus one JSON line per outcome."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import cv2

from edge import overlay, wire
from edge.frame import BUILTIN_CLASSES, ClassTable, DroppedFrame, MaskedFrame
from edge.sinks import require_outcome

log = logging.getLogger(__name__)

JSONL_NAME = "detections.jsonl"
_UNSAFE = re.compile(r"[\x00-\x1f/\\]")
WROTE = ("sent", "sent_dropped_records", "write_errors")  # a sink with none of these had nothing to write


class FolderSinkError(OSError):
    """The output folder cannot be created or written."""


def safe_stem(name: str) -> str:
    """`name` usable as a file stem inside one folder: no separators, never '.' or '..'."""
    stem = _UNSAFE.sub("_", name)
    return "_" + stem if stem in ("", ".", "..") else stem


def frame_stem(camera_id: str, seq: int, name: str = "") -> str:
    """The file stem of a frame: its own name, else `<camera_id>_<seq:08d>`."""
    return safe_stem(name) if name else safe_stem(f"{camera_id}_{seq:08d}")


def write_png(path: Path, image, compression: int) -> int:
    """Encode in memory, write under a temporary name beside `path`, then rename it into place.

    A reader never sees a truncated image under the final name, and a symlink planted at that
    name is replaced, never followed (the temporary file is created exclusively, the rename swaps
    the directory entry itself). Returns the bytes written.
    """
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise OSError(f"PNG encoding failed for image of shape {image.shape}")
    data = buf.tobytes()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # never leave a partial image behind
        raise
    return len(data)


def check_apart(output_dir: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> None:
    """Refuse an output folder that is, contains or lies inside an input (a video file or image folder).

    Masked frames written among the raw ones would mix both in one place, and a raw PNG of the
    same name would be overwritten by its masked copy.
    """
    out = Path(os.path.realpath(output_dir))
    for source in inputs:
        src = Path(os.path.realpath(source))
        if out == src or src.is_relative_to(out) or out.is_relative_to(src):
            raise FolderSinkError(f"output folder {str(output_dir)!r} overlaps the input {str(source)!r}: "
                                  f"choose a folder outside it")


class FrameNames:
    """The file stem of every frame written into one output, never the same for two different frames.

    A frame keeps its own name made safe (`frame_stem`). Two names that become one stem (`a\nb` and
    `a_b`) or one name from two cameras would overwrite each other; the later one is renamed instead
    (another camera's: `<camera_id>__<name>`, the same camera's: `<name>~2`, `~3`...), logged and counted.
    """

    def __init__(self, where: str) -> None:
        self.where = where
        self.renamed = 0
        self._owner: dict[str, tuple[str, str | int]] = {}  # stem -> the (camera, name or seq) that has it

    def stem(self, camera_id: str, seq: int, name: str) -> str:
        key = (camera_id, name or seq)
        stem = frame_stem(camera_id, seq, name)
        owner = self._owner.setdefault(stem, key)
        if owner == key:
            return stem
        if owner[0] != camera_id:
            stem = safe_stem(f"{camera_id}__{stem}")
        base, n = stem, 1
        while self._owner.setdefault(stem, key) != key:
            n += 1
            stem = f"{base}~{n}"
        if n > 1:
            self.renamed += 1
            log.warning("%s: frame %r of camera %s has the same file name as another frame (%r); written as %r",
                        self.where, name or seq, camera_id, base, stem)
        return stem


class FolderSink:
    """Write each MaskedFrame as ``<name>.png`` and every outcome as a line of ``detections.jsonl``.

    A DroppedFrame gets its line and no image. The folder is created and proven writable at
    construction, so a bad path fails before the first frame. Thread-safe. With `annotate`, each
    PNG has its painted regions outlined and labelled (edge.overlay); the records are the same.

    Several cameras may share one sink: a frame name is claimed by the first camera that uses it,
    and another camera's frame of the same name (two replayed folders of ``000001.jpg``...) is
    written as ``<camera_id>__<name>`` instead of overwriting it; two names of one camera that are
    the same once made safe are told apart by FrameNames. A sink that wrote nothing (a refused
    start) leaves no empty records file, nor the folder if it made it.
    """

    def __init__(self, output_dir: str | os.PathLike, *, png_compression: int = 1,
                 classes: ClassTable = BUILTIN_CLASSES, annotate: bool = False, selftest_skipped: str = "") -> None:
        if not 0 <= png_compression <= 9:
            raise ValueError(f"png_compression {png_compression}, expected 0..9")
        self.output_dir = Path(output_dir)
        self.classes, self.annotate = classes, annotate
        self.selftest_skipped = selftest_skipped  # in every record: the run went without its self-test
        self._compression = int(png_compression)
        self._lock = threading.Lock()
        self._stats = {"sent": 0, "sent_dropped_records": 0, "write_errors": 0, "dropped_closed": 0, "bytes": 0}
        self._made_dir = not self.output_dir.exists()
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self._jsonl, self._made_file = open_records(self.output_dir / JSONL_NAME)
        except OSError as exc:
            raise FolderSinkError(f"cannot write to output folder {str(self.output_dir)!r}: {exc}") from exc
        if not os.access(self.output_dir, os.W_OK | os.X_OK):
            self._jsonl.close()
            raise FolderSinkError(f"cannot write images into output folder {str(self.output_dir)!r}")
        self._closed = False
        self._names = FrameNames(f"folder sink {self.output_dir}")

    def _stem(self, camera_id: str, seq: int, name: str) -> str:
        return self._names.stem(camera_id, seq, name)

    def send(self, item: MaskedFrame | DroppedFrame) -> bool:
        """Write the outcome; False (counted as write_errors) if the disk refused it."""
        item = require_outcome(item)
        with self._lock:
            if self._closed:
                self._stats["dropped_closed"] += 1
                return False
            try:
                self._write(item)
            except OSError as exc:
                self._stats["write_errors"] += 1
                log.error("folder sink %s: cannot write %s: %s", self.output_dir, ident(item), exc)
                return False
            return True

    def _write(self, item: MaskedFrame | DroppedFrame) -> None:
        if isinstance(item, DroppedFrame):
            self._append(self._stem(item.camera_id, item.seq, item.name), dropped_record(item))
            self._stats["sent_dropped_records"] += 1
            return
        frame = item.frame
        stem = self._stem(frame.camera_id, frame.seq, frame.name)
        path = self.output_dir / f"{stem}.png"
        t0 = time.perf_counter_ns()
        # the overlay draws on a copy of the masked image: outlines and labels, never the pixels before masking
        image = overlay.annotate(item, self.classes) if self.annotate else frame.image
        size = write_png(path, image, self._compression)
        write_ms = (time.perf_counter_ns() - t0) / 1e6
        self._append(stem, masked_record(item, self.classes, write_ms))
        self._stats["sent"] += 1
        self._stats["bytes"] += size

    def _append(self, name: str, record: dict) -> None:
        self._jsonl.write(record_line(name, record, self.selftest_skipped))
        self._jsonl.flush()

    def stats(self) -> dict:
        with self._lock:
            return {**self._stats, "renamed": self._names.renamed}

    def close(self, complete: bool = True) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._jsonl.close()
            if self._made_file and not any(self._stats[k] for k in WROTE):
                remove_unused(self.output_dir / JSONL_NAME, self.output_dir if self._made_dir else None)

    def __enter__(self) -> "FolderSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_records(path: Path):
    """The JSON lines file of a sink, opened for appending (never through a symlink planted at its name),
    and whether this call created it."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
    try:
        fd, made = os.open(path, flags | os.O_EXCL, 0o644), True
    except FileExistsError:
        fd, made = os.open(path, flags, 0o644), False
    return os.fdopen(fd, "a", encoding="utf-8"), made


def remove_unused(records: Path, folder: Path | None) -> None:
    """Remove a records file nothing was written to (and `folder`, the sink made it and it is empty)."""
    with contextlib.suppress(OSError):
        if records.stat().st_size == 0:
            records.unlink()
            if folder is not None:
                folder.rmdir()  # refused when anything else is in it


def ident(item: MaskedFrame | DroppedFrame) -> str:
    """camera#seq of an outcome, for log lines."""
    frame = item.frame if isinstance(item, MaskedFrame) else item
    return f"{frame.camera_id}#{frame.seq}"


def dropped_record(item: DroppedFrame) -> dict:
    """The detections.jsonl record of a dropped frame (the folder and video sinks write the same)."""
    return {"camera_id": item.camera_id, "seq": item.seq, "status": "dropped", "reason": item.reason,
            "boxes": [], "detections": [], "timings_ms": wire.clean_timings(item.timings_ms)}


def masked_record(item: MaskedFrame, classes: ClassTable, write_ms: float, **extra) -> dict:
    """The detections.jsonl record of a written frame; `extra` keys follow the status (a video's frame index)."""
    frame = item.frame
    return {"camera_id": frame.camera_id, "seq": frame.seq, "status": item.status, **extra,
            "boxes": wire.painted_boxes(item), "detections": wire.painted_for(item, classes),
            "context": item.context.to_list(classes),
            "timings_ms": wire.clean_timings({**item.timings_ms, "write": write_ms})}


def record_line(name: str, record: dict, selftest_skipped: str = "") -> str:
    """One JSON line of a frame's record, strict JSON (no NaN); `selftest_skipped` as in a wire header."""
    if selftest_skipped:
        record = {**record, "selftest_skipped": selftest_skipped}
    return json.dumps({"frame": name, **record}, separators=(",", ":"), allow_nan=False, ensure_ascii=False) + "\n"
