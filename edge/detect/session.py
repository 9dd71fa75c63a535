"""onnxruntime sessions: explicit providers, checksum before load, and the provider actually used."""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


class ModelLoadError(RuntimeError):
    """The model could not be verified or loaded; the process must not run without it."""


class ProviderUnavailable(ModelLoadError):
    """A GPU provider was required but the session fell back to the CPU."""


@dataclass(frozen=True)
class SessionOptions:
    provider: str = "cpu"  # cpu | cuda | tensorrt
    require_provider: bool = False  # refuse to run when the asked-for provider is not the one used
    intra_op_threads: int = 0  # 0 = onnxruntime's choice
    device_id: int = 0
    trt_cache_dir: str = ""
    trt_fp16: bool = True


def _provider_list(opts: SessionOptions) -> list:
    if opts.provider not in PROVIDERS:
        raise ModelLoadError(f"unknown provider {opts.provider!r}; choose one of {sorted(PROVIDERS)}")
    out: list = []
    for name in PROVIDERS[opts.provider]:
        if name == "CUDAExecutionProvider":
            out.append((name, {"device_id": opts.device_id}))
        elif name == "TensorrtExecutionProvider":
            trt = {"device_id": opts.device_id, "trt_fp16_enable": opts.trt_fp16}
            if opts.trt_cache_dir:
                trt.update(trt_engine_cache_enable=True, trt_engine_cache_path=opts.trt_cache_dir)
            out.append((name, trt))
        else:
            out.append(name)
    return out


class OnnxModel:
    """A verified model file loaded into an onnxruntime session.

    The file's sha256 is checked against the card right before loading, so a model swapped on
    disk between resolution and load (or across a restart) is refused, never run.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        name: str,
        sha256: str,
        options: SessionOptions = SessionOptions(),
        rewrite: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.name, self.sha256, self.path = name, sha256, Path(path)
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise ModelLoadError(f"model {name}: cannot read {self.path}: {e.strerror}") from e
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise ModelLoadError(
                f"model {name}: checksum mismatch for {self.path}: expected {sha256}, got {actual}; refusing to load"
            )
        if rewrite is not None:
            data = rewrite(data)
        so = ort.SessionOptions()
        so.log_severity_level = 3  # onnxruntime's per-initializer warnings would drown real problems
        if options.intra_op_threads:
            so.intra_op_num_threads = options.intra_op_threads
        try:
            self.session = ort.InferenceSession(data, so, providers=_provider_list(options))
        except Exception as e:  # onnxruntime raises its own exception types for corrupt graphs
            raise ModelLoadError(f"model {name}: onnxruntime could not load {self.path}: {e}") from e
        self.provider = self.session.get_providers()[0]
        wanted = PROVIDERS[options.provider][0]
        if self.provider != wanted:
            msg = f"model {name}: asked for {wanted}, onnxruntime runs it on {self.provider}"
            if options.require_provider:
                raise ProviderUnavailable(msg)
            log.warning("%s (falling back)", msg)
        log.info("model %s sha256=%s… provider=%s", name, sha256[:12], self.provider)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, blob: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.output_names, {self.input_names[0]: blob})


def set_input_dims(model_bytes: bytes, dims: list[int | str]) -> bytes:
    """Rewrite the first graph input's dims (and drop stale shape info) so onnxruntime accepts other sizes."""
    import onnx

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    real_inputs = [i for i in graph.input if i.name not in initializers]
    # CenterFace lists its weights as graph inputs; they are constants, so drop them from the inputs.
    del graph.input[:]
    graph.input.extend(real_inputs)
    shape = graph.input[0].type.tensor_type.shape
    for d, value in zip(shape.dim, dims):
        d.Clear()
        if isinstance(value, int):
            d.dim_value = value
        else:
            d.dim_param = value
    del graph.value_info[:]
    for out in graph.output:
        out.type.tensor_type.ClearField("shape")
    return model.SerializeToString()
