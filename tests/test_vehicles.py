"""What is done with vehicles: crop windows, mapping back, the plausibility filter, plate zones, [vehicles]."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import FakeDetector
from edge import compose, vehicles as veh
from edge.config import ConfigError
from edge.frame import PLATE, Detections, Frame, MaskedFrame
from edge.mask import MaskStyle, painted_map
from edge.pipeline import Pipeline
from edge.vehicles import VehicleParams

CFG = compose.load_config(None, ["detect.context.enabled=true"])
CLASSES = compose.class_table(CFG)
ZONE, VEHICLE, PERSON = (CLASSES.id(n) for n in ("plate_zone", "vehicle", "person"))
CAR = [300.0, 150.0, 500.0, 260.0]  # 200 x 110
PARAMS = VehicleParams(filter=True)


def boxes(*rows) -> np.ndarray:
    return np.array(rows, np.float32).reshape(-1, 4)


@pytest.mark.parametrize("cars, limit, min_px, expected", [
    ([[0, 0, 100, 50], [0, 0, 300, 200], [0, 0, 39, 30]], 8, 40.0, [1, 0]),  # largest first, too narrow out
    ([[0, 0, 100, 50], [0, 0, 300, 200], [0, 0, 200, 100]], 2, 40.0, [1, 2]),  # at most `limit`
    ([], 8, 40.0, []),
    ([[0, 0, 20, 20]], 8, 0.0, [0]),
])
def test_pick_keeps_the_largest_wide_enough_vehicles(cars, limit, min_px, expected):
    assert veh.pick(boxes(*cars), limit, min_px).tolist() == expected


@pytest.mark.parametrize("region, frame_hw, expected_win", [
    # a 200 x 55 band widened to 4:3 around its centre: 200 x 150
    ([300, 205, 500, 260], (1080, 1920), [300, 157, 500, 308]),
    # a tall region: its height sets the window, the width grows
    ([300, 100, 330, 220], (1080, 1920), [235, 100, 395, 220]),
    # a tiny vehicle: never zoomed beyond max_zoom (320 / 4 = 80 px wide)
    ([100, 100, 110, 105], (1080, 1920), [65, 72, 145, 133]),
    # at the frame's corner: shifted inside, not cut
    ([0, 1040, 100, 1080], (1080, 1920), [0, 1005, 100, 1080]),
    ([1880, 0, 1920, 20], (1080, 1920), [1840, 0, 1920, 60]),
    # a frame smaller than the window: clipped to the frame
    ([0, 0, 50, 40], (40, 60), [0, 0, 60, 40]),
])
def test_windows_take_the_input_aspect_and_stay_in_the_frame(region, frame_hw, expected_win):
    win, scale = veh.windows(boxes(region), 320, 240, 4.0, frame_hw)
    assert win[0].tolist() == expected_win
    x0, y0, x1, y1 = win[0]
    assert 0 <= x0 < x1 <= frame_hw[1] and 0 <= y0 < y1 <= frame_hw[0]
    assert scale[0].tolist() == pytest.approx([320 / (x1 - x0), 240 / (y1 - y0)])
    if x1 - x0 >= region[2] - region[0] and y1 - y0 >= region[3] - region[1]:  # the region is inside its window
        assert x0 <= region[0] and region[2] <= x1 and y0 <= region[1] and region[3] <= y1


@pytest.mark.parametrize("found, window, scale, expected", [
    ([[32, 24, 64, 48]], [100, 200, 300, 350], [1.6, 1.6], [[120, 215, 140, 230]]),
    ([[0, 0, 320, 240]], [100, 200, 300, 350], [1.6, 1.6], [[100, 200, 300, 350]]),
    # a model box overshooting the crop is clipped to the window, never beyond the frame
    ([[-10, -5, 400, 300]], [1840, 1020, 1920, 1080], [4.0, 4.0], [[1840, 1020, 1920, 1080]]),
    ([[10, 10, 20, 20]], [0, 0, 80, 60], [0.5, 0.25], [[20, 40, 40, 60]]),
])
def test_boxes_found_in_a_crop_map_back_to_the_frame(found, window, scale, expected):
    out = veh.to_frame(boxes(*found), np.array(window), np.array(scale), (1080, 1920))
    np.testing.assert_allclose(out, np.array(expected, np.float32), atol=1e-3)


@pytest.mark.parametrize("plate, cars, keep", [
    ([370, 225, 430, 243], [CAR], True),  # a plate in the car's lower half
    ([370, 225, 430, 243], [], True),  # in no vehicle, plate-sized: the context stage may have missed its car
    ([0, 0, 600, 200], [], False),  # in no vehicle and larger than any lone plate (lone_max_px)
    ([300, 150, 500, 260], [CAR], False),  # as wide as the car
    ([390, 200, 402, 250], [CAR], False),  # taller than wide
    ([100, 100, 110, 104], [], True),  # small: kept whatever the filter says
    ([600, 225, 660, 243], [CAR], True),  # beside the car: another vehicle's, maybe
    ([305, 235, 495, 258], [CAR], False),  # 95% of the car's width: too wide for a plate of it
    ([470, 225, 530, 243], [CAR], True),  # half of it inside the car box
    ([200, 400, 1100, 760], [CAR, [150, 380, 1200, 800]], False),  # a huge box over the asphalt under a bus-sized box
])
def test_plausibility_keeps_plates_of_vehicles_only(plate, cars, keep):
    assert veh.plausible(boxes(plate), boxes(*cars), PARAMS).tolist() == [keep]


@pytest.mark.parametrize("car, params, expected", [
    ([300, 150, 500, 260], VehicleParams(zone_x=0.5, zone_y=0.7, zone_width=0.4, zone_height=0.3, zone_lean=0.0),
     [360, 210.5, 440, 243.5]),
    # a zone reaching past the box is cut at the box
    ([0, 0, 100, 100], VehicleParams(zone_x=0.5, zone_y=0.95, zone_width=0.5, zone_height=0.3, zone_lean=0.0),
     [25, 80, 75, 100]),
    ([0, 0, 100, 100], VehicleParams(zone_x=0.0, zone_y=0.5, zone_width=1.0, zone_height=1.0, zone_lean=0.0),
     [0, 0, 50, 100]),
    # leaning outward: the car's centre is 0.5 of a half frame right of the frame's centre (frame 800 wide):
    # the zone centre moves 0.2 * 0.5 of the car's width to the right
    ([500, 150, 700, 260], VehicleParams(zone_x=0.5, zone_y=0.5, zone_width=0.4, zone_height=0.2, zone_lean=0.2),
     [580, 194, 660, 216]),
    # ...and to the left on the frame's left side (0.75 of a half frame off: 0.15 of the width); the centre
    # never leaves the box
    ([0, 150, 200, 260], VehicleParams(zone_x=0.5, zone_y=0.5, zone_width=0.4, zone_height=0.2, zone_lean=0.2),
     [30, 194, 110, 216]),
    ([0, 150, 200, 260], VehicleParams(zone_x=0.1, zone_y=0.5, zone_width=0.4, zone_height=0.2, zone_lean=1.0),
     [0, 194, 40, 216]),
    ([300, 150, 500, 260], VehicleParams(zone_x=0.5, zone_y=0.5, zone_width=0.4, zone_height=0.2, zone_lean=0.5),
     [360, 194, 440, 216]),  # a centred car does not lean
])
def test_plate_zones_are_placed_from_the_vehicle_box(car, params, expected):
    assert veh.zones(boxes(car), params, 800)[0].tolist() == pytest.approx(expected)


@pytest.mark.parametrize("car, score, ok", [
    ([100, 430, 850, 710], 0.28, False),  # the highway clip's "vehicle" on the asphalt: 2.7 x 1, 0.59 of the frame
    ([0, 600, 640, 720], 0.25, False),  # the own bonnet at the frame's bottom
    ([100, 430, 850, 710], 0.8, True),  # as flat and wide but confident: a bus side, kept
    ([100, 430, 500, 710], 0.28, True),  # not wide: 0.31 of the frame
    ([100, 300, 850, 710], 0.28, True),  # not flat: 1.8 x 1
    ([600, 400, 640, 410], 0.2, True),  # a distant car is flat in its box, and small
])
def test_boxes_that_cannot_be_vehicles(car, score, ok):
    assert veh.possible(boxes(car), np.array([score], np.float32), (720, 1280), VehicleParams()).tolist() == [ok]


class Fixed(FakeDetector):
    def __init__(self, dets: Detections) -> None:
        self.dets = dets

    def detect(self, image, watch=None):
        return self.dets


def run(rows, params=PARAMS):
    dets = Detections(boxes(*[r[1] for r in rows]), np.full(len(rows), 0.9), np.array([r[0] for r in rows], np.int32))
    image = np.full((300, 600, 3), 200, np.uint8)
    pipe = Pipeline(Fixed(dets), MaskStyle(style="solid"), classes=CLASSES, stages=[veh.PlateZoneStage(params, CLASSES)])
    out = pipe.process(Frame(image, "cam", 0, 0, 0))
    assert isinstance(out, MaskedFrame) and out.status == "masked"
    return out


@pytest.mark.parametrize("rows, expected", [
    ([(VEHICLE, CAR)], [ZONE]),  # no plate found: its zone is painted
    ([(PLATE, [370, 225, 430, 243]), (VEHICLE, CAR)], [PLATE]),  # its plate found: no zone
    ([(PLATE, [390, 160, 410, 250]), (VEHICLE, CAR)], [ZONE]),  # an implausible box out, the car's zone in
    ([(VEHICLE, [10, 10, 40, 40])], []),  # narrower than min_vehicle_px: no zone
])
def test_the_plate_zone_stage(rows, expected):
    out = run(rows)
    assert sorted(out.detections.class_id.tolist()) == sorted(expected)
    painted = painted_map(out.frame.image.shape, out.regions)
    for box in out.detections.xyxy:  # every painted detection lies in painted pixels
        x1, y1, x2, y2 = np.floor(box[:2]).astype(int).tolist() + np.ceil(box[2:]).astype(int).tolist()
        assert painted[y1:y2, x1:x2].all()
    assert (out.frame.image[150:175, 300:500] == 200).all()  # the top of the car is not painted


@pytest.mark.parametrize("params, expected", [
    (VehicleParams(filter=False), [PLATE]),  # the implausible box is kept and counts as the car's plate
    (VehicleParams(filter=True, zones=False), []),
    (VehicleParams(filter=False, zones=False), [PLATE]),
])
def test_filter_and_zones_are_switched_apart(params, expected):
    assert sorted(run([(PLATE, [390, 160, 410, 250]), (VEHICLE, CAR)], params).detections.class_id.tolist()) == expected


def test_without_vehicles_in_the_context_stage_plates_are_left_alone():
    classes = compose.class_table(compose.load_config(None, ["detect.context.enabled=true",
                                                             'detect.context.classes=["person"]']))
    stage = veh.PlateZoneStage(VehicleParams(), classes)
    plates = Detections(boxes([0, 0, 300, 100]), [0.9], [PLATE])
    assert stage.to_paint(plates, Detections(), (480, 640)) is plates
    assert "plate_zone" not in classes.names


@pytest.mark.parametrize("key, value", [
    ("max_vehicles", 0), ("max_vehicles", 1000), ("min_vehicle_px", float("nan")), ("crop_width", 8),
    ("crop_height", 100000), ("max_zoom", float("inf")), ("plate_threshold", 0.0), ("min_aspect", -1.0),
    ("max_aspect", 0.5), ("max_width_share", 0.0), ("zone_y", 1.5), ("zone_width", 0.0), ("band_bottom", 0.0),
    ("face_threshold", 2.0), ("keep_below_px", -1.0), ("crop_lower", 0.0), ("zone_max_vehicle_px", -1.0),
    ("lone_max_px", float("nan")), ("flat_aspect", 0.5), ("flat_width", 1.5), ("flat_score", -0.1),
    ("zone_lean", 2.0), ("zone_lean", float("nan")), ("zone_plate_score", 1.5), ("zone_plate_score", -0.1),
])
def test_bad_vehicle_settings_are_refused_in_one_line(key, value):
    with pytest.raises(ConfigError) as e:
        compose.load_config(None, [f"vehicles.{key}={value!r}".replace("nan", "nan").replace("inf", "inf")])
    assert str(e.value).startswith(f"--set vehicles.{key}=") and key in str(e.value) and "\n" not in str(e.value)


def test_unknown_vehicle_key_is_refused():
    with pytest.raises(ConfigError, match="tyres"):
        compose.load_config(None, ["vehicles.tyres=4"])


@pytest.mark.parametrize("sets, problem", [
    (["detect.context.enabled=true", 'detect.context.classes=["person"]'], "need \"vehicle\" in detect.context.classes"),
    (["detect.context.enabled=true", 'detect.plate.model="nosuch"'], "detect.plate.model: unknown model 'nosuch'"),
    (["detect.context.enabled=true", 'detect.plate.model="yunet_n"'], "detect.plate.model: model yunet_n detects"),
    (["detect.context.enabled=true", "vehicles.occupants=true", 'detect.face.model="lpd_yunet"'],
     "detect.face.model: model lpd_yunet detects"),
])
def test_start_problems_refuse_what_start_up_refuses(sets, problem):
    cfg = compose.load_config(None, sets)
    found = compose.start_problems(cfg, for_replay=True, resolve=False)
    assert any(problem in p for p in found), found


@pytest.mark.parametrize("sets", [
    ["detect.context.enabled=true", 'detect.context.classes=["person"]', "vehicles.guided=false",
     "vehicles.zones=false"],
    ["detect.context.enabled=true"],
    [],  # no context stage: nothing of [vehicles] runs, nothing to refuse
])
def test_consistent_vehicle_settings_raise_no_problem(sets):
    assert compose.start_problems(compose.load_config(None, sets), for_replay=True, resolve=False) == []


def test_start_up_refuses_vehicle_stages_without_vehicles():
    cfg = compose.load_config(None, ["detect.context.enabled=true", 'detect.context.classes=["person"]'])
    with pytest.raises(compose.StartupError) as e:
        compose.build_detector(cfg)
    assert str(e.value) in compose.start_problems(cfg, for_replay=True, resolve=False)


@pytest.mark.parametrize("limit, expected", [(0.0, [ZONE]), (250.0, [ZONE]), (200.0, []), (150.0, [])])
def test_vehicles_wider_than_the_zone_limit_get_no_zone(limit, expected):
    assert run([(VEHICLE, CAR)], VehicleParams(filter=True, zone_max_vehicle_px=limit)).detections.class_id.tolist() == expected


@pytest.mark.parametrize("car, score, zoned", [
    ([300, 150, 500, 260], 0.9, True),
    ([300, 150, 500, 260], 0.25, True),  # a weak but vehicle-shaped box still gets its zone...
    ([10, 200, 590, 300], 0.25, False),  # ...a weak flat box across the frame (5.8 x 1, 0.97 of it) none
    ([10, 200, 590, 300], 0.9, True),
])
def test_zones_only_for_possible_vehicles_and_scored_as_them(car, score, zoned):
    dets = Detections(boxes(car), np.array([score], np.float32), np.array([VEHICLE], np.int32))
    # no size limit: the 580 px boxes are about being a vehicle, not about being near
    out = veh.PlateZoneStage(VehicleParams(zone_max_vehicle_px=0), CLASSES).to_paint(Detections(), dets, (300, 600))
    assert out.class_id.tolist() == ([ZONE] if zoned else [])
    assert out.score.tolist() == pytest.approx([score] if zoned else [])


@pytest.mark.parametrize("plate_score, zone_plate_score, expected", [
    (0.15, 0.0, [PLATE]),  # any kept plate excuses its vehicle (the old rule)
    (0.15, 0.2, [PLATE, ZONE]),  # a weak plate is painted, and the vehicle keeps its zone
    (0.25, 0.2, [PLATE]),  # a plate at or above zone_plate_score excuses it
    (0.2, 0.2, [PLATE]),
])
def test_weak_plates_do_not_excuse_their_vehicle_from_a_zone(plate_score, zone_plate_score, expected):
    plate = Detections(boxes([370, 225, 430, 243]), np.array([plate_score], np.float32), np.array([PLATE], np.int32))
    car = Detections(boxes(CAR), np.array([0.9], np.float32), np.array([VEHICLE], np.int32))
    out = veh.PlateZoneStage(VehicleParams(zone_plate_score=zone_plate_score), CLASSES).to_paint(plate, car, (300, 600))
    assert sorted(out.class_id.tolist()) == sorted(expected)
    assert out.xyxy[0].tolist() == plate.xyxy[0].tolist()  # the plate itself is always kept
