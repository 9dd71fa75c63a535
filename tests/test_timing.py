"""Stopwatch: one per frame; stages sum over calls and over threads (the concurrent members of a MultiDetector)."""
from __future__ import annotations

import threading
import time

from edge.timing import Stopwatch


def test_stages_sum_and_lap_returns_the_next_start():
    watch = Stopwatch()
    watch.add("inference", 2.0)
    t = watch.lap("preprocess", time.perf_counter() - 0.001)
    watch.lap("decode", t)
    watch.add("inference", 3.0)
    got = watch.as_dict()
    assert got["inference"] == 5.0 and got["preprocess"] >= 1.0 and got["decode"] >= 0.0
    got["inference"] = 0.0  # a copy: the outcome's timings_ms is its own
    assert watch.as_dict()["inference"] == 5.0


def test_concurrent_adds_are_not_lost():
    watch = Stopwatch()
    start = threading.Barrier(4)

    def member():
        start.wait()
        for _ in range(2000):
            watch.add("inference", 1.0)

    threads = [threading.Thread(target=member) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert watch.as_dict() == {"inference": 8000.0}
