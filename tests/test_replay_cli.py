"""`edge-anon replay` as a bench tester meets it: real processes, real files, real sockets, a real terminal.

Progress only on a terminal, one summary line, exit codes that tell complete / interrupted / failed /
bad input apart, a stream that waits for its subscribers, an honest word when the pace cannot be kept,
and every bad flag refused in one line that names it.
"""
from __future__ import annotations

import os
import pty
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import ROOT, VIDEO, WIDER, need
from edge import cli
from edge.subscribe import Subscriber

CLIP = "udacity_CarND-Vehicle-Detection_test_video.mp4"  # 1280x720, 38 frames
PETS = "vtest_pets2009_480x360.avi"
FACES = ["7_Cheering_Cheering_7_118.jpg", "3_Riot_Riot_3_604.jpg", "0_Parade_Parade_0_102.jpg"]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def edge(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "edge", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env())


class Running:
    """An `edge-anon` process whose stderr is read line by line on a thread (so waiting for a line never blocks)."""

    def __init__(self, *args) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "edge", *map(str, args)], env=env(),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stderr:
            self.lines.put(line)
        self.lines.put("")  # end of stream

    def wait_for(self, text: str, timeout: float = 120.0) -> str:
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no line with {text!r} in {timeout:g} s: {''.join(self.seen)}") from None
            if not line:
                raise AssertionError(f"ended before a line with {text!r}: {''.join(self.seen)}")
            self.seen.append(line)
            if text in line:
                return line

    def finish(self, timeout: float = 60.0) -> tuple[int, str]:
        rc = self.proc.wait(timeout=timeout)
        while (line := self.lines.get(timeout=timeout)) != "":
            self.seen.append(line)
        return rc, "".join(self.seen)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def faces_folder(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    for name in FACES:
        (src / name).write_bytes(need(WIDER / "images" / name).read_bytes())
    return src


def on_terminal(*args) -> tuple[int, str]:
    """Run `edge-anon ARGS` with stderr on a real pty (one that says no size, as a serial console); its screen."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "edge", *map(str, args)], env=env(),
                            stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the terminal's other side closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode()


@pytest.mark.parametrize("flags, log_on_screen, log_in_file", [
    ([], False, False),  # a terminal shows the progress line, the summary and warnings: no log
    (["--log-file", "LOG"], False, True),
    (["-v"], True, False),
    (["-v", "--log-file", "LOG"], True, True),
])
def test_a_terminal_gets_the_progress_line_and_the_summary_and_the_log_goes_where_asked(
        tmp_path, faces_folder, flags, log_on_screen, log_in_file):
    log = tmp_path / "replay.log"
    rc, screen = on_terminal("replay", faces_folder, "--output-dir", tmp_path / "out",
                             *[log if f == "LOG" else f for f in flags])
    assert rc == 0, screen
    assert "\rreplay: 100%|" in screen and f"| {len(FACES)}/{len(FACES)}, dropped=0 [" in screen
    progress_end = screen.rindex(f"| {len(FACES)}/{len(FACES)}, dropped=0 [")
    summary = screen.index("replay: complete, ")
    assert summary > progress_end  # the summary comes on its own line after the progress line
    assert f"complete, {len(FACES)} frames in, {len(FACES)} masked, 0 masked whole, 0 dropped" in screen
    # the periodic stats (a ~2,000-character JSON object) and the start-up lines are the log's
    assert ("stats {" in screen) == log_on_screen and (" INFO " in screen) == log_on_screen
    assert log.exists() == log_in_file
    if log_in_file:
        text = log.read_text()
        assert "stats {" in text and "ready: " in text and "replay: complete" not in text
        models = text.split("ready: ", 1)[1].splitlines()[0].split("models ", 1)[1].split(", ")
        assert len(models) == len(set(models))  # a model run in two stages is named once


def test_no_progress_when_stderr_is_not_a_terminal_but_the_summary_is_there(tmp_path, faces_folder):
    r = edge("replay", faces_folder, "--output-dir", tmp_path / "out", "--log-level", "warning")
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr and "frames, " not in r.stderr and "dropped=" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines == [f"replay: complete, {len(FACES)} frames in, {len(FACES)} masked, 0 masked whole, 0 dropped, "
                     f"0 not sent (output full or failing), output {tmp_path / 'out'}"]


def test_off_a_terminal_the_log_goes_to_stderr_unless_a_log_file_is_given(tmp_path, faces_folder):
    plain = edge("replay", faces_folder, "--output-dir", tmp_path / "a")
    with_file = edge("replay", faces_folder, "--output-dir", tmp_path / "b", "--log-file", tmp_path / "replay.log")
    assert plain.returncode == 0 and with_file.returncode == 0, plain.stderr + with_file.stderr
    assert "stats {" in plain.stderr  # a pipe, journald, CI: the log as it always was
    assert with_file.stderr.strip().splitlines() == [
        f"replay: complete, {len(FACES)} frames in, {len(FACES)} masked, 0 masked whole, 0 dropped, "
        f"0 not sent (output full or failing), output {tmp_path / 'b'}"]
    assert "stats {" in (tmp_path / "replay.log").read_text()


def truncated_video(tmp_path: Path) -> Path:
    """An MJPG AVI of real face photos cut in the middle of its frames (its header still counts them all)."""
    import cv2

    whole = tmp_path / "whole.avi"
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"MJPG"), 10, (416, 416))
    for name in FACES * 2:
        writer.write(cv2.resize(cv2.imread(str(need(WIDER / "images" / name))), (416, 416)))
    writer.release()
    data = whole.read_bytes()
    start, end = data.find(b"movi"), data.find(b"idx1")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: start + (end - start) * 5 // 8])
    return cut


def folder_with_garbage(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    (src / FACES[0]).write_bytes(need(WIDER / "images" / FACES[0]).read_bytes())
    (src / "broken.jpg").write_bytes(b"\xff\xd8" + os.urandom(2000))
    return src


def folder_of_two_sizes(tmp_path: Path) -> Path:
    import cv2

    src = tmp_path / "in"
    src.mkdir()
    for i, size in enumerate([(320, 240), (320, 240), (200, 150)]):
        cv2.imwrite(str(src / f"f{i}.png"), cv2.resize(cv2.imread(str(need(WIDER / "images" / FACES[i]))), size))
    return src


def folder_whose_output_name_is_taken(tmp_path: Path) -> Path:
    """Two photos; in the output folder the first one's PNG name is already a folder: it cannot be written."""
    src = tmp_path / "in"
    src.mkdir()
    for name in FACES[:2]:
        (src / name).write_bytes(need(WIDER / "images" / name).read_bytes())
    (tmp_path / "out" / f"{Path(FACES[0]).stem}.png").mkdir(parents=True)
    return src


def folder_of_names_that_make_one(tmp_path: Path) -> Path:
    """`a\nb.jpg` and `a_b.jpg`: distinct inputs whose file names become one once made safe."""
    src = tmp_path / "in"
    src.mkdir()
    for name, face in (("a\nb.jpg", FACES[0]), ("a_b.jpg", FACES[1])):
        (src / name).write_bytes(need(WIDER / "images" / face).read_bytes())
    return src


# (input, flags, exit code, what the summary says): a feed that ran to its end says whether all of it reached
# the output, and exits 3 when not (the epilog's table)
FEED_ENDINGS = [
    (truncated_video, ["--output-dir", "{out}"], 3, "replay: incomplete (input truncated (decoded "),
    (folder_with_garbage, ["--output-dir", "{out}"], 3, "replay: incomplete (1 unreadable image(s) skipped)"),
    (folder_with_garbage, ["--realtime", "--fps", "200", "--set", "service.deadline_ms=0.001", "--output-dir", "{out}"],
     3, "every frame dropped (1)"),
    (folder_whose_output_name_is_taken, ["--output-dir", "{out}"], 3,
     "replay: incomplete (1 frame(s) could not be written), 2 frames in, 2 masked, 0 masked whole, 0 dropped, "
     "1 not sent (output full or failing)"),
    (folder_of_names_that_make_one, ["--output-dir", "{out}"], 0,
     "replay: complete, 2 frames in, 2 masked, 0 masked whole, 0 dropped, 0 not sent (output full or failing), "
     "output {out}, 1 frame(s) renamed (NAME~2...: their file name was another frame's)"),
    (folder_of_two_sizes, ["--output", "{out}/v.mkv"], 0,
     "replay: complete, 3 frames in, 3 masked, 0 masked whole, 0 dropped, 0 not sent (output full or failing), "
     "output {out}/v.mkv and 1 more part(s) beside it (v.part2...)"),
]


@pytest.mark.parametrize("make, flags, code, summary", FEED_ENDINGS)
def test_a_feed_that_did_not_all_reach_the_output_exits_3_and_says_why(tmp_path, make, flags, summary, code):
    out = tmp_path / "out"
    r = edge("replay", make(tmp_path), "-c", ROOT / "configs" / "fast-faces-only.toml", "--log-level", "error",
             *[f.replace("{out}", str(out)) for f in flags])
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr
    assert summary.replace("{out}", str(out)) in r.stderr.splitlines()[-1]


def test_two_inputs_whose_names_make_one_file_name_both_reach_the_output(tmp_path):
    import cv2

    out = tmp_path / "out"
    src = folder_of_names_that_make_one(tmp_path)
    r = edge("replay", src, "-c", ROOT / "configs" / "fast-faces-only.toml", "--output-dir", out,
             "--mask", "solid")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.glob("*.png")) == ["a_b.png", "a_b~2.png"]
    records = [line for line in (out / "detections.jsonl").read_text().splitlines()]
    assert [r.split('"frame":"')[1].split('"')[0] for r in records] == ["a_b", "a_b~2"]
    for png, name in (("a_b.png", "a\nb.jpg"), ("a_b~2.png", "a_b.jpg")):
        assert cv2.imread(str(out / png)).shape == cv2.imread(str(src / name)).shape


def test_a_video_output_over_a_frame_size_change_keeps_every_frame_in_parts(tmp_path):
    from conftest import video_frames

    out = tmp_path / "out"
    r = edge("replay", folder_of_two_sizes(tmp_path), "-c", ROOT / "configs" / "fast-faces-only.toml",
             "--output", out / "v.mkv")
    assert r.returncode == 0, r.stderr
    assert [len(video_frames(out / n)) for n in ("v.mkv", "v.part2.mkv")] == [2, 1]
    assert video_frames(out / "v.part2.mkv")[0].shape == (150, 200, 3)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_replay_stopped_by_a_signal_exits_128_plus_it_with_the_summary(tmp_path, sig, code):
    run = Running("replay", need(VIDEO / PETS), "--realtime", "--loop", "--output-dir", tmp_path / "out")
    try:
        run.wait_for("ready:")
        run.proc.send_signal(sig)
        rc, err = run.finish()
    finally:
        run.kill()
    assert rc == code, err
    summary = [line for line in err.splitlines() if line.startswith("replay: ")]
    assert len(summary) == 1 and summary[0].startswith(f"replay: interrupted ({sig.name}), ")
    assert "Traceback" not in err


def test_a_late_subscriber_still_gets_frame_0_with_wait_subscribers(tmp_path):
    addr = f"ipc://{tmp_path / 'edge.sock'}"
    # no deadline: on a loaded machine the defaults miss the realtime one and frame 0 would come as a drop;
    # this test is about holding frames for a late subscriber
    run = Running("replay", need(VIDEO / PETS), "--realtime", "--bind", addr, "--wait-subscribers", "1",
                  "--wait-timeout", "120", "--set", "service.deadline_ms=0")
    sub = None
    try:
        run.wait_for("waiting for 1 subscriber(s)")  # bound and holding the frames back: the subscriber is late
        sub = Subscriber(addr)
        header, image = sub.recv(timeout_s=60.0)
        assert (header["seq"], header["name"], header["masked"]) == (0, "000000", True)
        assert image.shape == (360, 480, 3)
        run.proc.send_signal(signal.SIGTERM)
        rc, err = run.finish()
    finally:
        if sub is not None:
            sub.close()
        run.kill()
    assert rc == 143, err


def test_subscribers_that_do_not_come_in_time_get_nothing_and_exit_1(tmp_path):
    addr = f"ipc://{tmp_path / 'edge.sock'}"
    run = Running("replay", need(VIDEO / PETS), "--bind", addr, "--wait-subscribers", "2", "--wait-timeout", "3")
    sub = None
    try:
        run.wait_for("waiting for 2 subscriber(s)")
        sub = Subscriber(addr)  # one of the two: not enough
        rc, err = run.finish()
        assert sub.recv(timeout_s=0.5) is None
    finally:
        if sub is not None:
            sub.close()
        run.kill()
    assert rc == 1, err
    assert "of 2 subscriber(s) connected within 3 s (--wait-timeout); nothing was sent" in err


def test_a_pace_the_machine_cannot_keep_is_said_once_with_cost_deadline_and_options(tmp_path):
    out = tmp_path / "out"
    r = edge("replay", need(VIDEO / CLIP), "--realtime", "--output-dir", out, "--set", "service.deadline_ms=1",
             "--log-level", "warning")
    assert r.returncode == cli.EXIT_INCOMPLETE, r.stderr  # every frame dropped: nothing of the feed reached the output
    pacing = [line for line in r.stderr.splitlines() if "pacing:" in line]
    assert len(pacing) == 1, r.stderr
    assert "frames missed the 1 ms deadline (dropped); a frame costs" in pacing[0]
    decided, seen = (int(v) for v in pacing[0].split("pacing: ")[1].split(" frames")[0].split(" of "))
    assert decided == seen  # at 1 ms every decided frame is late, and a frame still in flight is not counted
    assert "a faster operating point" in pacing[0] and "--set service.deadline_ms=" in pacing[0]
    assert "without --realtime" in pacing[0]
    assert "replay: incomplete (every frame dropped (38)), 38 frames in, 0 masked, 0 masked whole, 38 dropped " \
           "(deadline 38)" in r.stderr
    assert not list(out.glob("*.png"))  # fail closed: a frame past its deadline never reaches disk


def test_a_pace_the_machine_keeps_says_nothing(tmp_path):
    # the cheap mode: a pace this 2-core machine keeps whatever else CI runs (the defaults do not, at 10 fps)
    r = edge("replay", need(VIDEO / PETS), "--realtime", "--output-dir", tmp_path / "out", "--log-level", "warning",
             "-c", ROOT / "configs" / "fast-faces-only.toml", "--set", "service.deadline_ms=60000")
    assert r.returncode == 0, r.stderr
    assert "pacing:" not in r.stderr and "replay: complete, " in r.stderr


@pytest.mark.parametrize("args, text", [
    (["--bind", "tcp://127.0.0.1:99999"], "--bind 'tcp://127.0.0.1:99999': port '99999' is not a number within 0-65535"),
    (["--bind", "udp://127.0.0.1:5555"], "--bind 'udp://127.0.0.1:5555': expected tcp://HOST:PORT or ipc://PATH"),
    (["--bind", "SOCK", "--output-dir", "OUT"], "--bind and --output-dir: choose one output"),
    (["--output-dir", "OUT", "--fps", "nan"], "--fps: must be a number > 0, got nan"),
    (["--output-dir", "OUT", "--fps", "0"], "--fps: must be a number > 0, got 0"),
    (["--output-dir", "OUT", "--fps", "fast"], "argument --fps: invalid float value: 'fast'"),
    (["--output-dir", "OUT", "--wait-subscribers", "1"], "--wait-subscribers: needs a ZeroMQ output (--bind ADDRESS)"),
    (["--bind", "SOCK", "--wait-subscribers", "0"], "--wait-subscribers: must be >= 1, got 0"),
    (["--output-dir", "OUT", "--wait-timeout", "5"], "--wait-timeout: only with --wait-subscribers N"),
    (["--bind", "SOCK", "--wait-subscribers", "1", "--wait-timeout", "inf"], "--wait-timeout: must be a number"),
    (["--bind", "SOCK", "--wait-subscribers", "1", "--wait-timeout", "-1"], "--wait-timeout: must be a number"),
    (["--output-dir", "OUT", "--camera-id", "front/left"], "--camera-id: letters, digits, '-' and '_' only"),
    (["--output-dir", "OUT", "--mask", "blurr"], "argument --mask: invalid choice: 'blurr'"),
    (["--output-dir", "OUT", "--set", "service.deadline_ms=-1"], "--set service.deadline_ms=-1: must be within 0.0..60000.0, got -1.0"),
    (["--output-dir", "OUT", "--set", "detect.face.score_threshold=2"],
     "--set detect.face.score_threshold=2: must be within 0.0..1.0, got 2.0"),
    (["--set", "output.bind=tcp://127.0.0.1:99999"], "--set output.bind=tcp://127.0.0.1:99999: 'tcp://127.0.0.1:99999': port"),
    (["--output-dir", "OUT", "--bogus"], "unrecognized arguments: --bogus"),
    (["--bind", "SOCK", "--annotate"], "--annotate: outlines the painted regions on PNG frames"),
    (["--output", "VIDEO", "--annotate"], "give --output-dir DIR instead of --output"),
    (["--annotate"], "for a person to look at; give --output-dir DIR"),
    (["--output-dir", "OUT", "--log-file", "/nonexistent/dir/replay.log"], "--log-file '/nonexistent/dir/replay.log': cannot write"),
])
def test_a_bad_flag_is_refused_in_one_line_that_names_it(tmp_path, args, text):
    places = {"SOCK": f"ipc://{tmp_path / 'edge.sock'}", "OUT": str(tmp_path / "out"),
              "VIDEO": str(tmp_path / "out" / "masked.mkv")}
    args = [places.get(a, a) for a in args]
    r = edge("replay", need(VIDEO / PETS), *args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], r.stderr
    assert lines[0].count(text.split(":")[0]) == 1  # the flag is named once, no repeated prefix
    assert not (tmp_path / "out").exists() and not (tmp_path / "edge.sock").exists()


@pytest.mark.parametrize("argv", [["--help"], ["replay", "--help"], ["batch", "--help"]])
def test_help_documents_the_exit_codes(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.build_parser().parse_args(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    for code, meaning in [("0", "complete"), ("1", "failed"), ("2", "bad input"), ("3", "incomplete"),
                          ("130", "SIGINT"), ("143", "SIGTERM")]:
        assert any(line.lstrip().startswith(code) and meaning in line for line in out.splitlines()), (code, out)


def test_annotate_outlines_the_painted_regions_on_the_masked_frames_and_keeps_the_records(tmp_path, faces_folder):
    import json

    import cv2
    import numpy as np

    for name, extra in (("plain", []), ("annotated", ["--annotate"])):
        r = edge("replay", faces_folder, "--output-dir", tmp_path / name, "--log-level", "warning", *extra)
        assert r.returncode == 0, r.stderr

    def records(name):
        rows = [json.loads(line) for line in (tmp_path / name / "detections.jsonl").read_text().splitlines()]
        return [{k: v for k, v in row.items() if k != "timings_ms"} for row in rows]

    assert records("plain") == records("annotated")
    for row in records("plain"):
        plain = cv2.imread(str(tmp_path / "plain" / f"{row['frame']}.png"))
        drawn = cv2.imread(str(tmp_path / "annotated" / f"{row['frame']}.png"))
        assert row["boxes"] and plain.shape == drawn.shape
        near = np.zeros((len(row["boxes"]), *plain.shape[:2]), bool)  # each region, its outline, its label tab
        for k, (x1, y1, x2, y2) in enumerate(row["boxes"]):  # (a tab is wider than a small region: ~120 px at 416)
            near[k, max(0, y1 - 40):y2 + 4, max(0, x1 - 160):x2 + 160] = True
        changed = (plain != drawn).any(axis=2)
        assert changed.any(), f"{row['frame']}: nothing drawn"
        assert not (changed & ~near.any(axis=0)).any(), f"{row['frame']}: pixels changed away from the painted regions"
        # inside a region, below its label band and away from the others' outlines, its painted pixels are untouched
        for k, (x1, y1, x2, y2) in enumerate(row["boxes"]):
            inner = np.zeros(plain.shape[:2], bool)
            inner[y1 + 40:y2 - 4, x1 + 4:x2 - 4] = True
            inner &= ~np.delete(near, k, axis=0).any(axis=0)
            assert not (changed & inner).any(), f"{row['frame']}: region {k} drawn over"
