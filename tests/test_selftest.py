"""The start-up privacy self-test (edge.selftest): the bundled set, the defaults clear every floor, and every
valid-but-blind setting of issue 21 is refused by the real commands in one line."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import MODELS, VIDEO, need

ROOT = Path(__file__).resolve().parents[1]
CLIP = "udacity_CarND-Vehicle-Detection_test_video.mp4"
CAMERA = '[[cameras]]\nid = "front"\nsource = "0"\n'


def edge(*args, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGE_MODEL_PATH": str(MODELS)}
    return subprocess.run([sys.executable, "-m", "edge", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def test_the_reference_set_is_small_real_and_attributed():
    from edge import selftest

    refs = selftest.reference_set()
    attribution = (selftest.DATA / "ATTRIBUTION.md").read_text()
    faces = [b for r in refs for b, c in zip(r.boxes, r.labels) if c == "face"]
    plates = [b for r in refs for b, c in zip(r.boxes, r.labels) if c == "plate"]
    assert len(faces) >= 25 and len(plates) >= 12
    face_px = [np.sqrt((b[2] - b[0]) * (b[3] - b[1])) for b in faces]
    plate_w = [b[2] - b[0] for b in plates]
    assert 10 <= min(face_px) and max(face_px) <= 45, face_px  # heads, as a vehicle camera sees them
    assert 18 <= min(plate_w) and max(plate_w) <= 62, plate_w
    assert sum((selftest.DATA / r.name).stat().st_size for r in refs) < 1 << 20
    for r in refs:
        assert r.name.startswith(("oi_train_", "ro_train_")), r.name  # training photos, never data/eval
        credit = "Open Images (Google, CC BY 4.0) via a Roboflow export" if r.name.startswith("oi_") \
            else "RobertLucian/license-plate-dataset (MIT)"
        assert f"| {r.name} | data/train/plates/" in attribution and credit in attribution
    assert (selftest.DATA / "LICENSE_RobertLucian_license-plate-dataset_MIT.txt").exists()


def test_a_broken_reference_set_is_one_clear_error(tmp_path):
    from edge import selftest

    shutil.copy(selftest.DATA / selftest.LABELS, tmp_path)
    with pytest.raises(selftest.SelfTestError, match="missing, corrupt"):
        selftest.reference_set(tmp_path)
    (tmp_path / selftest.LABELS).write_text("# a.jpg 10 10\n1 2 3 4 person\n")
    with pytest.raises(selftest.SelfTestError, match="expected 'x1 y1 x2 y2 face|plate'"):
        selftest.reference_set(tmp_path)


def test_the_defaults_clear_every_floor_with_margin():
    """What the lead re-checks after the defaults change: every stage on, every floor met with room."""
    from edge import compose, selftest

    cfg = compose.load_config(None)
    detector = compose.build_detector(cfg)
    try:
        compose.warm_up(detector, runs=1)
        [result] = compose.self_test(cfg, detector)
    finally:
        detector.close()
    assert {c.what for c in result.checks} == {selftest.WHOLE, selftest.FACE_MODEL, selftest.PLATE_MODEL,
                                               selftest.HEAD_ZONES, selftest.PLATE_ZONES}
    assert not result.failed_frames
    for check in result.checks:
        assert check.protected >= check.floor + 2, check


# Issue 21's valid-but-blind settings: each is a `--set` that `check-config` (which loads the models and runs
# the self-test as `run` does) must now refuse, naming what fell below its floor (or, where the value had no
# meaning but "none", the key: refused by the config's validation before any model loads).
BLIND_SCORE = "at 0.95 or above, "  # a score threshold (almost) no real face, plate, person or vehicle reaches
BLIND = [
    (["detect.face.score_threshold=1.0"], "--set detect.face.score_threshold=1.0: " + BLIND_SCORE + "the face model"),
    (["detect.face.score_threshold=1.0", "detect.face.tiles.score_threshold=1.0"],
     "--set detect.face.score_threshold=1.0: " + BLIND_SCORE),
    # the horizon band and the whole-frame plate pass: the self-test's photos cannot see either alone
    (["detect.face.tiles.score_threshold=1.0"], "--set detect.face.tiles.score_threshold=1.0: " + BLIND_SCORE
     + "the face tiles would keep (almost) no box"),
    (["detect.face.tiles.score_threshold=0.95"], "--set detect.face.tiles.score_threshold=0.95: " + BLIND_SCORE),
    (["detect.face.thresholds=[0.99]"], "--set detect.face.thresholds=[0.99]: detect.face.thresholds[0]: "
                                        + BLIND_SCORE + "its pass 0"),
    (["detect.plate.score_threshold=1.0"], "--set detect.plate.score_threshold=1.0: " + BLIND_SCORE
     + "the plate model"),
    (["detect.plate.score_threshold=1.0", "vehicles.plate_threshold=1.0"], "--set detect.plate.score_threshold=1.0: "),
    (["vehicles.plate_threshold=0.97"], "--set vehicles.plate_threshold=0.97: " + BLIND_SCORE
     + "the plate search in vehicle crops"),
    (["detect.context.score_threshold=1.0"], "--set detect.context.score_threshold=1.0: " + BLIND_SCORE
     + "the context stage"),
    # under the bound the self-test is in charge: a high threshold on the passes it sees alone falls
    (["detect.face.score_threshold=0.9", "detect.face.tiles.score_threshold=0.9"], "faces with face model alone"),
    (["detect.plate.score_threshold=0.9", "vehicles.plate_threshold=0.9"], "0 of 14 plates with plate model alone"),
    (["detect.context.score_threshold=0.9"], "faces with head zones alone"),
    (["heads.min_person_px=16384"], "0 of 30 faces with head zones alone"),
    (["heads.person_score=1.0"], "0 of 30 faces with head zones alone"),
    (["heads.zone_per_height=0.001", "heads.zone_per_width=0.0"], "faces with head zones alone"),
    (["vehicles.zone_max_vehicle_px=1"], "--set vehicles.zone_max_vehicle_px=1: 0 (every vehicle) or above "
                                          "vehicles.min_vehicle_px (40), got 1: no vehicle would get a plate zone"),
    (["vehicles.zone_width=0.05", "vehicles.zone_height=0.05"], "plates with plate zones alone"),
    (["vehicles.zone_max_vehicle_px=0", "vehicles.min_vehicle_px=16384"], "0 of 14 plates with plate zones alone"),
    (["vehicles.min_vehicle_px=16384"], "--set vehicles.min_vehicle_px=16384: vehicles.zone_max_vehicle_px: 0 (every "
                                        "vehicle) or above vehicles.min_vehicle_px (16384), got 500"),
    (["detect.face.region=[0.0,0.0,0.01,0.01]"], "faces with face model alone"),
    (["detect.face.scales=[0.01]"], "faces with face model alone"),
    (["detect.face.min_box_px=[16384.0]"], "faces with face model alone"),
    (["vehicles.plate_threshold=1.0"], "--set vehicles.plate_threshold=1.0: " + BLIND_SCORE),
    (["mask.margin=0.0", "mask.small_margin=0.0", "mask.min_margin_px=0", "heads.grow_side=0.0",
      "heads.grow_up=0.0", "heads.grow_down=0.0"], "faces (floor"),
]


@pytest.mark.parametrize("sets, fell", BLIND, ids=[" ".join(s) for s, _ in BLIND])
def test_check_config_refuses_a_blind_setting_in_one_line(tmp_path, sets, fell):
    (tmp_path / "c.toml").write_text(CAMERA)
    r = edge("check-config", tmp_path / "c.toml", *[a for s in sets for a in ("--set", s)])
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("invalid: ") and fell in line, line
    if not fell.startswith("--set "):  # not refused by the validation: the self-test ran and fell
        assert line.startswith("invalid: self-test: camera front protects ")
        assert "[selftest] skip" in line  # and says how to opt out on purpose


@pytest.mark.parametrize("own, key", [
    ("[cameras.detect.face]\nscore_threshold = 1.0\n", "cameras[1].detect.face.score_threshold"),
    ("[cameras.detect.face.tiles]\nscore_threshold = 0.96\n", "cameras[1].detect.face.tiles.score_threshold"),
    ("[cameras.detect.plate]\nthresholds = [0.3, 0.95]\nscales = [0.5, 1.0]\n",
     "cameras[1].detect.plate.thresholds[1]"),
    ("[cameras.detect.context]\nscore_threshold = 1.0\n", "cameras[1].detect.context.score_threshold"),
])
def test_a_camera_whose_own_threshold_is_blind_is_refused_by_validation(tmp_path, own, key):
    """A camera's own [cameras.detect] value wins over a safe --set: a blind one is refused as the file loads,
    before any model, with or without the --set."""
    (tmp_path / "c.toml").write_text(CAMERA + '[[cameras]]\nid = "rear"\nsource = "1"\n' + own)
    for flags in ([], ["--set", "detect.face.score_threshold=0.3"]):
        r = edge("check-config", "--no-models", tmp_path / "c.toml", *flags)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        [line] = r.stderr.strip().splitlines()
        assert line.startswith("invalid: ") and f"c.toml: {key}: {BLIND_SCORE}" in line, line


def test_a_camera_whose_own_settings_blind_it_is_named(tmp_path):
    """Per-camera [cameras.detect] values win over a safe --set: the camera that went blind is refused."""
    (tmp_path / "c.toml").write_text(CAMERA + '[[cameras]]\nid = "rear"\nsource = "1"\n'
                                     '[cameras.detect.face]\nmin_box_px = [16384.0]\n'
                                     '[cameras.detect.face.tiles]\nenabled = false\n')
    r = edge("check-config", tmp_path / "c.toml", "--set", "detect.face.min_box_px=[0.0]")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "self-test: camera rear protects 0 of 30 faces with face model alone" in r.stderr
    assert "camera front" not in r.stderr  # the camera on the defaults passed


@pytest.mark.parametrize("sets, warning", [
    ([], None),
    # a blind score threshold no longer gets here: refused by the validation (BLIND above)
    (["detect.face.score_threshold=0.9"], None),
    (["detect.plate.region=[0.0,0.0,0.1,0.1]"], "detect.plate.region = [0.0, 0.0, 0.1, 0.1]: its passes look at under 5%"),
    (["detect.face.scales=[0.01]"], "detect.face.scales = [0.01]: the frame shrunk to under a tenth"),
    (["heads.person_score=1.0"], "heads.person_score = 1: no person gets a head zone"),
    (["heads.min_person_px=16384"], "heads.min_person_px = 16384: only persons taller than a 4K frame"),
    (["vehicles.zone_max_vehicle_px=0", "vehicles.min_vehicle_px=16384"],
     "vehicles.min_vehicle_px = 16384: only vehicles wider than a 4K frame"),
    (["detect.plate.enabled=false"], "detect.plate.enabled = false: no plate model runs"),
])
def test_check_config_says_what_each_stage_does_and_warns_where_a_value_disables_it(tmp_path, sets, warning):
    (tmp_path / "c.toml").write_text(CAMERA)
    r = edge("check-config", "--no-models", tmp_path / "c.toml", *[a for s in sets for a in ("--set", s)])
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stdout.splitlines() if line.startswith("  warning: ")]
    if warning is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and warning in warnings[0], warnings
    assert "plate zones of plateless vehicles (vehicles " in r.stdout  # with the widths it applies to
    assert "self-test: not run (--no-models" in r.stdout


# valid, and blind to every face of the reference set: only faces larger than any frame, no horizon band
BLIND_SET = ["--set", "detect.face.min_box_px=[16384.0]", "--set", "detect.face.tiles.enabled=false"]


@pytest.mark.parametrize("command", ["run", "replay", "batch"])
def test_the_commands_refuse_to_start_below_a_floor(tmp_path, command):
    out = tmp_path / "out"
    if command == "run":
        (tmp_path / "c.toml").write_text(f'[output]\nkind = "folder"\ndir = "{out}"\n[[cameras]]\nid = "cam"\n'
                                         f'kind = "replay"\nsource = "{need(VIDEO / CLIP)}"\nrealtime = false\n')
        r = edge("run", "-c", tmp_path / "c.toml", *BLIND_SET)
    elif command == "replay":
        r = edge("replay", need(VIDEO / CLIP), "--output-dir", out, *BLIND_SET)
    else:
        pytest.importorskip("ray")
        r = edge("batch", need(VIDEO / CLIP), "--output-dir", out, *BLIND_SET)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert "0 of 30 faces with face model alone (floor" in r.stderr
    assert not out.exists() or not any(out.rglob("*.png"))  # nothing was written
    if command == "batch":
        assert "Ray" not in r.stderr and not out.exists()  # refused in the driver, before Ray or any input


@pytest.mark.parametrize("command", ["run", "replay", "batch"])
def test_the_commands_refuse_a_blind_threshold_before_any_model_loads(tmp_path, command):
    """The same validation as check-config's: the horizon band's threshold, which the self-test cannot see alone."""
    out, blind = tmp_path / "out", ["--set", "detect.face.tiles.score_threshold=1.0"]
    if command == "run":
        (tmp_path / "c.toml").write_text(f'[output]\nkind = "folder"\ndir = "{out}"\n[[cameras]]\nid = "cam"\n'
                                         f'kind = "replay"\nsource = "{need(VIDEO / CLIP)}"\nrealtime = false\n')
        r = edge("run", "-c", tmp_path / "c.toml", *blind)
    else:
        r = edge(command, need(VIDEO / CLIP), "--output-dir", out, *blind)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    [line] = [x for x in r.stderr.splitlines() if "tiles.score_threshold" in x]
    assert "--set detect.face.tiles.score_threshold=1.0: " + BLIND_SCORE in line
    assert "self-test" not in r.stderr.replace("the privacy self-test may not see", "")  # refused before it runs
    assert not out.exists() or not any(out.iterdir())


def test_a_deliberate_skip_is_loud_and_on_every_record(tmp_path):
    """[selftest] skip lets the blind experiment run, warned at start, in the audit record and every frame's record."""
    out, audit = tmp_path / "out", tmp_path / "audit.jsonl"
    r = edge("replay", need(VIDEO / CLIP), "--output-dir", out, *BLIND_SET, "--set", 'selftest.skip="threshold sweep"',
             "--set", f'service.audit_path="{audit}"', "--set", "detect.context.enabled=false",
             "--set", "vehicles.guided=false", "--set", "vehicles.zones=false", "--set", "vehicles.occupants=false")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "self-test SKIPPED ([selftest] skip = 'threshold sweep')" in r.stderr
    records = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    assert records and all(rec["selftest_skipped"] == "threshold sweep" for rec in records)
    start = json.loads(audit.read_text().splitlines()[0])
    assert start["event"] == "start" and start["selftest"] == {"skipped": "threshold sweep"}


def test_a_run_that_passed_records_its_counts_in_the_audit(tmp_path):
    out, audit = tmp_path / "out", tmp_path / "audit.jsonl"
    r = edge("replay", need(VIDEO / CLIP), "--output-dir", out, "--set", f'service.audit_path="{audit}"')
    assert r.returncode == 0, r.stderr[-2000:]
    [result] = json.loads(audit.read_text().splitlines()[0])["selftest"]["results"]
    assert result["passed"] and result["cameras"] == ["replay"]
    assert {(c["what"], c["class"]) for c in result["checks"]} >= {("whole", "face"), ("whole", "plate")}
    assert "selftest_skipped" not in (out / "detections.jsonl").read_text()


@pytest.mark.parametrize("skip, ok", [
    ("", True), ("threshold sweep on bench", True), ("   ", False), ("two\nlines", False), ("x" * 201, False),
])
def test_a_skip_needs_a_reason_of_one_line(skip, ok):
    from edge.config import ConfigError, SelftestConfig

    if ok:
        assert SelftestConfig(skip=skip).skip == skip
    else:
        with pytest.raises(ConfigError, match="skip: a reason of one printable line"):
            SelftestConfig(skip=skip)
