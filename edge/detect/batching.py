"""Frames of several camera loops detected together: one inference call per batch instead of one per frame.

Each camera loop calls `detect(image)` as it would on the plain detector. The first caller to find
no batch running becomes the leader: it waits up to `max_wait_ms` for the other cameras' frames
(never longer than it takes for every camera sharing the detector to have one waiting), takes the
waiting frames of its own size, runs `detect_batch` once outside the lock, and hands each caller its
result. Callers whose frames were not taken (another size, a full batch) lead the next round.

Fail closed: an error of the batch call is raised in every caller of that batch, so each pipeline
drops or masks its own frame whole; a caller that waits longer than `timeout_s` raises TimeoutError
and its frame is skipped if a later batch would still find it.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from edge.detect import Detector
from edge.frame import Detections
from edge.timing import Stopwatch


@dataclass(eq=False)
class _Request:
    image: np.ndarray
    t_enqueued: float = field(default_factory=time.perf_counter)
    result: Detections | None = None
    error: BaseException | None = None
    timings: dict[str, float] | None = None  # the batch's stage timings, plus this frame's batch_wait
    done: bool = False
    abandoned: bool = False


class BatchingDetector:
    """Wraps a detector (MultiDetector, OnnxDetector) for `cameras` concurrent loops."""

    def __init__(self, inner: Detector, *, cameras: int, max_batch: int = 8, max_wait_ms: float = 2.0,
                 timeout_s: float = 30.0) -> None:
        if cameras < 1 or max_batch < 1 or max_wait_ms < 0 or timeout_s <= 0:
            raise ValueError(f"cameras {cameras}, max_batch {max_batch}, max_wait_ms {max_wait_ms}, "
                             f"timeout_s {timeout_s}: need cameras, max_batch >= 1, max_wait_ms >= 0, timeout_s > 0")
        self.inner = inner
        self.models, self.providers = inner.models, inner.providers
        self.cameras, self.max_batch = cameras, max_batch
        self.max_wait_s, self.timeout_s = max_wait_ms / 1e3, timeout_s
        self._cond = threading.Condition()
        self._pending: list[_Request] = []
        self._busy = False
        self.batches = 0  # calls to detect_batch
        self.frames = 0  # frames they carried

    def warm_up(self, image: np.ndarray) -> None:
        """Every batch size this wrapper can form, once: a GPU pays its per-shape setup before READY, not on a frame."""
        for n in range(2, min(self.max_batch, self.cameras) + 1):
            self.inner.detect_batch([image] * n)

    def detect_batch(self, images: list[np.ndarray], watch: Stopwatch | None = None) -> list[Detections]:
        """Frames a caller already has together go to the inner detector as they are."""
        return self.inner.detect_batch(images, watch)

    def close(self) -> None:
        self.inner.close()

    def detect(self, image: np.ndarray, watch: Stopwatch | None = None) -> Detections:
        req = _Request(image)
        deadline = time.monotonic() + self.timeout_s
        with self._cond:
            self._pending.append(req)
            self._cond.notify_all()
            while not req.done:
                if not self._busy:
                    batch = self._lead(deadline)
                    if batch:
                        self._cond.release()
                        try:
                            self._run(batch)
                        finally:
                            self._cond.acquire()
                            self._busy = False
                            self._cond.notify_all()
                    else:
                        self._busy = False
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    req.abandoned = True
                    if req in self._pending:
                        self._pending.remove(req)
                    raise TimeoutError(f"batched detection took longer than {self.timeout_s:g} s")
                self._cond.wait(left)
        if req.error is not None:
            raise req.error
        if watch is not None and req.timings:
            watch.add_all(req.timings)
        assert req.result is not None
        return req.result

    def _lead(self, deadline: float) -> list[_Request]:
        """Called with the lock held: wait briefly for the other cameras, then take one batch of one size."""
        self._busy = True
        gather_until = min(time.monotonic() + self.max_wait_s, deadline)
        want = min(self.max_batch, self.cameras)
        while len(self._pending) < want and (left := gather_until - time.monotonic()) > 0:
            self._cond.wait(left)
        live = [r for r in self._pending if not r.abandoned]
        if not live:
            return []
        shape = live[0].image.shape
        batch = [r for r in live if r.image.shape == shape][: self.max_batch]
        taken = set(map(id, batch))
        self._pending = [r for r in self._pending if id(r) not in taken and not r.abandoned]
        return batch

    def _run(self, batch: list[_Request]) -> None:
        t0 = time.perf_counter()
        watch = Stopwatch()
        try:
            results = self.inner.detect_batch([r.image for r in batch], watch)
            if len(results) != len(batch):
                raise RuntimeError(f"detect_batch returned {len(results)} results for {len(batch)} frames")
        except BaseException as e:  # every frame of the batch fails with it: none is masked by a guess
            results, error = [None] * len(batch), e
        else:
            error = None
        self.batches += 1
        self.frames += len(batch)
        timings = watch.as_dict()
        for r, res in zip(batch, results):
            r.timings = {**timings, "batch_wait": (t0 - r.t_enqueued) * 1e3}
            r.result, r.error, r.done = res, error, True
