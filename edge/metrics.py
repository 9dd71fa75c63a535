"""Counters and latency histograms. Numbers only: nothing here ever holds pixels."""
from __future__ import annotations

import threading
from collections import defaultdict

import numpy as np


class Metrics:
    """Thread-safe counters plus a ring buffer of recent latencies per stage (bounded memory)."""

    def __init__(self, window: int = 4096) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, int] = defaultdict(int)
        self._window = window
        self._samples: dict[str, np.ndarray] = {}
        self._filled: dict[str, int] = defaultdict(int)

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counters[key] += n

    def observe(self, stage: str, ms: float) -> None:
        self.observe_all({stage: ms})

    def observe_all(self, timings_ms: dict[str, float]) -> None:
        """Every stage of one frame under one lock: a frame's timings are recorded together."""
        with self._lock:
            for stage, ms in timings_ms.items():
                buf = self._samples.get(stage)
                if buf is None:
                    buf = self._samples[stage] = np.zeros(self._window, np.float64)
                buf[self._filled[stage] % self._window] = ms
                self._filled[stage] += 1

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counters)

    def snapshot(self) -> dict:
        """Counters and p50/p90/p99/max per stage over the recent window."""
        with self._lock:
            stages = {}
            for stage, buf in self._samples.items():
                n = min(self._filled[stage], self._window)
                values = buf[:n]
                p50, p90, p99 = np.percentile(values, [50, 90, 99])
                stages[stage] = {"n": int(self._filled[stage]), "p50": round(float(p50), 3), "p90": round(float(p90), 3),
                                 "p99": round(float(p99), 3), "max": round(float(values.max()), 3)}
            return {"counters": dict(self._counters), "latency_ms": stages}
