"""Plates (and occupants' faces) searched inside the vehicles the context stage finds.

LPD-YuNet finds few distant plates in a whole 1080p frame: a 30 px plate is a speck at its native
input size. Each vehicle's crop is resized so that its plate reaches the size the model finds best,
and every crop of a frame has the same network input (crop_width x crop_height), so they share one
inference call. Cost is bounded: at most max_vehicles vehicles per frame (largest first), each at
one fixed input size. Occupants: the face model on the windscreen band of each vehicle, zoomed.

Fail closed: any error of a model run raises from detect, so the pipeline drops the frame or masks
it whole; the frame is never masked with the context boxes alone.
"""
from __future__ import annotations

import time

import cv2
import numpy as np

from edge import vehicles as veh
from edge.detect import Detector
from edge.detect.detector import distinct_models
from edge.frame import Detections
from edge.timing import Stopwatch


def resized(image: np.ndarray, wins: np.ndarray, out_w: int, out_h: int) -> list[np.ndarray]:
    """Each window of `image` resized to out_w x out_h (area when shrinking, linear when enlarging)."""
    out = []
    for x0, y0, x1, y1 in wins.tolist():
        crop = image[y0:y1, x0:x1]
        shrink = (x1 - x0) > out_w
        out.append(cv2.resize(crop, (out_w, out_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR))
    return out


class GuidedDetector:
    """Detector (edge.detect.Detector): the context stage, then models on crops of its vehicles.

    Returns the context detections plus the plates (class of `plates`) and faces (of `faces`) found
    in the crops, in frame pixels.
    """

    def __init__(self, context: Detector, *, vehicle_id: int, params: veh.VehicleParams,
                 plates: Detector | None = None, faces: Detector | None = None) -> None:
        if plates is None and faces is None:
            raise ValueError("a guided stage needs a plate or a face detector")
        self.context, self.vehicle_id, self.params = context, vehicle_id, params
        self.plates, self.faces = plates, faces
        members = [d for d in (context, plates, faces) if d is not None]
        self.models = distinct_models(members)
        self.providers = tuple(sorted({p for d in members for p in d.providers}))

    def detect(self, image: np.ndarray, watch: Stopwatch | None = None) -> Detections:
        return self.detect_batch([image], watch)[0]

    def detect_batch(self, images: list[np.ndarray], watch: Stopwatch | None = None) -> list[Detections]:
        watch = watch or Stopwatch()
        out = []
        for image, ctx in zip(images, self.context.detect_batch(images, watch)):
            out.append(self._in_vehicles(image, ctx, watch))
        return out

    def _in_vehicles(self, image: np.ndarray, ctx: Detections, watch: Stopwatch) -> Detections:
        p = self.params
        hw = image.shape[:2]
        is_car = ctx.class_id == self.vehicle_id
        cars = ctx.xyxy[is_car][veh.possible(ctx.xyxy[is_car], ctx.score[is_car], hw, p)]
        cars = cars[veh.pick(cars, p.max_vehicles, p.min_vehicle_px)]
        parts = [ctx]
        if len(cars) == 0:
            return ctx
        if self.plates is not None:
            regions = veh.bands(cars, 1.0 - p.crop_lower, 1.0)
            parts.append(self._search(self.plates, image, regions, p.crop_width, p.crop_height, hw, watch))
        if self.faces is not None:
            regions = veh.bands(cars, p.band_top, p.band_bottom)
            parts.append(self._search(self.faces, image, regions, p.occupant_width, p.occupant_height, hw, watch))
        return Detections.concat(parts)

    def _search(self, det: Detector, image: np.ndarray, regions: np.ndarray, out_w: int, out_h: int,
                hw: tuple[int, int], watch: Stopwatch) -> Detections:
        t = time.perf_counter()
        wins, scale = veh.windows(regions, out_w, out_h, self.params.max_zoom, hw)
        crops = resized(image, wins, out_w, out_h)
        watch.lap("preprocess", t)
        found = det.detect_batch(crops, watch)  # one shape: the crops share the inference calls
        t = time.perf_counter()
        parts = []
        for dets, win, s in zip(found, wins, scale):
            if len(dets):
                quad = None
                if dets.quad is not None:
                    q = dets.quad / np.asarray(s, np.float32) + np.asarray(win[:2], np.float32)
                    quad = q.astype(np.float32)
                parts.append(Detections(veh.to_frame(dets.xyxy, win, s, hw), dets.score, dets.class_id, quad))
        watch.lap("decode", t)
        return Detections.concat(parts) if parts else Detections()

    def close(self) -> None:
        for d in (self.context, self.plates, self.faces):
            if d is not None:
                d.close()
