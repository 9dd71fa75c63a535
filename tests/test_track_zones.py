"""The hold keeps what the paint stages add: a head zone found in frame k is still painted in frame k+1
when the person detector misses that person there (edge.pipeline runs the hold after the paint stages).
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import VIDEO, FakeDetector, WrappedDetector, need
from edge import compose
from edge.frame import Detections, Frame, MaskedFrame
from edge.heads import HeadParams, HeadStage
from edge.mask import MaskStyle, painted_map
from edge.pipeline import Pipeline
from edge.track import Tracker, TrackParams

CLASSES = compose.class_table(compose.load_config(None, ["detect.context.enabled=true"]))
FACE, HEAD, PERSON = (CLASSES.id(n) for n in ("face", "head", "person"))


class Script(FakeDetector):
    """Per frame, the detections listed for it (nothing once the list ends)."""

    def __init__(self, frames: list[Detections]) -> None:
        self.frames = list(frames)

    def detect(self, image, watch=None):
        return self.frames.pop(0) if self.frames else Detections()


class MissesPersons(WrappedDetector):
    """The real detector, with every person it finds dropped on the chosen calls (a missed frame)."""

    def __init__(self, inner, miss: set[int]) -> None:
        super().__init__(inner)
        self.calls, self.miss = 0, miss

    def detect(self, image, watch=None):
        dets = self.inner.detect(image, watch)
        self.calls += 1
        if self.calls - 1 in self.miss:
            dets = dets.take(np.flatnonzero(dets.class_id != PERSON))
        return dets


def dets(rows):
    return Detections(np.array([r[1] for r in rows], np.float32).reshape(-1, 4), np.full(len(rows), 0.9),
                      np.array([r[0] for r in rows], np.int32))


def pipeline(detector, hold: int) -> Pipeline:
    tracker = Tracker(TrackParams(hold_frames=hold)) if hold else None
    return Pipeline(detector, MaskStyle(style="solid"), classes=CLASSES, tracker=tracker,
                    stages=[HeadStage(HeadParams(), CLASSES)])


PERSON_BOX = [100.0, 50.0, 160.0, 250.0]


@pytest.mark.parametrize("hold, seqs, held_in_last", [
    (6, [0, 1], True),  # the next frame: held
    (6, [0, 6], True),  # the last frame of the hold
    (6, [0, 7], False),  # past it: let go
    (0, [0, 1], False),  # no tracker: nothing held
    (2, [0, 2, 3], False),  # two misses in a row and a hold of 2 frames
])
def test_a_head_zone_is_held_like_a_face(hold, seqs, held_in_last):
    script = [dets([(PERSON, PERSON_BOX)])] + [Detections() for _ in seqs[1:]]
    pipe = pipeline(Script(script), hold)
    outs = [pipe.process(Frame(np.full((300, 600, 3), 200, np.uint8), "cam", s, 0, 0)) for s in seqs]
    assert all(isinstance(o, MaskedFrame) and o.status == "masked" for o in outs)
    assert outs[0].detections.class_id.tolist() == [HEAD]
    zone = outs[0].detections.xyxy[0]
    last = outs[-1]
    assert (last.detections.class_id == HEAD).any() == held_in_last
    painted = painted_map(last.frame.image.shape, last.regions)
    x1, y1, x2, y2 = np.floor(zone[:2]).astype(int).tolist() + np.ceil(zone[2:]).astype(int).tolist()
    assert painted[max(y1, 0):y2, x1:x2].all() == held_in_last


def test_grown_faces_are_held_grown():
    params = HeadParams(grow_side=0.2, grow_up=0.35, grow_down=0.1)
    script = [dets([(FACE, [200.0, 100.0, 220.0, 120.0])]), Detections()]
    pipe = Pipeline(Script(script), MaskStyle(style="solid"), classes=CLASSES, tracker=Tracker(TrackParams()),
                    stages=[HeadStage(params, CLASSES)])
    first, second = (pipe.process(Frame(np.full((300, 600, 3), 200, np.uint8), "cam", s, 0, 0)) for s in (0, 1))
    grown = first.detections.xyxy[0]
    assert grown.tolist() == pytest.approx([196.0, 93.0, 224.0, 122.0])
    held = second.detections.xyxy[second.detections.class_id == FACE]
    assert len(held) == 1 and (held[0, :2] <= grown[:2]).all() and (held[0, 2:] >= grown[2:]).all()


def test_real_clip_head_zone_found_in_frame_k_is_painted_in_k_plus_1():
    """Real YOLOX and YuNet on two consecutive frames of the PETS pedestrian clip; the persons are dropped
    from the second frame's detections (the miss); every head zone of the first is painted in the second."""
    cap = cv2.VideoCapture(str(need(VIDEO / "vtest_pets2009_480x360.avi")))
    frames = []
    for _ in range(41):
        ok, image = cap.read()
        assert ok
        frames.append(image)
    cap.release()
    cfg = compose.load_config(None, ["detect.context.enabled=true", "mask.style=solid", "service.deadline_ms=0"])
    classes = compose.class_table(cfg)
    assert classes.id("person") == PERSON and classes.id("head") == HEAD
    detector = MissesPersons(compose.build_detector(cfg, classes), miss={1})
    pipe = compose.build_pipeline(cfg, detector=detector, tracker=Tracker(TrackParams()))
    k, k1 = (pipe.process(Frame(frames[i].copy(), "pets", 40 + n, 0, 0)) for n, i in enumerate((39, 40)))
    assert isinstance(k, MaskedFrame) and isinstance(k1, MaskedFrame)
    zones = k.detections.xyxy[k.detections.class_id == HEAD]
    assert len(zones) >= 3  # the clip's pedestrians are found, their faces are too small for YuNet
    assert not (k1.context.class_id == PERSON).any()  # the miss
    painted = painted_map(k1.frame.image.shape, k1.regions)
    for x1, y1, x2, y2 in zones:
        y1, x1 = max(int(np.floor(y1)), 0), max(int(np.floor(x1)), 0)
        assert painted[y1:int(np.ceil(y2)), x1:int(np.ceil(x2))].all()
    # without the hold the second frame paints none of those zones
    bare = compose.build_pipeline(cfg, detector=MissesPersons(compose.build_detector(cfg, classes), miss={0}))
    alone = bare.process(Frame(frames[40].copy(), "pets", 0, 0, 0))
    assert not (alone.detections.class_id == HEAD).any()
