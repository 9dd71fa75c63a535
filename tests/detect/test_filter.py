"""The score threshold inside the graph (edge.detect.graph.append_filter): the same boxes as the host decode of
the whole outputs on real images with the real models, any frame of a batch, any threshold; and fail closed: a
NaN or inf anywhere in the heads reaches the host as a non-finite checksum, even where the graph drops its row."""
from __future__ import annotations

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from conftest import PLATES, WIDER, need
from edge.config import Config, override
from edge.detect.families import lpd_yunet, yunet
from edge.detect.graph import (CHECK_OUTPUT, FILTER_INPUT, FRAME_INPUT, FilterGroup, GraphError, append_filter,
                               filter_output_names, prepend_preprocess)
from edge.frame import BadDetections

FACES = ["7_Cheering_Cheering_7_118.jpg", "2_Demonstration_Political_Rally_2_224.jpg", "3_Riot_Riot_3_604.jpg"]


def session(model) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def model_bytes(name: str) -> bytes:
    from edge.models import registry
    from edge.detect.backends.session import set_input_dims

    card = registry.card(name)
    try:
        data = registry.resolve(card).read_bytes()
    except registry.ModelError as e:
        pytest.skip(str(e))
    return data if card.input.dynamic else set_input_dims(data, ["N", 3, "H", "W"])


def plate_images() -> list[np.ndarray]:
    names = sorted(p for p in need(PLATES).glob("*.jpg"))[:6]
    # one size for the batch: a frame-sized crop of each photo (they differ in size)
    return [np.ascontiguousarray(cv2.resize(cv2.imread(str(p)), (640, 480))) for p in names]


CASES = {
    "yunet_n": (yunet, lambda: [cv2.imread(str(need(WIDER / "images" / n))) for n in FACES]),
    "lpd_yunet": (lpd_yunet, plate_images),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def pair(request):
    family, images = CASES[request.param]
    pre = prepend_preprocess(model_bytes(request.param), channels=family.CHANNELS, multiple=family.MULTIPLE)
    return family, session(pre), session(append_filter(pre, family.FILTER_GROUPS)), np.stack(images())


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.8])
def test_filtered_decode_equals_the_whole_outputs_decode(pair, threshold):
    family, whole, filtered, batch = pair
    hw = tuple(-(-d // family.MULTIPLE) * family.MULTIPLE for d in batch.shape[1:3])
    dense = whole.run(None, {FRAME_INPUT: batch})
    sparse = filtered.run(None, {FRAME_INPUT: batch, FILTER_INPUT: np.array([threshold], np.float32)})
    named = dict(zip([o.name for o in filtered.get_outputs()], sparse))
    found = 0
    for k in range(len(batch)):
        e_xyxy, e_score, e_quad = family.candidates(dense, hw, threshold, batch_index=k)
        g_xyxy, g_score, g_quad = family.filtered_candidates(named, hw, threshold, k, len(batch))
        np.testing.assert_array_equal(g_xyxy, e_xyxy)
        np.testing.assert_array_equal(g_score, e_score)
        if e_quad is not None:
            np.testing.assert_array_equal(g_quad, e_quad)
        found += len(e_xyxy)
    if threshold < 0.5:
        assert found >= len(batch)  # real objects in every case, not an empty comparison
    downloaded = sum(a.nbytes for a in sparse)
    assert downloaded < sum(a.nbytes for a in dense) / 50


def test_a_floor_under_the_window_threshold_changes_nothing(pair):
    family, _, filtered, batch = pair
    hw = tuple(-(-d // family.MULTIPLE) * family.MULTIPLE for d in batch.shape[1:3])

    def run(floor):
        out = filtered.run(None, {FRAME_INPUT: batch, FILTER_INPUT: np.array([floor], np.float32)})
        return dict(zip([o.name for o in filtered.get_outputs()], out))

    low, exact = run(0.1), run(0.45)
    for k in range(len(batch)):
        np.testing.assert_array_equal(family.filtered_candidates(low, hw, 0.45, k, len(batch))[0],
                                      family.filtered_candidates(exact, hw, 0.45, k, len(batch))[0])


def heads_model() -> object:
    """A stand-in 'detector' whose heads are its inputs: the filter sees exactly the values fed to it."""
    names = [("cls_8", 1), ("obj_8", 1), ("bbox_8", 4)]
    inputs = [helper.make_tensor_value_info(f"in_{n}", TensorProto.FLOAT, [1, 4, w]) for n, w in names]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4, w]) for n, w in names]
    nodes = [helper.make_node("Identity", [f"in_{n}"], [n]) for n, _ in names]
    graph = helper.make_graph(nodes, "heads", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=7)


GROUP = (FilterGroup("s8", (("cls_8", 1, 0), ("obj_8", 1, 0)), "bbox_8", 4),)


def run_heads(cls, obj, bbox, floor=0.5) -> dict[str, np.ndarray]:
    sess = session(append_filter(heads_model(), GROUP))
    feed = {"in_cls_8": np.asarray(cls, np.float32).reshape(1, 4, 1), "in_obj_8": np.asarray(obj, np.float32).reshape(1, 4, 1),
            "in_bbox_8": np.asarray(bbox, np.float32).reshape(1, 4, 4), FILTER_INPUT: np.array([floor], np.float32)}
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))


def test_filter_keeps_rows_at_or_above_the_floor():
    out = run_heads([0.9, 0.1, 0.25, 1.0], [0.9, 1.0, 1.0, 0.25], np.arange(16).reshape(4, 4))
    index, score, rows = (out[k] for k in filter_output_names("s8"))
    assert index.tolist() == [0, 2, 3]  # sqrt(0.25 * 1.0) = 0.5: at the floor counts
    np.testing.assert_allclose(score, [0.9, 0.5, 0.5])
    np.testing.assert_array_equal(rows, np.arange(16).reshape(4, 4)[[0, 2, 3]])
    assert out[CHECK_OUTPUT].shape == () and np.isfinite(out[CHECK_OUTPUT])


@pytest.mark.parametrize("head, value", [
    ("cls", np.nan), ("obj", np.nan), ("bbox", np.nan), ("bbox", np.inf), ("cls", -np.inf),
])
def test_non_finite_heads_reach_the_host_even_when_their_row_is_dropped(head, value):
    values = {"cls": np.array([0.1, 0.1, 0.1, 0.9]), "obj": np.array([0.1, 0.1, 0.1, 0.9]),
              "bbox": np.zeros((4, 4))}
    bad = values[head].copy()
    bad.flat[0] = value  # row 0 scores far below the floor: the graph does not return it
    values[head] = bad
    out = run_heads(values["cls"], values["obj"], values["bbox"])
    assert not np.isfinite(out[CHECK_OUTPUT])
    with pytest.raises(BadDetections, match="checksum"):
        yunet.check_filter(out, GROUP)


@pytest.mark.parametrize("change, message", [
    (lambda o: o.pop(CHECK_OUTPUT), "checksum"),
    (lambda o: o.update({filter_output_names("s8")[2]: np.zeros((1, 3), np.float32)}), "shapes"),
    (lambda o: o.update({filter_output_names("s8")[1]: np.array([np.nan], np.float32)}), "non-finite"),
])
def test_malformed_filtered_outputs_raise(change, message):
    out = run_heads([0.9, 0, 0, 0], [0.9, 0, 0, 0], np.zeros((4, 4)))
    change(out)
    with pytest.raises(BadDetections, match=message):
        yunet.check_filter(out, GROUP)


@pytest.mark.parametrize("family, hw, index", [
    (yunet, (32, 32), 16),  # stride 8 of a 32x32 input has 16 anchors: 16 is outside a batch of one
    (yunet, (32, 32), -1),
    (lpd_yunet, (64, 64), 10_000),
])
def test_row_indices_outside_the_batch_raise(family, hw, index):
    out = {CHECK_OUTPUT: np.float32(0.0)}
    for g in family.FILTER_GROUPS:
        i, s, r = filter_output_names(g.name)
        out.update({i: np.zeros(0, np.int64), s: np.zeros(0, np.float32), r: np.zeros((0, g.rows_width), np.float32)})
    i, s, r = filter_output_names(family.FILTER_GROUPS[0].name)
    out.update({i: np.array([index], np.int64), s: np.array([0.9], np.float32),
                r: np.zeros((1, family.FILTER_GROUPS[0].rows_width), np.float32)})
    with pytest.raises(BadDetections, match="outside a batch"):
        family.filtered_candidates(out, hw, 0.5, 0, 1)


def test_append_filter_refuses_a_model_without_the_heads():
    with pytest.raises(GraphError, match="no output"):
        append_filter(heads_model(), (FilterGroup("x", (("conf", 2, 1),), "loc", 14),))


@pytest.mark.parametrize("graph_filter", [True, False])
def test_config_switch(graph_filter):
    from edge.compose import build_detector
    from edge.detect.backends.frames import FilterBackend

    cfg = override(Config(), {"runtime.graph_preprocess": True, "runtime.graph_filter": graph_filter,
                              "detect.plate.enabled": True, "detect.plate.scales": [1.0],
                              "detect.plate.model": "lpd_yunet",  # a family with an in-graph filter
                              "detect.context.enabled": False})
    det = build_detector(cfg)
    try:
        assert [isinstance(d.backend, FilterBackend) for d in det.detectors] == [graph_filter, graph_filter]
        assert [d.backend.runners[1.0].filtered for d in det.detectors] == [graph_filter, graph_filter]
    finally:
        det.close()
