"""The video sink (FFV1 .mkv lossless, mp4v .mp4) and `replay --output FILE.mkv` on a real clip."""
import json
import os

import cv2
import numpy as np
import pytest

from edge import config as config_mod
from edge.config import ConfigError
from edge.frame import FACE, Detections, DroppedFrame, Frame, MaskedFrame
from edge.sinks.video import VideoSink, VideoSinkError, records_path, source_fps
from tests.conftest import VIDEO, unheld, video_frames

CLIP = VIDEO / "udacity_CarND-Vehicle-Detection_test_video.mp4"


def masked(seq: int, shape=(48, 64, 3)) -> MaskedFrame:
    img = np.random.default_rng(seq).integers(0, 256, shape, dtype=np.uint8)
    frame = Frame(img, "front", seq, 100, 200, f"{seq:06d}")
    det = Detections(np.array([[1, 1, 5, 5]], np.float32), [0.9], [FACE])
    return MaskedFrame(frame, np.array([[0, 0, 6, 6]], np.int32), det, "masked", {"detect": 1.0}, (("m", "00" * 32),))


def dropped(seq: int) -> DroppedFrame:
    return DroppedFrame.of(Frame(np.zeros((48, 64, 3), np.uint8), "front", seq, 0, 0, f"{seq:06d}"), "bad_output")


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_ffv1_mkv_reads_back_bit_for_bit_and_is_renamed_into_place_at_close(tmp_path):
    path = tmp_path / "drive.mkv"
    items = [masked(i) for i in range(5)]
    sink = VideoSink(path, fps=25.0)
    for item in items:
        assert sink.send(item) is True
    # while open only the temporary name exists: a half-written video never looks finished
    assert not path.exists() and [p.name for p in tmp_path.glob(".drive.mkv.*.partial.mkv")]
    sink.close()
    assert path.exists() and not list(tmp_path.glob("*.partial*"))
    frames = video_frames(path)
    assert len(frames) == 5
    for item, frame in zip(items, frames):
        np.testing.assert_array_equal(frame, item.frame.image)
    records = lines(records_path(path))
    assert [r["frame"] for r in records] == [f"{i:06d}" for i in range(5)]
    assert [r["video_frame"] for r in records] == list(range(5))
    assert records[0]["boxes"] == [[0, 0, 6, 6]] and records[0]["detections"] == unheld(items[0].detections.to_list())


def test_mp4v_is_the_lossy_option_with_every_frame(tmp_path):
    path = tmp_path / "drive.mp4"
    with VideoSink(path, fps=10.0) as sink:
        for i in range(4):
            sink.send(masked(i))
    frames = video_frames(path)
    assert len(frames) == 4 and frames[0].shape == (48, 64, 3)


def test_a_dropped_frame_has_its_line_and_no_video_frame(tmp_path):
    path = tmp_path / "d.mkv"
    with VideoSink(path, records=tmp_path / "detections.jsonl") as sink:
        sink.send(masked(0))
        sink.send(dropped(1))
        sink.send(masked(2))
    assert len(video_frames(path)) == 2
    records = lines(tmp_path / "detections.jsonl")
    assert [r["status"] for r in records] == ["masked", "dropped", "masked"]
    assert records[1]["reason"] == "bad_output" and "video_frame" not in records[1]
    assert records[2]["video_frame"] == 1


@pytest.mark.parametrize("complete, names", [
    (True, ["d.mkv", "d.part2.mkv", "d.part3.mkv"]),
    (False, ["d.partial.mkv", "d.part2.partial.mkv", "d.part3.partial.mkv"]),
])
def test_a_frame_size_change_closes_the_video_and_goes_on_in_the_next_part(tmp_path, complete, names):
    """Nothing written is lost: every part is kept (as partial when the run was cut short), the records say where."""
    path = tmp_path / "d.mkv"
    shapes = [(48, 64, 3), (48, 64, 3), (40, 64, 3), (40, 64, 3), (40, 64, 3), (48, 64, 3)]
    items = [masked(i, shape) for i, shape in enumerate(shapes)]
    sink = VideoSink(path, records=tmp_path / "r.jsonl")
    assert all(sink.send(item) for item in items)
    assert sink.stats()["write_errors"] == 0 and sink.stats()["parts"] == 3
    sink.close(complete=complete)
    assert sorted(p.name for p in tmp_path.glob("*.mkv")) == sorted(names)
    assert not list(tmp_path.glob(".d.mkv.*"))
    parts = [video_frames(tmp_path / n) for n in names]
    assert [len(p) for p in parts] == [2, 3, 1]
    for item, frame in zip(items, [f for p in parts for f in p]):
        np.testing.assert_array_equal(frame, item.frame.image)
    records = lines(tmp_path / "r.jsonl")
    assert [(r.get("video_file"), r["video_frame"]) for r in records] == [
        (None, 0), (None, 1), ("d.part2.mkv", 0), ("d.part2.mkv", 1), ("d.part2.mkv", 2), ("d.part3.mkv", 0)]


@pytest.mark.parametrize("names, stems, renamed", [
    (["a\nb", "a_b"], ["a_b", "a_b~2"], 1),
    (["a/b", "a_b", "a\\b"], ["a_b", "a_b~2", "a_b~3"], 2),
    (["x", "x"], ["x", "x"], 0),  # the same frame name twice is the same frame's name
])
def test_distinct_frame_names_never_share_a_record_name(tmp_path, names, stems, renamed):
    items = [masked(i) for i in range(len(names))]
    for item, name in zip(items, names):
        item.frame.name = name
    with VideoSink(tmp_path / "d.mkv", records=tmp_path / "r.jsonl") as sink:
        for item in items:
            sink.send(item)
        assert sink.stats()["renamed"] == renamed
    assert [r["frame"] for r in lines(tmp_path / "r.jsonl")] == stems


def test_a_sink_that_wrote_nothing_leaves_no_records_file(tmp_path):
    VideoSink(tmp_path / "d.mkv", records=tmp_path / "r.jsonl").close()
    assert list(tmp_path.iterdir()) == []


def test_a_symlink_at_the_final_name_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    path = tmp_path / "d.mkv"
    os.symlink(victim, path)
    with VideoSink(path) as sink:
        sink.send(masked(0))
    assert victim.read_text() == "keep" and not path.is_symlink() and len(video_frames(path)) == 1


def test_sinks_take_only_outcomes_of_the_mask_step(tmp_path):
    with VideoSink(tmp_path / "d.mkv") as sink, pytest.raises(TypeError):
        sink.send(Frame(np.zeros((4, 4, 3), np.uint8), "c", 0, 0, 0))


@pytest.mark.parametrize("name", ["d.avi", "d.h264", "d"])
def test_other_containers_are_refused(tmp_path, name):
    with pytest.raises(VideoSinkError):
        VideoSink(tmp_path / name)


@pytest.mark.parametrize("changes, message", [
    ({"output.kind": "video"}, "output.file"),
    ({"output.kind": "video", "output.file": "/tmp/x.avi"}, "output.file"),
    ({"output.kind": "video", "output.file": "/tmp/x.mkv", "output.records": "/tmp/x.txt"}, "output.records"),
])
def test_the_config_refuses_a_video_output_it_cannot_write(changes, message):
    with pytest.raises(ConfigError, match=message):
        config_mod.override(config_mod.Config(), changes)


def test_source_fps_is_the_files_own_or_the_default(tmp_path):
    assert source_fps(CLIP) == pytest.approx(25.0)
    assert source_fps(tmp_path) == 10.0


@pytest.mark.parametrize("argv, message", [
    (["--output", "x.avi"], "--output"),
    (["--output", "x.mkv", "--output-dir", "d"], "choose one output"),
    (["--output", "x.mkv", "--bind", "tcp://127.0.0.1:5999"], "choose one output"),
])
def test_replay_refuses_a_video_output_it_cannot_write(tmp_path, capsys, argv, message):
    from edge import cli

    assert cli.main(["replay", str(CLIP), *argv]) == cli.EXIT_BAD_INPUT
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_replay_output_mkv_holds_the_same_frames_as_the_png_folder(tmp_path):
    """The same clip replayed to PNGs and to FFV1: identical masked pixels and records (timings aside)."""
    from edge import cli

    if not CLIP.exists():
        pytest.skip("shared clip missing")
    short = tmp_path / "short.mkv"
    with VideoSink(short, fps=25.0) as sink:  # the clip's first frames, losslessly
        for i, image in enumerate(video_frames(CLIP)[:12]):
            sink.send(MaskedFrame(Frame(image, "c", i, 0, 0), np.zeros((0, 4), np.int32), Detections(), "masked", {}))
    video = tmp_path / "out" / "masked.mkv"
    assert cli.main(["replay", str(short), "--output", str(video)]) == 0
    assert cli.main(["replay", str(short), "--output-dir", str(tmp_path / "png")]) == 0
    frames = video_frames(video)
    pngs = sorted((tmp_path / "png").glob("*.png"))
    assert len(frames) == len(pngs) == 12
    for frame, png in zip(frames, pngs):
        np.testing.assert_array_equal(frame, cv2.imread(str(png)))

    def strip(r):
        return {k: v for k, v in r.items() if k not in ("timings_ms", "video_frame")}

    assert [strip(r) for r in lines(tmp_path / "out" / "masked.jsonl")] == \
        [strip(r) for r in lines(tmp_path / "png" / "detections.jsonl")]


@pytest.mark.parametrize("existing_partial", [False, True])
def test_a_run_cut_short_never_leaves_its_video_under_the_final_name(tmp_path, existing_partial):
    path = tmp_path / "drive.mkv"
    partial = tmp_path / "drive.partial.mkv"
    if existing_partial:
        partial.write_bytes(b"an earlier run's")
    sink = VideoSink(path, fps=25.0)
    for i in range(3):
        sink.send(masked(i))
    sink.close(complete=False)
    assert not path.exists()
    if existing_partial:  # never overwritten: the new frames stay under the temporary name
        assert partial.read_bytes() == b"an earlier run's"
        assert len(video_frames(next(tmp_path.glob(".drive.mkv.*.partial.mkv")))) == 3
    else:
        assert len(video_frames(partial)) == 3


def test_replay_to_a_video_interrupted_by_sigint_leaves_a_partial_file(tmp_path):
    """SIGINT mid-replay: exit 130 and NAME.partial.mkv, never NAME.mkv (a short video looking complete)."""
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    if not CLIP.exists():
        pytest.skip("shared clip missing")
    video = tmp_path / "masked.mkv"
    proc = subprocess.Popen([sys.executable, "-m", "edge", "replay", str(CLIP), "--output", str(video),
                             "-c", str(ROOT / "configs" / "fast-faces-only.toml")],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)
    records = records_path(video)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if records.exists() and records.read_text().count("\n") >= 2:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert not video.exists() and len(video_frames(tmp_path / "masked.partial.mkv")) >= 2
    assert "replay: interrupted (SIGINT)" in err and f"output {video}" in err
