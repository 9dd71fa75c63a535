"""GraphBackend / FilterBackend (graph preprocessing + IO binding), batching and the config switch, on the CPU.

The same classes run on CUDA; those checks are marked gpu and skipped where there is none.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import MODELS, WIDER, host, need, preprocess
from edge.config import Config, override
from edge.detect.backends.frames import FilterBackend, GraphBackend
from edge.detect.backends.host import HostBackend
from edge.detect.backends.loader import load_backend
from edge.detect.backends.options import SessionOptions
from edge.detect.boxes import fit, iou_matrix
from edge.detect.detector import MultiDetector, OnnxDetector
from edge.detect.families import yunet
from edge.timing import Stopwatch

YUNET_SHA = "104ee26c71d5c270ce79a6b3dced91c91013260d29a6bf18f9296c5b8c4c2b12"
IMAGES = ["7_Cheering_Cheering_7_118.jpg", "2_Demonstration_Political_Rally_2_224.jpg", "3_Riot_Riot_3_604.jpg"]


UNUSED_CACHE = Path(tempfile.gettempdir()) / "edge-test-fp16-cache"  # only an fp16 GPU session writes there


def frame_model(scales=(1.0,), filtered: bool = False, cache_dir=UNUSED_CACHE, **kw) -> GraphBackend:
    kind = FilterBackend if filtered else GraphBackend
    return kind(need(MODELS / "yunet_n_dynamic.onnx"), name="yunet_n", sha256=YUNET_SHA, family=yunet,
                scales=scales, cache_dir=cache_dir, **kw)


@pytest.fixture(scope="module")
def graph_model():
    return frame_model(scales=(1.0, 2.0))


@pytest.fixture(scope="module")
def frames():
    # wider_dev images are all 416x416: the same size, as frames of several identical cameras
    return [cv2.imread(str(need(WIDER / "images" / n))) for n in IMAGES]


@pytest.mark.parametrize("h, w, scale, multiple, expected", [
    (720, 1280, 1.0, 32, ((736, 1280), 1.0, 1.0)),
    (1080, 1920, 1.0, 32, ((1088, 1920), 1.0, 1.0)),
    (416, 416, 2.0, 32, ((832, 832), 1.0 * 2, 1.0 * 2)),
    (721, 1001, 1.5, 32, ((1088, 1504), 1502 / 1001, 1082 / 721)),  # 1081.5 rounds half to even
    (1, 1, 0.25, 32, ((32, 32), 1.0, 1.0)),  # never below one pixel
])
def test_fit_geometry(h, w, scale, multiple, expected):
    geometry = fit(h, w, scale, scale, multiple)
    assert (geometry.input_hw, *geometry.factors(h, w)) == expected


def test_frame_model_uses_io_binding_on_cpu(graph_model, yunet_model, frames):
    runner = graph_model.runners[1.0]
    assert graph_model.provider == "CPUExecutionProvider" and not runner.on_gpu
    watch = Stopwatch()
    outputs, input_hw = graph_model.run([frames[0]], 1.0, 1.0, 0.0, watch)
    timings = watch.as_dict()
    expected = yunet_model.run(preprocess(frames[0], 1.0, 32, "BGR")[0])
    assert runner._binding_ok and input_hw == (416, 416)
    for e, g in zip(expected, outputs, strict=True):
        np.testing.assert_allclose(g, e, atol=1e-5)
    assert {"preprocess", "inference"} <= set(timings) and "upload" not in timings


def test_binding_failure_falls_back_to_plain_run(frames, caplog, monkeypatch):
    model = frame_model()
    runner = model.runners[1.0]
    reference = model.run([frames[1]], 1.0, 1.0, 0.0, Stopwatch())[0]

    def broken():
        raise RuntimeError("no binding today")

    monkeypatch.setattr(runner, "session", _SessionWithout(runner.session, broken))
    with caplog.at_level(logging.WARNING, logger="edge.detect.backends.frames"):
        first = model.run([frames[1]], 1.0, 1.0, 0.0, Stopwatch())[0]
        second = model.run([frames[1]], 1.0, 1.0, 0.0, Stopwatch())[0]
    assert not runner._binding_ok
    assert sum("IO binding failed" in r.message for r in caplog.records) == 1  # said once, not per frame
    for r, a, b in zip(reference, first, second):
        np.testing.assert_array_equal(r, a)
        np.testing.assert_array_equal(r, b)


class _SessionWithout:
    def __init__(self, session, io_binding):
        self._session, self.io_binding = session, io_binding

    def __getattr__(self, name):
        return getattr(self._session, name)


def assert_same(a, b, atol=1e-3):
    assert len(a) == len(b)
    np.testing.assert_allclose(a.xyxy, b.xyxy, atol=atol)
    np.testing.assert_allclose(a.score, b.score, atol=1e-4)
    np.testing.assert_array_equal(a.class_id, b.class_id)


@pytest.mark.parametrize("path", ["numpy", "graph"])
def test_detect_batch_equals_per_frame(path, yunet_model, graph_model, frames):
    backend = host(yunet_model, "yunet") if path == "numpy" else graph_model
    det = OnnxDetector(backend, class_id=0, scales=(1.0, 2.0))
    single = [det.detect(f) for f in frames]
    watch = Stopwatch()
    batched = det.detect_batch(frames, watch)
    timings = watch.as_dict()
    assert sum(len(d) for d in single) >= 10
    for s, b in zip(single, batched, strict=True):
        assert_same(s, b)
    assert timings["inference"] > 0


def test_multi_detector_batch(yunet_model, graph_model, frames):
    multi = MultiDetector([OnnxDetector(host(yunet_model, "yunet"), class_id=0),
                           OnnxDetector(graph_model, class_id=1)])
    out = multi.detect_batch(frames[:2])
    for frame, dets in zip(frames[:2], out, strict=True):
        assert_same(dets, multi.detect(frame))
        assert set(dets.class_id.tolist()) == {0, 1}


def test_detect_batch_refuses_mixed_sizes(yunet_model, frames):
    det = OnnxDetector(host(yunet_model, "yunet"), class_id=0)
    with pytest.raises(ValueError, match="one size"):
        det.detect_batch([frames[0], frames[1][:200]])


@pytest.mark.parametrize("graph_filter", [False, True])
def test_graph_path_equals_numpy_path_through_the_detector(yunet_model, frames, graph_filter):
    numpy_det = OnnxDetector(host(yunet_model, "yunet"), class_id=0, scales=(1.0, 2.0), score_threshold=0.3)
    model = frame_model(scales=(1.0, 2.0), filtered=graph_filter)
    assert isinstance(model, FilterBackend) is graph_filter and model.runners[1.0].filtered is graph_filter
    graph_det = OnnxDetector(model, class_id=0, scales=(1.0, 2.0), score_threshold=0.3)
    found = 0
    for f in frames:
        crop = np.ascontiguousarray(f[:397, :405])
        expected, got = numpy_det.detect(crop), graph_det.detect(crop)
        found += len(expected)
        # at 2x the graph's linear resize differs from OpenCV's by rounding: boxes agree to a fraction of a pixel
        assert len(expected) == len(got)
        assert iou_matrix(expected.xyxy, got.xyxy).max(axis=1).min() > 0.9
    assert found >= 10


def test_filtered_batch_of_cameras_equals_per_frame(frames):
    det = OnnxDetector(frame_model(filtered=True), class_id=0, score_threshold=0.3)
    single = [det.detect(f) for f in frames]
    batched = det.detect_batch(frames)
    assert sum(len(d) for d in single) >= 10
    for s, b in zip(single, batched, strict=True):
        assert_same(s, b, atol=1e-4)


def test_config_switch_builds_frame_models(frames):
    from edge.compose import build_detector

    cfg = override(Config(), {"runtime.graph_preprocess": True, "detect.face.scales": [1.0, 2.0],
                              "detect.face.tiles.enabled": False, "detect.plate.enabled": False,
                              "detect.context.enabled": False})
    det = build_detector(cfg)
    model = det.detectors[0].backend
    assert isinstance(model, GraphBackend) and set(model.runners) == {1.0, 2.0}
    assert det.models == (("yunet_n", YUNET_SHA),)
    assert len(det.detect(frames[0])) >= 5


def test_fp16_on_cpu_provider_is_declined(caplog, tmp_path):
    with caplog.at_level(logging.WARNING):
        backend = load_backend(need(MODELS / "yunet_n_dynamic.onnx"), name="yunet_n", sha256=YUNET_SHA,
                               family="yunet", options=SessionOptions(provider="cpu"), graph_preprocess=False,
                               fp16=True, scales=(1.0,), cache_dir=tmp_path)
    assert isinstance(backend, HostBackend) and backend.model.session.get_inputs()[0].type == "tensor(float)"
    graph = frame_model(fp16=True, options=SessionOptions(provider="cpu"))
    assert not graph.fp16
    assert any("fp16 is for the CUDA" in r.message for r in caplog.records)


def test_fp16_asked_on_cuda_falls_back_to_fp32_when_only_the_cpu_runs(tmp_path, caplog):
    """onnxruntime-gpu here lists CUDA but has no GPU: the session lands on the CPU, fp16 is dropped."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("CPU-only onnxruntime build")
    with caplog.at_level(logging.WARNING):
        model = frame_model(fp16=True, options=SessionOptions(provider="cuda"), cache_dir=tmp_path)
    if model.runners[1.0].on_gpu:
        pytest.skip("a GPU is present: covered by the gpu tests")
    assert not model.fp16 and "dropping fp16" in caplog.text


class FakeDeviceValue:
    """Stands in for a CUDA OrtValue (no GPU here): holds a copy, as device memory would."""

    def __init__(self, array):
        self.data = np.array(array)

    @classmethod
    def ortvalue_from_numpy(cls, array, device, device_id):
        return cls(array)

    def shape(self):
        return list(self.data.shape)

    def update_inplace(self, array):
        self.data[...] = array


def test_device_input_buffers_are_per_thread_so_cameras_never_overwrite_each_other(monkeypatch, frames):
    import threading

    from edge.detect.backends import frames as frames_mod

    monkeypatch.setattr(frames_mod.ort, "OrtValue", FakeDeviceValue)
    runner = frame_model().runners[1.0]
    a, b = frames[0][None], frames[1][None]
    mine = runner._upload(a)
    other: dict = {}
    thread = threading.Thread(target=lambda: other.setdefault("dev", runner._upload(b)))
    thread.start()
    thread.join(5)
    # the other camera's upload went to its own buffer: this thread's frame is intact on the "device"
    assert other["dev"] is not mine
    np.testing.assert_array_equal(mine.data, a)
    np.testing.assert_array_equal(other["dev"].data, b)
    assert runner._upload(frames[2][None]) is mine  # same thread, same shape: the buffer is reused


# --- GPU ------------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("fp16", [False, True])
@pytest.mark.parametrize("graph_filter", [False, True])
def test_cuda_frame_model_matches_cpu(frames, tmp_path, fp16, graph_filter):
    gpu = frame_model(scales=(1.0,), options=SessionOptions(provider="cuda", require_provider=True), fp16=fp16,
                      cache_dir=tmp_path, filtered=graph_filter)
    cpu = frame_model(scales=(1.0,))
    assert gpu.runners[1.0].on_gpu and gpu.fp16 == fp16
    watch = Stopwatch()
    a = OnnxDetector(cpu, class_id=0, score_threshold=0.6).detect(frames[0])
    b = OnnxDetector(gpu, class_id=0, score_threshold=0.5).detect(frames[0], watch)
    timings = watch.as_dict()
    assert len(a) >= 5 and (iou_matrix(a.xyxy, b.xyxy).max(axis=1) >= 0.9).all()
    assert "upload" in timings and "download" in timings


@pytest.mark.gpu
def test_cuda_cameras_detecting_at_once_each_get_their_own_frame(frames):
    import threading

    model = frame_model(options=SessionOptions(provider="cuda", require_provider=True), filtered=True)
    det = OnnxDetector(model, class_id=0)
    expected = [det.detect(f) for f in frames]
    errors: list = []

    def camera(i):
        for _ in range(20):
            got = det.detect(frames[i])
            if len(got) != len(expected[i]) or not np.allclose(got.xyxy, expected[i].xyxy, atol=1e-2):
                errors.append(i)

    threads = [threading.Thread(target=camera, args=(i,)) for i in range(len(frames))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors


@pytest.mark.gpu
@pytest.mark.parametrize("graph_filter", [False, True])
def test_cuda_batch_equals_per_frame(frames, graph_filter):
    model = frame_model(options=SessionOptions(provider="cuda", require_provider=True), filtered=graph_filter)
    det = OnnxDetector(model, class_id=0)
    for s, b in zip([det.detect(f) for f in frames], det.detect_batch(frames), strict=True):
        assert_same(s, b, atol=1e-2)
