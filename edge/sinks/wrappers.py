"""Sinks around sinks: one that discards (profiling without an output), one that serialises camera loops."""
from __future__ import annotations

import logging
import threading

from edge.frame import DroppedFrame, MaskedFrame
from edge.metrics import Metrics
from edge.sinks import Sink

log = logging.getLogger(__name__)


class NullSink:
    """Discards outcomes (profiling without an output)."""

    def __init__(self) -> None:
        self.sent = 0

    def send(self, item: MaskedFrame | DroppedFrame) -> bool:
        self.sent += 1
        return True

    def stats(self) -> dict:
        return {"sent": self.sent}

    def close(self, complete: bool = True) -> None:
        pass


class LockedSink:
    """Serialises several camera loops onto one sink; counts and survives failures of a single send."""

    def __init__(self, sink: Sink, metrics: Metrics, max_errors: int, on_close: tuple = ()) -> None:
        self.sink, self.metrics, self.max_errors = sink, metrics, max_errors
        self.on_close = on_close  # run after the sink closed (the CURVE authenticator outlives its socket)
        self._lock = threading.Lock()
        self._consecutive_errors = 0

    def send(self, item: MaskedFrame | DroppedFrame) -> bool:
        with self._lock:
            try:
                ok = self.sink.send(item)
            except Exception as e:
                self._consecutive_errors += 1
                self.metrics.count("sink_errors")
                log.error("sink failed on camera %s: %s", getattr(item, "camera_id", "?"), e)
                if self._consecutive_errors >= self.max_errors:
                    raise
                return False
            self._consecutive_errors = 0
            return ok

    def stats(self) -> dict:
        return self.sink.stats()

    def close(self, complete: bool = True) -> None:
        try:
            self.sink.close(complete)
        finally:
            for fn in self.on_close:
                fn()
