"""Graph preprocessing (and the graph filter): uint8 frames in, raw model outputs out, sessions run with IO binding.

`GraphBackend` is the GPU path of a detector model. Its sessions take the frame itself (uint8
[N,H,W,3] BGR, see `edge.detect.graph.prepend_preprocess`), one session per scale because the
scale is baked into the graph. On the CUDA / TensorRT providers the frame is uploaded once as
uint8 into a device buffer that is reused while the frame size stays the same, and the outputs
are bound on the device and copied back in one step; on the CPU provider the numpy frame is
bound as is. Either way no float32 blob is ever made on the host.
"""
from __future__ import annotations

import logging
import threading
import time
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Callable

import cv2
import numpy as np
import onnxruntime as ort

from edge.detect.backends.options import SessionOptions
from edge.detect.backends.session import OnnxModel
from edge.detect.boxes import fit
from edge.detect.filters import FILTER_INPUT, FRAME_INPUT, FilterGroup
from edge.timing import Stopwatch

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


class BoundRunner:
    """One session with a uint8 frame input, run through IO binding on whichever device it landed on."""

    def __init__(self, model: OnnxModel, device_id: int = 0) -> None:
        self.model = model
        self.session = model.session
        self.on_gpu = model.provider in GPU_PROVIDERS
        self.device_id = device_id
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.filtered = FILTER_INPUT in {i.name for i in self.session.get_inputs()}
        # One device input buffer per calling thread, reused while the batch shape is unchanged. Never
        # one per runner: camera loops call the same detector at once, and a buffer refilled by one
        # thread while another thread's run still reads it would detect one camera's faces in another
        # camera's frame, leaving the first frame's faces unmasked.
        self._local = threading.local()
        self._binding_ok = True

    def run(self, frames: np.ndarray, watch: Stopwatch, floor: float = 0.0) -> list[np.ndarray]:
        """Raw outputs in `output_names` order; a filtered model returns only rows scoring at least `floor`."""
        extra = {FILTER_INPUT: np.array([floor], np.float32)} if self.filtered else {}
        if self._binding_ok:
            try:
                return self._run_bound(frames, extra, watch)
            except Exception as e:  # IO binding is an optimisation: a failure of it must not cost the frame
                self._binding_ok = False
                log.warning("model %s: IO binding failed (%s); using plain session.run from now on",
                            self.model.name, e)
        t = time.perf_counter()
        outputs = self.session.run(self.output_names, {FRAME_INPUT: frames, **extra})
        watch.lap("inference", t)
        return outputs

    def _run_bound(self, frames: np.ndarray, extra: dict[str, np.ndarray], watch: Stopwatch) -> list[np.ndarray]:
        binding = self.session.io_binding()
        for name, value in extra.items():  # a few bytes: onnxruntime copies them where the graph needs them
            binding.bind_cpu_input(name, value)
        t = time.perf_counter()
        if self.on_gpu:
            binding.bind_ortvalue_input(FRAME_INPUT, self._upload(frames))
            t = watch.lap("upload", t)
            for name in self.output_names:
                binding.bind_output(name, "cuda", self.device_id)
        else:
            binding.bind_cpu_input(FRAME_INPUT, frames)
            for name in self.output_names:
                binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        t = watch.lap("inference", t)
        outputs = binding.copy_outputs_to_cpu()
        if self.on_gpu:
            watch.lap("download", t)
        return outputs

    def _upload(self, frames: np.ndarray) -> ort.OrtValue:
        dev = getattr(self._local, "device_input", None)
        if dev is None or tuple(dev.shape()) != frames.shape:
            dev = ort.OrtValue.ortvalue_from_numpy(frames, "cuda", self.device_id)
            self._local.device_input = dev
        else:
            dev.update_inplace(frames)
        return dev


QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def is_qdq(data: bytes) -> bool:
    """A statically quantized model (calibration/): its precision is int8, fp16 conversion would break its scales."""
    import onnx

    return any(n.op_type in QDQ_OPS for n in onnx.load_from_string(data).graph.node)


def graph_rewrite(data: bytes, *, sha256: str, channels: str, multiple: int, scale: float, fp16: bool,
                  cache_dir: str | Path, rewrite: Callable[[bytes], bytes] | None,
                  filter_groups: tuple[FilterGroup, ...] = (), pad_value: float = 0.0) -> bytes:
    """Source model bytes (already verified) -> the frame-input model for one scale (score-filtered if groups)."""
    # here, not at the top: onnx takes most of a second to import, and only a rewrite needs it
    from edge.detect.graph import append_filter, fp16_cached, prepend_preprocess

    if rewrite is not None:
        data = rewrite(data)
    if fp16 and is_qdq(data):
        log.info("model %s… is QDQ int8: no fp16 copy", sha256[:12])
        fp16 = False
    if fp16:
        data = fp16_cached(data, sha256, cache_dir)
    model = prepend_preprocess(data, channels=channels, scale=scale, multiple=multiple, pad_value=pad_value)
    return (append_filter(model, filter_groups) if filter_groups else model).SerializeToString()


class GraphBackend:
    """A detector model with its preprocessing in the graph, one bound session per scale.

    The frames go in as uint8 (no float32 blob on the host); the graph scales both axes alike, so a
    stretched pass (sx != sy) is resized here with numpy and runs the graph at 1.0. The outputs are
    decoded on the host with the family's `candidates`.
    """

    filter_groups: tuple[FilterGroup, ...] = ()

    def __init__(self, path: str | Path, *, name: str, sha256: str, family: ModuleType, scales: tuple[float, ...],
                 cache_dir: str | Path, options: SessionOptions = SessionOptions(), fp16: bool = False,
                 rewrite: Callable[[bytes], bytes] | None = None) -> None:
        self.name, self.sha256, self.path, self.family = name, sha256, Path(path), family
        self.fp16 = fp16 and options.provider != "cpu"
        if fp16 and not self.fp16:
            log.warning("model %s: fp16 is for the CUDA / TensorRT providers; running fp32 on the CPU", name)

        def load(scale: float, fp16: bool) -> BoundRunner:
            build = partial(graph_rewrite, sha256=sha256, channels=family.CHANNELS, multiple=family.MULTIPLE,
                            scale=scale, fp16=fp16, cache_dir=cache_dir, rewrite=rewrite,
                            filter_groups=self.filter_groups, pad_value=family.PAD_VALUE)
            model = OnnxModel(path, name=name, sha256=sha256, options=options, rewrite=build)
            return BoundRunner(model, options.device_id)

        first = load(scales[0], self.fp16)
        if self.fp16 and not first.on_gpu:
            # the GPU provider fell back to the CPU: fp16 there is slower than fp32, not faster
            log.warning("model %s: no GPU provider in the end; dropping fp16", name)
            self.fp16 = False
            first = load(scales[0], False)
        self.runners = {scales[0]: first}
        for scale in scales[1:]:
            self.runners[scale] = load(scale, self.fp16)
        self.provider = first.model.provider
        self.output_names = first.output_names

    def check(self, passes: tuple) -> None:
        missing = set(graph_scales(passes)) - set(self.runners)
        if missing:
            raise ValueError(f"model {self.name}: no graph-preprocessed session for scale(s) {sorted(missing)}")

    def run(self, crops: list[np.ndarray], sx: float, sy: float, floor: float, watch: Stopwatch
            ) -> tuple[list[np.ndarray], tuple[int, int]]:
        t = time.perf_counter()
        scale = sx
        if sx != sy:
            (rh, rw) = fit(*crops[0].shape[:2], sx, sy, 1).resized_hw
            crops = [cv2.resize(c, (rw, rh), interpolation=cv2.INTER_LINEAR) for c in crops]
            scale = 1.0
        if len(crops) == 1:
            frames = np.ascontiguousarray(crops[0])[None]
        else:
            frames = np.stack(crops)  # one host copy; on the GPU one upload for the whole batch
        watch.lap("preprocess", t)
        outputs = self.runners[scale].run(frames, watch, floor)
        return outputs, fit(*frames.shape[1:3], scale, scale, self.family.MULTIPLE).input_hw

    def decode(self, raw: list[np.ndarray], input_hw: tuple[int, int], score_threshold: float, index: int,
               batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        return self.family.candidates(raw, input_hw, score_threshold, batch_index=index)


class FilterBackend(GraphBackend):
    """GraphBackend whose graph also applies the score threshold (the family's FILTER_GROUPS, append_filter).

    Only rows scoring at least the run's floor leave the graph; they are decoded with the family's
    `filtered_candidates`, which drops the rows of other crops and under each crop's own threshold.
    """

    def __init__(self, path: str | Path, *, family: ModuleType, **kw) -> None:
        self.filter_groups = family.FILTER_GROUPS
        super().__init__(path, family=family, **kw)

    def run(self, crops: list[np.ndarray], sx: float, sy: float, floor: float, watch: Stopwatch
            ) -> tuple[dict[str, np.ndarray], tuple[int, int]]:
        outputs, input_hw = super().run(crops, sx, sy, floor, watch)
        return dict(zip(self.output_names, outputs)), input_hw

    def decode(self, raw: dict[str, np.ndarray], input_hw: tuple[int, int], score_threshold: float, index: int,
               batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        return self.family.filtered_candidates(raw, input_hw, score_threshold, index, batch)


def graph_scales(passes: tuple) -> tuple[float, ...]:
    """Scales a graph-preprocessed model needs a session for (a stretched pass runs at 1.0 after a numpy resize)."""
    return tuple(sorted({p.sx if p.sx == p.sy else 1.0 for p in passes}))
