"""onnxruntime sessions: explicit providers, checksum before load, and the provider actually used."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort

from edge.detect.backends.options import PROVIDERS, SessionOptions

log = logging.getLogger(__name__)

class ModelLoadError(RuntimeError):
    """The model could not be verified or loaded; the process must not run without it."""


class ProviderUnavailable(ModelLoadError):
    """A GPU provider was required but the session fell back to the CPU."""


def trt_options(opts: SessionOptions) -> dict:
    trt: dict = {"device_id": opts.device_id, "trt_fp16_enable": opts.trt_fp16, "trt_int8_enable": opts.trt_int8}
    if opts.trt_int8:
        # QDQ models carry their own scales; a native calibration table would be a second source of truth
        trt["trt_int8_use_native_calibration_table"] = False
    if opts.trt_cache_dir:
        trt.update(trt_engine_cache_enable=True, trt_engine_cache_path=opts.trt_cache_dir,
                   trt_timing_cache_enable=True, trt_timing_cache_path=opts.trt_cache_dir)
    if opts.trt_workspace_mb:
        trt["trt_max_workspace_size"] = opts.trt_workspace_mb << 20
    profiles = (opts.trt_profile_min, opts.trt_profile_opt, opts.trt_profile_max)
    if any(profiles):  # all three: SessionOptions refuses a partial profile
        trt.update(trt_profile_min_shapes=profiles[0], trt_profile_opt_shapes=profiles[1],
                   trt_profile_max_shapes=profiles[2])
    return trt


def _provider_entry(name: str, opts: SessionOptions):
    if name == "CUDAExecutionProvider":
        return (name, {"device_id": opts.device_id, "cudnn_conv_algo_search": opts.cudnn_conv_algo_search.upper()})
    if name == "TensorrtExecutionProvider":
        return (name, trt_options(opts))
    return name


def _provider_list(opts: SessionOptions) -> list:
    if opts.provider not in PROVIDERS:
        raise ModelLoadError(f"unknown provider {opts.provider!r}; choose one of {sorted(PROVIDERS)}")
    return [_provider_entry(name, opts) for name in PROVIDERS[opts.provider]]


def provider_chains(opts: SessionOptions) -> list[list]:
    """The provider lists to try in turn: TensorRT -> CUDA -> CPU, each one a step shorter.

    onnxruntime itself falls back silently when a provider's libraries are missing; these chains
    cover the other case, a provider that is present but fails to build the session (a TensorRT
    engine build error, a CUDA out-of-memory), so the next one is tried instead of giving up.
    """
    full = _provider_list(opts)
    if opts.require_provider:
        return [full]
    return [full[i:] for i in range(len(full))]


def _entry_name(entry) -> str:
    return entry[0] if isinstance(entry, tuple) else entry


def create_session(data: bytes, so: ort.SessionOptions, options: SessionOptions, name: str,
                   factory: Callable[..., ort.InferenceSession] = ort.InferenceSession) -> ort.InferenceSession:
    """An InferenceSession on the first provider chain that loads; every fallback is logged."""
    errors = []
    for chain in provider_chains(options):
        try:
            session = factory(data, so, providers=chain)
        except Exception as e:  # onnxruntime raises its own exception types for provider and graph errors
            errors.append(f"{_entry_name(chain[0])}: {e}")
            log.warning("model %s: session on %s failed (%s); trying the next provider", name,
                        _entry_name(chain[0]), str(e).splitlines()[0] if str(e) else type(e).__name__)
            continue
        return session
    raise ModelLoadError(f"model {name}: onnxruntime could not load it on any provider: {'; '.join(errors)}")


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
        if options.threads:
            so.intra_op_num_threads = options.threads
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.spin else "0")
        self.session = create_session(data, so, options, f"{name} ({self.path})")
        self.provider = self.session.get_providers()[0]
        wanted = PROVIDERS[options.provider][0]
        if self.provider != wanted:
            msg = f"model {name}: asked for {wanted}, onnxruntime runs it on {self.provider}"
            if options.require_provider:
                raise ProviderUnavailable(msg)
            log.warning("%s (falling back: %s)", msg, " -> ".join(self.session.get_providers()))
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
