"""Static INT8 quantization of detector models, calibrated on frames fed through the runtime's own preprocessing.

`python -m calibration --help`; see calibration/README.md. The pieces:
reader.py (frames -> the exact network inputs the runtime builds), quantize.py (QDQ model + its
model card), gate.py (the small-faces evaluation of fp32 vs int8 under one config).
"""
from edge.runtime.hardening import disable_runtime_telemetry

# quantize.py and reader.py import onnxruntime, which reads its telemetry switch only then
disable_runtime_telemetry()

from calibration.gate import GateResult, check_gate
from calibration.quantize import METHODS, quantize_model, write_card
from calibration.reader import RuntimeCalibrationReader, iter_frames

__all__ = ["GateResult", "check_gate", "METHODS", "quantize_model", "write_card", "RuntimeCalibrationReader",
           "iter_frames"]
