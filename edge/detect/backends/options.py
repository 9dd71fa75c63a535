"""How onnxruntime sessions are made: provider, threads, device, TensorRT settings.

Apart from edge.detect.backends.session so that reading a config never imports onnxruntime (its
telemetry is switched off before the first import, edge.runtime.hardening).
"""
from __future__ import annotations

from dataclasses import dataclass

from edge.checks import one_of, within

# cuDNN's convolution algorithm search per input shape (the CUDA provider's cudnn_conv_algo_search)
CUDNN_ALGO_SEARCH = ("exhaustive", "heuristic", "default")
PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


@dataclass(frozen=True)
class SessionOptions:
    provider: str = "cpu"  # cpu | cuda | tensorrt
    require_provider: bool = False  # refuse to run when the asked-for provider is not the one used
    threads: int = 0  # onnxruntime intra-op threads; 0 = its choice
    # onnxruntime's intra-op threads spin-wait after each run by default. The pipeline runs several
    # sessions one after another on the same cores (faces, plates, context, vehicle crops), and the idle
    # pools' spinning takes the cores from the session that works: 2 cores, 1080p defaults, 349 ms p50
    # spinning vs 280 ms not (scripts/profile_latency.py). Worth it only with one session per core set.
    spin: bool = False
    device_id: int = 0
    # cuDNN convolution algorithm choice per input shape: "exhaustive" times every algorithm once
    # per shape (onnxruntime's default; the warm-up pays it), "heuristic" and "default" skip that.
    cudnn_conv_algo_search: str = "exhaustive"
    # TensorRT: without an engine cache every start rebuilds the engines (tens of seconds per shape)
    trt_cache_dir: str = ""
    trt_fp16: bool = True
    trt_int8: bool = False  # for QDQ models (calibration/): TensorRT takes the scales from the graph
    trt_workspace_mb: int = 0  # 0 = TensorRT's default
    # Optimisation profile for the dynamic image input, "name:dims" as TensorRT wants it, e.g.
    # "frame:1x1080x1920x3"; without one TensorRT rebuilds the engine for every new input shape.
    trt_profile_min: str = ""
    trt_profile_opt: str = ""
    trt_profile_max: str = ""

    def __post_init__(self) -> None:
        one_of(self, "provider", tuple(PROVIDERS))
        one_of(self, "cudnn_conv_algo_search", CUDNN_ALGO_SEARCH)
        within(self, "threads", 0, 64)  # each session starts this many threads: 3000 takes minutes to start
        within(self, "device_id", 0, 63)
        within(self, "trt_workspace_mb", 0, 262144)
        profiles = (self.trt_profile_min, self.trt_profile_opt, self.trt_profile_max)
        if any(profiles) and not all(profiles):
            raise ValueError("trt_profile_min: give trt_profile_min, trt_profile_opt and trt_profile_max together "
                             "(or none)")
