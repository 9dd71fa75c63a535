"""The progress line of long commands (replay, batch, eval, calibration), and log lines that do not break it.

tqdm draws the line: it is well kept, one small module with no dependencies, and its rate, time left and
terminal handling (width, redraw throttling, writing above the bar) are what we would otherwise keep
by hand. The product's own number, frames dropped so far, rides in its postfix. The line is drawn only
when the stream is a terminal, so systemd's journal and CI logs get the summary and nothing else.
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sized
from typing import Iterable, Iterator, TextIO, TypeVar

from tqdm import tqdm

__all__ = ["LogHandler", "Progress", "track"]

T = TypeVar("T")

REDRAW_S = 0.25  # at most four redraws a second: a terminal, not a log
FALLBACK_SIZE = (100, 24)  # columns, lines
# tqdm's own layout with the drops (its postfix) beside the counts: a narrow terminal cuts a line's end,
# and the drops matter more than the rate
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}{postfix} [{elapsed}<{remaining}, {rate_fmt}]"
COUNT_FORMAT = "{desc}: {n_fmt} {unit}{postfix} [{elapsed}, {rate_fmt}]"  # no total: a loop, a camera


def _sized(stream: TextIO) -> bool:
    """Whether the terminal says its size (a serial console or a bare pty says 0 x 0)."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError):  # not a file descriptor, or not a terminal
        return False
    return size.columns > 0 and size.lines > 0


class _Bar(tqdm):
    # no monitor thread: a bar is redrawn from the loop that counts, and a service thread more is a thread
    # more to stop
    monitor_interval = 0


class Progress:
    """`replay:  40%|████  | 12/30, dropped=0 [00:08<00:12, 1.40frame/s]` on `stream` while it is a terminal.

    `total` is None when unknown (a looping replay, a camera): the line then has no bar and no time
    left. `enabled` defaults to whether `stream` is a terminal. Callers report absolute counts with
    :meth:`update` as often as they like; the line is redrawn at most every REDRAW_S seconds.
    """

    def __init__(self, total: int | None, stream: TextIO, *, label: str = "frames", enabled: bool | None = None,
                 unit: str = "frame", counts_drops: bool = True) -> None:
        if total is not None and total < 0:
            raise ValueError(f"total: must be >= 0, got {total}")
        self.total, self.stream = total, stream
        self.counts_drops = counts_drops  # False: the caller cannot see drops, so the line does not claim 0
        self.enabled = stream.isatty() if enabled is None else enabled
        self.done = self.dropped = 0
        self._label = label
        # follows the terminal's width; one that does not say its size would get no line at all from
        # tqdm (it takes 0 x 0 for a screen with no room), so it gets a fixed size
        sized = self.enabled and _sized(stream)
        self._bar = _Bar(total=total, file=stream, desc=label, unit=unit, disable=not self.enabled,
                         mininterval=REDRAW_S, miniters=1, dynamic_ncols=sized, leave=True,
                         ncols=None if sized else FALLBACK_SIZE[0], nrows=None if sized else FALLBACK_SIZE[1],
                         postfix="dropped=0" if counts_drops else None,
                         bar_format=BAR_FORMAT if total is not None else COUNT_FORMAT)

    @property
    def label(self) -> str:
        return self._label

    @label.setter
    def label(self, text: str) -> None:
        """A new label, drawn with the next redraw (batch: files done so far)."""
        self._label = text
        if self.enabled:
            self._bar.set_description_str(text, refresh=False)

    def update(self, done: int, dropped: int = 0, *, force: bool = False) -> None:
        """Report `done` items so far, `dropped` of them dropped; `force` redraws now."""
        if self.counts_drops and dropped != self.dropped and self.enabled:
            self._bar.set_postfix_str(f"dropped={dropped}", refresh=False)
        self.done, self.dropped = done, dropped
        if not self.enabled:
            return
        self._bar.update(done - self._bar.n)  # redraws when REDRAW_S has passed
        if force:
            self._bar.refresh()

    def advance(self, n: int = 1, dropped: int = 0) -> None:
        """Add `n` done (and `dropped` of them dropped): for loops that count one item at a time."""
        self.update(self.done + n, self.dropped + dropped)

    def write(self, text: str) -> None:
        """A line of its own on the stream: above the progress line (drawn again below it) on a terminal."""
        if self.enabled:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        """Draw the final counts and end the line, so whatever is printed next starts on its own line."""
        self._bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LogHandler(logging.StreamHandler):
    """A stream handler that writes each record above a progress line on the same stream, never through it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # as logging.StreamHandler: a broken stream must not raise into the frame loop
            self.handleError(record)


def track(items: Iterable[T], label: str, *, total: int | None = None, unit: str = "image",
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
