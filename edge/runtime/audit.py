"""Per-session audit record: what ran (models and their sha256, thresholds) and what came of it.

Two JSON lines per session, appended to ``service.audit_path`` and nowhere else: ``start`` when
the service is ready, ``end`` when it stops (a session killed by the watchdog has only its start,
which is itself evidence). Counts, reasons, settings and hashes only; no pixels, no boxes, and
credentials are removed from camera URLs.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from edge import config as config_mod
from edge.config import Config

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]*@")


class AuditError(OSError):
    """The audit file cannot be opened for appending."""


def redact(text: str) -> str:
    """`rtsp://user:pass@host/x` -> `rtsp://***@host/x`: secrets stay out of logs and records."""
    return _USERINFO.sub(r"\g<scheme>***@", text)


def redact_tree(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_tree(v) for v in value]
    return value


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def frame_counts(counters: dict[str, int]) -> dict:
    """Frames processed / masked / dropped, with the reasons, from the pipeline's counters."""
    return {
        "in": counters.get("frames_in", 0),
        "masked": counters.get("frames_masked", 0),
        "masked_whole": counters.get("frames_masked_whole", 0),
        "dropped": counters.get("frames_dropped", 0),
        "dropped_by_reason": {k[len("dropped_"):]: v for k, v in sorted(counters.items()) if k.startswith("dropped_")},
        "masked_whole_by_reason": {k[len("masked_whole_"):]: v for k, v in sorted(counters.items())
                                   if k.startswith("masked_whole_")},
        "sink_dropped": counters.get("sink_dropped", 0),
        "sink_errors": counters.get("sink_errors", 0),
    }


class AuditLog:
    """Appends the session's records to one file, opened once (O_APPEND, 0640) at startup."""

    def __init__(self, path: str | os.PathLike, clock=time.monotonic) -> None:
        self.path = Path(path)
        self.session = str(uuid.uuid4())
        self._clock = clock
        self._t0 = clock()
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as e:
            raise AuditError(f"service.audit_path {self.path}: cannot append: {e.strerror}") from None

    def _write(self, record: dict) -> None:
        line = json.dumps({"session": self.session, "time": _now(), **record}, sort_keys=True,
                          separators=(",", ":"), allow_nan=False, default=str) + "\n"
        os.write(self._fd, line.encode())
        os.fsync(self._fd)

    def start(self, cfg: Config, models: list[dict], selftest: list[dict] | None = None) -> None:
        """`selftest`: the start-up self-test's counts per detector (edge.selftest.Result.record); None where
        this process did not run it (a batch paint task: the driver ran it before any work); a run with
        `[selftest] skip` says so here instead, with its reason."""
        self._write({
            "event": "start", "pid": os.getpid(), "host": socket.gethostname(),
            "models": models,
            "selftest": ({"skipped": cfg.selftest.skip} if cfg.selftest.skip
                         else {"results": list(selftest)} if selftest is not None else {"run_by": "the batch driver"}),
            "thresholds": {name: {"enabled": c.enabled, "model": c.model, "score_threshold": c.score_threshold,
                                  "nms_iou": c.nms_iou, "scales": list(c.scales)}
                           for name, c in cfg.detect.classes()},
            "config": redact_tree(config_mod.to_dict(cfg)),
        })

    def end(self, exit_code: int, counters: dict[str, int], sources: dict, sink: dict, errors: list[str]) -> None:
        self._write({
            "event": "end", "exit_code": exit_code, "duration_s": round(self._clock() - self._t0, 3),
            "frames": frame_counts(counters), "counters": counters,
            "sources": redact_tree(sources), "sink": sink, "errors": [redact(e) for e in errors],
        })

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
