"""Utility retention: what the masked footage is still good for, judged by a COCO detector.

Of the persons and vehicles the judge finds on the raw frame (score >= 0.5), the share it still finds
on the masked frame (same class, IoU >= 0.5, score >= 0.3), persons and vehicles separately
(../shared/data/README.md). Vehicles are the judge's vehicle group: COCO car, motorcycle, bus, truck
(edge.detect.families.yolox.GROUPS); bicycles are left out (they carry no plate, and their riders count
as persons). "Same class" is the group: a car the masked frame shows as a truck is still a vehicle found.

The judge is YOLOX-Nano (COCO, Apache-2.0), the only COCO detector here, which is also the pipeline's
context model. That is acceptable for what it measures: the judge only ever sees the raw frame and the
masked pixels, never the pipeline's own context boxes, so an object it loses was lost to the paint.
It runs at its own operating point, not the pipeline's: a letterbox that covers each image at its native
resolution (scale 1, padded to multiples of 32), the default CPU runtime whatever the evaluated config's
runtime section says (fp16, a graph filter), so every config is judged by the same eyes. What it cannot
catch: objects this small model misses on the raw frame (most persons under ~20 px) are never counted,
so damage to small, distant road users goes unseen, and a detector trained on other data could be
hurt by a mask style that YOLOX-Nano shrugs off (and the other way round).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from edge.detect.context import ContextDetector, ContextParams
from edge.frame import ClassTable, Detections

JUDGE_MODEL = "yolox_nano"
UTILITY_CLASSES = ("person", "vehicle")  # the judge's class groups, in the order of its class ids 0, 1
RAW_SCORE = 0.5  # an object counts when the judge finds it on the raw frame at least this sure...
KEPT_SCORE = 0.3  # ...and is kept when the masked frame still shows it at least this sure...
KEPT_IOU = 0.5  # ...as a box of the same class overlapping the raw one by at least this IoU


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) intersection over union of two xyxy box arrays."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def kept_flags(raw: Detections, masked: Detections, *, raw_score: float = RAW_SCORE,
               kept_score: float = KEPT_SCORE, min_iou: float = KEPT_IOU) -> tuple[np.ndarray, np.ndarray]:
    """(class ids, kept flags) of every object counted on the raw frame (score >= raw_score); see match."""
    counted, kept = match(raw, masked, raw_score=raw_score, kept_score=kept_score, min_iou=min_iou)
    return counted.class_id.astype(np.int32), kept


def match(raw: Detections, masked: Detections, *, raw_score: float = RAW_SCORE, kept_score: float = KEPT_SCORE,
          min_iou: float = KEPT_IOU) -> tuple[Detections, np.ndarray]:
    """The objects counted on the raw frame (score >= raw_score, surest first) and whether each is kept.

    One to one: the raw objects, surest first, each take the unclaimed masked-frame box of their class
    (score >= kept_score) that overlaps them most, if by at least min_iou; two persons standing together
    cannot both be "found" by one box.
    """
    order = np.flatnonzero(raw.score >= raw_score)
    order = order[np.argsort(-raw.score[order], kind="stable")]
    counted = raw.take(order)
    classes = counted.class_id
    candidates = np.flatnonzero(masked.score >= kept_score)
    kept = np.zeros(len(counted), bool)
    if not len(counted) or not len(candidates):
        return counted, kept
    overlap = iou(counted.xyxy, masked.xyxy[candidates])
    overlap[classes[:, None] != masked.class_id[candidates][None, :]] = -1.0
    free = np.ones(len(candidates), bool)
    for i in range(len(counted)):
        row = np.where(free, overlap[i], -1.0)
        j = int(np.argmax(row))
        if row[j] >= min_iou:
            kept[i], free[j] = True, False
    return counted, kept


def native_letterbox(height: int, width: int) -> tuple[int, int]:
    """(width, height) of the letterbox that holds the image at scale 1: its own size (at least the
    smallest letterbox a context table allows); the backend pads it to the family's multiple of 32."""
    return max(width, 32), max(height, 32)


class Judge:
    """YOLOX-Nano over persons and vehicles, at each image's native resolution, on the default CPU runtime.

    Built through edge.compose (the model resolved by sha256 like every other); one session serves every
    image size, a context detector per letterbox size shares it.
    """

    def __init__(self, cfg) -> None:
        from edge.compose import CONTEXT_FAMILIES, load_model
        from edge.config import Config

        judge_cfg = dataclasses.replace(Config(), models=cfg.models)
        self.backend, card = load_model(judge_cfg, JUDGE_MODEL)
        self.family = CONTEXT_FAMILIES[card.family]
        self.max_input_px = judge_cfg.runtime.max_input_px
        self.model = {"name": card.name, "sha256": card.sha256, "licence": card.licence}
        self.table = ClassTable.of(UTILITY_CLASSES, UTILITY_CLASSES)
        self._ids = tuple(self.table.id(c) for c in UTILITY_CLASSES)
        self._by_size: dict[tuple[int, int], ContextDetector] = {}

    def describe(self) -> dict:
        groups = {c: [COCO_NAMES.get(k, str(k)) for k in self.family.GROUPS[c]] for c in UTILITY_CLASSES}
        return {"model": self.model, "classes": groups, "letterbox": f"native (scale 1), padded to multiples of {self.family.MULTIPLE}",
                "raw_score": RAW_SCORE, "kept_score": KEPT_SCORE, "kept_iou": KEPT_IOU}

    def _detector(self, height: int, width: int) -> ContextDetector:
        key = native_letterbox(height, width)
        if key not in self._by_size:
            params = ContextParams(enabled=True, model=JUDGE_MODEL, classes=UTILITY_CLASSES,
                                   score_threshold=KEPT_SCORE, nms_iou=0.5, width=key[0], height=key[1])
            self._by_size[key] = ContextDetector(self.backend, self.family, class_ids=self._ids,
                                                 groups=tuple(self.family.GROUPS[c] for c in UTILITY_CLASSES),
                                                 params=params, max_input_px=self.max_input_px)
        return self._by_size[key]

    def find(self, image: np.ndarray) -> Detections:
        """Persons (class 0 of UTILITY_CLASSES order) and vehicles found at score >= KEPT_SCORE."""
        dets = self._detector(*image.shape[:2]).detect(image)
        ids = np.searchsorted(np.array(self._ids), dets.class_id)
        return Detections(dets.xyxy, dets.score, ids.astype(np.int32))


COCO_NAMES = {0: "person", 1: "bicycle", 2: "car", 3: "motorcycle", 5: "bus", 7: "truck"}


@dataclass
class UtilityTally:
    """Per class: objects counted on raw frames and those still found after masking, over a set."""

    found: dict[str, int] = field(default_factory=lambda: {c: 0 for c in UTILITY_CLASSES})
    kept: dict[str, int] = field(default_factory=lambda: {c: 0 for c in UTILITY_CLASSES})

    def add(self, classes: np.ndarray, kept: np.ndarray) -> dict[str, list[int]]:
        """Count one frame; returns its [kept, found] per class."""
        row = {}
        for cid, name in enumerate(UTILITY_CLASSES):
            sel = classes == cid
            n, k = int(sel.sum()), int(kept[sel].sum())
            self.found[name] += n
            self.kept[name] += k
            row[name] = [k, n]
        return row

    def add_lost(self, raw: Detections) -> dict[str, list[int]]:
        """A frame that never left (dropped): every object counted on it is lost."""
        classes, _ = kept_flags(raw, Detections())
        return self.add(classes, np.zeros(len(classes), bool))

    def result(self) -> dict:
        return {name: {"found_raw": self.found[name], "still_found": self.kept[name],
                       "share": round(self.kept[name] / self.found[name], 4) if self.found[name] else None}
                for name in UTILITY_CLASSES}


def share_cell(u: dict | None, name: str, width: int = 14) -> str:
    """`97.0% (  33)`: the share still found and the objects counted, '-' where none were counted."""
    c = (u or {}).get(name)
    if not c or not c["found_raw"]:
        return f"{'-':>{width}s}"
    return f"{100 * c['share']:5.1f}% ({c['found_raw']:4d})".rjust(width)
