"""QDQ int8 model (per-channel weights) from an fp32 model and a calibration reader, plus its model card."""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import onnx
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from edge.models.registry import ModelCard, load_card, sha256_file

log = logging.getLogger(__name__)

METHODS = {"MinMax": CalibrationMethod.MinMax, "Entropy": CalibrationMethod.Entropy,
           "Percentile": CalibrationMethod.Percentile}
QDQ_OPSET = 13  # per-channel QuantizeLinear / DequantizeLinear (the axis attribute) need 13


def _prepared(src: Path, work: Path) -> Path:
    """Opset raised to 13 if needed, then onnxruntime's recommended pre-processing (shape inference, folding)."""
    model = onnx.load(str(src))
    opset = next(i.version for i in model.opset_import if i.domain in ("", "ai.onnx"))
    if opset < QDQ_OPSET:
        from onnx import version_converter

        model = version_converter.convert_version(model, QDQ_OPSET)
    upgraded = work / "opset.onnx"
    onnx.save(model, str(upgraded))
    prepared = work / "prepared.onnx"
    # symbolic shape inference needs concrete dims; the detectors' H and W are dynamic
    quant_pre_process(str(upgraded), str(prepared), skip_symbolic_shape=True)
    return prepared


def head_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes from each graph output back to (and including) the Conv that feeds it: the detection heads.

    Their ranges are the scores and box regressions themselves. Calibrated on street frames, where a
    confident face is rare, the score logits' observed maximum sits below the threshold and int8
    would clip every face away; kept in float they cost a handful of small convolutions.
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    names: list[str] = []
    for out in model.graph.output:
        node = producer.get(out.name)
        while node is not None:
            names.append(node.name)
            if node.op_type == "Conv":
                break
            node = producer.get(node.input[0])
    return names


def quantize_model(src: str | Path, dst: str | Path, reader, method: str = "MinMax",
                   percentile: float = 99.999, float_heads: bool = True) -> Path:
    """Write the QDQ int8 model of `src` calibrated on `reader` to `dst` (uint8 activations, int8 per-channel weights).

    The reader is fed to the calibrator one input at a time (CalibStridedMinMax=1): histogram methods
    otherwise hold every intermediate tensor of every input in memory and need them all one shape.
    With `float_heads` the output heads stay float (see head_nodes).
    """
    if method not in METHODS:
        raise ValueError(f"method {method!r}; choose one of {sorted(METHODS)}")
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    reader.rewind()
    with tempfile.TemporaryDirectory(prefix="calib-") as tmp:
        prepared = _prepared(Path(src), Path(tmp))
        exclude = head_nodes(onnx.load(str(prepared))) if float_heads else []
        partial = dst.with_name(f".{dst.name}.partial")  # renamed into place whole: never a half-written model
        try:
            quantize_static(str(prepared), str(partial), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=METHODS[method], nodes_to_exclude=exclude,
                            extra_options={"CalibStridedMinMax": 1, "CalibPercentile": percentile})
            os.replace(partial, dst)
        finally:
            partial.unlink(missing_ok=True)
    log.info("int8 (%s) model written to %s", method, dst)
    return dst


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string with ASCII escapes is a valid TOML basic string


def card_text(source: ModelCard, *, name: str, file: str, sha256: str, method: str, calibration_set: str,
              float_heads: bool = True, gate: str = "gate not run") -> str:
    """A models/*.toml card for the int8 model.

    The calibration facts go into `source` and `notes`, keys the registry knows (it refuses unknown ones).
    """
    inp = source.input
    notes = (f"calibration method: {method}; heads in float: {'yes' if float_heads else 'no'}; "
             f"calibration set: {calibration_set}; {gate}")
    lines = [
        f"# {source.name}, statically quantized int8 (QDQ, per-channel weights) by calibration/ ({method}).",
        f"name = {_toml_str(name)}",
        f"family = {_toml_str(source.family)}",
        f"classes = {json.dumps(list(source.classes))}",
        f"file = {_toml_str(file)}",
        f"sha256 = {_toml_str(sha256)}",
        f"licence = {_toml_str(source.licence)}",
        f"training_data_terms = {_toml_str(source.training_data_terms)}",
        f"source = {_toml_str(f'calibration/ static int8 of {source.name} sha256={source.sha256} ({source.source})')}",
        f"notes = {_toml_str(notes)}",
        "",
        "[input]",
        f"layout = {_toml_str(inp.layout)}",
        f"channels = {_toml_str(inp.channels)}",
        f"value_range = {_toml_str(inp.value_range)}",
        f"dynamic = {'true' if inp.dynamic else 'false'}",
    ]
    if inp.size_multiple is not None:
        lines.append(f"size_multiple = {inp.size_multiple}")
    if inp.size is not None:
        lines.append(f"size = [{inp.size[0]}, {inp.size[1]}]")
    return "\n".join(lines) + "\n"


def write_card(source: ModelCard, model_path: str | Path, cards_dir: str | Path, *, name: str, method: str,
               calibration_set: str, float_heads: bool = True, gate: str = "gate not run") -> Path:
    """Write <cards_dir>/<name>.toml for the model at `model_path` and check that the registry accepts it."""
    model_path = Path(model_path)
    path = Path(cards_dir) / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(card_text(source, name=name, file=model_path.name, sha256=sha256_file(model_path),
                              method=method, calibration_set=calibration_set, float_heads=float_heads,
                              gate=gate))
    load_card(path)  # a card the registry would refuse is a bug here, not at deployment
    return path
