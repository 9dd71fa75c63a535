"""Every tool that decodes frames or runs a model writes nothing but its named outputs and runs hardened.

Each command runs in a child process under sys.addaudithook (every Python-level open for writing,
rename and temp folder is recorded), with a HOME, TMPDIR and working folder of its own that must be
empty afterwards (native code, onnxruntime's telemetry included, writes without audit events), and
reports whether the kernel would have dumped its core: RLIMIT_CORE and the dumpable flag, before
the tool ran and after.
"""
from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import pytest

from conftest import MODELS, ROOT, VIDEO, WIDER, need

AUDITED_TOOL = textwrap.dedent("""
    import ctypes, ctypes.util, json, os, resource, runpy, sys
    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    writes = []

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int):
                return
            if (mode and any(c in mode for c in "wax+")) or (mode is None and flags & WRITE_FLAGS):
                writes.append(os.path.abspath(os.fsdecode(path)))
        elif event in ("os.rename", "os.replace", "shutil.copyfile", "shutil.move", "os.link", "os.symlink"):
            writes.append(os.path.abspath(os.fsdecode(args[1])))

    def kernel_view():
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return {"dumpable": libc.prctl(3, 0, 0, 0, 0) != 0, "core": list(resource.getrlimit(resource.RLIMIT_CORE))}

    before = kernel_view()
    kind, target, *argv = sys.argv[1:]
    sys.argv = [target, *argv]
    if kind == "script":
        sys.path.insert(0, os.path.dirname(target))
    sys.addaudithook(hook)
    try:
        if kind == "script":
            runpy.run_path(target, run_name="__main__")
        else:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        rc = 0
    except SystemExit as e:
        rc = e.code
    print(json.dumps({"rc": rc, "writes": writes, "before": before, "after": kernel_view()}))
""")


def _core_limit_allowed() -> None:
    """In the child, before it runs: core dumps as allowed as this machine lets them be."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))


@pytest.fixture(scope="module")
def stills(tmp_path_factory) -> Path:
    """Two real dashcam stills, shrunk: a quick calibration and profiling feed."""
    folder = tmp_path_factory.mktemp("stills")
    for still in sorted(need(VIDEO / "udacity_test_images").glob("*.jpg"))[:2]:
        cv2.imwrite(str(folder / f"{still.stem}.png"), cv2.resize(cv2.imread(str(still)), (320, 180)))
    return folder


# (id, how it runs, target, arguments; {out} is the one folder it may write to, {stills} a small image feed)
COMMANDS = [
    ("eval", "module", "edge", ["eval", "--limit", "2", "--json", "{out}/r.json"]),
    ("eval_clips", "module", "edge", ["eval", "--clips", "--only", "vtest_pets2009_480x360", "--limit", "2",
                                      "--json", "{out}/c.json"]),
    ("eval_report", "module", "edge", ["eval", "--all", "--only", "berlin_dev", "--only", "vtest_pets2009_480x360",
                                       "--limit", "1", "--report", "{out}/report"]),
    ("calibration", "module", "calibration",
     ["--source", "{stills}", "--method", "MinMax", "--no-gate", "--timing-runs", "1", "--out", "{out}"]),
    ("profile_latency", "script", "scripts/profile_latency.py",
     ["--feed", "{stills}", "--frames", "2", "--set", "detect.plate.enabled=false", "--json", "{out}/p.json",
      "--png", "{out}/p.png"]),
    ("bench_plates", "script", "scripts/bench_plates.py",
     ["--limit", "1", "--skip-timing", "--json", "{out}/b.json"]),
    ("tune_thresholds", "script", "scripts/tune_thresholds.py",
     ["--limit", "2", "--grid", "0.5", "0.7", "--json", "{out}/t.json"]),
]


@pytest.mark.parametrize("kind, target, args", [c[1:] for c in COMMANDS], ids=[c[0] for c in COMMANDS])
def test_tool_writes_only_its_outputs_and_cannot_dump_core(tmp_path, stills, kind, target, args):
    need(WIDER / "gt_xyxy.txt")
    out, home, tmp, cwd = (tmp_path / d for d in ("out", "home", "tmp", "cwd"))
    for d in (out, home, tmp, cwd):
        d.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(home), "TMPDIR": str(tmp),
           "XDG_CACHE_HOME": str(home / ".cache"), "EDGE_MODEL_PATH": str(MODELS)}
    env.pop("ORT_DISABLE_TELEMETRY", None)  # the tool must switch it off itself
    target = str(ROOT / target) if kind == "script" else target
    argv = [a.format(out=out, stills=stills) for a in args]
    r = subprocess.run([sys.executable, "-c", AUDITED_TOOL, kind, target, *argv], capture_output=True, text=True,
                       timeout=300, cwd=cwd, env=env, preexec_fn=_core_limit_allowed)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["rc"] in (0, None), r.stderr[-3000:]
    assert result["before"]["dumpable"] is True  # so the check below sees the tool's own doing
    assert result["after"] == {"dumpable": False, "core": [0, 0]}
    # temp files are model copies the quantizer prepares (no pixels) and the 4-byte file with which
    # tempfile.gettempdir tests that the folder is writable; nothing else may leave the out folder
    model_temps = (".onnx", ".onnx.data", ".data")
    outside = [w for w in result["writes"] if not (w.startswith(f"{out}/") or w == os.devnull
                                                   or (w.startswith(f"{tmp}/") and w.endswith(model_temps))
                                                   or re.fullmatch(rf"{re.escape(str(tmp))}/[a-z0-9_]{{8}}", w))]
    assert outside == []
    assert not [w for w in result["writes"] if w.endswith((".npy", ".npz", ".png", ".jpg"))
                and not w.startswith(f"{out}/")]
    assert any(w.startswith(f"{out}/") for w in result["writes"])  # the hook saw the tool's own output
    for d in (home, tmp, cwd):
        assert sorted(map(str, d.rglob("*"))) == [], d
