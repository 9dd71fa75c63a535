"""calibration/quantize.py: a QDQ int8 model that loads in the runtime and runs, with a card the registry accepts."""
from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from calibration.quantize import card_text, head_nodes, quantize_model, write_card
from calibration.reader import RuntimeCalibrationReader, iter_frames, runtime_detector
from conftest import VIDEO, host, need
from edge.models import registry
from edge.config import Config
from edge.detect.backends.frames import GraphBackend
from edge.detect.backends.session import OnnxModel
from edge.detect.boxes import fit
from edge.detect.detector import OnnxDetector
from edge.detect.families import yunet
from edge.frame import FACE
from edge.timing import Stopwatch


@pytest.fixture(scope="module")
def quantized(tmp_path_factory) -> tuple[Path, Path, registry.ModelCard]:
    """yunet_n calibrated (MinMax) on two small real street frames; the model and its card."""
    work = tmp_path_factory.mktemp("quant")
    folder = work / "frames"
    folder.mkdir()
    for still in sorted(need(VIDEO / "udacity_test_images").glob("*.jpg"))[:2]:
        cv2.imwrite(str(folder / f"{still.stem}.png"), cv2.resize(cv2.imread(str(still)), (160, 96)))
    detector, card = runtime_detector(Config(), "face")
    reader = RuntimeCalibrationReader(detector, iter_frames([folder]))
    src = registry.resolve(card)
    out = quantize_model(src, work / "out" / "yunet_n_int8_minmax.onnx", reader, "MinMax")
    card_path = write_card(card, out, work / "out", name="yunet_n_int8_minmax", method="MinMax",
                           calibration_set=reader.describe())
    return out, card_path, card


def test_model_has_per_channel_qdq_nodes(quantized):
    model = onnx.load(str(quantized[0]))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    inits = {i.name: i for i in model.graph.initializer}
    per_channel = [n for n in model.graph.node if n.op_type == "DequantizeLinear"
                   and n.input[1] in inits and len(inits[n.input[1]].dims) == 1 and inits[n.input[1]].dims[0] > 1]
    assert per_channel, "weights should carry one scale per output channel"


def test_heads_stay_float(quantized):
    model = onnx.load(str(quantized[0]))
    producer = {o: n for n in model.graph.node for o in n.output}
    for out in model.graph.output:
        assert producer[out.name].op_type in ("Sigmoid", "Reshape")  # no DequantizeLinear at the outputs


def test_head_nodes_walks_back_to_the_conv(quantized):
    names = head_nodes(onnx.load(str(registry.resolve(quantized[2]))))
    assert len(names) == 42 and names[:4] == ["Sigmoid_94", "Reshape_93", "Transpose_87", "Conv_64"]


def test_runs_in_the_runtime_like_the_fp32_model(quantized):
    path, card_path, src_card = quantized
    card = registry.load_card(card_path)
    image = cv2.resize(cv2.imread(str(need(VIDEO / "udacity_test_images") / "test1.jpg")), (320, 180))
    int8 = OnnxModel(path, name=card.name, sha256=card.sha256)
    fp32 = OnnxModel(registry.resolve(src_card), name=src_card.name, sha256=src_card.sha256)
    blob = np.zeros((1, 3, 192, 320), np.float32)
    blob[0, :, :180] = image.transpose(2, 0, 1)
    a, b = fp32.run(blob), int8.run(blob)
    assert [x.shape for x in a] == [x.shape for x in b] and all(np.isfinite(x).all() for x in b)
    # the box regressions of an int8 model track the fp32 ones; they are not noise
    assert np.corrcoef(a[6].ravel(), b[6].ravel())[0, 1] > 0.9
    dets = OnnxDetector(host(int8, "yunet"), class_id=FACE).detect(image)
    assert dets.xyxy.shape[1] == 4


def test_graph_preprocessed_int8_runs_on_uint8_frames(quantized, tmp_path):
    path, card_path, _ = quantized
    card = registry.load_card(card_path)
    fm = GraphBackend(path, name=card.name, sha256=card.sha256, family=yunet, scales=(1.0,), cache_dir=tmp_path)
    frame = np.random.default_rng(0).integers(0, 255, (90, 150, 3), np.uint8)
    outputs, input_hw = fm.run([frame], 1.0, 1.0, 0.0, Stopwatch())
    fx, fy = fit(90, 150, 1.0, 1.0, yunet.MULTIPLE).factors(90, 150)
    assert input_hw == (96, 160) and (fx, fy) == (1.0, 1.0) and len(outputs) == 12
    assert outputs[0].shape == (1, (96 // 8) * (160 // 8), 1)


def test_card_is_a_registry_card_with_the_calibration_facts(quantized):
    path, card_path, src_card = quantized
    card = registry.load_card(card_path)
    assert card.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (card.name, card.family, card.classes, card.file) == ("yunet_n_int8_minmax", "yunet", ("face",),
                                                               path.name)
    assert "MinMax" in card.notes and "2 frames from frames" in card.notes
    assert src_card.sha256 in card.source and card.input == src_card.input


def test_card_text_escapes_quotes(quantized):
    src_card = quantized[2]
    text = card_text(src_card, name="x_int8", file="x.onnx", sha256="0" * 64, method="Entropy",
                     calibration_set='clip "a"\\b')
    assert 'clip \\"a\\"\\\\b' in text


def test_unknown_method_is_refused(tmp_path):
    with pytest.raises(ValueError, match="choose one of"):
        quantize_model(tmp_path / "m.onnx", tmp_path / "q.onnx", None, "Median")


def test_int8_session_lists_quantized_ops_on_cpu(quantized):
    sess = ort.InferenceSession(str(quantized[0]), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].name == "input"


def test_interleaved_timing_reports_every_model(quantized, tmp_path):
    from calibration.timing import main

    out = tmp_path / "t.json"
    assert main([str(registry.resolve(quantized[2])), str(quantized[0]), "--size", "64x64", "--runs", "2",
                 "--json", str(out)]) == 0
    import json

    models = json.loads(out.read_text())["models"]
    assert len(models) == 2 and all(m["median_ms"] > 0 for m in models.values())


def test_card_carries_the_gate_verdict(quantized, tmp_path):
    path, _, src_card = quantized
    card_path = write_card(src_card, path, tmp_path, name="yunet_n_int8_minmax", method="MinMax",
                           calibration_set="two frames", gate="gate FAILED: overall -3.00 pt")
    notes = registry.load_card(card_path).notes
    assert notes.endswith("; gate FAILED: overall -3.00 pt") and "heads in float: yes" in notes


def test_qdq_models_get_no_fp16_copy(quantized, tmp_path):
    """fp16 = true in a GPU config must not convert an int8 model's scales (opset 13 wants them float32)."""
    from edge.detect.backends.frames import graph_rewrite, is_qdq

    path, card_path, src_card = quantized
    data = path.read_bytes()
    assert is_qdq(data) and not is_qdq(registry.resolve(src_card).read_bytes())
    out = graph_rewrite(data, sha256="0" * 64, channels="BGR", multiple=32, scale=1.0, fp16=True,
                        cache_dir=tmp_path, rewrite=None)
    model = onnx.load_from_string(out)
    assert not [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert not any(tmp_path.iterdir())  # nothing cached
    sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    assert len(sess.run(None, {"frame": np.zeros((1, 64, 96, 3), np.uint8)})) == 12
