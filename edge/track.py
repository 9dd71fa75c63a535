"""Temporal hold: keep masking an object for a few frames after the detector last saw it.

A detector that misses a face for one or two frames of a video leaks that face in those frames.
The tracker associates detections across frames (IoU or centre distance relative to box size,
per class), estimates each track's centre velocity, and while a track goes unseen it adds a box
at its constant-velocity prediction, grown by a margin that widens with every missed frame, for
up to ``hold_frames`` frames. How long a track is held grows with the evidence behind it: a track
detected ``full_hold_hits`` times (2), or last detected at ``full_hold_score`` (0.6) or more, is held the whole
``hold_frames``; a single low-score box (a face on a tree top, a "vehicle" on the asphalt) only a few
frames (see ``hold_of``). A real face keeps being found, so its track earns the whole hold in a few
frames; a false positive that is not found again stops costing paint. The output is always a superset of the frame's own detections, so
the tracker can add masked pixels but never remove any.

Frames are counted by ``Frame.seq``: frames the source lost or the pipeline dropped in between
count as passed frames, so a hold never outlives ``hold_frames`` of real time. A sequence that
goes backwards, another camera id or another frame size starts afresh: they are not one video.

State is replaced in one assignment at the end of ``update()``: an exception part-way (which the
pipeline turns into a dropped frame) leaves the previous state intact.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.checks import within
from edge.columns import Columns
from edge.detect.boxes import iou_matrix
from edge.frame import Detections, Frame

log = logging.getLogger(__name__)


def _rows(*tail: int, dtype=np.float64):
    return field(default_factory=lambda: np.zeros((0, *tail), dtype))


@dataclass(frozen=True)
class _Tracks(Columns):
    """All live tracks as parallel arrays (T rows)."""

    box: np.ndarray = _rows(4)  # (T, 4) float64 xyxy where the track was last detected
    vel: np.ndarray = _rows(2)  # (T, 2) float64 smoothed centre velocity, px per frame
    seq: np.ndarray = _rows(dtype=np.int64)  # (T,) int64 seq of the last detection
    score: np.ndarray = _rows(dtype=np.float32)  # (T,) float32 score of the last detection
    cls: np.ndarray = _rows(dtype=np.int32)  # (T,) int32
    hits: np.ndarray = _rows(dtype=np.int64)  # (T,) int64 detections so far
    ids: np.ndarray = _rows(dtype=np.int64)  # (T,) int64 stable track ids, for tests and debugging


def centres(xyxy: np.ndarray) -> np.ndarray:
    return (xyxy[:, :2] + xyxy[:, 2:]) / 2


def sizes(xyxy: np.ndarray) -> np.ndarray:
    wh = np.clip(xyxy[:, 2:] - xyxy[:, :2], 0, None)
    return np.sqrt(wh[:, 0] * wh[:, 1])


def predict(box: np.ndarray, vel: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Boxes moved by `vel * frames` (constant velocity); sizes kept."""
    shift = vel * frames[:, None]
    return box + np.concatenate([shift, shift], axis=1)


def grow(box: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    """Boxes grown on every side by `fraction` of their own width and height."""
    d = (box[:, 2:] - box[:, :2]) * fraction[:, None]
    return np.concatenate([box[:, :2] - d, box[:, 2:] + d], axis=1)


def hold_of(hits: np.ndarray, score: np.ndarray, params: "TrackParams") -> np.ndarray:
    """Frames each track is held after its last detection: hold_frames for a track with full_hold_hits
    detections or a last score of full_hold_score, shrinking linearly with the stronger of the two
    towards hold_min_frames (never more than hold_frames)."""
    by_hits = np.clip((hits - 1) / max(params.full_hold_hits - 1, 1), 0, 1) if params.full_hold_hits > 1 \
        else np.ones(len(hits))
    by_score = np.clip(score / params.full_hold_score, 0, 1)
    lo = min(params.hold_min_frames, params.hold_frames)
    return np.ceil(lo + (params.hold_frames - lo) * np.maximum(by_hits, by_score) - 1e-9).astype(np.int64)


def greedy_match(cost: np.ndarray, allowed: np.ndarray) -> list[tuple[int, int]]:
    """Pairs (row, col) taken cheapest first among the allowed ones, each row and column once."""
    rows, cols = np.nonzero(allowed)
    order = np.argsort(cost[rows, cols], kind="stable")
    used_r, used_c, pairs = set(), set(), []
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if r not in used_r and c not in used_c:
            used_r.add(r)
            used_c.add(c)
            pairs.append((r, c))
    return pairs


@dataclass(frozen=True)
class TrackParams:
    """The tracker's parameters, validated once; the config's [track] table extends them with `enabled`."""

    hold_frames: int = 6  # keep masking a lost object this many frames (by seq) at its predicted place
    iou_threshold: float = 0.1  # association: IoU with the prediction at or above this...
    max_center_dist: float = 1.0  # ...or centre distance within this many box sizes
    margin_growth: float = 0.05  # held box grows by this fraction of its size per side per missed frame
    velocity_smoothing: float = 0.5  # weight of the newest centre shift in the velocity estimate
    score_decay: float = 0.9  # a held box's score shrinks by this factor per missed frame
    min_hits: int = 1  # detections before a track is held at all
    # the hold scales with the evidence (hold_of): a track detected this many times, or last detected at
    # this score or more, is held hold_frames; below, the hold shrinks linearly to hold_min_frames
    # (1 hit at score 0). full_hold_hits = 1 holds every track hold_frames. On the synthetic clips
    # (recall-faces.toml, 158 frames, 1,184 face-frames) 2 hits leaks exactly what holding every track
    # did (159 face-frames) at 2.44% instead of 2.62% of the frame painted; 3 hits leaks one more frame.
    full_hold_hits: int = 2
    full_hold_score: float = 0.6
    hold_min_frames: int = 2
    max_tracks: int = 512

    def __post_init__(self) -> None:
        within(self, "hold_frames", 0, 1000)
        within(self, "iou_threshold", 0.0, 1.0)
        within(self, "max_center_dist", 0.0, 10.0)
        within(self, "margin_growth", 0.0, 2.0)
        for name in ("velocity_smoothing", "score_decay"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name}: must be within (0, 1], got {getattr(self, name)!r}")
        within(self, "min_hits", 1, 1000)
        within(self, "full_hold_hits", 1, 1000)
        within(self, "full_hold_score", 0.01, 1.0)
        within(self, "hold_min_frames", 0, 1000)
        within(self, "max_tracks", 1, 4096)  # per camera; each is a row of every association matrix


class Tracker:
    """Per-camera hold of missed detections at their predicted position; see the module docstring."""

    def __init__(self, params: TrackParams = TrackParams(), metrics=None) -> None:
        self.hold_frames, self.iou_threshold = params.hold_frames, params.iou_threshold
        self.max_center_dist, self.margin_growth = params.max_center_dist, params.margin_growth
        self.velocity_smoothing, self.score_decay = params.velocity_smoothing, params.score_decay
        self.min_hits, self.max_tracks, self.metrics = params.min_hits, params.max_tracks, metrics
        self.params = params
        self.last_held = np.zeros(0, bool)  # rows of the last output that are held predictions
        self.reset()

    def reset(self) -> None:
        self._tracks = _Tracks()
        self._stream: tuple[str, int, tuple[int, int]] | None = None  # camera id, last seq, frame size
        self._next_id = 0

    def update(self, frame: Frame, dets: Detections) -> Detections:
        """This frame's detections plus held predictions of recently seen, now unmatched tracks."""
        shape = tuple(frame.image.shape[:2])
        tracks = self._tracks if self._continues(frame, shape) else _Tracks()
        age = frame.seq - tracks.seq
        tracks = tracks.take(age <= hold_of(tracks.hits, tracks.score, self.params))
        age = frame.seq - tracks.seq
        predicted = predict(tracks.box, tracks.vel, age)
        matched_t, matched_d = self._associate(tracks, predicted, dets)
        updated = self._refresh(tracks, age, matched_t, matched_d, dets, frame.seq)

        unmatched = np.setdiff1d(np.arange(len(tracks)), matched_t)
        holdable = unmatched[tracks.hits[unmatched] >= self.min_hits]
        held_box = self._held_boxes(predicted[holdable], age[holdable], shape)
        visible = (held_box[:, 2] > held_box[:, 0]) & (held_box[:, 3] > held_box[:, 1])
        held_idx = holdable[visible]
        held = Detections(held_box[visible].astype(np.float32),
                          tracks.score[held_idx] * self.score_decay ** age[held_idx].astype(np.float32),
                          tracks.cls[held_idx])

        new_idx = np.setdiff1d(np.arange(len(dets)), matched_d)
        born = self._born(dets, new_idx, frame.seq)
        state = _Tracks.concat([updated, tracks.take(unmatched), born])
        if len(state) > self.max_tracks:
            log.warning("camera %s: %d tracks, keeping the %d most recently seen", frame.camera_id, len(state),
                        self.max_tracks)
            state = state.take(np.argsort(-state.seq, kind="stable")[: self.max_tracks])
        out = Detections.concat([dets, held])
        # commit: nothing above touched self
        self._tracks, self._stream = state, (frame.camera_id, frame.seq, shape)
        self._next_id += len(born)
        self.last_held = np.concatenate([np.zeros(len(dets), bool), np.ones(len(held), bool)])
        if self.metrics is not None and len(held):
            self.metrics.count("track_held", len(held))
        return out

    def _continues(self, frame: Frame, shape: tuple[int, int]) -> bool:
        if self._stream is None:
            return False
        camera_id, seq, last_shape = self._stream
        same = camera_id == frame.camera_id and frame.seq > seq and last_shape == shape
        if not same and len(self._tracks):
            log.debug("camera %s seq %d: not a continuation of seq %d; tracks reset", frame.camera_id, frame.seq, seq)
        return same

    def _associate(self, tracks: _Tracks, predicted: np.ndarray, dets: Detections) -> tuple[np.ndarray, np.ndarray]:
        """Indices of matched tracks and detections (same class, IoU or relative centre distance gate)."""
        if not len(tracks) or not len(dets):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        boxes = dets.xyxy.astype(np.float64)
        iou = iou_matrix(predicted, boxes)
        dist = np.linalg.norm(centres(predicted)[:, None] - centres(boxes)[None], axis=2)
        scale = np.maximum(np.maximum(sizes(predicted)[:, None], sizes(boxes)[None]), 1.0)
        rel = dist / scale
        allowed = (tracks.cls[:, None] == dets.class_id[None]) & (
            (iou >= max(self.iou_threshold, 1e-9)) | (rel <= self.max_center_dist))
        pairs = greedy_match((1.0 - iou) + rel, allowed)
        if not pairs:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        t, d = np.array(pairs, np.int64).T
        return t, d

    def _refresh(self, tracks: _Tracks, age: np.ndarray, t: np.ndarray, d: np.ndarray, dets: Detections,
                 seq: int) -> _Tracks:
        """Matched tracks moved to their detection, velocity smoothed (the first measurement taken as is)."""
        old = tracks.take(t)
        box = dets.xyxy[d].astype(np.float64)
        measured = (centres(box) - centres(old.box)) / np.maximum(age[t], 1)[:, None]
        a = np.where(old.hits[:, None] >= 2, self.velocity_smoothing, 1.0)
        vel = a * measured + (1 - a) * old.vel
        return _Tracks(box, vel, np.full(len(t), seq, np.int64), dets.score[d], old.cls, old.hits + 1, old.ids)

    def _held_boxes(self, predicted: np.ndarray, age: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        out = grow(predicted, self.margin_growth * age.astype(np.float64))
        h, w = shape
        out[:, 0::2] = np.clip(out[:, 0::2], 0, w)
        out[:, 1::2] = np.clip(out[:, 1::2], 0, h)
        return out

    def _born(self, dets: Detections, idx: np.ndarray, seq: int) -> _Tracks:
        n = len(idx)
        return _Tracks(dets.xyxy[idx].astype(np.float64), np.zeros((n, 2)), np.full(n, seq, np.int64),
                       dets.score[idx], dets.class_id[idx], np.ones(n, np.int64),
                       np.arange(self._next_id, self._next_id + n, dtype=np.int64))


def for_camera(cfg, camera_id: str, metrics=None) -> Tracker | None:
    """The tracker for one camera's pipeline per `cfg.track`, or None where holding makes no sense.

    An image-folder replay is a set of unrelated stills: a box held from one image would mask a
    random spot of the next and a track could "match" across images, so it never tracks.
    """
    t = cfg.track
    if not t.enabled:
        return None
    cam = next((c for c in cfg.cameras if c.id == camera_id), None)
    if cam is not None and cam.kind == "replay" and Path(cam.source).is_dir():
        log.info("camera %s: image-folder replay, temporal hold off (stills are not a sequence)", camera_id)
        return None
    return Tracker(t, metrics=metrics)
