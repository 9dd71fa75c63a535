"""Shared fixtures: the real models and data from ../shared (skipped where that folder is absent)."""
from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGE_SHARED", ROOT.parent / "shared"))
MODELS = SHARED / "models"
VIDEO = SHARED / "data" / "video"
WIDER = SHARED / "data" / "eval" / "faces" / "wider_dev"
PLATES = SHARED / "data" / "eval" / "plates" / "openalpr_dev"

if MODELS.is_dir():
    # the same resolution path the product uses: by sha256 from a mirror folder
    os.environ["EDGE_MODEL_PATH"] = os.pathsep.join(p for p in (os.environ.get("EDGE_MODEL_PATH", ""), str(MODELS)) if p)


def host(model, family: str):
    """An OnnxModel behind the host-preprocessing backend, decoded by `family` (what OnnxDetector runs)."""
    from edge.detect.backends.host import HostBackend
    from edge.detect.families import family_module

    return HostBackend(model, family_module(family))


def preprocess(image: np.ndarray, scale: float, multiple: int, channels: str) -> tuple[np.ndarray, float, float]:
    """The production host blob of one image at `scale`, and the (x, y) factors back: x_frame = x_input / fx."""
    from edge.detect.backends.host import host_blob

    blob, geometry = host_blob([image], scale, scale, multiple, channels)
    fx, fy = geometry.factors(*image.shape[:2])
    return blob, fx, fy


class FakeDetector:
    """What a test double needs besides its own `detect` to be a whole Detector (edge.detect.Detector)."""

    models: tuple = ()
    providers: tuple = ("CPUExecutionProvider",)

    def detect_batch(self, images, watch=None):
        return [self.detect(image, watch) for image in images]

    def close(self) -> None:
        pass


class WrappedDetector(FakeDetector):
    """A test double around a real detector: its models and providers are the inner one's, closing closes it."""

    def __init__(self, inner) -> None:
        self.inner, self.models, self.providers = inner, inner.models, inner.providers

    def close(self) -> None:
        self.inner.close()


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


def load_script(name: str) -> types.ModuleType:
    """scripts/<name>.py imported by its path, registered as `name`.

    Run as `python scripts/<name>.py`, a script finds its sibling benchlib because Python puts the
    script's folder first on sys.path; here benchlib is loaded by path first instead.
    """
    if name != "benchlib" and "benchlib" not in sys.modules:
        load_script("benchlib")
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # a dataclass in it looks its module up while being defined
    spec.loader.exec_module(module)
    return module


def put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def pytest_collection_modifyitems(config, items):
    try:
        import onnxruntime as ort
        gpu = "CUDAExecutionProvider" in ort.get_available_providers() and os.path.exists("/dev/nvidia0")
    except Exception:
        gpu = False
    skip_gpu = pytest.mark.skip(reason="no CUDA GPU here")
    skip_net = pytest.mark.skip(reason="network test: set EDGE_NETWORK_TESTS=1")
    for item in items:
        if "gpu" in item.keywords and not gpu:
            item.add_marker(skip_gpu)
        if "network" in item.keywords and os.environ.get("EDGE_NETWORK_TESTS") != "1":
            item.add_marker(skip_net)


@pytest.fixture(autouse=True)
def _test_process_keeps_its_core_limit(monkeypatch):
    """Tools disable core dumps first thing in main. Called in-process here, that would set this process's
    hard RLIMIT_CORE to 0 for good, and every later child would start hardened already, so the tests that
    check the tools' hardening in a child (tests/test_tool_hardening.py) could no longer see it happen."""
    from edge.runtime import hardening

    monkeypatch.setattr(hardening, "disable_core_dumps", lambda: None)


@pytest.fixture(scope="session")
def yunet_model():
    from edge.models import registry
    from edge.detect.backends.session import OnnxModel

    card = registry.card("yunet_n")
    try:
        path = registry.resolve(card)
    except registry.ModelError as e:
        pytest.skip(str(e))
    return OnnxModel(path, name=card.name, sha256=card.sha256)


@pytest.fixture(scope="session")
def face_detector(yunet_model):
    from edge.detect.detector import OnnxDetector
    from edge.frame import FACE

    return OnnxDetector(host(yunet_model, "yunet"), class_id=FACE, score_threshold=0.5, nms_iou=0.45)


@pytest.fixture
def isolated_model_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No model search path, cards folder or http permission from the environment, and a private cache root."""
    for var in ("EDGE_MODEL_PATH", "EDGE_ALLOW_HTTP", "EDGE_MODEL_CARDS"):
        monkeypatch.delenv(var, raising=False)
    # nothing here may touch the real ~/.cache
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def yunet():
    """The yunet_n model card."""
    from edge.models import registry

    return registry.card("yunet_n")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """An empty model cache folder (replaces pytest's own `cache` fixture, which no test here uses)."""
    return tmp_path / "cache"


@pytest.fixture
def yunet_bytes() -> bytes:
    """The real yunet_n weights, the bytes its card's sha256 names."""
    return need(MODELS / "yunet_n_dynamic.onnx").read_bytes()


@pytest.fixture
def corrupt_bytes(yunet_bytes: bytes) -> bytes:
    data = bytearray(yunet_bytes)
    data[len(data) // 2] ^= 0xFF
    return bytes(data)


def load_wider_gt() -> dict[str, np.ndarray]:
    gt: dict[str, list] = {}
    current = None
    for line in (need(WIDER) / "gt_xyxy.txt").read_text().splitlines():
        if line.startswith("#"):
            current = line.split()[1]
            gt[current] = []
        elif line.strip():
            gt[current].append([float(v) for v in line.split()])
    return {k: np.array(v, np.float32).reshape(-1, 4) for k, v in gt.items()}


@pytest.fixture(scope="session")
def wider_gt():
    return load_wider_gt()


def video_frames(path) -> list[np.ndarray]:
    """Every frame OpenCV decodes from a video file, in order."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            cap.release()
            return frames
        frames.append(image)


def unheld(rows: list[dict]) -> list[dict]:
    """Detections.to_list rows as the wire and detections.jsonl carry them for a frame nothing was held in."""
    return [{**row, "held": False} for row in rows]
