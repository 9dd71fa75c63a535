"""CenterFace decoding (the peer's model): exact arithmetic on hand-made outputs."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import host
from edge.detect.families import centerface
from edge.frame import BadDetections


def outputs(h, w):
    gh, gw = h // 4, w // 4
    return [np.zeros((1, 1, gh, gw), np.float32), np.zeros((1, 2, gh, gw), np.float32),
            np.zeros((1, 2, gh, gw), np.float32), np.zeros((1, 10, gh, gw), np.float32)]


@pytest.mark.parametrize("row, col, scale, offset, expected", [
    (2, 3, (0.0, 0.0), (0.0, 0.0), (14 - 2, 10 - 2, 14 + 2, 10 + 2)),
    (4, 1, (np.log(4), np.log(2)), (0.25, 0.5), (8 - 4, 19 - 8, 8 + 4, 19 + 8)),
])
def test_decode_arithmetic(row, col, scale, offset, expected):
    outs = outputs(32, 64)
    outs[0][0, 0, row, col] = 0.9
    outs[1][0, :, row, col] = scale
    outs[2][0, :, row, col] = offset
    xyxy, score, _ = centerface.candidates(outs, (32, 64), 0.5)
    assert score == pytest.approx([0.9])
    np.testing.assert_allclose(xyxy[0], expected, atol=1e-4)


@pytest.mark.parametrize("corrupt", [
    lambda o: o[:3],
    lambda o: [o[0][:, :, :-1]] + o[1:],
    lambda o: [o[0], np.full_like(o[1], np.nan)] + o[2:],
])
def test_rejects_malformed(corrupt):
    with pytest.raises(BadDetections):
        centerface.candidates(corrupt(outputs(32, 64)), (32, 64), 0.5)


@pytest.fixture(scope="module")
def centerface_detector():
    from edge.models import registry
    from edge.detect.detector import OnnxDetector
    from edge.detect.backends.session import OnnxModel, set_input_dims

    card = registry.card("centerface")
    try:
        path = registry.resolve(card)
    except registry.ModelError:
        pytest.skip("centerface not in the cache or a mirror (edge-anon models fetch centerface)")
    model = OnnxModel(path, name=card.name, sha256=card.sha256,
                      rewrite=lambda b: set_input_dims(b, ["N", 3, "H", "W"]))
    return OnnxDetector(host(model, "centerface"), class_id=0, score_threshold=0.5)


@pytest.mark.parametrize("image, at_least", [
    ("7_Cheering_Cheering_7_118.jpg", 6),
    ("2_Demonstration_Political_Rally_2_224.jpg", 5),
    ("3_Riot_Riot_3_604.jpg", 4),
])
def test_real_faces_found(centerface_detector, wider_gt, image, at_least):
    import cv2

    from conftest import WIDER, need
    from edge.detect.boxes import iou_matrix

    img = cv2.imread(str(need(WIDER / "images" / image)))
    gt = wider_gt[image]
    size = np.sqrt((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]))
    dets = centerface_detector.detect(img)
    assert int((iou_matrix(gt[size >= 24], dets.xyxy).max(axis=1) >= 0.5).sum()) >= at_least
