"""Image files read for replay and batch: the size from the file's header first, decoded only when in bounds.

OpenCV cannot say how large an image is without decoding it, and a 20000x20000 PNG of a few
kilobytes decodes to 1.2 GB (and more in the detector's passes). So the size is read from the
header of the formats replay accepts (PNG, JPEG, BMP, WebP, TIFF; a few bytes each, no decoder),
and an image whose header cannot be read, or that is larger than a frame may be, is refused
before any pixel is decoded.
"""
from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

from edge.config import MAX_SIDE_PX
from edge.sources import SourceError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
MAX_FRAME_PX = 2**26  # 64 Mi px: twice an 8K frame; a frame's side is bounded by MAX_SIDE_PX too
JPEG_NO_LENGTH = {0x01, *range(0xD0, 0xDA)}  # markers without a length field (RSTn, SOI, EOI, TEM)
JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start of frame: its header holds the size
TIFF_WIDTH, TIFF_HEIGHT = 256, 257


def header_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) from the image file's header; None when the format is not one of those read here
    or the header is cut short or inconsistent."""
    with open(path, "rb") as f:
        head = f.read(32)
        try:
            if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
                return struct.unpack(">II", head[16:24])
            if head.startswith(b"\xff\xd8"):
                return _jpeg_size(f)
            if head.startswith(b"BM"):
                return _bmp_size(head)
            if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
                return _webp_size(head)
            if head[:4] in (b"II*\x00", b"MM\x00*"):
                return _tiff_size(f, "<" if head[:2] == b"II" else ">")
        except (struct.error, IndexError, ValueError):
            return None
    return None


def _jpeg_size(f) -> tuple[int, int] | None:
    f.seek(2)
    while True:
        byte = f.read(1)
        while byte and byte != b"\xff":  # garbage between segments: skipped as decoders do
            byte = f.read(1)
        while byte == b"\xff":  # fill bytes
            byte = f.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker in JPEG_NO_LENGTH:
            continue
        (length,) = struct.unpack(">H", f.read(2))
        if marker in JPEG_SOF:
            _, height, width = struct.unpack(">BHH", f.read(5))
            return width, height
        if length < 2:
            return None
        f.seek(length - 2, 1)


def _bmp_size(head: bytes) -> tuple[int, int]:
    (dib,) = struct.unpack("<I", head[14:18])
    if dib == 12:  # OS/2 BITMAPCOREHEADER
        return struct.unpack("<HH", head[18:22])
    width, height = struct.unpack("<ii", head[18:26])
    return abs(width), abs(height)  # a negative height is a top-down bitmap


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and head[20] == 0x2F:
        (bits,) = struct.unpack("<I", head[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    return None


def _tiff_size(f, order: str) -> tuple[int, int] | None:
    f.seek(4)
    (ifd,) = struct.unpack(order + "I", f.read(4))
    f.seek(ifd)
    (count,) = struct.unpack(order + "H", f.read(2))
    found: dict[int, int] = {}
    for _ in range(count):
        tag, kind, _n, value = struct.unpack(order + "HHI4s", f.read(12))
        if tag in (TIFF_WIDTH, TIFF_HEIGHT):
            # SHORT (3) sits in the first two bytes of the value field, LONG (4) fills it
            found[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), value[: 2 if kind == 3 else 4])[0]
    if TIFF_WIDTH in found and TIFF_HEIGHT in found:
        return found[TIFF_WIDTH], found[TIFF_HEIGHT]
    return None


def check_frame_size(width: int, height: int, what: str) -> None:
    """Refuse a frame larger than MAX_SIDE_PX a side or MAX_FRAME_PX in all (SourceError naming `what`)."""
    if width > MAX_SIDE_PX or height > MAX_SIDE_PX or width * height > MAX_FRAME_PX:
        raise SourceError(f"{what}: {width}x{height} is larger than a frame may be "
                          f"({MAX_SIDE_PX} px a side, {MAX_FRAME_PX // 2**20} Mi px)")


def read_image(path: str | Path) -> np.ndarray:
    """The decoded BGR image, or SourceError (one line) for a file whose header is unknown, too large, or
    that does not decode; its size is checked before a pixel is decoded."""
    try:
        size = header_size(path)
    except OSError as e:
        raise SourceError(f"{Path(path).name}: {e.strerror or e}") from None
    if size is None:
        raise SourceError(f"{Path(path).name}: not a PNG, JPEG, BMP, WebP or TIFF image whose size its header says")
    check_frame_size(*size, Path(path).name)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None or not image.size:
        raise SourceError(f"{Path(path).name}: does not decode")
    return image
