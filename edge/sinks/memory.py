"""In-memory sink for tests: keeps every outcome, as it was at the moment it was sent."""
from __future__ import annotations

import dataclasses
import threading

from edge.frame import Detections, DroppedFrame, MaskedFrame
from edge.sinks import require_outcome


def _snapshot(item: MaskedFrame | DroppedFrame) -> MaskedFrame | DroppedFrame:
    """A deep copy: the pipeline may reuse or repaint its buffers after send() returned."""
    if isinstance(item, DroppedFrame):
        return dataclasses.replace(item, timings_ms=dict(item.timings_ms))
    det = item.detections
    return dataclasses.replace(
        item,
        frame=dataclasses.replace(item.frame, image=item.frame.image.copy()),
        regions=item.regions.copy(),
        detections=Detections(
            det.xyxy.copy(), det.score.copy(), det.class_id.copy(), None if det.quad is None else det.quad.copy()
        ),
        timings_ms=dict(item.timings_ms),
    )


class MemorySink:
    """Collects outcomes in ``items``; refuses (False, counted) only after close(). Thread-safe."""

    def __init__(self) -> None:
        self.items: list[MaskedFrame | DroppedFrame] = []
        self._lock = threading.Lock()
        self._closed = False
        self._after_close = 0

    def send(self, item: MaskedFrame | DroppedFrame) -> bool:
        item = _snapshot(require_outcome(item))
        with self._lock:
            if self._closed:
                # Counted rather than raised: a test asserts it, a shutdown race does not crash.
                self._after_close += 1
                return False
            self.items.append(item)
        return True

    @property
    def masked(self) -> list[MaskedFrame]:
        with self._lock:
            return [i for i in self.items if isinstance(i, MaskedFrame)]

    @property
    def dropped(self) -> list[DroppedFrame]:
        with self._lock:
            return [i for i in self.items if isinstance(i, DroppedFrame)]

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> dict:
        with self._lock:
            masked = sum(isinstance(i, MaskedFrame) for i in self.items)
            return {
                "sent": masked, "sent_dropped_records": len(self.items) - masked,
                "dropped_closed": self._after_close,
            }

    def close(self, complete: bool = True) -> None:
        with self._lock:
            self._closed = True
