"""The one-class YOLOX decoder (our own plate model's family): layout checks and the box arithmetic."""
from __future__ import annotations

import numpy as np
import pytest

from edge.detect.families import family_module
from edge.frame import BadDetections

HW = (64, 96)  # 8x12 + 4x6 + 2x3 = 126 anchors
ANCHORS = 126


def output(rows: dict[int, list[float]]) -> list[np.ndarray]:
    out = np.zeros((1, ANCHORS, 6), np.float32)
    for i, values in rows.items():
        out[0, i] = values
    return [out]


@pytest.mark.parametrize("anchor, values, box, score", [
    # stride 8, cell (col 0, row 0): centre (0.5, 0.5) cells, size exp(0) = 1 stride
    (0, [0.5, 0.5, 0.0, 0.0, 0.9, 0.5], [0, 0, 8, 8], 0.45),
    # stride 8, cell (col 3, row 1), a wide box: exp(ln 4) = 4 strides wide
    (15, [0.5, 0.5, np.log(4.0), 0.0, 1.0, 0.8], [(3.5 - 2) * 8, 1 * 8, (3.5 + 2) * 8, 2 * 8], 0.8),
    # stride 16, first cell (after the 96 stride-8 anchors)
    (96, [1.0, 1.0, 0.0, 0.0, 0.6, 0.6], [8, 8, 24, 24], 0.36),
    # stride 32, last cell (col 2, row 1)
    (125, [0.5, 0.5, 0.0, 0.0, 0.7, 1.0], [64, 32, 96, 64], 0.7),
])
def test_one_row_decodes_to_its_box_and_score(anchor, values, box, score):
    xyxy, s, quads = family_module("yolox_single").candidates(output({anchor: values}), HW, 0.3)
    assert quads is None
    np.testing.assert_allclose(xyxy, [box], atol=1e-4)
    np.testing.assert_allclose(s, [score], atol=1e-6)


def test_nothing_above_the_threshold_is_an_empty_0x4_array():
    xyxy, s, _ = family_module("yolox_single").candidates(output({0: [0, 0, 0, 0, 0.5, 0.5]}), HW, 0.3)
    assert xyxy.shape == (0, 4) and s.shape == (0,)


@pytest.mark.parametrize("outputs, problem", [
    ([np.zeros((1, ANCHORS, 85), np.float32)], "expected"),  # the COCO model's 80 classes
    ([np.zeros((1, ANCHORS - 1, 6), np.float32)], "expected"),  # another input size
    ([np.zeros((1, ANCHORS, 6), np.float32)] * 2, "outputs"),
    ([np.full((1, ANCHORS, 6), np.nan, np.float32)], "non-finite"),
])
def test_a_model_that_breaks_the_layout_is_refused(outputs, problem):
    with pytest.raises(BadDetections, match=problem):
        family_module("yolox_single").candidates(outputs, HW, 0.3)
