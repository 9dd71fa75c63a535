"""The data that flows between the seams: frames, detections, and the two outcomes of a frame.

A sink can only ever be handed a :class:`MaskedFrame` (pixels that went through the mask
step) or a :class:`DroppedFrame` (no pixels at all). Nothing else carries an image out of
the pipeline, which makes "no unmasked frame leaves" a property of the types, not of care.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from edge.columns import Columns

FACE, PLATE = 0, 1  # the built-in classes' ids, the same in every run
CLASS_NAME = re.compile(r"[a-z][a-z0-9_]*")  # what a class may be called: a [detect.<name>] table key


class BadFrame(ValueError):
    """A frame whose pixels are not an HxWx3 uint8 image."""


class BadDetections(ValueError):
    """A detector produced output that cannot be trusted (wrong shape, NaN, inverted box...)."""


def check_image(image: object) -> np.ndarray:
    """Return `image` if it is an HxWx3 uint8 array, else raise BadFrame naming what is wrong."""
    if not isinstance(image, np.ndarray):
        raise BadFrame(f"frame is {type(image).__name__}, expected numpy.ndarray")
    if image.ndim != 3 or image.shape[2] != 3:
        raise BadFrame(f"frame shape {image.shape}, expected (H, W, 3)")
    if image.dtype != np.uint8:
        raise BadFrame(f"frame dtype {image.dtype}, expected uint8")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise BadFrame(f"frame shape {image.shape} is empty")
    return image


@dataclass(frozen=True)
class ClassTable:
    """The class ids of one run, shared by its detectors, tracker, masks, wire header and audit record.

    Built once at start-up from the config's class tables (edge.compose.class_table): face and plate
    keep ids 0 and 1, every further class gets the next id in name order, so the same config always
    gives the same ids.
    """

    names: tuple[str, ...] = ("face", "plate")
    # Context classes (persons, vehicles): detected to place other masks, never painted themselves,
    # and reported apart from the masked classes.
    context: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.names[:2] != ("face", "plate") or len(set(self.names)) != len(self.names):
            raise ValueError(f"class table {list(self.names)}: expected face, plate, then distinct other classes")
        bad = [n for n in self.names if not CLASS_NAME.fullmatch(n)]
        if bad:
            raise ValueError(f"class names {bad}: lowercase letters, digits and '_'")
        if not set(self.context) <= set(self.names[2:]):
            raise ValueError(f"context classes {list(self.context)}: must be classes of the table other than "
                             f"face and plate")

    @staticmethod
    def of(names, context=()) -> "ClassTable":
        """The table of face, plate and the other `names` and `context` names (in name order)."""
        context = tuple(sorted(set(context)))
        return ClassTable(("face", "plate", *sorted(set(names) - {"face", "plate"} | set(context))), context)

    def is_context(self, class_id: np.ndarray) -> np.ndarray:
        """Per id, whether its class is a context class (never painted)."""
        ids = [self.names.index(n) for n in self.context]
        return np.isin(np.asarray(class_id).reshape(-1), ids)

    def __len__(self) -> int:
        return len(self.names)

    def id(self, name: str) -> int:
        if name not in self.names:
            raise KeyError(f"class {name!r} is not in this run's class table {list(self.names)}")
        return self.names.index(name)

    def names_of(self, class_id: np.ndarray) -> list[str]:
        """The name of every id; BadDetections for an id outside the table."""
        ids = np.asarray(class_id).reshape(-1)
        if len(ids) and ((ids < 0).any() or (ids >= len(self.names)).any()):
            raise BadDetections(f"class_id outside 0..{len(self.names) - 1}")
        return [self.names[c] for c in ids.tolist()]


BUILTIN_CLASSES = ClassTable()


@dataclass(slots=True)
class Frame:
    """One captured image with the identity and timestamps that travel with it to the output."""

    image: np.ndarray  # HxWx3 uint8 BGR, masked in place by the pipeline
    camera_id: str
    seq: int  # per-camera, increasing, gaps mean frames the source lost
    t_capture_mono_ns: int  # time.monotonic_ns() at capture: deadlines are measured from it
    t_capture_wall_ns: int  # time.time_ns() at capture: for the recording's timeline
    name: str = ""  # file stem (image folder) or zero-padded frame number (video); "" for cameras


def _as_array(value, dtype, shape_tail: tuple[int, ...], what: str) -> np.ndarray:
    arr = np.asarray(value, dtype=dtype)
    if arr.size == 0:
        return np.zeros((0, *shape_tail), dtype=dtype)
    if arr.shape[1:] != shape_tail:
        raise BadDetections(f"{what} has shape {arr.shape}, expected (N, {', '.join(map(str, shape_tail))})")
    return arr


@dataclass(frozen=True, slots=True)
class Detections(Columns):
    """Boxes in pixel coordinates of the frame they were found in.

    Empty is a (0, 4) array, never None. Construction validates, so a detector's malformed
    output (NaN, inverted boxes, mismatched lengths) raises BadDetections at the seam; `take`
    and `concat` (edge.columns) select and join rows that were validated when they were made.
    """

    xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    score: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    class_id: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))
    # Optional quadrilateral per box (plates), (N, 4, 2); rows of NaN where a box has none.
    quad: np.ndarray | None = None

    def __post_init__(self) -> None:
        xyxy = _as_array(self.xyxy, np.float32, (4,), "xyxy")
        if xyxy.ndim != 2:
            raise BadDetections(f"xyxy has shape {xyxy.shape}, expected (N, 4)")
        n = len(xyxy)
        score = np.asarray(self.score, np.float32).reshape(-1)
        class_id = np.asarray(self.class_id).reshape(-1)
        if len(score) != n or len(class_id) != n:
            raise BadDetections(f"lengths differ: xyxy {n}, score {len(score)}, class_id {len(class_id)}")
        if not np.isfinite(xyxy).all() or not np.isfinite(score).all():
            raise BadDetections("non-finite values in boxes or scores")
        if n and ((xyxy[:, 2] < xyxy[:, 0]).any() or (xyxy[:, 3] < xyxy[:, 1]).any()):
            raise BadDetections("box with x2 < x1 or y2 < y1")
        if n and (class_id < 0).any():  # the upper bound is the run's ClassTable's (ClassTable.names_of)
            raise BadDetections("class_id outside 0.. (negative)")
        quad = self.quad
        if quad is not None:
            quad = np.asarray(quad, np.float32)
            if quad.shape != (n, 4, 2):
                raise BadDetections(f"quad has shape {quad.shape}, expected ({n}, 4, 2)")
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "score", score)
        object.__setattr__(self, "class_id", class_id.astype(np.int32, copy=False))
        object.__setattr__(self, "quad", quad)

    def __getitem__(self, index) -> "Detections":
        return self.take(index)

    @staticmethod
    def empty() -> "Detections":
        return Detections()

    def to_list(self, classes: ClassTable = BUILTIN_CLASSES) -> list[dict]:
        """JSON-ready rows for headers and logs: boxes and scores only, never pixels; names from `classes`."""
        # rounded as whole arrays: a busy frame has a thousand boxes, and per-value Python calls cost ms
        boxes = np.round(np.asarray(self.xyxy, np.float64), 1).tolist()
        scores = np.round(np.asarray(self.score, np.float64), 3).tolist()
        return [{"xyxy": box, "class": c, "score": s} for box, s, c in zip(boxes, scores, classes.names_of(self.class_id))]


@dataclass(slots=True)
class MaskedFrame:
    """A frame whose every region to protect has been painted over. Only the mask step makes these."""

    frame: Frame
    regions: np.ndarray  # (N, 4) int32 xyxy actually painted (clipped, margins included)
    detections: Detections  # what the regions came from (class and score per region)
    status: str  # "masked" (regions painted) or "masked_whole" (the entire frame filled)
    timings_ms: dict[str, float]
    models: tuple[tuple[str, str], ...] = ()  # (name, sha256) of every detector that ran
    # Context detections (persons, vehicles): found, never painted themselves; not behind `regions`
    context: Detections = field(default_factory=Detections)
    # Per row of `detections`: whether the tracker held it (a prediction, not this frame's detection)
    held: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def held_flags(self) -> np.ndarray:
        """`held`, one flag per row of `detections` (all False where no flags were recorded)."""
        return self.held if len(self.held) == len(self.detections) else np.zeros(len(self.detections), bool)


@dataclass(slots=True)
class DroppedFrame:
    """A frame that will never leave the process; only its identity and the reason travel."""

    camera_id: str
    seq: int
    t_capture_mono_ns: int
    t_capture_wall_ns: int
    name: str
    reason: str
    timings_ms: dict[str, float]

    @staticmethod
    def of(frame: Frame, reason: str, timings_ms: dict[str, float] | None = None) -> "DroppedFrame":
        return DroppedFrame(
            frame.camera_id, frame.seq, frame.t_capture_mono_ns, frame.t_capture_wall_ns,
            frame.name, reason, dict(timings_ms or {}),
        )
