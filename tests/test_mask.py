"""Masking geometry and styles: exactly the regions computed are painted, and nothing else."""
from __future__ import annotations

import numpy as np
import pytest

from edge import mask
from edge.frame import Detections


def dets(*boxes):
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.ones(len(boxes)), np.zeros(len(boxes)))


def noise(h=120, w=160, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("box, style, expected", [
    # 40x40 box, margin 0.15 -> 6 px each side
    ((50, 40, 90, 80), mask.MaskStyle(margin=0.15, small_box_px=0), (44, 34, 96, 86)),
    # no margin, but the minimum of 2 px
    ((50, 40, 90, 80), mask.MaskStyle(margin=0.0, small_box_px=0), (48, 38, 92, 82)),
    # clipped at the frame border
    ((0, 0, 20, 20), mask.MaskStyle(margin=0.5, small_box_px=0), (0, 0, 30, 30)),
    ((150, 110, 160, 120), mask.MaskStyle(margin=0.5, small_box_px=0), (145, 105, 160, 120)),
    # a 10 px box is small: it gets small_margin (0.35 -> 3.5 px, floored/ceiled outward)
    ((50, 50, 60, 60), mask.MaskStyle(margin=0.1, small_box_px=32, small_margin=0.35), (46, 46, 64, 64)),
])
def test_region_geometry(box, style, expected):
    np.testing.assert_array_equal(mask.regions(dets(box), (120, 160, 3), style), [expected])


def test_margin_grows_as_boxes_shrink():
    style = mask.MaskStyle(margin=0.1, small_box_px=32, small_margin=0.4)
    m = mask.margins(np.array([[64, 64], [32, 32], [24, 24], [16, 16], [8, 8]], np.float32), style)
    assert m[0] == pytest.approx(0.1) and m[1] == pytest.approx(0.1)
    assert m[-1] == pytest.approx(0.4) and m[-2] == pytest.approx(0.4)
    assert m[1] < m[2] < m[3]


def test_empty_detections_paint_nothing():
    img = noise()
    before = img.copy()
    boxes = mask.regions(Detections(), img.shape, mask.MaskStyle())
    assert boxes.shape == (0, 4)
    mask.apply(img, boxes, mask.MaskStyle())
    np.testing.assert_array_equal(img, before)


@pytest.mark.parametrize("style", ["solid", "pixelate", "blur"])
def test_only_painted_map_changes(style):
    img = noise()
    before = img.copy()
    s = mask.MaskStyle(style=style)
    boxes = mask.regions(dets((20, 20, 60, 70), (100, 10, 130, 40)), img.shape, s)
    mask.apply(img, boxes, s)
    painted = mask.painted_map(img.shape, boxes)
    changed = (img != before).any(axis=2)
    assert not changed[~painted].any(), "pixels outside the regions changed"
    # noise is destroyed inside: most painted pixels differ from the original
    assert changed[painted].mean() > 0.8


@pytest.mark.parametrize("size", [10, 14, 24, 60])
def test_pixelate_leaves_no_detail(size):
    """Inside a pixelated box no cell is smaller than min_cell_px: a small face is not just resampled."""
    img = noise(100, 100, seed=size)
    s = mask.MaskStyle(style="pixelate", margin=0.0, small_box_px=0, min_cell_px=4, pixel_cells=6)
    boxes = mask.regions(dets((20, 20, 20 + size, 20 + size)), img.shape, s)
    mask.apply(img, boxes, s)
    x1, y1, x2, y2 = boxes[0]
    roi = img[y1:y2, x1:x2].reshape(-1, 3)
    distinct = len(np.unique(roi, axis=0))
    side = max(x2 - x1, y2 - y1)
    assert distinct <= max(1, min(6, side // 4) + 1) ** 2


def test_solid_fill_is_the_colour():
    img = noise()
    s = mask.MaskStyle(style="solid", color=(0, 0, 255))
    boxes = mask.regions(dets((10, 10, 50, 50)), img.shape, s)
    mask.apply(img, boxes, s)
    x1, y1, x2, y2 = boxes[0]
    assert (img[y1:y2, x1:x2] == (0, 0, 255)).all()


def test_fill_whole():
    img = noise()
    mask.fill_whole(img, mask.MaskStyle(style="blur"))
    assert (img == 0).all()


@pytest.mark.parametrize("kwargs", [{"style": "swirl"}, {"margin": -0.1}, {"pixel_cells": 0}, {"min_cell_px": 0}])
def test_bad_style_rejected(kwargs):
    with pytest.raises(ValueError):
        mask.MaskStyle(**kwargs)
