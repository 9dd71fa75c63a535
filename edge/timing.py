"""Per-frame stage timings: one stopwatch per frame, handed down to every stage that takes time."""
from __future__ import annotations

import threading
import time


class Stopwatch:
    """Milliseconds per stage name, summed over every call that reports the stage.

    Thread-safe: the members of a MultiDetector run concurrently on one frame and all report into
    the frame's one stopwatch (a read-modify-write of a plain dict would lose their updates).
    """

    def __init__(self) -> None:
        self._ms: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, ms: float) -> None:
        with self._lock:
            self._ms[stage] = self._ms.get(stage, 0.0) + ms

    def lap(self, stage: str, t0: float) -> float:
        """Add the time since `t0` (a time.perf_counter() reading) to `stage`; returns now, the next lap's start."""
        t1 = time.perf_counter()
        with self._lock:  # not through add(): this runs several times per frame and stage
            self._ms[stage] = self._ms.get(stage, 0.0) + (t1 - t0) * 1e3
        return t1

    def add_all(self, timings_ms: dict[str, float]) -> None:
        with self._lock:
            for stage, ms in timings_ms.items():
                self._ms[stage] = self._ms.get(stage, 0.0) + ms

    def as_dict(self) -> dict[str, float]:
        """A copy: the frame's outcome keeps it as its timings_ms, later stages (send) add to that."""
        with self._lock:
            return dict(self._ms)
