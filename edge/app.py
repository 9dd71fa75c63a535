"""Builds the pipeline from a Config and runs it: one frame loop per camera, one shared detector and sink."""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from edge import registry
from edge.config import CameraConfig, ClassConfig, Config
from edge.detect.detector import MultiDetector, OnnxDetector
from edge.detect.session import OnnxModel, SessionOptions, set_input_dims
from edge.frame import CLASS_NAMES, DroppedFrame, MaskedFrame
from edge.mask import MaskStyle
from edge.metrics import Metrics
from edge.pipeline import Pipeline, Policy, run_loop
from edge.service import Notifier
from edge.sinks import Sink

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The service must not start; the message is the one line an operator needs."""


def session_options(cfg: Config) -> SessionOptions:
    r = cfg.runtime
    return SessionOptions(provider=r.provider, require_provider=r.require_provider, intra_op_threads=r.threads,
                          device_id=r.device_id, trt_cache_dir=r.trt_cache_dir)


def load_model(cfg: Config, name: str) -> tuple[OnnxModel, registry.ModelCard]:
    cards_dir = cfg.models.cards_dir or None
    card = registry.card(name, cards_dir)
    path = registry.resolve(card, cache_dir=cfg.models.cache_dir or None, mirrors=cfg.models.mirrors)
    rewrite = None
    if not card.input.dynamic:
        # stored with fixed or placeholder dims: make N, H and W dynamic so any padded size runs
        rewrite = lambda data: set_input_dims(data, ["N", 3, "H", "W"])  # noqa: E731
    model = OnnxModel(path, name=card.name, sha256=card.sha256, options=session_options(cfg), rewrite=rewrite)
    return model, card


def build_class_detector(cfg: Config, cls_cfg: ClassConfig, class_name: str):
    model, card = load_model(cfg, cls_cfg.model)
    if class_name not in card.classes:
        raise StartupError(f"detect.{class_name}.model: {card.name} detects {list(card.classes)}, not {class_name}")
    return OnnxDetector(model, card.family, class_id=CLASS_NAMES.index(class_name),
                        score_threshold=cls_cfg.score_threshold, nms_iou=cls_cfg.nms_iou, scales=cls_cfg.scales)


def build_detector(cfg: Config) -> MultiDetector:
    detectors = []
    for class_name in CLASS_NAMES:
        cls_cfg: ClassConfig = getattr(cfg.detect, class_name)
        if cls_cfg.enabled:
            detectors.append(build_class_detector(cfg, cls_cfg, class_name))
    return MultiDetector(detectors)


def mask_style(cfg: Config) -> MaskStyle:
    m = cfg.mask
    return MaskStyle(style=m.style, margin=m.margin, small_box_px=m.small_box_px, small_margin=m.small_margin,
                     pixel_cells=m.pixel_cells, min_cell_px=m.min_cell_px, blur_fraction=m.blur_fraction)


def warm_up(detector, height: int = 720, width: int = 1280, runs: int = 2) -> None:
    """Run the detector on a blank frame so the first real frame does not pay for graph setup."""
    image = np.zeros((height, width, 3), np.uint8)
    for _ in range(runs):
        detector.detect(image)


def build_source(cam: CameraConfig):
    if cam.kind == "replay":
        from edge.sources.replay import open_replay

        return open_replay(cam.source, camera_id=cam.id, realtime=cam.realtime, loop=cam.loop, fps=cam.fps or None)
    from edge.sources.camera import CameraSource

    source = CameraSource(cam.source, cam.id, width=cam.width or None, height=cam.height or None,
                          fps=cam.fps or None, stall_timeout=cam.stall_timeout_s)
    source.start()
    return source


def build_sink(cfg: Config) -> Sink:
    out = cfg.output
    if out.kind == "folder":
        from edge.sinks.folder import FolderSink

        return FolderSink(out.dir)
    if out.kind == "zmq":
        from edge.sinks.zmq_pub import ZmqPublisher

        return ZmqPublisher(out.bind, sndhwm=out.sndhwm, linger_ms=out.linger_ms, encoding=out.encoding,
                            jpeg_quality=out.jpeg_quality)
    return NullSink()


class NullSink:
    """Discards outcomes (profiling without an output)."""

    def __init__(self) -> None:
        self.sent = 0

    def send(self, item: MaskedFrame | DroppedFrame) -> bool:
        self.sent += 1
        return True

    def stats(self) -> dict:
        return {"sent": self.sent}

    def close(self) -> None:
        pass


class LockedSink:
    """Serialises several camera loops onto one sink; counts and survives failures of a single send."""

    def __init__(self, sink: Sink, metrics: Metrics, max_errors: int) -> None:
        self.sink, self.metrics, self.max_errors = sink, metrics, max_errors
        self._lock = threading.Lock()
        self._consecutive_errors = 0

    def send(self, item: MaskedFrame | DroppedFrame) -> bool:
        with self._lock:
            try:
                ok = self.sink.send(item)
            except Exception as e:
                self._consecutive_errors += 1
                self.metrics.count("sink_errors")
                log.error("sink failed on camera %s: %s", getattr(item, "camera_id", "?"), e)
                if self._consecutive_errors >= self.max_errors:
                    raise
                return False
            self._consecutive_errors = 0
            return ok

    def stats(self) -> dict:
        return self.sink.stats()

    def close(self) -> None:
        self.sink.close()


@dataclass
class Heartbeat:
    """Per-loop liveness: the watchdog is fed only while every camera loop is turning."""

    loops: list[str]
    last: dict[str, float] = field(default_factory=dict)

    def beat(self, name: str, now: float) -> None:
        self.last[name] = now

    def all_fresh(self, now: float, max_age_s: float) -> bool:
        return all(now - self.last.get(n, float("-inf")) <= max_age_s for n in self.loops)


@dataclass
class Service:
    """Everything a run needs, built and checked before READY is sent."""

    cfg: Config
    detector: MultiDetector
    sink: LockedSink
    sources: dict
    metrics: Metrics
    notifier: Notifier
    stop: threading.Event
    errors: list = field(default_factory=list)

    def status_line(self) -> str:
        c = self.metrics.counters()
        providers = ",".join(sorted({d.model.provider for d in self.detector.detectors}))
        return (f"frames in {c.get('frames_in', 0)} masked {c.get('frames_masked', 0)} "
                f"dropped {c.get('frames_dropped', 0)} whole {c.get('frames_masked_whole', 0)} "
                f"sink-dropped {c.get('sink_dropped', 0)} provider {providers}")

    def _loop(self, cam_id: str, source, heartbeat: Heartbeat) -> None:
        pipeline = Pipeline(self.detector, mask_style(self.cfg),
                            Policy(self.cfg.service.on_failure, self.cfg.service.deadline_ms), self.metrics)

        def tick(_outcome) -> None:
            now = time.monotonic()
            heartbeat.beat(cam_id, now)
            if heartbeat.all_fresh(now, max(self.notifier.watchdog_interval_s, 1.0)):
                self.notifier.watchdog()

        try:
            run_loop(source, pipeline, self.sink, self.stop, on_tick=tick)
        except Exception as e:  # a loop that dies takes the service down: systemd restarts it
            log.exception("camera %s: frame loop failed", cam_id)
            self.errors.append(f"camera {cam_id}: {e}")
            self.stop.set()
        finally:
            heartbeat.loops.remove(cam_id)

    def run(self) -> int:
        heartbeat = Heartbeat(list(self.sources))
        threads = [threading.Thread(target=self._loop, args=(cid, src, heartbeat), name=f"loop-{cid}", daemon=True)
                   for cid, src in self.sources.items()]
        for t in threads:
            t.start()
        self.notifier.ready(self.status_line())
        log.info("ready: %d camera(s), models %s", len(threads),
                 ", ".join(f"{n}@{s[:12]}" for n, s in self.detector.models))
        next_stats = time.monotonic() + self.cfg.service.stats_interval_s
        while any(t.is_alive() for t in threads) and not self.stop.wait(0.2):
            if self.cfg.service.stats_interval_s and time.monotonic() >= next_stats:
                next_stats += self.cfg.service.stats_interval_s
                self.log_stats()
        self.stop.set()
        self.notifier.stopping()
        for t in threads:
            t.join(timeout=10)
        self.close()
        self.log_stats()
        return 1 if self.errors else 0

    def log_stats(self) -> None:
        snap = self.metrics.snapshot()
        snap["sink"] = self.sink.stats()
        snap["sources"] = {cid: s.stats() for cid, s in self.sources.items()}
        self.notifier.status(self.status_line())
        log.info("stats %s", json.dumps(snap, sort_keys=True, default=str))

    def close(self) -> None:
        for source in self.sources.values():
            source.close()
        self.sink.close()


def build_service(cfg: Config, stop: threading.Event, notifier: Notifier | None = None) -> Service:
    """Verify and load models, warm up, bind the output and open every source; raise StartupError on any failure."""
    if not cfg.cameras:
        raise StartupError("cameras: no camera configured")
    metrics = Metrics()
    sources: dict = {}
    sink = None
    try:
        detector = build_detector(cfg)
        warm_up(detector)
        sink = LockedSink(build_sink(cfg), metrics, cfg.service.max_sink_errors)
        for cam in cfg.cameras:
            sources[cam.id] = build_source(cam)
    except Exception as e:
        for s in sources.values():
            s.close()
        if sink is not None:
            sink.close()
        if isinstance(e, StartupError):
            raise
        raise StartupError(str(e)) from e
    return Service(cfg, detector, sink, sources, metrics, notifier or Notifier(), stop)
