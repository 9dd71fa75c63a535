"""CURVE on the output with real sockets on loopback, key generation, and clear errors for bad keys."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge import security
from edge import compose
from edge.runtime import service as app
from edge import config as config_mod
from edge.config import ConfigError, SecurityConfig
from edge.detect.detector import MultiDetector
from edge.frame import Detections, Frame, MaskedFrame
from edge.security import CurveServer, SecurityError, client_hook, keygen
from edge.runtime.systemd import Notifier
from edge.sinks.zmq_pub import ZmqPublisher
from edge.subscribe import Subscriber, run_subscribe

ROOT = Path(__file__).resolve().parents[1]


def masked(seq: int) -> MaskedFrame:
    image = np.full((36, 48, 3), seq % 256, np.uint8)
    return MaskedFrame(Frame(image, "cam", seq, seq, seq, f"{seq:06d}"), np.zeros((0, 4), np.int32),
                       Detections(), "masked", {"detect": 1.0})


@pytest.fixture()
def keys(tmp_path):
    """A server pair, an allowed client ("alice", in the clients dir) and a stranger ("mallory")."""
    server_dir, clients, private = tmp_path / "server", tmp_path / "clients", tmp_path / "private"
    keygen(server_dir, "server")
    alice_public, _ = keygen(private, "alice")
    keygen(private, "mallory")
    clients.mkdir()
    (clients / "alice.key").write_bytes(alice_public.read_bytes())
    return {"server_secret": server_dir / "server.key_secret", "server_public": server_dir / "server.key",
            "clients": clients, "alice": private / "alice.key_secret", "mallory": private / "mallory.key_secret"}


@pytest.fixture()
def curve_pub(keys):
    server = CurveServer(keys["server_secret"], keys["clients"])
    pub = ZmqPublisher("tcp://127.0.0.1:0", linger_ms=0, sndhwm=64, context=server.context,
                       socket_options_hook=server.hook)
    yield pub
    pub.close()
    server.close()


def pump(pub: ZmqPublisher, subs: dict[str, Subscriber], until: str, n: int = 5, rounds: int = 200) -> dict[str, list]:
    """Publish frames until `until` has `n` of them (bounded), then a few more for the others to miss."""
    got = {name: [] for name in subs}

    def send_one(seq: int) -> None:
        pub.send(masked(seq))
        for name, sub in subs.items():
            msg = sub.recv(0.05)
            if msg is not None:
                got[name].append(msg)

    seq = 0
    while seq < rounds and len(got[until]) < n:
        send_one(seq)
        seq += 1
    for extra in range(10):  # everyone had the same chance after the allowed client was served
        send_one(seq + extra)
    return got


def test_only_the_allowed_client_receives_frames(keys, curve_pub):
    subs = {
        "alice": Subscriber(curve_pub.endpoint, socket_options_hook=client_hook(keys["server_public"], keys["alice"])),
        "mallory": Subscriber(curve_pub.endpoint,
                              socket_options_hook=client_hook(keys["server_public"], keys["mallory"])),
        "plain": Subscriber(curve_pub.endpoint),
    }
    try:
        got = pump(curve_pub, subs, until="alice")
    finally:
        for s in subs.values():
            s.close()
    assert len(got["alice"]) >= 5
    header, image = got["alice"][0]
    assert header["masked"] is True and image.shape == (36, 48, 3)
    assert got["mallory"] == [] and got["plain"] == []
    assert curve_pub.stats()["subscriptions"] == 1  # the others never completed a handshake


def test_client_pinned_to_a_different_server_key_receives_nothing(keys, curve_pub, tmp_path):
    impostor_public, _ = keygen(tmp_path / "other", "server")
    subs = {
        "alice": Subscriber(curve_pub.endpoint, socket_options_hook=client_hook(keys["server_public"], keys["alice"])),
        "misled": Subscriber(curve_pub.endpoint, socket_options_hook=client_hook(impostor_public, keys["alice"])),
    }
    try:
        got = pump(curve_pub, subs, until="alice")
    finally:
        for s in subs.values():
            s.close()
    assert len(got["alice"]) >= 5 and got["misled"] == []


def test_keygen_files_and_permissions(tmp_path):
    public, secret = keygen(tmp_path / "k", "cam-client")
    assert (public.name, secret.name) == ("cam-client.key", "cam-client.key_secret")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) & 0o777 in (0o644, 0o644 & ~os.umask(os.umask(0)))
    pub_key, sec_pub = security.load_public(public), security.load_secret(secret)
    assert pub_key == sec_pub[0] and len(sec_pub[1]) == 40
    assert "secret-key" not in public.read_text()
    with pytest.raises(SecurityError, match="refusing to overwrite"):
        keygen(tmp_path / "k", "cam-client")


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden"])
def test_keygen_refuses_names_that_are_not_plain_file_names(tmp_path, name):
    with pytest.raises(SecurityError, match="plain file name"):
        keygen(tmp_path, name)


def _bad_key(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    """(server secret path, clients dir) with one thing wrong."""
    public, secret = keygen(tmp_path / "s", "server")
    clients = tmp_path / "c"
    keygen(clients, "alice")
    (clients / "alice.key_secret").unlink()
    if kind == "missing secret":
        return tmp_path / "nope.key_secret", clients
    if kind == "garbage secret":
        bad = tmp_path / "bad.key_secret"
        bad.write_text("this is not a certificate\n")
        bad.chmod(0o600)
        return bad, clients
    if kind == "public given as secret":
        return public, clients
    if kind == "secret readable by others":
        secret.chmod(0o644)
        return secret, clients
    if kind == "no clients dir":
        return secret, tmp_path / "absent"
    if kind == "empty clients dir":
        (tmp_path / "empty").mkdir()
        return secret, tmp_path / "empty"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind, message", [
    ("missing secret", "no such file"),
    ("garbage secret", "no valid public-key|not a ZeroMQ certificate"),
    ("public given as secret", "no secret-key in it"),
    ("secret readable by others", "chmod 600"),
    ("no clients dir", "no such directory"),
    ("empty clients dir", "no client public keys"),
])
def test_bad_key_paths_give_clear_errors(tmp_path, kind, message):
    secret, clients = _bad_key(tmp_path, kind)
    with pytest.raises(SecurityError, match=message) as e:
        CurveServer(secret, clients)
    assert "\n" not in str(e.value)


def test_client_hook_names_the_bad_file(tmp_path):
    with pytest.raises(SecurityError, match="server public key .*absent.key: no such file"):
        client_hook(tmp_path / "absent.key", tmp_path / "c.key_secret")


def test_curve_config_needs_both_keys():
    with pytest.raises(ConfigError, match="needs server_secret_key and client_keys_dir"):
        SecurityConfig(curve=True, server_secret_key="/k").check()


def edge_cli(*args):
    return subprocess.run([sys.executable, "-m", "edge", *map(str, args)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_keygen_command_and_subscribe_flags(tmp_path):
    r = edge_cli("keygen", tmp_path / "keys", "--name", "client1")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "keys" / "client1.key").is_file() and "secret\t" in r.stdout
    r = edge_cli("keygen", tmp_path / "keys", "--name", "client1")
    assert r.returncode == 2 and "refusing to overwrite" in r.stderr
    r = edge_cli("subscribe", "--server-key", tmp_path / "keys" / "client1.key", "--count", "1", "--timeout", "0.1")
    assert r.returncode == 2 and "needs both --server-key and --client-key" in r.stderr


def test_service_with_curve_in_its_config_serves_only_allowed_clients(keys, tmp_path, face_detector, monkeypatch):
    """The config switch end to end: build_service makes the CURVE server, the publisher enforces it."""
    monkeypatch.setattr(compose, "build_detector", lambda cfg, stop=None: MultiDetector([face_detector]))
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((120, 160, 3), 80, np.uint8))
    (tmp_path / "c.toml").write_text(f"""
[service]
deadline_ms = 0
[output]
kind = "zmq"
bind = "ipc://{tmp_path}/out.sock"
[security]
curve = true
server_secret_key = "{keys['server_secret']}"
client_keys_dir = "{keys['clients']}"
[selftest]
skip = "build_detector replaced by a face-only detector: no plates, no persons"
[[cameras]]
id = "cam"
kind = "replay"
source = "{folder}"
realtime = true
fps = 50
loop = true
""")
    cfg = config_mod.load(tmp_path / "c.toml")
    stop = threading.Event()
    service = app.build_service(cfg, stop, Notifier({}))
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    endpoint = f"ipc://{tmp_path}/out.sock"
    subs = {"alice": Subscriber(endpoint, socket_options_hook=client_hook(keys["server_public"], keys["alice"])),
            "mallory": Subscriber(endpoint, socket_options_hook=client_hook(keys["server_public"], keys["mallory"])),
            "plain": Subscriber(endpoint)}
    got = {name: 0 for name in subs}
    try:
        for _ in range(100):
            for name, sub in subs.items():
                got[name] += sub.recv(0.05) is not None
            if got["alice"] >= 5:
                break
    finally:
        for s in subs.values():
            s.close()
        stop.set()
        thread.join(timeout=20)
    assert not thread.is_alive()
    assert got["alice"] >= 5 and got["mallory"] == 0 and got["plain"] == 0


@pytest.mark.parametrize("client, says", [
    (None, "refused the handshake; the publisher may require CURVE keys"),  # no keys at all
    ("mallory", "refused the handshake"),  # keys the publisher does not list
])
def test_subscribe_says_why_a_curve_publisher_sends_nothing(keys, curve_pub, client, says):
    hook = client_hook(keys["server_public"], keys[client]) if client else None
    result = run_subscribe(curve_pub.endpoint, timeout_s=1.5, log=lambda line: None, socket_options_hook=hook)
    assert (result["received"], result["ended"]) == (0, "timeout")
    assert says in result["silence"]
