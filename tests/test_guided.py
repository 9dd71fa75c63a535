"""Plates searched in vehicle crops: real YOLOX-Nano and LPD-YuNet sessions on a real berlin_dev frame."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import SHARED, FakeDetector, need
from edge import compose, vehicles as veh
from edge.detect.guided import GuidedDetector
from edge.frame import PLATE, Detections, DroppedFrame, Frame, MaskedFrame
from edge.mask import painted_map

BERLIN = SHARED / "data" / "eval" / "dashcam" / "berlin_dev"
FRAME = "26bbd04e-7921-4401-984d-0906d621822b.jpg"  # three plates; the full-frame pass finds none of them
SETS = ['detect.plate.model="lpd_yunet"',  # the frame's property below was measured with LPD-YuNet
        "detect.context.enabled=true", "detect.plate.enabled=true", "detect.plate.score_threshold=0.3",
        "mask.style=solid", "service.deadline_ms=0"]


def annotated(name: str) -> tuple[np.ndarray, np.ndarray]:
    from edge.eval.evaluate import read_list

    item = next(i for i in read_list(need(BERLIN / "gt_xyxy.txt")) if i.path.name == name)
    return cv2.imread(str(need(item.path))), item.boxes[item.labels() == PLATE]


def covered(gt: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Per annotated box, whether one box holds 70% of it (the dev sets' 'protected' share)."""
    return (veh.inside_share(gt, boxes) >= 0.7).any(axis=1) if len(boxes) else np.zeros(len(gt), bool)


@pytest.fixture(scope="module")
def detectors():
    cfg = compose.load_config(None, SETS + ["detect.face.enabled=false"])
    full, guided = compose.build_detector(cfg).detectors
    assert isinstance(guided, GuidedDetector)
    return full, guided


def test_the_guided_stage_finds_plates_the_full_frame_pass_misses(detectors):
    full, guided = detectors
    image, gt = annotated(FRAME)
    assert len(gt) == 3
    whole = full.detect(image)
    found = guided.detect(image)
    crops = found.xyxy[found.class_id == PLATE]
    assert not covered(gt, whole.xyxy).any()
    assert covered(gt, crops).sum() >= 1
    h, w = image.shape[:2]
    assert (crops[:, 0] >= 0).all() and (crops[:, 2] <= w).all() and (crops[:, 3] <= h).all()
    # the context boxes come along, unchanged: the pipeline splits them off
    classes = compose.class_table(compose.load_config(None, SETS))
    assert (found.class_id == classes.id("vehicle")).sum() >= 3
    assert {m[0] for m in guided.models} == {"yolox_nano", "lpd_yunet"}


def test_every_painted_region_covers_its_boxes_on_a_real_frame():
    """The whole pipeline with guided plates, the filter and plate zones: the invariant holds, plates are painted."""
    image, gt = annotated(FRAME)
    cfg = compose.load_config(None, SETS + ["vehicles.filter=true"])
    out = compose.build_pipeline(cfg).process(Frame(image.copy(), "cam", 0, 0, 0))
    assert isinstance(out, MaskedFrame) and out.status == "masked"
    painted = painted_map(image.shape, out.regions)
    for x1, y1, x2, y2 in out.detections.xyxy:
        assert painted[int(np.floor(y1)):int(np.ceil(y2)), int(np.floor(x1)):int(np.ceil(x2))].all()
    # by its plate box or its vehicle's zone; the third plate's vehicle is not found by the context stage
    shares = [painted[y1:y2, x1:x2].mean() for x1, y1, x2, y2 in gt.astype(int)]
    assert sum(s >= 0.7 for s in shares) >= 2, shares
    classes = compose.class_table(cfg)
    assert (out.detections.class_id == classes.id("plate_zone")).any()
    assert painted.mean() < 0.15


@pytest.mark.parametrize("on_failure", ["drop", "mask_whole"])
def test_a_failing_plate_model_in_crops_drops_the_frame_or_masks_it_whole(monkeypatch, on_failure):
    image, _ = annotated(FRAME)
    cfg = compose.load_config(None, SETS + [f"service.on_failure={on_failure}", "detect.plate.enabled=false"])
    pipe = compose.build_pipeline(cfg)
    guided = next(d for d in pipe.detector.detectors if isinstance(d, GuidedDetector))

    def broken(images, watch=None):
        raise RuntimeError("plate model failed")

    monkeypatch.setattr(guided.plates, "detect_batch", broken)
    out = pipe.process(Frame(image.copy(), "cam", 0, 0, 0))
    if on_failure == "drop":
        assert isinstance(out, DroppedFrame) and out.reason == "detector_error"
    else:
        assert isinstance(out, MaskedFrame) and out.status == "masked_whole" and (out.frame.image == 0).all()


@pytest.mark.parametrize("cars, calls, shapes", [
    ([], 0, set()),  # no vehicle: no plate call at all
    ([[100, 100, 400, 300], [500, 200, 560, 240], [0, 0, 30, 30]], 1, {(240, 320, 3)}),  # one call, one shape
    ([[i * 60, 0, i * 60 + 50, 40] for i in range(12)], 1, {(240, 320, 3)}),  # at most max_vehicles crops
])
def test_crops_share_one_call_of_one_shape(cars, calls, shapes):
    seen = []

    class Cars(FakeDetector):
        def detect(self, image, watch=None):
            return Detections(np.array(cars, np.float32).reshape(-1, 4), np.full(len(cars), 0.9), np.full(len(cars), 5))

    class Plates(FakeDetector):
        def detect_batch(self, images, watch=None):
            seen.append([i.shape for i in images])
            return [Detections(np.array([[0, 0, 320, 240]], np.float32), [0.8], [PLATE]) for _ in images]

    guided = GuidedDetector(Cars(), vehicle_id=5, params=veh.VehicleParams(max_vehicles=8), plates=Plates())
    out = guided.detect(np.zeros((720, 1280, 3), np.uint8))
    assert len(seen) == calls and {s for call in seen for s in call} == shapes
    n = len(seen[0]) if seen else 0
    assert n == min(8, sum(1 for c in cars if c[2] - c[0] >= 40))
    assert (out.class_id == PLATE).sum() == n  # each crop's whole-input box maps back inside the frame
    plates = out.xyxy[out.class_id == PLATE]
    assert (plates >= 0).all() and (plates[:, 2] <= 1280).all() and (plates[:, 3] <= 720).all()


@pytest.mark.parametrize("score, crops", [(0.28, 1), (0.8, 2)])
def test_a_box_that_cannot_be_a_vehicle_gets_no_crop(score, crops):
    """The highway clip's weak 750 px "vehicle" flat on the road is searched for plates only when confident."""
    seen = []

    class Cars(FakeDetector):
        def detect(self, image, watch=None):
            return Detections(np.array([[100, 430, 850, 710], [900, 400, 1100, 520]], np.float32),
                              np.array([score, 0.9], np.float32), np.array([5, 5]))

    class Plates(FakeDetector):
        def detect_batch(self, images, watch=None):
            seen.append(len(images))
            return [Detections() for _ in images]

    GuidedDetector(Cars(), vehicle_id=5, params=veh.VehicleParams(), plates=Plates()).detect(
        np.zeros((720, 1280, 3), np.uint8))
    assert seen == [crops]


def test_occupants_are_searched_in_the_windscreen_band_of_each_vehicle():
    seen = []

    class Cars(FakeDetector):
        def detect(self, image, watch=None):
            return Detections(np.array([[100, 100, 420, 340]], np.float32), [0.9], [5])

    class Faces(FakeDetector):
        def detect_batch(self, images, watch=None):
            seen.extend(i.shape for i in images)
            return [Detections(np.array([[0, 0, 64, 32]], np.float32), [0.8], [0]) for _ in images]

    params = veh.VehicleParams(guided=False, occupants=True, band_top=0.0, band_bottom=0.5)
    out = GuidedDetector(Cars(), vehicle_id=5, params=params, faces=Faces()).detect(np.zeros((720, 1280, 3), np.uint8))
    assert seen == [(params.occupant_height, params.occupant_width, 3)]
    face = out.xyxy[out.class_id == 0]
    # the band is 320 x 120 px, widened to the 2:1 input: 320 x 160 around its centre (y 80..240), zoom 2
    np.testing.assert_allclose(face, [[100, 80, 132, 96]], atol=1e-3)
