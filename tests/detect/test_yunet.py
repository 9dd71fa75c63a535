"""YuNet decoding: exact arithmetic on hand-made outputs, and known faces on real images."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import WIDER, host, need
from edge.detect.families import yunet
from edge.detect.boxes import iou_matrix
from edge.frame import BadDetections


def blank_outputs(h: int, w: int) -> list[np.ndarray]:
    outs = []
    for kind, last in (("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10)):
        for s in yunet.STRIDES:
            outs.append(np.zeros((1, (h // s) * (w // s), last), np.float32))
    return outs


@pytest.mark.parametrize("stride_index, row, col, b, expected", [
    # cx=(c+b0)*s, cy=(r+b1)*s, w=exp(b2)*s, h=exp(b3)*s
    (0, 2, 3, (0.5, 0.25, 0.0, 0.0), (3.5 * 8 - 4, 2.25 * 8 - 4, 3.5 * 8 + 4, 2.25 * 8 + 4)),
    (1, 1, 1, (0.0, 0.0, np.log(2), np.log(3)), (16 - 16, 16 - 24, 16 + 16, 16 + 24)),
    (2, 0, 1, (0.5, 0.5, 0.0, 0.0), (48 - 16, 16 - 16, 48 + 16, 16 + 16)),
])
def test_decode_arithmetic(stride_index, row, col, b, expected):
    h, w = 64, 96
    outs = blank_outputs(h, w)
    stride = yunet.STRIDES[stride_index]
    anchor = row * (w // stride) + col
    outs[stride_index][0, anchor, 0] = 0.81  # cls
    outs[3 + stride_index][0, anchor, 0] = 1.0  # obj
    outs[6 + stride_index][0, anchor] = b
    xyxy, score, quad = yunet.candidates(outs, (h, w), 0.5)
    assert quad is None
    assert score == pytest.approx([0.9])  # sqrt(cls * obj)
    np.testing.assert_allclose(xyxy[0], expected, atol=1e-4)


@pytest.mark.parametrize("corrupt, message", [
    (lambda o: o[:11], "expected 12"),
    (lambda o: [o[0][:, :-1]] + o[1:], "output shape"),
    (lambda o: [np.full_like(o[0], np.nan)] + o[1:], "non-finite"),
    (lambda o: o[:6] + [np.full_like(o[6], np.inf)] + o[7:], "non-finite"),
])
def test_decode_rejects_malformed_outputs(corrupt, message):
    with pytest.raises(BadDetections, match=message):
        yunet.candidates(corrupt(blank_outputs(64, 96)), (64, 96), 0.5)


def test_decode_below_threshold_is_empty_not_none():
    xyxy, score, _ = yunet.candidates(blank_outputs(64, 96), (64, 96), 0.5)
    assert xyxy.shape == (0, 4) and score.shape == (0,)


@pytest.mark.parametrize("image", [
    "7_Cheering_Cheering_7_118.jpg",
    "2_Demonstration_Political_Rally_2_224.jpg",
    "3_Riot_Riot_3_604.jpg",
    "0_Parade_Parade_0_519.jpg",
])
def test_real_faces_found(face_detector, wider_gt, image):
    """Every annotated face of at least 24 px on these real images is found (IoU >= 0.5)."""
    img = cv2.imread(str(need(WIDER / "images" / image)))
    gt = wider_gt[image]
    size = np.sqrt((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]))
    big = gt[size >= 24]
    dets = face_detector.detect(img)
    assert len(big) >= 4
    assert (iou_matrix(big, dets.xyxy).max(axis=1) >= 0.5).all()
    assert (dets.class_id == 0).all() and (dets.score >= 0.5).all()


def test_upscaled_pass_finds_more_small_faces(yunet_model, wider_gt):
    from edge.detect.detector import OnnxDetector

    name = "2_Demonstration_Demonstrators_2_378.jpg"
    img = cv2.imread(str(need(WIDER / "images" / name)))
    gt = wider_gt[name]

    def found(scales):
        dets = OnnxDetector(host(yunet_model, "yunet"), class_id=0, score_threshold=0.5, scales=scales).detect(img)
        return int((iou_matrix(gt, dets.xyxy).max(axis=1) >= 0.4).sum())

    assert found((1.0, 2.0)) > found((1.0,))


def test_no_faces_on_blank_frame(face_detector):
    dets = face_detector.detect(np.zeros((360, 640, 3), np.uint8))
    assert len(dets) == 0 and dets.xyxy.shape == (0, 4)
