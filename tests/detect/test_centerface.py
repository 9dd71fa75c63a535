"""CenterFace decoding (the peer's model): exact arithmetic on hand-made outputs."""
from __future__ import annotations

import numpy as np
import pytest

from edge.detect import centerface
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
