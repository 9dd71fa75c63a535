"""The wire format between the anonymizer and its consumers: JSON header plus raw or JPEG pixels.

No pickle: a consumer must never execute what arrives. One ZeroMQ multipart message per outcome:

* MaskedFrame:  ``[topic, header, pixels]``
* DroppedFrame: ``[topic, header]`` -- consumers see the gap and its reason, never pixels.

``topic`` is the camera id as UTF-8 (ZeroMQ SUB filters are prefixes of it). ``header`` is
compact UTF-8 JSON. Keys present in every header::

    v                  1
    camera_id, name    str
    seq                int
    t_capture_mono_ns  int, the publisher's monotonic clock (deadlines)
    t_capture_wall_ns  int, wall clock at capture (latency, timeline)
    status             "masked" | "masked_whole" | "dropped"
    masked             true for masked/masked_whole, false for dropped
    timings_ms         {stage: ms}, including this module's "encode"

Only in dropped headers: ``reason``. Only in masked headers: ``shape`` [h, w, 3],
``dtype`` "uint8", ``encoding`` "raw" (BGR bytes, C order) or "jpeg", ``models``
[{"name", "sha256"}], ``boxes`` (regions actually painted, [[x1, y1, x2, y2], ...]),
``detections`` (:meth:`edge.frame.Detections.to_list`, class names from the run's class table: what
the boxes were painted for, each with ``held``: true when the tracker held it from earlier frames) and
``context`` (the same rows for context classes, persons and vehicles, found and never painted themselves).

Optional in every header: ``selftest_skipped`` (str), the reason given by ``[selftest] skip`` when the
run started without its privacy self-test (edge.selftest); absent when the self-test ran and passed.

:func:`decode` trusts nothing: a message with pixels whose header does not say
``"masked": true`` is rejected like any other malformed message.
"""
from __future__ import annotations

import json
import math
import time

import cv2
import numpy as np

from edge.frame import BUILTIN_CLASSES, ClassTable, DroppedFrame, MaskedFrame, check_image

WIRE_VERSION = 1
MASKED_STATUSES = ("masked", "masked_whole")
STATUSES = (*MASKED_STATUSES, "dropped")
ENCODINGS = ("raw", "jpeg")
# A header is a few kB even with hundreds of boxes; anything far larger is not ours.
MAX_HEADER_BYTES = 1 << 20
MAX_SIDE = 1 << 15

_COMMON_KEYS = {
    "v": int, "camera_id": str, "name": str, "seq": int, "t_capture_mono_ns": int,
    "t_capture_wall_ns": int, "status": str, "masked": bool, "timings_ms": dict,
}
_MASKED_KEYS = {
    "shape": list, "dtype": str, "encoding": str, "models": list, "boxes": list, "detections": list,
}
_DROPPED_KEYS = {"reason": str}

Part = bytes | memoryview | np.ndarray


class WireError(ValueError):
    """A message that does not follow the wire format; its pixels must not be used."""


def _ms_since(t0_ns: int) -> float:
    return (time.perf_counter_ns() - t0_ns) / 1e6


def clean_timings(timings: dict) -> dict[str, float]:
    """Timings as JSON-safe floats; a non-finite value (a broken timer) is left out, not sent as NaN."""
    out = {}
    for key, value in timings.items():
        value = float(value)
        if math.isfinite(value):
            out[str(key)] = round(value, 3)
    return out


def painted_for(item: MaskedFrame, classes: ClassTable = BUILTIN_CLASSES) -> list[dict]:
    """The detections the regions were painted for, as JSON-ready rows (Detections.to_list) each with `held`:
    true when the tracker held it from earlier frames (a prediction, not this frame's detection)."""
    rows = item.detections.to_list(classes)
    for row, h in zip(rows, item.held_flags().tolist()):
        row["held"] = bool(h)
    return rows


def painted_boxes(item: MaskedFrame) -> list[list[int]]:
    """The regions the mask step painted, as JSON-ready [x1, y1, x2, y2] rows."""
    return np.asarray(item.regions).reshape(-1, 4).astype(np.int64).tolist()


def _common_header(item: MaskedFrame | DroppedFrame) -> dict:
    ident = item.frame if isinstance(item, MaskedFrame) else item
    return {
        "v": WIRE_VERSION,
        "camera_id": ident.camera_id,
        "name": ident.name,
        "seq": int(ident.seq),
        "t_capture_mono_ns": int(ident.t_capture_mono_ns),
        "t_capture_wall_ns": int(ident.t_capture_wall_ns),
    }


def _encode_pixels(image: np.ndarray, encoding: str, jpeg_quality: int) -> Part:
    if encoding == "raw":
        # Zero-copy: the caller's array goes to the socket as is (copied only if not C-contiguous).
        return np.ascontiguousarray(image)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    if not ok:
        raise WireError(f"JPEG encoding failed for image of shape {image.shape}")
    return buf.tobytes()


def check_encoding(encoding: str, jpeg_quality: int) -> None:
    """ValueError for an unknown encoding or a JPEG quality outside 1..100: the one check, used by the
    config's [output] table and by every encoder."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding: {encoding!r} is not one of {', '.join(ENCODINGS)}")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality: must be within 1..100, got {jpeg_quality!r}")


def encode(item: MaskedFrame | DroppedFrame, encoding: str = "raw", jpeg_quality: int = 90,
           classes: ClassTable = BUILTIN_CLASSES, selftest_skipped: str = "") -> list[Part]:
    """The multipart message for one outcome: ``[topic, header, pixels]`` or ``[topic, header]``.

    Raw pixels are the frame's own (contiguous) array, not a copy: a sender that may outlive
    the caller's ownership of the buffer must copy it when sending.
    """
    if not isinstance(item, (MaskedFrame, DroppedFrame)):
        raise TypeError(f"only MaskedFrame or DroppedFrame go on the wire, got {type(item).__name__}")
    check_encoding(encoding, jpeg_quality)
    t0 = time.perf_counter_ns()
    header = _common_header(item)
    if selftest_skipped:
        header["selftest_skipped"] = str(selftest_skipped)
    topic = header["camera_id"].encode("utf-8")
    if isinstance(item, DroppedFrame):
        header.update(status="dropped", masked=False, reason=str(item.reason))
        header["timings_ms"] = clean_timings({**item.timings_ms, "encode": _ms_since(t0)})
        return [topic, _dump(header)]
    if item.status not in MASKED_STATUSES:
        raise WireError(f"MaskedFrame with status {item.status!r}, expected one of {MASKED_STATUSES}")
    image = check_image(item.frame.image)
    pixels = _encode_pixels(image, encoding, jpeg_quality)
    header.update(
        status=item.status,
        masked=True,
        shape=[int(image.shape[0]), int(image.shape[1]), 3],
        dtype="uint8",
        encoding=encoding,
        models=[{"name": str(name), "sha256": str(sha)} for name, sha in item.models],
        boxes=painted_boxes(item),
        detections=painted_for(item, classes),
        context=item.context.to_list(classes),
    )
    header["timings_ms"] = clean_timings({**item.timings_ms, "encode": _ms_since(t0)})
    return [topic, _dump(header), pixels]


def _dump(header: dict) -> bytes:
    return json.dumps(header, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode("utf-8")


def _as_bytes_view(part: object, what: str) -> memoryview:
    """A flat byte view of one message part: bytes, bytearray, memoryview, ndarray or zmq.Frame."""
    if isinstance(part, (bytes, bytearray, memoryview, np.ndarray)):
        buf = part
    else:
        buf = getattr(part, "buffer", None)  # zmq.Frame from recv_multipart(copy=False)
    if buf is None:
        raise WireError(f"{what} part is {type(part).__name__}, expected a bytes-like object")
    try:
        view = memoryview(buf)
        return view if view.format == "B" and view.ndim == 1 else view.cast("B")
    except (TypeError, ValueError) as exc:
        raise WireError(f"{what} part is not a contiguous byte buffer: {exc}") from exc


def _reject_constant(name: str) -> None:
    raise WireError(f"header contains {name}, which is not JSON")


def _parse_header(view: memoryview) -> dict:
    if view.nbytes > MAX_HEADER_BYTES:
        raise WireError(f"header is {view.nbytes} bytes, limit {MAX_HEADER_BYTES}")
    try:
        header = json.loads(bytes(view).decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"header is not UTF-8 JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise WireError(f"header is a JSON {type(header).__name__}, expected an object")
    return header


def _check_keys(header: dict, keys: dict[str, type]) -> None:
    for key, kind in keys.items():
        if key not in header:
            raise WireError(f"header lacks {key!r}")
        value = header[key]
        # bool is an int in Python; a JSON true must not pass for a number (or vice versa).
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise WireError(f"header {key!r} is {type(value).__name__}, expected {kind.__name__}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_masked_fields(header: dict) -> tuple[int, int]:
    shape = header["shape"]
    if len(shape) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) for v in shape):
        raise WireError(f"header shape {shape!r}, expected [h, w, 3] integers")
    h, w, c = shape
    if c != 3 or not (0 < h <= MAX_SIDE and 0 < w <= MAX_SIDE):
        raise WireError(f"header shape {shape!r}, expected [h, w, 3] with 1..{MAX_SIDE} pixels per side")
    if header["dtype"] != "uint8":
        raise WireError(f"header dtype {header['dtype']!r}, expected 'uint8'")
    if header["encoding"] not in ENCODINGS:
        raise WireError(f"header encoding {header['encoding']!r}, expected one of {ENCODINGS}")
    for box in header["boxes"]:
        if not isinstance(box, list) or len(box) != 4 or not all(_is_number(v) for v in box):
            raise WireError(f"header box {box!r}, expected [x1, y1, x2, y2] numbers")
    for model in header["models"]:
        if not isinstance(model, dict) or not isinstance(model.get("name"), str) or not isinstance(model.get("sha256"), str):
            raise WireError(f"header model {model!r}, expected {{'name': str, 'sha256': str}}")
    context = header.get("context", [])  # optional: written by this version, absent from older senders
    if not isinstance(context, list):
        raise WireError(f"header context {type(context).__name__}, expected a list")
    for det in [*header["detections"], *context]:
        if not isinstance(det, dict) or not isinstance(det.get("class"), str) or not _is_number(det.get("score")):
            raise WireError(f"header detection {det!r}, expected class, score and xyxy")
        xyxy = det.get("xyxy")
        if not isinstance(xyxy, list) or len(xyxy) != 4 or not all(_is_number(v) for v in xyxy):
            raise WireError(f"header detection xyxy {xyxy!r}, expected 4 numbers")
        if not isinstance(det.get("held", False), bool):  # optional: older senders do not write it
            raise WireError(f"header detection held {det['held']!r}, expected true or false")
    return h, w


def check_header(header: dict) -> dict:
    """Validate a parsed header (version, keys, types, status vs masked); returns it."""
    if header.get("v") != WIRE_VERSION or isinstance(header.get("v"), bool):
        raise WireError(f"wire version {header.get('v')!r}, this reader speaks {WIRE_VERSION}")
    _check_keys(header, _COMMON_KEYS)
    status = header["status"]
    if status not in STATUSES:
        raise WireError(f"header status {status!r}, expected one of {STATUSES}")
    if header["masked"] is not (status in MASKED_STATUSES):
        raise WireError(f"header masked={header['masked']!r} contradicts status {status!r}")
    if not isinstance(header.get("selftest_skipped", ""), str):  # optional: only runs without the self-test
        raise WireError(f"header selftest_skipped is {type(header['selftest_skipped']).__name__}, expected str")
    if not all(isinstance(k, str) and _is_number(v) for k, v in header["timings_ms"].items()):
        raise WireError("header timings_ms must map names to finite numbers")
    if status == "dropped":
        _check_keys(header, _DROPPED_KEYS)
    else:
        _check_keys(header, _MASKED_KEYS)
        _check_masked_fields(header)
    return header


def _decode_pixels(header: dict, view: memoryview) -> np.ndarray:
    h, w, _ = header["shape"]
    if header["encoding"] == "raw":
        if view.nbytes != h * w * 3:
            raise WireError(f"pixel part is {view.nbytes} bytes, shape {header['shape']} needs {h * w * 3}")
        return np.frombuffer(view, dtype=np.uint8).reshape(h, w, 3)
    image = cv2.imdecode(np.frombuffer(view, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise WireError(f"pixel part ({view.nbytes} bytes) is not a decodable JPEG")
    if image.shape != (h, w, 3):
        raise WireError(f"JPEG decodes to {image.shape}, header says {header['shape']}")
    return image


def decode(parts: list | tuple) -> tuple[dict, np.ndarray | None]:
    """Header and pixels (None for a dropped record) of one message; WireError if malformed.

    Raw pixels are a read-only view of the received buffer, not a copy.
    """
    if not isinstance(parts, (list, tuple)):
        raise WireError(f"message is {type(parts).__name__}, expected a list of parts")
    if len(parts) not in (2, 3):
        raise WireError(f"message has {len(parts)} parts, expected 2 (dropped) or 3 (masked)")
    topic_view = _as_bytes_view(parts[0], "topic")
    header = _parse_header(_as_bytes_view(parts[1], "header"))
    has_pixels = len(parts) == 3
    # Checked before anything else about the header: pixels never ride on a non-masked header.
    if has_pixels and header.get("masked") is not True:
        raise WireError(f"message carries pixels but header says masked={header.get('masked')!r}")
    check_header(header)
    try:
        topic = bytes(topic_view).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError(f"topic is not UTF-8: {exc}") from exc
    if topic != header["camera_id"]:
        raise WireError(f"topic {topic!r} does not match camera_id {header['camera_id']!r}")
    if not has_pixels:
        if header["masked"]:
            raise WireError("masked header without a pixel part")
        return header, None
    return header, _decode_pixels(header, _as_bytes_view(parts[2], "pixel"))


def check_endpoint(address: str, *, bind: bool, name: str = "") -> str:
    """`address` if it is a ZeroMQ endpoint this product uses: tcp://HOST:PORT (port 1-65535; `*` or 0
    for any free port when binding) or ipc://PATH; else WireError naming what is wrong (after `name: `,
    the config key, when given)."""
    lead = f"{name}: " if name else ""
    scheme, sep, rest = address.partition("://")
    if not sep or scheme not in ("tcp", "ipc") or not rest:
        raise WireError(f"{lead}{address!r}: expected tcp://HOST:PORT or ipc://PATH")
    if scheme == "ipc":
        return address
    host, colon, port = rest.rpartition(":")
    if not colon or not host:
        raise WireError(f"{lead}{address!r}: expected tcp://HOST:PORT")
    if port == "*" and bind:
        return address
    if not port.isdigit() or not (0 if bind else 1) <= int(port) <= 65535:
        raise WireError(f"{lead}{address!r}: port {port!r} is not a number within {0 if bind else 1}-65535")
    return address
