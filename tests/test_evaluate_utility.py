"""Utility retention: the matching rule as pure functions, the real judge, and the evaluation that uses it."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from conftest import SHARED, need
from edge.config import Config, override
from edge.eval import evaluate
from edge.eval.utility import (KEPT_IOU, KEPT_SCORE, RAW_SCORE, UTILITY_CLASSES, Judge, UtilityTally, iou,
                               kept_flags, native_letterbox)
from edge.frame import Detections

BERLIN = SHARED / "data/eval/dashcam/berlin_dev"
PERSON, VEHICLE = UTILITY_CLASSES.index("person"), UTILITY_CLASSES.index("vehicle")


def dets(*rows) -> Detections:
    """(x1, y1, x2, y2, score, class) rows."""
    a = np.array(rows, np.float32).reshape(-1, 6)
    return Detections(a[:, :4], a[:, 4], a[:, 5].astype(np.int32))


# --- the matching rule ------------------------------------------------------------------------------

@pytest.mark.parametrize("a, b, expected", [
    ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
    ((0, 0, 10, 10), (5, 0, 15, 10), 50 / 150),
    ((0, 0, 10, 10), (10, 0, 20, 10), 0.0),  # touching edges share no area
    ((0, 0, 10, 10), (2, 2, 8, 8), 36 / 100),
    ((0, 0, 0, 0), (0, 0, 0, 0), 0.0),  # empty boxes: no overlap, no division by zero
])
def test_iou(a, b, expected):
    assert iou(np.array([a]), np.array([b]))[0, 0] == pytest.approx(expected)


# a raw box (0,0,100,100); the masked frame's box shifted right by `dx` has IoU (100-dx)/(100+dx)
SHIFT_AT_IOU_HALF = 100 / 3  # (100 - d) / (100 + d) = 0.5


@pytest.mark.parametrize("raw, masked, classes, kept", [
    # found again in place, same class: kept
    ([(0, 0, 100, 100, 0.9, VEHICLE)], [(0, 0, 100, 100, 0.9, VEHICLE)], [VEHICLE], [True]),
    # the score thresholds: raw >= 0.5 to be counted, masked >= 0.3 to be kept
    ([(0, 0, 100, 100, RAW_SCORE, PERSON)], [(0, 0, 100, 100, KEPT_SCORE, PERSON)], [PERSON], [True]),
    ([(0, 0, 100, 100, 0.9, PERSON)], [(0, 0, 100, 100, 0.29, PERSON)], [PERSON], [False]),
    ([(0, 0, 100, 100, 0.49, PERSON)], [(0, 0, 100, 100, 0.9, PERSON)], [], []),  # never counted
    # the IoU threshold, from both sides
    ([(0, 0, 100, 100, 0.9, PERSON)], [(30, 0, 130, 100, 0.9, PERSON)], [PERSON], [True]),  # IoU 0.54
    ([(0, 0, 100, 100, 0.9, PERSON)], [(35, 0, 135, 100, 0.9, PERSON)], [PERSON], [False]),  # IoU 0.48
    # the same place, another class: lost
    ([(0, 0, 100, 100, 0.9, VEHICLE)], [(0, 0, 100, 100, 0.9, PERSON)], [VEHICLE], [False]),
    # nothing on the masked frame
    ([(0, 0, 100, 100, 0.9, VEHICLE), (200, 0, 300, 100, 0.6, PERSON)], [], [VEHICLE, PERSON], [False, False]),
    # one to one: one masked box cannot keep two raw objects; the surer raw object takes it
    ([(0, 0, 100, 100, 0.6, PERSON), (5, 0, 105, 100, 0.9, PERSON)], [(5, 0, 105, 100, 0.8, PERSON)],
     [PERSON, PERSON], [True, False]),
    # ...and the best overlap of its class wins, leaving the other box to the other object
    ([(0, 0, 100, 100, 0.9, PERSON), (60, 0, 160, 100, 0.8, PERSON)],
     [(0, 0, 100, 100, 0.9, PERSON), (60, 0, 160, 100, 0.9, PERSON)], [PERSON, PERSON], [True, True]),
    # nothing counted on the raw frame: nothing to keep or lose
    ([], [(0, 0, 100, 100, 0.9, PERSON)], [], []),
])
def test_kept_flags(raw, masked, classes, kept):
    got_classes, got_kept = kept_flags(dets(*raw), dets(*masked))
    assert got_classes.tolist() == classes and got_kept.tolist() == kept


def test_the_rule_is_the_one_the_data_readme_states():
    assert (RAW_SCORE, KEPT_SCORE, KEPT_IOU) == (0.5, 0.3, 0.5)
    assert iou(np.array([[0, 0, 100, 100]]), np.array([[SHIFT_AT_IOU_HALF, 0, 100 + SHIFT_AT_IOU_HALF, 100]]))[0, 0] \
        == pytest.approx(KEPT_IOU)


def test_tally_counts_per_class_and_a_dropped_frame_loses_everything():
    t = UtilityTally()
    assert t.add(np.array([PERSON, VEHICLE, VEHICLE]), np.array([True, True, False])) == {
        "person": [1, 1], "vehicle": [1, 2]}
    assert t.add_lost(dets((0, 0, 10, 10, 0.9, PERSON), (0, 0, 10, 10, 0.4, VEHICLE))) == {
        "person": [0, 1], "vehicle": [0, 0]}  # the 0.4 vehicle is not counted
    r = t.result()
    assert r["person"] == {"found_raw": 2, "still_found": 1, "share": 0.5}
    assert r["vehicle"] == {"found_raw": 2, "still_found": 1, "share": 0.5}
    assert UtilityTally().result()["person"]["share"] is None  # nothing counted is no 0%


@pytest.mark.parametrize("h, w, box", [(1080, 1920, (1920, 1080)), (416, 416, (416, 416)), (20, 30, (32, 32))])
def test_the_judge_sees_each_image_at_its_own_size(h, w, box):
    assert native_letterbox(h, w) == box


# --- the real judge ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def judge():
    return Judge(Config())


@pytest.fixture(scope="module")
def street():
    """A berlin_dev frame with persons and vehicles."""
    images = sorted(need(BERLIN / "images").glob("*.jpg"))
    return cv2.imread(str(images[0]))


def test_the_judge_keeps_everything_on_an_unmasked_frame_and_nothing_on_a_black_one(judge, street):
    raw = judge.find(street)
    classes, kept = kept_flags(raw, judge.find(street.copy()))
    assert (classes == PERSON).sum() >= 2 and (classes == VEHICLE).sum() >= 2  # the frame shows both
    assert kept.all()
    assert not kept_flags(raw, judge.find(np.zeros_like(street)))[1].any()
    assert set(np.unique(raw.class_id).tolist()) <= {PERSON, VEHICLE}


def test_the_judge_runs_its_own_operating_point_whatever_the_config(judge, street):
    """A config's runtime (fp16, graph preprocessing) or context letterbox does not change the judge."""
    other = Judge(override(Config(), {"runtime.graph_preprocess": True, "detect.context.width": 320,
                                      "detect.context.height": 192, "detect.context.score_threshold": 0.9}))
    a, b = judge.find(street), other.find(street)
    np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)
    assert judge.describe()["classes"] == {"person": ["person"], "vehicle": ["car", "motorcycle", "bus", "truck"]}


def test_a_scored_image_in_the_runs_own_style_is_what_that_run_outputs():
    """Utility judges the solid run's regions painted in the run's style: exactly the pixels a run in that
    style hands out (the regions do not depend on the fill)."""
    from edge.compose import build_pipeline
    from edge.frame import Frame

    dev = evaluate.discover(SHARED / "data/eval", ["berlin_dev"])[0].limited(1)
    cfg = override(Config(), {"mask.style": "pixelate"})
    scored = next(evaluate.score_images(evaluate.pipeline_for(cfg).process, dev.items))
    image = evaluate.read_image(dev.items[0].path)
    out = build_pipeline(override(cfg, {"service.deadline_ms": 0.0})).process(Frame(image, "t", 0, 0, 0, "x"))
    assert len(scored.regions) > 0
    np.testing.assert_array_equal(out.regions, scored.regions)
    np.testing.assert_array_equal(out.frame.image, scored.in_style(cfg.mask))
    assert not np.array_equal(scored.in_style(cfg.mask), scored.original)


def test_evaluate_set_reports_utility_in_the_runs_style(judge):
    dev = evaluate.discover(need(SHARED / "data/eval"), ["berlin_dev"])[0].limited(2)
    # every vehicle zoned whole (no plate excuses it, no size limit): paint that must cost the judge vehicles
    cfg = override(Config(), {"vehicles.zone_plate_score": 1.0, "vehicles.zone_max_vehicle_px": 0.0,
                              "vehicles.zone_width": 1.0, "vehicles.zone_height": 1.0, "vehicles.zone_y": 0.5})
    r = evaluate.evaluate_set(evaluate.pipeline_for(cfg).process, dev, keep_per_image=True, judge=judge,
                              style=cfg.mask)
    u = r["utility"]
    assert u["style"] == "pixelate" and u["judge"]["model"]["name"] == "yolox_nano"
    for name in UTILITY_CLASSES:
        assert u[name]["found_raw"] == sum(row[name][1] for row in r["per_image"])
        assert u[name]["still_found"] == sum(row[name][0] for row in r["per_image"])
    assert u["person"]["found_raw"] > 0 and u["vehicle"]["found_raw"] > 0
    # paint destroys something here, never more than all
    assert 0 <= u["vehicle"]["still_found"] < u["vehicle"]["found_raw"]
    idle = override(cfg, {"detect.face.min_box_px": (16384.0,), "detect.face.tiles.enabled": False,
                          "detect.plate.enabled": False, "detect.context.enabled": False})  # paints nothing: everything is still there
    same = evaluate.evaluate_set(evaluate.pipeline_for(idle).process, dev, judge=judge, style=idle.mask)
    assert same["overmask_share"] == 0
    assert {n: same["utility"][n]["share"] for n in UTILITY_CLASSES} == {"person": 1.0, "vehicle": 1.0}
    assert {n: same["utility"][n]["found_raw"] for n in UTILITY_CLASSES} == {
        n: u[n]["found_raw"] for n in UTILITY_CLASSES}


def test_cli_eval_dataset_reports_utility(tmp_path, capsys):
    from edge.cli import main

    out = tmp_path / "r.json"
    assert main(["eval", "--dataset", "plates", "--limit", "2", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert set(r["utility"]) >= {"person", "vehicle", "style", "judge"}
    assert r["utility"]["vehicle"]["found_raw"] >= 1  # openalpr photos are of cars
    printed = capsys.readouterr().out
    assert "vehicles kept" in printed and "kept: of the persons" in printed
    assert main(["eval", "--dataset", "plates", "--limit", "1", "--no-utility", "--json", str(out),
                 "--report", str(tmp_path / "rep")]) == 0
    r = json.loads(out.read_text())
    assert "utility" not in r and r["report"] == str(tmp_path / "rep/index.html")
    page = (tmp_path / "rep/index.html").read_text()
    assert "openalpr_dev" in page and "persons and vehicles still found" not in page  # no judge, no plot of it


@pytest.mark.parametrize("status, style, expected", [
    ("masked", "solid", "region"),  # the region painted in the style, the rest untouched
    ("masked", "pixelate", "region"),
    ("masked_whole", "pixelate", "whole"),  # the fail-closed fill is solid whatever the style
    ("dropped", "pixelate", None),  # nothing left the pipeline
])
def test_in_style_is_what_the_pipeline_hands_out(tmp_path, status, style, expected):
    from edge.frame import Frame, MaskedFrame
    from edge.mask import MaskStyle

    rng = np.random.default_rng(1)
    original = rng.integers(1, 255, (40, 60, 3), np.uint8)
    regions = np.array([[0, 0, 60, 40]] if status == "masked_whole" else [[10, 10, 30, 30]], np.int32)
    out = None if status == "dropped" else MaskedFrame(Frame(original.copy(), "t", 0, 0, 0, "x"), regions,
                                                       Detections(), status, {})
    s = evaluate.Scored(evaluate.Item(tmp_path / "x.png", np.zeros((0, 4), np.float32), 0), np.zeros((0, 4)),
                        np.zeros((40, 60), bool), 0.0, status == "dropped", original, regions, out)
    got = s.in_style(MaskStyle(style=style))
    if expected is None:
        assert got is None
    elif expected == "whole":
        assert (got == 0).all()
    else:
        assert (got[10:30, 10:30] != original[10:30, 10:30]).any()
        outside = np.ones((40, 60), bool)
        outside[10:30, 10:30] = False
        np.testing.assert_array_equal(got[outside], original[outside])
    np.testing.assert_array_equal(s.original, original)  # painted on a copy
