"""The painted share and utility on the unlabelled clips: discovery, the replay pipeline with its hold, the command."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import VIDEO, need
from edge.config import Config, override
from edge.eval import footage
from edge.eval.utility import Judge

PETS = "vtest_pets2009_480x360"
STILLS = "udacity_test_images"


def test_discover_clips_finds_videos_and_image_folders(tmp_path):
    (tmp_path / "b.mp4").write_bytes(b"")
    (tmp_path / "a.AVI").write_bytes(b"")
    (tmp_path / "LICENSE.txt").write_text("not a clip")
    (tmp_path / "stills").mkdir()
    cv2.imwrite(str(tmp_path / "stills/x.png"), np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes/readme.md").write_text("no images here")
    assert [p.name for p in footage.discover_clips(tmp_path)] == ["a.AVI", "b.mp4", "stills"]
    assert [p.name for p in footage.discover_clips(tmp_path, ["b", "stills"])] == ["b.mp4", "stills"]
    with pytest.raises(footage.ClipError, match="no such folder"):
        footage.discover_clips(tmp_path / "missing")


def test_the_shared_clips_are_the_four_the_brief_names():
    names = [footage.clip_name(p) for p in footage.discover_clips(need(VIDEO))]
    assert names == ["udacity_CarND-LaneLines-P1_solidWhiteRight", "udacity_CarND-Vehicle-Detection_test_video",
                     STILLS, PETS]


@pytest.fixture(scope="module")
def judge():
    return Judge(Config())


@pytest.mark.parametrize("clip, hold", [(PETS, True), (STILLS, False)])  # stills are no sequence: no hold
def test_a_clip_runs_through_the_replay_pipeline(judge, clip, hold):
    path = footage.discover_clips(need(VIDEO), [clip])[0]
    r = footage.evaluate_clips(Config(), [path], judge, limit=3)[clip]
    assert r["frames"] == 3 and r["dropped_frames"] == 0 and r["hold"] is hold
    shares = r["painted_share_per_frame"]
    assert len(shares) == 3 and all(0 < s < 1 for s in shares)  # the defaults paint something, never all
    assert r["painted_share_mean"] == pytest.approx(np.mean(shares), abs=1e-5)
    assert r["painted_share_max"] == max(shares)
    # a class's regions cover at most the whole painted share, and together at least it
    assert max(r["painted_share_by_class"].values()) <= r["painted_share_mean"] + 5e-5  # each rounded to 1e-5
    assert sum(r["painted_share_by_class"].values()) >= r["painted_share_mean"] - 5e-5
    counted = r["utility"]["person"]["found_raw"] + r["utility"]["vehicle"]["found_raw"]
    assert counted > 0 and r["utility"]["style"] == "pixelate"


def test_a_clip_where_nothing_is_painted_keeps_everything(judge):
    idle = override(Config(), {"detect.face.min_box_px": (16384.0,), "detect.face.tiles.enabled": False,
                               "detect.plate.enabled": False, "detect.context.enabled": False})
    path = footage.discover_clips(need(VIDEO), [PETS])[0]
    r = footage.evaluate_clips(idle, [path], judge, limit=2)[PETS]
    assert r["painted_share_max"] == 0 and r["painted_share_by_class"] == {}
    assert r["utility"]["person"]["share"] == 1.0


def test_the_clips_table():
    clip = {"frames": 38, "size": "1280x720", "painted_share_mean": 0.27, "painted_share_max": 0.37,
            "held_share_mean": 0.05, "painted_share_by_class": {"face": 0.01, "plate_zone": 0.2},
            "utility": {"person": {"found_raw": 0, "still_found": 0, "share": None},
                        "vehicle": {"found_raw": 50, "still_found": 8, "share": 0.16}}}
    lines = footage.format_clips_table({"highway": clip}).splitlines()
    row = lines[2]
    assert row.split()[:6] == ["highway", "38", "1280x720", "27.00%", "37.0%", "5.00%"]
    assert "16.0% (  50)" in row and "plate_zone 20.00%, face 1.00%" in row
    assert row.split()[6] == "-"  # no persons counted is no share


def test_cli_eval_clips_writes_json_and_table(tmp_path):
    out = tmp_path / "c.json"
    need(VIDEO)
    r = subprocess.run([sys.executable, "-m", "edge", "eval", "--clips", "--only", STILLS, "--limit", "2",
                        "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["sets"] == {} and list(report["clips"]) == [STILLS]
    assert report["clips"][STILLS]["frames"] == 2 and "utility" in report["clips"][STILLS]
    assert report["utility_judge"]["style"] == "pixelate"
    assert STILLS in r.stdout and "vehicles kept" in r.stdout


@pytest.mark.parametrize("argv, words", [
    (["--clips", "--dataset", "faces"], "give one of them"),
    (["--clips", "--only", "nope"], "no set or clip named nope"),
    (["--clips", "--clips-dir", "/missing"], "eval: /missing: no such folder"),
    (["--clips", "--report", "/proc/no/report"], "eval: --report /proc/no/report: cannot make the folder"),
])
def test_cli_eval_clips_refuses_in_one_line(argv, words):
    r = subprocess.run([sys.executable, "-m", "edge", "eval", *argv], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and words in r.stderr, r.stderr
