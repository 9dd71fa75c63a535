"""The per-session audit record: what ran and what came of it, numbers and hashes only."""
from __future__ import annotations

import dataclasses
import json
import stat

import pytest

from edge.runtime import audit
from edge.runtime.audit import AuditError, AuditLog, frame_counts, redact, redact_tree
from edge.config import CameraConfig, Config, override

SHA = "104ee26c71d5c270" + "0" * 48


def walk(value, path=""):
    """Every (path, leaf) of a JSON tree, lists included as whole values too."""
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from walk(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk(v, f"{path}[{i}]")


def assert_no_pixels(record: dict) -> None:
    """No array that could be an image or a box list: long numeric lists, bytes-like strings, 'boxes'."""
    for path, value in walk(record):
        if isinstance(value, list):
            assert len(value) <= 16, f"{path}: list of {len(value)} items"
        if isinstance(value, str):
            assert len(value) < 512, f"{path}: long string"
        assert not path.endswith((".boxes", ".image", ".pixels", ".detections")), path


COUNTERS = {"frames_in": 100, "frames_masked": 90, "frames_masked_whole": 3, "frames_dropped": 7,
            "dropped_deadline": 5, "dropped_bad_output": 2, "masked_whole_detector_error": 3,
            "sink_dropped": 4, "objects_masked": 321}


@pytest.fixture()
def cfg():
    c = override(Config(), {"detect.face.score_threshold": 0.42, "detect.plate.enabled": True,
                            "service.on_failure": "mask_whole"})
    return dataclasses.replace(c, cameras=(CameraConfig(id="front", source="rtsp://admin:hunter2@10.0.0.5/stream1"),))


def session(path, cfg):
    log = AuditLog(path, clock=iter([10.0, 25.5]).__next__)
    log.start(cfg, [{"name": "yunet_n", "sha256": SHA}, {"name": "lpd_yunet", "sha256": "ab" * 32}])
    log.end(0, COUNTERS, {"front": {"frames": 100, "url": "rtsp://admin:hunter2@10.0.0.5/stream1"}},
            {"sent": 93, "dropped_hwm": 4}, ["camera front: rtsp://admin:hunter2@10.0.0.5 timed out"])
    log.close()
    return log.session


def test_start_and_end_records(tmp_path, cfg):
    path = tmp_path / "audit.jsonl"
    sid = session(path, cfg)
    start, end = [json.loads(line) for line in path.read_text().splitlines()]
    assert start["session"] == end["session"] == sid
    assert start["event"] == "start" and end["event"] == "end"
    assert start["models"] == [{"name": "yunet_n", "sha256": SHA}, {"name": "lpd_yunet", "sha256": "ab" * 32}]
    assert start["thresholds"]["face"] == {"enabled": True, "model": "yunet_n", "score_threshold": 0.42,
                                           "nms_iou": 0.45, "scales": [1.0]}
    assert start["thresholds"]["plate"]["enabled"] is True
    assert start["config"]["service"]["on_failure"] == "mask_whole"
    assert end["exit_code"] == 0 and end["duration_s"] == 15.5
    assert end["frames"] == {
        "in": 100, "masked": 90, "masked_whole": 3, "dropped": 7,
        "dropped_by_reason": {"bad_output": 2, "deadline": 5}, "masked_whole_by_reason": {"detector_error": 3},
        "sink_dropped": 4, "sink_errors": 0,
    }
    assert end["sink"] == {"sent": 93, "dropped_hwm": 4}


def test_no_credentials_and_no_pixels_anywhere(tmp_path, cfg):
    path = tmp_path / "audit.jsonl"
    session(path, cfg)
    text = path.read_text()
    assert "hunter2" not in text and "admin" not in text
    assert "rtsp://***@10.0.0.5/stream1" in text
    for line in text.splitlines():
        assert_no_pixels(json.loads(line))


def test_sessions_append_and_the_file_is_not_world_readable(tmp_path, cfg):
    path = tmp_path / "audit.jsonl"
    first, second = session(path, cfg), session(path, cfg)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["session"] for r in lines] == [first, first, second, second] and first != second
    assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0


def test_unwritable_audit_path_is_refused_naming_it(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(AuditError, match=r"service.audit_path .*file/audit.jsonl: cannot append"):
        AuditLog(blocker / "audit.jsonl")


def test_nan_in_counters_cannot_produce_invalid_json(tmp_path, cfg):
    log = AuditLog(tmp_path / "a.jsonl")
    with pytest.raises(ValueError):
        log.end(1, {"frames_in": float("nan")}, {}, {}, [])
    log.close()
    assert (tmp_path / "a.jsonl").read_text() == ""  # nothing half-written


@pytest.mark.parametrize("text, expected", [
    ("rtsp://user:pass@cam/x", "rtsp://***@cam/x"),
    ("http://token@h:80/a and rtsp://u:p@h2/b", "http://***@h:80/a and rtsp://***@h2/b"),
    ("/dev/video0", "/dev/video0"),
    ("rtsp://cam.local/stream", "rtsp://cam.local/stream"),
])
def test_redact(text, expected):
    assert redact(text) == expected


def test_redact_tree_keeps_structure():
    assert redact_tree({"a": ["rtsp://u:p@h/x", 3], "b": {"c": "x"}}) == {"a": ["rtsp://***@h/x", 3], "b": {"c": "x"}}


def test_frame_counts_from_empty_counters():
    assert frame_counts({})["in"] == 0 and audit.frame_counts({})["dropped_by_reason"] == {}
