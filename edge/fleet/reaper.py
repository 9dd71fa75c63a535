"""Nothing of an embedded Ray instance outlives the batch driver that started it, even after SIGKILL.

Ray's own processes (GCS, raylet, its agents, the workers) are started through several layers and
some of them ignore SIGTERM, so killing the driver used to leave them running with its private
folder. Every process of the instance inherits the driver's environment, so it carries the marker
variable INSTANCE_VAR naming that folder. A reaper process (`python -m edge.fleet.reaper FOLDER
DRIVER_PID`), started before Ray, waits on a pipe from the driver: the kernel closes it when the
driver ends in any way, and the reaper then kills every process of ours that carries the marker and
removes the folder. The driver holds an flock on FOLDER/owner.lock while it lives, so the next run
can tell a stale folder (its owner dead: lock free) from a running one and removes it, with any
process still marked with it, should the reaper have been killed too.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

INSTANCE_VAR = "EDGE_BATCH_INSTANCE"
PREFIX = "edge-batch-"
LOCK_NAME = "owner.lock"
UNLOCKED_GRACE_S = 60.0  # a folder without a lock file this young may be a run that is just starting


def marked(value: str) -> list[int]:
    """Process ids of this user's processes whose environment holds INSTANCE_VAR=value."""
    needle = f"{INSTANCE_VAR}={value}".encode()
    uid = os.getuid()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # gone, or not ours to read
            continue
        if needle in env:
            pids.append(int(entry.name))
    return pids


def kill_marked(value: str, exclude: set[int]) -> list[int]:
    """SIGKILL every process marked with `value` but `exclude`; the ids that were signalled."""
    killed = []
    for pid in marked(value):
        if pid in exclude:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def hold(folder: Path):
    """Take the owner lock of `folder` for as long as the returned file stays open (this process's life)."""
    f = open(folder / LOCK_NAME, "w")  # noqa: SIM115 - held open on purpose
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return f


def remove_stale(root: str | os.PathLike) -> list[Path]:
    """Remove the private folders under `root` whose driver is dead (and kill what is still marked with them)."""
    removed = []
    for folder in Path(root).glob(f"{PREFIX}*"):
        if not folder.is_dir() or folder.is_symlink() or folder.stat().st_uid != os.getuid():
            continue
        lock = folder / LOCK_NAME
        try:
            with open(lock, "r+") as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its driver is alive
                _clear(folder)
        except FileNotFoundError:  # no lock: a driver of before the lock existed, or one just starting
            if time.time() - folder.stat().st_mtime < UNLOCKED_GRACE_S:
                continue
            _clear(folder)
        except OSError:
            continue
        removed.append(folder)
    return removed


def _clear(folder: Path) -> None:
    kill_marked(str(folder), exclude={os.getpid()})
    shutil.rmtree(folder, ignore_errors=True)


def start(folder: Path) -> subprocess.Popen:
    """The reaper of `folder`, watching this process; close its stdin when done (or just end)."""
    env = {k: v for k, v in os.environ.items() if k != INSTANCE_VAR}
    return subprocess.Popen([sys.executable, "-m", "edge.fleet.reaper", str(folder), str(os.getpid())],
                            stdin=subprocess.PIPE, env=env, start_new_session=True, close_fds=True)


def main(argv: list[str]) -> int:
    folder, driver = Path(argv[0]), int(argv[1])
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # a Ctrl-C or a group's SIGTERM must not end the cleanup
    sys.stdin.buffer.read()  # EOF: the driver closed the pipe or is gone
    # the driver may be alive (a normal end): it has the marker too, and is never killed here
    for _ in range(3):  # a process starting while we kill shows up on the next pass
        if not kill_marked(str(folder), exclude={os.getpid(), driver}):
            break
        time.sleep(0.2)
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
