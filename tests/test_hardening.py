"""Process hardening, checked in a fresh interpreter so the test process itself stays dumpable."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge.runtime import hardening

ROOT = Path(__file__).resolve().parents[1]


# What the kernel says about the process, asked the same way the hardening sets it; defined in every child.
IS_DUMPABLE = """
import ctypes, ctypes.util
PR_GET_DUMPABLE = 3
def is_dumpable():
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0
"""


def in_child(code: str) -> dict:
    """Run `code` in a new interpreter; it prints one JSON object as its last stdout line."""
    r = subprocess.run([sys.executable, "-c", IS_DUMPABLE + textwrap.dedent(code)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    return {**json.loads(r.stdout.strip().splitlines()[-1]), "stderr": r.stderr}


def test_core_dumps_off_and_not_dumpable_after_hardening():
    got = in_child("""
        import json, resource
        from edge.runtime import hardening
        before = is_dumpable(), resource.getrlimit(resource.RLIMIT_CORE)
        result = hardening.harden_process(mlock=False)
        limits = [l for l in open("/proc/self/limits") if l.startswith("Max core file size")][0].split()
        print(json.dumps({"before_dumpable": before[0], "dumpable": is_dumpable(),
                          "core": resource.getrlimit(resource.RLIMIT_CORE), "proc_limits": limits[4:6],
                          "mlock": result is None}))
    """)
    assert got["before_dumpable"] is True  # the check below is meaningful: it changed
    assert got["dumpable"] is False
    assert got["core"] == [0, 0]
    assert got["proc_limits"] == ["0", "0"]  # what the kernel itself reports for the process
    assert got["mlock"] is True  # mlock not asked for: nothing attempted, nothing returned


def test_mlock_refused_by_the_memory_limit_is_logged_not_fatal():
    got = in_child("""
        import json, logging, resource
        from edge.runtime import hardening
        logging.basicConfig(level=logging.INFO)
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (64 * 1024, 64 * 1024))
        hardening.has_capability = lambda cap, status_path="": False  # as an unprivileged service user
        result = hardening.harden_process(mlock=True)
        print(json.dumps({"locked": result.locked, "reason": result.reason, "dumpable": is_dumpable()}))
    """)
    assert got["locked"] is False
    assert "RLIMIT_MEMLOCK" in got["reason"] and "LimitMEMLOCK=infinity" in got["reason"]
    assert "mlockall refused" in got["stderr"]
    assert got["dumpable"] is False  # the refusal did not skip the part that is mandatory


@pytest.mark.skipif(not hardening.has_capability(hardening.CAP_IPC_LOCK), reason="needs CAP_IPC_LOCK")
def test_mlock_with_the_capability_locks_memory():
    got = in_child("""
        import json
        from edge.runtime import hardening
        result = hardening.lock_memory()
        locked_kb = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmLck:")][0]
        print(json.dumps({"locked": result.locked, "vmlck_kb": locked_kb}))
    """)
    assert got["locked"] is True
    assert got["vmlck_kb"] > 0  # the kernel counts pages as locked


@pytest.mark.parametrize("content, cap, expected", [
    ("CapEff:\t0000000000004000\n", hardening.CAP_IPC_LOCK, True),
    ("CapEff:\t0000000000000000\n", hardening.CAP_IPC_LOCK, False),
    ("CapEff:\t000001fffeffbfff\n", hardening.CAP_IPC_LOCK, False),
    ("Name:\tpython\n", hardening.CAP_IPC_LOCK, False),
])
def test_has_capability_reads_the_effective_set(tmp_path, content, cap, expected):
    status = tmp_path / "status"
    status.write_text(content)
    assert hardening.has_capability(cap, str(status)) is expected


def test_missing_status_file_means_no_capability(tmp_path):
    assert hardening.has_capability(hardening.CAP_IPC_LOCK, str(tmp_path / "absent")) is False


def test_runtime_telemetry_is_switched_off_before_onnxruntime_loads():
    got = in_child("""
        import json, os, sys
        os.environ.pop("ORT_DISABLE_TELEMETRY", None)
        from edge.runtime import hardening
        first = hardening.disable_runtime_telemetry()
        import onnxruntime
        late = hardening.disable_runtime_telemetry()
        print(json.dumps({"first": first, "late": late, "env": os.environ.get("ORT_DISABLE_TELEMETRY")}))
    """)
    assert got == {"first": True, "late": False, "env": "1", "stderr": got["stderr"]}
