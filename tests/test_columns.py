"""Columns: one take / concat for every parallel-array container; rows validated once are not validated again."""
from __future__ import annotations

import numpy as np
import pytest

from edge.detect.multiscale import Candidates
from edge.frame import FACE, PLATE, BadDetections, Detections


def dets(n: int, cls: int = FACE, quad: bool = False) -> Detections:
    xyxy = np.tile(np.array([[1, 2, 5, 6]], np.float32), (n, 1)) + np.arange(n, dtype=np.float32)[:, None]
    return Detections(xyxy, np.linspace(0.5, 0.9, n), np.full(n, cls),
                      np.zeros((n, 4, 2), np.float32) if quad else None)


def test_take_selects_every_column_by_index_or_mask():
    d = dets(3, PLATE, quad=True)
    picked = d.take(np.array([2, 0]))
    np.testing.assert_array_equal(picked.xyxy, d.xyxy[[2, 0]])
    np.testing.assert_array_equal(picked.score, d.score[[2, 0]])
    assert picked.class_id.tolist() == [PLATE, PLATE] and picked.quad.shape == (2, 4, 2)
    assert len(d[np.array([True, False, True])]) == 2
    assert isinstance(picked, Detections)


def test_concat_fills_missing_optional_columns_with_nan_and_keeps_order():
    out = Detections.concat([dets(2, FACE), Detections(), dets(1, PLATE, quad=True)])
    assert out.class_id.tolist() == [FACE, FACE, PLATE] and out.quad.shape == (3, 4, 2)
    assert np.isnan(out.quad[:2]).all() and not np.isnan(out.quad[2]).any()
    assert Detections.concat([dets(2), dets(1)]).quad is None


def test_concat_of_nothing_is_the_empty_instance():
    for empty in (Detections.concat([]), Detections.concat([Detections(), Detections()])):
        assert len(empty) == 0 and empty.xyxy.shape == (0, 4) and empty.quad is None
    c = Candidates.concat([])
    assert isinstance(c, Candidates) and c.xyxy.shape == (0, 4) and c.pass_index.dtype == np.int32


def test_constructing_still_validates():
    with pytest.raises(BadDetections):
        Detections([[0, 0, np.nan, 1]], [0.9], [FACE])
    with pytest.raises(BadDetections):
        Detections([[5, 0, 1, 1]], [0.9], [FACE])
