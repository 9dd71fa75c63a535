"""scripts/profile_latency.py: composite frames, percentiles, and a short real run (pipeline + ZeroMQ on loopback)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, VIDEO, WIDER, load_script, need


@pytest.fixture(scope="module")
def prof():
    return load_script("profile_latency")


@pytest.mark.parametrize("h, w, cells", [(720, 1280, 6), (1080, 1920, 15), (400, 400, 1)])
def test_composer_tiles_real_images_over_the_frame(prof, h, w, cells):
    composer = prof.Composer(need(WIDER))
    frame = composer(h, w)
    assert frame.shape == (h, w, 3) and frame.dtype == np.uint8
    assert composer._n == cells
    assert frame.std() > 10  # real pictures, not a blank canvas
    assert not np.array_equal(composer(h, w), frame)  # the next frame shows other images


def test_percentiles(prof):
    s = prof.percentiles([float(v) for v in range(1, 101)])
    assert (s["n"], s["p50"], s["max"]) == (100, 50.5, 100.0) and 98 < s["p99"] < 100
    assert prof.percentiles([]) is None


def test_short_run_records_every_stage(prof, tmp_path):
    out = tmp_path / "p.json"
    rc = prof.main(["--feed", str(need(VIDEO / "udacity_test_images")), "--frames", "3", "--encoding", "jpeg",
                    "--set", "detect.plate.enabled=false", "--json", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["frames"] == 3 and result["masked_frames"] == 3 and result["dropped"] == {}
    assert result["subscriber"]["messages"] == 3
    for stage in ("capture_decode", "preprocess", "inference", "decode", "mask", "encode", "publish", "end_to_end"):
        assert result["stages_ms"][stage]["n"] == 3, stage
    assert result["stages_ms"]["upload"] is None  # CPU provider: nothing is uploaded
    row = result["per_frame"][0]["timings"]
    assert row["end_to_end"] >= row["inference"] + row["capture_decode"]
    # the per-stage plot beside the JSON, by default, wherever matplotlib (the [plot] extra) is installed
    has_matplotlib = importlib.util.find_spec("matplotlib") is not None
    assert out.with_suffix(".png").exists() == has_matplotlib


def test_plot_is_optional(prof, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    png = tmp_path / "p.png"
    assert prof.plot({"per_frame": [], "stages_ms": {}}, png) is False
    assert not png.exists()


def test_plot_writes_a_png_when_matplotlib_is_there(prof, tmp_path):
    pytest.importorskip("matplotlib")
    rows = [{"timings": {"inference": 10.0 + i, "mask": 1.0, "end_to_end": 12.0 + i}} for i in range(5)]
    result = {"per_frame": rows, "size": "1280x720", "composite": False, "provider": "cpu",
              "stages_ms": {"inference": prof.percentiles([10.0]), "mask": prof.percentiles([1.0])}}
    png = tmp_path / "p.png"
    assert prof.plot(result, png) is True
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_several_streams_share_detector_and_sink(prof, tmp_path):
    out = tmp_path / "p.json"
    assert prof.main(["--feed", str(need(VIDEO / "udacity_test_images")), "--frames", "2", "--streams", "2",
                      "--resize", "1280x720", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["frames"] == 4 and result["streams"] == 2 and result["subscriber"]["messages"] == 4
    assert sorted({r["camera"] for r in result["per_frame"]}) == ["cam0", "cam1"]
    assert result["stages_ms"]["synth"]["n"] == 4


def test_streams_batched_share_inference_rounds(prof, tmp_path):
    out = tmp_path / "p.json"
    assert prof.main(["--feed", str(need(VIDEO / "udacity_test_images")), "--frames", "3", "--streams", "2", "--batch",
                      "--preload", "--set", "runtime.batch_wait_ms=100", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["frames"] == 6 and result["masked_frames"] == 6 and result["batch"] is True
    assert 3 <= result["batches"] < 6
    assert result["stages_ms"]["batch_wait"]["n"] == 6


def test_preload_loops_a_short_feed_from_memory(prof, tmp_path):
    folder = need(VIDEO / "udacity_test_images")
    n_images = len([p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png")])
    out = tmp_path / "p.json"
    frames = n_images + 2  # past the end: the feed loops without reopening anything
    rc = prof.main(["--feed", str(folder), "--preload", "--frames", str(frames), "--set", "detect.plate.enabled=false",
                    "--json", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["preload"] is True and result["frames"] == frames and result["masked_frames"] == frames
    assert [r["seq"] for r in result["per_frame"]] == list(range(frames))


def test_memory_feed_hands_out_copies(prof):
    feed = prof.MemoryFeed(need(VIDEO / "udacity_test_images"), "cam0", realtime=False, fps=None)
    a = feed.read(1.0)
    a.image[:] = 0  # the pipeline masks in place
    for _ in range(len(feed.images) - 1):
        feed.read(1.0)
    again = feed.read(1.0)
    assert again.seq == len(feed.images) and again.image.any()


@pytest.mark.parametrize("argv, text", [
    (["--feed", "/nonexistent/clip.mp4"], "--feed /nonexistent/clip.mp4: no such file"),
    (["--frames", "0"], "--frames and --streams: must be >= 1"),
    (["--frames", "1", "--set", "detect.face.score_threshold=2"], "--set detect.face.score_threshold=2: must be within"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, argv, text):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "profile_latency.py"), *argv,
                        "--json", str(tmp_path / "p.json")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert text in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "p.json").exists()


@pytest.mark.parametrize("argv, tag", [
    ([], "defaults_clip_native_cpu"),
    (["-c", "configs/recall-faces-fast.toml", "--resize", "1920x1080", "--composite"],
     "recall-faces-fast_clip_1920x1080_composite_cpu"),
    (["--streams", "8", "--realtime"], "defaults_clip_native_cpu_8streams_realtime"),
])
def test_default_profile_names_say_config_and_feed_and_never_overwrite(prof, tmp_path, argv, tag):
    p = prof.build_parser().parse_args(["--feed", "some/where/clip.mp4", *argv])
    first = prof.default_json_path(p, "cpu", tmp_path)
    assert first == tmp_path / f"profile_{tag}.json"
    first.write_text("{}")
    second = prof.default_json_path(p, "cpu", tmp_path)
    assert second == tmp_path / f"profile_{tag}_2.json"
    second.write_text("{}")
    assert prof.default_json_path(p, "cpu", tmp_path).name == f"profile_{tag}_3.json"
    forced = prof.build_parser().parse_args(["--feed", "some/where/clip.mp4", *argv, "--force"])
    assert prof.default_json_path(forced, "cpu", tmp_path) == first

