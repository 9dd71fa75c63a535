"""The tracking clip generator and leak measurement: ground truth matches the pixels, leaks are counted exactly."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import FakeDetector, video_frames
from edge.eval import clips as evalclips
from edge.eval.clips import Clip, ClipSpec, TrackPlan, ground_truth, load_face_crops, make_clip, measure, render
from edge.frame import Detections, FACE
from edge.mask import MaskStyle
from edge.track import Tracker, TrackParams

PETS = "vtest_pets2009_480x360.avi"  # 480x360: the cheapest real clip to decode


@pytest.fixture(scope="module")
def crops():
    if not evalclips.WIDER_GT.exists():
        pytest.skip("shared wider_dev not available")
    return load_face_crops(min_size=40.0)


@pytest.fixture(scope="module")
def pets_clip(crops):
    return make_clip(ClipSpec(PETS, 0, 60, 14, seed=3, name="pets"), crops)


def still_clip(crops, plans: list[TrackPlan], frames: int) -> Clip:
    w, h = 480, 360
    return Clip(ClipSpec(PETS, 0, frames, len(plans), name="hand"), evalclips.video_path(PETS), w, h, 25.0,
                tuple(plans), tuple(crops), *ground_truth(plans, frames, w, h))


def plan(k: int, p0, p1, size: float = 30.0, start: int = 0, length: int = 12) -> TrackPlan:
    mid = ((p0[0] + p1[0]) / 2, (p0[1] + p1[1]) / 2)
    return TrackPlan(k, 0, start, length, p0, mid, p1, size, size, 0.0, 1.0)


def test_face_crops_hold_their_face_box(crops):
    assert len(crops) >= 20
    for c in crops:
        x1, y1, x2, y2 = c.face
        h, w = c.image.shape[:2]
        assert 0 < x1 < x2 < w and 0 < y1 < y2 < h
        assert c.size >= 40.0 * 0.99  # restoring the aspect only enlarges


@pytest.mark.parametrize("warp", [0.0, 0.5, -0.5])
def test_trajectory_endpoints_sizes_and_life(warp):
    p = TrackPlan(0, 0, 5, 21, (100.0, 50.0), (150.0, 200.0), (300.0, 80.0), 8.0, 32.0, warp, 1.0)
    assert p.box_at(4) is None and p.box_at(26) is None
    first, last = p.box_at(5), p.box_at(25)
    np.testing.assert_allclose((first[:2] + first[2:]) / 2, (100, 50), atol=1.0)
    np.testing.assert_allclose((last[:2] + last[2:]) / 2, (300, 80), atol=1.0)
    assert abs(np.sqrt(np.prod(first[2:] - first[:2])) - 8) <= 1
    assert abs(np.sqrt(np.prod(last[2:] - last[:2])) - 32) <= 1
    widths = [p.box_at(f)[2] - p.box_at(f)[0] for f in range(5, 26)]
    assert widths == sorted(widths)  # geometric growth, monotone in time for |warp| < 1


def test_ground_truth_matches_the_plans(pets_clip):
    c = pets_clip
    assert c.boxes.shape == (60, 14, 4)
    for f in range(c.frames):
        for k, p in enumerate(c.plans):
            box = p.box_at(f)
            if box is None:
                assert not c.visible[f, k] and not c.present[f, k] and c.sizes[f, k] == 0
                continue
            clipped = np.clip(box, 0, [c.width, c.height, c.width, c.height])
            np.testing.assert_array_equal(c.boxes[f, k], clipped)
            assert c.sizes[f, k] == pytest.approx(np.sqrt(np.prod(box[2:] - box[:2])))
            if c.present[f, k]:
                assert np.prod(clipped[2:] - clipped[:2]) >= evalclips.PRESENT_VISIBLE * np.prod(box[2:] - box[:2])
    assert c.present.any(axis=0).all()  # every track is scored somewhere


def test_small_faces_are_present(pets_clip):
    scored = pets_clip.sizes[pets_clip.present]
    assert (scored < 16).sum() >= 20
    assert (scored < 8).sum() >= 1
    assert (scored >= 32).sum() >= 1


def test_rendered_face_fills_its_ground_truth_box(crops):
    """Alpha is exactly 1 inside the box (same pixels on black and white backgrounds), 0 beyond the context."""
    c = still_clip(crops, [plan(0, (100.0, 100.0), (160.0, 120.0), size=24.0), plan(1, (400.0, 300.0), (300.0, 250.0),
                                                                                        size=11.0)], 12)
    for f in (0, 5, 11):
        black = render(np.zeros((c.height, c.width, 3), np.uint8), c, f)
        white = render(np.full((c.height, c.width, 3), 255, np.uint8), c, f)
        same = (black == white).all(axis=2)
        touched = np.zeros(same.shape, bool)
        for k in range(2):
            x1, y1, x2, y2 = c.boxes[f, k]
            assert same[y1:y2, x1:x2].all()
            outer, _ = evalclips.footprint(c.plans[k].box_at(f), c.crops[c.plans[k].crop])
            touched[max(outer[1], 0):outer[3], max(outer[0], 0):outer[2]] = True
        assert (black[~touched] == 0).all() and (white[~touched] == 255).all()


def test_written_clip_reads_back(tmp_path, crops):
    clip = make_clip(ClipSpec(PETS, 10, 8, 4, seed=7, name="rt"), crops)
    video, gt = evalclips.write_clip(clip, tmp_path)
    decoded = video_frames(video)
    assert len(decoded) == 8 and decoded[0].shape == (360, 480, 3)
    for got, want in zip(decoded, evalclips.frames(clip)):
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 6  # lossy mp4v, same picture
    doc = json.loads(gt.read_text())
    assert doc["frames"] == 8 and len(doc["gt"]) == 8 and len(doc["tracks"]) == 4
    for f, faces in enumerate(doc["gt"]):
        assert sorted(x["track"] for x in faces) == list(np.flatnonzero(clip.visible[f]))
        for x in faces:
            assert x["xyxy"] == clip.boxes[f, x["track"]].tolist() and x["present"] == bool(clip.present[f, x["track"]])


class Oracle(FakeDetector):
    """Returns the clip's true face boxes, except for (frame, track) pairs it is told to miss."""

    models = (("oracle", "0"),)

    def __init__(self, clip: Clip, misses: set[tuple[int, int]]) -> None:
        self.clip, self.misses, self.calls = clip, misses, 0

    def detect(self, image, watch=None) -> Detections:
        f, self.calls = self.calls, self.calls + 1  # measure() runs the detector once per frame, in order
        ks = [k for k in np.flatnonzero(self.clip.visible[f]) if (f, k) not in self.misses]
        boxes = self.clip.boxes[f, ks].astype(np.float32).reshape(-1, 4)
        return Detections(boxes, np.full(len(ks), 0.9, np.float32), np.full(len(ks), FACE, np.int32))


def holds(*values: int) -> dict:
    out = {"none": lambda: None}
    out.update({f"hold {h}": (lambda h=h: Tracker(TrackParams(hold_frames=h))) for h in values})
    return out


# track 0 stands still, track 1 moves 3 px per frame; misses are (frame, track)
MISSES = {(3, 0), (4, 0), (5, 0), (6, 1), (7, 1), (9, 0)}


@pytest.mark.parametrize("run, leaked, per_track, longest", [
    ("none", 6, [4, 2], 3),
    ("hold 1", 3, [2, 1], 2),  # each gap's frames after the first are beyond a 1-frame hold
    ("hold 3", 0, [0, 0], 0),
])
def test_measure_counts_leaks_exactly(crops, run, leaked, per_track, longest):
    c = still_clip(crops, [plan(0, (120.0, 120.0), (120.0, 120.0)), plan(1, (250.0, 200.0), (283.0, 200.0), size=14.0)],
                   12)
    assert c.present.all()
    result = measure([c], Oracle(c, MISSES), MaskStyle(), holds(1, 3))
    r = result["runs"][run]
    assert r["face_frames"] == 24 and r["leaked_frames"] == leaked
    assert [t["leaked"] for t in r["per_track"]] == per_track
    assert r["longest_leak_max"] == longest
    assert r["tracks_with_leak"] == sum(x > 0 for x in per_track)
    assert r["dropped_frames"] == 0
    assert result["runs"]["none"]["held_boxes"] == 0 and result["runs"]["hold 3"]["held_boxes"] == len(MISSES)


def test_measure_buckets_and_overmask(crops):
    c = still_clip(crops, [plan(0, (120.0, 120.0), (120.0, 120.0), size=40.0),
                           plan(1, (300.0, 200.0), (300.0, 200.0), size=12.0)], 6)
    result = measure([c], Oracle(c, {(2, 1)}), MaskStyle(), holds(3))
    none, held = result["runs"]["none"], result["runs"]["hold 3"]
    assert none["buckets"]["8-16"]["leaked_frames"] == 1 and none["buckets"][">=64"]["face_frames"] == 0
    assert none["buckets"]["32-64"]["protected_share"] == 1.0
    assert held["buckets"]["8-16"]["leaked_frames"] == 0
    assert 0 < none["overmask_share"] < held["overmask_share"] < 0.05  # margins paint a little; the hold adds a bit
    table = evalclips.format_table(result)
    assert "| hold 3 |" in table and "| 100.0% · 0 · 0/1 |" in table and "1/1" in table


def test_detector_failure_is_scored_as_a_leak(crops):
    c = still_clip(crops, [plan(0, (120.0, 120.0), (120.0, 120.0))], 4)

    class Failing(Oracle):
        def detect(self, image, watch=None):
            if self.calls == 2:
                self.calls += 1
                raise RuntimeError("model fell over")
            return super().detect(image, watch)

    r = measure([c], Failing(c, set()), MaskStyle(), holds(3))["runs"]
    assert r["none"]["dropped_frames"] == 1 and r["none"]["leaked_frames"] == 1
    assert r["hold 3"]["dropped_frames"] == 1 and r["hold 3"]["leaked_frames"] == 1  # not sent, but scored as unprotected


@pytest.mark.parametrize("inside, refused", [("edge/clips", True), ("out/clips", False), (None, False)])
def test_generated_media_stay_out_of_the_repository(tmp_path, inside, refused):
    target = evalclips.ROOT / inside if inside else tmp_path / "clips"
    if refused:
        with pytest.raises(SystemExit):
            evalclips._refuse_repo_path(target)
    else:
        evalclips._refuse_repo_path(target)
