"""The plate configs load, protect real plates through the real pipeline, and scripts/bench_plates.py runs end to end."""
from __future__ import annotations

import json

import pytest

from conftest import PLATES, ROOT, load_script, need
from edge import config
from edge.eval.evaluate import evaluate, for_dataset, pipeline_for, read_openalpr

CONFIGS = {
    "configs/plates-native.toml": (False, True),
    "configs/plates-far.toml": (False, True),
    "configs/faces-plates-cpu.toml": (True, True),
}


@pytest.mark.parametrize("path, enabled", CONFIGS.items())
def test_configs_load_with_their_classes(path, enabled):
    cfg = config.load(ROOT / path)
    assert (cfg.detect.face.enabled, cfg.detect.plate.enabled) == enabled
    assert cfg.detect.plate.model == "lpd_yunet"


@pytest.mark.parametrize("path, shrink, names", [
    ("configs/plates-native.toml", 1.0, ["eu2", "eu5", "test_001", "test_012"]),
    ("configs/plates-far.toml", 0.25, ["eu2", "eu5"]),
])
def test_recall_configs_protect_these_plates(path, shrink, names):
    items = [i for i in read_openalpr(need(PLATES)) if i.path.stem in names]
    cfg = for_dataset(config.load(ROOT / path), "plates")
    r = evaluate(pipeline_for(cfg).process, items, shrink=shrink)
    assert r["objects"] == len(names)
    assert r["protected"] == len(names)
    assert r["overmask_share"] < 0.03


def test_bench_script_runs_end_to_end(tmp_path):
    need(PLATES)
    bench = load_script("bench_plates")
    out = tmp_path / "bench.json"
    assert bench.main(["--limit", "2", "--skip-timing", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["plates"]) == {label for label, _, _ in bench.RUNS}
    for row in report["plates"].values():
        assert row["objects"] == 2 and row["dropped_frames"] == 0
        assert set(row["targets"]) == {"protected", "overmask"}


def test_bench_timing_table_formats_every_size():
    bench = load_script("bench_plates")
    row = {"faces": {"p50": 20.0}, "faces+plates sequential": {"p50": 60.0},
           "faces+plates concurrent": {"p50": 45.0}, "ratio_concurrent": 2.25}
    text = bench.format_timings({"1280x720": row, "1920x1080": row}, "cpu, contended")
    assert "1280x720" in text and "1920x1080" in text and "2.25x" in text and "contended" in text


@pytest.mark.parametrize("max_box_px, expect_boxes", [((200.0,), False), ((0.0,), True)])
def test_gpu_config_plate_cap_removes_the_huge_boxes_of_flat_frames(max_box_px, expect_boxes):
    """At 1080p LPD-YuNet's 1x pass scores huge boxes on a flat grey frame; a 200 px cap drops them (the
    defaults' whole-frame plate pass runs at half size instead)."""
    import numpy as np

    from edge.compose import build_detector

    cfg = config.override(config.load(ROOT / "configs/gpu-1080p.toml"),
                          {"runtime.provider": "cpu", "runtime.graph_preprocess": False, "runtime.fp16": False,
                           "detect.face.enabled": False, "detect.context.enabled": False,
                           "detect.plate.model": "lpd_yunet",  # its property: our own model scores none there
                           "detect.plate.scales": [1.0], "detect.plate.score_threshold": 0.3,
                           "detect.plate.max_box_px": list(max_box_px)})
    detector = build_detector(cfg)
    counts = [len(detector.detect(np.full((1080, 1920, 3), v, np.uint8))) for v in (0, 128, 255)]
    print(f"plate boxes on flat 1080p frames (0, 128, 255), max_box_px={max_box_px}: {counts}")
    assert (sum(counts) > 0) == expect_boxes
