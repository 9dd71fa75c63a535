"""The ONNX detector: windows of every pass (scales, tiles) to network inputs, decoding, merging; ensembles."""
from __future__ import annotations

import importlib
import re
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from types import ModuleType

import cv2
import numpy as np

from edge.detect import centerface, lpd_yunet, yunet
from edge.detect.boxes import padded_size
from edge.detect.multiscale import (Candidates, PassSpec, Window, full_frame_passes, merge, plan, select,
                                     to_frame)
from edge.detect.runner import FrameModel
from edge.detect.backends.session import OnnxModel
from edge.frame import Detections, check_image

FAMILIES: dict[str, ModuleType] = {"yunet": yunet, "centerface": centerface, "lpd_yunet": lpd_yunet}
DECODER_API = ("candidates", "MULTIPLE", "CHANNELS")  # what a family module must define
_FAMILY_RE = re.compile(r"[a-z][a-z0-9_]*")


class UnknownFamily(ValueError):
    """No decoder module for a model card's family."""


def family_module(name: str) -> ModuleType:
    """The decoder of family `name`: a built-in, or the module edge/detect/<name>.py defining DECODER_API.

    Adding a family is adding that module; its card names it and nothing else changes.
    """
    if name in FAMILIES:
        return FAMILIES[name]
    if not _FAMILY_RE.fullmatch(name or ""):
        raise UnknownFamily(f"family {name!r} is not a valid module name")
    try:
        module = importlib.import_module(f"edge.detect.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"edge.detect.{name}":
            raise  # the decoder exists but one of its own imports is missing: say that, not "unknown"
        raise UnknownFamily(f"unknown detector family {name!r}: no decoder module edge/detect/{name}.py "
                            f"(built-in: {', '.join(sorted(FAMILIES))})") from None
    missing = [a for a in DECODER_API if not hasattr(module, a)]
    if missing:
        raise UnknownFamily(f"edge/detect/{name}.py is not a decoder: it lacks {', '.join(missing)}")
    FAMILIES[name] = module
    return module


def preprocess(image: np.ndarray, scale: float, multiple: int, channels: str) -> tuple[np.ndarray, float, float]:
    """NCHW float32 blob of the image resized by `scale` and zero-padded to the network's multiple.

    Returns the blob and the (x, y) factors that map input pixels back: x_frame = x_input / fx.
    """
    h, w = image.shape[:2]
    sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
    if (sh, sw) != (h, w):
        interp = cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA
        image = cv2.resize(image, (sw, sh), interpolation=interp)
    ph, pw = padded_size(sh, sw, multiple)
    blob = np.zeros((1, 3, ph, pw), np.float32)
    src = image[..., ::-1] if channels == "RGB" else image
    blob[0, :, :sh, :sw] = src.transpose(2, 0, 1)
    return blob, sw / w, sh / h


def _add(timings: dict[str, float] | None, key: str, t0: float) -> float:
    t1 = time.perf_counter()
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + (t1 - t0) * 1e3
    return t1


class _ClassDetector:
    """detect / detect_batch for one class, from per-frame candidates merged across passes (and models)."""

    class_id: int
    nms_iou: float

    def candidates_batch(self, images: list[np.ndarray], timings: dict[str, float] | None = None,
                         floor: float | None = None) -> list[Candidates]:
        raise NotImplementedError

    def detect(self, image: np.ndarray, timings: dict[str, float] | None = None) -> Detections:
        return self.detect_batch([image], timings)[0]

    def detect_batch(self, images: list[np.ndarray], timings: dict[str, float] | None = None) -> list[Detections]:
        """Detections per frame for frames of one size (several cameras share the inference calls)."""
        found = self.candidates_batch(images, timings)
        t = time.perf_counter()
        out = [to_detections(c, self.class_id, self.nms_iou) for c in found]
        _add(timings, "decode", t)
        return out


class OnnxDetector(_ClassDetector):
    """One model run over the windows of its passes (full frame at each scale, tiles); boxes merged across all.

    The pass / tile planning and the merge live in edge.detect.multiscale; this class only turns
    windows into network inputs, runs them batched (equal-shape windows, and the frames of a
    batch, share one inference call) and decodes them with the family's decoder.
    """

    def __init__(self, model: OnnxModel, family: str, *, class_id: int, score_threshold: float = 0.5,
                 nms_iou: float = 0.45, scales: tuple[float, ...] = (1.0,),
                 passes: tuple[PassSpec, ...] | None = None, max_batch: int = 16) -> None:
        fam = family_module(family)
        if not passes and (not scales or min(scales) <= 0):
            raise ValueError(f"scales must be positive, got {scales}")
        self.model, self.family = model, fam
        self.class_id, self.score_threshold, self.nms_iou = class_id, score_threshold, nms_iou
        self.passes = tuple(passes) if passes else full_frame_passes(tuple(scales), score_threshold)
        self.scales = tuple(p.scale for p in self.passes)
        self.max_batch = max(1, max_batch)
        self.models = ((model.name, model.sha256),)
        self._plans: dict[tuple[int, int], tuple[Window, ...]] = {}
        if isinstance(model, FrameModel):
            missing = set(runner_scales(self.passes)) - set(model.runners)
            if missing:
                raise ValueError(f"model {model.name}: no graph-preprocessed session for scale(s) {sorted(missing)}")

    def candidates_batch(self, images: list[np.ndarray], timings: dict[str, float] | None = None,
                         floor: float | None = None) -> list[Candidates]:
        """Per frame, the boxes of every pass before merging, each filtered by its pass's threshold and size range.

        With `floor`, every box scoring at least `floor` comes back unfiltered (pass_index says
        which pass found it), so a threshold sweep runs the network once (scripts/tune_thresholds.py).
        """
        for image in images:
            check_image(image)
        if len({image.shape for image in images}) != 1:
            raise ValueError(f"detect_batch needs frames of one size, got {sorted({i.shape for i in images})}")
        h, w = images[0].shape[:2]
        windows = self._plans.get((h, w))
        if windows is None:
            windows = self._plans.setdefault((h, w), plan(h, w, self.passes))
        groups: dict[tuple, list[Window]] = {}
        for win in windows:
            groups.setdefault(win.group, []).append(win)
        per_image: list[list[Candidates]] = [[] for _ in images]
        per_call = max(1, self.max_batch // len(images))
        filtered = getattr(self.model, "filtered", False)
        for group in groups.values():
            for start in range(0, len(group), per_call):
                chunk = group[start:start + per_call]
                thresholds = [self.passes[win.pass_index].score_threshold if floor is None else floor for win in chunk]
                outputs, input_hw = self._run_windows(images, chunk, timings, min(thresholds))
                t = time.perf_counter()
                if filtered:
                    named = dict(zip(self.model.output_names, outputs))
                    batch = len(images) * len(chunk)
                for i, found in enumerate(per_image):
                    for j, (win, thr) in enumerate(zip(chunk, thresholds)):
                        k = i * len(chunk) + j
                        if filtered:
                            xyxy, score, quad = self.family.filtered_candidates(named, input_hw, thr, k, batch)
                        else:
                            xyxy, score, quad = self.family.candidates(outputs, input_hw, thr, batch_index=k)
                        found.append(to_frame(win, input_hw, xyxy, score, quad, (h, w)))
                _add(timings, "decode", t)
        merged = [Candidates.concat(found) for found in per_image]
        return merged if floor is not None else [select(c, self.passes) for c in merged]

    def _run_windows(self, images: list[np.ndarray], windows: list[Window], timings: dict[str, float] | None,
                     floor: float = 0.0) -> tuple[list[np.ndarray], tuple[int, int]]:
        """Raw outputs for every (frame, window) pair, frame-major, and the common input (H, W).

        `floor` is the lowest threshold of these windows: a score-filtered model drops rows under it in the graph.
        """
        t = time.perf_counter()
        crops = [image[w.y0:w.y1, w.x0:w.x1] for image in images for w in windows]
        win = windows[0]
        rw, rh = win.resized_wh
        isotropic = win.sx == win.sy
        if isinstance(self.model, FrameModel):  # runtime.graph_preprocess: the graph resizes and pads
            if not isotropic:  # the graph scales both axes alike: stretch here, run the graph at 1.0
                crops = [cv2.resize(c, (rw, rh), interpolation=cv2.INTER_LINEAR) for c in crops]
            _add(timings, "preprocess", t)
            outputs, input_hw, _, _ = self.model.run_frames(crops, win.sx if isotropic else 1.0, timings, floor)
            return outputs, input_hw
        ph, pw = win.input_hw(self.family.MULTIPLE)
        blob = np.zeros((len(crops), 3, ph, pw), np.float32)
        shrink = win.sx <= 1 and win.sy <= 1
        for k, crop in enumerate(crops):
            if crop.shape[:2] != (rh, rw):
                crop = cv2.resize(crop, (rw, rh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            blob[k, :, :rh, :rw] = (crop[..., ::-1] if self.family.CHANNELS == "RGB" else crop).transpose(2, 0, 1)
        t = _add(timings, "preprocess", t)
        outputs = self.model.run(blob)
        _add(timings, "inference", t)
        return outputs, (ph, pw)


def to_detections(c: Candidates, class_id: int, nms_iou: float) -> Detections:
    kept = c.take(merge(c, nms_iou))
    return Detections(kept.xyxy, kept.score, np.full(len(kept), class_id, np.int32), kept.quad)


def runner_scales(passes: tuple[PassSpec, ...]) -> tuple[float, ...]:
    """Scales a graph-preprocessed model needs a session for (a stretched pass runs at 1.0 after a numpy resize)."""
    return tuple(sorted({p.sx if p.sx == p.sy else 1.0 for p in passes}))


class EnsembleDetector(_ClassDetector):
    """Several models for one class (e.g. YuNet + CenterFace): each filtered by its own passes, merged together."""

    def __init__(self, members: list[OnnxDetector], *, nms_iou: float = 0.45) -> None:
        if not members or len({m.class_id for m in members}) != 1:
            raise ValueError("an ensemble needs at least one member, all of one class")
        self.members, self.nms_iou = list(members), nms_iou
        self.model, self.class_id = members[0].model, members[0].class_id
        self.models = tuple(m for d in self.members for m in d.models)
        self.passes = tuple(p for d in self.members for p in d.passes)

    def candidates_batch(self, images: list[np.ndarray], timings: dict[str, float] | None = None,
                         floor: float | None = None) -> list[Candidates]:
        per_member = []
        offset = 0
        for d in self.members:
            found = d.candidates_batch(images, timings, floor)
            for c in found:
                c.pass_index = c.pass_index + offset  # indices into self.passes
            per_member.append(found)
            offset += len(d.passes)
        return [Candidates.concat(list(row)) for row in zip(*per_member)]


class MultiDetector:
    """Several detectors (faces, plates...) on the same frame, run concurrently; their results concatenated.

    Every member reads the same decoded frame (no copy). onnxruntime releases the GIL during
    inference, so on a GPU (or spare CPU cores) the classes overlap instead of adding up. Fail
    closed: if any member raises or overruns `timeout_s`, the whole detect raises and the frame
    is never masked by a partial set of classes.
    """

    def __init__(self, detectors: list, *, concurrent: bool = True, timeout_s: float = 30.0) -> None:
        if not detectors:
            raise ValueError("at least one detector is required")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.detectors = list(detectors)
        self.models = tuple(m for d in self.detectors for m in d.models)
        self.timeout_s = timeout_s
        # the first member runs on the caller's thread; the pool only takes the others
        self._pool = (ThreadPoolExecutor(max_workers=len(self.detectors) - 1, thread_name_prefix="detect")
                      if concurrent and len(self.detectors) > 1 else None)

    @property
    def concurrent(self) -> bool:
        return self._pool is not None

    def detect(self, image: np.ndarray, timings: dict[str, float] | None = None) -> Detections:
        return Detections.concat(self._each(lambda d, t: d.detect(image, t), timings))

    def detect_batch(self, images: list[np.ndarray], timings: dict[str, float] | None = None) -> list[Detections]:
        per_detector = self._each(lambda d, t: d.detect_batch(images, t), timings)
        return [Detections.concat(list(row)) for row in zip(*per_detector)]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _each(self, call, timings: dict[str, float] | None) -> list:
        """`call(detector, its_timings)` for every member, in member order; the first error raises."""
        if self._pool is None:
            return [call(d, timings) for d in self.detectors]
        # one timings dict per member: a shared dict would race on its read-modify-write updates
        own = [None if timings is None else {} for _ in self.detectors]
        deadline = time.monotonic() + self.timeout_s
        futures = [self._pool.submit(call, d, t) for d, t in zip(self.detectors[1:], own[1:])]
        try:
            first = call(self.detectors[0], own[0])
            rest = [f.result(timeout=max(0.0, deadline - time.monotonic())) for f in futures]
        except FutureTimeout:
            raise TimeoutError(f"a detector took longer than {self.timeout_s:g} s") from None
        finally:
            for f in futures:
                f.cancel()
        if timings is not None:
            for t in own:
                for k, v in t.items():
                    timings[k] = timings.get(k, 0.0) + v
        return [first, *rest]
