"""The temporal hold: association, constant-velocity prediction, growing margins, resets, wiring."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import FakeDetector
from edge import mask
from edge.config import CameraConfig, Config, ConfigError, TrackConfig, from_dict, override
from edge.frame import FACE, PLATE, Detections, DroppedFrame, Frame, MaskedFrame
from edge.metrics import Metrics
from edge.pipeline import Pipeline
from edge.track import Tracker, TrackParams, for_camera, hold_of

H, W = 200, 400


def frame_of(seq: int, cam: str = "cam", shape: tuple[int, int] = (H, W)) -> Frame:
    return Frame(np.zeros((*shape, 3), np.uint8), cam, seq, 1_000 + seq, 2_000 + seq, f"{seq:06d}")


def dets(*boxes, cls: int = FACE, score: float = 0.9) -> Detections:
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.full(len(boxes), score), np.full(len(boxes), cls))


def box_at(cx: float, cy: float, w: float = 20, h: float = 20) -> tuple[float, float, float, float]:
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def live_tracks(tracker: Tracker) -> int:
    """Tracks the tracker holds: only these tests need the count, so it is read here, not in production."""
    return len(tracker._tracks)


def centre(xyxy) -> np.ndarray:
    xyxy = np.asarray(xyxy, np.float64)
    return (xyxy[:2] + xyxy[2:]) / 2


def test_empty_input_gives_empty_output():
    out = Tracker().update(frame_of(0), Detections())
    assert out.xyxy.shape == (0, 4) and out.score.shape == (0,) and out.class_id.shape == (0,)


@pytest.mark.parametrize("shift, tracks_after", [
    ((3, 0), 1),  # overlapping boxes: IoU association
    ((18, 0), 1),  # no overlap but centre within one box size: distance association
    ((0, -15), 1),
    ((45, 0), 2),  # too far: a new track, the old one is held
])
def test_association_across_frames(shift, tracks_after):
    t = Tracker(TrackParams(hold_frames=3))
    t.update(frame_of(0), dets(box_at(100, 100)))
    out = t.update(frame_of(1), dets(box_at(100 + shift[0], 100 + shift[1])))
    assert live_tracks(t) == tracks_after
    assert len(out) == tracks_after  # an unmatched old track is held next to the new detection
    assert int(t.last_held.sum()) == tracks_after - 1


def test_detections_pass_through_first_and_unchanged():
    t = Tracker()
    t.update(frame_of(0), dets(box_at(50, 50), box_at(300, 100)))
    d = dets(box_at(52, 50), score=0.7)
    out = t.update(frame_of(1), d)
    np.testing.assert_array_equal(out.xyxy[:1], d.xyxy)
    np.testing.assert_array_equal(out.score[:1], d.score)
    assert t.last_held.tolist() == [False, True]


@pytest.mark.parametrize("hold", [1, 2, 5])
def test_missed_detection_is_held_at_prediction_then_released(hold):
    t = Tracker(TrackParams(hold_frames=hold, margin_growth=0.0))
    t.update(frame_of(0), dets(box_at(100, 80)))
    t.update(frame_of(1), dets(box_at(104, 80)))  # 4 px per frame to the right
    for k in range(1, hold + 1):
        out = t.update(frame_of(1 + k), Detections())
        assert len(out) == 1 and t.last_held.tolist() == [True]
        np.testing.assert_allclose(centre(out.xyxy[0]), (104 + 4 * k, 80), atol=1e-4)
        assert out.class_id[0] == FACE
        assert out.score[0] == pytest.approx(0.9 * 0.9 ** k, rel=1e-5)
    out = t.update(frame_of(2 + hold), Detections())
    assert len(out) == 0 and live_tracks(t) == 0


@pytest.mark.parametrize("hits, score, params, expected", [
    (1, 0.9, dict(), 6),  # a confident box: the whole hold from its first detection
    (1, 0.6, dict(), 6),
    (3, 0.3, dict(), 6),  # found three times: the whole hold whatever its score
    (2, 0.0, dict(), 4),  # half way by hits: 2 + 4 * 0.5
    (1, 0.3, dict(), 4),  # half way by score
    (1, 0.15, dict(), 3),  # 2 + 4 * 0.25
    (1, 0.0, dict(), 2),  # no evidence: hold_min_frames
    (1, 0.1, dict(full_hold_hits=1), 6),  # full_hold_hits 1: every track the whole hold (the old hold)
    (1, 0.0, dict(hold_min_frames=0), 0),
    (1, 0.0, dict(hold_frames=1), 1),  # hold_min_frames never exceeds hold_frames
    (5, 0.9, dict(hold_frames=0), 0),
])
def test_hold_scales_with_hits_and_score(hits, score, params, expected):
    p = TrackParams(**{"hold_frames": 6, "full_hold_hits": 3, "full_hold_score": 0.6, "hold_min_frames": 2, **params})
    assert hold_of(np.array([hits]), np.array([score], np.float32), p).tolist() == [expected]


@pytest.mark.parametrize("score, seen, held_for", [
    (0.15, 1, 3),  # one weak box (a face on a tree top): a short hold, not hold_frames of paint
    (0.15, 3, 6),  # the same box found three frames running: it is real enough, the whole hold
    (0.9, 1, 6),
])
def test_a_weak_single_box_is_held_briefly(score, seen, held_for):
    t = Tracker(TrackParams(hold_frames=6, full_hold_hits=3, full_hold_score=0.6, hold_min_frames=2))
    for seq in range(seen):
        t.update(frame_of(seq), dets(box_at(100, 80), score=score))
    held = [len(t.update(frame_of(seen - 1 + k), Detections())) for k in range(1, 9)]
    assert held == [1] * held_for + [0] * (8 - held_for)


@pytest.mark.parametrize("xs, smoothing, expected_v", [
    ((100, 110), 0.5, 10.0),  # first measurement taken as is
    ((100, 110, 130), 0.5, 15.0),  # then smoothed: 0.5 * 20 + 0.5 * 10
    ((100, 110, 130), 1.0, 20.0),  # no smoothing: the last step
    ((100, 110, 130, 130), 0.5, 7.5),  # stopping: 0.5 * 0 + 0.5 * 15
    ((100, 100, 100), 0.5, 0.0),
])
def test_constant_velocity_prediction(xs, smoothing, expected_v):
    t = Tracker(TrackParams(hold_frames=4, velocity_smoothing=smoothing, margin_growth=0.0))
    for seq, x in enumerate(xs):
        t.update(frame_of(seq), dets(box_at(x, 100)))
    for k in (1, 2, 3):
        out = t.update(frame_of(len(xs) - 1 + k), Detections())
        assert centre(out.xyxy[0])[0] == pytest.approx(xs[-1] + expected_v * k, abs=1e-4)


def test_velocity_over_a_gap_is_per_frame():
    t = Tracker(TrackParams(hold_frames=6, margin_growth=0.0))
    t.update(frame_of(0), dets(box_at(100, 100)))
    t.update(frame_of(3), dets(box_at(106, 94)))  # frames 1 and 2 were lost: 2 px and -2 px per frame
    out = t.update(frame_of(5), Detections())
    assert live_tracks(t) == 1
    np.testing.assert_allclose(centre(out.xyxy[0]), (110, 90), atol=1e-4)


@pytest.mark.parametrize("growth, missed", [(0.1, 1), (0.1, 3), (0.25, 2), (0.0, 2)])
def test_margin_grows_per_missed_frame(growth, missed):
    t = Tracker(TrackParams(hold_frames=5, margin_growth=growth))
    t.update(frame_of(0), dets(box_at(200, 100, w=20, h=30)))
    out = t.update(frame_of(missed), Detections())
    w, h = out.xyxy[0, 2:] - out.xyxy[0, :2]
    assert w == pytest.approx(20 * (1 + 2 * growth * missed), abs=1e-3)
    assert h == pytest.approx(30 * (1 + 2 * growth * missed), abs=1e-3)
    np.testing.assert_allclose(centre(out.xyxy[0]), (200, 100), atol=1e-4)


@pytest.mark.parametrize("second, held", [
    (dict(seq=3), True),  # frames 1, 2 dropped: still within the hold of 3
    (dict(seq=4), False),  # 4 frames passed: beyond the hold, released
    (dict(seq=0), False),  # sequence restarts: another stream
    (dict(seq=-5), False),
    (dict(seq=1, cam="other"), False),
    (dict(seq=1, shape=(H, W + 2)), False),  # another frame size: not the same video
])
def test_reset_when_frames_are_not_a_continuation(second, held):
    t = Tracker(TrackParams(hold_frames=3))
    t.update(frame_of(0), dets(box_at(100, 100)))
    out = t.update(frame_of(**second), Detections())
    assert len(out) == int(held)
    assert live_tracks(t) == int(held)


def test_separate_classes_are_not_associated():
    t = Tracker(TrackParams(hold_frames=2, margin_growth=0.0))
    t.update(frame_of(0), dets(box_at(100, 100), cls=FACE))
    out = t.update(frame_of(1), dets(box_at(100, 100), cls=PLATE))
    assert live_tracks(t) == 2
    assert sorted(out.class_id.tolist()) == [FACE, PLATE]
    assert out.class_id[t.last_held].tolist() == [FACE]


def test_two_tracks_keep_their_own_identity():
    t = Tracker(TrackParams(hold_frames=2, margin_growth=0.0))
    t.update(frame_of(0), dets(box_at(100, 100), box_at(300, 100)))
    t.update(frame_of(1), dets(box_at(305, 100), box_at(95, 100)))  # detector order swapped
    out = t.update(frame_of(2), Detections())
    xs = sorted(centre(b)[0] for b in out.xyxy)
    assert xs == pytest.approx([90, 310], abs=1e-4)


def test_held_box_is_clipped_and_dropped_outside_the_frame():
    t = Tracker(TrackParams(hold_frames=10, margin_growth=0.0))
    t.update(frame_of(0), dets(box_at(W - 45, 100, w=40)))
    t.update(frame_of(1), dets(box_at(W - 30, 100, w=40)))  # 15 px per frame towards the right edge
    out = t.update(frame_of(2), Detections())
    assert out.xyxy[0].tolist() == pytest.approx([W - 35, 90, W, 110])
    assert t.update(frame_of(3), Detections()).xyxy[0].tolist() == pytest.approx([W - 20, 90, W, 110])
    assert t.update(frame_of(4), Detections()).xyxy[0].tolist() == pytest.approx([W - 5, 90, W, 110])
    assert len(t.update(frame_of(5), Detections())) == 0


def test_hold_zero_passes_detections_through():
    t = Tracker(TrackParams(hold_frames=0))
    t.update(frame_of(0), dets(box_at(100, 100)))
    assert len(t.update(frame_of(1), Detections())) == 0


def test_state_unchanged_when_update_fails(monkeypatch):
    t = Tracker(TrackParams(hold_frames=3, margin_growth=0.0))
    t.update(frame_of(0), dets(box_at(100, 100)))
    t.update(frame_of(1), dets(box_at(110, 100)))

    def broken(*_a, **_k):
        raise RuntimeError("bug")

    monkeypatch.setattr(t, "_born", broken)
    with pytest.raises(RuntimeError):
        t.update(frame_of(2), dets(box_at(300, 150)))
    monkeypatch.undo()
    out = t.update(frame_of(2), Detections())
    np.testing.assert_allclose(centre(out.xyxy[0]), (120, 100), atol=1e-4)


@pytest.mark.parametrize("kwargs", [dict(hold_frames=-1), dict(iou_threshold=1.5), dict(margin_growth=-0.1),
                                    dict(velocity_smoothing=0.0), dict(max_tracks=0),
                                    dict(full_hold_hits=0), dict(full_hold_score=0.0), dict(hold_min_frames=-1)])
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        TrackParams(**kwargs)


def test_track_count_is_bounded():
    t = Tracker(TrackParams(hold_frames=5, max_tracks=3))
    t.update(frame_of(0), dets(*[box_at(30 + 60 * i, 100) for i in range(5)]))
    assert live_tracks(t) == 3


# --- in the pipeline -------------------------------------------------------------------------------

class ScriptedDetector(FakeDetector):
    """Detections per seq; raises on the seqs listed in `fail` (a detector failure)."""

    models = (("scripted", "0" * 64),)

    def __init__(self, script: dict[int, Detections], fail: set[int]) -> None:
        self.script, self.fail, self.seq = script, fail, 0

    def detect(self, image, watch=None):
        seq, self.seq = self.seq, self.seq + 1
        if seq in self.fail:
            raise RuntimeError("detector failed")
        return self.script.get(seq, Detections())


def test_pipeline_failure_leaves_tracker_intact_and_counts_the_gap():
    script = {0: dets(box_at(100, 100)), 1: dets(box_at(110, 100))}
    metrics = Metrics()
    tracker = Tracker(TrackParams(hold_frames=4, margin_growth=0.0), metrics=metrics)
    style = mask.MaskStyle(style="solid", margin=0.0, small_margin=0.0, min_margin_px=0)
    p = Pipeline(ScriptedDetector(script, fail={2}), style, metrics=metrics, tracker=tracker)
    outs = [p.process(frame_of(seq)) for seq in range(4)]
    assert isinstance(outs[2], DroppedFrame)
    assert live_tracks(tracker) == 1
    last = outs[3]
    assert isinstance(last, MaskedFrame)
    # seq 2 was dropped but counts as a passed frame: predicted two frames on from seq 1
    assert last.regions.tolist() == [[120, 90, 140, 110]]
    assert (last.frame.image[90:110, 120:140] == 0).all()
    assert metrics.counters()["track_held"] == 1


def test_pipeline_masks_held_box():
    script = {0: dets(box_at(100, 100))}
    p = Pipeline(ScriptedDetector(script, fail=set()), mask.MaskStyle(style="solid", color=(0, 0, 255)),
                 tracker=Tracker(TrackParams(hold_frames=2)))
    p.process(frame_of(0))
    out = p.process(frame_of(1))
    assert len(out.regions) == 1
    x1, y1, x2, y2 = out.regions[0]
    assert (out.frame.image[y1:y2, x1:x2] == (0, 0, 255)).all()


# --- configuration ---------------------------------------------------------------------------------

def test_config_track_section():
    cfg = from_dict(Config, {"track": {"hold_frames": 3, "margin_growth": 0.2}})
    assert cfg.track == TrackConfig(hold_frames=3, margin_growth=0.2)
    assert Config().track.enabled


@pytest.mark.parametrize("table, key", [({"hold_frames": -1}, "track.hold_frames"),
                                        ({"iou_threshold": 2}, "track.iou_threshold"),
                                        ({"hold": 3}, "track.hold")])
def test_config_track_errors_name_the_key(table, key):
    with pytest.raises(ConfigError, match=key):
        from_dict(Config, {"track": table})


@pytest.mark.parametrize("camera, enabled, tracked", [
    (dict(kind="camera", source="0"), True, True),
    (dict(kind="replay", source="VIDEO"), True, True),
    (dict(kind="replay", source="FOLDER"), True, False),  # unrelated stills never hold
    (dict(kind="camera", source="0"), False, False),
])
def test_for_camera(tmp_path, camera, enabled, tracked):
    (tmp_path / "stills").mkdir()
    (tmp_path / "clip.mp4").write_bytes(b"")
    source = {"VIDEO": str(tmp_path / "clip.mp4"), "FOLDER": str(tmp_path / "stills")}.get(camera["source"],
                                                                                          camera["source"])
    cfg = dataclasses.replace(Config(), cameras=(CameraConfig(id="c1", **{**camera, "source": source}),))
    cfg = override(cfg, {"track.enabled": enabled, "track.hold_frames": 4})
    tracker = for_camera(cfg, "c1")
    assert (tracker is not None) == tracked
    if tracked:
        assert tracker.hold_frames == 4


@pytest.mark.parametrize("seed", range(4))
def test_tracker_only_ever_adds_painted_pixels(seed):
    """Fail closed: over random detections, gaps, dropped frames and resizes, every pixel the pipeline
    paints without a tracker is also painted with it."""
    rng = np.random.default_rng(seed)
    style = mask.MaskStyle(style="solid")
    plain, tracked = Pipeline(Replay(), style), Pipeline(Replay(), style, tracker=Tracker(TrackParams(hold_frames=3)))
    seq, shape, extra = 0, (H, W), 0
    for _ in range(40):
        seq += int(rng.choice([1, 1, 1, 2, 5]))
        if rng.random() < 0.05:
            shape = (H, W + 40) if shape == (H, W) else (H, W)
        n = int(rng.integers(0, 4))
        xy = rng.uniform(-30, [W, H], size=(n, 2))
        wh = rng.uniform(1, 60, size=(n, 2))
        d = Detections(np.concatenate([xy, xy + wh], 1).astype(np.float32), rng.uniform(0.3, 1, n).astype(np.float32),
                       rng.integers(0, 2, n).astype(np.int32))
        Replay.next = d
        a, b = plain.process(frame_of(seq, shape=shape)), tracked.process(frame_of(seq, shape=shape))
        assert isinstance(a, MaskedFrame) and isinstance(b, MaskedFrame)
        pa, pb = mask.painted_map(a.frame.image.shape, a.regions), mask.painted_map(b.frame.image.shape, b.regions)
        assert not (pa & ~pb).any()
        extra += int((pb & ~pa).sum())
    assert extra > 0  # the hold did add mask somewhere


class Replay(FakeDetector):
    """A detector that returns whatever the test set last."""

    models = (("replay", "0"),)
    next = Detections()

    def detect(self, image, watch=None) -> Detections:
        return Replay.next
