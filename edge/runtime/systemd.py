"""Process-level plumbing for running as a systemd service: sd_notify, signals, watchdog pacing."""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from typing import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """sd_notify over $NOTIFY_SOCKET (a few lines of stdlib); every call is a no-op when it is unset."""

    def __init__(self, env: Mapping[str, str] = os.environ, clock=time.monotonic) -> None:
        self.clock = clock
        addr = env.get("NOTIFY_SOCKET", "")
        self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
        self._sock: socket.socket | None = None
        if self._addr:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watchdog_on = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        # ping at half the interval so one slow frame does not get a healthy process killed
        self.watchdog_interval_s = int(usec) / 2e6 if watchdog_on else 0.0
        self._last_ping = float("-inf")

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, message: str) -> bool:
        if self._sock is None:
            return False
        try:
            self._sock.sendto(message.encode(), self._addr)
            return True
        except OSError as e:
            log.warning("sd_notify %r failed: %s", message.split("=")[0], e)
            return False

    def ready(self, status: str = "") -> None:
        self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        """Ping the watchdog if half its interval has passed since the last ping."""
        if not self.watchdog_interval_s:
            return False
        now = self.clock()
        if now - self._last_ping < self.watchdog_interval_s:
            return False
        self._last_ping = now
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class StopFlag(threading.Event):
    """Set by SIGINT / SIGTERM; remembers which one, so the exit code can say (128 + signal number)."""

    signum: int = 0

    def exit_code(self) -> int:
        return 128 + self.signum if self.signum else 0


def install_stop_handlers(stop: StopFlag) -> None:
    """SIGINT / SIGTERM only set the flag; the loops notice it within their poll timeout."""
    def handler(signum, _frame):
        stop.signum = stop.signum or signum
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def writable_entries(cfg) -> list[tuple[str, str]]:
    """(kind, path) of everything the configured service writes; kind is "dir" or "file".

    The unit makes these, and only these, writable; the install script creates them first (a
    ReadWritePaths= entry that does not exist yet would leave the place read-only).
    """
    entries = []
    if cfg.output.kind == "folder" and cfg.output.dir:
        entries.append(("dir", cfg.output.dir))
    if cfg.output.kind == "zmq" and cfg.output.bind.startswith("ipc://"):
        # the socket file is created (and removed) in its folder
        entries.append(("dir", os.path.dirname(cfg.output.bind[len("ipc://"):]) or "."))
    if cfg.service.audit_path:
        entries.append(("file", cfg.service.audit_path))  # the file alone, not its folder
    if cfg.runtime.trt_cache_dir:
        entries.append(("dir", cfg.runtime.trt_cache_dir))
    if cfg.runtime.fp16 and cfg.runtime.provider != "cpu" and cfg.models.cache_dir:
        entries.append(("dir", cfg.models.cache_dir))  # fp16 copies of the models are cached there
    seen, out = set(), []
    for kind, path in entries:
        path = os.path.abspath(path)
        if path not in seen:
            seen.add(path)
            out.append((kind, path))
    return out


def writable_paths(cfg) -> list[str]:
    """Every path the configured service writes."""
    return [path for _, path in writable_entries(cfg)]


def unit_dropin(cfg) -> str:
    """A systemd drop-in granting write access to the config's paths ('-': a missing one is no unit error)."""
    lines = ["# made by `edge-anon unit-paths`: the paths this instance's config writes", "[Service]"]
    lines += [f"ReadWritePaths=-{p}" for p in writable_paths(cfg)]
    return "\n".join(lines) + "\n"
