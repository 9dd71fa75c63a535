"""calibration/gate.py: the int8 gate's rule on given numbers."""
from __future__ import annotations

import pytest

from calibration.gate import check_gate


def result(overall: float, buckets: dict[str, tuple[int, float | None]]) -> dict:
    total = sum(n for n, _ in buckets.values())
    return {"objects": total, "protected_share": overall,
            "buckets": {k: {"objects": n, "share": s} for k, (n, s) in buckets.items()}}


FP32 = result(0.80, {"<8": (1200, 0.50), "8-16": (900, 0.90), "16-32": (99, 0.95), ">=64": (0, None)})


@pytest.mark.parametrize("overall, small, mid, few, passed, why", [
    (0.80, 0.50, 0.90, 0.95, True, ""),                   # identical
    (0.791, 0.481, 0.90, 0.95, True, ""),                 # 0.9 pt overall, 1.9 pt in a big bucket: within
    (0.789, 0.50, 0.90, 0.95, False, "overall"),          # 1.1 pt overall
    (0.80, 0.479, 0.90, 0.95, False, "bucket <8"),        # 2.1 pt in a bucket of 1200
    (0.80, 0.50, 0.879, 0.95, False, "bucket 8-16"),
    (0.80, 0.50, 0.90, 0.80, True, ""),                   # 15 pt lost in a bucket of 99 objects: not gated
    (0.85, 0.60, 0.95, 0.99, True, ""),                   # int8 better
])
def test_gate_rule(overall, small, mid, few, passed, why):
    int8 = result(overall, {"<8": (1200, small), "8-16": (900, mid), "16-32": (99, few), ">=64": (0, None)})
    gate = check_gate(FP32, int8)
    assert gate.passed is passed
    if passed:
        assert not gate.failures and gate.message().startswith("gate passed")
    else:
        assert len(gate.failures) == 1 and gate.failures[0].startswith(why)
        assert gate.message().startswith("gate FAILED")
    assert gate.deltas["overall"] == pytest.approx(100 * (overall - 0.80), abs=0.01)
    assert ">=64" not in gate.deltas


def test_several_failures_are_all_named():
    int8 = result(0.70, {"<8": (1200, 0.40), "8-16": (900, 0.80), "16-32": (99, 0.95), ">=64": (0, None)})
    gate = check_gate(FP32, int8)
    assert not gate.passed and len(gate.failures) == 3


def test_results_of_different_sets_are_refused():
    other = result(0.80, {"<8": (1201, 0.50), "8-16": (900, 0.90), "16-32": (99, 0.95), ">=64": (0, None)})
    with pytest.raises(ValueError, match="not on the same set"):
        check_gate(FP32, other)


def test_thresholds_are_parameters():
    int8 = result(0.79, {"<8": (1200, 0.50), "8-16": (900, 0.90), "16-32": (99, 0.95), ">=64": (0, None)})
    assert check_gate(FP32, int8).passed
    assert not check_gate(FP32, int8, overall_points=0.5).passed
