"""Frame sources: cameras and recorded feeds behind one small protocol."""
from __future__ import annotations

from typing import Protocol

from edge.frame import Frame


class EndOfStream(Exception):
    """The source has no more frames (end of a recording, or closed)."""


class SourceError(RuntimeError):
    """A source that cannot be opened at all (missing file, unreadable video, empty folder)."""


class FrameSource(Protocol):
    camera_id: str

    def read(self, timeout: float) -> Frame | None:
        """The next frame, or None if none arrived within `timeout` seconds.

        Raises EndOfStream when the source is finished or closed.
        """

    def stats(self) -> dict:
        """Counters for metrics and logs (frames, gaps, reopens, decode errors...)."""

    def close(self) -> None:
        """Stop producing; idempotent, returns within a bounded time."""
