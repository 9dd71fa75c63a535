"""What is done with every vehicle the context stage finds: pure functions on boxes, and the plate-zone stage.

A vehicle box tells where its plates can be and how large they are. Three uses, all on numpy boxes:
- crop windows for a plate search inside each vehicle (edge.detect.guided runs the model on them),
  zoomed so a plate of the vehicle reaches the size the plate model finds best;
- a plausibility filter: with vehicles known, a plate box must lie in a vehicle, be plate-shaped and
  sized like a plate of that vehicle (this removes the huge false boxes LPD-YuNet paints on asphalt);
- the plate-zone fallback: a vehicle whose box holds no found plate gets a plate-sized region where its
  plate sits painted (class "plate_zone"), because a plate model miss must not leave the plate readable.
  A vehicle seen obliquely shows its front or rear on the side away from the frame's centre, so the
  zone leans that way (zone_lean).
A context box that cannot be a vehicle (wide, flat and weak: the bonnet of the own car, a stretch of
asphalt) gets neither crop nor zone (`possible`).
Occupants are searched the same way as plates: the face model on the windscreen band of each vehicle.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.checks import at_least, within
from edge.frame import PLATE, ClassTable, Detections

PLATE_ZONE = "plate_zone"  # the masked class of plate zones of vehicles without a found plate
VEHICLE = "vehicle"  # the context class whose boxes guide all of this


@dataclass(frozen=True)
class VehicleParams:
    """The [vehicles] table: what is done with each vehicle of the context stage ("vehicle" class)."""

    # plate search in vehicle crops (edge.detect.guided), with the [detect.plate] model
    guided: bool = True
    # largest first: bounds the crops per frame. 12, not 8: on berlin_dev, vehicles ranked 9-12 held
    # plates no crop looked at (found ones replace zones: 4.04 -> 3.35 zones per frame), and no dev set
    # lost a figure (oi_dev plates 80.7 -> 81.3%); 1080p p50 273-278 vs 271-285 ms in paired runs
    max_vehicles: int = 12
    min_vehicle_px: float = 40.0  # vehicles narrower than this (frame px) get no crop and no zone
    # the searched window: the lower `crop_lower` of the vehicle box (plates sit in its lower half)...
    crop_lower: float = 1.0
    # ...widened or heightened to the network input's aspect, resized to crop_width x crop_height
    # network px; the vehicle's width fills crop_width / zoom_fill of it
    crop_width: int = 320
    crop_height: int = 240
    max_zoom: float = 4.0  # a tiny vehicle is not enlarged beyond this (upscaled blur finds nothing)
    # score threshold of the plate model in crops. Low: a crop is a vehicle, where a plate is expected, and a
    # weak box there is small and cheap to paint; whether it excuses the vehicle from its zone is
    # zone_plate_score's call. 0.1 with zone_plate_score 0.2 and 0.5-wide zones against 0.3, 0 and 0.65 (the
    # four plate sets, scripts/sweep_paint.py, README "Plate threshold in crops"): as many plates or more on
    # every set (oi_dev 77.1 -> 80.7%), less paint on every set (berlin_dev 3.37 -> 2.91%), more vehicles
    # still found on every set (berlin_dev 84.6 -> 92.4%). The whole-frame pass stays at 0.3: at 0.1 its
    # false boxes land on persons and faces anywhere (wider_dev over-masking 15.4 -> 19.2%)
    plate_threshold: float = 0.1
    # plausibility filter of every plate box (full frame and crops) when the frame's vehicles are known.
    # Off by default: it drops some real plates (plates-native.toml, first 50 images: 2 of 61 on ro_dev,
    # 2 of 70 on oi_dev) to cut the full-frame pass's false boxes (ro_dev over-masking 14.8% -> 5.7%)
    filter: bool = False
    plate_in_vehicle: float = 0.5  # share of the plate box inside the vehicle box
    min_aspect: float = 0.7  # plate box width / height (tilted and small plates reach 0.74)
    max_aspect: float = 8.0
    min_width_share: float = 0.03  # plate box width / vehicle box width
    max_width_share: float = 0.8
    # plates at most this large (frame px, sqrt of area) are kept whatever the filter says: a distant
    # plate whose vehicle the context stage missed costs little paint and is a privacy loss if dropped
    keep_below_px: float = 24.0
    # a plate-shaped box in no vehicle is kept up to this size (frame px, sqrt of area): the context
    # stage misses close vehicles that fill or leave the frame (photo sets: a third of their plates)
    lone_max_px: float = 300.0
    # a box that cannot be a vehicle gets no crop and no zone: at least flat_aspect times as wide as high,
    # at least flat_width of the frame's width and scored under flat_score (a 750 x 260 px "vehicle" at 0.28
    # across the road of the highway clip; the own bonnet at the bottom of berlin_dev frames, 0.21-0.27).
    # Every vehicle holding a labelled plate on the dev sets passes, but one (oi_dev, 3.95 x 0.5 of the
    # frame at 0.42, its plate found by the plate model anyway). flat_score = 0 keeps every box
    flat_aspect: float = 2.4
    flat_width: float = 0.4
    flat_score: float = 0.5
    # plate-zone fallback: vehicles at least min_vehicle_px wide whose box holds no kept plate get a
    # plate-sized zone where plates sit (scripts/sweep_paint.py fits it on the dev sets)
    zones: bool = True
    # The zone is 0.5 of the vehicle's width by 0.45 of its height, centred at y 0.62 and leaning 0.2: on
    # the four plate sets together the cheapest that keeps berlin_dev's plates where the old half-vehicle
    # band had them within ~2 points (scripts/sweep_paint.py; the README's plate-zone section has every
    # set's figures; 0.65 wide before the crops' threshold fell to 0.1).
    # The spread of the plate's height in the box (berlin_dev y-centre p5/95 0.43/0.82) sets the height.
    zone_x: float = 0.5  # zone centre, fractions of the vehicle box (x from its left, y from its top)...
    zone_y: float = 0.62
    # ...moved outward by this fraction of the vehicle's width per half frame width its centre lies off the
    # frame's centre: an oblique vehicle's front or rear is on its outer side (berlin_dev plates: x-centre
    # = 0.49 + 0.30 u, ro_dev 0.51 + 0.15 u; the 5-95% spread narrows from 0.63 to 0.37 of the width)
    zone_lean: float = 0.2
    zone_width: float = 0.5  # zone size, fractions of the vehicle box's width / height
    zone_height: float = 0.45
    # vehicles at least this wide (frame px) get no zone; 0 = every vehicle. A near vehicle's plate is large
    # (~130 px on a 500 px car) and found by the model when it shows; its zone is much of the fallback's
    # paint. 500 against 0, the four plate sets (scripts/sweep_paint.py, out/sweep_zmax*.json): no plate lost
    # on any, over-masking berlin_dev 2.91 -> 2.33%, oi_dev 7.14 -> 6.45%, openalpr_dev 5.47 -> 5.02%, ro_dev
    # 4.42 -> 4.34%, vehicles still found as many or more; 300 loses an oi_dev plate, 250 a berlin_dev one
    zone_max_vehicle_px: float = 500.0
    # a plate scored below this is painted but does not excuse its vehicle from a zone: the plate model's
    # weak boxes are cheap to paint and often the plate, yet often a grille or a sticker beside it (berlin_dev,
    # crops at 0.1: 0 loses 2 plates of 130 to such boxes beside the plate, 0.2 none)
    zone_plate_score: float = 0.2
    # occupants: the face model on the windscreen band of each vehicle, zoomed
    occupants: bool = False
    band_top: float = 0.0  # the band: from this fraction of the vehicle box's height...
    band_bottom: float = 0.6  # ...to this one
    occupant_width: int = 640  # network px the band's width is resized to (at most max_zoom)
    occupant_height: int = 320
    face_threshold: float = 0.5

    def __post_init__(self) -> None:
        within(self, "max_vehicles", 1, 64)
        within(self, "min_vehicle_px", 0.0, 16384.0)
        within(self, "crop_lower", 0.1, 1.0)
        within(self, "crop_width", 32, 1024)
        within(self, "crop_height", 32, 1024)
        within(self, "max_zoom", 0.25, 8.0)
        within(self, "plate_threshold", 0.01, 1.0)
        within(self, "plate_in_vehicle", 0.05, 1.0)
        within(self, "min_aspect", 0.1, 20.0)
        within(self, "max_aspect", 0.1, 20.0)
        at_least(self, "max_aspect", self.min_aspect)
        within(self, "min_width_share", 0.0, 1.0)
        within(self, "max_width_share", 0.01, 1.0)
        at_least(self, "max_width_share", self.min_width_share)
        within(self, "keep_below_px", 0.0, 16384.0)
        within(self, "lone_max_px", 0.0, 16384.0)
        within(self, "flat_aspect", 1.0, 20.0)
        within(self, "flat_width", 0.0, 1.0)
        within(self, "flat_score", 0.0, 1.0)
        within(self, "zone_x", 0.0, 1.0)
        within(self, "zone_y", 0.0, 1.0)
        within(self, "zone_lean", -1.0, 1.0)
        within(self, "zone_width", 0.05, 1.0)
        within(self, "zone_height", 0.05, 1.0)
        within(self, "zone_max_vehicle_px", 0.0, 16384.0)
        within(self, "zone_plate_score", 0.0, 1.0)
        within(self, "band_top", 0.0, 0.9)
        within(self, "band_bottom", 0.1, 1.0)
        if not self.band_bottom > self.band_top:
            raise ValueError(f"band_bottom: must be above band_top ({self.band_top}), got {self.band_bottom}")
        within(self, "occupant_width", 32, 2048)
        within(self, "occupant_height", 32, 2048)
        within(self, "face_threshold", 0.01, 1.0)

    @property
    def crops(self) -> bool:
        """Whether a detector stage runs models on vehicle crops (plates or occupants)."""
        return self.guided or self.occupants


def widths(xyxy: np.ndarray) -> np.ndarray:
    return xyxy[:, 2] - xyxy[:, 0]


def pick(vehicles: np.ndarray, limit: int, min_px: float) -> np.ndarray:
    """Indices of the vehicles to search: at least `min_px` wide, the `limit` largest by area, largest first."""
    wh = vehicles[:, 2:] - vehicles[:, :2]
    ok = np.flatnonzero(wh[:, 0] >= min_px)
    order = ok[np.argsort(-(wh[ok, 0] * wh[ok, 1]), kind="stable")]
    return order[:limit]


def bands(vehicles: np.ndarray, top: float, bottom: float) -> np.ndarray:
    """The horizontal band of each vehicle box from `top` to `bottom` (fractions of its height from its top)."""
    h = vehicles[:, 3] - vehicles[:, 1]
    return np.column_stack([vehicles[:, 0], vehicles[:, 1] + h * top, vehicles[:, 2], vehicles[:, 1] + h * bottom])


def windows(regions: np.ndarray, out_w: int, out_h: int, max_zoom: float, frame_hw: tuple[int, int]
            ) -> tuple[np.ndarray, np.ndarray]:
    """Integer frame windows (x0, y0, x1, y1) around each region with the aspect of an out_w x out_h input,
    at least out / max_zoom in size, shifted inside the frame (clipped when the frame is smaller), and
    per window the (sx, sy) factors that resize it to out_w x out_h."""
    fh, fw = frame_hw
    if len(regions) == 0:
        return np.zeros((0, 4), np.int64), np.zeros((0, 2), np.float64)
    rw, rh = widths(regions), regions[:, 3] - regions[:, 1]
    aspect = out_w / out_h
    win_w = np.maximum(np.maximum(rw, rh * aspect), out_w / max_zoom)
    win_h = win_w / aspect
    cx, cy = (regions[:, 0] + regions[:, 2]) / 2, (regions[:, 1] + regions[:, 3]) / 2
    x0 = np.clip(cx - win_w / 2, 0, np.maximum(fw - win_w, 0))
    y0 = np.clip(cy - win_h / 2, 0, np.maximum(fh - win_h, 0))
    x1, y1 = np.minimum(x0 + win_w, fw), np.minimum(y0 + win_h, fh)
    win = np.column_stack([np.floor(x0), np.floor(y0), np.ceil(x1), np.ceil(y1)]).astype(np.int64)
    win[:, 2] = np.clip(np.maximum(win[:, 2], win[:, 0] + 1), 1, fw)
    win[:, 3] = np.clip(np.maximum(win[:, 3], win[:, 1] + 1), 1, fh)
    win[:, 0] = np.minimum(win[:, 0], win[:, 2] - 1)
    win[:, 1] = np.minimum(win[:, 1], win[:, 3] - 1)
    scale = np.column_stack([out_w / (win[:, 2] - win[:, 0]), out_h / (win[:, 3] - win[:, 1])])
    return win, scale


def to_frame(xyxy: np.ndarray, window: np.ndarray, scale: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    """Boxes found in a resized window moved back into frame pixels (clipped to the window)."""
    out = xyxy.astype(np.float32).reshape(-1, 4) / np.array([scale[0], scale[1], scale[0], scale[1]], np.float32)
    out += np.array([window[0], window[1], window[0], window[1]], np.float32)
    out[:, 0::2] = np.clip(out[:, 0::2], window[0], min(window[2], frame_hw[1]))
    out[:, 1::2] = np.clip(out[:, 1::2], window[1], min(window[3], frame_hw[0]))
    return out


def inside_share(boxes: np.ndarray, containers: np.ndarray) -> np.ndarray:
    """(boxes, containers): the share of each box's area inside each container box."""
    if len(boxes) == 0 or len(containers) == 0:
        return np.zeros((len(boxes), len(containers)), np.float32)
    lt = np.maximum(boxes[:, None, :2], containers[None, :, :2])
    rb = np.minimum(boxes[:, None, 2:], containers[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area = np.maximum((boxes[:, 2:] - boxes[:, :2]).prod(axis=1), 1e-9)
    return (inter / area[:, None]).astype(np.float32)


def plausible(plates: np.ndarray, vehicles: np.ndarray, params: VehicleParams) -> np.ndarray:
    """Per plate box, True when it may be a plate: small enough (`keep_below_px`) that dropping it would
    risk more than painting it; or plate-shaped and either in a vehicle it fits (plate width / vehicle
    width) or in no vehicle at all and at most `lone_max_px`."""
    if len(plates) == 0:
        return np.zeros(0, bool)
    wh = np.maximum(plates[:, 2:] - plates[:, :2], 1e-6)
    area = wh[:, 0] * wh[:, 1]
    small = np.sqrt(area) <= params.keep_below_px
    aspect = wh[:, 0] / wh[:, 1]
    shaped = (aspect >= params.min_aspect) & (aspect <= params.max_aspect)
    inside = inside_share(plates, vehicles) >= params.plate_in_vehicle
    ratio = wh[:, 0:1] / np.maximum(widths(vehicles)[None, :], 1e-6)
    fits = inside & (ratio >= params.min_width_share) & (ratio <= params.max_width_share)
    lone = ~inside.any(axis=1) & (np.sqrt(area) <= params.lone_max_px)
    return small | (shaped & (fits.any(axis=1) | lone))


def possible(vehicles: np.ndarray, score: np.ndarray, frame_hw: tuple[int, int], params: VehicleParams) -> np.ndarray:
    """Per vehicle box, False when it cannot be a vehicle: flat (width / height >= flat_aspect), wide
    (>= flat_width of the frame) and weak (score < flat_score) all at once."""
    wh = np.maximum(vehicles[:, 2:] - vehicles[:, :2], 1e-6)
    flat = (wh[:, 0] / wh[:, 1] >= params.flat_aspect) & (wh[:, 0] >= params.flat_width * frame_hw[1])
    return ~(flat & (score < params.flat_score))


def zones(vehicles: np.ndarray, params: VehicleParams, frame_width: float) -> np.ndarray:
    """The plate zone of each vehicle box: centred at (zone_x, zone_y) of the box, leaning outward by
    zone_lean per half frame width its centre lies off the frame's centre, sized from the box, cut at it."""
    w, h = widths(vehicles), vehicles[:, 3] - vehicles[:, 1]
    off = np.clip(((vehicles[:, 0] + vehicles[:, 2]) / 2 - frame_width / 2) / max(frame_width / 2, 1e-6), -1, 1)
    cx = vehicles[:, 0] + w * np.clip(params.zone_x + params.zone_lean * off, 0, 1)
    cy = vehicles[:, 1] + h * params.zone_y
    hw, hh = w * params.zone_width / 2, h * params.zone_height / 2
    out = np.column_stack([np.maximum(cx - hw, vehicles[:, 0]), np.maximum(cy - hh, vehicles[:, 1]),
                           np.minimum(cx + hw, vehicles[:, 2]), np.minimum(cy + hh, vehicles[:, 3])])
    return out.astype(np.float32).reshape(-1, 4)


def plateless(vehicles: np.ndarray, plates: np.ndarray, share: float) -> np.ndarray:
    """Per vehicle, True when no plate box has at least `share` of its area inside it."""
    if len(plates) == 0:
        return np.ones(len(vehicles), bool)
    return ~(inside_share(plates, vehicles) >= share).any(axis=0)


class PlateZoneStage:
    """A paint stage (edge.pipeline.PaintStage): implausible plate boxes out, plate zones of plateless vehicles in.

    Runs only when the context stage detects vehicles: without them nothing is known to filter by.
    """

    def __init__(self, params: VehicleParams, classes: ClassTable) -> None:
        self.params, self.classes = params, classes
        self.vehicle = classes.id(VEHICLE) if VEHICLE in classes.context else None
        self.zone = classes.id(PLATE_ZONE) if PLATE_ZONE in classes.names and PLATE_ZONE not in classes.context \
            else None

    def to_paint(self, masked: Detections, context: Detections, shape: tuple[int, int]) -> Detections:
        if self.vehicle is None:
            return masked
        cars = context.take(np.flatnonzero(context.class_id == self.vehicle))
        cars = cars.take(np.flatnonzero(possible(cars.xyxy, cars.score, shape, self.params)))
        vehicles = cars.xyxy
        is_plate = masked.class_id == PLATE
        if self.params.filter and is_plate.any():
            keep = ~is_plate
            keep[is_plate] = plausible(masked.xyxy[is_plate], vehicles, self.params)
            if not keep.all():
                masked = masked.take(np.flatnonzero(keep))
                is_plate = masked.class_id == PLATE
        if self.zone is None or not self.params.zones or len(vehicles) == 0:
            return masked
        w = widths(vehicles)
        wide = np.flatnonzero((w >= self.params.min_vehicle_px)
                              & ((w < self.params.zone_max_vehicle_px) | (self.params.zone_max_vehicle_px == 0)))
        sure = is_plate & (masked.score >= self.params.zone_plate_score)
        need = wide[plateless(vehicles[wide], masked.xyxy[sure], self.params.plate_in_vehicle)]
        if not len(need):
            return masked
        found = zones(vehicles[need], self.params, shape[1])
        # scored as their vehicle: the hold (edge.track) keeps a weak vehicle's zone only briefly
        return Detections.concat([masked, Detections(found, cars.score[need].astype(np.float32),
                                                      np.full(len(found), self.zone, np.int32))])
