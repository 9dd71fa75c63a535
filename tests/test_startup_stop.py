"""SIGTERM while the service is still loading models: it stops at the next model load or warm-up run,
never says READY, and exits with one line and 128 + the signal (the real `edge-anon run`, a real signal)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

from conftest import MODELS, ROOT, VIDEO, need

CAMERAS = 16  # each with a [cameras.detect] of its own: one more model load and two warm-up runs apiece


def _config(path, source) -> str:
    body = ['[output]\nkind = "folder"\ndir = "{}"\n'.format(path.parent / "out")]
    for i in range(CAMERAS):
        body.append(f'[[cameras]]\nid = "cam{i}"\nkind = "replay"\nsource = "{source}"\n'
                    f'[cameras.detect.face]\nscore_threshold = {0.3 + i * 0.01:.2f}\n')
    path.write_text("\n".join(body))
    return str(path)


def test_sigterm_during_startup_stops_between_model_loads(tmp_path):
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(0.5)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGE_MODEL_PATH": str(MODELS), "HOME": str(tmp_path),
           "NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
    cfg = _config(tmp_path / "many.toml", need(VIDEO / "vtest_pets2009_480x360.avi"))
    proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "-c", cfg], env=env, stderr=subprocess.PIPE,
                            text=True)
    lines: list[str] = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if " sha256=" in line:  # the first session is loaded: start-up is under way
                proc.send_signal(signal.SIGTERM)
                break
        rest = threading.Thread(target=lambda: lines.extend(proc.stderr))
        rest.start()
        rc = proc.wait(timeout=120)  # a hang guard only: what is checked is where it stopped
        rest.join()
        datagrams = []
        try:
            while True:
                datagrams.append(notify.recv(65536).decode())
        except socket.timeout:
            pass
    finally:
        notify.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    loads = sum(" sha256=" in line for line in lines)
    assert rc == 128 + signal.SIGTERM, "".join(lines)
    assert 1 <= loads < CAMERAS  # stopped long before every camera's detector was loaded
    refusals = [line for line in lines if "refusing to start" in line]
    assert len(refusals) == 1 and "stopped during start-up" in refusals[0], "".join(lines)
    assert "Traceback" not in "".join(lines)
    assert not any(d.startswith("READY=1") or "\nREADY=1" in d for d in datagrams)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
