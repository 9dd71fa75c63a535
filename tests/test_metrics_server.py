"""The loopback metrics endpoint: JSON counters and latency percentiles over real HTTP, never pixels."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from edge.config import ConfigError, MetricsConfig
from edge.metrics import Metrics
from edge.runtime.metrics_server import MetricsBindError, MetricsServer


def get(address: str, path: str) -> tuple[int, dict, str]:
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as r:
            return r.status, json.loads(r.read()), r.headers["Content-Type"]
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers["Content-Type"]


@pytest.fixture()
def served():
    metrics = Metrics()
    health = {"ok": True}
    server = MetricsServer("127.0.0.1:0", metrics.snapshot, lambda: health["ok"])
    yield server, metrics, health
    server.close()


def test_metrics_are_json_counters_and_histograms(served):
    server, metrics, _ = served
    metrics.count("frames_in", 3)
    metrics.count("dropped_deadline")
    for ms in (1.0, 2.0, 3.0, 100.0):
        metrics.observe("inference", ms)
    code, body, ctype = get(server.address, "/metrics")
    assert code == 200 and ctype == "application/json"
    assert body["counters"] == {"frames_in": 3, "dropped_deadline": 1}
    inf = body["latency_ms"]["inference"]
    assert inf["n"] == 4 and inf["max"] == 100.0 and 2.0 <= inf["p50"] <= 3.0


def test_snapshot_is_taken_per_request(served):
    server, metrics, _ = served
    assert get(server.address, "/metrics")[1]["counters"] == {}
    metrics.count("frames_in")
    assert get(server.address, "/metrics")[1]["counters"] == {"frames_in": 1}


def test_healthz_follows_the_service(served):
    server, _, health = served
    assert get(server.address, "/healthz")[:2] == (200, {"ok": True})
    health["ok"] = False
    assert get(server.address, "/healthz")[:2] == (503, {"ok": False})


def test_unknown_path_is_404_listing_the_paths(served):
    code, body, _ = get(served[0].address, "/frame.png")
    assert code == 404 and body["paths"] == ["/metrics", "/healthz"]


def test_bound_to_loopback_only(served):
    server = served[0]
    host, port = server.address.rsplit(":", 1)
    assert host == "127.0.0.1"
    # the socket really listens on loopback: the wildcard address is not bound by us
    assert server._server.server_address[0] == "127.0.0.1" and int(port) > 0


@pytest.mark.parametrize("bind", ["0.0.0.0:9108", "192.168.1.10:9108", "[::]:9108", "example.com:80"])
def test_config_refuses_non_loopback_addresses(bind):
    with pytest.raises(ConfigError, match="loopback only"):
        MetricsConfig(bind=bind).check()


@pytest.mark.parametrize("bind", ["127.0.0.1:9108", "localhost:9108", "[::1]:9108", "127.0.0.2:1"])
def test_config_accepts_loopback(bind):
    MetricsConfig(bind=bind).check()


@pytest.mark.parametrize("bind", ["9108", "127.0.0.1:http", "127.0.0.1:70000"])
def test_config_refuses_malformed_binds(bind):
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        MetricsConfig(bind=bind).check()


def test_port_in_use_is_a_clear_bind_error(served):
    with pytest.raises(MetricsBindError, match=f"metrics.bind {served[0].address}"):
        MetricsServer(served[0].address, dict)


def test_snapshot_with_nan_is_an_error_not_invalid_json(served):
    server = MetricsServer("127.0.0.1:0", lambda: {"x": float("nan")})
    try:
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(f"http://{server.address}/metrics", timeout=5).read()
    finally:
        server.close()


def test_close_frees_the_port():
    server = MetricsServer("127.0.0.1:0", dict)
    address = server.address
    server.close()
    server.close()  # idempotent
    again = MetricsServer(address, dict)
    again.close()
