"""The context stage on real parts: the real YOLOX-Nano on real dashcam frames, its decoder on its real outputs."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import SHARED, need
from edge import compose
from edge.detect.backends.host import host_blob
from edge.detect.families import family_module, yolox
from edge.frame import BadDetections

BERLIN = SHARED / "data" / "eval" / "dashcam" / "berlin_dev" / "images"
BUSY = "a7de82b3-93d5-4641-b412-276d411587e1.jpg"  # 12 annotated faces: pedestrians on a city street
CARS = "1325ef8d-ce4b-46a9-9a90-67d90245fb1c.jpg"  # parked and moving cars


def frame(name: str) -> np.ndarray:
    return cv2.imread(str(need(BERLIN / name)))


@pytest.fixture(scope="module", params=[False, True], ids=["host", "graph"])
def context(request):
    cfg = compose.load_config(None, ["detect.context.enabled=true",
                                     f"runtime.graph_preprocess={str(request.param).lower()}"])
    classes = compose.class_table(cfg)
    return compose.build_context_detector(cfg, cfg.detect.context, classes), classes


@pytest.mark.parametrize("name, cls, at_least", [(BUSY, "person", 5), (CARS, "vehicle", 5)])
def test_real_frame_finds_persons_and_vehicles(context, name, cls, at_least):
    detector, classes = context
    image = frame(name)
    dets = detector.detect(image)
    found = dets.xyxy[dets.class_id == classes.id(cls)]
    assert len(found) >= at_least
    assert classes.is_context(dets.class_id).all()
    h, w = image.shape[:2]
    assert (found[:, 0] >= 0).all() and (found[:, 2] <= w).all() and (found[:, 3] <= h).all()
    tall = found[:, 3] - found[:, 1]
    assert tall.max() > 40  # boxes in frame pixels, not in the 1088x608 letterbox's


def test_host_and_graph_agree(context):
    detector, _ = context
    cfg = compose.load_config(None, ["detect.context.enabled=true"])
    other = compose.build_context_detector(cfg, cfg.detect.context, compose.class_table(cfg))
    image = frame(BUSY)
    a, b = detector.detect(image), other.detect(image)
    assert abs(len(a) - len(b)) <= max(2, len(b) // 10)


def test_batch_runs_one_frame_a_call(context):
    """The export fixes batch 1 in its Reshape nodes: two frames in one call would come back merged."""
    detector, _ = context
    a, b = frame(BUSY), frame(CARS)
    batch = detector.detect_batch([a, b])
    for got, image in zip(batch, [a, b]):
        alone = detector.detect(image)
        np.testing.assert_allclose(got.xyxy, alone.xyxy, atol=1e-3)
        np.testing.assert_array_equal(got.class_id, alone.class_id)


def test_the_stored_graph_merges_a_batch_of_two():
    """Why detect_batch loops: the raw model with N=2 does not give two images' rows apart."""
    import onnxruntime as ort

    from edge.detect.backends.session import set_input_dims

    data = set_input_dims(need(SHARED / "models" / "yolox_nano_kazuhito00.onnx").read_bytes(), ["N", 3, "H", "W"])
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    blob, _ = host_blob([cv2.resize(frame(BUSY), (416, 416))] * 2, 1.0, 1.0, 32, "BGR", 114.0)
    try:
        out = sess.run(None, {sess.get_inputs()[0].name: blob})[0]
    except Exception:
        return  # refusing a batch is as good: what matters is that it never yields two wrong halves silently
    assert out.shape[:2] != (2, 3549)


@pytest.fixture(scope="module")
def raw_outputs():
    """The real model's real outputs on a real frame (host preprocessing, 1088x608)."""
    cfg = compose.load_config(None, ["detect.context.enabled=true"])
    backend, _ = compose.load_model(cfg, "yolox_nano", (1.0,))
    image = cv2.resize(frame(BUSY), (1088, 612))[:608]
    from edge.timing import Stopwatch

    return backend.run([image], 1.0, 1.0, 0.3, Stopwatch())


def test_decoder_on_real_outputs(raw_outputs):
    raw, input_hw = raw_outputs
    assert input_hw == (608, 1088)
    groups = (yolox.GROUPS["person"], yolox.GROUPS["vehicle"])
    xyxy, score, group = yolox.labelled(raw, input_hw, 0.3, groups)
    assert len(xyxy) and (score >= 0.3).all() and set(group.tolist()) <= {0, 1}
    assert (xyxy[:, 2] > xyxy[:, 0]).all() and (xyxy[:, 3] > xyxy[:, 1]).all()
    single, s1, quad = yolox.candidates(raw, input_hw, 0.3)
    assert quad is None and len(single) >= len(xyxy)


def _nan(raw):
    out = raw[0].copy()
    out[0, 17, 2] = np.nan
    return [out]


@pytest.mark.parametrize("fault, message", [
    (_nan, "non-finite"),
    (lambda raw: [raw[0][:, :-1]], "output shape"),
    (lambda raw: [raw[0][..., :80]], "output shape"),
    (lambda raw: [raw[0], raw[0]], "2 outputs"),
    (lambda raw: [raw[0].reshape(-1)], "output shape"),
])
def test_decoder_faults_are_bad_detections(raw_outputs, fault, message):
    raw, input_hw = raw_outputs
    with pytest.raises(BadDetections, match=message):
        yolox.labelled(fault(raw), input_hw, 0.3, ((0,),))


def test_family_is_registered_with_its_pad():
    assert family_module("yolox") is yolox and yolox.PAD_VALUE == 114
    blob, _ = host_blob([np.zeros((10, 20, 3), np.uint8)], 1.0, 1.0, 32, "BGR", yolox.PAD_VALUE)
    assert blob.shape == (1, 3, 32, 32) and (blob[:, :, 10:, :] == 114).all() and (blob[:, :, :10, :20] == 0).all()


def test_graph_pads_with_the_family_value():
    """The graph's padding matches the host blob's 114 (and differs from a zero pad) on the real model."""
    import onnxruntime as ort

    from edge.detect.backends.session import set_input_dims
    from edge.detect.graph import FRAME_INPUT, prepend_preprocess

    data = set_input_dims(need(SHARED / "models" / "yolox_nano_kazuhito00.onnx").read_bytes(), ["N", 3, "H", "W"])
    image = cv2.resize(frame(BUSY), (40, 40))
    plain = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    blob, _ = host_blob([image], 1.0, 1.0, 32, "BGR", 114.0)
    want = plain.run(None, {plain.get_inputs()[0].name: blob})[0]
    outs = {}
    for pad in (114.0, 0.0):
        model = prepend_preprocess(data, channels="BGR", multiple=32, pad_value=pad)
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        outs[pad] = sess.run(None, {FRAME_INPUT: image[None]})[0]
    np.testing.assert_allclose(outs[114.0], want, atol=1e-3)
    assert np.abs(outs[0.0] - want).max() > 1e-2
