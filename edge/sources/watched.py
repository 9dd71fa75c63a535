"""A source seen through the service: frame-size changes counted and logged."""
from __future__ import annotations

import logging

from edge.metrics import Metrics

log = logging.getLogger(__name__)


class WatchedSource:
    """A source seen through the service: counts frames whose size differs from the previous one."""

    def __init__(self, source, metrics: Metrics) -> None:
        self.source, self.metrics = source, metrics
        self.camera_id = source.camera_id
        self._shape = None

    def read(self, timeout: float):
        frame = self.source.read(timeout)
        if frame is not None:
            shape = getattr(frame.image, "shape", None)
            if self._shape is not None and shape != self._shape:
                self.metrics.count("frame_size_changes")
                log.info("camera %s: frame size %s -> %s", self.camera_id, self._shape, shape)
            self._shape = shape
        return frame

    def stats(self) -> dict:
        return self.source.stats()

    def close(self) -> None:
        self.source.close()
