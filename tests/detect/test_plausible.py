"""Plausible model output (edge.detect.plausible): finite but absurd boxes are bad output, as NaN is."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import MODELS, WIDER, need
from edge.frame import BadDetections

ROOT = Path(__file__).resolve().parents[2]
FACES = "7_Cheering_Cheering_7_118.jpg"


@pytest.mark.parametrize("box, why", [
    ([10, 10, 50, 60], None),  # an ordinary box
    ([-30, -20, 40, 50], None),  # a face cut by the edge is boxed whole, partly outside
    ([-90, 10, -70, 40], None),  # outside, but within a quarter of the input's side of its edge
    ([0, 0, 640, 480], None),  # the whole input
    ([-200, 10, -170, 40], "wholly outside it"),
    ([820, 10, 900, 40], "wholly outside it"),
    ([700, 10, 900, 40], None),  # starts within the quarter beyond the edge
    ([10, 610, 40, 760], "wholly outside it"),
    ([1e30, 1e30, 1e30 + 1, 1e30 + 1], "wholly outside it"),  # an offset of +1e30
    ([-10, -10, 1400, 60], "far larger than it"),
    ([10, -500, 40, 1000], "far larger than it"),
    ([np.inf, 10, np.inf, 20], "not finite"),
    ([np.nan, 10, 20, 20], "not finite"),
])
def test_boxes_the_network_could_not_have_seen_are_bad_output(box, why):
    from edge.detect.plausible import check_boxes

    xyxy = np.array([[1, 1, 5, 5], box], np.float32)
    if why is None:
        check_boxes(xyxy, (640, 480), "test")
    else:
        with pytest.raises(BadDetections, match=f"test: implausible box .* for a 640x480 input \\({why}; 1 of 2"):
            check_boxes(xyxy, (640, 480), "test")


def offset_model(src: Path, dst: Path, value: float) -> bytes:
    """YuNet with `value` added to every box regression output: finite, absurd."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    for out in graph.output:
        if out.name.startswith("bbox_"):
            raw = f"{out.name}_raw"
            for node in graph.node:
                node.output[:] = [raw if o == out.name else o for o in node.output]
                node.input[:] = [raw if i == out.name else i for i in node.input]
            graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), f"{out.name}_shift"))
            graph.node.append(helper.make_node("Add", [raw, f"{out.name}_shift"], [out.name]))
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    dst.write_bytes(data)
    return data


@pytest.fixture
def offset_config(tmp_path) -> Path:
    """A config whose face model is YuNet with +1e30 on its box offsets, by its own card and sha256."""
    import hashlib

    cards, mirror = tmp_path / "cards", tmp_path / "mirror"
    cards.mkdir()
    mirror.mkdir()
    data = offset_model(need(MODELS / "yunet_n_dynamic.onnx"), mirror / "yunet_n_offset.onnx", 1e30)
    for card in (ROOT / "models").glob("*.toml"):
        text = card.read_text()
        if card.stem == "yunet_n":
            text = (text.replace('file = "yunet_n_dynamic.onnx"', 'file = "yunet_n_offset.onnx"')
                    .replace("104ee26c71d5c270ce79a6b3dced91c91013260d29a6bf18f9296c5b8c4c2b12",
                             hashlib.sha256(data).hexdigest()))
        (cards / card.name).write_text(text)
    path = tmp_path / "c.toml"
    # our own plate model lies beside its card in models/: the copied cards need it as a mirror
    path.write_text(f'[models]\ncards_dir = "{cards}"\nmirrors = ["{mirror}", "{MODELS}", "{ROOT / "models"}"]\n'
                    f'[[cameras]]\nid = "front"\nsource = "0"\n')
    return path


def test_a_frame_whose_face_boxes_are_absurd_is_dropped_not_passed_as_clean(offset_config):
    """Before: every box clipped away, the frame a clean `masked` with no faces. Now it fails closed."""
    from edge import compose
    from edge.frame import DroppedFrame, Frame

    cfg = compose.load_config(offset_config, ["detect.plate.enabled=false", "detect.context.enabled=false",
                                              "vehicles.guided=false", "vehicles.zones=false",
                                              "vehicles.occupants=false", "service.deadline_ms=0"])
    pipeline = compose.build_pipeline(cfg)
    image = cv2.imread(str(need(WIDER / "images" / FACES)))
    out = pipeline.process(Frame(image, "cam", 0, time.monotonic_ns(), time.time_ns()))
    assert isinstance(out, DroppedFrame) and out.reason == "bad_output"
    assert pipeline.metrics.counters()["dropped_bad_output"] == 1


def test_a_model_with_absurd_output_is_refused_at_start(offset_config):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "edge", "check-config", str(offset_config)], capture_output=True,
                       text=True, timeout=300, env=env, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("invalid: self-test: camera front protects ") and "reference frames not masked: bad_output" in line
