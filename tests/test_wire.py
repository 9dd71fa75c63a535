import json

import cv2
import numpy as np
import pytest

from edge import wire
from conftest import unheld
from edge.frame import FACE, PLATE, Detections, DroppedFrame, Frame, MaskedFrame
from edge.wire import WireError, decode, encode

SHA = "ab" * 32


def gradient(h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth image, so JPEG round trips stay close to the original."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (h + w)], axis=-1).astype(np.uint8)


def masked(image: np.ndarray | None = None, status: str = "masked", camera: str = "cam0", seq: int = 7) -> MaskedFrame:
    image = gradient() if image is None else image
    frame = Frame(image, camera, seq, 1_000, 2_000, "f007")
    det = Detections(np.array([[1, 2, 10, 12], [20, 5, 40, 15]], np.float32), [0.91, 0.5], [FACE, PLATE])
    regions = np.array([[0, 0, 12, 14], [18, 3, 42, 17]], np.int32)
    return MaskedFrame(frame, regions, det, status, {"detect": 1.25, "mask": 0.5}, (("yunet.onnx", SHA),))


def dropped(camera: str = "cam0", seq: int = 8) -> DroppedFrame:
    frame = Frame(gradient(), camera, seq, 3_000, 4_000, "f008")
    return DroppedFrame.of(frame, "deadline", {"detect": 80.0})


def as_bytes(parts: list) -> list[bytes]:
    return [bytes(memoryview(p).cast("B")) if isinstance(p, np.ndarray) else bytes(p) for p in parts]


def test_masked_header_carries_identity_models_boxes_and_timings():
    item = masked()
    parts = encode(item)
    header, image = decode(parts)
    assert parts[0] == b"cam0"
    assert header["v"] == 1
    assert (header["camera_id"], header["name"], header["seq"]) == ("cam0", "f007", 7)
    assert (header["t_capture_mono_ns"], header["t_capture_wall_ns"]) == (1_000, 2_000)
    assert (header["status"], header["masked"]) == ("masked", True)
    assert "reason" not in header
    assert (header["shape"], header["dtype"], header["encoding"]) == ([48, 64, 3], "uint8", "raw")
    assert header["models"] == [{"name": "yunet.onnx", "sha256": SHA}]
    assert header["boxes"] == [[0, 0, 12, 14], [18, 3, 42, 17]]
    assert header["detections"] == unheld(item.detections.to_list())
    assert [d["class"] for d in header["detections"]] == ["face", "plate"]
    assert header["timings_ms"]["detect"] == 1.25 and header["timings_ms"]["encode"] >= 0
    np.testing.assert_array_equal(image, item.frame.image)


def test_header_is_compact_utf8_json():
    header_bytes = encode(masked(camera="kamera-ü"))[1]
    assert b" " not in header_bytes
    assert json.loads(header_bytes.decode("utf-8"))["camera_id"] == "kamera-ü"


def test_raw_pixels_are_passed_without_copy():
    item = masked()
    pixels = encode(item)[2]
    assert np.shares_memory(pixels, item.frame.image)


def test_non_contiguous_image_round_trips():
    big = gradient(48, 128)
    view = big[:, ::2]
    assert not view.flags.c_contiguous
    _, image = decode(as_bytes(encode(masked(view))))
    np.testing.assert_array_equal(image, view)


def test_dropped_record_has_reason_and_no_pixels():
    parts = encode(dropped())
    assert len(parts) == 2
    header, image = decode(parts)
    assert image is None
    assert (header["status"], header["masked"], header["reason"]) == ("dropped", False, "deadline")
    assert header["seq"] == 8 and header["timings_ms"]["detect"] == 80.0
    assert "shape" not in header and "boxes" not in header


def test_masked_whole_status_round_trips():
    header, image = decode(encode(masked(status="masked_whole")))
    assert (header["status"], header["masked"]) == ("masked_whole", True)
    assert image is not None


def test_jpeg_round_trip_is_close_and_says_jpeg():
    item = masked()
    parts = encode(item, encoding="jpeg", jpeg_quality=95)
    assert bytes(parts[2][:2]) == b"\xff\xd8"  # JPEG SOI marker
    header, image = decode(parts)
    assert header["encoding"] == "jpeg"
    assert image.shape == item.frame.image.shape
    assert np.abs(image.astype(int) - item.frame.image.astype(int)).mean() < 3


def test_non_finite_timings_are_left_out():
    item = masked()
    item.timings_ms["broken"] = float("nan")
    header, _ = decode(encode(item))
    assert "broken" not in header["timings_ms"]


@pytest.mark.parametrize("bad", [
    Frame(gradient(), "cam0", 1, 0, 0),
    gradient(),
    None,
])
def test_encode_refuses_anything_but_outcomes(bad):
    with pytest.raises(TypeError):
        encode(bad)


@pytest.mark.parametrize("kwargs", [{"encoding": "png"}, {"encoding": "jpeg", "jpeg_quality": 101}])
def test_encode_rejects_bad_options(kwargs):
    with pytest.raises(ValueError):
        encode(masked(), **kwargs)


def test_encode_rejects_masked_frame_whose_pixels_are_not_an_image():
    with pytest.raises(ValueError):
        encode(masked(np.zeros((4, 4), np.uint8)))


def test_encode_rejects_masked_frame_with_unknown_status():
    with pytest.raises(WireError):
        encode(masked(status="partly"))


# --- malformed messages -------------------------------------------------------------------

def _masked_parts(encoding: str = "raw") -> list[bytes]:
    return as_bytes(encode(masked(), encoding=encoding))


def _edit(parts: list[bytes], **changes) -> list[bytes]:
    header = json.loads(parts[1])
    for key, value in changes.items():
        if value is _DELETE:
            del header[key]
        else:
            header[key] = value
    return [parts[0], json.dumps(header).encode(), *parts[2:]]


_DELETE = object()


def _masked_case(**changes):
    return lambda: _edit(_masked_parts(), **changes)


def _dropped_case(**changes):
    return lambda: _edit(as_bytes(encode(dropped())), **changes)


MALFORMED = {
    "one part": lambda: _masked_parts()[:1],
    "four parts": lambda: _masked_parts() + [b"x"],
    "not a list": lambda: b"cam0",
    "header not json": lambda: [b"cam0", b"{nope", b""],
    "header not utf8": lambda: [b"cam0", b"\xff\xfe", b""],
    "header is an array": lambda: [b"cam0", b"[1, 2]"],
    "header with NaN": lambda: [b"cam0", _masked_parts()[1].replace(b'"detect":1.25', b'"detect":NaN'), _masked_parts()[2]],
    "topic not utf8": lambda: [b"\xff", *_masked_parts()[1:]],
    "topic is not camera": lambda: [b"cam1", *_masked_parts()[1:]],
    "pixel part not bytes": lambda: [*_masked_parts()[:2], 12345],
    "version 2": _masked_case(v=2),
    "version missing": _masked_case(v=_DELETE),
    "version true": _masked_case(v=True),
    "camera_id missing": _masked_case(camera_id=_DELETE),
    "seq missing": _masked_case(seq=_DELETE),
    "seq string": _masked_case(seq="7"),
    "seq bool": _masked_case(seq=True),
    "wall time float": _masked_case(t_capture_wall_ns=2.5),
    "timings missing": _masked_case(timings_ms=_DELETE),
    "timings not numbers": _masked_case(timings_ms={"detect": "slow"}),
    "status unknown": _masked_case(status="blurred"),
    "pixels with masked false": _masked_case(masked=False),
    "pixels with masked missing": _masked_case(masked=_DELETE),
    "pixels with masked string": _masked_case(masked="true"),
    "pixels with masked 1": _masked_case(masked=1),
    "pixels on dropped header": lambda: [*as_bytes(encode(dropped())), _masked_parts()[2]],
    "masked header without pixels": lambda: _masked_parts()[:2],
    "dropped header says masked": _dropped_case(masked=True),
    "dropped without reason": _dropped_case(reason=_DELETE),
    "shape missing": _masked_case(shape=_DELETE),
    "shape four channels": _masked_case(shape=[48, 64, 4]),
    "shape negative": _masked_case(shape=[-48, 64, 3]),
    "shape two dims": _masked_case(shape=[48, 192]),
    "dtype float": _masked_case(dtype="float32"),
    "encoding png": _masked_case(encoding="png"),
    "boxes missing": _masked_case(boxes=_DELETE),
    "box with three numbers": _masked_case(boxes=[[0, 0, 5]]),
    "models not dicts": _masked_case(models=["yunet"]),
    "detection without score": _masked_case(detections=[{"class": "face", "xyxy": [0, 0, 1, 1]}]),
    "raw one byte short": lambda: [*_masked_parts()[:2], _masked_parts()[2][:-1]],
    "raw one byte long": lambda: [*_masked_parts()[:2], _masked_parts()[2] + b"\0"],
    "jpeg garbage": lambda: [*_masked_parts("jpeg")[:2], b"not a jpeg at all"],
    "jpeg shape mismatch": lambda: _edit(_masked_parts("jpeg"), shape=[24, 64, 3]),
    "raw declared jpeg": _masked_case(encoding="jpeg"),
}


@pytest.mark.parametrize("make", MALFORMED.values(), ids=MALFORMED.keys())
def test_decode_rejects_malformed(make):
    with pytest.raises(WireError):
        decode(make())


def test_wire_error_is_a_value_error():
    assert issubclass(WireError, ValueError)


def test_table_base_messages_are_valid():
    """The table's base messages are valid, so each broken case fails for its own reason."""
    assert decode(_masked_parts())[1] is not None
    assert decode(_masked_parts("jpeg"))[1] is not None
    assert decode(as_bytes(encode(dropped())))[1] is None
    assert decode(_edit(_masked_parts()))[0]["seq"] == 7


def test_jpeg_decoding_uses_opencv_color():
    gray_jpeg = cv2.imencode(".jpg", gradient()[:, :, 0])[1].tobytes()
    parts = _edit(_masked_parts("jpeg"))
    header, image = decode([*parts[:2], gray_jpeg])
    assert image.shape == (48, 64, 3) and header["encoding"] == "jpeg"


def test_decoded_raw_pixels_are_read_only_view():
    _, image = decode(_masked_parts())
    assert not image.flags.writeable


def test_header_size_limit():
    parts = _masked_parts()
    huge = _edit(parts, name="x" * (wire.MAX_HEADER_BYTES + 1))
    with pytest.raises(WireError, match="limit"):
        decode(huge)


@pytest.mark.parametrize("xyxy, score, expected_box, expected_score", [
    ([[1.04, 2.06, 3.0, 4.449]], [0.12345], [1.0, 2.1, 3.0, 4.4], 0.123),
    ([[0.0, 0.0, 1919.96, 1079.94]], [1.0], [0.0, 0.0, 1920.0, 1079.9], 1.0),
])
def test_detection_rows_are_rounded_plain_json_values(xyxy, score, expected_box, expected_score):
    (row,) = Detections(np.array(xyxy, np.float32), score, [FACE]).to_list()
    assert row == {"xyxy": expected_box, "class": "face", "score": expected_score}
    assert all(type(v) is float for v in row["xyxy"]) and type(row["score"]) is float
    json.dumps(row, allow_nan=False)


@pytest.mark.parametrize("make", [lambda reason: masked(), lambda reason: dropped()], ids=["masked", "dropped"])
@pytest.mark.parametrize("reason", ["", "threshold sweep"])
def test_a_run_without_its_self_test_says_so_in_every_header(make, reason):
    """selftest_skipped rides on every header of such a run; a header without it (older senders) still decodes."""
    header, _ = decode(as_bytes(encode(make(reason), selftest_skipped=reason)))
    assert header.get("selftest_skipped", "") == reason
    assert ("selftest_skipped" in header) is bool(reason)


def test_decode_rejects_a_selftest_skipped_that_is_not_text():
    parts = as_bytes(encode(dropped(), selftest_skipped="x"))
    header = json.loads(parts[1])
    header["selftest_skipped"] = True
    with pytest.raises(WireError, match="selftest_skipped is bool, expected str"):
        decode([parts[0], json.dumps(header).encode()])


@pytest.mark.parametrize("held, expected", [
    (np.array([False, True]), [False, True]),  # the plate was held by the tracker, the face detected
    (np.zeros(0, bool), [False, False]),  # no flags (a frame built without a tracker): nothing was held
])
def test_each_detection_says_whether_the_tracker_held_it(held, expected):
    item = masked()
    item.held = held
    header, _ = decode(encode(item))
    assert [d["held"] for d in header["detections"]] == expected
    assert [d["class"] for d in header["detections"]] == ["face", "plate"]


@pytest.mark.parametrize("held", [1, "yes", None])
def test_a_held_flag_that_is_not_a_boolean_is_refused(held):
    parts = as_bytes(encode(masked()))
    header = json.loads(parts[1])
    header["detections"][0]["held"] = held
    parts[1] = json.dumps(header).encode()
    with pytest.raises(WireError, match="held"):
        decode(parts)
