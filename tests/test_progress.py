"""edge.progress: a line a person can follow on a real terminal (tqdm), nothing at all in a log."""
from __future__ import annotations

import fcntl
import io
import logging
import os
import pty
import struct
import termios
import threading

import pytest

from edge.progress import LogHandler, Progress, track


def on_terminal(draw, size: tuple[int, int] | None = (100, 24)) -> str:
    """What `draw(stream)` puts on a real pty of `size` (columns, lines; None: one that says 0 x 0)."""
    master, slave = pty.openpty()
    if size is not None:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
    chunks: list[bytes] = []

    def read() -> None:  # on a thread: a pty's buffer is small, and a writer that fills it blocks
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the other side closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        with os.fdopen(os.dup(slave), "w") as tty:
            draw(tty)
    finally:
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
    return b"".join(chunks).decode()


def last_line(screen: str) -> str:
    """The line as it stands at the end: what follows the last carriage return of the last line."""
    return screen.rstrip("\r\n").rsplit("\r", 1)[-1]


def test_nothing_is_written_when_the_stream_is_not_a_terminal():
    log = io.StringIO()
    bar = Progress(10, log)
    for i in range(10):
        bar.label = f"batch {i}/10 files"
        bar.update(i + 1, dropped=i // 3, force=i == 9)
    bar.close()
    assert bar.enabled is False and log.getvalue() == "" and bar.label == "batch 9/10 files"


@pytest.mark.parametrize("size", [(100, 24), (60, 10), None])
def test_a_real_terminal_gets_the_line_redrawn_in_place_and_ended(size):
    def draw(tty):
        bar = Progress(4, tty, label="replay")
        assert bar.enabled is True
        bar.update(1, force=True)
        bar.update(4, dropped=1)
        bar.close()

    screen = on_terminal(draw, size)
    assert screen.startswith("\rreplay: ") and screen.endswith("\r\n")
    final = last_line(screen)
    # the counts and drops first: a narrow terminal cuts only the times and rate at the end
    assert final.startswith("replay: 100%|") and "| 4/4, dropped=1 [" in final
    assert len(final) <= (size or (100,))[0]  # fits the terminal, or the fixed width where it says none


@pytest.mark.parametrize("total, done, dropped, counts_drops, parts", [
    (100, 25, 3, True, ["eval:  25%|", "| 25/100, dropped=3 ["]),
    (100, 100, 0, True, ["eval: 100%|", "| 100/100, dropped=0 ["]),
    (None, 30, 30, True, ["eval: 30 frame, dropped=30 ["]),  # a loop: no total, no bar, no time left
    (10, 10, 0, False, ["eval: 100%|", "| 10/10 ["]),  # the caller cannot see drops: the line claims none
])
def test_line_says_done_total_rate_and_dropped(total, done, dropped, counts_drops, parts):
    def draw(tty):
        bar = Progress(total, tty, label="eval", counts_drops=counts_drops)
        bar.update(done, dropped, force=True)
        bar.close()

    final = last_line(on_terminal(draw))
    assert all(p in final for p in parts), final
    assert ("dropped" in final) == counts_drops
    assert ("<" in final) == (total is not None)  # time left only with a total


def test_track_counts_what_the_loop_consumed_and_does_not_claim_drops():
    seen = []

    def draw(tty):
        seen.extend(track([1, 2, 3], "gate", stream=tty))

    final = last_line(on_terminal(draw))
    assert seen == [1, 2, 3]
    assert final.startswith("gate: 100%|") and "| 3/3 [" in final and final.endswith(("image/s]", "s/image]"))
    assert "dropped" not in final


def test_a_log_record_goes_above_the_line_and_the_line_comes_back():
    logger = logging.getLogger("edge.test_progress")

    def draw(tty):
        handler = LogHandler(tty)
        logger.addHandler(handler)
        try:
            bar = Progress(5, tty, label="replay")
            bar.update(2, force=True)
            logger.warning("pacing: slow")
            bar.update(5, force=True)
            bar.close()
        finally:
            logger.removeHandler(handler)

    screen = on_terminal(draw)
    lines = screen.split("\r\n")
    warning = next(i for i, line in enumerate(lines) if "pacing: slow" in line)
    # the warning has a line of its own (the bar's text cleared from it), and the bar is drawn again after it
    assert "replay:" not in lines[warning].split("pacing: slow")[0].rsplit("\r", 1)[-1]
    assert "| 5/5, dropped=0 [" in last_line("\r\n".join(lines[warning + 1:]))


@pytest.mark.parametrize("terminal", [True, False])
def test_write_puts_a_line_above_the_progress_line_or_plainly_in_a_log(terminal):
    def draw(stream):
        bar = Progress(2, stream, label="batch", enabled=terminal)
        bar.update(1, force=True)
        bar.write("batch: drive: complete")
        bar.update(2)
        bar.close()

    if terminal:
        lines = on_terminal(draw).split("\r\n")
        done = next(i for i, line in enumerate(lines) if line.endswith("batch: drive: complete"))
        assert "| 2/2, dropped=0 [" in last_line("\r\n".join(lines[done + 1:]))  # the bar goes on below it
    else:
        log = io.StringIO()
        draw(log)
        assert log.getvalue() == "batch: drive: complete\n"


def test_negative_total_is_refused():
    with pytest.raises(ValueError, match="total"):
        Progress(-1, io.StringIO())


def _eval_on_a_terminal(*args: str) -> tuple[int, str]:
    import subprocess
    import sys

    from conftest import ROOT

    out: dict = {}

    def draw(tty):
        proc = subprocess.Popen([sys.executable, "-m", "edge", "eval", *args], stdout=tty, stderr=tty,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        out["rc"] = proc.wait(timeout=120)

    screen = on_terminal(draw)
    return out["rc"], screen


def test_eval_draws_its_progress_on_a_terminal_only():
    import subprocess
    import sys

    from conftest import ROOT, WIDER, need

    need(WIDER)
    rc, screen = _eval_on_a_terminal("--limit", "2")
    assert rc == 0, screen
    assert "\reval faces: 100%|" in screen and "| 2/2 [" in screen
    assert " INFO " not in screen  # a terminal gets the progress and the tables, not the log
    piped = subprocess.run([sys.executable, "-m", "edge", "eval", "--limit", "2"], capture_output=True, text=True,
                           timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert piped.returncode == 0, piped.stderr
    assert "eval faces:" not in piped.stderr and "\r" not in piped.stderr
