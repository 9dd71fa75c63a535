"""Consumer side of the wire: a ZeroMQ subscriber and a small receive/print/save loop."""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from edge import wire
from edge.sinks.folder import FolderSinkError, frame_stem, write_png

logger = logging.getLogger(__name__)

# run_subscribe waits in slices this long so Ctrl-C and the idle timeout are honoured promptly.
_POLL_SLICE_S = 0.2
_HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                     zmq.EVENT_HANDSHAKE_FAILED_AUTH)
_MONITORED = zmq.EVENT_CONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
for _event in _HANDSHAKE_FAILED:
    _MONITORED |= _event


class SubscribeError(OSError):
    """The subscriber cannot connect (a malformed address); the message is one line."""


class Subscriber:
    """A SUB socket connected to a publisher; :meth:`recv` returns decoded, validated messages.

    `topics` are camera ids, matched exactly ("" alone: every camera). ZeroMQ filters by prefix,
    so a subscription to "cam1" also brings "cam10"'s frames over the socket; they are dropped here
    (counted in `foreign`) and never returned.
    """

    def __init__(
        self,
        connect: str,
        *,
        topics: Iterable[str] = ("",),
        rcvhwm: int = 8,
        linger_ms: int = 0,
        context: zmq.Context | None = None,
        socket_options_hook: Callable[[zmq.Socket], None] | None = None,
    ) -> None:
        if rcvhwm < 1:
            raise ValueError(f"rcvhwm {rcvhwm}: must be >= 1 (0 means unbounded memory in ZeroMQ)")
        if linger_ms < 0:
            raise ValueError(f"linger_ms {linger_ms}: must be >= 0")
        self._linger_ms = int(linger_ms)
        try:
            wire.check_endpoint(connect, bind=False)
        except wire.WireError as exc:
            raise SubscribeError(f"cannot connect ZeroMQ subscriber: {exc}") from None
        topics = tuple(topics)
        self._cameras = None if "" in topics else frozenset(topics)
        self.foreign = 0
        self._own_context = context is None
        self._ctx = zmq.Context() if context is None else context
        self._sock = self._ctx.socket(zmq.SUB)
        self._closed = False
        self._monitor: zmq.Socket | None = None
        self._events = {"connected": 0, "handshakes": 0, "handshake_failures": 0}
        try:
            self._sock.setsockopt(zmq.LINGER, self._linger_ms)
            self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
            if socket_options_hook is not None:
                socket_options_hook(self._sock)
            for topic in topics:
                self._sock.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))
            self._monitor = self._sock.get_monitor_socket(_MONITORED)
            self._sock.connect(connect)
        except zmq.ZMQError as exc:
            self._release()
            raise SubscribeError(f"cannot connect ZeroMQ subscriber to {connect!r}: {exc}") from exc
        except BaseException:
            self._release()
            raise
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)

    def recv(self, timeout_s: float) -> tuple[dict, np.ndarray | None] | None:
        """The next (header, pixels or None) within `timeout_s`, else None. WireError if malformed."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            if not self._poller.poll(max(0, int((deadline - time.monotonic()) * 1000))):
                return None
            got = wire.decode(self._sock.recv_multipart(zmq.NOBLOCK, copy=False))
            if self._cameras is None or got[0]["camera_id"] in self._cameras:
                return got
            self.foreign += 1

    def connection(self) -> dict[str, int]:
        """How far the connection got: TCP/IPC connects, completed ZMTP handshakes, failed ones (e.g. CURVE)."""
        while self._monitor is not None and self._monitor.poll(0):
            event = recv_monitor_message(self._monitor, zmq.NOBLOCK)["event"]
            if event == zmq.EVENT_CONNECTED:
                self._events["connected"] += 1
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._events["handshakes"] += 1
            elif event in _HANDSHAKE_FAILED:
                self._events["handshake_failures"] += 1
        return dict(self._events)

    def _release(self) -> None:
        if self._monitor is not None:
            self._sock.disable_monitor()
            self._monitor.close(linger=0)
        self._sock.close(linger=self._linger_ms)
        if self._own_context:
            self._ctx.term()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._release()

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _summary(header: dict, now_wall_ns: int) -> str:
    latency_ms = (now_wall_ns - header["t_capture_wall_ns"]) / 1e6
    line = (
        f"{header['camera_id']} seq={header['seq']} {header['status']} "
        f"boxes={len(header.get('boxes', []))} latency={latency_ms:.1f}ms"
    )
    return line + (f" reason={header['reason']}" if header["status"] == "dropped" else "")


def _prepare_dir(save_dir: str | os.PathLike) -> Path:
    path = Path(save_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FolderSinkError(f"cannot create save folder {str(path)!r}: {exc}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise FolderSinkError(f"cannot write into save folder {str(path)!r}")
    return path


def silence_reason(connect: str, connection: dict[str, int]) -> str:
    """One line saying why no frame arrived, from how far the connection got."""
    if connection["handshake_failures"] and not connection["handshakes"]:
        return (f"no frames: {connect} refused the handshake; the publisher may require CURVE keys "
                f"(--server-key, --client-key) or may not list this client's key")
    if not connection["connected"]:
        return f"no frames: no publisher at {connect}"
    return f"no frames: connected to {connect}, but the publisher sent nothing for these topics"


def run_subscribe(
    connect: str,
    *,
    save_dir: str | os.PathLike | None = None,
    count: int | None = None,
    timeout_s: float | None = None,
    topics: Iterable[str] = ("",),
    log: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
    wall_clock_ns: Callable[[], int] = time.time_ns,
    context: zmq.Context | None = None,
    socket_options_hook: Callable[[zmq.Socket], None] | None = None,
    stop: threading.Event | None = None,
    on_ready: Callable[[], None] | None = None,
) -> dict:
    """Receive outcomes, print one line each, optionally save masked frames as PNG.

    Stops after `count` outcomes (masked frames and drop records alike), when nothing arrived for
    `timeout_s` (None: never), or when `stop` is set (the command's Ctrl-C). Malformed messages are
    counted and skipped, never saved. `on_ready` runs once the socket is connecting. Returns the
    counts, how the run ended (`ended`: count, timeout or interrupted) and, when nothing arrived,
    `silence`: one line saying why.
    """
    out_dir = _prepare_dir(save_dir) if save_dir is not None else None
    counts: dict = {"received": 0, "masked": 0, "dropped": 0, "saved": 0, "malformed": 0}
    ended = "count"
    stop = stop or threading.Event()
    with Subscriber(connect, topics=topics, context=context, socket_options_hook=socket_options_hook) as sub:
        if on_ready is not None:
            on_ready()
        last_arrival = clock()
        while count is None or counts["received"] < count:
            if stop.is_set():
                ended = "interrupted"
                break
            slice_s = _POLL_SLICE_S
            if timeout_s is not None:
                remaining = timeout_s - (clock() - last_arrival)
                if remaining <= 0:
                    ended = "timeout"
                    break
                slice_s = min(slice_s, remaining)
            try:
                got = sub.recv(slice_s)
            except wire.WireError as exc:
                counts["malformed"] += 1
                last_arrival = clock()
                logger.warning("skipping malformed message: %s", exc)
                continue
            if got is None:
                continue
            last_arrival = clock()
            header, image = got
            counts["received"] += 1
            counts["dropped" if image is None else "masked"] += 1
            log(_summary(header, wall_clock_ns()))
            if out_dir is not None and image is not None and header["masked"] is True:
                write_png(out_dir / f"{frame_stem(header['camera_id'], header['seq'])}.png", image, 1)
                counts["saved"] += 1
        counts["ended"] = ended
        if not counts["received"] and not counts["malformed"]:
            counts["silence"] = silence_reason(connect, sub.connection())
    return counts
