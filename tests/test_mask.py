"""Masking geometry and styles: exactly the regions computed are painted, and nothing else."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import WIDER

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


@pytest.mark.parametrize("cls, tight, expected", [
    (1, [1], (48, 38, 92, 82)),  # a plate: plate_margin 0.05 -> 2 px (the minimum) each side
    (1, None, (44, 34, 96, 86)),  # no tight classes named: the face margin 0.15 -> 6 px
    (0, [1], (44, 34, 96, 86)),  # a face is never tight
    (3, [1, 3], (48, 38, 92, 82)),
])
def test_plates_and_plate_zones_are_painted_tightly(cls, tight, expected):
    style = mask.MaskStyle(margin=0.15, small_box_px=0, plate_margin=0.05)
    d = Detections(np.array([[50, 40, 90, 80]], np.float32), np.ones(1), np.array([cls]))
    got = mask.regions(d, (120, 160, 3), style, None if tight is None else np.array(tight))
    np.testing.assert_array_equal(got, [expected])


def test_tight_classes_are_plates_and_plate_zones():
    from edge.frame import ClassTable
    table = ClassTable.of(["face", "plate", "head", "plate_zone"], ["person", "vehicle"])
    assert sorted(mask.tight_ids(table).tolist()) == sorted([table.id("plate"), table.id("plate_zone")])
    assert mask.tight_ids(None).tolist() == [1]


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


# ------------------------------------------------------------------------------------------------
# the weakest accepted setting of each style still hides a face of any size

WEAKEST = {
    "pixelate": mask.MaskStyle(style="pixelate", margin=0.0, small_box_px=0, min_margin_px=0, pixel_cells=8,
                               min_cell_px=2),
    "blur": mask.MaskStyle(style="blur", margin=0.0, small_box_px=0, min_margin_px=0, blur_fraction=1 / 3),
    "solid": mask.MaskStyle(style="solid", margin=0.0, small_box_px=0, min_margin_px=0),
}


@pytest.mark.parametrize("kwargs", [{"pixel_cells": 9}, {"pixel_cells": 64}, {"min_cell_px": 1},
                                    {"blur_fraction": 0.33}, {"blur_fraction": 0.05}, {"small_box_px": float("inf")},
                                    {"small_box_px": float("nan")}, {"margin": float("nan")}])
def test_styles_that_would_not_hide_a_face_are_refused(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        mask.MaskStyle(**kwargs)


def runs(line: np.ndarray) -> int:
    """Constant runs along the first axis: the cells a pixelated row or column is made of."""
    return 1 + int((line[1:] != line[:-1]).any(axis=tuple(range(1, line.ndim))).sum())


@pytest.mark.parametrize("w, h", [(2, 2), (3, 3), (4, 7), (8, 8), (9, 9), (15, 15), (16, 16), (17, 11), (31, 40),
                                  (64, 64), (200, 120), (500, 500)])
def test_weakest_pixelate_has_at_most_8_cells_of_2_px_and_changes_every_box(w, h):
    img = noise(520, 520, seed=w * 1000 + h)
    before = img.copy()
    style = WEAKEST["pixelate"]
    boxes = mask.regions(dets((10, 10, 10 + w, 10 + h)), img.shape, style)
    mask.apply(img, boxes, style)
    x1, y1, x2, y2 = boxes[0]
    roi = img[y1:y2, x1:x2]
    side = max(w, h)
    assert runs(roi) <= min(8, -(-side // 2)) and runs(roi.transpose(1, 0, 2)) <= min(8, -(-side // 2))
    assert (roi != before[y1:y2, x1:x2]).any(axis=2).mean() > 0.5, "the box came back (nearly) unchanged"


def fine_detail(gray: np.ndarray, side: int) -> np.ndarray:
    """What is left of a crop after removing everything coarser than 1/32 of the face: eyes, mouth, edges."""
    gray = gray.astype(np.float32)
    return gray - cv2.GaussianBlur(gray, (0, 0), side / 32)


def real_faces(wider_gt, count: int = 60, min_side: int = 16):
    """(image, box) for the first `count` annotated faces of at least `min_side` px in wider_dev."""
    out = []
    for name, boxes in sorted(wider_gt.items()):
        image = cv2.imread(str(WIDER / "images" / name))
        for box in boxes:
            if min(box[2] - box[0], box[3] - box[1]) >= min_side:
                out.append((image, box))
        if len(out) >= count:
            return out
    return out


@pytest.mark.parametrize("style_name", ["pixelate", "blur", "solid"])
def test_weakest_style_removes_the_detail_of_real_faces(wider_gt, tmp_path, style_name):
    style = WEAKEST[style_name]
    energy, correlation, examples = [], [], []
    for image, box in real_faces(wider_gt):
        img = image.copy()
        boxes = mask.regions(dets(tuple(box)), img.shape, style)
        mask.apply(img, boxes, style)
        x1, y1, x2, y2 = boxes[0]
        side = max(x2 - x1, y2 - y1)
        before = fine_detail(cv2.cvtColor(image[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY), side)
        after = fine_detail(cv2.cvtColor(img[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY), side)
        energy.append(float((after ** 2).mean() / max((before ** 2).mean(), 1e-6)))
        correlation.append(float((before * after).sum() / np.sqrt((before ** 2).sum() * (after ** 2).sum() + 1e-9)))
        if len(examples) < 6:
            examples.append(np.hstack([cv2.resize(image[y1:y2, x1:x2], (96, 96), interpolation=cv2.INTER_NEAREST),
                                       cv2.resize(img[y1:y2, x1:x2], (96, 96), interpolation=cv2.INTER_NEAREST)]))
    assert len(energy) >= 60
    example = tmp_path / f"weakest-{style_name}.png"  # original | masked, one face a row
    assert cv2.imwrite(str(example), np.vstack(examples)) and cv2.imread(str(example)) is not None
    if style_name == "blur":
        # blurred: the face's fine detail is gone (measured: median 0.8%, worst 19% of its energy left)
        assert np.median(energy) < 0.05 and max(energy) < 0.3
    else:
        # pixelated or filled: what fine structure is left are cell edges, which do not follow the face's own
        # (measured for pixelate: median correlation 0.09, worst 0.40; within each cell nothing is left)
        assert np.median(correlation) < 0.15 and max(correlation) < 0.5
