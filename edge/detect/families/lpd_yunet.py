"""LPD-YuNet (licence plates): prior boxes for any input size, decoding and a plausibility filter.

Layout (../shared/models/README.md): input float32 NCHW, BGR 0..255, no mean. Outputs over prior
boxes, without a batch dimension: `loc [K,14]`, `conf [K,2]` (softmax), `iou [K,1]`. Four heads at
steps 8/16/32/64 with min sizes [[10,16,24],[32,48],[64,96],[128,192,256]], one prior per min size
per cell, SSD-style regression with variances (0.1, 0.2); loc[:, 4:14] holds five points (four
corners and the centre) regressed like the centre.

Batches work although the outputs have no batch axis: each head flattens the whole batch into one
row before the heads are concatenated, so the rows are grouped by head, then by image. We only
ever run one image per call today, but `batch_index` decodes any image of a batch.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from edge.detect.filters import FilterGroup, check_filter, filter_output_names
from edge.frame import BadDetections

MIN_SIZES: tuple[tuple[int, ...], ...] = ((10, 16, 24), (32, 48), (64, 96), (128, 192, 256))
STEPS = (8, 16, 32, 64)
VARIANCES = (0.1, 0.2)
# Padding to a multiple of the largest step makes every halving inside the network exact, so each
# feature cell sits exactly under its prior (H/8, H/16, ...), and no strip of the frame is dropped
# by a flooring max-pool at the coarse heads. The priors below also follow the network's own
# arithmetic for sizes that are not multiples, so decoding stays right whatever the input.
MULTIPLE = 64
CHANNELS = "BGR"
PAD_VALUE = 0  # what the padding of an input is filled with
# loc columns of the four corners, in order top-left, top-right, bottom-right, bottom-left
CORNER_COLUMNS = ((4, 5), (6, 7), (10, 11), (12, 13))
# edge.detect.graph.append_filter: score sqrt(conf[:, 1] * iou), the loc row kept
FILTER_GROUPS = (FilterGroup("plates", (("conf", 2, 1), ("iou", 1, 0)), "loc", 14),)

# Plausible plates, in input pixels: a plate is wider than tall (two-row and motorcycle plates
# come close to square; perspective can make one a little narrower), and never fills the input.
# The model's known failure at large inputs is one huge box over the scene: rejected here.
MIN_ASPECT = 0.6  # width / height
MAX_ASPECT = 12.0
MAX_WIDTH_SHARE = 0.6  # of the input width
MAX_HEIGHT_SHARE = 0.4  # of the input height
MIN_SIDE_PX = 2.0
MAX_LOG_SIZE = 6.0  # loc[2:4] * 0.2 beyond this would mean a box > e^6 (400x) its prior: garbage


def _pool(n: int) -> int:
    """A 2x2 stride-2 max-pool without padding, as onnxruntime sizes it (1 stays 1)."""
    return n // 2 if n >= 2 else n


def feature_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """(rows, cols) of the four heads for an input of this size: a stride-2 conv, then max-pools."""
    if height < 1 or width < 1:
        raise ValueError(f"input size {height}x{width} is empty")
    h, w = _pool(_pool(-(-height // 2))), _pool(_pool(-(-width // 2)))
    sizes = []
    for _ in STEPS:
        sizes.append((h, w))
        h, w = _pool(h), _pool(w)
    return sizes


@lru_cache(maxsize=32)
def priors(height: int, width: int) -> np.ndarray:
    """(K, 4) priors (cx, cy, w, h) in input pixels, in the network's output order; cached per size.

    The returned array is shared by every caller: read-only, so a decoder cannot corrupt the cache.
    """
    parts = []
    for (rows, cols), step, sizes in zip(feature_sizes(height, width), STEPS, MIN_SIZES):
        r, c, s = np.meshgrid(np.arange(rows), np.arange(cols), np.array(sizes), indexing="ij")
        parts.append(np.column_stack([((c + 0.5) * step).ravel(), ((r + 0.5) * step).ravel(),
                                      s.ravel(), s.ravel()]))
    out = np.concatenate(parts).astype(np.float32)
    out.setflags(write=False)
    return out


def _head_counts(height: int, width: int) -> list[int]:
    return [r * c * len(m) for (r, c), m in zip(feature_sizes(height, width), MIN_SIZES)]


def _rows_of(batch_index: int, batch: int, counts: list[int]) -> np.ndarray:
    """Output rows of one image in a batch: per head, the batch's blocks lie one after another."""
    rows, start = [], 0
    for n in counts:
        rows.append(np.arange(start + batch_index * n, start + (batch_index + 1) * n))
        start += batch * n
    return np.concatenate(rows)


def split_outputs(outputs: list[np.ndarray], input_hw: tuple[int, int],
                  batch_index: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated (loc, conf, iou) rows of one image; BadDetections when the layout is not the model's."""
    if len(outputs) != 3:
        raise BadDetections(f"LPD-YuNet returned {len(outputs)} outputs, expected 3 (loc, conf, iou)")
    loc, conf, iou = (np.asarray(o) for o in outputs)
    counts = _head_counts(*input_hw)
    k = sum(counts)
    rows = len(loc) if loc.ndim == 2 else -1
    for arr, last, name in ((loc, 14, "loc"), (conf, 2, "conf"), (iou, 1, "iou")):
        if arr.ndim != 2 or arr.shape[1] != last or len(arr) != rows or k == 0 or rows % k:
            raise BadDetections(f"LPD-YuNet {name} has shape {arr.shape}, expected (N*{k}, {last}) "
                                f"for input {input_hw[0]}x{input_hw[1]}")
    batch = rows // k
    if not 0 <= batch_index < batch:
        raise BadDetections(f"LPD-YuNet: batch index {batch_index} outside a batch of {batch}")
    if batch > 1:
        sel = _rows_of(batch_index, batch, counts)
        loc, conf, iou = loc[sel], conf[sel], iou[sel]
    if not (np.isfinite(loc).all() and np.isfinite(conf).all() and np.isfinite(iou).all()):
        raise BadDetections("LPD-YuNet: non-finite values in the outputs")
    return loc, conf, iou


def scores(conf: np.ndarray, iou: np.ndarray) -> np.ndarray:
    return np.sqrt(np.clip(conf[:, 1], 0, 1) * np.clip(iou[:, 0], 0, 1)).astype(np.float32)


def decode(loc: np.ndarray, prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (N, 4) xyxy and corner quads (N, 4, 2) in input pixels from loc rows and their priors."""
    v0, v1 = VARIANCES
    centre, size = prior[:, :2], prior[:, 2:]
    c = centre + loc[:, 0:2] * v0 * size
    wh = size * np.exp(np.clip(loc[:, 2:4] * v1, -MAX_LOG_SIZE, MAX_LOG_SIZE))
    box = np.concatenate([c - wh / 2, c + wh / 2], axis=1)
    quad = np.stack([centre + loc[:, [a, b]] * v0 * size for a, b in CORNER_COLUMNS], axis=1)
    return box.astype(np.float32), quad.astype(np.float32)


def plausible(xyxy: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    """Mask of boxes whose size and aspect could be a plate seen in an input of this size."""
    h, w = input_hw
    bw, bh = xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]
    aspect = bw / np.maximum(bh, 1e-6)
    return ((bw >= MIN_SIDE_PX) & (bh >= MIN_SIDE_PX) & (aspect >= MIN_ASPECT) & (aspect <= MAX_ASPECT)
            & (bw <= MAX_WIDTH_SHARE * w) & (bh <= MAX_HEIGHT_SHARE * h))


def _finish(loc: np.ndarray, prior: np.ndarray, score: np.ndarray, input_hw: tuple[int, int]
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if len(loc) == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 4, 2), np.float32)
    box, quad = decode(loc.astype(np.float32), prior)
    xyxy = np.concatenate([np.minimum(box[:, :2], quad.min(axis=1)), np.maximum(box[:, 2:], quad.max(axis=1))],
                          axis=1)
    keep = plausible(xyxy, input_hw)
    return xyxy[keep], score[keep].astype(np.float32), quad[keep]


def filtered_candidates(outputs: dict[str, np.ndarray], input_hw: tuple[int, int], score_threshold: float,
                        batch_index: int, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`candidates` from the outputs of a model rewritten by `append_filter` with FILTER_GROUPS.

    The flat row index runs over the outputs' rows, grouped by head, then by image (see the module
    docstring): it is mapped back to (image, prior) here.
    """
    check_filter(outputs, FILTER_GROUPS)
    index, score, loc = (outputs[k] for k in filter_output_names(FILTER_GROUPS[0].name))
    counts = np.array(_head_counts(*input_hw), np.int64)
    per_image = np.concatenate([[0], np.cumsum(counts)])  # head starts within one image's priors
    if len(index) and (index.min() < 0 or index.max() >= batch * per_image[-1]):
        raise BadDetections(f"LPD-YuNet: row index outside a batch of {batch} x {per_image[-1]} priors")
    head = np.searchsorted(batch * per_image, index, side="right") - 1
    offset = index - batch * per_image[head]
    image, local = offset // counts[head], offset % counts[head]
    sel = np.flatnonzero((image == batch_index) & (score >= score_threshold))
    return _finish(loc[sel], priors(*input_hw)[per_image[head[sel]] + local[sel]], score[sel], input_hw)


def candidates(outputs: list[np.ndarray], input_hw: tuple[int, int], score_threshold: float,
               batch_index: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (xyxy), scores and corner quads (N, 4, 2), in input pixels, above the threshold, before NMS.

    The box is the union of the regressed box and the corners' bounding box, so masking either
    never leaves a corner of the plate outside. Implausible boxes (see `plausible`) are dropped.
    """
    loc, conf, iou = split_outputs(outputs, input_hw, batch_index)
    score = scores(conf, iou)
    idx = np.flatnonzero(score >= score_threshold)
    return _finish(loc[idx], priors(*input_hw)[idx], score[idx], input_hw)
