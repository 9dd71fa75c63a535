"""Process hardening so that frame pixels never reach disk through the kernel: no core dumps, no swap.

A crash dump or a swapped-out page holds whatever frame buffers the process had, masked or not.
Both are switched off from inside the process, so the guarantee does not depend on the unit
file alone (``LimitCORE=0`` there as well), and a manual run gets it too.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import resource
import sys
from dataclasses import dataclass

log = logging.getLogger(__name__)

PR_SET_DUMPABLE = 4
MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4
CAP_IPC_LOCK = 14


class HardeningError(RuntimeError):
    """Core dumps could not be disabled; the process must not handle frames."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def disable_core_dumps() -> None:
    """RLIMIT_CORE=0 and not dumpable (which also keeps other users' ptrace and /proc/PID/mem out)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    libc = _libc()
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise HardeningError(f"prctl(PR_SET_DUMPABLE, 0) failed: {os.strerror(ctypes.get_errno())}")


def has_capability(cap: int, status_path: str = "/proc/self/status") -> bool:
    try:
        with open(status_path, encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> cap & 1)
    except OSError:
        pass
    return False


@dataclass(frozen=True)
class MlockResult:
    locked: bool
    reason: str = ""


def lock_memory() -> MlockResult:
    """mlockall(CURRENT | FUTURE | ONFAULT); refused (and logged) rather than half-done.

    With MCL_FUTURE and a finite RLIMIT_MEMLOCK every later allocation past the limit would fail,
    so without CAP_IPC_LOCK we only lock when the limit is unlimited. MCL_ONFAULT locks pages as
    they are touched: GPU runtimes reserve huge address ranges that must not be populated up front.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft != resource.RLIM_INFINITY and not has_capability(CAP_IPC_LOCK):
        reason = (f"RLIMIT_MEMLOCK is {soft} bytes and the process lacks CAP_IPC_LOCK "
                  "(set LimitMEMLOCK=infinity in the unit)")
        log.warning("mlockall refused: %s; frame buffers may be swapped out", reason)
        return MlockResult(False, reason)
    libc = _libc()
    rc = libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)
    if rc != 0 and ctypes.get_errno() == errno.EINVAL:  # kernels before 4.4 lack MCL_ONFAULT
        rc = libc.mlockall(MCL_CURRENT | MCL_FUTURE)
    if rc != 0:
        reason = f"mlockall: {os.strerror(ctypes.get_errno())}"
        log.warning("mlockall refused: %s; frame buffers may be swapped out", reason)
        return MlockResult(False, reason)
    log.info("memory locked (mlockall): frame buffers are never swapped out")
    return MlockResult(True)


def disable_runtime_telemetry(env=os.environ) -> bool:
    """Keep onnxruntime from writing a device id and an event database under ~/.cache (and sending them).

    onnxruntime reads ORT_DISABLE_TELEMETRY once, when it is imported, so this must run first;
    returns False (and warns) when it is too late. The unit file sets the variable as well.
    """
    env.setdefault("ORT_DISABLE_TELEMETRY", "1")
    if "onnxruntime" in sys.modules:
        log.warning("onnxruntime was imported before its telemetry could be switched off")
        return False
    return True


def harden_process(mlock: bool = False) -> MlockResult | None:
    """Disable core dumps (HardeningError if impossible) and optionally lock memory."""
    disable_core_dumps()
    log.info("core dumps disabled (RLIMIT_CORE=0, not dumpable)")
    return lock_memory() if mlock else None


def harden_tool() -> None:
    """The service's hardening for a tool that runs models or decodes frames (eval, calibration, scripts).

    A crash of a tool holds raw frames just as the service's would, so core dumps go off first
    (HardeningError if impossible); onnxruntime's telemetry too, which only works before onnxruntime
    is imported: tools that import it at module level switch it off there as well. A tool that cannot
    be hardened does not run: one line and exit status 2, as for any other refusal.
    """
    if os.environ.get("ORT_DISABLE_TELEMETRY") != "1":  # else already off, from before the import
        disable_runtime_telemetry()
    try:
        disable_core_dumps()
    except HardeningError as e:
        print(f"refusing to run: {e}", file=sys.stderr)
        raise SystemExit(2) from None
