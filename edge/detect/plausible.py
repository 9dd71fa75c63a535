"""Plausible model output: a decoded box lies where the network looked, at a size it could have seen.

A model whose box offsets are finite but absurd (+1e30) puts every box far outside the frame: clipped to
the frame, those boxes vanish and the frame would pass as a clean `masked` with nothing found. Such
output is bad output, as NaN is: the frame fails closed (edge.pipeline), and at start-up the self-test
(edge.selftest) sees every reference frame dropped and refuses the model.
"""
from __future__ import annotations

import numpy as np

from edge.frame import BadDetections

# A box may reach beyond the input's edge (a face cut by it is boxed whole), by at most this share of the
# input's side on each side; wholly beyond that it was not seen in this input.
OUTSIDE_MARGIN = 0.25
# No box is more than this many times the input's width or height: the network saw nothing that large.
MAX_SIDES = 2.0


def check_boxes(xyxy: np.ndarray, input_wh: tuple[float, float], what: str) -> None:
    """BadDetections naming the first box (input pixels, before clipping) that is non-finite, wholly
    outside the input grown by OUTSIDE_MARGIN, or more than MAX_SIDES times the input's side."""
    if not len(xyxy):
        return
    w, h = float(input_wh[0]), float(input_wh[1])
    x1, y1, x2, y2 = (xyxy[:, i] for i in range(4))
    with np.errstate(invalid="ignore", over="ignore"):
        finite = np.isfinite(xyxy).all(axis=1)
        mx, my = OUTSIDE_MARGIN * w, OUTSIDE_MARGIN * h
        outside = (x2 < -mx) | (x1 > w + mx) | (y2 < -my) | (y1 > h + my)
        huge = ((x2 - x1) > MAX_SIDES * w) | ((y2 - y1) > MAX_SIDES * h)
    bad = ~finite | outside | huge
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        why = "not finite" if not finite[i] else "wholly outside it" if outside[i] else "far larger than it"
        raise BadDetections(f"{what}: implausible box {np.round(xyxy[i].astype(np.float64), 1).tolist()} for a "
                            f"{w:g}x{h:g} input ({why}; {int(bad.sum())} of {len(xyxy)} boxes)")
