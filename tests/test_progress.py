"""edge.progress: a line a person can follow on a terminal, nothing at all in a log."""
from __future__ import annotations

import io
import os
import pty

import pytest

from edge.progress import Progress, format_duration, track


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (42.4, "42s"), (187, "3m07s"), (3720, "1h02m"),
                                           (float("nan"), "?"), (float("inf"), "?"), (-1, "?")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_nothing_is_written_when_the_stream_is_not_a_terminal():
    log = io.StringIO()
    bar = Progress(10, log)
    for i in range(10):
        bar.update(i + 1, dropped=i // 3)
    bar.close()
    assert bar.enabled is False and log.getvalue() == ""


def test_a_real_terminal_gets_the_line_redrawn_in_place_and_ended():
    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as tty:
            bar = Progress(4, tty, label="replay")
            assert bar.enabled is True
            bar.update(1, force=True)
            bar.close()
        screen = ""
        while not screen.endswith("\n"):  # the terminal hands the bytes over in as many reads as it likes
            screen += os.read(master, 4096).decode()
    finally:
        os.close(master)
        os.close(slave)
    assert screen.startswith("\rreplay: 1/4 frames, ") and screen.endswith("\r\n")
    assert "\rreplay: 1/4 frames, " in screen and screen.count("replay: ") == 2


@pytest.mark.parametrize("total, done, dropped, elapsed, line", [
    (100, 25, 3, 5.0, "eval: 25/100 frames, 5.0/s, dropped 3, left 15s"),
    (100, 100, 0, 10.0, "eval: 100/100 frames, 10.0/s, dropped 0, left 0s"),
    (100, 0, 0, 1.0, "eval: 0/100 frames, 0.0/s, dropped 0, left ?"),
    (None, 30, 30, 3.0, "eval: 30 frames, 10.0/s, dropped 30"),  # a loop: no total, no time left
])
def test_line_says_done_total_rate_dropped_and_time_left(total, done, dropped, elapsed, line):
    clock = Clock()
    bar = Progress(total, io.StringIO(), label="eval", enabled=True, clock=clock)
    clock.t += elapsed
    bar.update(done, dropped)
    assert bar.line() == line


def test_redraws_are_rate_limited_but_close_draws_the_final_counts():
    clock, out = Clock(), io.StringIO()
    bar = Progress(1000, out, enabled=True, clock=clock)
    for i in range(1000):
        bar.update(i + 1)  # the clock stands still: one draw, then none until REDRAW_S has passed
    assert out.getvalue().count("\r") == 1
    bar.close()
    assert out.getvalue().endswith("1000/1000 frames, 0.0/s, dropped 0, left 0s\n")


def test_track_counts_what_the_loop_consumed_and_does_not_claim_drops():
    out = io.StringIO()
    out.isatty = lambda: True  # a terminal as far as the progress line can tell
    assert list(track([1, 2, 3], "gate", stream=out)) == [1, 2, 3]
    final = out.getvalue().rsplit("\r", 1)[1]
    assert final.startswith("gate: 3/3 images, ") and "dropped" not in final and final.endswith("\n")


def test_negative_total_is_refused():
    with pytest.raises(ValueError, match="total"):
        Progress(-1, io.StringIO())


def _eval_on_a_terminal(*args: str) -> tuple[int, str]:
    import subprocess
    import sys

    from conftest import ROOT

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "edge", "eval", *args], stdout=slave, stderr=slave,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the other side closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=120), b"".join(chunks).decode()


def test_eval_draws_its_progress_on_a_terminal_only():
    import subprocess
    import sys

    from conftest import ROOT, WIDER, need

    need(WIDER)
    rc, screen = _eval_on_a_terminal("--limit", "2")
    assert rc == 0, screen
    assert "\reval faces: 2/2 images, " in screen and "left 0s" in screen
    piped = subprocess.run([sys.executable, "-m", "edge", "eval", "--limit", "2"], capture_output=True, text=True,
                           timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert piped.returncode == 0, piped.stderr
    assert "eval faces:" not in piped.stderr and "\r" not in piped.stderr
