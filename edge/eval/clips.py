"""Clips with per-frame ground truth for the temporal hold, and the leak measurement on them.

The real clips have few detectable faces and no per-frame annotation, so faces are put there:
real face crops from wider_dev (cut with some context, their original aspect restored) are moved
over the real dashcam and pedestrian videos along known trajectories (quadratic curves, varying
speed, entering and leaving the frame, growing or shrinking like people approaching or walking
away) and pasted with a soft alpha edge. Inside the ground-truth box the alpha is exactly 1, so
the box is precisely where the face's pixels are. Everything is drawn from one seed.

The measurement runs the product's real Pipeline (real detector, solid fill) on every frame in
memory, once without a tracker and once per configured hold, and scores each present face from
the pixels the pipeline painted (its own mask map, cross-checked against the changed pixels):
protected when at least 70% of the box is painted, leaked otherwise. Detection boxes are never
used for scoring. The detector runs once per frame; the variants get the same Detections, which
is what they would compute anyway (the detector is deterministic), at a fraction of the time.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.detect import Detector
from edge.eval.evaluate import BUCKETS, bucket_of, cross_check, outside_share, protected_flags
from edge.frame import DroppedFrame, Frame
from edge.mask import MaskStyle, painted_map
from edge.timing import Stopwatch
from edge.track import grow

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("EDGE_SHARED", ROOT.parent / "shared"))
WIDER_GT = SHARED / "data/eval/faces/wider_dev/gt_xyxy.txt"
VIDEO_DIR = SHARED / "data/video"

PRESENT_VISIBLE = 0.5  # a face counts (is scored) when at least half its box is inside the frame...
MAX_OCCLUDED = 0.3  # ...and at most this share of it is covered by faces pasted later
SIZE_BANDS = ((6.0, 10.0), (9.0, 16.0), (14.0, 28.0), (24.0, 48.0), (36.0, 64.0))  # start sizes, cycled
NEAR = 0.5  # over-masking "far from faces": beyond this fraction of a face's size on every side
CONTEXT = 0.3  # crop margin around the face on every side, as a fraction of its size


# --- face crops -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FaceCrop:
    image: np.ndarray  # BGR face with context, aspect of the original photo restored
    face: tuple[float, float, float, float]  # the face box inside `image`, xyxy
    source: str  # "<image file>#<face index>"

    @property
    def aspect(self) -> float:
        x1, y1, x2, y2 = self.face
        return (y2 - y1) / max(x2 - x1, 1e-6)

    @property
    def size(self) -> float:
        x1, y1, x2, y2 = self.face
        return float(np.sqrt((x2 - x1) * (y2 - y1)))


def read_wider(gt_file: Path) -> list[tuple[str, tuple[int, int], np.ndarray]]:
    """(file, (origW, origH), boxes) per image of the face list format in ../shared/data/README.md."""
    out: list[tuple[str, tuple[int, int], list]] = []
    for line in Path(gt_file).read_text().splitlines():
        if line.startswith("#"):
            name, w, h = line[1:].split()[:3]
            out.append((name, (int(w), int(h)), []))
        elif line.strip():
            out[-1][2].append([float(v) for v in line.split()])
    return [(n, size, np.array(b, np.float32).reshape(-1, 4)) for n, size, b in out]


def load_face_crops(gt_file: str | Path = WIDER_GT, images_dir: str | Path | None = None, *,
                    min_size: float = 20.0, context: float = CONTEXT) -> list[FaceCrop]:
    """Every annotated face of at least `min_size` px (sqrt area) whose context fits in its image."""
    gt_file = Path(gt_file)
    images_dir = Path(images_dir) if images_dir else gt_file.parent / "images"
    crops = []
    for name, (orig_w, orig_h), boxes in read_wider(gt_file):
        wh = boxes[:, 2:] - boxes[:, :2]
        big = np.flatnonzero(np.sqrt(np.clip(wh[:, 0] * wh[:, 1], 0, None)) >= min_size)
        if not len(big):
            continue
        image = cv2.imread(str(images_dir / name), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"cannot read {images_dir / name}")
        for i in big:
            crop = _cut(image, boxes[i], context, (orig_w, orig_h))
            if crop is not None:
                crops.append(FaceCrop(crop[0], crop[1], f"{name}#{i}"))
    return crops


def _cut(image: np.ndarray, box: np.ndarray, context: float, orig: tuple[int, int]):
    h, w = image.shape[:2]
    bw, bh = box[2] - box[0], box[3] - box[1]
    x1, y1 = int(np.floor(box[0] - context * bw)), int(np.floor(box[1] - context * bh))
    x2, y2 = int(np.ceil(box[2] + context * bw)), int(np.ceil(box[3] + context * bh))
    if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
        return None
    crop = image[y1:y2, x1:x2]
    # the stored images are stretched to a square: undo it by enlarging the squeezed axis
    ratio = (orig[1] / h) / (orig[0] / w)
    fx, fy = (1.0, ratio) if ratio >= 1 else (1.0 / ratio, 1.0)
    cw, ch = round((x2 - x1) * fx), round((y2 - y1) * fy)
    crop = cv2.resize(crop, (cw, ch), interpolation=cv2.INTER_CUBIC)
    sx, sy = cw / (x2 - x1), ch / (y2 - y1)
    face = ((box[0] - x1) * sx, (box[1] - y1) * sy, (box[2] - x1) * sx, (box[3] - y1) * sy)
    return crop, tuple(float(v) for v in face)


# --- trajectories -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrackPlan:
    """One face's path: a quadratic curve p0 -> p1 bent towards pc, speed warped, size geometric."""

    id: int
    crop: int
    start: int  # first clip frame
    length: int  # frames
    p0: tuple[float, float]
    pc: tuple[float, float]
    p1: tuple[float, float]
    size0: float  # sqrt area at the first frame
    size1: float  # ...and at the last
    warp: float  # speed variation, |warp| < 1 keeps the motion forward
    aspect: float  # face height / width

    def box_at(self, f: int) -> np.ndarray | None:
        """Integer xyxy face box at clip frame f (may extend past the frame), None outside the track's life."""
        if not self.start <= f < self.start + self.length:
            return None
        t = (f - self.start) / max(self.length - 1, 1)
        u = t + self.warp * np.sin(2 * np.pi * t) / (2 * np.pi)
        p0, pc, p1 = (np.array(p, np.float64) for p in (self.p0, self.pc, self.p1))
        cx, cy = (1 - u) ** 2 * p0 + 2 * u * (1 - u) * pc + u ** 2 * p1
        size = self.size0 * (self.size1 / self.size0) ** u
        w = max(2, round(size / np.sqrt(self.aspect)))
        h = max(2, round(size * np.sqrt(self.aspect)))
        x1, y1 = round(cx - w / 2), round(cy - h / 2)
        return np.array([x1, y1, x1 + w, y1 + h], np.int64)


def plan_track(rng: np.random.Generator, track_id: int, width: int, height: int, frames: int,
               crops: list[FaceCrop]) -> TrackPlan:
    lo, hi = SIZE_BANDS[track_id % len(SIZE_BANDS)]
    size0 = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    size1 = float(np.clip(size0 * np.exp(rng.uniform(-0.25, 0.7)), 5.0, 80.0))  # most approach
    length = int(rng.integers(min(20, frames), min(frames, 90) + 1))
    start = int(rng.integers(0, frames - length + 1))
    p0 = np.array([rng.uniform(-0.05, 1.05) * width, rng.uniform(0.15, 0.85) * height])
    heading = rng.choice([0.0, np.pi]) + rng.uniform(-0.6, 0.6)  # mostly across the road / scene
    speed = rng.uniform(0.4, 4.0)  # px per frame
    p1 = p0 + speed * (length - 1) * np.array([np.cos(heading), np.sin(heading)])
    normal = np.array([-np.sin(heading), np.cos(heading)])
    pc = (p0 + p1) / 2 + normal * rng.uniform(-0.25, 0.25) * np.linalg.norm(p1 - p0)
    crop = _pick_crop(rng, crops, max(size0, size1))
    aspect = float(np.clip(crops[crop].aspect, 0.9, 1.6))
    return TrackPlan(track_id, crop, start, length, _pt(p0), _pt(pc), _pt(p1), size0, size1,
                     float(rng.uniform(-0.6, 0.6)), aspect)


def _pt(p: np.ndarray) -> tuple[float, float]:
    return float(p[0]), float(p[1])


def _pick_crop(rng: np.random.Generator, crops: list[FaceCrop], largest: float) -> int:
    """A crop that needs at most ~1.7x upscaling at the track's largest size, so big faces stay sharp."""
    sizes = np.array([c.size for c in crops])
    sharp = np.flatnonzero(sizes >= 0.6 * largest)
    if not len(sharp):
        sharp = np.argsort(-sizes)[: max(1, len(crops) // 10)]
    return int(rng.choice(sharp))


# --- clips and ground truth -------------------------------------------------------------------------

@dataclass(frozen=True)
class ClipSpec:
    video: str  # a file name in the shared video folder, or a path
    start_frame: int = 0
    frames: int = 60
    tracks: int = 10
    seed: int = 0
    name: str = ""


DEFAULT_CLIPS = (
    ClipSpec("udacity_CarND-Vehicle-Detection_test_video.mp4", 0, 38, 10, seed=1, name="dashcam720"),
    ClipSpec("udacity_CarND-LaneLines-P1_solidWhiteRight.mp4", 0, 150, 14, seed=2, name="dashcam540"),
    ClipSpec("vtest_pets2009_480x360.avi", 0, 200, 14, seed=3, name="pets"),
)


@dataclass(frozen=True)
class Clip:
    spec: ClipSpec
    path: Path
    width: int
    height: int
    fps: float
    plans: tuple[TrackPlan, ...]
    crops: tuple[FaceCrop, ...]
    boxes: np.ndarray  # (F, K, 4) int64 face boxes clipped to the frame; zeros where not in frame
    sizes: np.ndarray  # (F, K) float64 sqrt area of the unclipped box; 0 where the track is not alive
    present: np.ndarray  # (F, K) bool: scored in this frame (visible enough, not occluded)
    visible: np.ndarray  # (F, K) bool: some pixels of the face in the frame (pasted, may be unscored)

    @property
    def name(self) -> str:
        return self.spec.name or Path(self.spec.video).stem

    @property
    def frames(self) -> int:
        return len(self.boxes)

    def to_json(self) -> dict:
        """Ground truth per frame (boxes in frame pixels, track ids) plus the plan that made it."""
        per_frame = []
        for f in range(self.frames):
            per_frame.append([{"track": int(k), "xyxy": self.boxes[f, k].tolist(), "present": bool(self.present[f, k])}
                              for k in np.flatnonzero(self.visible[f])])
        return {"video": str(self.path), "start_frame": self.spec.start_frame, "frames": self.frames,
                "width": self.width, "height": self.height, "fps": self.fps, "seed": self.spec.seed,
                "tracks": [{**dataclasses.asdict(p), "source": self.crops[p.crop].source} for p in self.plans],
                "gt": per_frame}


def video_path(video: str) -> Path:
    p = Path(video)
    return p if p.exists() else VIDEO_DIR / video


def make_clip(spec: ClipSpec, crops: list[FaceCrop]) -> Clip:
    """Trajectories and ground truth for `spec`; pixels come later from frames()."""
    if not crops:
        raise ValueError("no face crops to paste")
    path = video_path(spec.video)
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise FileNotFoundError(f"cannot open video {path}")
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        available = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) - spec.start_frame
    finally:
        cap.release()
    frames = min(spec.frames, available)
    if frames < 2:
        raise ValueError(f"{path}: fewer than 2 frames from frame {spec.start_frame}")
    rng = np.random.default_rng(spec.seed)
    plans = []
    for k in range(spec.tracks):
        for _ in range(50):  # redraw a path that would barely be seen
            plan = plan_track(rng, k, width, height, frames, crops)
            if sum(_visible_share(plan.box_at(f), width, height) >= PRESENT_VISIBLE
                   for f in range(plan.start, plan.start + plan.length)) >= 8:
                break
        plans.append(plan)
    boxes, sizes, present, visible = ground_truth(plans, frames, width, height)
    return Clip(spec, path, width, height, fps, tuple(plans), tuple(crops), boxes, sizes, present, visible)


def _visible_share(box: np.ndarray | None, width: int, height: int) -> float:
    if box is None:
        return 0.0
    c = _clip_box(box, width, height)
    return _area(c) / max(_area(box), 1)


def _clip_box(box: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.array([min(max(box[0], 0), width), min(max(box[1], 0), height),
                     min(max(box[2], 0), width), min(max(box[3], 0), height)], np.int64)


def _area(box: np.ndarray) -> int:
    return int(max(box[2] - box[0], 0) * max(box[3] - box[1], 0))


def footprint(box: np.ndarray, crop: FaceCrop) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The pasted patch's extent around a face box, and its context (left, top, right, bottom) in px."""
    fw, fh = int(box[2] - box[0]), int(box[3] - box[1])
    x1, y1, x2, y2 = crop.face
    sx, sy = fw / (x2 - x1), fh / (y2 - y1)
    ch, cw = crop.image.shape[:2]
    ctx = (max(1, round(x1 * sx)), max(1, round(y1 * sy)), max(1, round((cw - x2) * sx)), max(1, round((ch - y2) * sy)))
    return np.array([box[0] - ctx[0], box[1] - ctx[1], box[2] + ctx[2], box[3] + ctx[3]], np.int64), ctx


def ground_truth(plans: list[TrackPlan], frames: int, width: int, height: int):
    k = len(plans)
    boxes = np.zeros((frames, k, 4), np.int64)
    sizes = np.zeros((frames, k))
    present = np.zeros((frames, k), bool)
    visible = np.zeros((frames, k), bool)
    for f in range(frames):
        full = [p.box_at(f) for p in plans]
        for i, box in enumerate(full):
            if box is None:
                continue
            clipped = _clip_box(box, width, height)
            boxes[f, i] = clipped
            sizes[f, i] = np.sqrt(_area(box))
            visible[f, i] = _area(clipped) > 0
            covered = _covered_share(clipped, [b for b in full[i + 1:] if b is not None])
            present[f, i] = _area(clipped) >= PRESENT_VISIBLE * _area(box) and covered <= MAX_OCCLUDED
    return boxes, sizes, present, visible


def _covered_share(box: np.ndarray, later: list[np.ndarray]) -> float:
    """Share of `box` under the later-pasted faces (their face box grown by the context, conservatively)."""
    if not later or _area(box) == 0:
        return 0.0
    cover = np.zeros((box[3] - box[1], box[2] - box[0]), bool)
    for b in later:
        m = (np.array([b[2] - b[0], b[3] - b[1]]) * CONTEXT).astype(np.int64) + 1
        gx1, gy1 = max(b[0] - m[0], box[0]), max(b[1] - m[1], box[1])
        gx2, gy2 = min(b[2] + m[0], box[2]), min(b[3] + m[1], box[3])
        if gx2 > gx1 and gy2 > gy1:
            cover[gy1 - box[1]:gy2 - box[1], gx1 - box[0]:gx2 - box[0]] = True
    return float(cover.mean())


# --- pixels -----------------------------------------------------------------------------------------

def _ramp(n: int, before: int, inner: int, after: int) -> np.ndarray:
    """1 over the inner span, falling linearly to near 0 across the context on each side."""
    x = np.arange(n, dtype=np.float32) + 0.5
    a = np.ones(n, np.float32)
    a[:before] = x[:before] / (before + 0.5)
    a[before + inner:] = (n - x[before + inner:]) / (after + 0.5)
    return a


def paste(image: np.ndarray, crop: FaceCrop, box: np.ndarray) -> None:
    """Paste `crop` in place so its face fills `box` exactly (alpha 1), with a soft context edge."""
    outer, (cl, ct, cr, cb) = footprint(box, crop)
    fw, fh = int(box[2] - box[0]), int(box[3] - box[1])
    pw, ph = cl + fw + cr, ct + fh + cb
    src_h, src_w = crop.image.shape[:2]
    interp = cv2.INTER_AREA if pw < src_w else cv2.INTER_LINEAR
    patch = cv2.resize(crop.image, (pw, ph), interpolation=interp).astype(np.float32)
    alpha = _ramp(ph, ct, fh, cb)[:, None] * _ramp(pw, cl, fw, cr)[None, :]
    h, w = image.shape[:2]
    x1, y1 = max(outer[0], 0), max(outer[1], 0)
    x2, y2 = min(outer[2], w), min(outer[3], h)
    if x2 <= x1 or y2 <= y1:
        return
    sub = (slice(y1 - outer[1], y2 - outer[1]), slice(x1 - outer[0], x2 - outer[0]))
    bg = image[y1:y2, x1:x2].astype(np.float32)
    a = alpha[sub][..., None]
    image[y1:y2, x1:x2] = np.rint(bg + a * (patch[sub] - bg)).astype(np.uint8)


def render(background: np.ndarray, clip: Clip, f: int) -> np.ndarray:
    """Frame f: a copy of `background` with every face alive at f pasted, in track order."""
    image = background.copy()
    for plan in clip.plans:
        box = plan.box_at(f)
        if box is not None:
            paste(image, clip.crops[plan.crop], box)
    return image


def frames(clip: Clip) -> Iterator[np.ndarray]:
    """The clip's frames, decoded from its video and composited one at a time."""
    cap = cv2.VideoCapture(str(clip.path))
    try:
        for _ in range(clip.spec.start_frame):
            if not cap.grab():
                raise EOFError(f"{clip.path}: ended before frame {clip.spec.start_frame}")
        for f in range(clip.frames):
            ok, image = cap.read()
            if not ok:
                raise EOFError(f"{clip.path}: ended at clip frame {f} of {clip.frames}")
            yield render(image, clip, f)
    finally:
        cap.release()


def write_clip(clip: Clip, out_dir: str | Path) -> tuple[Path, Path]:
    """<name>.mp4 (for viewing; lossy) and <name>.json (ground truth) in `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    video, gt = out_dir / f"{clip.name}.mp4", out_dir / f"{clip.name}.json"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), clip.fps or 25.0, (clip.width, clip.height))
    try:
        for image in frames(clip):
            writer.write(image)
    finally:
        writer.release()
    gt.write_text(json.dumps(clip.to_json()))
    return video, gt


# --- measurement ------------------------------------------------------------------------------------

DETECT_STAGES = ("preprocess", "inference", "decode")


class _OncePerFrame:
    """The real detector, run once per frame; later calls for the same frame get its result (or its error)."""

    def __init__(self, detector: Detector) -> None:
        self.detector, self.models, self.providers = detector, detector.models, detector.providers
        self._outcome: tuple[bool, object] | None = None

    def next_frame(self) -> None:
        self._outcome = None

    def detect_batch(self, images: list[np.ndarray], watch: Stopwatch | None = None) -> list:
        return self.detector.detect_batch(images, watch)

    def close(self) -> None:
        self.detector.close()

    def detect(self, image: np.ndarray, watch: Stopwatch | None = None):
        if self._outcome is None:
            try:
                self._outcome = (True, self.detector.detect(image, watch))
            except Exception as e:  # replayed to every variant, as each would have met it
                self._outcome = (False, e)
        ok, value = self._outcome
        if not ok:
            raise value
        return value


@dataclass
class _Tally:
    present: np.ndarray  # (K,) frames scored per track
    leaked: np.ndarray  # (K,) frames leaked per track
    longest: np.ndarray  # (K,) longest run of consecutive leaked frames
    run: np.ndarray  # (K,) current run
    sizes: list  # per track: sizes of its present frames
    frame_sizes: list  # (size, leaked) per scored face-frame
    outside: int = 0
    outside_far: int = 0  # painted and not near any face (beyond NEAR of its size): spurious masks
    pixels: int = 0
    dropped: int = 0
    held: int = 0
    ms_rest: float = 0.0

    @staticmethod
    def new(k: int) -> "_Tally":
        z = lambda: np.zeros(k, np.int64)  # noqa: E731
        return _Tally(z(), z(), z(), z(), [[] for _ in range(k)], [])


def measure(clips: list[Clip], detector, style: MaskStyle, trackers: dict[str, Callable[[], object]],
            progress: Callable[[str], None] | None = None) -> dict:
    """Leaked frames per track for every variant in `trackers` (name -> tracker factory, None = no tracker)."""
    from edge.pipeline import Pipeline, Policy

    style = dataclasses.replace(style, style="solid")
    once = _OncePerFrame(detector)
    per_clip, tallies = [], {name: [] for name in trackers}
    detect_ms: list[float] = []
    for clip in clips:
        pipes = {name: Pipeline(once, style, Policy("drop", 0.0), tracker=make()) for name, make in trackers.items()}
        tally = {name: _Tally.new(len(clip.plans)) for name in trackers}
        for f, image in enumerate(frames(clip)):
            once.next_frame()
            for name, pipe in pipes.items():
                timings = _score_frame(clip, f, image, pipe, tally[name], style)
                if any(s in timings for s in DETECT_STAGES):
                    detect_ms.append(sum(timings.get(s, 0.0) for s in DETECT_STAGES))
            if progress and f % 25 == 0:
                progress(f"{clip.name}: frame {f}/{clip.frames}")
        for name in trackers:
            tallies[name].append((clip, tally[name]))
        per_clip.append({"name": clip.name, "video": clip.path.name, "frames": clip.frames,
                         "size": [clip.width, clip.height], "fps": clip.fps, "tracks": len(clip.plans),
                         "seed": clip.spec.seed, "start_frame": clip.spec.start_frame})
    runs = {name: summarize(parts) for name, parts in tallies.items()}
    return {"clips": per_clip, "runs": runs,
            "ms_detect_per_frame": round(float(np.mean(detect_ms)), 2) if detect_ms else None}


def _score_frame(clip: Clip, f: int, image: np.ndarray, pipe, t: _Tally, style: MaskStyle) -> dict:
    work = image.copy()
    frame = Frame(work, clip.name, f, time.monotonic_ns(), time.time_ns(), f"{f:06d}")
    t0 = time.perf_counter()
    out = pipe.process(frame)
    elapsed = (time.perf_counter() - t0) * 1e3
    if isinstance(out, DroppedFrame):
        t.dropped += 1  # leaks nothing, protects nothing: scored as unmasked, like the image evaluation
        painted = np.zeros(image.shape[:2], bool)
    else:
        painted = painted_map(image.shape, out.regions)
        cross_check(image, out.frame.image, painted, style.color)
        if pipe.tracker is not None:
            t.held += int(pipe.tracker.last_held.sum())
    t.ms_rest += elapsed - sum(out.timings_ms.get(s, 0.0) for s in DETECT_STAGES)
    ks = np.flatnonzero(clip.present[f])
    flags = protected_flags(painted, clip.boxes[f, ks].astype(np.float32)) if len(ks) else np.zeros(0, bool)
    for k, ok in zip(ks, flags):
        t.present[k] += 1
        t.sizes[k].append(clip.sizes[f, k])
        t.frame_sizes.append((clip.sizes[f, k], not ok))
        if ok:
            t.run[k] = 0
        else:
            t.leaked[k] += 1
            t.run[k] += 1
            t.longest[k] = max(t.longest[k], t.run[k])
    gone = np.ones(len(clip.plans), bool)
    gone[ks] = False
    t.run[gone] = 0  # a gap in presence ends a leak run
    faces = clip.boxes[f, np.flatnonzero(clip.visible[f])].astype(np.float32)
    t.outside += outside_share(painted, faces)
    t.outside_far += outside_share(painted, grow(faces, np.full(len(faces), NEAR)))
    t.pixels += painted.size
    return out.timings_ms


def summarize(parts: list[tuple[Clip, _Tally]]) -> dict:
    tracks, face_frames = [], []
    outside = outside_far = pixels = dropped = held = frames_total = 0
    ms_rest = 0.0
    for clip, t in parts:
        for k in range(len(clip.plans)):
            if t.present[k]:
                tracks.append({"clip": clip.name, "track": k, "median_size": round(float(np.median(t.sizes[k])), 1),
                               "present": int(t.present[k]), "leaked": int(t.leaked[k]),
                               "longest_leak": int(t.longest[k])})
        face_frames.extend(t.frame_sizes)
        outside, pixels, dropped, held = outside + t.outside, pixels + t.pixels, dropped + t.dropped, held + t.held
        outside_far += t.outside_far
        frames_total += clip.frames
        ms_rest += t.ms_rest
    sizes = np.array([s for s, _ in face_frames])
    leaked = np.array([x for _, x in face_frames], bool)
    buckets = {}
    for lo, hi, name in BUCKETS:
        sel = (sizes >= lo) & (sizes < hi)
        in_bucket = [tr for tr in tracks if bucket_of(tr["median_size"]) == name]
        buckets[name] = {"face_frames": int(sel.sum()), "leaked_frames": int(leaked[sel].sum()),
                         "protected_share": round(float(1 - leaked[sel].mean()), 4) if sel.any() else None,
                         **_track_stats(in_bucket)}
    return {"face_frames": int(len(leaked)), "leaked_frames": int(leaked.sum()),
            "protected_share": round(float(1 - leaked.mean()), 4) if len(leaked) else None,
            **_track_stats(tracks), "buckets": buckets,
            "overmask_share": round(outside / pixels, 5) if pixels else 0.0,
            "overmask_far_share": round(outside_far / pixels, 5) if pixels else 0.0,
            "held_boxes": held, "dropped_frames": dropped,
            "ms_per_frame_besides_detection": round(ms_rest / max(frames_total, 1), 3), "per_track": tracks}


def _track_stats(tracks: list[dict]) -> dict:
    if not tracks:
        return {"tracks": 0, "tracks_with_leak": 0, "leaked_per_track": None, "zero_leak_share": None, "longest_leak_max": None}
    leaked = np.array([t["leaked"] for t in tracks])
    return {"tracks": len(tracks), "tracks_with_leak": int((leaked > 0).sum()),
            "leaked_per_track": round(float(leaked.mean()), 3),
            "zero_leak_share": round(float((leaked == 0).mean()), 4),
            "longest_leak_max": int(max(t["longest_leak"] for t in tracks))}


def format_table(result: dict) -> str:
    """Markdown: per variant and size bucket, protected face-frames, leaked frames and tracks with any leak."""
    names = [b[2] for b in BUCKETS]
    runs = result["runs"]
    base = next(iter(runs.values()))
    head = ["run", *names, "overall", "over-masked", "extra vs " + next(iter(runs)), "far from faces"]
    lines = ["cells: protected face-frames % · leaked frames · tracks with a leak / tracks (tracks bucketed by"
             " median size); over-masked: share of frame area painted outside every face box",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run, r in runs.items():
        cells = [run]
        for n in [*names, None]:
            b = r["buckets"][n] if n else r
            cells.append("-" if not b["face_frames"] else
                         f"{100 * b['protected_share']:.1f}% · {b['leaked_frames']} · {b['tracks_with_leak']}/{b['tracks']}")
        extra = r["overmask_share"] - base["overmask_share"]
        cells += [f"{100 * r['overmask_share']:.2f}%", f"{100 * extra:+.2f} pp", f"{100 * r['overmask_far_share']:.2f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- command line -----------------------------------------------------------------------------------

def _refuse_repo_path(path: Path) -> None:
    """Generated media never enter the project, except its git-ignored output folders."""
    path = path.resolve()
    if path.is_relative_to(ROOT) and path.relative_to(ROOT).parts[:1] not in (("out",), ("runs",), ("results",)):
        raise SystemExit(f"{path}: inside the repository; write generated clips elsewhere (or under out/)")


def _specs(args) -> list[ClipSpec]:
    specs = list(DEFAULT_CLIPS)
    if args.videos:
        specs = [s for s in specs if s.name in args.videos or s.video in args.videos]
        if not specs:
            raise SystemExit(f"--videos: none of {args.videos} among {[s.name for s in DEFAULT_CLIPS]}")
    return [dataclasses.replace(s, seed=s.seed + args.seed,
                                frames=min(s.frames, args.max_frames) if args.max_frames else s.frames,
                                tracks=args.tracks or s.tracks) for s in specs]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--videos", nargs="*", help=f"clips to use (default all: {[s.name for s in DEFAULT_CLIPS]})")
    p.add_argument("--seed", type=int, default=0, help="added to each clip's seed")
    p.add_argument("--tracks", type=int, help="faces per clip (default per clip)")
    p.add_argument("--max-frames", type=int, help="cap each clip's length")
    p.add_argument("--min-crop", type=float, default=20.0, help="smallest wider_dev face used as a source (px)")


def main_make(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="write the synthetic tracking clips (mp4 + ground-truth json)")
    p.add_argument("--out", required=True, help="output folder (outside the repository)")
    _common(p)
    args = p.parse_args(argv)
    out = Path(args.out)
    _refuse_repo_path(out)
    crops = load_face_crops(min_size=args.min_crop)
    for spec in _specs(args):
        clip = make_clip(spec, crops)
        video, gt = write_clip(clip, out)
        print(f"{clip.name}: {clip.frames} frames, {len(clip.plans)} tracks -> {video}, {gt}")
    return 0


def main_eval(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="leaked frames per track on synthetic clips, with and without the hold")
    p.add_argument("--config", "-c", help="TOML config (detect, mask and track sections are used)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--scales", type=float, nargs="+", help="face detector scales, e.g. 1.0 2.0")
    p.add_argument("--threshold", type=float, help="face score threshold")
    p.add_argument("--hold", type=int, nargs="+", help="hold_frames values to compare (default: the config's)")
    p.add_argument("--min-hits", type=int, nargs="+", default=[1],
                   help="detections a track needs before it is held; each value is a variant per hold (default 1)")
    p.add_argument("--json", help="write the full results here")
    _common(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from edge.compose import build_detector
    from edge.compose import load_config
    from edge.config import override
    from edge.track import Tracker

    cfg = load_config(args.config, args.set)
    changes = {}
    if args.scales:
        changes["detect.face.scales"] = list(args.scales)
    if args.threshold is not None:
        changes["detect.face.score_threshold"] = args.threshold
    cfg = override(cfg, changes) if changes else cfg
    tc = cfg.track

    def factory(hold: int, min_hits: int) -> Callable[[], Tracker]:
        params = dataclasses.replace(tc, hold_frames=hold, min_hits=min_hits)
        return lambda: Tracker(params)

    trackers: dict[str, Callable[[], object]] = {"no hold": lambda: None}
    for hold in args.hold or [tc.hold_frames]:
        for min_hits in args.min_hits:
            trackers[f"hold {hold}" + (f" min_hits {min_hits}" if min_hits > 1 else "")] = factory(hold, min_hits)
    crops = load_face_crops(min_size=args.min_crop)
    clips = [make_clip(spec, crops) for spec in _specs(args)]
    t0 = time.perf_counter()
    result = measure(clips, build_detector(cfg), cfg.mask, trackers, progress=log.info)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["config"] = {"detect": dataclasses.asdict(cfg.detect), "mask": dataclasses.asdict(cfg.mask),
                        "track": dataclasses.asdict(cfg.track), "holds": list(args.hold or [tc.hold_frames]), "min_hits": args.min_hits,
                        "argv": sys.argv[1:] if argv is None else argv, "crops": len(crops)}
    print(format_table(result))
    print(f"{sum(c['frames'] for c in result['clips'])} frames, "
          f"{sum(c['tracks'] for c in result['clips'])} tracks, detection {result['ms_detect_per_frame']} ms/frame, "
          f"{result['seconds']} s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0
