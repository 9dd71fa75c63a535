"""The names and the score-filter layout that rewritten graphs share with the decoders (pure numpy).

Apart from edge.detect.graph, which rewrites models with onnx: importing onnx takes most of a second,
and only building a graph-preprocessed or fp16 model needs it, not decoding its outputs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.frame import BadDetections

FRAME_INPUT = "frame"  # the uint8 frame input of a graph-preprocessed model
FILTER_INPUT = "score_floor"
CHECK_OUTPUT = "edge_filter/check"
PREFIX = "edge_filter/"


@dataclass(frozen=True)
class FilterGroup:
    """Rows of a model's outputs that share one score, as a family's decoder reads them.

    `score` lists (output, width, column): the score of row i is the square root of the product of
    those columns, each clipped to 0..1 (YuNet: cls x obj; LPD-YuNet: conf[:, 1] x iou). `rows` is
    the output whose row i is the regression the decoder needs, `rows_width` its last dimension.
    Every output is read as a [-1, width] table, so a batch axis in front is flattened into the
    row index (row = image * rows_per_image + anchor for YuNet).
    """

    name: str
    score: tuple[tuple[str, int, int], ...]
    rows: str
    rows_width: int


def filter_output_names(group: str) -> tuple[str, str, str]:
    """(index, score, rows) output names of a filter group."""
    return f"{PREFIX}{group}/index", f"{PREFIX}{group}/score", f"{PREFIX}{group}/rows"


def check_filter(outputs: dict[str, np.ndarray], groups: tuple[FilterGroup, ...]) -> None:
    """BadDetections unless the filtered outputs are all there, consistent, and the checksum finite."""
    check = outputs.get(CHECK_OUTPUT)
    if check is None or np.asarray(check).size != 1 or not np.isfinite(check).all():
        raise BadDetections(f"filtered outputs: checksum {check!r} is not a finite number (NaN or inf in the heads)")
    for g in groups:
        index, score, rows = (outputs.get(k) for k in filter_output_names(g.name))
        if (index is None or score is None or rows is None or index.ndim != 1 or score.shape != index.shape
                or rows.shape != (len(index), g.rows_width)):
            raise BadDetections(f"filtered outputs of {g.name}: shapes do not match")
        if not (np.isfinite(score).all() and np.isfinite(rows).all()):
            raise BadDetections(f"filtered outputs of {g.name}: non-finite values")
