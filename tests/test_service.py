"""sd_notify against a real AF_UNIX datagram socket standing in for systemd."""
from __future__ import annotations

import os
import socket

import pytest

from edge.service import Notifier


@pytest.fixture()
def systemd(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()


def messages(sock):
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        return out


def test_ready_status_stopping(systemd):
    path, sock = systemd
    n = Notifier({"NOTIFY_SOCKET": path})
    n.ready("frames 0")
    n.status("fps 29.9 drops 0")
    n.stopping()
    assert messages(sock) == ["READY=1\nSTATUS=frames 0", "STATUS=fps 29.9 drops 0", "STOPPING=1"]


def test_abstract_socket_address():
    name = f"edge-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        sock.settimeout(2)
        assert sock.recv(100) == b"READY=1"
    finally:
        sock.close()


def test_watchdog_paced_at_half_the_interval(systemd):
    path, sock = systemd
    now = [100.0]
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"}, clock=lambda: now[0])
    assert n.watchdog_interval_s == 1.0
    sent = []
    for t in (100.0, 100.5, 100.99, 101.0, 101.2, 102.1):
        now[0] = t
        sent.append(n.watchdog())
    assert sent == [True, False, False, True, False, True]
    assert messages(sock) == ["WATCHDOG=1"] * 3


@pytest.mark.parametrize("env", [
    {},
    {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "0"},
    {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"},  # meant for another process
])
def test_watchdog_off(env):
    assert Notifier(env).watchdog() is False


def test_no_socket_is_a_noop():
    n = Notifier({})
    assert not n.enabled and n.notify("READY=1") is False


def test_vanished_socket_does_not_raise(tmp_path):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.notify("READY=1") is False
