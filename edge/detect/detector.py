"""The ONNX detector: windows of every pass (scales, tiles) through a backend, decoding, merging; ensembles.

Everything here works on batches of frames of one size; the single-frame `detect` exists only at the
top (MultiDetector, what the pipeline calls) and for direct callers of one class detector.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np

from edge.detect.backends import Backend
from edge.detect.multiscale import (MAX_INPUT_PX, Candidates, PassSpec, Window, full_frame_passes, merge, plan,
                                    select, to_frame, window_px)
from edge.frame import Detections
from edge.timing import Stopwatch


class _ClassDetector:
    """detect / detect_batch for one class, from per-frame candidates merged across passes (and models)."""

    class_id: int
    nms_iou: float
    models: tuple[tuple[str, str], ...]
    providers: tuple[str, ...]

    def candidates_batch(self, images: list[np.ndarray], watch: Stopwatch | None = None,
                         floor: float | None = None) -> list[Candidates]:
        raise NotImplementedError

    def detect(self, image: np.ndarray, watch: Stopwatch | None = None) -> Detections:
        return self.detect_batch([image], watch)[0]

    def detect_batch(self, images: list[np.ndarray], watch: Stopwatch | None = None) -> list[Detections]:
        """Detections per frame for frames of one size (several cameras share the inference calls)."""
        watch = watch or Stopwatch()
        found = self.candidates_batch(images, watch)
        t = time.perf_counter()
        out = []
        for c in found:  # plain loops on the per-frame path: a comprehension is one more call per frame
            out.append(to_detections(c, self.class_id, self.nms_iou))
        watch.lap("decode", t)
        return out

    def close(self) -> None:
        return None  # the sessions live as long as the process; nothing runs in the background


class OnnxDetector(_ClassDetector):
    """One model run over the windows of its passes (full frame at each scale, tiles); boxes merged across all.

    The pass / tile planning and the merge live in edge.detect.multiscale, the resizing and the
    inference in the backend (edge.detect.backends); this class groups the windows into batched
    runs (equal-shape windows, and the frames of a batch, share one inference call) and moves the
    decoded boxes back into frame pixels.
    """

    def __init__(self, backend: Backend, *, class_id: int, score_threshold: float = 0.5,
                 nms_iou: float = 0.45, scales: tuple[float, ...] = (1.0,),
                 passes: tuple[PassSpec, ...] | None = None, max_batch: int = 16,
                 max_input_px: int = MAX_INPUT_PX) -> None:
        if not passes and (not scales or min(scales) <= 0):
            raise ValueError(f"scales must be positive, got {scales}")
        self.backend = backend
        self.class_id, self.score_threshold, self.nms_iou = class_id, score_threshold, nms_iou
        self.passes = tuple(passes) if passes else full_frame_passes(tuple(scales), score_threshold)
        self.scales = tuple(p.scale for p in self.passes)
        self.max_batch = max(1, max_batch)
        self.max_input_px = max_input_px
        self.models = ((backend.name, backend.sha256),)
        self.providers = (backend.provider,)
        self._groups: dict[tuple[int, int], tuple[list[Window], ...]] = {}
        backend.check(self.passes)

    def candidates_batch(self, images: list[np.ndarray], watch: Stopwatch | None = None,
                         floor: float | None = None) -> list[Candidates]:
        """Per frame, the boxes of every pass before merging, each filtered by its pass's threshold and size range.

        With `floor`, every box scoring at least `floor` comes back unfiltered (pass_index says
        which pass found it), so a threshold sweep runs the network once (scripts/tune_thresholds.py).
        """
        watch = watch or Stopwatch()
        if len(images) != 1 and len({image.shape for image in images}) != 1:
            raise ValueError(f"detect_batch needs frames of one size, got {sorted({i.shape for i in images})}")
        h, w = images[0].shape[:2]
        per_image: list[list[Candidates]] = [[] for _ in images]
        for call in self._calls(self._window_groups(h, w), len(images)):
            thresholds, crops = [], []
            for i, win in call:
                thresholds.append(self.passes[win.pass_index].score_threshold if floor is None else floor)
                crops.append(images[i][win.y0:win.y1, win.x0:win.x1])
            raw, input_hw = self.backend.run(crops, call[0][1].sx, call[0][1].sy, min(thresholds), watch)
            t = time.perf_counter()
            for k, ((i, win), thr) in enumerate(zip(call, thresholds)):
                xyxy, score, quad = self.backend.decode(raw, input_hw, thr, k, len(crops))
                per_image[i].append(to_frame(win, input_hw, xyxy, score, quad, (h, w)))
            watch.lap("decode", t)
        out = []
        for found in per_image:
            merged = Candidates.concat(found)
            out.append(merged if floor is not None else select(merged, self.passes))
        return out

    def _calls(self, groups: tuple[list[Window], ...], frames: int) -> list[list[tuple[int, Window]]]:
        """(frame, window) pairs per inference call: one input shape a call, at most max_batch crops and
        max_input_px pixels (window_px) in all, so a batch of many big tiles is as bounded as one input."""
        out = []
        for group in groups:
            cw, ch = group[0].crop_wh
            fits = max(1, min(self.max_batch, self.max_input_px // window_px(cw, ch, group[0].sx, group[0].sy)))
            if fits >= frames:  # whole chunks of windows, each for every frame of the batch
                per_call = fits // frames
                for start in range(0, len(group), per_call):
                    chunk = group[start:start + per_call]
                    out.append([(i, win) for i in range(frames) for win in chunk])
            else:  # not even one window of every frame fits: the frames are split too
                for win in group:
                    for start in range(0, frames, fits):
                        out.append([(i, win) for i in range(start, min(start + fits, frames))])
        return out

    def _window_groups(self, h: int, w: int) -> tuple[list[Window], ...]:
        """The windows of a frame of this size, grouped by input shape (one inference call each); cached per size."""
        groups = self._groups.get((h, w))
        if groups is None:
            by_shape: dict[tuple, list[Window]] = {}
            for win in plan(h, w, self.passes, self.max_input_px):
                by_shape.setdefault(win.group, []).append(win)
            groups = self._groups.setdefault((h, w), tuple(by_shape.values()))
        return groups


def distinct_models(detectors) -> tuple[tuple[str, str], ...]:
    """The members' (name, sha256) in member order, each once: a model two stages run is one model."""
    return tuple(dict.fromkeys(m for d in detectors for m in d.models))


def to_detections(c: Candidates, class_id: int, nms_iou: float) -> Detections:
    """The merged candidates of one frame as validated Detections: a decoder's output is checked here, once."""
    kept = c.take(merge(c, nms_iou))
    return Detections(kept.xyxy, kept.score, np.full(len(kept), class_id, np.int32), kept.quad)


class EnsembleDetector(_ClassDetector):
    """Several models for one class (e.g. YuNet + CenterFace): each filtered by its own passes, merged together."""

    def __init__(self, members: list[OnnxDetector], *, nms_iou: float = 0.45) -> None:
        if not members or len({m.class_id for m in members}) != 1:
            raise ValueError("an ensemble needs at least one member, all of one class")
        self.members, self.nms_iou = list(members), nms_iou
        self.class_id = members[0].class_id
        self.models = distinct_models(self.members)
        self.providers = tuple(p for d in self.members for p in d.providers)
        self.passes = tuple(p for d in self.members for p in d.passes)

    def candidates_batch(self, images: list[np.ndarray], watch: Stopwatch | None = None,
                         floor: float | None = None) -> list[Candidates]:
        watch = watch or Stopwatch()
        per_member = []
        offset = 0
        for d in self.members:
            found = d.candidates_batch(images, watch, floor)
            for c in found:
                c.pass_index = c.pass_index + offset  # indices into self.passes
            per_member.append(found)
            offset += len(d.passes)
        return [Candidates.concat(list(row)) for row in zip(*per_member)]


class MultiDetector:
    """Several detectors (faces, plates...) on the same frames, run concurrently; their results concatenated.

    Every member reads the same decoded frames (no copy). onnxruntime releases the GIL during
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
        self.models = distinct_models(self.detectors)
        self.providers = tuple(sorted({p for d in self.detectors for p in d.providers}))
        self.timeout_s = timeout_s
        # the first member runs on the caller's thread; the pool only takes the others
        self._pool = (ThreadPoolExecutor(max_workers=len(self.detectors) - 1, thread_name_prefix="detect")
                      if concurrent and len(self.detectors) > 1 else None)

    @property
    def concurrent(self) -> bool:
        return self._pool is not None

    def detect(self, image: np.ndarray, watch: Stopwatch | None = None) -> Detections:
        return self.detect_batch([image], watch)[0]

    def detect_batch(self, images: list[np.ndarray], watch: Stopwatch | None = None) -> list[Detections]:
        per_detector = self._each(images, watch or Stopwatch())
        out = []
        for row in zip(*per_detector):
            out.append(Detections.concat(list(row)))
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _each(self, images: list[np.ndarray], watch: Stopwatch) -> list[list[Detections]]:
        """Every member's detect_batch, in member order, all reporting to the one stopwatch; the first error raises."""
        if self._pool is None:
            out = []
            for d in self.detectors:
                out.append(d.detect_batch(images, watch))
            return out
        deadline = time.monotonic() + self.timeout_s
        futures = [self._pool.submit(d.detect_batch, images, watch) for d in self.detectors[1:]]
        try:
            first = self.detectors[0].detect_batch(images, watch)
            rest = [f.result(timeout=max(0.0, deadline - time.monotonic())) for f in futures]
        except FutureTimeout:
            raise TimeoutError(f"a detector took longer than {self.timeout_s:g} s") from None
        finally:
            for f in futures:
                f.cancel()
        return [first, *rest]
