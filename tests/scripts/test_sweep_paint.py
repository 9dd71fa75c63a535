"""The paint sweep: cached detections replayed through the product's paint stages and scored as eval scores."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import load_script
from edge import compose
from edge.eval.evaluate import DevSet, Item
from edge.frame import PLATE

CFG = ["mask.style=solid", "mask.plate_margin=0.0", "mask.min_margin_px=0"]


@pytest.fixture(scope="module")
def sweep():
    yield load_script("sweep_paint")
    sys.modules.pop("sweep_paint", None)


def one_image(cfg, car, plate_found):
    """A 200x400 frame with one labelled plate [180, 150, 220, 160] in a car; the cache holds the car and,
    when `plate_found`, the plate box itself."""
    classes = compose.class_table(cfg)
    rows = [[*car, 0.9, classes.id("vehicle")]]
    if plate_found:
        rows.append([180, 150, 220, 160, 0.8, PLATE])
    item = Item(Path("a.png"), np.array([[180, 150, 220, 160]], np.float32), PLATE)
    dev = DevSet("set", [item], ("plate",))
    return [dev], {"set/a.png": np.array(rows, np.float32), "set/a.png#shape": np.array([200, 400])}


@pytest.mark.parametrize("found, zones, overmask", [
    (True, 0, 0.0),  # the plate found and painted as boxed: no zone, nothing outside the label
    # no plate found: the centred car's zone, 0.5 x 100 by 0.45 x 50 px at y 125 + 0.62 x 50, covers the plate;
    # its 50 x 22.5 px (rounded out to 50 x 24) minus the 40 x 10 plate is over-masking
    (False, 1, (50 * 24 - 400) / 80000),
])
def test_zones_fire_only_for_plateless_vehicles_and_their_cost_is_counted(sweep, found, zones, overmask):
    cfg = compose.load_config(None, CFG)
    sets, cache = one_image(cfg, [150, 125, 250, 175], found)
    r = sweep.score_point(cfg, sets, cache)["set"]
    assert r["plate"]["protected"] == 1.0
    assert r["zones_per_frame"] == zones and r["zoned_vehicle_share"] == zones
    assert r["overmask"] == pytest.approx(overmask, abs=1e-5)
    assert r["zone_only_overmask"] == pytest.approx(overmask, abs=1e-5)


@pytest.mark.parametrize("floor, zones", [(0.5, 0), (0.8, 0), (0.9, 1)])
def test_a_min_score_replays_a_higher_threshold(sweep, floor, zones):
    # the cached plate (0.8) is dropped below the floor: its car then gets a zone
    cfg = compose.load_config(None, CFG)
    sets, cache = one_image(cfg, [150, 125, 250, 175], True)
    r = sweep.score_point(cfg, sets, cache, min_score={"plate": floor})["set"]
    assert r["zones_per_frame"] == zones and r["plate"]["protected"] == 1.0


def test_a_flat_weak_box_spawns_no_zone(sweep):
    cfg = compose.load_config(None, CFG)
    sets, cache = one_image(cfg, [10, 140, 390, 190], False)  # 380 x 50: 7.6 x 1, 0.95 of the frame
    cache["set/a.png"][0, 4] = 0.3
    r = sweep.score_point(cfg, sets, cache)["set"]
    assert r["zones_per_frame"] == 0 and r["plate"]["protected"] == 0.0 and r["overmask"] == 0.0


@pytest.mark.parametrize("args, message", [
    (["--grid", "mask.margin=nan"], "--grid: "),
    (["--grid", "mask.no_such_key=1"], "--grid: "),
    (["--set", "detect.face.score_threshold=2"], "score_threshold"),
    (["--grid", "min_score.plate=x"], "expected a score within 0..1"),
    (["--grid", "min_score.ghost=0.5"], "no class 'ghost'"),
    (["--grid", "mask.margin"], "expected KEY=V1,V2"),
    (["--only", "no_such_set"], "no_such_set"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    import subprocess

    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, str(root / "scripts/sweep_paint.py"), "--only", "berlin_dev",
                        "--cache", str(tmp_path / "none.npz"), *args], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert len(r.stderr.strip().splitlines()) == 1
