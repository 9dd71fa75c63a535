"""Head-sized face masks and the head fallback: pure functions from detections to the boxes to paint.

Face models box the tight face; what identifies a person is the head (hair, ears, profile). Face
boxes are grown toward a head box, more upward than downward. With a context stage finding persons,
every person whose head zone (the top of its box, sized from it) holds no found face gets that zone
painted: the face model misses blurred, profile and back-of-head views the person detector still sees.
Faces are assigned to persons by overlap with the head zone, not by lying anywhere in the person box,
so a face in a crowd does not excuse the person behind it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.checks import within
from edge.frame import FACE, ClassTable, Detections
from edge.vehicles import inside_share

HEAD = "head"  # the masked class of head zones


@dataclass(frozen=True)
class HeadParams:
    """The [heads] table: how face boxes grow toward a head box, and the head zones of persons."""

    # face boxes grown by these fractions of their width (each side) / height (up, down); on top of
    # the mask margin. YuNet's boxes are ~1.4x narrower and ~1.35x shorter than the annotated heads on
    # berlin_dev (medians): 0.2 a side, 0.25 up and 0.1 down give the head (up 0.35 adds nothing there)
    grow_side: float = 0.2
    grow_up: float = 0.25
    grow_down: float = 0.1
    # with a context stage detecting "person": paint the head zone of every person whose zone holds no face
    fallback: bool = True
    # the head zone is about head-sized whatever the person box's aspect: its height is the larger of
    # these fractions of the person box's height (a standing person: a head is ~1/7 of it) and width
    # (a box cut by the frame bottom, a seated person or a cyclist: its height says nothing). On
    # berlin_dev (scripts/fit_head_zones.py) head boxes are 0.14 of a standing person's height and 0.42
    # of a person's width (medians), but YOLOX's boxes are loose: these values are the smallest zones
    # that hold >= 70% of 90% of the heads of matched persons (on average 3.4x the head box's area)
    zone_per_height: float = 0.2
    zone_per_width: float = 0.6
    zone_aspect: float = 1.2  # zone width / zone height: heads are ~0.85 as wide as high, plus the
    # sideways spread of the head in the person box (+-0.1 of its width)
    zone_up: float = 0.05  # the zone starts this fraction of its height above the person box's top
    # a face belongs to a head zone when at least this fraction of its (grown) box lies inside the zone
    face_in_zone: float = 0.5
    min_person_px: float = 0.0  # persons shorter than this (frame px) get no zone
    person_score: float = 0.0  # persons scored below this get no zone (the context threshold comes first)
    # with a context stage detecting "person": a face box covering at least lone_share of the frame, scored
    # under lone_score and lying in no person box (less than face_in_zone of it inside one) is not a face.
    # A face that large is someone close to the camera, whom the person detector sees; the face model's weak
    # large boxes are headlights, wheels, clouds and car fronts, and painted with the head growth each covers
    # up to a third of its frame. On the dev sets (the defaults' detections, scripts/sweep_paint.py) 31 such
    # boxes, each looked at: none on a face. Over-masking berlin_dev 2.30 -> 1.84%, ro_dev 4.34 -> 2.45%,
    # openalpr_dev 5.02 -> 2.81%, oi_dev 6.41 -> 4.60%, no face, plate or kept object lost on any set.
    # Margins: lone_share 0.005 loses a wider_dev face (a 0.31 box outside any person); lone_score 0.6 removes
    # more false boxes (ro_dev 2.03%) but large true faces outside person boxes start at 0.6 (wider_dev).
    # lone_share 0 = every face box is painted
    lone_share: float = 0.01
    lone_score: float = 0.5

    def __post_init__(self) -> None:
        within(self, "grow_side", 0.0, 1.0)
        within(self, "grow_up", 0.0, 1.0)
        within(self, "grow_down", 0.0, 1.0)
        within(self, "zone_per_height", 0.0, 1.0)
        within(self, "zone_per_width", 0.0, 1.0)
        if self.fallback and not (self.zone_per_height or self.zone_per_width):
            raise ValueError("zone_per_height, zone_per_width: both 0 gives head zones of no size; "
                             "set one above 0 or fallback = false")
        within(self, "zone_aspect", 0.25, 4.0)
        within(self, "zone_up", 0.0, 1.0)
        within(self, "face_in_zone", 0.05, 1.0)
        within(self, "min_person_px", 0.0, 16384.0)
        within(self, "person_score", 0.0, 1.0)
        within(self, "lone_share", 0.0, 1.0)
        within(self, "lone_score", 0.0, 1.0)


def grow_faces(xyxy: np.ndarray, params: HeadParams) -> np.ndarray:
    """Face boxes grown toward a head box (never shrunk)."""
    wh = xyxy[:, 2:] - xyxy[:, :2]
    out = xyxy.astype(np.float32, copy=True)
    out[:, 0] -= wh[:, 0] * params.grow_side
    out[:, 2] += wh[:, 0] * params.grow_side
    out[:, 1] -= wh[:, 1] * params.grow_up
    out[:, 3] += wh[:, 1] * params.grow_down
    return out


def head_zones(persons: np.ndarray, params: HeadParams) -> np.ndarray:
    """The head zone (xyxy) of each person box: centred on it, at its top, sized from its height or width.

    The zone's height is the larger of `zone_per_height` x the box height and `zone_per_width` x its width,
    never more than the box height; its width is `zone_aspect` x that, never more than the box width.
    """
    pw = np.clip(persons[:, 2] - persons[:, 0], 0, None)
    ph = np.clip(persons[:, 3] - persons[:, 1], 0, None)
    zh = np.minimum(np.maximum(ph * params.zone_per_height, pw * params.zone_per_width), ph)
    zw = np.minimum(zh * params.zone_aspect, pw)
    cx = (persons[:, 0] + persons[:, 2]) / 2
    top = persons[:, 1] - zh * params.zone_up
    return np.column_stack([cx - zw / 2, top, cx + zw / 2, top + zh]).astype(np.float32)


def faceless(zones: np.ndarray, faces: np.ndarray, share: float) -> np.ndarray:
    """Per zone, True when no face has at least `share` of its area inside it."""
    return ~(inside_share(faces, zones) >= share).any(axis=0)


def lone(faces: Detections, persons: np.ndarray, frame_px: float, params: HeadParams) -> np.ndarray:
    """Per face, True when it cannot be a face: at least lone_share of the frame, scored under lone_score,
    in no person box (less than face_in_zone of it inside each)."""
    if not params.lone_share or len(faces) == 0:
        return np.zeros(len(faces), bool)
    area = np.clip(faces.xyxy[:, 2:] - faces.xyxy[:, :2], 0, None).prod(axis=1)
    alone = ~(inside_share(faces.xyxy, persons) >= params.face_in_zone).any(axis=1)
    return (area >= params.lone_share * frame_px) & (faces.score < params.lone_score) & alone


class HeadStage:
    """A paint stage (edge.pipeline.PaintStage): faces grown toward heads, head zones of faceless persons."""

    def __init__(self, params: HeadParams, classes: ClassTable) -> None:
        self.params, self.classes = params, classes
        self.person = classes.id("person") if "person" in classes.context else None
        self.head = classes.id(HEAD) if HEAD in classes.names and HEAD not in classes.context else None

    def to_paint(self, masked: Detections, context: Detections, shape: tuple[int, int]) -> Detections:
        """The masked detections with faces grown toward heads, plus the head zone of every faceless person;
        with persons known, without the face boxes that cannot be faces (lone)."""
        persons = context.take(np.flatnonzero(context.class_id == self.person)) if self.person is not None else None
        if persons is not None:
            face = np.flatnonzero(masked.class_id == FACE)
            drop = face[lone(masked.take(face), persons.xyxy, float(shape[0] * shape[1]), self.params)]
            if drop.size:
                masked = masked.take(np.setdiff1d(np.arange(len(masked)), drop))
        xyxy = masked.xyxy
        face = masked.class_id == FACE
        if face.any() and (self.params.grow_side or self.params.grow_up or self.params.grow_down):
            xyxy = xyxy.copy()
            xyxy[face] = grow_faces(xyxy[face], self.params)
            masked = Detections(xyxy, masked.score, masked.class_id, masked.quad)
        if self.person is None or self.head is None or not self.params.fallback:
            return masked
        keep = ((persons.xyxy[:, 3] - persons.xyxy[:, 1]) >= self.params.min_person_px) & (
            persons.score >= self.params.person_score)
        persons = persons.take(np.flatnonzero(keep))
        zones = head_zones(persons.xyxy, self.params)
        need = faceless(zones, xyxy[face], self.params.face_in_zone)
        if not need.any():
            return masked
        found = Detections(zones[need], persons.score[need], np.full(int(need.sum()), self.head, np.int32))
        return Detections.concat([masked, found])
