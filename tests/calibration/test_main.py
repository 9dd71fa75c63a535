"""python -m calibration on bad input: one line naming the problem, exit status 2, nothing written."""
from __future__ import annotations

import pytest

from calibration.__main__ import main
from conftest import VIDEO, need

STILLS = VIDEO / "udacity_test_images"


@pytest.mark.parametrize("args, message", [
    (["--source", "/missing.mp4"], "--source /missing.mp4: no such file or folder"),
    (["--source", __file__], "not an image, an image folder or a video"),
    (["--source", str(STILLS), "--every", "0"], "--every 0: must be at least 1"),
    (["--source", str(STILLS), "--per-source", "-1"], "--per-source -1: must be at least 1"),
    (["--source", str(STILLS), "--timing-runs", "0"], "--timing-runs 0: must be at least 1"),
    (["--source", str(STILLS), "--eval-limit", "0"], "--eval-limit 0: must be at least 1"),
    (["--source", str(STILLS), "--model", "nosuch"], "unknown model 'nosuch'"),
    (["--source", str(STILLS), "-c", "/missing.toml"], "/missing.toml: no such config file"),
    (["--source", str(VIDEO), "--per-source", "1"], "no calibration frames"),
    (["--source", str(STILLS), "--per-source", "1", "--eval-data", "/missing"], "/missing"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    need(STILLS)
    out = tmp_path / "out"
    assert main([*args, "--no-gate" if "--eval-data" not in args else "--timing-runs=1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("calibration: ") and message in err[-1], err
    assert "Traceback" not in "\n".join(err)
    assert not out.exists() or [p.name for p in out.iterdir()] == []


def test_unwritable_output_is_refused_before_any_model_loads(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["--source", str(need(STILLS)), "--no-gate", "--out", str(blocker / "out")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"calibration: --out {blocker / 'out'}: cannot create")


def test_an_onnxruntime_refusal_is_one_line(tmp_path, capsys, monkeypatch):
    """onnxruntime's own multi-line errors (here: real bytes it cannot parse as a model) end as one line."""
    import onnxruntime as ort

    import calibration.__main__ as calib

    monkeypatch.setattr(calib, "time_model", lambda *a, **k: ort.InferenceSession(b"not a model"))
    assert main(["--source", str(need(STILLS)), "--per-source", "1", "--no-gate", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("calibration: onnxruntime: ") and "Traceback" not in "\n".join(err)


def test_the_plate_model_calibrates_with_the_input_dims_the_runtime_gives_it(tmp_path, capsys):
    """LPD-YuNet is stored with a fixed 240x320 input; calibrated on full frames it must be run as the runtime
    runs it (dims made dynamic), not refused by onnxruntime."""
    out = tmp_path / "out"
    assert main(["--source", str(need(STILLS)), "--per-source", "2", "--model", "lpd_yunet", "--no-gate",
                 "--timing-runs", "1", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["lpd_yunet_int8_minmax.onnx", "lpd_yunet_int8_minmax.toml",
                                                     "lpd_yunet_int8_report.json"]


@pytest.mark.parametrize("sig, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_mid_run_is_one_line_and_leaves_nothing_half_written(tmp_path, sig, code):
    """Ctrl-C (or SIGTERM) while it quantizes: exit 128 + the signal, one line, no traceback, no partial
    model in --out, no temporary folder left."""
    import os
    import signal
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from conftest import ROOT

    private = Path(tempfile.mkdtemp(prefix="calib-test-"))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "calibration", "--source", str(need(STILLS)), "--method", "all",
                             "--no-gate", "--timing-runs", "50", "--out", str(out)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "TMPDIR": str(private), "PYTHONUNBUFFERED": "1",
                                 "PYTHONPATH": str(ROOT)})
    for line in proc.stdout:  # the frames are read: quantizing comes next
        if line.startswith("calibration set:"):
            break
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == code, err
    assert "Traceback" not in err and lines[-1].startswith(f"calibration: interrupted ({sig})")
    assert not list(out.glob(".*partial*"))
    left = list(private.iterdir())
    private.rmdir()
    assert left == []
