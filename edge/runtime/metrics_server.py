"""A tiny HTTP endpoint on loopback: GET /metrics (JSON counters and latencies), GET /healthz.

Numbers only: the snapshot callable is the service's, which carries counters, per-stage latency
percentiles and source/sink stats, never pixels or boxes. Off unless ``[metrics] bind`` is set.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

log = logging.getLogger(__name__)

# A client that opens a connection and sends nothing must not hold a handler thread forever.
_REQUEST_TIMEOUT_S = 5.0


class MetricsBindError(OSError):
    pass


def _handler(snapshot: Callable[[], dict], healthy: Callable[[], bool]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = _REQUEST_TIMEOUT_S
        server_version = "edge-anon"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, json.dumps(snapshot(), sort_keys=True, default=str, allow_nan=False))
            elif path == "/healthz":
                ok = healthy()
                self._reply(200 if ok else 503, json.dumps({"ok": ok}))
            else:
                self._reply(404, json.dumps({"error": "not found", "paths": ["/metrics", "/healthz"]}))

        def _reply(self, code: int, body: str) -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt: str, *args) -> None:
            log.debug("metrics %s: " + fmt, self.client_address[0], *args)

    return Handler


class _HTTPServer6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class MetricsServer:
    """Serves in a daemon thread; ``close()`` stops it and frees the port within a bounded time."""

    def __init__(self, bind: str, snapshot: Callable[[], dict], healthy: Callable[[], bool] = lambda: True) -> None:
        host, _, port = bind.rpartition(":")
        host = host.strip("[]")
        try:
            server_cls = _HTTPServer6 if ":" in host else ThreadingHTTPServer
            self._server = server_cls((host, int(port)), _handler(snapshot, healthy))
        except OSError as e:
            raise MetricsBindError(f"metrics.bind {bind}: {e.strerror or e}") from None
        self._server.daemon_threads = True
        self.address = f"{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="metrics-http", daemon=True)
        self._thread.start()
        log.info("metrics on http://%s/metrics", self.address)

    def close(self) -> None:
        if self._thread is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._thread = None
