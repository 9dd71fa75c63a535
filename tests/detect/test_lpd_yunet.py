"""LPD-YuNet: priors match the real graph at any input size, decoding is exact on hand-made outputs and finds
the annotated plates of real openalpr photos, the sanity filter drops the model's huge bogus boxes, and any
malformed output raises (fail closed)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import PLATES, host, need
from edge.detect.families import lpd_yunet
from edge.detect.boxes import iou_matrix
from edge.frame import PLATE, BadDetections
from edge.mask import MaskStyle, regions

STORED_HW = (240, 320)


@pytest.fixture(scope="module")
def card_and_path():
    from edge.models import registry

    card = registry.card("lpd_yunet")
    try:
        return card, registry.resolve(card)
    except registry.ModelError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def stored_model(card_and_path):
    """The graph exactly as stored: static 1x3x240x320 input."""
    from edge.detect.backends.session import OnnxModel

    card, path = card_and_path
    return OnnxModel(path, name=card.name, sha256=card.sha256)


@pytest.fixture(scope="module")
def plate_model():
    """The model as the product loads it (edge.runtime.service.load_model): input dims rewritten to N x 3 x H x W."""
    from edge.compose import load_model
    from edge.config import Config

    return load_model(Config(), "lpd_yunet")[0].model  # the session behind the host backend


def plate_detector(model, scale: float = 1.0, threshold: float = 0.3):
    from edge.detect.detector import OnnxDetector

    return OnnxDetector(host(model, "lpd_yunet"), class_id=PLATE, score_threshold=threshold, nms_iou=0.3,
                        scales=(scale,))


def annotated(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Image and its one annotated plate (xyxy) from openalpr_dev (`file x y w h TEXT`)."""
    fields = (need(PLATES) / f"{name}.txt").read_text().strip().split("\t")
    x, y, w, h = (float(v) for v in fields[1:5])
    return cv2.imread(str(PLATES / fields[0])), np.array([[x, y, x + w, y + h]], np.float32)


def prior_count(height: int, width: int) -> int:
    return sum(r * c * len(m) for (r, c), m in zip(lpd_yunet.feature_sizes(height, width), lpd_yunet.MIN_SIZES))


def blank_outputs(h: int, w: int, batch: int = 1) -> list[np.ndarray]:
    """Outputs that score nothing: conf all background, iou zero."""
    k = prior_count(h, w) * batch
    conf = np.zeros((k, 2), np.float32)
    conf[:, 0] = 1.0
    return [np.zeros((k, 14), np.float32), conf, np.zeros((k, 1), np.float32)]


def prior_row(h: int, w: int, head: int, row: int, col: int, size_index: int) -> int:
    """Output row of one prior: heads one after another, each row-major over cells, min sizes innermost."""
    sizes = lpd_yunet.feature_sizes(h, w)
    before = sum(r * c * len(m) for (r, c), m in zip(sizes[:head], lpd_yunet.MIN_SIZES))
    cols = sizes[head][1]
    return before + (row * cols + col) * len(lpd_yunet.MIN_SIZES[head]) + size_index


def light(outs: list[np.ndarray], row: int, loc=(), score: float = 0.9) -> None:
    loc_arr, conf, iou = outs
    loc_arr[row, :len(loc)] = loc
    conf[row] = (1 - score, score)
    iou[row, 0] = score


# --- priors against the real graph ------------------------------------------------------------------------

def test_stored_graph_output_count_is_the_prior_count_at_320x240(stored_model):
    outs = stored_model.run(np.zeros((1, 3, *STORED_HW), np.float32))
    assert prior_count(*STORED_HW) == 4385  # ../shared/models/README.md: not ceil(H/step)'s 4420
    assert [o.shape for o in outs] == [(4385, 14), (4385, 2), (4385, 1)]


@pytest.mark.parametrize("hw", [(240, 320), (480, 640), (960, 1280), (384, 448), (250, 330), (97, 131), (64, 64)])
def test_priors_match_the_rewritten_graph_at_other_sizes(plate_model, hw):
    outs = plate_model.run(np.zeros((1, 3, *hw), np.float32))
    p = lpd_yunet.priors(*hw)
    assert len(outs[0]) == len(p) == prior_count(*hw)
    # every prior centre lies inside the input it was built for
    assert (p[:, 0] > 0).all() and (p[:, 0] < hw[1]).all() and (p[:, 1] > 0).all() and (p[:, 1] < hw[0]).all()


def test_priors_are_cached_read_only():
    p = lpd_yunet.priors(240, 320)
    assert lpd_yunet.priors(240, 320) is p
    with pytest.raises(ValueError):
        p[0, 0] = 1.0


def test_feature_sizes_follow_integer_halving():
    assert lpd_yunet.feature_sizes(240, 320) == [(30, 40), (15, 20), (7, 10), (3, 5)]
    with pytest.raises(ValueError):
        lpd_yunet.feature_sizes(0, 320)


# --- exact decoding on hand-made outputs --------------------------------------------------------------------

def test_decode_arithmetic_box_and_corners():
    h, w = STORED_HW
    outs = blank_outputs(h, w)
    # head 1 (step 16), cell row 2 col 3, min size 48: prior centre (56, 40), size 48
    row = prior_row(h, w, 1, 2, 3, 1)
    corners = (-2.0, -1.0, 2.0, -1.0, 0.0, 0.0, 2.0, 1.0, -2.0, 1.0)  # tl, tr, centre, br, bl (x0.1*48 each)
    light(outs, row, (0.5, -0.5, np.log(2) / 0.2, 0.0, *corners), score=0.81)
    xyxy, score, quad = lpd_yunet.candidates(outs, (h, w), 0.5)
    assert score == pytest.approx([0.81])  # sqrt(conf * iou)
    # centre (56 + 0.5*0.1*48, 40 - 0.5*0.1*48) = (58.4, 37.6), size 96 x 48
    np.testing.assert_allclose(xyxy[0], (10.4, 13.6, 106.4, 61.6), atol=1e-3)
    np.testing.assert_allclose(quad[0], [(46.4, 35.2), (65.6, 35.2), (65.6, 44.8), (46.4, 44.8)], atol=1e-3)


def test_box_is_grown_to_cover_corners_outside_the_regressed_box():
    h, w = STORED_HW
    outs = blank_outputs(h, w)
    row = prior_row(h, w, 0, 10, 10, 2)  # step 8, min size 24: centre (84, 84)
    # a small regressed box (24 x 12) with corners reaching 12 px beyond it on the right
    light(outs, row, (0.0, 0.0, 0.0, np.log(0.5) / 0.2, -5.0, -2.5, 10.0, -2.5, 0, 0, 10.0, 2.5, -5.0, 2.5))
    xyxy, _, quad = lpd_yunet.candidates(outs, (h, w), 0.5)
    assert len(xyxy) == 1
    assert xyxy[0, 2] == pytest.approx(84 + 24.0)  # the corners' right edge, not the box's 84 + 12
    assert (quad[0, :, 0] >= xyxy[0, 0]).all() and (quad[0, :, 0] <= xyxy[0, 2]).all()
    assert (quad[0, :, 1] >= xyxy[0, 1]).all() and (quad[0, :, 1] <= xyxy[0, 3]).all()


@pytest.mark.parametrize("loc, why", [
    ((0, 0, 0, 0), "a 256 x 256 box: square and over half of a 240 px input"),
    ((0, 0, np.log(1.2) / 0.2, np.log(0.25) / 0.2), "307 px wide: over 60% of a 320 px input"),
    ((0, 0, np.log(0.1) / 0.2, np.log(0.5) / 0.2), "25.6 x 128: taller than wide"),
    ((0, 0, 1e6, 1e6), "an absurd regression, clipped then rejected, never overflowing"),
])
def test_sanity_filter_drops_implausible_boxes(loc, why):
    h, w = STORED_HW
    outs = blank_outputs(h, w)
    huge = prior_row(h, w, 3, 1, 2, 2)  # step 64, min size 256, centre (160, 96)
    fine = prior_row(h, w, 1, 5, 5, 0)  # step 16, min size 32
    light(outs, huge, loc, score=0.99)
    light(outs, fine, (0, 0, np.log(2) / 0.2, np.log(0.5) / 0.2), score=0.6)  # 64 x 16: a plate
    xyxy, score, quad = lpd_yunet.candidates(outs, (h, w), 0.5)
    assert score == pytest.approx([0.6]), why
    assert xyxy.shape == (1, 4) and quad.shape == (1, 4, 2)


def test_below_threshold_is_empty_not_none():
    xyxy, score, quad = lpd_yunet.candidates(blank_outputs(*STORED_HW), STORED_HW, 0.5)
    assert xyxy.shape == (0, 4) and score.shape == (0,) and quad.shape == (0, 4, 2)


def test_batch_rows_are_grouped_by_head_then_image():
    h, w = STORED_HW
    outs = blank_outputs(h, w, batch=2)
    counts = [r * c * len(m) for (r, c), m in zip(lpd_yunet.feature_sizes(h, w), lpd_yunet.MIN_SIZES)]
    # head 1 of image 1 sits after head 0 of both images and head 1 of image 0
    row = 2 * counts[0] + counts[1] + (prior_row(h, w, 1, 2, 3, 1) - counts[0])
    light(outs, row, (0, 0, np.log(2) / 0.2, 0))
    assert len(lpd_yunet.candidates(outs, (h, w), 0.5, batch_index=0)[0]) == 0
    xyxy, _, _ = lpd_yunet.candidates(outs, (h, w), 0.5, batch_index=1)
    np.testing.assert_allclose(xyxy[0], (56 - 48, 40 - 24, 56 + 48, 40 + 24), atol=1e-3)


# --- fail closed on malformed outputs ------------------------------------------------------------------------

@pytest.mark.parametrize("corrupt, message", [
    (lambda o: o[:2], "returned 2 outputs"),
    (lambda o: [o[0][:, :13], o[1], o[2]], "loc has shape"),
    (lambda o: [o[0], o[1][:-1], o[2]], "conf has shape"),
    (lambda o: [o[0][:-5], o[1][:-5], o[2][:-5]], "expected"),  # rows that are no multiple of the prior count
    (lambda o: [o[0][None], o[1], o[2]], "loc has shape"),  # an unexpected batch axis
    (lambda o: [o[0], o[1], np.full_like(o[2], np.nan)], "non-finite"),
    (lambda o: [np.full_like(o[0], np.inf), o[1], o[2]], "non-finite"),
])
def test_malformed_outputs_raise(corrupt, message):
    with pytest.raises(BadDetections, match=message):
        lpd_yunet.candidates(corrupt(blank_outputs(*STORED_HW)), STORED_HW, 0.5)


def test_outputs_for_another_input_size_raise():
    with pytest.raises(BadDetections, match="expected"):
        lpd_yunet.candidates(blank_outputs(480, 640), STORED_HW, 0.5)


def test_batch_index_outside_the_batch_raises():
    with pytest.raises(BadDetections, match="batch index"):
        lpd_yunet.candidates(blank_outputs(*STORED_HW, batch=2), STORED_HW, 0.5, batch_index=2)


def test_detector_raises_on_a_model_returning_garbage(plate_model):
    class Garbage:
        name, sha256, provider = plate_model.name, plate_model.sha256, plate_model.provider

        def run(self, blob):
            return [np.zeros((7, 14), np.float32), np.zeros((7, 2), np.float32), np.zeros((7, 1), np.float32)]

    with pytest.raises(BadDetections):
        plate_detector(Garbage()).detect(np.zeros((240, 320, 3), np.uint8))


# --- the real model on real photos ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["eu2", "eu5", "test_001", "test_010"])
def test_real_plates_found_with_their_corners(plate_model, name):
    image, gt = annotated(name)
    dets = plate_detector(plate_model).detect(image)
    assert (dets.class_id == PLATE).all() and dets.quad is not None
    best = int(np.argmax(iou_matrix(gt, dets.xyxy)[0]))
    assert iou_matrix(gt, dets.xyxy)[0, best] >= 0.5
    # the corners lie within the box (the box is grown to cover them), and near the annotated plate
    quad, box = dets.quad[best], dets.xyxy[best]
    assert (quad >= box[:2] - 1e-3).all() and (quad <= box[2:] + 1e-3).all()
    gw, gh = gt[0, 2] - gt[0, 0], gt[0, 3] - gt[0, 1]
    assert (quad[:, 0] > gt[0, 0] - 0.25 * gw).all() and (quad[:, 0] < gt[0, 2] + 0.25 * gw).all()
    assert (quad[:, 1] > gt[0, 1] - 0.5 * gh).all() and (quad[:, 1] < gt[0, 3] + 0.5 * gh).all()
    # the mask covers the corners too: regions() paints the box (which holds the quad) plus its margin
    r = regions(dets[best:best + 1], image.shape, MaskStyle())[0]
    assert (quad[:, 0] >= r[0]).all() and (quad[:, 0] <= r[2]).all()
    assert (quad[:, 1] >= r[1]).all() and (quad[:, 1] <= r[3]).all()


@pytest.mark.parametrize("name", ["eu4", "test_012", "test_021"])
def test_plates_lost_at_the_stock_320x240_are_found_at_native_size(plate_model, name):
    """Why the input dims are rewritten: squeezing a photo into the stored 320x240 loses these plates."""
    image, gt = annotated(name)
    h, w = image.shape[:2]
    stock = plate_detector(plate_model, scale=min(STORED_HW[0] / h, STORED_HW[1] / w)).detect(image)
    native = plate_detector(plate_model).detect(image)
    assert not len(stock) or iou_matrix(gt, stock.xyxy).max() < 0.5
    assert iou_matrix(gt, native.xyxy).max() >= 0.5
