"""Per-camera [cameras.detect]: partial tables inherit the top-level [detect], errors name the key, and the app
builds a detector of its own only for the cameras that differ."""
from __future__ import annotations

import pytest

from edge import compose, config
from edge.config import ConfigError

TOP = """
[detect.face]
score_threshold = 0.55
[detect.plate]
enabled = true
score_threshold = 0.4
scales = [1.0]
[detect.context]
enabled = false
"""


def cam(cam_id: str, detect: str = "") -> str:
    return f'\n[[cameras]]\nid = "{cam_id}"\nsource = "0"\n' + detect


def load(tmp_path, text: str) -> config.Config:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return config.load(p)


@pytest.mark.parametrize("detect, key, expected", [
    ("[cameras.detect.plate]\nscales = [0.5, 1.0]\n", "plate.scales", (0.5, 1.0)),
    ("[cameras.detect.plate]\nscales = [0.5, 1.0]\n", "plate.score_threshold", 0.4),  # inherited from [detect]
    ("[cameras.detect.plate]\nscales = [0.5, 1.0]\n", "plate.model", "yolox_plate"),  # default behind [detect]
    ("[cameras.detect.plate]\nenabled = false\n", "plate.enabled", False),
    ("[cameras.detect.plate]\nenabled = false\n", "face.score_threshold", 0.55),
    ("[cameras.detect.face]\nenabled = false\n", "plate.enabled", True),
    ("[cameras.detect.plate.tiles]\nenabled = true\nregion = [0.0, 0.5, 1.0, 1.0]\n", "plate.tiles.region",
     (0.0, 0.5, 1.0, 1.0)),
    ("[cameras.detect.plate.tiles]\nenabled = true\n", "plate.tiles.scale", 2.0),
])
def test_camera_detect_overlays_the_top_level(tmp_path, detect, key, expected):
    cfg = load(tmp_path, TOP + cam("front", detect) + cam("rear"))
    node = compose.camera_detect(cfg, "front")
    for part in key.split("."):
        node = getattr(node, part)
    assert node == expected
    assert compose.camera_detect(cfg, "rear") is cfg.detect  # no table: the top-level section itself


def test_cameras_without_detect_keep_none_and_override_still_works(tmp_path):
    cfg = load(tmp_path, TOP + cam("front"))
    assert cfg.cameras[0].detect is None
    changed = config.override(cfg, {"detect.plate.score_threshold": 0.6})
    assert changed.detect.plate.score_threshold == 0.6 and changed.cameras[0].detect is None


@pytest.mark.parametrize("detect, message", [
    ("[cameras.detect.plate]\nscalez = [1.0]\n", "cameras[0].detect.plate.scalez: unknown key"),
    ("[cameras.detect.plate]\nscore_threshold = 2.0\n", "cameras[0].detect.plate.score_threshold"),
    ("[cameras.detect.face]\nenabled = false\n[cameras.detect.plate]\nenabled = false\n", "at least one"),
    ("[cameras.detect.plate]\nthresholds = [0.3, 0.4]\n", "one value per entry of scales"),
])
def test_bad_camera_detect_is_refused_by_name(tmp_path, detect, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load(tmp_path, TOP + cam("front", detect))


def test_app_builds_a_detector_only_for_cameras_that_differ(tmp_path):
    from edge.compose import build_camera_detectors
    from edge.frame import FACE, PLATE

    cfg = load(tmp_path, TOP + cam("front", "[cameras.detect.face]\nenabled = false\n") + cam("rear")
               + cam("same", "[cameras.detect.plate]\nscore_threshold = 0.4\n"))
    built = build_camera_detectors(cfg)
    assert set(built) == {"front"}  # "same" repeats the top level: it shares the main detector
    assert [d.class_id for d in built["front"].detectors] == [PLATE]
    assert FACE not in [d.class_id for d in built["front"].detectors]
    built["front"].close()


def test_cameras_with_the_same_section_share_one_detector(tmp_path):
    from edge.compose import build_camera_detectors

    section = "[cameras.detect.face]\nenabled = false\n"
    cfg = load(tmp_path, TOP + cam("left", section) + cam("right", section)
               + cam("far", "[cameras.detect.face]\nscore_threshold = 0.3\n"))
    built = build_camera_detectors(cfg)
    assert set(built) == {"left", "right", "far"}
    assert built["left"] is built["right"] and built["far"] is not built["left"]
    for det in {id(d): d for d in built.values()}.values():
        det.close()


def test_audit_model_records_name_every_model_and_the_cameras_it_runs_for(tmp_path):
    from edge.compose import build_camera_detectors, build_detector
    from edge.runtime.service import model_records

    cfg = load(tmp_path, TOP + cam("front", "[cameras.detect.face]\nenabled = false\n") + cam("rear"))
    main, built = build_detector(cfg), build_camera_detectors(cfg)
    try:
        records = model_records(main, built, ["front", "rear"])
    finally:
        main.close()
        built["front"].close()
    by_name = {r["name"]: r for r in records}
    assert set(by_name) == {"yunet_n", "yolox_plate"}
    assert by_name["yunet_n"]["cameras"] == ["rear"]  # front runs plates only
    assert by_name["yolox_plate"]["cameras"] == ["front", "rear"]
    assert all(len(r["sha256"]) == 64 for r in records)


def test_a_model_two_stages_run_is_recorded_once_per_camera():
    """The defaults run LPD-YuNet twice (whole frame, vehicle crops): the audit names each camera once."""
    from types import SimpleNamespace

    from edge.runtime.service import model_records

    both = SimpleNamespace(models=(("lpd_yunet", "ab"), ("yolox_nano", "cd"), ("lpd_yunet", "ab")))
    assert model_records(both, {}, ["front", "rear"]) == [
        {"name": "lpd_yunet", "sha256": "ab", "cameras": ["front", "rear"]},
        {"name": "yolox_nano", "sha256": "cd", "cameras": ["front", "rear"]}]
