"""Multi-scale and tiled detection: which crops of a frame a model sees, at what scale, and how boxes merge.

A *pass* is one way of looking at the frame: a region (fractions of the frame), a scale, optionally
cut into tiles of a fixed network-input size with overlap, a score threshold and the range of box
sizes the pass is trusted for. A plain full-frame pass is a pass whose region is the whole frame
and which has no tiles. `plan()` turns passes into *windows* (frame-pixel crops with their resize
factors); windows of the same crop size and scale have the same input shape and run as one batch.

Nothing here knows about faces or plates: the family decoder turns outputs into boxes, and these
functions only move boxes between coordinate systems, filter and merge them.

Why size limits per pass: an upscaled pass finds small faces the native pass misses, but at 2-4x a
large face is seen by the network as a huge object and parts of it (or of bodies, posters, textures)
come back as big false boxes; the native pass sees large faces better. Measured on wider_dev,
boxes of 48+ px from a 2x pass added 3.6% of frame area of over-masking and almost no recall.

Why "partial" boxes: a face cut by an interior tile border is seen whole by the neighbouring tile
(the overlap is at least the largest face the tiles keep); the cut tile may still report the part
it sees. Such a box must never suppress the whole one, so merging ranks it after every complete
box and drops it when a complete box covers it.

Why a cap on one network input (`max_input_px`): memory grows with the input, not with the frame.
Measured on the CPU provider (peak RSS above the loaded process), one input costs about 80 MB per
megapixel in YuNet and 150-350 MB in LPD-YuNet (activations, the fp32 blob, the outputs; onnxruntime's
arena grows in steps), so plates-far over a 2048x1536 photo (one input of 28, 79 and 113 Mpx per pass)
failed for memory under an 8 GB limit. A window whose input (or, downscaled, whose crop) would exceed
the cap is cut into tiles that do not; the tiles overlap by at least the longest box the pass keeps (3x
its max_box: a plate is long) or, with no max_box, by a share of the tile, so a box cut by one tile is
seen whole by a neighbour. Windows of one input shape run as one call, and a call never carries more
than the cap in total either (edge.detect.detector), so the host buffers of a call (the resized crops,
the fp32 blob: 12 bytes per input pixel) are bounded with it. A frame needing more than `MAX_WINDOWS`
windows is refused: the caller fails closed (the frame is dropped or masked whole), never half-detected.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from edge.columns import Columns
from edge.detect.boxes import Fit, fit, iou_matrix, nms
from edge.detect.plausible import check_boxes

EDGE_PX = 2.0  # a box within this many input pixels of a cut tile edge is partial
COVERED = 0.8  # a partial box this much inside a complete kept box adds nothing to the mask
# Default cap on one network input (and one inference call), in pixels: 12 Mi px keeps every window
# of the default and the recommended configs at 1080p (recall-faces-fast: 10.8 Mpx) and of the
# default at 4K (8.4 Mpx) and on a 4000x3000 photo (12.0 Mpx) whole.
MAX_INPUT_PX = 12 * 2**20
# Sizes are checked as padded to this multiple: the largest network stride multiple of the families
# (LPD-YuNet 64; YuNet, CenterFace, YOLOX 32), so the cap holds for every model whose multiple divides it.
PAD_MULTIPLE = 64
MAX_WINDOWS = 4096  # windows of one frame, all passes: beyond it the frame is refused (fails closed)
# A crop pixel costs at most this share of an input pixel: the graph takes the crop as uint8 and makes
# it fp32 before resizing (15 bytes), where the network's activations take 80-200 bytes per input pixel.
CROP_SHARE = 0.25
BOX_REACH = 3.0  # a kept box of sqrt-area m is at most this many m long (a plate is ~2.1 m wide)
OVERLAP_SHARE = 0.25  # with no max_box: overlap of cap tiles, as a share of the cap's side


@dataclass(frozen=True)
class PassSpec:
    scale: float = 1.0
    region: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)  # x0, y0, x1, y1 fractions of the frame
    tile: int = 0  # tile side in network-input pixels; 0 = the whole region in one input
    overlap: int = 0  # input pixels shared by neighbouring tiles
    score_threshold: float = 0.5
    min_box: float = 0.0  # frame px, sqrt of box area: smaller boxes from this pass are dropped
    max_box: float = 0.0  # frame px: boxes at least this large from this pass are dropped; 0 = no limit
    aspect: float = 1.0  # extra horizontal stretch: a source pixel's width / height

    def __post_init__(self) -> None:
        x0, y0, x1, y1 = self.region
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise ValueError(f"region must be x0 < x1, y0 < y1 within 0..1, got {self.region}")
        if self.scale <= 0 or self.aspect <= 0:
            raise ValueError(f"scale and aspect must be positive, got {self.scale}, {self.aspect}")
        if self.tile < 0 or self.overlap < 0 or (self.tile and self.overlap >= self.tile):
            raise ValueError(f"tile {self.tile} / overlap {self.overlap}: need 0 <= overlap < tile")

    @property
    def sx(self) -> float:
        return self.scale * self.aspect

    @property
    def sy(self) -> float:
        return self.scale

    def keeps(self, score: np.ndarray, size: np.ndarray) -> np.ndarray:
        ok = (score >= self.score_threshold) & (size >= self.min_box)
        return ok & (size < self.max_box) if self.max_box > 0 else ok


@dataclass(frozen=True)
class Window:
    """One network input: a frame-pixel crop, resized by (sx, sy) and zero-padded to the network's multiple."""

    pass_index: int
    x0: int
    y0: int
    x1: int
    y1: int
    sx: float
    sy: float
    cut: tuple[bool, bool, bool, bool]  # left, top, right, bottom edge lies inside the frame (a tile border)

    # cached: a frame size's windows are planned once and read for every frame
    @cached_property
    def crop_wh(self) -> tuple[int, int]:
        return self.x1 - self.x0, self.y1 - self.y0

    @cached_property
    def resized_wh(self) -> tuple[int, int]:
        h, w = self.fit(1).resized_hw
        return w, h

    def fit(self, multiple: int) -> Fit:
        w, h = self.crop_wh
        return fit(h, w, self.sx, self.sy, multiple)

    def input_hw(self, multiple: int) -> tuple[int, int]:
        return self.fit(multiple).input_hw

    @property
    def group(self) -> tuple:
        """Windows with equal keys have equal input shapes: they can share one inference call."""
        return (*self.crop_wh, self.sx, self.sy)


def spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Equal-size [start, end) spans covering 0..length, neighbours sharing at least `overlap`."""
    if tile <= 0 or length <= tile:
        return [(0, length)]
    n = math.ceil((length - overlap) / (tile - overlap))
    return [(s, s + tile) for s in (round(i * (length - tile) / (n - 1)) for i in range(n))]


def window_px(crop_w: int, crop_h: int, sx: float, sy: float) -> int:
    """What one window costs in memory, in input pixels: its padded network input, or the crop it
    reads (CROP_SHARE of a pixel each) where a downscaled pass reads more than it feeds the network."""
    ih, iw = fit(crop_h, crop_w, sx, sy, PAD_MULTIPLE).input_hw
    return max(ih * iw, math.ceil(crop_w * crop_h * CROP_SHARE))


def _tallest(tw: int, length: int, sx: float, sy: float, max_px: int) -> int:
    """The tallest crop (<= length) of width tw within max_px; 0 if not even one row fits."""
    lo, hi = 0, length
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if window_px(tw, mid, sx, sy) <= max_px:
            lo = mid
        else:
            hi = mid - 1
    return lo


def capped_tiles(lx: int, ly: int, sx: float, sy: float, ox: int, oy: int, max_px: int) -> tuple[int, int]:
    """Crop width and height of the fewest tiles covering lx x ly (frame px), neighbours sharing (ox, oy),
    each within max_px; ValueError if none fit."""
    best: tuple[int, int, int] | None = None
    for nx in range(1, lx + 1):
        if best is not None and nx >= best[0]:
            break  # one row of nx tiles already costs as many windows as the best
        tw = lx if nx == 1 else math.ceil((lx - ox) / nx) + ox
        if nx > 1 and tw <= ox:
            break
        th = _tallest(tw, ly, sx, sy, max_px)
        if th <= oy and th < ly:
            continue
        ny = 1 if th >= ly else math.ceil((ly - oy) / (th - oy))
        th = ly if ny == 1 else math.ceil((ly - oy) / ny) + oy
        if best is None or nx * ny < best[0]:
            best = (nx * ny, tw, th)
    if best is None:
        raise ValueError(f"no tile of a {lx}x{ly} px region at scale {sx:g}x{sy:g} with overlap {ox}x{oy} "
                         f"fits in {max_px} px")
    return best[1], best[2]


def _cap_overlap(p: PassSpec, max_px: int) -> tuple[int, int]:
    """Overlap (frame px, x and y) of the cap tiles of pass p: the longest box it keeps, or a share of
    the tile, or its own overlap, whichever is larger; at most a third of the cap's side (in frame px:
    the input bounds an upscaled tile, the crop a strongly downscaled one) so that the tiles advance."""
    side = math.isqrt(max_px)

    def one(s: float) -> int:
        tile = side / max(s, math.sqrt(CROP_SHARE))
        reach = BOX_REACH * p.max_box if p.max_box else OVERLAP_SHARE * tile
        return math.ceil(min(max(p.overlap / s, reach), tile / 3))

    return one(p.sx), one(p.sy)


def plan(height: int, width: int, passes: tuple[PassSpec, ...], max_input_px: int = MAX_INPUT_PX,
         max_windows: int = MAX_WINDOWS) -> tuple[Window, ...]:
    """Every window of every pass for a frame of this size, none costing more than `max_input_px`
    (window_px); ValueError when the frame needs more than `max_windows`."""
    out = []
    for k, p in enumerate(passes):
        rx0, rx1 = math.floor(p.region[0] * width), max(math.ceil(p.region[2] * width), 1)
        ry0, ry1 = math.floor(p.region[1] * height), max(math.ceil(p.region[3] * height), 1)
        rx0, ry0 = min(rx0, rx1 - 1), min(ry0, ry1 - 1)
        lx, ly = rx1 - rx0, ry1 - ry0
        # tile and overlap are in input pixels; the crops are in frame pixels
        tw = max(1, round(p.tile / p.sx)) if p.tile else 0
        th = max(1, round(p.tile / p.sy)) if p.tile else 0
        ox = min(round(p.overlap / p.sx), tw - 1) if tw else 0
        oy = min(round(p.overlap / p.sy), th - 1) if th else 0
        if window_px(min(tw, lx) if tw else lx, min(th, ly) if th else ly, p.sx, p.sy) > max_input_px:
            ox, oy = _cap_overlap(p, max_input_px)
            tw, th = capped_tiles(lx, ly, p.sx, p.sy, ox, oy, max_input_px)
        xs = spans(lx, tw, ox)
        ys = spans(ly, th, oy)
        if len(out) + len(xs) * len(ys) > max_windows:
            raise ValueError(f"a {width}x{height} frame needs more than {max_windows} windows "
                             f"(pass {k}: {len(xs) * len(ys)} at scale {p.scale:g})")
        for a, b in ys:
            for c, d in xs:
                x0, y0, x1, y1 = rx0 + c, ry0 + a, rx0 + d, ry0 + b
                out.append(Window(k, x0, y0, x1, y1, p.sx, p.sy, (x0 > 0, y0 > 0, x1 < width, y1 < height)))
    return tuple(out)


@dataclass
class Candidates(Columns):
    """Boxes of one frame before merging, in frame pixels, with the pass that found each and whether it is cut."""

    xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    score: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    pass_index: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))
    partial: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    quad: np.ndarray | None = None  # (N, 4, 2) or None; NaN rows where a box has none


def to_frame(window: Window, input_hw: tuple[int, int], xyxy: np.ndarray, score: np.ndarray,
             quad: np.ndarray | None, frame_hw: tuple[int, int]) -> Candidates:
    """Decoded boxes of one window (input pixels) as frame-pixel candidates, cut ones marked partial."""
    cw, ch = window.crop_wh
    rw, rh = window.resized_wh
    check_boxes(xyxy, (rw, rh), "decoded boxes")  # before clipping: absurd boxes would vanish in it
    fx, fy = rw / cw, rh / ch
    left, top, right, bottom = window.cut
    partial = np.zeros(len(xyxy), bool)
    if left:
        partial |= xyxy[:, 0] <= EDGE_PX
    if top:
        partial |= xyxy[:, 1] <= EDGE_PX
    if right:
        partial |= xyxy[:, 2] >= rw - EDGE_PX
    if bottom:
        partial |= xyxy[:, 3] >= rh - EDGE_PX
    scale = np.array([fx, fy, fx, fy], np.float32)
    origin = np.array([window.x0, window.y0, window.x0, window.y0], np.float32)
    out = xyxy / scale + origin
    h, w = frame_hw
    np.clip(out[:, 0::2], 0, w, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, h, out=out[:, 1::2])
    q = None
    if quad is not None:
        q = quad / np.array([fx, fy], np.float32) + np.array([window.x0, window.y0], np.float32)
    visible = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    return Candidates(out, score.astype(np.float32), np.full(len(out), window.pass_index, np.int32), partial,
                      q).take(np.flatnonzero(visible))


def box_size(xyxy: np.ndarray) -> np.ndarray:
    wh = np.clip(xyxy[:, 2:] - xyxy[:, :2], 0, None)
    return np.sqrt(wh[:, 0] * wh[:, 1])


def select(c: Candidates, passes: tuple[PassSpec, ...]) -> Candidates:
    """The candidates each pass vouches for: above its threshold and inside its size range."""
    if not len(c):
        return c
    size = box_size(c.xyxy)
    keep = np.zeros(len(c), bool)
    for k, p in enumerate(passes):
        mine = c.pass_index == k
        keep[mine] = p.keeps(c.score[mine], size[mine])
    return c.take(np.flatnonzero(keep))


def merge(c: Candidates, iou: float) -> np.ndarray:
    """Indices of the candidates to keep, across passes, tiles and models.

    Plain IoU suppression among complete boxes (a small face next to or partly over a large one
    has a low IoU with it and survives); partial boxes come after all complete ones and are dropped
    when a kept complete box overlaps them by `iou` or covers most of them.
    """
    if not len(c):
        return np.zeros((0,), np.int64)
    full = np.flatnonzero(~c.partial)
    kept = full[nms(c.xyxy[full], c.score[full], iou)]
    part = np.flatnonzero(c.partial)
    if part.size and kept.size:
        a, b = c.xyxy[part], c.xyxy[kept]
        lt = np.maximum(a[:, None, :2], b[None, :, :2])
        rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
        inter = np.clip(rb - lt, 0, None).prod(axis=2)
        inside = inter / np.maximum((a[:, 2:] - a[:, :2]).prod(axis=1), 1e-9)[:, None]
        covered = ((iou_matrix(a, b) > iou) | (inside >= COVERED)).any(axis=1)
        part = part[~covered]
    if part.size:
        part = part[nms(c.xyxy[part], c.score[part], iou)]
    return np.concatenate([kept, part])


def full_frame_passes(scales: tuple[float, ...], score_threshold: float, *, aspect: float = 1.0,
                      thresholds: tuple[float, ...] = (), min_box: tuple[float, ...] = (),
                      max_box: tuple[float, ...] = (), aspects: tuple[float, ...] = (),
                      region: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)) -> tuple[PassSpec, ...]:
    """One pass per scale over `region` (the whole frame by default); the per-scale lists are either
    empty or one entry per scale."""
    n = len(scales)
    for name, values in (("thresholds", thresholds), ("min_box", min_box), ("max_box", max_box),
                         ("aspects", aspects)):
        if values and len(values) != n:
            raise ValueError(f"{name}: {len(values)} values for {n} scales")
    return tuple(PassSpec(scale=s, score_threshold=thresholds[i] if thresholds else score_threshold,
                          min_box=min_box[i] if min_box else 0.0, max_box=max_box[i] if max_box else 0.0,
                          aspect=aspects[i] if aspects else aspect, region=tuple(region))
                 for i, s in enumerate(scales))


def passes_from_config(cls_cfg) -> tuple[PassSpec, ...]:
    """Passes of a detect.<class> config table (edge.config.ClassConfig): full-frame scales, then tiles."""
    passes = full_frame_passes(cls_cfg.scales, cls_cfg.score_threshold, aspect=cls_cfg.aspect, aspects=cls_cfg.aspects,
                               thresholds=cls_cfg.thresholds, min_box=cls_cfg.min_box_px, max_box=cls_cfg.max_box_px,
                               region=tuple(cls_cfg.region))
    t = cls_cfg.tiles
    if t.enabled:
        passes += (PassSpec(scale=t.scale, region=tuple(t.region), tile=t.size, overlap=t.overlap if t.size else 0,
                            score_threshold=t.score_threshold or cls_cfg.score_threshold, min_box=t.min_box_px,
                            max_box=t.max_box_px, aspect=cls_cfg.aspect),)
    return passes


def extra_passes(cls_cfg) -> tuple[PassSpec, ...]:
    """Passes of an ensemble member (detect.<class>.extra_models): whole frame at extra_scales."""
    return full_frame_passes(cls_cfg.extra_scales, cls_cfg.extra_score_threshold, aspect=cls_cfg.aspect)
