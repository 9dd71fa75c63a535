"""The overlay: outlines and labels on a copy of masked pixels, coloured by class, dashed where held."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import WIDER, need
from edge import mask, overlay
from edge.frame import ClassTable, Detections, Frame, MaskedFrame
from edge.pipeline import Pipeline
from edge.track import Tracker

CLASSES = ClassTable.of(["head", "plate_zone"])
FACES = "7_Cheering_Cheering_7_118.jpg"


def masked(image, dets: Detections, held=None, status="masked", classes=CLASSES, style=mask.MaskStyle()):
    """A MaskedFrame as the pipeline makes it: regions from the detections, painted in place."""
    image = image.copy()
    regions = mask.regions(dets, image.shape, style)
    mask.apply(image, regions, style)
    held = np.zeros(len(dets), bool) if held is None else np.asarray(held, bool)
    return MaskedFrame(Frame(image, "cam", 1, 0, 0, "f"), regions, dets, status, {}, (), Detections(), held)


def noise(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)


def edge_pixels(image, box):
    """The pixels on a box's bottom edge, between its corners (the label tab sits on the top edge)."""
    x1, _, x2, y2 = box
    return image[y2, x1 + 1:x2]


@pytest.mark.parametrize("name, score, held, expected", [
    ("face", 0.873, False, "face 0.87"),
    ("plate_zone", 0.28, True, "plate_zone 0.28 held"),
    ("head", None, False, "head"),
])
def test_label_says_class_score_and_held(name, score, held, expected):
    assert overlay.label_of(name, score, held) == expected


@pytest.mark.parametrize("cls", ["face", "plate", "head", "plate_zone"])
def test_each_class_is_outlined_in_its_own_colour(cls):
    image = np.full((400, 600, 3), 128, np.uint8)
    box = np.array([[200, 200, 360, 330]], np.int32)
    out = overlay.draw_regions(image, box, [overlay.label_of(cls, 0.9, False)])
    top = edge_pixels(out, box[0])
    colour = overlay.CLASS_COLOURS[cls]
    assert (top == colour).all(axis=1).mean() > 0.9, f"{cls}: outline not in {colour}"
    assert len(set(overlay.CLASS_COLOURS.values())) == len(overlay.CLASS_COLOURS)
    assert not set(overlay.CLASS_COLOURS.values()) & set(overlay.TRUTH_COLOURS.values())


@pytest.mark.parametrize("held, solid", [(False, True), (True, False)])
def test_held_regions_are_dashed(held, solid):
    image = np.zeros((400, 600, 3), np.uint8)
    box = np.array([[100, 150, 500, 350]], np.int32)
    out = overlay.draw_regions(image, box, ["face 0.50" + (" held" if held else "")], [held])
    drawn = (edge_pixels(out, box[0]) > 0).any(axis=1)
    assert drawn.mean() > 0.3  # outlined either way
    assert drawn.all() == solid  # a held outline has gaps


@pytest.mark.parametrize("h, w", [(1080, 1920), (416, 416), (240, 320)])
def test_draws_on_a_copy_and_only_near_the_regions(h, w):
    image = noise(h, w)
    before = image.copy()
    box = np.array([[w // 3, h // 3, w // 2, h // 2]], np.int32)
    out = overlay.draw_regions(image, box, ["plate 0.91"])
    assert np.array_equal(image, before), "the input image was drawn on"
    changed = np.argwhere((out != image).any(axis=2))
    style = overlay.style_for(image.shape)
    _, th, base = style.text_size("plate 0.91")
    reach = th + base + 4 * style.thickness  # the label tab above the box, and the outline's width
    assert changed[:, 0].min() >= box[0, 1] - reach and changed[:, 0].max() <= box[0, 3] + style.thickness
    assert changed[:, 1].min() >= box[0, 0] - style.thickness


@pytest.mark.parametrize("h, w, min_text_px", [(1080, 1920, 14), (416, 416, 8), (416, 740, 8)])
def test_labels_are_readable_at_small_and_full_hd_sizes(h, w, min_text_px):
    style = overlay.style_for((h, w, 3))
    _, text_h, _ = style.text_size("face 0.87 held")
    assert text_h >= min_text_px
    assert text_h <= h / 20  # a label, not a banner over the frame


@pytest.mark.parametrize("box", [[0, 0, 50, 40], [570, 360, 600, 400], [0, 0, 600, 400]])
def test_labels_stay_inside_the_image_at_its_edges(box):
    image = np.zeros((400, 600, 3), np.uint8)
    out = overlay.draw_regions(image, np.array([box]), ["plate_zone 0.28 held"], [True])
    assert out.shape == image.shape and (out > 0).any()


def test_truth_boxes_are_green_when_protected_and_red_when_leaked():
    image = np.full((300, 500, 3), 128, np.uint8)
    boxes = np.array([[20, 100, 120, 200], [300, 100, 420, 220]], np.float32)
    out = overlay.draw_truth(image, boxes, [True, False])
    for box, colour in zip(boxes.astype(int), (overlay.TRUTH_COLOURS[True], overlay.TRUTH_COLOURS[False])):
        assert (edge_pixels(out, box) == colour).all(axis=1).mean() > 0.9


@pytest.mark.parametrize("call", [
    lambda img: overlay.draw_regions(img, np.zeros((2, 4)), ["face"]),
    lambda img: overlay.draw_regions(img, np.zeros((1, 4)), ["face"], [True, False]),
    lambda img: overlay.draw_truth(img, np.zeros((2, 4)), [True]),
])
def test_mismatched_lengths_are_refused(call):
    with pytest.raises(ValueError):
        call(np.zeros((10, 10, 3), np.uint8))


@pytest.mark.parametrize("xyxy, expected", [
    ([[10, 10, 50, 50], [60, 60, 90, 90]], [0, 1]),
    # a box off the frame paints nothing and gets no region: the others keep their labels
    ([[10, 10, 50, 50], [500, 500, 520, 520], [60, 60, 90, 90]], [0, 2]),
    ([[-80, -80, -60, -60], [60, 60, 90, 90]], [1]),
])
def test_regions_are_paired_with_the_detections_they_came_from(xyxy, expected):
    dets = Detections(np.array(xyxy, np.float32), np.full(len(xyxy), 0.9), np.zeros(len(xyxy), np.int32))
    regions = mask.regions(dets, (200, 200, 3), mask.MaskStyle())
    assert overlay.pair_regions(regions, dets.xyxy, (200, 200)).tolist() == expected


@pytest.mark.parametrize("held, expected", [
    ([False, False], ["face 0.91", "plate_zone 0.28"]),
    ([False, True], ["face 0.91", "plate_zone 0.28 held"]),
])
def test_a_masked_frames_regions_are_labelled_from_its_detections(held, expected):
    dets = Detections(np.array([[40, 40, 90, 100], [200, 150, 380, 230]], np.float32), [0.91, 0.28],
                      [CLASSES.id("face"), CLASSES.id("plate_zone")])
    item = masked(noise(300, 400), dets, held)
    labels, flags = overlay.region_labels(item, CLASSES)
    assert labels == expected and flags == held
    out = overlay.annotate(item, CLASSES)
    inside = item.regions[0]
    x1, y1, x2, y2 = inside + np.array([6, 6, -6, -6])
    # the painted pixels stay painted: outlines go around them, no unmasked pixel comes back
    assert np.array_equal(out[y1:y2, x1:x2], item.frame.image[y1:y2, x1:x2])


def test_a_frame_masked_whole_says_so():
    image = np.zeros((120, 160, 3), np.uint8)
    item = MaskedFrame(Frame(image, "cam", 1, 0, 0), np.array([[0, 0, 160, 120]], np.int32), Detections(),
                       "masked_whole", {})
    assert overlay.region_labels(item) == ([overlay.WHOLE_LABEL], [False])
    assert (overlay.annotate(item) != image).any()


def test_the_pipeline_marks_held_rows_and_the_overlay_labels_them(face_detector):
    """Real YuNet finds the faces; on the next frame (a blank of the same size) it finds none, and the
    real tracker holds them: those rows come out marked held."""
    image = cv2.imread(str(need(WIDER / "images" / FACES)))
    pipe = Pipeline(face_detector, mask.MaskStyle(), tracker=Tracker())
    first = pipe.process(Frame(image.copy(), "cam", 1, 0, 0))
    second = pipe.process(Frame(np.zeros_like(image), "cam", 2, 0, 0))
    assert isinstance(first, MaskedFrame) and isinstance(second, MaskedFrame)
    assert len(first.detections) > 0 and not first.held.any() and len(first.held) == len(first.detections)
    assert len(second.detections) == len(first.detections) and second.held.all()
    labels, flags = overlay.region_labels(second)
    assert all(t.endswith(" held") for t in labels) and all(flags)
    labels, flags = overlay.region_labels(first)
    assert all(t.startswith("face ") and not t.endswith("held") for t in labels) and not any(flags)
