"""sd_notify against a real AF_UNIX datagram socket standing in for systemd."""
from __future__ import annotations

import os
import socket

import pytest

from edge.runtime.systemd import Notifier


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


# --- the real service, as systemd runs it -------------------------------------------------------

import json  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
from pathlib import Path  # noqa: E402

from conftest import VIDEO, need  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHORT_CLIP = "udacity_CarND-Vehicle-Detection_test_video.mp4"  # 1280x720, 38 frames, cars and road
PETS = "vtest_pets2009_480x360.avi"

# Runs inside the child: every Python-level open for writing (builtins.open, io.open, os.open,
# tempfile, shutil, renames) is recorded by an audit hook installed before the product is imported.
AUDITED_CHILD = textwrap.dedent("""
    import json, os, sys
    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    writes = []

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int):
                return  # an fd that was itself opened (and audited) by path, or a pipe/socket
            if (mode and any(c in mode for c in "wax+")) or (mode is None and flags & WRITE_FLAGS):
                writes.append(["open", os.path.abspath(os.fsdecode(path))])
        elif event in ("os.rename", "os.replace", "shutil.copyfile", "shutil.move", "os.link", "os.symlink"):
            writes.append([event, os.path.abspath(os.fsdecode(args[1]))])
        elif event in ("tempfile.mkstemp", "tempfile.mkdtemp"):
            writes.append([event, os.path.abspath(os.fsdecode(args[0]))])

    sys.addaudithook(hook)
    from edge.cli import main
    rc = main(sys.argv[1:])
    print(json.dumps({"rc": rc, "writes": writes}))
""")


def short_clip(path: Path, n: int = 12) -> Path:
    """The first `n` frames of a real recording, re-encoded (MJPG) so the test stays quick."""
    import cv2

    cap = cv2.VideoCapture(str(need(VIDEO / SHORT_CLIP)))
    writer = None
    try:
        for _ in range(n):
            ok, image = cap.read()
            assert ok
            if writer is None:
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, image.shape[1::-1])
            writer.write(image)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    return path


def write_service_config(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


def edge_env(tmp_path: Path) -> dict:
    """A HOME and TMPDIR of our own, so that writes by native code (no audit events) show up there."""
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir(exist_ok=True)
    tmp.mkdir(exist_ok=True)
    return {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(home), "TMPDIR": str(tmp),
            "XDG_CACHE_HOME": str(home / ".cache")}


def test_nothing_is_written_outside_the_output_dir_and_the_audit_file(tmp_path):
    """The real service on a recorded feed under sys.addaudithook: every file written is a masked output."""
    out, audit = tmp_path / "out", tmp_path / "state" / "audit.jsonl"
    audit.parent.mkdir()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    cfg = write_service_config(tmp_path / "c.toml", f"""
        [service]
        deadline_ms = 0
        stats_interval_s = 0
        audit_path = "{audit}"
        [mask]
        style = "solid"
        [output]
        kind = "folder"
        dir = "{out}"
        [[cameras]]
        id = "front"
        kind = "replay"
        source = "{short_clip(tmp_path / 'clip.avi')}"
        realtime = false
    """)
    r = subprocess.run([sys.executable, "-c", AUDITED_CHILD, "run", "-c", str(cfg)], capture_output=True, text=True,
                       timeout=120, cwd=cwd, env=edge_env(tmp_path))
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0, r.stderr
    # /dev/null: ctypes.util.find_library (hardening) runs a helper with its output discarded
    outside = [w for w in result["writes"]
               if not (w[1].startswith(f"{out}/") or w[1] in (str(audit), os.devnull))]
    assert outside == []
    # the hook saw the product's writes, so an escape would have been seen too
    assert sum(w[1].endswith(".png") for w in result["writes"]) == 12
    assert [str(audit)] == sorted({w[1] for w in result["writes"] if not w[1].startswith(f"{out}/")} - {os.devnull})
    # native code (OpenCV, onnxruntime) writes no file the hook cannot see: cwd, HOME and TMPDIR stay empty
    for d in (cwd, tmp_path / "home", tmp_path / "tmp"):
        assert list(d.rglob("*")) == [], d
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{i:06d}.png" for i in range(12)] + ["detections.jsonl"])
    end = json.loads(audit.read_text().splitlines()[-1])
    assert end["event"] == "end" and end["frames"]["in"] == 12 and end["frames"]["masked"] == 12


class NotifySocket:
    """A real AF_UNIX datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.received: list[str] = []

    def wait_for(self, prefix: str, timeout_s: float = 60.0) -> str:
        """Collect datagrams until one starts with `prefix` (bounded by `timeout_s` of silence)."""
        self.sock.settimeout(timeout_s)
        while True:
            msg = self.sock.recv(65536).decode()
            self.received.append(msg)
            if msg.startswith(prefix):
                return msg

    def close(self) -> None:
        self.sock.close()


def test_real_service_speaks_the_notify_protocol_and_stops_on_sigterm(tmp_path):
    """READY only once serving, WATCHDOG from the loop, STATUS with fps/drops/provider, STOPPING, exit 0."""
    from edge.subscribe import Subscriber

    addr = f"ipc://{tmp_path}/out.sock"
    cfg = write_service_config(tmp_path / "c.toml", f"""
        [service]
        stats_interval_s = 0
        deadline_ms = 0         # the defaults' detection at 20 fps on a loaded 2-core machine misses 250 ms
        [output]
        kind = "zmq"
        bind = "{addr}"
        sndhwm = 100
        [[cameras]]
        id = "cam7"
        kind = "replay"
        source = "{need(VIDEO / PETS)}"
        realtime = true
        loop = true
        fps = 20
    """)
    notify = NotifySocket(tmp_path / "notify.sock")
    env = {**edge_env(tmp_path), "NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "2000000"}
    proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "-c", str(cfg)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sub = None
    try:
        ready = notify.wait_for("READY=1")
        assert "STATUS=fps" in ready and "provider CPUExecutionProvider" in ready
        # READY means the output is bound: a subscriber connecting now gets frames
        sub = Subscriber(addr, topics=("cam7",))
        got = [m for m in (sub.recv(timeout_s=5.0) for _ in range(10)) if m is not None]
        assert len(got) >= 3 and all(h["masked"] is True for h, _ in got)
        notify.wait_for("WATCHDOG=1")
        status = notify.wait_for("STATUS=")
        assert "in " in status and "dropped" in status and "sink-dropped" in status
        with open(f"/proc/{proc.pid}/limits") as f:
            core = [line.split()[4:6] for line in f if line.startswith("Max core file size")][0]
        assert core == ["0", "0"]  # hardened from inside: no core dump could hold a frame
        proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        if sub is not None:
            sub.close()
        notify.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
