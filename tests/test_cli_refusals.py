"""What `run` refuses, `check-config` refuses first; bad settings are refused by the real processes in one line."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MODELS, VIDEO, WIDER, need

ROOT = Path(__file__).resolve().parents[1]
CLIP = "udacity_CarND-Vehicle-Detection_test_video.mp4"


def edge(*args, timeout=180):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "edge", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def one_clear_refusal(r: subprocess.CompletedProcess, text: str) -> None:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert text in r.stderr


def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(need(WIDER / "images" / "7_Cheering_Cheering_7_118.jpg"), folder)
    return folder


def camera(source: Path) -> str:
    return f'[[cameras]]\nid = "cam"\nkind = "replay"\nsource = "{source}"\nrealtime = false\nfps = 1.0\n'


# (what the config holds, the line both commands give); {camera} is a real replayed image folder
START_REFUSALS = [
    ("[output]\nkind = \"none\"\n", "cameras: no camera configured"),
    ("[detect.plate]\nenabled = true\nmodel = \"yunet_n\"\n[output]\nkind = \"none\"\n{camera}",
     "detect.plate.model: model yunet_n detects ['face'], not plate"),
    ("[detect.face]\nmodel = \"lpd_yunet\"\n[output]\nkind = \"none\"\n{camera}",
     "detect.face.model: model lpd_yunet detects ['plate'], not face"),
    ("[detect.face]\nmodel = \"yunet_q\"\n[output]\nkind = \"none\"\n{camera}", "unknown model 'yunet_q'"),
    ("[detect.face]\nextra_models = [\"lpd_yunet\"]\n[output]\nkind = \"none\"\n{camera}",
     "detect.face.extra_models[0]: model lpd_yunet detects ['plate'], not face"),
    ("[output]\nkind = \"none\"\n{camera}[cameras.detect.plate]\nenabled = true\nmodel = \"yunet_n\"\n",
     "cameras[0].detect.plate.model: model yunet_n detects ['face'], not plate"),
    ("[output]\nkind = \"folder\"\ndir = \"{source}/masked\"\n{camera}", "overlaps the input"),
    ("[output]\nkind = \"folder\"\ndir = \"{source}\"\n{camera}", "overlaps the input"),
    ("[output]\nkind = \"video\"\nfile = \"{source}/masked.mkv\"\n{camera}", "overlaps the input"),
]


def write_config(tmp_path: Path, text: str) -> tuple[Path, Path]:
    source = image_folder(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[models]\nmirrors = ["{MODELS}"]\n'
                   + text.replace("{camera}", camera(source)).replace("{source}", str(source)))
    return cfg, source


@pytest.mark.parametrize("models", [True, False], ids=["models", "no-models"])
@pytest.mark.parametrize("text, line", START_REFUSALS)
def test_check_config_refuses_what_run_refuses(tmp_path, text, line, models):
    cfg, _ = write_config(tmp_path, text)
    r = edge("check-config", cfg, *([] if models else ["--no-models"]))
    one_clear_refusal(r, line)
    assert all(out.startswith("invalid: ") for out in r.stderr.splitlines())
    assert "ok:" not in r.stdout


@pytest.mark.slow
@pytest.mark.parametrize("text, line", START_REFUSALS)
def test_run_refuses_the_same_configs(tmp_path, text, line):
    need(MODELS / "yunet_n_dynamic.onnx")
    cfg, source = write_config(tmp_path, text)
    r = edge("run", "--config", cfg)
    one_clear_refusal(r, "refusing to start")
    # run names the class table, check-config the key in it: the model's problem is the same words
    assert line.split(": ", 1)[-1] in r.stderr
    written = [p for p in source.rglob("*") if p.suffix == ".png"]
    assert written == []


def test_check_config_replay_flag_allows_no_camera(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[output]\nkind = "none"\n')
    r = edge("check-config", "--no-models", "--replay", cfg)
    assert r.returncode == 0, r.stderr
    assert "0 camera(s)" in r.stdout


# a representative subset of the loader's table of bad values, through the real processes
BAD_SETTINGS = [
    "mask.small_box_px=inf", "mask.small_box_px=nan", "mask.pixel_cells=1000", "mask.min_cell_px=1",
    "mask.blur_fraction=0.05", "detect.face.thresholds=[nan]", "detect.face.scales=[inf]",
    "detect.face.tiles.max_box_px=nan", "service.deadline_ms=nan", "runtime.threads=3000",
    "track.max_tracks=100000", "output.sndhwm=0",
    # valid range, blind: a score threshold no real face or plate reaches (config.BLIND_SCORE)
    "detect.face.tiles.score_threshold=1.0", "detect.plate.score_threshold=0.95", "vehicles.plate_threshold=1.0",
]


@pytest.mark.parametrize("setting", BAD_SETTINGS)
def test_check_config_refuses_bad_settings_in_file_and_override(tmp_path, setting):
    key, value = setting.split("=")
    table, name = key.rsplit(".", 1)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[{table}]\n{name} = {value}\n" + '[[cameras]]\nid = "a"\nsource = "0"\n')
    r = edge("check-config", "--no-models", cfg)
    one_clear_refusal(r, key)
    assert len(r.stderr.strip().splitlines()) == 1
    cfg.write_text('[[cameras]]\nid = "a"\nsource = "0"\n')
    r = edge("check-config", "--no-models", cfg, "--set", setting)
    one_clear_refusal(r, key)


@pytest.mark.parametrize("setting", BAD_SETTINGS[:6])
def test_replay_refuses_bad_settings_and_writes_nothing(tmp_path, setting):
    out = tmp_path / "out"
    r = edge("replay", need(VIDEO / CLIP), "--output-dir", out, "--set", setting)
    one_clear_refusal(r, setting.split("=")[0])
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_replay_refuses_a_bad_config_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[mask]\nsmall_box_px = inf\n")
    out = tmp_path / "out"
    r = edge("replay", need(VIDEO / CLIP), "--config", cfg, "--output-dir", out)
    one_clear_refusal(r, "mask.small_box_px: must be a finite number")
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("text, line", [
    ("[detect.context]\nenabled = true\nmodel = \"yolox_q\"\n", "detect.context.model: unknown model 'yolox_q'"),
    ("[detect.context]\nenabled = true\nmodel = \"yunet_n\"\nclasses = [\"person\"]\n",
     "detect.context.classes: model yunet_n detects ['face'], not ['person']"),
])
def test_check_config_checks_the_context_model_too(tmp_path, text, line):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    one_clear_refusal(edge("check-config", "--replay", "--no-models", cfg), line)


def test_a_missing_model_is_one_line_per_model(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("")  # the defaults: faces, plates and the context stage
    env = {k: v for k, v in os.environ.items() if k != "EDGE_MODEL_PATH"}
    r = subprocess.run([sys.executable, "-m", "edge", "check-config", "--replay", str(cfg)], capture_output=True,
                       text=True, timeout=60, cwd=ROOT, env={**env, "XDG_CACHE_HOME": str(tmp_path / "empty")})
    lines = r.stderr.splitlines()
    # the default plate model is our own, committed beside its card (models/yolox_plate.onnx): never missing
    assert r.returncode == 2 and len(lines) == 2, r.stderr
    assert lines[0].startswith("invalid: detect.face.model: model 'yunet_n': no verified copy")
    assert lines[1].startswith("invalid: detect.context.model: model 'yolox_nano': no verified copy")


def symlink_loop(tmp_path: Path) -> Path:
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    return tmp_path / "loop_a"


def huge_png(tmp_path: Path) -> Path:
    from sources.test_images import png

    return png(tmp_path / "huge.png", 20000, 20000)


def huge_in_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    huge_png(folder)
    return folder


# (the source, replay's flags, the one line): bad input refused in one line, exit 2, and nothing left behind
# (no output folder, no empty detections.jsonl)
REPLAY_INPUT_REFUSALS = [
    (symlink_loop, [], "replay {src}: too many levels of symbolic links"),
    (lambda p: p / "missing.mp4", [], "replay {src}: no such file or directory"),
    (lambda p: need(VIDEO / CLIP), ["--fps", "1e308", "--realtime"], "--fps: must be within 0.0..240.0, got 1e+308"),
    (lambda p: need(VIDEO / CLIP), ["--fps", "nan"], "--fps: must be a number > 0, got nan"),
    (huge_png, [], "20000x20000 is larger than a frame may be"),
    (huge_in_folder, [], "none of its 1 images can be decoded (the first: huge.png: 20000x20000 is larger"),
]


@pytest.mark.parametrize("source, flags, line", REPLAY_INPUT_REFUSALS)
def test_replay_refuses_a_bad_source_in_one_line_and_leaves_nothing(tmp_path, source, flags, line):
    src, out = source(tmp_path), tmp_path / "out"
    r = edge("replay", src, *flags, "--output-dir", out, "-c", ROOT / "configs" / "fast-faces-only.toml",
             "--log-level", "error")
    one_clear_refusal(r, line.replace("{src}", str(src)))
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists()
