"""What runs inside Ray's worker processes: hardening, detection of one chunk, painting of one input.

Two steps per input, so that the temporal hold sees every frame in order, exactly as `replay`:

1. detect (DetectWorker, a long-lived actor per CPU share or GPU): decodes one chunk of frames and
   runs the config's detector on each; what leaves the actor is a ChunkResult of boxes, scores and
   a digest of each frame's pixels, never pixels. A decoder thread reads ahead while the detector
   runs (onnxruntime releases the GIL), so decoding overlaps detection inside the actor, and the
   detections are all that crosses Ray's object store.
2. paint (paint_input, a plain task per input once all its chunks are detected): replays the input
   through the service's own parts built by edge.compose (source, pipeline with its hold, sink) with
   a RecordedDetector in place of the models, and writes the outputs and the audit record under a
   temporary name. The hold is therefore carried across chunk borders, not re-warmed by a pre-roll:
   every region `replay` paints, batch paints. A detection is used only on the pixels it was found in
   (the digest); any frame without a matching detection fails closed in the pipeline (dropped, or
   masked whole with service.on_failure = "mask_whole") and is counted as a detector error.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import queue
import resource
import shutil
import threading
import time
from pathlib import Path

import numpy as np

from edge.fleet.plan import BAD_FRAME, BAD_OUTPUT, DETECTOR_ERROR, OK, Chunk, ChunkResult, Input, folder_files

log = logging.getLogger(__name__)

PR_GET_DUMPABLE = 3
READ_AHEAD = 4  # decoded frames waiting for the detector: memory of a few frames, never disk


def setup_worker() -> None:
    """Ray's worker_process_setup_hook: the service's hardening in every worker process before it runs anything.

    No core dumps (a crash of a worker holds raw frames), onnxruntime's telemetry off before it is
    imported. A worker that cannot be hardened raises, and Ray does not use it.
    """
    from edge.runtime.hardening import disable_core_dumps, disable_runtime_telemetry

    os.environ["ORT_DISABLE_TELEMETRY"] = "1"
    disable_runtime_telemetry()
    disable_core_dumps()


def hardening_state() -> dict:
    """What a test or the driver checks of a worker process: its core limit, dumpable flag, telemetry."""
    return {"pid": os.getpid(), "rlimit_core": list(resource.getrlimit(resource.RLIMIT_CORE)),
            "dumpable": _dumpable(), "ort_telemetry_off": os.environ.get("ORT_DISABLE_TELEMETRY") == "1"}


def _dumpable() -> int:
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return int(libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))


def require_hardened() -> None:
    """Harden again (idempotent) and refuse to handle frames in a process that is not."""
    setup_worker()
    state = hardening_state()
    if state["rlimit_core"] != [0, 0] or state["dumpable"] != 0:
        raise RuntimeError(f"worker {os.getpid()} is not hardened: {state}")


def digest(image: np.ndarray) -> bytes:
    """16 bytes naming a frame's exact pixels (and shape): detections travel with the frame they belong to."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(image.shape).encode())
    h.update(np.ascontiguousarray(image).data)
    return h.digest()


def decode_chunk(chunk: Chunk):
    """(seq, image) for each frame of the chunk, numbered as edge.sources.replay numbers them."""
    import cv2

    from edge.sources import SourceError
    from edge.sources.images import read_image

    item = chunk.input
    if item.kind == "folder":
        files = folder_files(Path(item.path))
        stop = len(files) if chunk.stop is None else min(chunk.stop, len(files))
        for i in range(chunk.start, stop):
            try:
                image = read_image(files[i])  # its size checked before decoding, as the replay source does
            except SourceError:
                continue  # an unreadable image leaves a gap in seq, as the replay source does
            yield i, image
        return
    cap = cv2.VideoCapture(item.path)
    try:
        if not cap.isOpened():
            raise OSError(f"video {item.path}: cannot be opened as a video (unknown format or corrupt)")
        if chunk.start:
            cap.set(cv2.CAP_PROP_POS_FRAMES, chunk.start)
        seq = chunk.start
        while chunk.stop is None or seq < chunk.stop:
            try:
                ok, image = cap.read()
            except cv2.error:
                ok, image = False, None
            if not ok or image is None or image.size == 0:
                break
            yield seq, image
            seq += 1
    finally:
        cap.release()


def read_ahead(frames, depth: int = READ_AHEAD):
    """The frames of `frames`, decoded on a thread `depth` frames ahead of the consumer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in frames:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:  # handed to the consumer, which raises it
            q.put(e)

    t = threading.Thread(target=produce, name="decode", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        t.join(timeout=5)


def actor_config(cfg, threads: int):
    """The config an actor runs: onnxruntime limited to its CPU share unless runtime.threads says otherwise."""
    from edge import config as config_mod

    if cfg.runtime.threads:
        return cfg
    return config_mod.override(cfg, {"runtime.threads": threads})


class DetectWorker:
    """A detector actor: models loaded and verified once (by sha256, edge.compose), then chunk after chunk."""

    def __init__(self, cfg) -> None:
        require_hardened()
        import cv2

        from edge import compose

        cv2.setNumThreads(1)  # the decoder thread only: the CPU share is the detector's
        self.cfg = cfg
        self.detector = compose.build_detector(cfg)
        compose.warm_up(self.detector)
        self.models = tuple(tuple(m) for m in self.detector.models)
        self.providers = tuple(self.detector.providers)

    def info(self) -> dict:
        return {**hardening_state(), "models": [list(m) for m in self.models], "providers": list(self.providers)}

    def detect(self, chunk: Chunk) -> ChunkResult:
        from edge.frame import BadDetections, BadFrame, Detections, check_image
        from edge.timing import Stopwatch

        frames = []
        t0 = time.perf_counter()
        for seq, image in read_ahead(decode_chunk(chunk)):
            key = digest(image)
            try:
                check_image(image)
            except BadFrame as e:
                frames.append((seq, key, BAD_FRAME, None, str(e)))
                continue
            try:
                dets = self.detector.detect(image, Stopwatch())
                if not isinstance(dets, Detections):
                    raise BadDetections(f"detector returned {type(dets).__name__}, expected Detections")
                frames.append((seq, key, OK, dets, ""))
            except BadDetections as e:
                frames.append((seq, key, BAD_OUTPUT, None, str(e)))
            except Exception as e:  # the pipeline fails the frame closed when it paints
                frames.append((seq, key, DETECTOR_ERROR, None, f"{type(e).__name__}: {e}"))
        return ChunkResult.build(frames, (time.perf_counter() - t0) * 1e3)

    def pid(self) -> int:
        return os.getpid()


class RecordedDetector:
    """The Detector seam over detections found earlier by the actors, for the frames they were found in.

    `expect(frame)` (called by the source wrapper as each frame is read) names the frame the next
    detect() is about; detect() returns its detections only if the pixels are the same (digest),
    else raises, and the pipeline fails that frame closed like any other detector failure.
    """

    def __init__(self, results: list[ChunkResult], models, providers) -> None:
        self.models = tuple(tuple(m) for m in models)
        self.providers = tuple(providers)
        self._by_seq: dict[int, tuple[bytes, int, object, str]] = {}
        for result in results:
            for seq, key, outcome, dets, message in result.frames():
                self._by_seq.setdefault(seq, (key, outcome, dets, message))
        self._seq: int | None = None
        self.mismatches = 0

    def expect(self, seq: int) -> None:
        self._seq = seq

    def detect(self, image: np.ndarray, watch=None):
        from edge.frame import BadDetections

        seq, self._seq = self._seq, None
        found = self._by_seq.get(seq) if seq is not None else None
        if found is None:
            self.mismatches += 1
            raise RuntimeError(f"frame {seq}: no detections were recorded for it")
        key, outcome, dets, message = found
        if key != digest(image):
            self.mismatches += 1
            raise RuntimeError(f"frame {seq}: its pixels differ from the frame the detections were found in")
        if outcome == BAD_OUTPUT:
            raise BadDetections(message)
        if outcome != OK:
            raise RuntimeError(message or "detection failed")
        return dets

    def detect_batch(self, images, watch=None):
        return [self.detect(image, watch) for image in images]

    def close(self) -> None:
        self._by_seq.clear()


class ExpectingSource:
    """A source that tells the RecordedDetector which frame comes next."""

    def __init__(self, source, detector: RecordedDetector) -> None:
        self.source, self.detector = source, detector
        self.camera_id = source.camera_id

    def read(self, timeout: float):
        frame = self.source.read(timeout)
        if frame is not None:
            self.detector.expect(frame.seq)
        return frame

    def stats(self) -> dict:
        return self.source.stats()

    def close(self) -> None:
        self.source.close()


def input_config(cfg, item: Input, staging: Path, camera_id: str):
    """The config `replay` would run this input with, its outputs and audit record under `staging`."""
    from edge import config as config_mod
    from edge.config import CameraConfig

    cam = CameraConfig(id=camera_id, source=item.path, kind="replay", realtime=False, loop=False, fps=0.0)
    cfg = dataclasses.replace(cfg, cameras=(cam,))
    changes = {"service.deadline_ms": 0.0, "service.audit_path": str(staging / "audit.jsonl")}
    if cfg.output.kind == "video":
        suffix = Path(cfg.output.file).suffix or ".mkv"
        changes.update({"output.file": str(staging / f"{item.name}{suffix}"),
                        "output.records": str(staging / "detections.jsonl")})
    else:
        changes.update({"output.kind": "folder", "output.dir": str(staging)})
    return config_mod.override(cfg, changes)


def paint_input(cfg, item: Input, results: list[ChunkResult], models, providers, output_dir: str,
                camera_id: str = "replay") -> dict:
    """Replay one input with its recorded detections into `output_dir/<name>`, renamed there when complete.

    Returns the summary: counters, source stats, sink stats, errors and the output path. A failure
    leaves no output under the final name (the staging folder is removed). Ray runs it as paint_task.
    """
    import tempfile

    import cv2

    from edge import compose
    from edge.metrics import Metrics
    from edge.pipeline import run_loop
    from edge.runtime.audit import AuditLog
    from edge.runtime.service import model_records
    from edge.sinks.wrappers import LockedSink
    from edge.sources.watched import WatchedSource

    cv2.setNumThreads(1)
    out_root = Path(output_dir)
    final = out_root / item.name
    staging = Path(tempfile.mkdtemp(prefix=f".{item.name}.", suffix=".partial", dir=out_root))
    try:
        run_cfg = input_config(cfg, item, staging, camera_id)
        detector = RecordedDetector(results, models, providers)
        metrics = Metrics()
        sink = LockedSink(compose.build_sink(run_cfg), metrics, run_cfg.service.max_sink_errors)
        errors: list[str] = []
        try:
            source = compose.build_source(run_cfg.cameras[0])
        except Exception:
            sink.close()
            raise
        cam = run_cfg.cameras[0]
        audit = AuditLog(run_cfg.service.audit_path)
        records = model_records(detector, {}, [cam.id])
        audit.start(run_cfg, records)
        pipeline = compose.build_pipeline(run_cfg, cam, detector=detector, metrics=metrics)
        try:
            run_loop(WatchedSource(ExpectingSource(source, detector), metrics), pipeline, sink, threading.Event())
        except Exception as e:  # as a frame loop of the service that dies: recorded, and the input fails
            errors.append(f"camera {cam.id}: {e}")
        source.close()
        sink.close()
        source_stats = {cam.id: source.stats()}
        rc = 1 if errors else 0
        audit.end(rc, metrics.counters(), source_stats, sink.stats(), errors)
        audit.close()
        if errors:
            raise RuntimeError("; ".join(errors))
        if final.exists():
            raise FileExistsError(f"{final} exists and is not from this run's ledger: remove it or choose "
                                  f"another --output-dir")
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"counters": metrics.counters(), "sources": source_stats, "sink": sink.stats(),
            "mismatches": detector.mismatches, "output": str(final), "worker": hardening_state()}


def paint_task(*args, **kw) -> dict:
    """paint_input in a Ray worker: refused unless the process is hardened."""
    require_hardened()
    return paint_input(*args, **kw)
