"""The threshold sweep: stored candidates re-scored per threshold exactly as the pipeline would mask them,
and the operating point chosen by the documented rule (lowest threshold within the over-masking budget)."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from conftest import load_script
from edge.detect.multiscale import Candidates, PassSpec
from edge.mask import MaskStyle


@pytest.fixture(scope="module")
def tune():
    yield load_script("tune_thresholds")
    sys.modules.pop("tune_thresholds", None)


def _collected(tune):
    """One 100x100 image, two faces; a true box at 0.8, a weak true box at 0.3, a false box at 0.25."""
    boxes = np.array([[10, 10, 30, 30], [60, 60, 70, 70]], np.float32)
    xyxy = np.array([[10, 10, 30, 30], [60, 60, 70, 70], [0, 70, 40, 100]], np.float32)
    c = Candidates(xyxy, np.array([0.8, 0.3, 0.25], np.float32), np.zeros(3, np.int32), np.zeros(3, bool))
    return [tune.Collected("a.png", (100, 100, 3), boxes, c)]


@pytest.mark.parametrize("threshold, protected, overmask", [
    (0.9, 0, 0.0),
    (0.5, 1, 0.0),
    (0.3, 2, 0.0),
    (0.2, 2, 0.12),  # the false 40x30 box
])
def test_score_masks_what_the_threshold_keeps(tune, threshold, protected, overmask):
    passes = tune.with_threshold((PassSpec(score_threshold=0.99),), {0}, threshold)
    r = tune.score(_collected(tune), passes, MaskStyle(style="solid", margin=0.0, small_margin=0.0,
                                                          min_margin_px=0), 0, 0.45)
    assert r["protected"] == protected
    assert r["overmask_share"] == pytest.approx(overmask)


def test_with_threshold_only_touches_swept_passes(tune):
    passes = (PassSpec(score_threshold=0.5), PassSpec(scale=2.0, score_threshold=0.6))
    assert [p.score_threshold for p in tune.with_threshold(passes, {1}, 0.2)] == [0.5, 0.2]


def _row(t, sm, protected, om):
    return {"threshold": t, "small_margin": sm, "result": {"protected": protected, "overmask_share": om}}


def test_choose_lowest_threshold_within_budget_then_most_protected(tune):
    curve = [_row(0.1, 0.2, 90, 0.08), _row(0.2, 0.2, 80, 0.05), _row(0.3, 0.2, 70, 0.03),
             _row(0.1, 0.3, 95, 0.09), _row(0.2, 0.3, 85, 0.06), _row(0.3, 0.3, 75, 0.045)]
    assert tune.choose(curve, 0.05) == curve[1]  # 0.2 @ 0.2 protects 80 > 0.3 @ 0.3's 75
    assert tune.choose(curve, 0.06) == curve[4]
    assert tune.choose(curve, 0.01) is None


def test_sweep_covers_the_grid(tune):
    curve = tune.sweep(_collected(tune), (PassSpec(),), {0}, (0.2, 0.5), (0.1, 0.3), MaskStyle(style="solid"), 0,
                       0.45)
    assert [(r["threshold"], r["small_margin"]) for r in curve] == [(0.2, 0.1), (0.5, 0.1), (0.2, 0.3), (0.5, 0.3)]
    assert curve[0]["result"]["overmask_share"] > curve[1]["result"]["overmask_share"]
