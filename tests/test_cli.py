"""The command line end to end, as a user runs it: real processes, real files, real sockets."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from conftest import MODELS, VIDEO, WIDER, need

ROOT = Path(__file__).resolve().parents[1]
CLIP = "udacity_CarND-Vehicle-Detection_test_video.mp4"  # 1280x720, 38 frames


def edge(*args, timeout=120, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "edge", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_replay_video_to_folder(tmp_path):
    r = edge("replay", need(VIDEO / CLIP), "--output-dir", tmp_path / "out", "--mask", "solid")
    assert r.returncode == 0, r.stderr
    lines = jsonl(tmp_path / "out" / "detections.jsonl")
    assert len(lines) == 38 and all(line["status"] == "masked" for line in lines)
    assert sorted(p.stem for p in (tmp_path / "out").glob("*.png")) == [f"{i:06d}" for i in range(38)]


def test_replay_image_folder_keeps_stems_and_masks_faces(tmp_path):
    names = ["7_Cheering_Cheering_7_118.jpg", "3_Riot_Riot_3_604.jpg"]
    src = tmp_path / "in"
    src.mkdir()
    for n in names:
        (src / n).write_bytes(need(WIDER / "images" / n).read_bytes())
    r = edge("replay", src, "--output-dir", tmp_path / "out", "--mask", "solid")
    assert r.returncode == 0, r.stderr
    lines = {line["frame"]: line for line in jsonl(tmp_path / "out" / "detections.jsonl")}
    assert set(lines) == {Path(n).stem for n in names}
    for n in names:
        out = cv2.imread(str(tmp_path / "out" / f"{Path(n).stem}.png"))
        original = cv2.imread(str(src / n))
        boxes = lines[Path(n).stem]["boxes"]
        assert len(boxes) >= 4
        for x1, y1, x2, y2 in boxes:
            assert (out[y1:y2, x1:x2] == 0).all()
        assert out.shape == original.shape


@pytest.mark.parametrize("args, code, text", [
    (["replay", "/nonexistent/clip.mp4", "--output-dir", "OUT"], 2, "/nonexistent/clip.mp4"),
    (["replay", "VIDEO", "--output-dir", "OUT", "--set", "detect.face.model=nope"], 2, "nope"),
    (["replay", "VIDEO", "--output-dir", "OUT", "--set", "detect.face.treshold=0.3"], 2, "treshold"),
])
def test_replay_refuses_with_one_clear_line(tmp_path, args, code, text):
    args = [str(need(VIDEO / CLIP)) if a == "VIDEO" else str(tmp_path / "o") if a == "OUT" else a for a in args]
    r = edge(*args)
    assert r.returncode == code
    assert text in r.stderr
    assert not list((tmp_path / "o").glob("*.png")) if (tmp_path / "o").exists() else True


def test_replay_refuses_a_corrupt_model(tmp_path):
    """A model file replaced by different bytes (same name) is refused: the process never runs."""
    bad = tmp_path / "mirror"
    bad.mkdir()
    data = bytearray(need(MODELS / "yunet_n_dynamic.onnx").read_bytes())
    data[1000] ^= 0xFF
    (bad / "yunet_n_dynamic.onnx").write_bytes(bytes(data))
    env_path = os.environ.pop("EDGE_MODEL_PATH", None)
    try:
        r = edge("replay", need(VIDEO / CLIP), "--output-dir", tmp_path / "o", "--set", f'models.mirrors=["{bad}"]',
                 "--set", f'models.cache_dir="{tmp_path / "cache"}"')
    finally:
        if env_path is not None:
            os.environ["EDGE_MODEL_PATH"] = env_path
    assert r.returncode == 2
    assert "yunet_n" in r.stderr and "104ee26c71d5c270" in r.stderr
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.png"))


@pytest.mark.parametrize("text, code, out", [
    ('[detect.face]\nscore_threshold = 0.4\n[[cameras]]\nid = "a"\nsource = "0"\n', 0, "ok:"),
    ('[detect.face]\nthreshold = 0.4\n', 2, "detect.face.threshold: unknown key"),
    ('[detect.face]\nmodel = "yunet_x"\n', 2, "yunet_x"),
])
def test_check_config(tmp_path, text, code, out):
    p = tmp_path / "c.toml"
    p.write_text(text)
    r = edge("check-config", p)
    assert r.returncode == code
    assert out in (r.stdout + r.stderr)


def test_models_list_and_verify():
    r = edge("models", "verify", "yunet_n")
    assert r.returncode == 0 and "104ee26c71d5c270" in r.stdout
    r = edge("models", "list")
    assert r.returncode == 0 and "yunet_n" in r.stdout and "lpd_yunet" in r.stdout
    # every model's training-data terms, on the line under it
    lines = r.stdout.splitlines()
    for name, terms in [("yunet_n", "WIDER FACE: research-only"), ("yolox_nano", "COCO 2017"),
                        ("yolox_plate", "Open Images (Google, CC BY 4.0)")]:
        row = next(i for i, line in enumerate(lines) if line.startswith(name + " "))
        assert "trained on:" in lines[row + 1] and terms in lines[row + 1]


@pytest.mark.slow
def test_run_publishes_masked_frames_and_stops_cleanly_on_sigterm(tmp_path):
    from edge.subscribe import Subscriber

    addr = f"ipc://{tmp_path}/out.sock"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""
[service]
stats_interval_s = 0
deadline_ms = 0             # the defaults' detection on a loaded 2-core CI machine would miss 250 ms
[output]
kind = "zmq"
bind = "{addr}"
sndhwm = 100
[[cameras]]
id = "cam7"
kind = "replay"
source = "{need(VIDEO / 'vtest_pets2009_480x360.avi')}"
realtime = true
loop = true
""")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "-c", str(cfg)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sub = Subscriber(addr, topics=("cam7",))
    try:
        got = []
        for _ in range(200):
            msg = sub.recv(timeout_s=1.0)
            if msg is not None:
                got.append(msg)
            if len(got) >= 5 or proc.poll() is not None:
                break
        assert len(got) >= 5, proc.stderr.read() if proc.poll() is not None else "no frames"
        for header, image in got:
            assert header["camera_id"] == "cam7" and header["masked"] is True
            assert image.shape == (360, 480, 3) and tuple(header["shape"]) == (360, 480, 3)
            assert header["models"][0]["name"] == "yunet_n"
            assert {"t_capture_mono_ns", "t_capture_wall_ns", "seq", "boxes", "timings_ms"} <= set(header)
        seqs = [h["seq"] for h, _ in got]
        assert seqs == sorted(seqs)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "frames_in" in err  # the final stats line
    finally:
        sub.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("out_of", [lambda src: src, lambda src: src / "masked"])
def test_replay_refuses_an_output_folder_overlapping_the_input(tmp_path, out_of):
    src = tmp_path / "in"
    src.mkdir()
    raw = need(WIDER / "images" / "7_Cheering_Cheering_7_118.jpg").read_bytes()
    (src / "a.jpg").write_bytes(raw)
    r = edge("replay", src, "--output-dir", out_of(src))
    assert r.returncode == 2
    assert "overlaps the input" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in src.rglob("*")) == ["a.jpg"] and (src / "a.jpg").read_bytes() == raw
