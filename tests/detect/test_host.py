"""Host preprocessing: the blob is the crops, resized, channel-ordered and padded, exactly."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.detect.backends.host import host_blob


def reference(crops, sx, sy, multiple, channels, pad):
    """The plain formula: resize, reorder, transpose into a blob filled with the pad value."""
    h, w = crops[0].shape[:2]
    rh, rw = round(h * sy), round(w * sx)
    ph, pw = -(-rh // multiple) * multiple, -(-rw // multiple) * multiple
    blob = np.full((len(crops), 3, ph, pw), pad, np.float32)
    interp = cv2.INTER_AREA if sx <= 1 and sy <= 1 else cv2.INTER_LINEAR
    for k, c in enumerate(crops):
        c = cv2.resize(c, (rw, rh), interpolation=interp) if (rh, rw) != (h, w) else c
        blob[k, :, :rh, :rw] = (c[..., ::-1] if channels == "RGB" else c).transpose(2, 0, 1)
    return blob


@pytest.mark.parametrize("hw, scale, multiple, channels, pad, batch, view", [
    ((37, 53), 1.0, 32, "BGR", 0.0, 1, False),
    ((37, 53), 1.0, 32, "RGB", 114.0, 2, False),
    ((64, 96), 0.5, 16, "BGR", 114.0, 1, False),
    ((30, 40), 2.0, 32, "RGB", 0.0, 3, False),
    ((40, 60), 1.0, 32, "BGR", 7.0, 2, True),  # crops that are views into a larger frame
])
def test_blob_matches_the_formula(hw, scale, multiple, channels, pad, batch, view):
    rng = np.random.default_rng(0)
    if view:
        frame = rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)
        crops = [frame[5 + k:5 + k + hw[0], 11:11 + hw[1]] for k in range(batch)]
    else:
        crops = [rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for _ in range(batch)]
    blob, geometry = host_blob(crops, scale, scale, multiple, channels, pad)
    want = reference(crops, scale, scale, multiple, channels, pad)
    assert blob.shape == want.shape and blob.dtype == np.float32
    assert tuple(geometry.input_hw) == want.shape[2:]
    np.testing.assert_array_equal(blob, want)
