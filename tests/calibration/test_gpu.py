"""The int8 and GPU paths on CUDA (skipped without a GPU; CI is CPU-only)."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import ROOT

pytestmark = pytest.mark.gpu


def test_gpu_1080p_config_runs_on_cuda_with_graph_preprocessing_and_fp16():
    from edge import config as config_mod
    from edge.compose import build_detector
    from edge.detect.backends.frames import GraphBackend
    from edge.timing import Stopwatch

    cfg = config_mod.override(config_mod.load(ROOT / "configs" / "gpu-1080p.toml"),
                              {"runtime.require_provider": True})
    detector = build_detector(cfg)
    models = [d.backend for d in detector.detectors]
    assert all(isinstance(m, GraphBackend) and m.fp16 and m.provider == "CUDAExecutionProvider" for m in models)
    watch = Stopwatch()
    dets = detector.detect(np.zeros((1080, 1920, 3), np.uint8), watch)
    timings = watch.as_dict()
    assert len(dets) == 0 and timings["upload"] > 0 and timings["inference"] > 0


def test_qdq_int8_model_runs_on_cuda(tmp_path):
    import onnxruntime as ort

    from calibration.quantize import quantize_model
    from calibration.reader import RuntimeCalibrationReader, runtime_detector
    from edge.models import registry
    from edge.config import Config

    detector, card = runtime_detector(Config(), "face")
    frames = [(None, np.random.default_rng(i).integers(0, 255, (96, 160, 3), np.uint8)) for i in range(2)]
    reader = RuntimeCalibrationReader(detector, iter(frames))
    path = quantize_model(registry.resolve(card), tmp_path / "q.onnx", reader, "MinMax")
    sess = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider"])
    assert sess.get_providers()[0] == "CUDAExecutionProvider"
    out = sess.run(None, {"input": np.zeros((1, 3, 96, 160), np.float32)})
    assert len(out) == 12 and all(np.isfinite(o).all() for o in out)

    # the GPU path as a config with fp16 = true builds it: graph preprocessing, IO binding, no fp16 copy
    from edge.detect.backends.frames import GraphBackend
    from edge.detect.backends.options import SessionOptions
    from edge.detect.families import yunet
    from edge.timing import Stopwatch

    sha = registry.sha256_file(path)
    fm = GraphBackend(path, name="q", sha256=sha, family=yunet, scales=(1.0,), fp16=True,
                      options=SessionOptions(provider="cuda", require_provider=True), cache_dir=tmp_path / "cache")
    watch = Stopwatch()
    outputs, input_hw = fm.run([np.zeros((90, 150, 3), np.uint8)], 1.0, 1.0, 0.0, watch)
    timings = watch.as_dict()
    assert input_hw == (96, 160) and len(outputs) == 12 and timings["upload"] > 0
