"""Sinks: where masked frames (and the records of dropped ones) go."""
from __future__ import annotations

from typing import Protocol

from edge.frame import DroppedFrame, MaskedFrame


class Sink(Protocol):
    def send(self, item: MaskedFrame | DroppedFrame) -> bool:
        """Hand one outcome over. Returns False if the sink dropped it (e.g. full queue), counted."""

    def stats(self) -> dict:
        """Counters: sent, dropped and why."""

    def close(self, complete: bool = True) -> None:
        """Flush what can be flushed within a bounded linger, then release resources. complete=False:
        the run was cut short (a signal, a failed loop); an output that is one file must not then look
        finished under its final name."""


def require_outcome(item: object) -> MaskedFrame | DroppedFrame:
    """Refuse anything that did not come out of the mask step: the last line of fail-closed."""
    if not isinstance(item, (MaskedFrame, DroppedFrame)):
        raise TypeError(f"sinks take MaskedFrame or DroppedFrame, got {type(item).__name__}")
    return item
