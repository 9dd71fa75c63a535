"""The fault table, on the service as it runs (edge.runtime.service.build_service + Service.run) with real parts.

Each row puts one fault around the real YuNet detector, a real source (OpenCV-decoded images and
videos, the real CameraSource) or the real ZeroMQ output, runs the service, and checks:

* nothing unmasked left: every written frame is re-examined with the real detector, and any face
  it still finds must lie inside the painted regions (solid fill); frames masked whole are all zero;
* the fault is counted (``Service.faults()``) and visible in the STATUS= datagrams sent to a real
  AF_UNIX socket standing in for systemd.

Rows covered elsewhere, not repeated here: per-model-output corruption (NaN / inf / missing /
wrong-shaped tensors of the real model) in tests/test_pipeline.py; SIGTERM mid-stream on a real
``python -m edge run`` in tests/test_cli.py and tests/test_service.py; slow-subscriber memory
bound of the publisher in tests/sinks/test_zmq_pub.py (and scripts/soak.py --slow-consumer).
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import MODELS, VIDEO, WIDER, WrappedDetector, need, video_frames
from edge import compose
from edge import config as config_mod
from edge.compose import StartupError
from edge.runtime.service import build_service
from edge.frame import Detections
from edge.runtime.systemd import Notifier
from edge.sources.camera import CameraSource
from edge.sources.replay import open_replay

ROOT = Path(__file__).resolve().parents[1]
FACES = ["0_Parade_Parade_0_102.jpg", "0_Parade_Parade_0_72.jpg",
         "2_Demonstration_Demonstration_Or_Protest_2_367.jpg", "0_Parade_marchingband_1_746.jpg"]
RUN_TIMEOUT_S = 60.0


# --- helpers -------------------------------------------------------------------------------------

def face_images() -> list[np.ndarray]:
    return [cv2.imread(str(need(WIDER / "images" / n))) for n in FACES]


def image_folder(path: Path, sizes: list[tuple[int, int]] | None = None, n: int = len(FACES)) -> Path:
    """`n` real face photos as PNG files, optionally resized (w, h) one by one."""
    path.mkdir()
    for i, image in enumerate(face_images()[:n]):
        if sizes:
            image = cv2.resize(image, sizes[i % len(sizes)])
        cv2.imwrite(str(path / f"f{i}.png"), image)
    return path


def face_video(path: Path, repeats: int = 2) -> Path:
    """An MJPG video of the face photos (so the feed has faces to leak)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (416, 416))
    for _ in range(repeats):
        for image in face_images():
            writer.write(image)
    writer.release()
    return path


def make_config(tmp_path: Path, source: str = "unused", *, kind: str = "replay", output: str = "", **service) -> config_mod.Config:
    out = output or f'kind = "folder"\ndir = "{tmp_path / "out"}"'
    svc = "\n".join(f"{k} = {json.dumps(v)}" for k, v in {"deadline_ms": 0, "stats_interval_s": 0, **service}.items())
    text = f"""
[service]
{svc}
[mask]
style = "solid"
[track]
enabled = false
[output]
{out}
[[cameras]]
id = "cam"
kind = "{kind}"
source = "{source}"
realtime = false
"""
    (tmp_path / "c.toml").write_text(text)
    return config_mod.load(tmp_path / "c.toml")


class SystemdSocket:
    """A real AF_UNIX datagram socket as NOTIFY_SOCKET; collects every datagram."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.notifier = Notifier({"NOTIFY_SOCKET": str(path)})

    def statuses(self) -> list[str]:
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                for line in self.sock.recv(65536).decode().splitlines():
                    if line.startswith("STATUS="):
                        out.append(line[len("STATUS="):])
        except BlockingIOError:
            return out

    def close(self) -> None:
        self.notifier.close()
        self.sock.close()


@pytest.fixture(scope="module")
def shared_detector():
    """The real face detector, loaded and warmed up once for the module (every service below runs it)."""
    detector = compose.build_detector(config_mod.Config())
    compose.warm_up(detector)
    return detector


@pytest.fixture()
def systemd(tmp_path):
    s = SystemdSocket(tmp_path / "notify.sock")
    yield s
    s.close()


@pytest.fixture()
def run(shared_detector, systemd, monkeypatch):
    """Build the service from a config (with fault hooks), run it until `until` or the feed ends, stop it."""
    monkeypatch.setattr(compose, "build_detector", lambda cfg, stop=None: shared_detector)
    monkeypatch.setattr(compose, "warm_up", lambda detector, stop=None: None)  # warmed once already, by the module fixture

    def go(cfg, *, until=None, wrap_detector=None, open_source=None, during=None):
        stop = threading.Event()
        service = build_service(cfg, stop, systemd.notifier, wrap_detector=wrap_detector, open_source=open_source)
        result = {}
        thread = threading.Thread(target=lambda: result.setdefault("rc", service.run()), daemon=True)
        thread.start()
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while thread.is_alive() and time.monotonic() < deadline:
            if during is not None:
                during(service)
            if until is not None and until(service):
                break
            time.sleep(0.02)
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "service did not stop"
        return service, result["rc"], systemd.statuses()

    return go


def outputs(out_dir: Path) -> tuple[list[dict], dict[str, np.ndarray]]:
    lines = [json.loads(line) for line in (out_dir / "detections.jsonl").read_text().splitlines()]
    images = {p.stem: cv2.imread(str(p)) for p in sorted(out_dir.glob("*.png"))}
    return lines, images


def covered(box: np.ndarray, regions: list[list[int]], shape) -> float:
    """Share of `box` inside the union of painted regions."""
    h, w = shape[:2]
    painted = np.zeros((h, w), bool)
    for x1, y1, x2, y2 in regions:
        painted[max(0, y1):min(h, y2), max(0, x1):min(w, x2)] = True
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    area = max(1, (x2 - x1) * (y2 - y1))
    return float(painted[y1:y2, x1:x2].sum()) / area


def assert_nothing_unmasked(out_dir: Path, detector, original) -> tuple[int, int]:
    """Every written frame: masked whole -> all zero; masked -> every face the real detector finds in
    the ORIGINAL of that frame lies inside the solid-filled regions of what was written.

    `original(name)` gives the input image an output came from. Returns (frames written, dropped
    records), so a row can check the fault really happened.
    """
    lines, images = outputs(out_dir)
    written = [ln for ln in lines if ln["status"] != "dropped"]
    assert sorted(ln["frame"] for ln in written) == sorted(images), "an image without its record, or vice versa"
    for ln in written:
        image = images[ln["frame"]]
        if ln["status"] == "masked_whole":
            assert (image == 0).all(), ln["frame"]
            continue
        for x1, y1, x2, y2 in ln["boxes"]:
            assert (image[y1:y2, x1:x2] == 0).all(), f"{ln['frame']}: region not filled"
        found = detector.detect(original(ln["frame"]))
        # context boxes (persons, vehicles) are detected, never painted; every masked-class box must be
        masked = ~compose.class_table(config_mod.Config()).is_context(found.class_id)
        faces = found.xyxy[masked]
        assert len(faces), f"{ln['frame']}: the input has no face, the check would prove nothing"
        for box in faces:
            assert covered(box, ln["boxes"], image.shape) >= 0.9, f"{ln['frame']}: a face left unmasked at {box}"
    return len(written), len(lines) - len(written)


def from_folder(folder: Path):
    return lambda name: cv2.imread(str(folder / f"{name}.png"))


def from_video_frames(images: list[np.ndarray]):
    return lambda name: images[int(name) % len(images)]


# --- detector faults -----------------------------------------------------------------------------

class Faulty(WrappedDetector):
    """Wraps the real detector (it still runs on every frame); every other frame gets the fault."""

    def __init__(self, inner, fault) -> None:
        super().__init__(inner)
        self.fault, self.calls = fault, 0

    def detect(self, image, watch=None):
        dets = self.inner.detect(image, watch)
        self.calls += 1
        return self.fault(dets) if self.calls % 2 == 0 else dets


def _raise(dets):
    raise RuntimeError("CUDA error: an illegal memory access was encountered")


def _nan(dets):
    xyxy = dets.xyxy.copy() if len(dets) else np.zeros((1, 4), np.float32)
    xyxy[:, 1] = np.nan
    return Detections(xyxy, np.ones(len(xyxy)), np.zeros(len(xyxy), int))  # the seam refuses: BadDetections


def _inverted(dets):
    return Detections([[100, 100, 10, 10]], [0.9], [0])


def _slow(dets):
    time.sleep(0.12)  # past the 60 ms deadline whatever the machine: the frame must not go out late
    return dets


DETECTOR_FAULTS = {
    "raises": (_raise, "detector_error"),
    "NaN boxes": (_nan, "bad_output"),
    "returns a list": (lambda d: [[0, 0, 10, 10, 0.9]], "bad_output"),
    "inverted boxes": (_inverted, "bad_output"),
    "slower than the deadline": (_slow, "deadline"),
}


@pytest.mark.parametrize("fault", list(DETECTOR_FAULTS))
@pytest.mark.parametrize("on_failure", ["drop", "mask_whole"])
def test_detector_fault(tmp_path, run, shared_detector, fault, on_failure):
    fn, reason = DETECTOR_FAULTS[fault]
    deadline = {"deadline_ms": 60} if reason == "deadline" else {}
    cfg = make_config(tmp_path, str(image_folder(tmp_path / "in", n=2)), on_failure=on_failure, **deadline)
    service, rc, statuses = run(cfg, wrap_detector=lambda d: Faulty(d, fn))
    assert rc == 0
    written, dropped_records = assert_nothing_unmasked(tmp_path / "out", shared_detector, from_folder(tmp_path / "in"))
    n_faulty, n_frames = 1, 2
    if reason == "deadline":  # a contended machine may make a healthy frame late as well, never the reverse
        assert service.faults()["deadline"] >= n_faulty
    else:
        assert service.faults()[reason] == n_faulty
    if on_failure == "drop":
        assert dropped_records == service.faults()[reason] and written == n_frames - dropped_records
        assert f"{reason} " in statuses[-1].split("whole")[0]
    else:
        assert written == n_frames and dropped_records == 0
        assert f"whole {service.faults()[reason]} ({reason} " in statuses[-1]


def test_hung_detector_stops_the_watchdog(tmp_path, run, systemd):
    """A detector that never returns: the loop stops feeding WATCHDOG=1, so systemd would restart us."""
    release, blocked = threading.Event(), threading.Event()

    class Hangs(WrappedDetector):
        def __init__(self, inner):
            super().__init__(inner)
            self.calls = 0

        def detect(self, image, watch=None):
            self.calls += 1
            if self.calls >= 3:
                blocked.set()
                release.wait(RUN_TIMEOUT_S)
            return self.inner.detect(image, watch)

    path = tmp_path / "wd.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    systemd.notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "40000"})  # ping every 20 ms
    cfg = make_config(tmp_path, str(image_folder(tmp_path / "in")))
    seen = {}

    def during(service):
        if blocked.is_set() and "before" not in seen:
            seen["before"] = drain(sock)
            time.sleep(0.3)  # 15 watchdog intervals with the loop stuck inside the detector
            seen["while_hung"] = drain(sock)
            release.set()

    try:
        run(cfg, wrap_detector=Hangs, until=lambda s: "while_hung" in seen, during=during)
    finally:
        release.set()
        sock.close()
    assert "WATCHDOG=1" in seen["before"]  # it was being fed while frames flowed
    assert "WATCHDOG=1" not in seen["while_hung"]


def drain(sock) -> list[str]:
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(65536).decode())
    except BlockingIOError:
        return out


# --- source faults -------------------------------------------------------------------------------

class ScriptedCamera:
    """A capture over real decoded photos that stalls and disconnects on cue (one script for all connections).

    Each good frame waits for a token the detector hands back after a frame, so the newest-frame
    slot never overwrites one: every scripted frame reaches the pipeline.
    """

    def __init__(self, script: list[str], images: list[np.ndarray], clock: list[float],
                 tokens: threading.Semaphore, opened: bool = True) -> None:
        self.script, self.images, self.clock, self.tokens, self.opened = script, images, clock, tokens, opened
        self.i = 0

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        return self.opened

    def read(self):
        step = self.script.pop(0) if self.script else "gone"
        if step in ("gone", "fail"):
            time.sleep(0.01)
            return False, None
        if step == "raise":
            raise cv2.error("VIDEOIO(V4L2): select() timeout")
        if step == "stall":
            self.clock[0] += 5.0  # this frame comes 5 s after the previous one: the source drops it
        else:
            self.tokens.acquire(timeout=10)
        self.clock[0] += 0.05
        self.i += 1
        return True, self.images[self.i % len(self.images)].copy()

    def release(self) -> None:
        pass


class HandsBackTokens(WrappedDetector):
    def __init__(self, inner, tokens: threading.Semaphore) -> None:
        super().__init__(inner)
        self.tokens = tokens

    def detect(self, image, watch=None):
        try:
            return self.inner.detect(image, watch)
        finally:
            self.tokens.release()


def test_camera_that_stalls_disconnects_and_comes_back(tmp_path, run, shared_detector):
    clock, tokens = [0.0], threading.Semaphore(1)
    images = face_images()[:1]  # one picture: every output's original is known whatever its seq
    script = ["frame", "frame", "stall", "frame", "fail", "frame", "frame", "raise", "frame", "frame"]
    opens = iter([True, True, False, True, True])  # one reopen attempt finds the camera absent

    def open_camera(cam):
        source = CameraSource("scripted", cam.id, stall_timeout=2.0, clock=lambda: clock[0],
                              wait=lambda stop, s: stop.wait(0.02),
                              open_capture=lambda: ScriptedCamera(script, images, clock, tokens, next(opens, False)))
        return source.start()

    cfg = make_config(tmp_path, "0", kind="camera")
    service, rc, statuses = run(cfg, open_source=open_camera, wrap_detector=lambda d: HandsBackTokens(d, tokens),
                                until=lambda s: not script and s.metrics.counters().get("frames_in", 0) >= 7)
    assert rc == 0
    written, _ = assert_nothing_unmasked(tmp_path / "out", shared_detector, lambda name: images[0])
    assert written == 7  # every good frame, none of the stalled one
    faults = service.faults()
    assert faults["source_gaps"] >= 3 and faults["source_reopens"] >= 3 and faults["source_reopen_failures"] >= 1
    assert "source gaps" in statuses[-1] and "reopens" in statuses[-1]


def test_frames_of_changing_size(tmp_path, run, shared_detector):
    sizes = [(416, 416), (640, 360), (320, 240), (832, 832)]
    cfg = make_config(tmp_path, str(image_folder(tmp_path / "in", sizes)))
    service, rc, statuses = run(cfg)
    assert rc == 0
    written, _ = assert_nothing_unmasked(tmp_path / "out", shared_detector, from_folder(tmp_path / "in"))
    assert written == len(FACES)
    _, images = outputs(tmp_path / "out")
    assert sorted(im.shape[1::-1] for im in images.values()) == sorted(sizes)
    assert service.faults()["frame_size_changes"] == len(sizes) - 1
    assert f"size-changes {len(sizes) - 1}" in statuses[-1]


def test_truncated_video_masks_what_decodes_then_ends(tmp_path, run, shared_detector):
    whole = face_video(tmp_path / "faces.avi")
    data = whole.read_bytes()
    start, end = data.find(b"movi"), data.find(b"idx1")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: start + (end - start) * 5 // 8])
    cfg = make_config(tmp_path, str(cut))
    service, rc, statuses = run(cfg)
    assert rc == 0
    written, _ = assert_nothing_unmasked(tmp_path / "out", shared_detector, from_video_frames(video_frames(cut)))
    assert 0 < written < 2 * len(FACES)
    assert service.faults()["source_truncated"] == 1
    assert "source truncated 1" in statuses[-1]


def test_corrupt_video_refuses_to_start_naming_it(tmp_path, run):
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(StartupError, match="garbage.mp4") as e:
        run(make_config(tmp_path, str(bad)), open_source=None)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.png"))


# --- output faults -------------------------------------------------------------------------------

def zmq_output(tmp_path: Path, sndhwm: int = 1) -> str:
    return f'kind = "zmq"\nbind = "ipc://{tmp_path}/out.sock"\nsndhwm = {sndhwm}'


def looping_folder(tmp_path: Path):
    def open_source(cam):
        return open_replay(tmp_path / "in", camera_id=cam.id, realtime=False, loop=True)
    return open_source


def test_slow_subscriber_costs_counted_drops_and_gets_only_masked_frames(tmp_path, run):
    from edge.subscribe import Subscriber

    image_folder(tmp_path / "in")
    cfg = make_config(tmp_path, output=zmq_output(tmp_path))
    sub = Subscriber(f"ipc://{tmp_path}/out.sock", rcvhwm=1)
    try:
        service, rc, statuses = run(cfg, open_source=looping_folder(tmp_path),
                                    until=lambda s: s.metrics.counters().get("sink_dropped", 0) >= 3)
        got = list(iter(lambda: sub.recv(0.5), None))  # what was queued for it, until the queue is empty
    finally:
        sub.close()
    assert rc == 0
    assert service.faults()["sink_dropped"] >= 3 and service.faults()["sink_errors"] == 0
    assert f"sink-dropped {service.faults()['sink_dropped']}" in statuses[-1]
    assert got and all(h["masked"] is True and h["boxes"] for h, _ in got)
    for header, image in got:  # what did arrive is masked: the painted regions are solid
        for x1, y1, x2, y2 in header["boxes"]:
            assert (image[y1:y2, x1:x2] == 0).all()


def test_subscriber_that_disappears_leaves_the_service_running(tmp_path, run):
    from edge.subscribe import Subscriber

    image_folder(tmp_path / "in")
    cfg = make_config(tmp_path, output=zmq_output(tmp_path, sndhwm=4))
    state = {"sub": Subscriber(f"ipc://{tmp_path}/out.sock"), "got": 0, "frames_at_close": None}

    def during(service):
        sub = state["sub"]
        if sub is not None and sub.recv(0.05) is not None:
            state["got"] += 1
            if state["got"] >= 3:
                sub.close()  # the consumer process dies
                state["sub"] = None
                state["frames_at_close"] = service.metrics.counters()["frames_in"]

    def until(service):
        return (state["frames_at_close"] is not None
                and service.metrics.counters()["frames_in"] >= state["frames_at_close"] + 10)

    try:
        service, rc, statuses = run(cfg, open_source=looping_folder(tmp_path), during=during, until=until)
    finally:
        if state["sub"] is not None:
            state["sub"].close()
    assert rc == 0 and not service.errors
    assert service.faults()["sink_errors"] == 0
    assert service.sink.stats()["subscriptions"] == 0  # it noticed the consumer left
    assert statuses and "sink-errors" not in statuses[-1]


# --- restart with a replaced model ---------------------------------------------------------------

def test_model_replaced_by_a_different_file_is_refused_at_restart(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "yunet_n_dynamic.onnx").write_bytes(need(MODELS / "yunet_n_dynamic.onnx").read_bytes())
    monkeypatch.delenv("EDGE_MODEL_PATH", raising=False)
    image_folder(tmp_path / "in")
    cfg = make_config(tmp_path, str(tmp_path / "in"))
    cfg = config_mod.override(cfg, {"models.mirrors": [str(mirror)], "models.cache_dir": str(tmp_path / "cache"),
                                    "detect.plate.enabled": False, "detect.context.enabled": False,
                                    # faces only (plates and persons off): below the self-test's plate floors
                                    "selftest.skip": "a restart check of the face model alone"})
    first = build_service(cfg, threading.Event(), Notifier({}))
    first.close()
    # between two runs, someone swaps the file for another (valid!) ONNX model of the same name
    (mirror / "yunet_n_dynamic.onnx").write_bytes(need(MODELS / "yunet_s_dynamic.onnx").read_bytes())
    with pytest.raises(StartupError, match="yunet_n") as e:
        build_service(cfg, threading.Event(), Notifier({}))
    assert "104ee26c71d5c270" in str(e.value) and "\n" not in str(e.value)


# --- refusals to start, as systemd sees them -----------------------------------------------------

def _refusal_config(tmp_path: Path, problem: str) -> Path:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    camera = f'[[cameras]]\nid = "front"\nkind = "camera"\nsource = "/dev/video99"\n'
    replay = f'[[cameras]]\nid = "front"\nkind = "replay"\nsource = "{need(VIDEO / "vtest_pets2009_480x360.avi")}"\n'
    folder = f'[output]\nkind = "folder"\ndir = "{tmp_path / "out"}"\n'
    text = {
        "bad config": '[service]\ndeadline_ms = "fast"\n' + replay,
        "missing camera": folder + camera,
        "model fails verification": f'[detect.face]\nmodel = "yunet_n"\n[models]\nmirrors = ["{tmp_path / "m"}"]\n'
                                    f'cache_dir = "{tmp_path / "cache"}"\n' + folder + replay,
        "unwritable output": f'[output]\nkind = "folder"\ndir = "{blocker / "out"}"\n' + replay,
        "unwritable audit": f'[service]\naudit_path = "{blocker / "audit.jsonl"}"\n' + folder + replay,
    }[problem]
    if problem == "model fails verification":
        (tmp_path / "m").mkdir()
        data = bytearray(need(MODELS / "yunet_n_dynamic.onnx").read_bytes())
        data[2000] ^= 0xFF
        (tmp_path / "m" / "yunet_n_dynamic.onnx").write_bytes(bytes(data))
    (tmp_path / "c.toml").write_text(text)
    return tmp_path / "c.toml"


@pytest.mark.parametrize("problem, needle", [
    ("bad config", "service.deadline_ms: expected a number"),
    ("missing camera", "/dev/video99"),
    ("model fails verification", "104ee26c71d5c270"),
    ("unwritable output", "not-a-dir/out"),
    ("unwritable audit", "audit_path"),
])
def test_refuses_to_start_with_one_clear_line(tmp_path, problem, needle):
    cfg = _refusal_config(tmp_path, problem)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if problem == "model fails verification":
        env.pop("EDGE_MODEL_PATH", None)
    r = subprocess.run([sys.executable, "-m", "edge", "run", "-c", str(cfg)], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 2  # a failed start (Restart=on-failure with StartLimit* gives up), not a crash
    problem_lines = [ln for ln in r.stderr.splitlines() if "refusing to start" in ln or "invalid configuration" in ln]
    assert len(problem_lines) == 1 and needle in problem_lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not list(tmp_path.rglob("*.png"))


def test_cameras_batched_through_shared_inference_calls_mask_every_frame(tmp_path, run, shared_detector):
    from edge.detect.batching import BatchingDetector

    folder = image_folder(tmp_path / "in", n=4)
    cfg = make_config(tmp_path, str(folder))
    cam = cfg.cameras[0]
    cfg = dataclasses.replace(cfg, cameras=(cam, dataclasses.replace(cam, id="cam2")),
                              runtime=dataclasses.replace(cfg.runtime, batch_cameras=True, batch_wait_ms=100))
    service, rc, _ = run(cfg)
    assert rc == 0
    assert isinstance(service.detector, BatchingDetector)
    assert service.detector.frames == 8 and service.detector.batches < 8  # some frames shared a call
    # both cameras replay the same file names: the second camera's frames are stored as cam2__<name>
    written, dropped = assert_nothing_unmasked(tmp_path / "out", shared_detector,
                                               lambda name: cv2.imread(str(folder / f"{name.split('__')[-1]}.png")))
    assert (written, dropped) == (8, 0)
