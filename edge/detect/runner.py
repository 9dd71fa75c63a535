"""Frames in, raw model outputs out: graph-preprocessed sessions run with IO binding.

`FrameModel` is the GPU path of a detector model. Its sessions take the frame itself (uint8
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
from typing import Callable

import numpy as np
import onnxruntime as ort

from edge.detect.boxes import padded_size
from edge.detect.graph import FILTER_INPUT, FRAME_INPUT, FilterGroup, append_filter, fp16_cached, prepend_preprocess
from edge.detect.backends.session import OnnxModel, SessionOptions

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def _add(timings: dict[str, float] | None, key: str, t0: float) -> float:
    t1 = time.perf_counter()
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + (t1 - t0) * 1e3
    return t1


def scaled_geometry(height: int, width: int, scale: float, multiple: int) -> tuple[tuple[int, int], float, float]:
    """Padded network input (H, W) and the x, y factors back to frame pixels, exactly as the graph computes them."""
    sh, sw = max(1, round(height * scale)), max(1, round(width * scale))
    return padded_size(sh, sw, multiple), sw / width, sh / height


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

    def run(self, frames: np.ndarray, timings: dict[str, float] | None = None, floor: float = 0.0
            ) -> list[np.ndarray]:
        """Raw outputs in `output_names` order; a filtered model returns only rows scoring at least `floor`."""
        extra = {FILTER_INPUT: np.array([floor], np.float32)} if self.filtered else {}
        if self._binding_ok:
            try:
                return self._run_bound(frames, extra, timings)
            except Exception as e:  # IO binding is an optimisation: a failure of it must not cost the frame
                self._binding_ok = False
                log.warning("model %s: IO binding failed (%s); using plain session.run from now on",
                            self.model.name, e)
        t = time.perf_counter()
        outputs = self.session.run(self.output_names, {FRAME_INPUT: frames, **extra})
        _add(timings, "inference", t)
        return outputs

    def _run_bound(self, frames: np.ndarray, extra: dict[str, np.ndarray], timings: dict[str, float] | None
                   ) -> list[np.ndarray]:
        binding = self.session.io_binding()
        for name, value in extra.items():  # a few bytes: onnxruntime copies them where the graph needs them
            binding.bind_cpu_input(name, value)
        t = time.perf_counter()
        if self.on_gpu:
            binding.bind_ortvalue_input(FRAME_INPUT, self._upload(frames))
            t = _add(timings, "upload", t)
            for name in self.output_names:
                binding.bind_output(name, "cuda", self.device_id)
        else:
            binding.bind_cpu_input(FRAME_INPUT, frames)
            for name in self.output_names:
                binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        t = _add(timings, "inference", t)
        outputs = binding.copy_outputs_to_cpu()
        if self.on_gpu:
            _add(timings, "download", t)
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
                  cache_dir: str | Path | None, rewrite: Callable[[bytes], bytes] | None,
                  filter_groups: tuple[FilterGroup, ...] = ()) -> bytes:
    """Source model bytes (already verified) -> the frame-input model for one scale (score-filtered if groups)."""
    if rewrite is not None:
        data = rewrite(data)
    if fp16 and is_qdq(data):
        log.info("model %s… is QDQ int8: no fp16 copy", sha256[:12])
        fp16 = False
    if fp16:
        if cache_dir is None:
            from edge.models.registry import default_cache_dir

            cache_dir = default_cache_dir()
        data = fp16_cached(data, sha256, cache_dir)
    model = prepend_preprocess(data, channels=channels, scale=scale, multiple=multiple)
    return (append_filter(model, filter_groups) if filter_groups else model).SerializeToString()


class FrameModel:
    """A detector model with its preprocessing in the graph, one bound session per scale.

    Quacks like OnnxModel where the rest of the code looks (name, sha256, provider, path), and adds
    `run_frames`, which OnnxDetector uses instead of its numpy preprocessing. With `filter_groups`
    (the family's FILTER_GROUPS) the score threshold runs in the graph too (`filtered` is then true,
    and the outputs are the family's `filtered_candidates` input, in `output_names` order).
    """

    def __init__(self, path: str | Path, *, name: str, sha256: str, channels: str, multiple: int,
                 scales: tuple[float, ...], options: SessionOptions = SessionOptions(), fp16: bool = False,
                 cache_dir: str | Path | None = None, rewrite: Callable[[bytes], bytes] | None = None,
                 filter_groups: tuple[FilterGroup, ...] = ()) -> None:
        self.name, self.sha256, self.path = name, sha256, Path(path)
        self.multiple = multiple
        self.fp16 = fp16 and options.provider != "cpu"
        if fp16 and not self.fp16:
            log.warning("model %s: fp16 is for the CUDA / TensorRT providers; running fp32 on the CPU", name)

        def load(scale: float, fp16: bool) -> BoundRunner:
            build = partial(graph_rewrite, sha256=sha256, channels=channels, multiple=multiple, scale=scale,
                            fp16=fp16, cache_dir=cache_dir, rewrite=rewrite, filter_groups=filter_groups)
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
        self.models = ((name, sha256),)
        self.filtered = first.filtered
        self.output_names = first.output_names

    def run_frames(self, images: list[np.ndarray], scale: float, timings: dict[str, float] | None = None,
                   floor: float = 0.0) -> tuple[list[np.ndarray], tuple[int, int], float, float]:
        """Raw outputs for same-size frames at one configured scale, the padded input (H, W), and fx, fy.

        `floor`: a filtered model's score threshold (rows under it never leave the graph).
        """
        t = time.perf_counter()
        if len(images) == 1:
            frames = np.ascontiguousarray(images[0])[None]
        else:
            frames = np.stack(images)  # one host copy; on the GPU one upload for the whole batch
        _add(timings, "preprocess", t)
        outputs = self.runners[scale].run(frames, timings, floor)
        input_hw, fx, fy = scaled_geometry(images[0].shape[0], images[0].shape[1], scale, self.multiple)
        return outputs, input_hw, fx, fy


def load_for_runtime(path: str | Path, *, name: str, sha256: str, family: str, options: SessionOptions,
                     graph_preprocess: bool, fp16: bool, scales: tuple[float, ...],
                     cache_dir: str | Path | None = None,
                     rewrite: Callable[[bytes], bytes] | None = None, graph_filter: bool = False
                     ) -> OnnxModel | FrameModel:
    """The model object the runtime section asks for: FrameModel (graph preprocessing), else OnnxModel.

    fp16 without graph preprocessing converts the model only (float32 blob in, float32 out).
    `graph_filter` (with graph preprocessing, for families that have FILTER_GROUPS) also moves the
    score threshold into the graph.
    """
    from edge.detect.detector import family_module  # the detector module imports this one

    fam = family_module(family)
    if graph_preprocess:
        groups = getattr(fam, "FILTER_GROUPS", ()) if graph_filter else ()
        if graph_filter and not groups:
            log.info("model %s: family %s has no in-graph score filter; its outputs are decoded on the host",
                     name, family)
        return FrameModel(path, name=name, sha256=sha256, channels=fam.CHANNELS, multiple=fam.MULTIPLE,
                          scales=scales, options=options, fp16=fp16, cache_dir=cache_dir, rewrite=rewrite,
                          filter_groups=groups)
    if fp16 and options.provider != "cpu":
        if cache_dir is None:
            from edge.models.registry import default_cache_dir

            cache_dir = default_cache_dir()

        def to_half(data: bytes) -> bytes:
            data = rewrite(data) if rewrite else data
            return data if is_qdq(data) else fp16_cached(data, sha256, cache_dir)

        model = OnnxModel(path, name=name, sha256=sha256, options=options, rewrite=to_half)
        if model.provider in GPU_PROVIDERS:
            return model
        log.warning("model %s: no GPU provider in the end; dropping fp16", name)
    return OnnxModel(path, name=name, sha256=sha256, options=options, rewrite=rewrite)
