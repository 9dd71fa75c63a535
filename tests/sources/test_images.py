"""Image sizes from the file header (edge.sources.images): right for every format replay reads, and an image
larger than a frame may be is refused before a pixel is decoded, by the replay source and by batch's decoder."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import WIDER, need
from edge.fleet.plan import Chunk, Input
from edge.fleet.worker import decode_chunk
from edge.sources import SourceError
from edge.sources.images import MAX_FRAME_PX, header_size, read_image
from edge.sources.replay import ImageFolderSource


def png(path: Path, width: int, height: int) -> Path:
    """A valid 1-bit grayscale PNG of any size, written without ever holding its pixels (OpenCV would
    decode it into width x height x 3 bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(1)
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte, then the row's bits
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def jpeg_claiming(path: Path, width: int, height: int) -> Path:
    """A real JPEG whose frame header is patched to claim another size."""
    ok, buf = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))
    data = bytearray(buf.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5: sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("suffix, params", [
    (".png", []), (".jpg", []), (".jpeg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), (".bmp", []),
    (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), (".tif", []), (".tiff", []),
])
@pytest.mark.parametrize("shape", [(37, 53, 3), (480, 640, 3), (1, 3000, 3)])
def test_header_size_is_the_decoded_size_for_every_format(tmp_path, suffix, params, shape):
    path = tmp_path / f"x{suffix}"
    assert cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 256, shape, np.uint8), params)
    assert header_size(path) == (shape[1], shape[0]) == read_image(path).shape[1::-1]


def test_header_size_of_real_photos_matches_what_opencv_decodes():
    for path in sorted(need(WIDER / "images").glob("*.jpg"))[:30]:
        assert header_size(path) == cv2.imread(str(path)).shape[1::-1], path.name


# (how the file is made, what the one-line refusal says)
REFUSED = [
    (lambda p: png(p / "huge.png", 20000, 20000), "20000x20000 is larger than a frame may be"),
    (lambda p: png(p / "wide.png", 16385, 1), "16385x1 is larger than a frame may be"),
    (lambda p: png(p / "area.png", 8193, 8193), "8193x8193 is larger than a frame may be"),
    (lambda p: jpeg_claiming(p / "huge.jpg", 20000, 20000), "20000x20000 is larger than a frame may be"),
    (lambda p: (p / "fake.png").write_bytes(b"GIF89a" + bytes(64)) and p / "fake.png", "not a PNG, JPEG"),
    (lambda p: (p / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n") and p / "cut.png", "not a PNG, JPEG"),
]


@pytest.mark.parametrize("make, message", REFUSED)
def test_an_image_beyond_the_bound_or_of_unknown_size_is_refused_before_decoding(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(SourceError, match=message) as e:
        read_image(path)
    assert "\n" not in str(e.value)


def test_the_area_bound_lets_a_frame_of_the_bound_through(tmp_path):
    side = int(MAX_FRAME_PX ** 0.5)
    assert header_size(png(tmp_path / "edge.png", side, 16)) == (side, 16)
    assert read_image(tmp_path / "edge.png").shape == (16, side, 3)


@pytest.mark.parametrize("make, message", REFUSED[:4])
def test_replay_and_batch_skip_the_huge_image_and_keep_the_others(tmp_path, make, message):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "c.png"):
        cv2.imwrite(str(folder / name), np.full((24, 32, 3), 7, np.uint8))
    huge = make(tmp_path)
    huge.rename(folder / f"b{huge.suffix}")
    with ImageFolderSource(folder) as source:
        frames = [source.read(0), source.read(0)]
        assert [(f.name, f.seq) for f in frames] == [("a", 0), ("c", 2)]  # a gap in seq, as a lost frame
        assert source.stats()["unreadable"] == 1
    item = Input(str(folder), "folder", "in", "k", 3)
    assert [seq for seq, _ in decode_chunk(Chunk(item, 0, 0, 3))] == [0, 2]


def test_a_folder_of_only_huge_images_is_refused_naming_why(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    png(folder / "huge.png", 20000, 20000)
    with pytest.raises(SourceError, match="none of its 1 images can be decoded .*20000x20000 is larger"):
        ImageFolderSource(folder)


def test_a_huge_image_given_as_the_video_is_refused_before_decoding(tmp_path):
    from edge.sources.replay import open_replay

    with pytest.raises(SourceError, match="20000x20000 is larger"):
        open_replay(png(tmp_path / "huge.png", 20000, 20000))
