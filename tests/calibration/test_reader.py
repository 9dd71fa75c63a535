"""calibration/reader.py: the reader yields exactly the tensors the runtime's detector feeds the network."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration.reader import RuntimeCalibrationReader, iter_frames, runtime_detector
from edge import config as config_mod
from edge.config import Config
from conftest import VIDEO, need, preprocess


@pytest.fixture(scope="module")
def street_images(tmp_path_factory) -> Path:
    """Two real dashcam stills shrunk to sizes that are not multiples of 32 (padding is exercised)."""
    folder = tmp_path_factory.mktemp("calib_images")
    stills = sorted(need(VIDEO / "udacity_test_images").glob("*.jpg"))[:2]
    for still, size in zip(stills, [(200, 113), (161, 90)]):
        cv2.imwrite(str(folder / still.name.replace(".jpg", ".png")), cv2.resize(cv2.imread(str(still)), size))
    return folder


def native_faces() -> Config:
    """The face model's full-frame passes only (the default's horizon band adds inputs of its own)."""
    return config_mod.override(Config(), {"detect.face.tiles.enabled": False})


def _blobs(reader: RuntimeCalibrationReader) -> list[np.ndarray]:
    reader.rewind()
    out = []
    while (item := reader.get_next()) is not None:
        out.append(item[reader.input_name])
    return out


@pytest.mark.parametrize("scales", [(1.0,), (0.5, 2.0)])
def test_reader_yields_the_runtime_preprocessing(street_images, tmp_path, scales):
    cfg = config_mod.override(native_faces(), {"detect.face.scales": list(scales)})
    detector, card = runtime_detector(cfg, "face")
    reader = RuntimeCalibrationReader(detector, iter_frames([street_images]))
    images = [cv2.imread(str(p)) for p in sorted(street_images.iterdir())]
    expected = [preprocess(im, s, 32, card.input.channels)[0] for im in images for s in scales]
    got = _blobs(reader)
    assert len(reader) == len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.dtype == np.float32 and g.shape == e.shape
        np.testing.assert_array_equal(g, e)
    assert reader.input_name == "input"
    assert detector.backend.model.__class__.__name__ == "OnnxModel"  # the tap was removed again


def test_set_range_serves_one_input_at_a_time(street_images, tmp_path):
    detector, _ = runtime_detector(native_faces(), "face")
    reader = RuntimeCalibrationReader(detector, iter_frames([street_images]))
    reader.set_range(1, 2)
    first = reader.get_next()
    assert first is not None and first["input"].shape == (1, 3, 96, 192)
    assert reader.get_next() is None


def test_iter_frames_from_video_every_nth(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(7):
        writer.write(np.full((48, 64, 3), i * 30, np.uint8))
    writer.release()
    frames = list(iter_frames([path], every=3))
    assert [ref.index for ref, _ in frames] == [0, 3, 6]
    assert all(im.shape == (48, 64, 3) and im.dtype == np.uint8 for _, im in frames)
    assert len(list(iter_frames([path], every=1, per_source=2))) == 2


def test_iter_frames_refuses_unknown_sources(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("x")
    with pytest.raises(ValueError, match="not an image"):
        list(iter_frames([bad]))


def test_reader_without_frames_is_an_error(tmp_path):
    detector, _ = runtime_detector(native_faces(), "face")
    with pytest.raises(ValueError, match="no calibration frames"):
        RuntimeCalibrationReader(detector, iter([]))


def test_describe_names_sources_and_shapes(street_images, tmp_path):
    detector, _ = runtime_detector(native_faces(), "face")
    reader = RuntimeCalibrationReader(detector, iter_frames([street_images]))
    text = reader.describe()
    assert text.startswith("2 frames from calib_images") and "1x3x96x192" in text and "1x3x128x224" in text
