"""One progress line for long commands (replay, eval, calibration) and the summary line they end with.

A few lines of our own rather than tqdm: tqdm is not a dependency of the vehicle image, and the line
has to carry the product's own numbers (frames dropped so far beside done / total), which a tqdm
postfix would only bolt on. The line is drawn only when the stream is a terminal, so systemd's journal
and CI logs get the summary and nothing else.
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Sized
from typing import Callable, Iterable, Iterator, TextIO, TypeVar

__all__ = ["Progress", "format_duration", "track"]

T = TypeVar("T")

REDRAW_S = 0.25  # at most four redraws a second: a terminal, not a log


def format_duration(seconds: float) -> str:
    """'42s', '3m07s', '1h02m'."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """`label: done/total frames, N/s, dropped D, ETA` redrawn in place on `stream` while it is a terminal.

    `total` is None when unknown (a looping replay, a camera): the line then has no total and no time
    left. `enabled` defaults to whether `stream` is a terminal. Callers report absolute counts with
    :meth:`update` as often as they like; the line is redrawn at most every REDRAW_S seconds.
    """

    def __init__(self, total: int | None, stream: TextIO, *, label: str = "frames", enabled: bool | None = None,
                 unit: str = "frames", counts_drops: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if total is not None and total < 0:
            raise ValueError(f"total: must be >= 0, got {total}")
        self.total, self.stream, self.label, self.unit, self.clock = total, stream, label, unit, clock
        self.counts_drops = counts_drops  # False: the caller cannot see drops, so the line does not claim 0
        self.enabled = stream.isatty() if enabled is None else enabled
        self.done = self.dropped = 0
        self._t0 = clock()
        self._last_draw = float("-inf")
        self._width = 0
        self._closed = False

    def update(self, done: int, dropped: int = 0, *, force: bool = False) -> None:
        self.done, self.dropped = done, dropped
        if not self.enabled or self._closed:
            return
        now = self.clock()
        if force or now - self._last_draw >= REDRAW_S:
            self._last_draw = now
            self._draw(self.line(now))

    def advance(self, n: int = 1, dropped: int = 0) -> None:
        """Add `n` done (and `dropped` of them dropped): for loops that count one item at a time."""
        self.update(self.done + n, self.dropped + dropped)

    def line(self, now: float | None = None) -> str:
        elapsed = (self.clock() if now is None else now) - self._t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.label}: {self.done}/{self.total}" if self.total is not None else f"{self.label}: {self.done}"]
        parts[0] += f" {self.unit}"
        parts.append(f"{rate:.1f}/s")
        if self.counts_drops:
            parts.append(f"dropped {self.dropped}")
        if self.total is not None:
            left = (self.total - self.done) / rate if rate > 0 else float("nan")
            parts.append(f"left {format_duration(left) if self.done < self.total else '0s'}")
        return ", ".join(parts)

    def _draw(self, text: str) -> None:
        pad = " " * max(0, self._width - len(text))
        self._width = len(text)
        self.stream.write("\r" + text + pad)
        self.stream.flush()

    def close(self) -> None:
        """Draw the final counts and end the line, so whatever is printed next starts on its own line."""
        if self._closed:
            return
        if self.enabled:
            self._draw(self.line())
            self.stream.write("\n")
            self.stream.flush()
        self._closed = True

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track(items: Iterable[T], label: str, *, total: int | None = None, unit: str = "images",
          stream: TextIO | None = None) -> Iterator[T]:
    """`items`, drawing a progress line as they are consumed (total: len(items) when it has one).

    For loops that cannot be changed (the evaluation, the calibration gate): wrapping what they iterate
    over is the whole integration.
    """
    if total is None and isinstance(items, Sized):
        total = len(items)
    bar = Progress(total, sys.stderr if stream is None else stream, label=label, unit=unit, counts_drops=False)
    try:
        for item in items:
            yield item
            bar.advance()
    finally:
        bar.close()
