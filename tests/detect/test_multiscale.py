"""Passes, windows and merging: tiling covers the region with overlap, boxes map back exactly, merging keeps
small faces beside large ones and never lets a tile-cut box suppress a whole one; a real model end to end."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import WIDER, host, need
from edge.config import ClassConfig, TilesConfig
from edge.detect.boxes import iou_matrix
from edge.detect.detector import OnnxDetector, to_detections
from edge.detect.multiscale import (EDGE_PX, Candidates, PassSpec, Window, box_size, full_frame_passes, merge,
                                    passes_from_config, plan, select, spans, to_frame)
from edge.frame import FACE


def cands(rows, partial=(), pass_index=None) -> Candidates:
    """Candidates from (x1, y1, x2, y2, score) rows; `partial` lists the indices cut by a tile border."""
    a = np.array(rows, np.float32).reshape(-1, 5)
    flags = np.zeros(len(a), bool)
    flags[list(partial)] = True
    idx = np.zeros(len(a), np.int32) if pass_index is None else np.array(pass_index, np.int32)
    return Candidates(a[:, :4].copy(), a[:, 4].copy(), idx, flags)


# --- spans and plan ---------------------------------------------------------------------------------

@pytest.mark.parametrize("length, tile, overlap", [
    (1000, 320, 64), (641, 320, 0), (640, 320, 32), (2000, 512, 255), (321, 320, 100), (5000, 640, 96),
])
def test_spans_cover_the_length_with_equal_tiles_and_enough_overlap(length, tile, overlap):
    s = spans(length, tile, overlap)
    assert s[0][0] == 0 and s[-1][1] == length
    assert all(b - a == tile for a, b in s)
    assert all(prev[1] - nxt[0] >= overlap for prev, nxt in zip(s, s[1:]))
    assert all(nxt[0] > prev[0] for prev, nxt in zip(s, s[1:]))


@pytest.mark.parametrize("length, tile", [(300, 320), (320, 320), (100, 0)])
def test_spans_one_window_when_the_tile_covers_everything(length, tile):
    assert spans(length, tile, 16) == [(0, length)]


def test_full_frame_pass_is_one_uncut_window():
    (w,) = plan(480, 640, (PassSpec(scale=2.0),))
    assert (w.x0, w.y0, w.x1, w.y1) == (0, 0, 640, 480)
    assert w.cut == (False, False, False, False)
    assert w.resized_wh == (1280, 960) and w.input_hw(32) == (960, 1280)


@pytest.mark.parametrize("region, scale, tile, overlap", [
    ((0.0, 0.3, 1.0, 0.6), 2.0, 320, 48),
    ((0.1, 0.0, 0.9, 1.0), 3.0, 640, 96),
    ((0.0, 0.0, 1.0, 1.0), 1.5, 256, 32),
])
def test_tiles_cover_the_region_with_overlap(region, scale, tile, overlap):
    h, w = 480, 640
    windows = plan(h, w, (PassSpec(scale=scale, region=region, tile=tile, overlap=overlap),))
    assert len(windows) > 1
    x0, y0, x1, y1 = int(region[0] * w), int(region[1] * h), int(np.ceil(region[2] * w)), int(np.ceil(region[3] * h))
    covered = np.zeros((h, w), np.int32)
    for win in windows:
        covered[win.y0:win.y1, win.x0:win.x1] += 1
        # every tile is the same network input (one batch): `tile` input pixels, or the region where it is smaller
        for got, extent in zip(win.resized_wh, (x1 - x0, y1 - y0)):
            assert abs(got - min(tile, extent * scale)) <= 1
    assert len({win.group for win in windows}) == 1
    assert (covered[y0:y1, x0:x1] >= 1).all()
    assert covered.sum() == covered[y0:y1, x0:x1].sum()  # nothing outside the region
    # neighbours share at least the overlap (in frame pixels)
    xs = sorted({(win.x0, win.x1) for win in windows})
    assert all(a[1] - b[0] >= round(overlap / scale) for a, b in zip(xs, xs[1:]))


def test_cut_flags_mark_only_interior_tile_borders():
    windows = plan(400, 400, (PassSpec(scale=1.0, tile=250, overlap=100),))
    assert len(windows) == 4
    by_corner = {(w.x0 == 0, w.y0 == 0): w.cut for w in windows}
    assert by_corner[(True, True)] == (False, False, True, True)
    assert by_corner[(False, False)] == (True, True, False, False)


def test_plan_keeps_pass_order_and_index():
    passes = (PassSpec(scale=1.0), PassSpec(scale=2.0, region=(0, 0.4, 1, 0.6), tile=320, overlap=32))
    windows = plan(360, 640, passes)
    assert windows[0].pass_index == 0 and {w.pass_index for w in windows[1:]} == {1}


@pytest.mark.parametrize("kwargs", [
    {"region": (0.5, 0, 0.5, 1)}, {"region": (0, 0, 1.2, 1)}, {"scale": 0}, {"aspect": -1},
    {"tile": 64, "overlap": 64}, {"tile": -1},
])
def test_passspec_rejects_nonsense(kwargs):
    with pytest.raises(ValueError):
        PassSpec(**kwargs)


# --- mapping back to the frame ----------------------------------------------------------------------

@pytest.mark.parametrize("sx, sy, origin", [(2.0, 2.0, (100, 50)), (3.0, 3.0, (0, 0)), (2.5, 2.0, (33, 7))])
def test_to_frame_maps_input_pixels_back(sx, sy, origin):
    win = Window(0, origin[0], origin[1], origin[0] + 200, origin[1] + 100, sx, sy, (False,) * 4)
    frame_box = np.array([[origin[0] + 20, origin[1] + 10, origin[0] + 30, origin[1] + 40]], np.float32)
    rw, rh = win.resized_wh
    fx, fy = rw / 200, rh / 100
    input_box = (frame_box - [origin[0], origin[1]] * 2) * [fx, fy, fx, fy]
    c = to_frame(win, win.input_hw(32), input_box.astype(np.float32), np.array([0.9], np.float32), None,
                 (1000, 1000))
    np.testing.assert_allclose(c.xyxy, frame_box, atol=1e-3)
    assert c.score.tolist() == pytest.approx([0.9]) and not c.partial[0]


def test_to_frame_clips_drops_invisible_and_maps_landmarks():
    win = Window(3, 0, 0, 100, 100, 2.0, 2.0, (False,) * 4)
    xyxy = np.array([[-10, -10, 20, 20], [250, 250, 300, 300]], np.float32)  # second lies in the padding
    quad = np.full((2, 4, 2), 40.0, np.float32)
    c = to_frame(win, (224, 224), xyxy, np.array([0.8, 0.7], np.float32), quad, (100, 100))
    assert len(c) == 1 and c.pass_index.tolist() == [3]
    np.testing.assert_allclose(c.xyxy[0], [0, 0, 10, 10])
    np.testing.assert_allclose(c.quad[0], np.full((4, 2), 20.0))


@pytest.mark.parametrize("cut, box, partial", [
    ((False, False, True, False), (150, 40, 200, 80), True),  # touches an interior right border
    ((False, False, True, False), (150, 40, 200 - EDGE_PX - 1, 80), False),  # just inside it
    ((False, False, False, False), (150, 40, 200, 80), False),  # the frame's own edge cuts nothing
    ((True, False, False, False), (0, 40, 30, 80), True),
    ((False, True, False, True), (20, 60, 40, 100), True),
])
def test_to_frame_marks_boxes_cut_by_a_tile_border(cut, box, partial):
    win = Window(0, 100, 100, 200, 150, 2.0, 2.0, cut)  # input 200 x 100
    c = to_frame(win, (128, 224), np.array([box], np.float32), np.array([0.9], np.float32), None, (1000, 1000))
    assert c.partial.tolist() == [partial]


# --- size ranges and thresholds per pass ------------------------------------------------------------

def test_select_applies_each_pass_threshold_and_size_range():
    passes = (PassSpec(scale=1.0, score_threshold=0.5, min_box=16),
              PassSpec(scale=2.0, score_threshold=0.3, max_box=32))
    c = cands([(0, 0, 10, 10, 0.9),  # pass 0, 10 px: below its min
               (0, 0, 40, 40, 0.6),  # pass 0, 40 px: kept
               (0, 0, 40, 40, 0.4),  # pass 0: below its threshold
               (0, 0, 10, 10, 0.35),  # pass 1, 10 px: kept
               (0, 0, 32, 32, 0.9),  # pass 1, 32 px: at its max (exclusive)
               (0, 0, 20, 45, 0.9)],  # pass 1, sqrt(900) = 30 px: kept
              pass_index=[0, 0, 0, 1, 1, 1])
    kept = select(c, passes)
    assert kept.score.tolist() == pytest.approx([0.6, 0.35, 0.9])
    assert kept.pass_index.tolist() == [0, 1, 1]


def test_box_size_is_sqrt_area():
    assert box_size(np.array([[0, 0, 4, 16], [5, 5, 3, 9]], np.float32)).tolist() == [8.0, 0.0]


@pytest.mark.parametrize("kwargs", [{"thresholds": (0.3,)}, {"min_box": (1, 2, 3)}, {"max_box": (0,)}])
def test_full_frame_passes_need_one_value_per_scale(kwargs):
    with pytest.raises(ValueError):
        full_frame_passes((1.0, 2.0), 0.5, **kwargs)


def test_passes_from_config_full_frame_then_tiles():
    cfg = ClassConfig(score_threshold=0.4, scales=(1.0, 2.0), thresholds=(0.5, 0.3), max_box_px=(0, 48),
                      aspect=1.25, tiles=TilesConfig(enabled=True, region=(0, 0.3, 1, 0.7), scale=3.0, size=320,
                                                     overlap=64, max_box_px=20))
    p = passes_from_config(cfg)
    assert [x.scale for x in p] == [1.0, 2.0, 3.0]
    assert [x.score_threshold for x in p] == [0.5, 0.3, 0.4]  # tiles inherit the class threshold
    assert [x.max_box for x in p] == [0, 48, 20]
    assert p[2].tile == 320 and p[2].region == (0, 0.3, 1, 0.7)
    assert all(x.aspect == 1.25 for x in p)


def test_class_region_limits_the_scale_passes_and_not_the_tiles():
    cfg = ClassConfig(scales=(1.0, 0.5), region=(0.0, 0.3, 1.0, 1.0),
                      tiles=TilesConfig(enabled=True, region=(0.0, 0.2, 1.0, 0.6), size=0))
    p = passes_from_config(cfg)
    assert [x.region for x in p] == [(0.0, 0.3, 1.0, 1.0)] * 2 + [(0.0, 0.2, 1.0, 0.6)]
    win = plan(1080, 1920, p[:1])[0]
    assert (win.y0, win.y1, win.cut) == (324, 1080, (False, True, False, False))


def test_tiles_size_zero_is_the_whole_region_as_one_input():
    cfg = ClassConfig(tiles=TilesConfig(enabled=True, region=(0, 0.3, 1, 0.7), scale=2.0, size=0, overlap=96))
    (_, band) = passes_from_config(cfg)
    assert (band.tile, band.overlap) == (0, 0)
    (win,) = [w for w in plan(1080, 1920, (band,))]
    assert (win.x0, win.y0, win.x1, win.y1) == (0, 324, 1920, 756)
    assert win.cut == (False, True, False, True)  # boxes at the band's top and bottom edges are partial
    assert win.resized_wh == (3840, 864)


def test_per_scale_aspects_override_the_class_aspect():
    p = passes_from_config(ClassConfig(scales=(1.0, 1.0, 2.0), aspect=1.25, aspects=(1.0, 1.5, 1.5)))
    assert [(x.scale, x.aspect) for x in p] == [(1.0, 1.0), (1.0, 1.5), (2.0, 1.5)]
    assert [x.sx for x in p] == [1.0, 1.5, 3.0] and [x.sy for x in p] == [1.0, 1.0, 2.0]


# --- merging ----------------------------------------------------------------------------------------

def _kept(c: Candidates, iou: float = 0.45) -> list[float]:
    return sorted(c.score[merge(c, iou)].tolist())


def test_merge_keeps_a_small_face_beside_or_inside_a_large_one():
    c = cands([(100, 100, 200, 200, 0.9),  # large face
               (205, 150, 215, 160, 0.4),  # small face right next to it
               (110, 110, 122, 122, 0.5)])  # small box inside the large one (IoU 0.0144)
    assert _kept(c) == pytest.approx([0.4, 0.5, 0.9])


def test_merge_suppresses_duplicates_across_passes():
    c = cands([(10, 10, 30, 30, 0.9), (11, 11, 31, 31, 0.6), (10, 12, 30, 31, 0.7)], pass_index=[0, 1, 2])
    assert _kept(c) == pytest.approx([0.9])


@pytest.mark.parametrize("partial_box, partial_score, kept", [
    ((100, 100, 130, 200, 0.99), 0.99, [0.6]),  # half a face, higher score: the whole face survives, the half goes
    ((100, 100, 190, 190, 0.99), 0.99, [0.6]),  # mostly overlapping
    ((300, 100, 330, 200, 0.99), 0.99, [0.6, 0.99]),  # a cut box nothing covers is still masked
])
def test_partial_boxes_never_suppress_whole_ones(partial_box, partial_score, kept):
    c = cands([(100, 100, 200, 200, 0.6), partial_box], partial=[1])
    assert _kept(c) == pytest.approx(kept)


def test_partial_boxes_deduplicate_among_themselves():
    c = cands([(0, 0, 20, 40, 0.8), (0, 0, 21, 40, 0.7)], partial=[0, 1])
    assert _kept(c) == pytest.approx([0.8])


def test_merge_empty():
    assert merge(Candidates(), 0.45).shape == (0,)


def test_to_detections_carries_class_and_boxes():
    d = to_detections(cands([(0, 0, 10, 10, 0.9), (50, 50, 60, 60, 0.8)]), FACE, 0.45)
    assert len(d) == 2 and set(d.class_id.tolist()) == {FACE}


# --- a real model over tiles ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def crowd(wider_gt):
    name = max(wider_gt, key=lambda k: len(wider_gt[k]))  # the most faces: many small ones
    image = cv2.imread(str(need(WIDER / "images" / name)))
    return image, wider_gt[name]


def test_tiles_find_the_faces_the_full_upscaled_pass_finds(yunet_model, crowd):
    """Tiles at 2x (with overlap) see what one 2x pass sees: same faces, same places, mapped back exactly."""
    image, gt = crowd
    full = OnnxDetector(host(yunet_model, "yunet"), class_id=FACE, score_threshold=0.5,
                        passes=(PassSpec(scale=2.0, score_threshold=0.5),)).detect(image)
    tiled_det = OnnxDetector(host(yunet_model, "yunet"), class_id=FACE, score_threshold=0.5,
                             passes=(PassSpec(scale=2.0, tile=320, overlap=96, score_threshold=0.5),))
    assert len(plan(*image.shape[:2], tiled_det.passes)) > 4
    tiled = tiled_det.detect(image)
    assert len(full) >= 5
    # tiles start at other offsets of the stride grid, so small boxes move by a pixel or two: IoU > 0.5, not 1
    best = iou_matrix(full.xyxy, tiled.xyxy).max(axis=1)
    assert (best > 0.5).mean() >= 0.9
    hits = [int((iou_matrix(gt, d.xyxy).max(axis=1) > 0.3).sum()) for d in (full, tiled)]
    assert hits[1] >= 0.98 * hits[0]


def test_upscaled_passes_add_small_faces(yunet_model, crowd):
    """On a crowd of small faces a 1x + 2x detector finds more ground-truth faces than 1x alone."""
    image, gt = crowd

    def hits(passes) -> int:
        d = OnnxDetector(host(yunet_model, "yunet"), class_id=FACE, passes=passes).detect(image)
        return int((iou_matrix(gt, d.xyxy).max(axis=1, initial=0) > 0.3).sum()) if len(d) else 0

    native = hits((PassSpec(scale=1.0, score_threshold=0.4),))
    both = hits((PassSpec(scale=1.0, score_threshold=0.4), PassSpec(scale=2.0, score_threshold=0.4, max_box=48)))
    assert both > native + 3


def test_candidates_floor_returns_every_pass_unfiltered(yunet_model, crowd):
    image, _ = crowd
    det = OnnxDetector(host(yunet_model, "yunet"), class_id=FACE,
                       passes=(PassSpec(scale=1.0, score_threshold=0.6), PassSpec(scale=2.0, score_threshold=0.6,
                                                                                   max_box=16)))
    (raw,) = det.candidates_batch([image], floor=0.2)
    (sel,) = det.candidates_batch([image])
    assert set(raw.pass_index.tolist()) == {0, 1}
    assert raw.score.min() >= 0.2 and len(raw) > len(sel)
    assert sel.score.min() >= 0.6 and box_size(sel.xyxy[sel.pass_index == 1]).max(initial=0) < 16
