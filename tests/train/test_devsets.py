"""The detection view of a plate model on the dev sets (models/train/devsets.py): matching and the table."""
from __future__ import annotations

import numpy as np
import pytest

from models.train.devsets import matched, table

GT = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], np.float32)


@pytest.mark.parametrize("found, score, gt_hit, box_hit", [
    ([], [], [False, False], []),
    ([[0, 0, 10, 10]], [0.9], [True, False], [True]),
    # two boxes on one plate: the better-scored one matches, the other is a false box
    ([[0, 0, 10, 10], [1, 0, 11, 10]], [0.5, 0.9], [True, False], [False, True]),
    # IoU 1/3 < 0.5: no match
    ([[5, 0, 15, 10]], [0.9], [False, False], [False]),
    ([[0, 0, 10, 10], [20, 0, 30, 10], [50, 50, 60, 60]], [0.3, 0.4, 0.5], [True, True], [True, True, False]),
])
def test_greedy_matching_at_iou_half(found, score, gt_hit, box_hit):
    g, b = matched(GT, np.array(found, np.float32).reshape(-1, 4), np.array(score, np.float32))
    assert g.tolist() == gt_hit and b.tolist() == box_hit


def test_the_table_counts_found_plates_and_false_boxes_per_threshold():
    records = [(GT, np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32), np.array([0.5, 0.2], np.float32)),
               (GT[:0], np.zeros((0, 4), np.float32), np.zeros(0, np.float32))]
    rows = {r["threshold"]: r for r in table(records, floor=0.1)}
    assert rows[0.1]["found"] == 0.5 and rows[0.1]["false_per_frame"] == 0.5 and rows[0.1]["plates"] == 2
    assert rows[0.3]["found"] == 0.5 and rows[0.3]["false_per_frame"] == 0.0
    assert rows[0.6]["found"] == 0.0
    assert rows[0.1]["buckets"]["8-16"] == (0.5, 2)  # both plates are 10 px: sqrt of area
