"""The template unit, its generated drop-in and the install script (dry run)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge import config as config_mod
from edge.runtime.systemd import unit_dropin, writable_entries

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "edge-anon@.service"
INSTALL = ROOT / "scripts" / "install-service.sh"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd's INI dialect: repeated keys accumulate, '#' and ';' start comments."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"not a key=value line: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit():
    return parse_unit(UNIT.read_text())


@pytest.mark.parametrize("key, value", [
    ("Type", "notify"),
    ("NotifyAccess", "main"),
    ("ExecStart", "/opt/edge-anon/venv/bin/python -m edge run --config /etc/edge-anon/%i.toml"),
    ("ExecStartPre", "/opt/edge-anon/venv/bin/python -m edge check-config /etc/edge-anon/%i.toml"),
    ("Restart", "on-failure"),
    ("LimitCORE", "0"),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("NoNewPrivileges", "yes"),
    ("DevicePolicy", "closed"),
    ("DeviceAllow", "char-video4linux rw"),
    ("CapabilityBoundingSet", ""),
    ("Environment", "ORT_DISABLE_TELEMETRY=1"),
    ("ProtectKernelTunables", "yes"),
    ("RestrictSUIDSGID", "yes"),
])
def test_service_section_has(unit, key, value):
    assert value in unit["Service"][key]


@pytest.mark.parametrize("key", ["WatchdogSec", "RestartSec", "TimeoutStartSec", "TimeoutStopSec"])
def test_timeouts_are_set(unit, key):
    [value] = unit["Service"][key]
    assert value.rstrip("s").isdigit() and int(value.rstrip("s")) > 0


def test_start_limits_stop_a_restart_loop(unit):
    assert int(unit["Unit"]["StartLimitBurst"][0]) >= 1
    assert int(unit["Unit"]["StartLimitIntervalSec"][0]) > int(unit["Service"]["RestartSec"][0].rstrip("s"))


def test_watchdog_is_longer_than_the_deadline_and_the_stop_join(unit):
    # the loop pings at half WatchdogSec; a frame may take up to the deadline (250 ms default)
    assert int(unit["Service"]["WatchdogSec"][0].rstrip("s")) >= 2
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_no_writable_path_in_the_template(unit):
    """Writable places come only from the instance's drop-in (the config's own paths)."""
    assert "ReadWritePaths" not in unit["Service"]
    assert "StateDirectory" not in unit["Service"] and "LogsDirectory" not in unit["Service"]


def _config(tmp_path: Path, body: str) -> config_mod.Config:
    p = tmp_path / "c.toml"
    p.write_text(body + '\n[[cameras]]\nid = "front"\nsource = "/dev/video0"\n')
    return config_mod.load(p)


@pytest.mark.parametrize("body, expected", [
    ('[output]\nkind = "zmq"\nbind = "tcp://127.0.0.1:5555"', []),
    ('[output]\nkind = "folder"\ndir = "/data/front"', [("dir", "/data/front")]),
    ('[output]\nkind = "zmq"\nbind = "ipc:///run/edge-anon/front/out.sock"', [("dir", "/run/edge-anon/front")]),
    ('[service]\naudit_path = "/var/lib/edge-anon/a.jsonl"', [("file", "/var/lib/edge-anon/a.jsonl")]),
    ('[runtime]\nprovider = "tensorrt"\ntrt_cache_dir = "/var/cache/trt"', [("dir", "/var/cache/trt")]),
    ('[runtime]\nprovider = "cuda"\nfp16 = true\n[models]\ncache_dir = "/var/cache/m"', [("dir", "/var/cache/m")]),
    ('[runtime]\nprovider = "cpu"\nfp16 = true\n[models]\ncache_dir = "/var/cache/m"', []),
])
def test_writable_entries_are_exactly_what_the_config_writes(tmp_path, body, expected):
    cfg = _config(tmp_path, body)
    assert writable_entries(cfg) == expected
    dropin = parse_unit(unit_dropin(cfg))
    assert dropin.get("Service", {}).get("ReadWritePaths", []) == [f"-{p}" for _, p in expected]


def test_unit_paths_command(tmp_path):
    _config(tmp_path, '[output]\nkind = "folder"\ndir = "/data/front"\n[service]\naudit_path = "/var/lib/a.jsonl"')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "edge", "unit-paths", str(tmp_path / "c.toml")], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["dir\t/data/front", "file\t/var/lib/a.jsonl"]
    r = subprocess.run([sys.executable, "-m", "edge", "unit-paths", "--dropin", str(tmp_path / "c.toml")],
                       capture_output=True, text=True, env=env, timeout=60)
    assert parse_unit(r.stdout)["Service"]["ReadWritePaths"] == ["-/data/front", "-/var/lib/a.jsonl"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    """systemd's own parser: unknown keys and bad values are reported (it needs the binaries to exist)."""
    text = UNIT.read_text().replace("/opt/edge-anon/venv/bin/python", sys.executable)
    (tmp_path / "edge-anon@.service").write_text(text)
    (tmp_path / "edge-anon@front.service").write_text(text)
    (tmp_path / "edge-anon@bad.service").write_text(text.replace("ProtectSystem=strict", "ProtectSystem=bogus"))
    good = subprocess.run(["systemd-analyze", "verify", "./edge-anon@front.service"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert good.returncode == 0 and good.stderr == "", good.stderr
    bad = subprocess.run(["systemd-analyze", "verify", "./edge-anon@bad.service"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert "protect system value" in bad.stderr  # the check above really parses the file


def install(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True, env=env, timeout=120)


def test_install_dry_run_prints_the_steps_and_changes_nothing(tmp_path):
    cfg = tmp_path / "front.toml"
    cfg.write_text(f'[service]\naudit_path = "{tmp_path}/state/audit.jsonl"\n[output]\nkind = "folder"\n'
                   f'dir = "{tmp_path}/frames"\n[[cameras]]\nid = "front"\nsource = "/dev/video0"\n')
    r = install("--dry-run", "--instance", "front", "--config", str(cfg), "--unit-dir", str(tmp_path / "units"),
                "--prefix", str(tmp_path / "opt"))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "systemctl enable edge-anon@front.service" in out
    assert f"install -d -m 0750 -o edge-anon -g edge-anon {tmp_path}/frames" in out
    assert f"install -m 0640 -o edge-anon -g edge-anon /dev/null {tmp_path}/state/audit.jsonl" in out
    assert f"ReadWritePaths=-{tmp_path}/frames" in out and f"ReadWritePaths=-{tmp_path}/state/audit.jsonl" in out
    assert f"ExecStart={tmp_path}/opt/venv/bin/python -m edge run" in out  # the unit follows --prefix
    assert out.rstrip().endswith("# dry run: nothing was changed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["front.toml"]  # nothing created


@pytest.mark.parametrize("args, message", [
    (["--instance", "front"], "--instance needs --config"),
    (["--instance", "a b", "--config", "x.toml"], "letters, digits"),
    (["--bogus"], "unknown argument"),
])
def test_install_refuses_bad_arguments(args, message):
    r = install("--dry-run", *args)
    assert r.returncode == 2 and message in r.stderr


def test_install_refuses_an_invalid_config(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[service]\ndeadline_ms = -1\n")
    r = install("--dry-run", "--instance", "x", "--config", str(cfg))
    assert r.returncode == 2 and "deadline_ms" in r.stderr and "does not validate" in r.stderr
