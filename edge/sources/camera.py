"""Live cameras: a grabber thread keeps only the newest frame, and a dead camera is reopened.

The detector is slower than some cameras. Queueing frames would make every output frame
older than the last, so the grabber overwrites an unread frame instead: the consumer always
gets the newest one and lost frames show as gaps in ``seq`` (and in ``stats()["overwritten"]``).

A camera that stops delivering (read fails or raises, an empty image, or a frame that only
arrives after ``stall_timeout``) is released and reopened with exponential backoff; the
outage is logged when it starts and, with its length, when frames come back.

A read that hangs inside the backend cannot be interrupted safely from another thread, so
the default capture asks FFmpeg for a read timeout of ``stall_timeout``; a hung read then
comes back as a failed one and goes through the same reopen path.
"""
from __future__ import annotations

import functools
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Protocol

import cv2
import numpy as np

from edge.frame import Frame
from edge.sources import EndOfStream, SourceError

log = logging.getLogger(__name__)

_DEV_VIDEO = re.compile(r"/dev/video\d+")
# udev's stable names survive USB re-enumeration, which matters on a vehicle.
_DEV_V4L_LINK = re.compile(r"/dev/v4l/by-(id|path)/[^\s/]+")
_URL = re.compile(r"(rtsps?|https?)://[^\s/]+.*", re.IGNORECASE)


class Capture(Protocol):
    """The part of cv2.VideoCapture a CameraSource uses."""

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def isOpened(self) -> bool: ...

    def release(self) -> None: ...


# wait(stop, seconds) -> True if stop was set: how the grabber sleeps through a backoff.
Wait = Callable[[threading.Event, float], bool]


def _event_wait(stop: threading.Event, seconds: float) -> bool:
    return stop.wait(seconds)


def parse_camera_uri(uri: str | int) -> tuple[int | str, int]:
    """Map a camera address to ``(target, api_preference)`` for cv2.VideoCapture.

    - ``0`` / ``"0"``: V4L2 device index
    - ``/dev/videoN``, ``/dev/v4l/by-id/...``, ``/dev/v4l/by-path/...``: V4L2 device path
    - ``rtsp://``, ``rtsps://``, ``http://``, ``https://``: FFmpeg
    - a GStreamer pipeline (``"... ! ... ! appsink"``): GStreamer
    """
    if isinstance(uri, bool) or not isinstance(uri, (int, str)):
        raise ValueError(f"camera uri must be an int or str, not {type(uri).__name__}")
    if isinstance(uri, int):
        if uri < 0:
            raise ValueError(f"camera index {uri} is negative")
        return uri, cv2.CAP_V4L2
    text = uri.strip()
    if text.isdigit():
        return int(text), cv2.CAP_V4L2
    if _DEV_VIDEO.fullmatch(text) or _DEV_V4L_LINK.fullmatch(text):
        return text, cv2.CAP_V4L2
    if " ! " in text:
        return text, cv2.CAP_GSTREAMER
    if _URL.fullmatch(text):
        return text, cv2.CAP_FFMPEG
    raise ValueError(
        f"unrecognised camera uri {uri!r}: expected a device index (0), /dev/videoN, "
        "an rtsp://, rtsps://, http:// or https:// URL, or a GStreamer pipeline with ' ! '"
    )


def open_cv_capture(
    target: int | str,
    api: int,
    *,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    open_timeout: float = 5.0,
    read_timeout: float = 2.0,
) -> cv2.VideoCapture:
    """cv2.VideoCapture for a parsed uri, with timeouts and a one-frame driver buffer."""
    params: list[int] = []
    if api == cv2.CAP_FFMPEG:
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout * 1000),
        ]
    cap = cv2.VideoCapture(target, api, params)
    if cap.isOpened():
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, width), (cv2.CAP_PROP_FRAME_HEIGHT, height),
                            (cv2.CAP_PROP_FPS, fps)):
            if value:
                cap.set(prop, value)
        # Frames buffered in the driver are stale by the time we read them.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    return cap


class CameraSource:
    """A live camera behind FrameSource. Call ``start()`` (or use ``with``) before ``read()``.

    ``open_capture`` is a zero-argument factory for the capture (default: cv2.VideoCapture on
    the parsed ``uri``; when given, ``uri`` is only a label for logs). ``clock`` times stalls
    and gaps, ``mono_ns``/``wall_ns`` stamp frames when grabbed, and ``wait(stop, seconds)``
    is how the grabber sleeps through a backoff (it must return early, True, once ``stop``
    is set). Frames carry ``name=""``.
    """

    def __init__(
        self,
        uri: str | int,
        camera_id: str,
        *,
        open_capture: Callable[[], Capture] | None = None,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        stall_timeout: float = 2.0,
        open_timeout: float = 5.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
        join_timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        mono_ns: Callable[[], int] = time.monotonic_ns,
        wall_ns: Callable[[], int] = time.time_ns,
        wait: Wait = _event_wait,
    ) -> None:
        self.camera_id = camera_id
        self.uri = str(uri)
        if open_capture is None:
            try:
                target, api = parse_camera_uri(uri)
            except ValueError as exc:
                raise SourceError(f"camera {camera_id} ({self.uri}): {exc}") from None
            open_capture = functools.partial(
                open_cv_capture, target, api, width=width, height=height, fps=fps,
                open_timeout=open_timeout, read_timeout=stall_timeout,
            )
        self._open_capture = open_capture
        self._stall_timeout = stall_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._join_timeout = join_timeout
        self._clock = clock
        self._mono_ns = mono_ns
        self._wall_ns = wall_ns
        self._wait = wait

        self._cond = threading.Condition(threading.Lock())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        # Guarded by _cond:
        self._slot: Frame | None = None
        self._seq = 0
        self._delivered = 0
        self._overwritten = 0
        self._gaps = 0
        self._reopens = 0
        self._reopen_failures = 0
        self._read_failures = 0
        self._last_gap_s: float | None = None
        self._gap_since: float | None = None
        self._last_frame_at: float | None = None
        self._connected = False
        self._grabber_done = False

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> "CameraSource":
        """Open the camera (SourceError if it cannot be opened) and start grabbing."""
        if self._closed:
            raise SourceError(f"camera {self.camera_id} ({self.uri}): already closed")
        if self._thread is not None:
            return self
        cap, why = self._try_open()
        if cap is None:
            raise SourceError(f"camera {self.camera_id} ({self.uri}): could not open: {why}")
        with self._cond:
            self._connected = True
        self._thread = threading.Thread(
            target=self._run, args=(cap,), name=f"camera-{self.camera_id}", daemon=True,
        )
        self._thread.start()
        log.info("camera %s (%s): opened", self.camera_id, self.uri)
        return self

    def close(self) -> None:
        """Stop grabbing and release the camera; returns within about ``join_timeout``."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._slot = None
            self._stop.set()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(self._join_timeout)
            if self._thread.is_alive():
                # The grabber releases the capture itself when its read returns; releasing
                # it from here while a read is in progress is not safe in OpenCV.
                log.warning("camera %s: grabber did not stop within %.1f s", self.camera_id, self._join_timeout)

    def __enter__(self) -> "CameraSource":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- FrameSource ----------------------------------------------------------------------
    def read(self, timeout: float) -> Frame | None:
        """The newest frame not yet returned, or None if none came within `timeout`."""
        with self._cond:
            if self._closed:
                raise EndOfStream(f"camera {self.camera_id}: closed")
            if self._thread is None:
                raise RuntimeError(f"camera {self.camera_id}: read() before start()")
            self._cond.wait_for(
                lambda: self._closed or self._grabber_done or self._slot is not None, max(timeout, 0.0),
            )
            if self._closed:
                raise EndOfStream(f"camera {self.camera_id}: closed")
            frame, self._slot = self._slot, None
            if frame is None and self._grabber_done:
                raise EndOfStream(f"camera {self.camera_id}: grabber thread stopped")
            if frame is not None:
                self._delivered += 1
            return frame

    def stats(self) -> dict:
        with self._cond:
            return {
                "camera_id": self.camera_id,
                "uri": self.uri,
                "frames": self._seq,
                "delivered": self._delivered,
                "overwritten": self._overwritten,
                "gaps": self._gaps,
                "reopens": self._reopens,
                "reopen_failures": self._reopen_failures,
                "read_failures": self._read_failures,
                "last_gap_s": self._last_gap_s,
                "in_gap": self._gap_since is not None,
                "connected": self._connected,
                "running": self._thread is not None and self._thread.is_alive(),
            }

    # -- grabber thread -------------------------------------------------------------------
    def _try_open(self) -> tuple[Capture | None, str]:
        try:
            cap = self._open_capture()
        except Exception as exc:  # any backend failure is "could not open"
            return None, f"{type(exc).__name__}: {exc}"
        if cap is None:
            return None, "capture factory returned None"
        try:
            opened = bool(cap.isOpened())
        except Exception as exc:
            opened, why = False, f"isOpened raised {type(exc).__name__}: {exc}"
        else:
            why = "capture is not opened (no such device, or unreachable stream)"
        if not opened:
            _release_quietly(cap)
            return None, why
        return cap, ""

    def _run(self, cap: Capture) -> None:
        current: Capture | None = cap
        delay = self._backoff_initial
        last_frame_at: float | None = None  # of the current connection
        try:
            while not self._stop.is_set():
                if current is None:
                    if self._wait(self._stop, delay):
                        break
                    current = self._reopen()
                    if current is None:
                        delay = min(delay * 2, self._backoff_max)
                    continue
                image, why, now = self._grab(current, last_frame_at)
                if image is None:
                    self._begin_gap(why, now)
                    _release_quietly(current)
                    current, last_frame_at = None, None
                    continue
                last_frame_at = now
                delay = self._backoff_initial
                self._publish(image, now)
        except Exception:
            # A bug here must not leave a half-alive source: stop producing, say why.
            log.exception("camera %s: grabber thread failed", self.camera_id)
        finally:
            if current is not None:
                _release_quietly(current)
            with self._cond:
                self._connected = False
                self._grabber_done = True
                self._cond.notify_all()

    def _grab(self, cap: Capture, last_frame_at: float | None) -> tuple[np.ndarray | None, str, float]:
        """One read: (image, "", now) on success, (None, reason, now) when the camera failed."""
        try:
            ok, image = cap.read()
        except Exception as exc:
            return None, f"read raised {type(exc).__name__}: {exc}", self._clock()
        now = self._clock()
        if not ok:
            return None, "read failed", now
        if image is None or getattr(image, "size", 0) == 0:
            return None, "read returned an empty image", now
        if last_frame_at is not None and now - last_frame_at > self._stall_timeout:
            # A frame that sat in a buffer through a stall would be stamped with the wrong
            # capture time; drop it and start clean.
            return None, f"stalled, no frame for {now - last_frame_at:.1f} s", now
        return image, "", now

    def _reopen(self) -> Capture | None:
        cap, why = self._try_open()
        with self._cond:
            if cap is None:
                self._reopen_failures += 1
            else:
                self._reopens += 1
                self._connected = True
        if cap is None:
            log.debug("camera %s (%s): reopen failed: %s", self.camera_id, self.uri, why)
        else:
            log.info("camera %s (%s): reopened", self.camera_id, self.uri)
        return cap

    def _begin_gap(self, why: str, now: float) -> None:
        with self._cond:
            self._read_failures += 1
            self._connected = False
            if self._gap_since is not None:
                return
            self._gaps += 1
            self._gap_since = self._last_frame_at if self._last_frame_at is not None else now
        log.warning("camera %s (%s): frames stopped (%s); reopening", self.camera_id, self.uri, why)

    def _publish(self, image: np.ndarray, now: float) -> None:
        frame = Frame(
            image=image, camera_id=self.camera_id, seq=0,
            t_capture_mono_ns=self._mono_ns(), t_capture_wall_ns=self._wall_ns(),
        )
        gap_s = None
        with self._cond:
            if self._closed:
                return
            frame.seq = self._seq
            self._seq += 1
            if self._slot is not None:
                self._overwritten += 1
            self._slot = frame
            self._last_frame_at = now
            self._connected = True
            if self._gap_since is not None:
                gap_s = self._last_gap_s = now - self._gap_since
                self._gap_since = None
            self._cond.notify_all()
        if gap_s is not None:
            log.warning("camera %s (%s): frames back after a %.1f s gap", self.camera_id, self.uri, gap_s)


def _release_quietly(cap: Capture) -> None:
    try:
        cap.release()
    except Exception as exc:  # a failing release must not stop the reopen loop
        log.debug("capture release failed: %s", exc)
