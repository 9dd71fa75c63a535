"""Provider chains and the TensorRT options: fallbacks tried in order and logged, flags passed through."""
from __future__ import annotations

import logging

import pytest

from conftest import MODELS, need
from edge.detect.backends.options import SessionOptions
from edge.detect.backends.session import (ModelLoadError, OnnxModel, ProviderUnavailable, create_session,
                                          provider_chains, trt_options)

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
YUNET_SHA = "104ee26c71d5c270ce79a6b3dced91c91013260d29a6bf18f9296c5b8c4c2b12"


def names(chain):
    return [e[0] if isinstance(e, tuple) else e for e in chain]


@pytest.mark.parametrize("provider, require, expected", [
    ("tensorrt", False, [[TRT, CUDA, CPU], [CUDA, CPU], [CPU]]),
    ("cuda", False, [[CUDA, CPU], [CPU]]),
    ("cpu", False, [[CPU]]),
    ("tensorrt", True, [[TRT, CUDA, CPU]]),  # required: no second try on a lesser provider
])
def test_provider_chains(provider, require, expected):
    chains = provider_chains(SessionOptions(provider=provider, require_provider=require))
    assert [names(c) for c in chains] == expected


@pytest.mark.parametrize("search, expected", [("exhaustive", "EXHAUSTIVE"), ("heuristic", "HEURISTIC")])
def test_cuda_options_carry_device_and_conv_search(search, expected):
    (cuda, _) = provider_chains(SessionOptions(provider="cuda", device_id=1, cudnn_conv_algo_search=search))[0]
    assert cuda == (CUDA, {"device_id": 1, "cudnn_conv_algo_search": expected})


def test_config_conv_search_is_checked_and_passed():
    from edge.config import Config, ConfigError, override

    runtime = override(Config(), {"runtime.cudnn_conv_algo_search": "heuristic"}).runtime
    assert isinstance(runtime, SessionOptions) and runtime.cudnn_conv_algo_search == "heuristic"
    with pytest.raises(ConfigError, match="cudnn_conv_algo_search"):
        override(Config(), {"runtime.cudnn_conv_algo_search": "fastest"})


class FakeSession:
    def __init__(self, providers):
        self.providers = providers


def factory_failing_on(*failing):
    calls = []

    def factory(data, so, providers):
        calls.append(names(providers))
        if names(providers)[0] in failing:
            raise RuntimeError(f"{names(providers)[0]} cannot build this graph")
        return FakeSession(providers)

    return factory, calls


def test_create_session_falls_back_in_order_and_logs(caplog):
    factory, calls = factory_failing_on(TRT, CUDA)
    with caplog.at_level(logging.WARNING, logger="edge.detect.backends.session"):
        session = create_session(b"", None, SessionOptions(provider="tensorrt"), "m", factory)
    assert calls == [[TRT, CUDA, CPU], [CUDA, CPU], [CPU]]
    assert names(session.providers) == [CPU]
    messages = [r.message for r in caplog.records]
    assert any(TRT in m and "trying the next provider" in m for m in messages)
    assert any(CUDA in m and "trying the next provider" in m for m in messages)


def test_create_session_all_failing_is_a_load_error():
    factory, calls = factory_failing_on(TRT, CUDA, CPU)
    with pytest.raises(ModelLoadError, match="any provider"):
        create_session(b"", None, SessionOptions(provider="tensorrt"), "m", factory)
    assert len(calls) == 3


@pytest.mark.parametrize("opts, expected", [
    (SessionOptions(provider="tensorrt"), {"trt_fp16_enable": True, "trt_int8_enable": False}),
    (SessionOptions(provider="tensorrt", trt_int8=True, trt_fp16=False),
     {"trt_int8_enable": True, "trt_fp16_enable": False, "trt_int8_use_native_calibration_table": False}),
    (SessionOptions(provider="tensorrt", trt_cache_dir="/var/cache/trt"),
     {"trt_engine_cache_enable": True, "trt_engine_cache_path": "/var/cache/trt", "trt_timing_cache_enable": True}),
    (SessionOptions(provider="tensorrt", trt_workspace_mb=2048), {"trt_max_workspace_size": 2048 << 20}),
    (SessionOptions(provider="tensorrt", trt_profile_min="frame:1x720x1280x3", trt_profile_opt="frame:1x1080x1920x3",
                    trt_profile_max="frame:8x1080x1920x3"),
     {"trt_profile_opt_shapes": "frame:1x1080x1920x3", "trt_profile_max_shapes": "frame:8x1080x1920x3"}),
])
def test_trt_options(opts, expected):
    got = trt_options(opts)
    assert {k: got[k] for k in expected} == expected
    if not opts.trt_cache_dir:
        assert "trt_engine_cache_enable" not in got


def test_trt_profile_needs_all_three():
    with pytest.raises(ValueError, match="trt_profile_min, trt_profile_opt and trt_profile_max together"):
        SessionOptions(provider="tensorrt", trt_profile_min="frame:1x720x1280x3")


def test_tensorrt_without_gpu_lands_on_cpu_and_says_so(caplog):
    import onnxruntime as ort

    if TRT not in ort.get_available_providers():
        pytest.skip("onnxruntime build without TensorRT")
    path = need(MODELS / "yunet_n_dynamic.onnx")
    with caplog.at_level(logging.WARNING, logger="edge.detect.backends.session"):
        model = OnnxModel(path, name="yunet_n", sha256=YUNET_SHA, options=SessionOptions(provider="tensorrt"))
    if model.provider != CPU:
        pytest.skip("a GPU is present")
    assert "falling back" in caplog.text
    with pytest.raises(ProviderUnavailable):
        OnnxModel(path, name="yunet_n", sha256=YUNET_SHA,
                  options=SessionOptions(provider="tensorrt", require_provider=True))


@pytest.mark.parametrize("spin, entry", [(False, "0"), (True, "1")])
def test_spinning_reaches_the_session(spin, entry):
    # several sessions share the cores one after another: idle pools must not spin by default
    model = OnnxModel(need(MODELS / "yunet_n_dynamic.onnx"), name="yunet_n", sha256=YUNET_SHA,
                      options=SessionOptions(spin=spin))
    assert model.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == entry


def test_config_spin_defaults_off_and_is_a_bool():
    from edge.config import Config, ConfigError, override

    assert Config().runtime.spin is False
    assert override(Config(), {"runtime.spin": True}).runtime.spin is True
    with pytest.raises(ConfigError, match="spin"):
        override(Config(), {"runtime.spin": 2})
