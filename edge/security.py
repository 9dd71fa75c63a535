"""ZeroMQ CURVE on the output: encryption plus an allow-list of client public keys.

The publisher holds a server key pair; each consumer has its own pair and its public certificate
is dropped into ``client_keys_dir``. pyzmq's ThreadAuthenticator answers ZeroMQ's ZAP requests
from that directory, and the socket enforces ZAP, so a client whose key is not listed (or any
client at all, should the authenticator be gone) completes no handshake and receives nothing.

Certificates use ZeroMQ's ZPL format (``zmq.auth.load_certificate`` reads them):
``NAME.key`` holds the public key only, ``NAME.key_secret`` both, created with mode 0600.
"""
from __future__ import annotations

import datetime
import logging
import os
import stat
from pathlib import Path
from typing import Callable

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger(__name__)

ZAP_DOMAIN = b"edge-anon"


class SecurityError(RuntimeError):
    """Keys missing, unreadable, malformed or too open; the message names the file."""


def _cert_text(public: bytes, secret: bytes | None) -> str:
    kind = "Secret" if secret is not None else "Public"
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    lines = [f"#   ZeroMQ CURVE {kind} Certificate, made by edge-anon keygen on {now}",
             "#   Exchange securely, or upgrade the protection of this file." if secret is None
             else "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.",
             "", "metadata", "curve", f'    public-key = "{public.decode("ascii")}"']
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode("ascii")}"')
    return "\n".join(lines) + "\n"


def _write_new(path: Path, text: str, mode: int) -> None:
    # O_EXCL: never overwrite a key in place; the mode is set at creation, not after a window.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)


def keygen(directory: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """Create NAME.key (public, 0644) and NAME.key_secret (0600) in `directory`; never overwrites."""
    if not name or "/" in name or name.startswith("."):
        raise SecurityError(f"key name {name!r}: use a plain file name")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    public_path, secret_path = out / f"{name}.key", out / f"{name}.key_secret"
    for p in (public_path, secret_path):
        if p.exists():
            raise SecurityError(f"{p} exists; refusing to overwrite a key")
    public, secret = zmq.curve_keypair()
    _write_new(secret_path, _cert_text(public, secret), 0o600)
    _write_new(public_path, _cert_text(public, None), 0o644)
    return public_path, secret_path


def _load(path: str | os.PathLike, what: str) -> tuple[bytes, bytes | None]:
    p = Path(path)
    if not p.is_file():
        raise SecurityError(f"{what} {p}: no such file")
    try:
        public, secret = zmq.auth.load_certificate(p)
    except (OSError, ValueError) as e:
        raise SecurityError(f"{what} {p}: not a ZeroMQ certificate ({e})") from None
    if not public or len(public) != 40:
        raise SecurityError(f"{what} {p}: no valid public-key")
    return public, secret


def load_secret(path: str | os.PathLike, what: str = "secret key") -> tuple[bytes, bytes]:
    """(public, secret) of a secret certificate that only its owner (and group) may read."""
    public, secret = _load(path, what)
    if not secret or len(secret) != 40:
        raise SecurityError(f"{what} {path}: no secret-key in it (is this the .key_secret file?)")
    mode = Path(path).stat().st_mode
    if mode & (stat.S_IROTH | stat.S_IWOTH | stat.S_IWGRP):
        raise SecurityError(f"{what} {path}: mode {stat.filemode(mode)} lets others read or change it; chmod 600")
    return public, secret


def load_public(path: str | os.PathLike, what: str = "public key") -> bytes:
    return _load(path, what)[0]


def client_keys(directory: str | os.PathLike) -> list[Path]:
    """The public certificates (*.key) in `directory`; SecurityError if there are none."""
    d = Path(directory)
    if not d.is_dir():
        raise SecurityError(f"client keys dir {d}: no such directory")
    keys = sorted(d.glob("*.key"))
    if not keys:
        raise SecurityError(f"client keys dir {d}: no client public keys (*.key); nobody could subscribe")
    for k in keys:
        load_public(k, "client key")
    return keys


class CurveServer:
    """A ZeroMQ context with an authenticator, and the hook that makes a socket a CURVE server."""

    def __init__(self, server_secret_key: str | os.PathLike, client_keys_dir: str | os.PathLike) -> None:
        self.public, self._secret = load_secret(server_secret_key, "security.server_secret_key")
        self.allowed = client_keys(client_keys_dir)
        self.context = zmq.Context()
        self._auth = ThreadAuthenticator(self.context, log=logging.getLogger(f"{__name__}.zap"))
        try:
            self._auth.start()
            self._auth.configure_curve(domain=ZAP_DOMAIN.decode(), location=str(client_keys_dir))
        except BaseException:
            self.close()
            raise
        log.info("CURVE on: server key %s…, %d allowed client key(s) from %s",
                 self.public[:8].decode(), len(self.allowed), client_keys_dir)

    def hook(self, sock: zmq.Socket) -> None:
        sock.curve_secretkey = self._secret
        sock.curve_publickey = self.public
        sock.curve_server = True
        sock.zap_domain = ZAP_DOMAIN
        # Without this libzmq lets CURVE clients in when no ZAP handler answers: fail closed instead.
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)

    def close(self) -> None:
        """Stop the authenticator and end the context; call after the sockets on it are closed."""
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
            self.context.term()


def client_hook(server_public_key: str | os.PathLike, client_secret_key: str | os.PathLike) -> Callable[[zmq.Socket], None]:
    """A Subscriber socket_options_hook: CURVE client with its own key pair, pinned to the server's key."""
    server = load_public(server_public_key, "server public key")
    public, secret = load_secret(client_secret_key, "client secret key")

    def hook(sock: zmq.Socket) -> None:
        sock.curve_serverkey = server
        sock.curve_publickey = public
        sock.curve_secretkey = secret

    return hook
