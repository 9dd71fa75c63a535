"""The running service: one frame loop per camera, a shared detector and sink, status, watchdog, audit."""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

from edge import compose
from edge.checks import one_line
from edge.compose import StartupError
from edge.config import CameraConfig, Config
from edge.detect import Detector
from edge.metrics import Metrics
from edge.pipeline import run_loop
from edge.progress import Progress
from edge.runtime.systemd import Notifier, StopFlag
from edge.sinks.wrappers import LockedSink
from edge.sources.watched import WatchedSource

log = logging.getLogger(__name__)

__all__ = ["Service", "StartupError", "build_service", "model_records"]


@dataclass
class Heartbeat:
    """Per-loop liveness: the watchdog is fed only while every camera loop is turning."""

    loops: list[str]
    last: dict[str, float] = field(default_factory=dict)

    def beat(self, name: str, now: float) -> None:
        self.last[name] = now

    def all_fresh(self, now: float, max_age_s: float) -> bool:
        return all(now - self.last.get(n, float("-inf")) <= max_age_s for n in self.loops)


# Source stats that mean something went wrong, summed over cameras (bools count as 1).
SOURCE_FAULTS = ("gaps", "reopens", "reopen_failures", "read_failures", "read_errors", "unreadable", "truncated")
PIPELINE_FAULTS = ("detector_error", "bad_output", "mask_incomplete", "deadline", "bad_frame")
STATUS_INTERVAL_S = 2.0  # STATUS= (systemctl status) refresh; cheap, one datagram
JOIN_TIMEOUT_S = 10.0
# The pacing warning: once more than half of the frames missed the deadline, over at least this many
# frames while running (a short clip is judged on all of its frames at the end).
PACING_MIN_FRAMES = 10
# Stages of a frame's own work (what a faster operating point shortens); send, encode and the
# end-to-end age are the output's and the clock's, not the detector's.
WORK_EXCLUDED = ("send", "encode", "end_to_end")


def _reasons(counters: dict[str, int], prefix: str) -> dict[str, int]:
    return {k[len(prefix):]: v for k, v in sorted(counters.items()) if k.startswith(prefix) and v}


def _fmt(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items())


def source_faults(stats: dict[str, dict]) -> dict[str, int]:
    out = {k: 0 for k in SOURCE_FAULTS}
    for s in stats.values():
        for k in SOURCE_FAULTS:
            v = s.get(k)
            if isinstance(v, (bool, int)):
                out[k] += int(v)
    return out


def incomplete_reasons(counters: dict, source_stats: dict[str, dict], sink_stats: dict) -> list[str]:
    """What the output of a feed that ran to its end lacks, one phrase each; empty when nothing.

    Every frame dropped, no frame at all, a truncated video, unreadable images skipped, frames the
    output could not write: the run ended, but not all of its feed reached the output.
    """
    out = []
    n_in, dropped = counters.get("frames_in", 0), counters.get("frames_dropped", 0)
    if not n_in:
        out.append("no frame was read")
    elif dropped >= n_in:
        out.append(f"every frame dropped ({dropped})")
    for s in source_stats.values():
        if s.get("truncated"):
            out.append(f"input truncated (decoded {s.get('frames', '?')} of {s.get('expected_frames') or '?'} frames)")
        if s.get("unreadable"):
            out.append(f"{s['unreadable']} unreadable image(s) skipped")
    if sink_stats.get("write_errors"):
        out.append(f"{sink_stats['write_errors']} frame(s) could not be written")
    return out


def providers_of(detector: Detector) -> list[str]:
    return sorted(set(detector.providers)) or ["?"]


def rss_mb() -> float:
    """Resident memory of this process from /proc (no pixels, one number)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


@dataclass
class Service:
    """Everything a run needs, built and checked before READY is sent."""

    cfg: Config
    detector: Detector
    sink: LockedSink
    sources: dict
    metrics: Metrics
    notifier: Notifier
    stop: threading.Event
    errors: list = field(default_factory=list)
    providers: list = field(default_factory=list)
    audit: object = None  # edge.runtime.audit.AuditLog when service.audit_path is set
    metrics_server: object = None  # edge.runtime.metrics_server.MetricsServer when metrics.bind is set
    camera_detectors: dict = field(default_factory=dict)  # cameras with their own [cameras.detect]
    selftest: list = field(default_factory=list)  # edge.selftest.Result per detector; [] when skipped
    fps: float = 0.0
    progress: Progress | None = None  # a progress line while running (replay)
    report: TextIO | None = None  # where the summary line goes; None: the log
    report_label: str = "summary"
    # replay: a stop by signal cuts the feed short, so it exits 128 + signal; for the service (`run`) a
    # stop is its normal end and exits 0, as systemd expects of `systemctl stop`
    signal_exit: bool = False
    # replay: the exit code of a feed that ran to its end but did not all reach the output (incomplete_reasons);
    # 0 for the service, whose summary still says it
    incomplete_exit: int = 0
    _pacing_warned: bool = False
    _heartbeat: Heartbeat | None = None
    _t_start: float = field(default_factory=time.monotonic)
    _fps_mark: tuple[float, int] | None = None

    def faults(self) -> dict[str, int]:
        """Every fault the service survived, by kind: pipeline drop reasons, sink and source trouble."""
        c = self.metrics.counters()
        out = {r: c.get(f"dropped_{r}", 0) + c.get(f"masked_whole_{r}", 0) for r in PIPELINE_FAULTS}
        out.update({k: c.get(k, 0) for k in ("sink_dropped", "sink_errors", "frame_size_changes")})
        out.update({f"source_{k}": v for k, v in source_faults(self._source_stats()).items()})
        return out

    def status_line(self) -> str:
        """STATUS= for systemd: fps, outcomes with drop reasons, every non-zero fault, provider."""
        c = self.metrics.counters()
        dropped, whole = _reasons(c, "dropped_"), _reasons(c, "masked_whole_")
        parts = [
            f"fps {self.fps:.1f}",
            f"in {c.get('frames_in', 0)} masked {c.get('frames_masked', 0)} dropped {c.get('frames_dropped', 0)}"
            + (f" ({_fmt(dropped)})" if dropped else ""),
            f"whole {c.get('frames_masked_whole', 0)}" + (f" ({_fmt(whole)})" if whole else ""),
            f"sink-dropped {c.get('sink_dropped', 0)}" + (f" sink-errors {c['sink_errors']}" if c.get("sink_errors") else ""),
        ]
        src = {k: v for k, v in source_faults(self._source_stats()).items() if v}
        if src:
            parts.append(f"source {_fmt(src)}")
        if c.get("frame_size_changes"):
            parts.append(f"size-changes {c['frame_size_changes']}")
        parts.append(f"provider {','.join(self.providers)}")
        return "; ".join(parts)

    def snapshot(self) -> dict:
        """Counters, latency percentiles per stage, faults, sink and source stats: numbers, no pixels."""
        from edge.runtime.audit import redact_tree

        snap = self.metrics.snapshot()
        snap.update(fps=round(self.fps, 2), uptime_s=round(time.monotonic() - self._t_start, 1), rss_mb=rss_mb(),
                    faults=self.faults(), providers=self.providers, sink=self.sink.stats(),
                    sources=redact_tree(self._source_stats()),
                    models=self.model_records())
        return snap

    def healthy(self) -> bool:
        hb = self._heartbeat
        return (hb is not None and bool(hb.loops) and not self.stop.is_set()
                and hb.all_fresh(time.monotonic(), max(2 * self.notifier.watchdog_interval_s, 5.0)))

    def _source_stats(self) -> dict[str, dict]:
        out = {}
        for cid, s in self.sources.items():
            try:
                out[cid] = s.stats()
            except Exception as e:  # stats must never take the service down
                out[cid] = {"error": str(e)}
        return out

    def _camera_kind(self, cam_id: str) -> str:
        return next((c.kind for c in self.cfg.cameras if c.id == cam_id), "camera")

    def _loop(self, cam_id: str, source, heartbeat: Heartbeat) -> None:
        pipeline = compose.build_pipeline(self.cfg, cam_id, detector=self.camera_detectors.get(cam_id, self.detector),
                                  metrics=self.metrics)

        def tick(_outcome) -> None:
            now = time.monotonic()
            heartbeat.beat(cam_id, now)
            if heartbeat.all_fresh(now, max(self.notifier.watchdog_interval_s, 1.0)):
                self.notifier.watchdog()

        try:
            run_loop(WatchedSource(source, self.metrics), pipeline, self.sink, self.stop, on_tick=tick)
            if not self.stop.is_set() and self._camera_kind(cam_id) == "camera":
                # a live camera never ends by itself: its grabber died, and systemd should restart us
                raise RuntimeError("the camera source stopped delivering")
        except Exception as e:  # a loop that dies takes the service down: systemd restarts it
            log.exception("camera %s: frame loop failed", cam_id)
            self.errors.append(f"camera {cam_id}: {e}")
            self.stop.set()
        finally:
            heartbeat.loops.remove(cam_id)

    def _update_fps(self, now: float) -> None:
        n = self.metrics.counters().get("frames_in", 0)
        if self._fps_mark is not None and now > self._fps_mark[0]:
            self.fps = (n - self._fps_mark[1]) / (now - self._fps_mark[0])
        self._fps_mark = (now, n)

    def run(self) -> int:
        heartbeat = self._heartbeat = Heartbeat(list(self.sources))
        threads = [threading.Thread(target=self._loop, args=(cid, src, heartbeat), name=f"loop-{cid}", daemon=True)
                   for cid, src in self.sources.items()]
        if self.audit is not None:
            self.audit.start(self.cfg, self.model_records(), [r.record() for r in self.selftest])
        now = time.monotonic()
        self._update_fps(now)
        for t in threads:
            t.start()
        self.notifier.ready(self.status_line())
        log.info("ready: %d camera(s), models %s", len(threads),
                 ", ".join(f"{n}@{s[:12]}" for n, s in self.detector.models))
        interval = self.cfg.service.stats_interval_s
        next_stats, next_status = now + interval, now + STATUS_INTERVAL_S
        while any(t.is_alive() for t in threads) and not self.stop.wait(0.2):
            now = time.monotonic()
            if now >= next_status:
                next_status = now + STATUS_INTERVAL_S
                self._update_fps(now)
                self.notifier.status(self.status_line())
            if interval and now >= next_stats:
                next_stats += interval
                self.log_stats()
            self._tick_progress()
            self._check_pacing(PACING_MIN_FRAMES)
        return self._shutdown(threads)

    def total_frames(self) -> int | None:
        """Frames the sources will deliver in all (replays that know it); None when any source is open-ended."""
        totals = [s.get("total") for s in self._source_stats().values()]
        return sum(totals) if totals and all(isinstance(t, int) for t in totals) else None

    def wait_for_subscribers(self, n: int, timeout_s: float) -> bool:
        """Hold the frames back until `n` subscribers are connected (0 s: wait until stopped); False if not."""
        import math

        from edge.sinks.zmq_pub import ZmqPublisher

        publisher = self.sink.sink
        if not isinstance(publisher, ZmqPublisher):
            raise TypeError("waiting for subscribers needs a ZeroMQ output")
        return publisher.wait_for_subscriptions(n, timeout_s or math.inf, stop=self.stop)

    def _tick_progress(self) -> None:
        if self.progress is not None:
            c = self.metrics.counters()
            self.progress.update(c.get("frames_in", 0), c.get("frames_dropped", 0))

    def frame_cost_ms(self) -> float:
        """Median detect-and-mask time of recent frames (sum of the per-stage medians)."""
        stages = self.metrics.snapshot()["latency_ms"]
        return sum(v["p50"] for k, v in stages.items() if k not in WORK_EXCLUDED)

    def _check_pacing(self, min_frames: int) -> None:
        """Say once, with the measured cost and the deadline, when most frames miss the deadline."""
        deadline = self.cfg.service.deadline_ms
        if self._pacing_warned or not deadline:
            return
        c = self.metrics.counters()
        # frames already decided (one may be in flight): "38 of 38", not "37 of 38"
        n = c.get("frames_masked", 0) + c.get("frames_masked_whole", 0) + c.get("frames_dropped", 0)
        late = c.get("dropped_deadline", 0) + c.get("masked_whole_deadline", 0)
        if n < max(1, min_frames) or 2 * late <= n:
            return
        self._pacing_warned = True
        cost = self.frame_cost_ms()
        replay = any(cam.kind == "replay" and cam.realtime for cam in self.cfg.cameras)
        log.warning("pacing: %d of %d frames missed the %g ms deadline (%s); a frame costs %.0f ms here. "
                    "Options: a faster operating point (fewer or smaller detect.<class>.scales, fewer classes), "
                    "a longer deadline (--set service.deadline_ms=%d)%s", late, n, deadline,
                    "dropped" if self.cfg.service.on_failure == "drop" else "masked whole", cost,
                    int(max(cost * 1.5, deadline * 2)),
                    ", or replay without --realtime (every frame kept)" if replay else "")

    def _shutdown(self, threads: list[threading.Thread]) -> int:
        self.stop.set()
        self.notifier.stopping()
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            # a loop wedged in the detector: its frame never gets out (the sink is closed below)
            self.errors.append(f"{', '.join(stuck)} did not stop within {JOIN_TIMEOUT_S:g} s")
        self.close()
        self._update_fps(time.monotonic())
        self._check_pacing(1)
        if self.progress is not None:
            self._tick_progress()
            self.progress.close()
        self.log_stats()
        rc = self.exit_code()
        self._report()
        if self.audit is not None:
            self.audit.end(rc, self.metrics.counters(), self._source_stats(), self.sink.stats(), self.errors)
            self.audit.close()
        return rc

    def exit_code(self) -> int:
        """1: a loop failed; 128 + signal: stopped by SIGINT / SIGTERM (with signal_exit); else 0."""
        if self.errors:
            return 1
        signalled = self.stop.exit_code() if self.signal_exit and isinstance(self.stop, StopFlag) else 0
        if signalled:
            return signalled
        return self.incomplete_exit if self.incomplete_exit and self.incomplete() else 0

    def incomplete(self) -> list[str]:
        """incomplete_reasons of this run (counters, every source, the output)."""
        return incomplete_reasons(self.metrics.counters(), self._source_stats(), self.sink.stats())

    def summary_line(self) -> str:
        """Frames in, masked, masked whole, dropped with reasons, not sent, and where the output went."""
        c = self.metrics.counters()
        dropped, whole = _reasons(c, "dropped_"), _reasons(c, "masked_whole_")
        if self.errors:
            ending = "failed (" + "; ".join(self.errors) + ")"
        elif isinstance(self.stop, StopFlag) and self.stop.signum:
            ending = f"interrupted ({self._signal_name()})"
        elif lacking := self.incomplete():
            ending = "incomplete (" + "; ".join(lacking) + ")"
        else:
            ending = "complete"
        out = self.cfg.output
        parts = self.sink.stats().get("parts", 0) if out.kind == "video" else 0
        if parts > 1:  # a frame-size change: the video goes on in NAME.part2.SUFFIX... (edge.sinks.video)
            where = f"{out.file} and {parts - 1} more part(s) beside it ({Path(out.file).stem}.part2...)"
        else:
            where = {"folder": out.dir, "video": out.file}.get(out.kind) or (
                self.sink.stats().get("endpoint", out.bind) if out.kind == "zmq" else out.kind)
        parts = [ending, f"{c.get('frames_in', 0)} frames in", f"{c.get('frames_masked', 0)} masked",
                 f"{c.get('frames_masked_whole', 0)} masked whole" + (f" ({_fmt(whole)})" if whole else ""),
                 f"{c.get('frames_dropped', 0)} dropped" + (f" ({_fmt(dropped)})" if dropped else ""),
                 f"{c.get('sink_dropped', 0)} not sent (output full or failing)",
                 f"output {where}"]
        renamed = self.sink.stats().get("renamed", 0)
        if renamed:  # edge.sinks.folder.FrameNames: two frames whose names make one file name
            parts.append(f"{renamed} frame(s) renamed (NAME~2...: their file name was another frame's)")
        return ", ".join(parts)

    def _signal_name(self) -> str:
        import signal

        signum = self.stop.signum if isinstance(self.stop, StopFlag) else 0
        try:
            return signal.Signals(signum).name
        except ValueError:
            return "stopped"

    def _report(self) -> None:
        line = self.summary_line()
        if self.report is None:
            log.info("summary: %s", line)
        else:
            print(f"{self.report_label}: {line}", file=self.report, flush=True)

    def model_records(self) -> list[dict]:
        return model_records(self.detector, self.camera_detectors, [c.id for c in self.cfg.cameras])

    def log_stats(self) -> None:
        self.notifier.status(self.status_line())
        log.info("stats %s", json.dumps(self.snapshot(), sort_keys=True, default=str))

    def close(self) -> None:
        for source in self.sources.values():
            source.close()
        # a replay cut short is not its whole feed; for `run` a signal is the normal end of a live stream
        interrupted = bool(self.errors) or (self.signal_exit and isinstance(self.stop, StopFlag)
                                            and bool(self.stop.signum))
        self.sink.close(complete=not interrupted)
        if self.metrics_server is not None:
            self.metrics_server.close()
        for det in {id(d): d for d in (self.detector, *self.camera_detectors.values())}.values():
            det.close()


def model_records(detector, camera_detectors: dict, cameras: list[str]) -> list[dict]:
    """Every model that runs, once, with its sha256 and the cameras it runs for (audit record, metrics)."""
    users: dict[tuple[str, str], list[str]] = {}
    for cam in cameras:
        for model in dict.fromkeys(camera_detectors.get(cam, detector).models):  # a camera once per model
            users.setdefault(tuple(model), []).append(cam)
    return [{"name": n, "sha256": s, "cameras": cams} for (n, s), cams in users.items()]


def build_service(cfg: Config, stop: threading.Event, notifier: Notifier | None = None, *,
                  wrap_detector: Callable | None = None,
                  open_source: Callable[[CameraConfig], object] | None = None) -> Service:
    """Verify and load models, warm up, bind the output and open every source; raise StartupError on any failure.

    `wrap_detector` (applied after the warm-up) and `open_source` let tests put faults around the
    real parts; the service runs them exactly as it runs the real ones.
    """
    if not cfg.cameras:
        raise StartupError("cameras: no camera configured")
    metrics = Metrics()
    sources: dict = {}
    undo: list[Callable[[], None]] = []
    try:
        # `stop` is checked between every model load and warm-up run: SIGTERM ends a long start-up there
        detector = compose.build_detector(cfg, stop=stop)
        compose.warm_up(detector, stop=stop)
        providers = providers_of(detector)
        camera_detectors = compose.build_camera_detectors(cfg, stop=stop)
        # the detectors as built, before any test wrapper: what the cameras run must protect the reference set
        selftest = compose.self_test(cfg, detector, camera_detectors, stop)
        if wrap_detector is not None:
            wrapped = {id(d): wrap_detector(d) for d in {id(d): d for d in camera_detectors.values()}.values()}
            detector = wrap_detector(detector)
            camera_detectors = {cam: wrapped[id(d)] for cam, d in camera_detectors.items()}
        detector, camera_detectors = compose.batch_cameras(cfg, detector, camera_detectors, stop)
        compose.check_stop(stop, "binding the output")
        curve = compose.build_curve(cfg)
        if curve is not None:
            undo.append(curve.close)
        sink = LockedSink(compose.build_sink(cfg, curve), metrics, cfg.service.max_sink_errors,
                          on_close=(curve.close,) if curve is not None else ())
        undo[:] = [sink.close]
        for cam in cfg.cameras:
            compose.check_stop(stop, f"opening camera {cam.id}")
            sources[cam.id] = (open_source or compose.build_source)(cam)
            undo.append(sources[cam.id].close)
        audit = None
        if cfg.service.audit_path:
            from edge.runtime.audit import AuditLog

            audit = AuditLog(cfg.service.audit_path)
            undo.append(audit.close)
        compose.check_stop(stop, "announcing READY")
        service = Service(cfg, detector, sink, sources, metrics, notifier or Notifier(), stop,
                          providers=providers, audit=audit, camera_detectors=camera_detectors, selftest=selftest)
        if cfg.metrics.bind:
            from edge.runtime.metrics_server import MetricsServer

            service.metrics_server = MetricsServer(cfg.metrics.bind, service.snapshot, service.healthy)
    except Exception as e:
        for fn in reversed(undo):
            try:
                fn()
            except Exception as close_error:  # cleanup must not hide the reason we refuse to start
                log.debug("cleanup after failed start: %s", close_error)
        raise StartupError(one_line(e)) from e
    return service
