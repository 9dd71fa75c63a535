"""ZeroMQ publisher sink: masked frames and drop records out to any number of subscribers."""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Callable

import zmq

from edge import wire
from edge.frame import BUILTIN_CLASSES, ClassTable, DroppedFrame, MaskedFrame
from edge.sinks import require_outcome

log = logging.getLogger(__name__)

# Subscription messages drained per send: enough to keep up with any realistic churn while
# bounding the time a send can spend on them.
_MAX_DRAIN_PER_SEND = 64


class PublisherBindError(OSError):
    """The publisher could not bind its address (in use, malformed, no permission...)."""


def refuse_live_ipc(bind: str) -> None:
    """Refuse an ipc:// path that another live process is serving.

    ZeroMQ binds an ipc path by unlinking whatever socket file is there, so a second publisher
    would silently take the address from a running one. A socket file nobody accepts on is a
    leftover of a process that died, and may be replaced.
    """
    if not bind.startswith("ipc://") or bind.startswith("ipc://@"):
        return  # abstract addresses: the kernel itself refuses a second bind
    path = bind[len("ipc://"):]
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        return
    finally:
        probe.close()
    raise PublisherBindError(f"cannot bind ZeroMQ publisher to {bind!r}: another live process serves it")


class ZmqPublisher:
    """Publish each outcome as one multipart message (see :mod:`edge.wire`) on a bound XPUB socket.

    A slow subscriber costs counted, dropped frames, never memory. A plain PUB socket drops
    silently once a subscriber's queue reaches SNDHWM, so we use XPUB with XPUB_NODROP=1 and
    send with NOBLOCK: a full queue makes :meth:`send` return False and counts
    ``stats()["dropped_hwm"]``. The trade-off: with NODROP the HWM check covers every
    subscriber, so ONE slow subscriber makes the publisher drop frames for ALL of them. That is
    the price of knowing about every drop; put a broker in front if consumers differ in speed.

    Pixels are copied into the ZeroMQ message at send time (one memcpy) rather than handed over
    zero-copy: a queued message would otherwise still read the caller's buffer after send()
    returned, and a source that reuses its buffers would put unmasked pixels on the wire.

    Thread-safe: several camera loops may share one publisher. Encoding (JPEG) runs outside
    the lock, only the socket operations are serialised.
    """

    def __init__(
        self,
        bind: str,
        *,
        sndhwm: int = 4,
        linger_ms: int = 500,
        encoding: str = "raw",
        jpeg_quality: int = 90,
        classes: ClassTable = BUILTIN_CLASSES,
        context: zmq.Context | None = None,
        socket_options_hook: Callable[[zmq.Socket], None] | None = None,
        selftest_skipped: str = "",
    ) -> None:
        if sndhwm < 1:
            raise ValueError(f"sndhwm {sndhwm}: must be >= 1 (0 means unbounded memory in ZeroMQ)")
        if linger_ms < 0:
            raise ValueError(f"linger_ms {linger_ms}: must be >= 0 (negative waits forever on close)")
        wire.check_encoding(encoding, jpeg_quality)
        try:
            wire.check_endpoint(bind, bind=True)
        except wire.WireError as exc:
            raise PublisherBindError(f"cannot bind ZeroMQ publisher: {exc}") from None
        self._encoding = encoding
        self._jpeg_quality = int(jpeg_quality)
        self._classes = classes
        self._selftest_skipped = selftest_skipped  # in every header: the run went without its self-test
        self._linger_ms = int(linger_ms)
        self._sndhwm = int(sndhwm)
        self._lock = threading.Lock()
        self._closed = False
        self._stats = {
            "sent": 0, "sent_dropped_records": 0, "dropped_hwm": 0, "dropped_closed": 0,
            "bytes": 0, "subscriptions": 0,
        }
        self._own_context = context is None
        self._ctx = zmq.Context() if context is None else context
        self._sock = self._ctx.socket(zmq.XPUB)
        try:
            refuse_live_ipc(bind)
            self._configure(sndhwm, socket_options_hook)
            self._sock.bind(bind)
            self._endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        except (zmq.ZMQError, PublisherBindError) as exc:
            self._release()
            if isinstance(exc, PublisherBindError):
                raise
            raise PublisherBindError(f"cannot bind ZeroMQ publisher to {bind!r}: {exc}") from exc
        except BaseException:
            self._release()
            raise
        log.info("publishing on %s (sndhwm=%d, encoding=%s)", self._endpoint, sndhwm, encoding)

    def _configure(self, sndhwm: int, hook: Callable[[zmq.Socket], None] | None) -> None:
        sock = self._sock
        sock.setsockopt(zmq.LINGER, self._linger_ms)
        sock.setsockopt(zmq.SNDHWM, sndhwm)
        # Subscription messages arrive on the receive side; keep that bounded as well.
        sock.setsockopt(zmq.RCVHWM, max(sndhwm, 16))
        sock.setsockopt(zmq.XPUB_NODROP, 1)
        # Every (un)subscription of every subscriber is reported, so the count stays exact.
        sock.setsockopt(zmq.XPUB_VERBOSER, 1)
        if hook is not None:
            hook(sock)

    def _release(self) -> None:
        self._sock.close(linger=self._linger_ms)
        if self._own_context:
            # Bounded: our only socket is closed with a finite linger.
            self._ctx.term()

    @property
    def endpoint(self) -> str:
        """The address actually bound (the real port when bound to port 0 or '*')."""
        return self._endpoint

    def send(self, item: MaskedFrame | DroppedFrame) -> bool:
        """Publish one outcome without blocking; False (counted) if the subscribers' queues are full."""
        item = require_outcome(item)
        t0 = time.perf_counter()
        parts = wire.encode(item, self._encoding, self._jpeg_quality, self._classes, self._selftest_skipped)
        # the loop's "send" covers the whole call; this splits the (JPEG) encoding out of it
        item.timings_ms["encode"] = (time.perf_counter() - t0) * 1e3
        size = sum(memoryview(p).nbytes for p in parts)
        with self._lock:
            if self._closed:
                self._stats["dropped_closed"] += 1
                return False
            self._drain_subscriptions()
            try:
                # XPUB checks the HWM on the first part only, so a message goes whole or not at all.
                self._sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=True)
            except zmq.Again:
                self._stats["dropped_hwm"] += 1
                if self._stats["dropped_hwm"] == 1:
                    log.warning("publisher on %s: a subscriber is not keeping up (%d frames queued for it): "
                                "dropping frames for all subscribers from now on, counted in dropped_hwm; "
                                "a larger output.sndhwm buffers more, a slower --fps sends fewer",
                                self._endpoint, self._sndhwm)
                return False
            self._stats["sent" if isinstance(item, MaskedFrame) else "sent_dropped_records"] += 1
            self._stats["bytes"] += size
            return True

    def _drain_subscriptions(self, limit: int = _MAX_DRAIN_PER_SEND) -> None:
        """Read pending (un)subscription messages without blocking; libzmq queues them unbounded."""
        for _ in range(limit):
            try:
                msg = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01":
                self._stats["subscriptions"] += 1
            elif msg[:1] == b"\x00":
                self._stats["subscriptions"] = max(0, self._stats["subscriptions"] - 1)

    def wait_for_subscriptions(self, n: int = 1, timeout_s: float = 5.0, stop: threading.Event | None = None) -> bool:
        """Wait until at least `n` subscriptions are active (ZeroMQ's slow joiner), up to `timeout_s`
        (math.inf: no limit) or until `stop` is set.

        The lock is only held for short polls, so senders keep going meanwhile.
        """
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            with self._lock:
                if self._closed or (stop is not None and stop.is_set()):
                    return False
                self._drain_subscriptions()
                if self._stats["subscriptions"] >= n:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._sock.poll(int(min(remaining, 0.05) * 1000) + 1, zmq.POLLIN)

    def stats(self) -> dict:
        with self._lock:
            return dict(self._stats, endpoint=self._endpoint)

    def close(self, complete: bool = True) -> None:
        """Flush queued messages for at most `linger_ms`, then release the socket; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._release()
        log.info("publisher on %s closed: %s", self._endpoint, self._stats)

    def __enter__(self) -> "ZmqPublisher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
