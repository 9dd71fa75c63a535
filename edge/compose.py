"""The one place pipelines are built: config -> detector, pipeline, source, sink.

The service (edge.runtime.service), the evaluation, calibration, every script and the tests build
what they run through these functions, so a change to how a detector or a sink is assembled is
made once, here.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from edge import config as config_mod
from edge import track
from edge.checks import one_line
from edge.config import CameraConfig, ClassConfig, Config, ConfigError
from edge.detect import Detector
from edge.detect.backends import Backend
from edge.detect.backends.frames import graph_scales
from edge.detect.backends.loader import load_backend
from edge.detect.backends.session import set_input_dims
from edge.detect.batching import BatchingDetector
from edge.detect.context import ContextDetector, ContextParams
from edge.detect.detector import EnsembleDetector, MultiDetector, OnnxDetector
from edge.detect.guided import GuidedDetector
from edge.detect.families import yolox
from edge.detect.multiscale import extra_passes, full_frame_passes, passes_from_config
from edge.frame import ClassTable
from edge.heads import HEAD, HeadStage
from edge.metrics import Metrics
from edge.models import registry
from edge.pipeline import Pipeline
from edge import selftest
from edge.vehicles import PLATE_ZONE, VEHICLE, PlateZoneStage
from edge.sinks import Sink
from edge.sinks.wrappers import NullSink

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The service must not start; the message is the one line an operator needs."""


class StopCheck(Protocol):
    """What start-up asks between model loads and warm-up runs (a threading.Event, the service's StopFlag)."""

    def is_set(self) -> bool: ...


def check_stop(stop: StopCheck | None, step: str) -> None:
    """StartupError when a stop was asked for: loading every model first could take minutes past SIGTERM."""
    if stop is not None and stop.is_set():
        raise StartupError(f"stopped during start-up, before {step}")


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The config file (or the built-in defaults when `path` is None) with `KEY=VALUE` overrides applied."""
    cfg = config_mod.load(path) if path else Config()
    changes, typed = {}, {}
    for item in overrides or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        key = key.strip()
        changes.pop(key, None)  # a key set twice: the last wins, in the order given
        changes[key], typed[key] = config_mod.parse_value(value.strip()), item
    if not changes:
        return cfg
    try:
        # all at once, validated once: the result counts, not the order (a limit lifted after the value it
        # limits is as good as before it)
        return config_mod.override(cfg, changes)
    except ConfigError as e:
        detail = str(e).removeprefix(f"override {', '.join(changes)}: ")
        # name the flag as typed, once: the loader's message starts with the key it refuses
        key = next((k for k in changes if detail == k or detail.startswith(f"{k}:")), None)
        if key is not None:
            raise ConfigError(f"--set {typed[key]}: {detail.removeprefix(f'{key}: ')}") from None
        raise ConfigError(f"--set {' '.join(typed[k] for k in changes)}: {detail}") from None


def class_table(cfg: Config) -> ClassTable:
    """The run's class ids: face, plate, then every other class a [detect] or [cameras.detect] table names."""
    sections = [cfg.detect, *(c.detect for c in cfg.cameras if c.detect is not None)]
    context = {name for section in sections if section.context.enabled for name in section.context.classes}
    names = {name for section in sections for name, _ in section.classes()}
    if "person" in context and cfg.heads.fallback:
        names.add(HEAD)  # the head zones of persons without a face: a masked class of their own
    if VEHICLE in context and cfg.vehicles.zones:
        names.add(PLATE_ZONE)
    return ClassTable.of(names, context)


# the families whose one run yields several classes, and what their run classes are made of
CONTEXT_FAMILIES = {"yolox": yolox}


def build_context_detector(cfg: Config, params: ContextParams, classes: ClassTable,
                           stop: StopCheck | None = None) -> ContextDetector:
    """The context stage of a [detect.context] table: one model, several classes, letterboxed whole frames."""
    check_stop(stop, f"loading model {params.model}")
    backend, card = load_model(cfg, params.model, (1.0,))
    family = CONTEXT_FAMILIES.get(card.family)
    if family is None:
        raise StartupError(f"detect.context: model {card.name} is of family {card.family}, which yields one class "
                           f"(context families: {', '.join(sorted(CONTEXT_FAMILIES))})")
    missing = [c for c in params.classes if c not in card.classes or c not in family.GROUPS]
    if missing:
        raise StartupError(f"detect.context: model {card.name} detects {list(card.classes)}, not {missing}")
    return ContextDetector(backend, family, class_ids=tuple(classes.id(c) for c in params.classes),
                           groups=tuple(family.GROUPS[c] for c in params.classes), params=params,
                           max_input_px=cfg.runtime.max_input_px)


def input_rewrite(card: registry.ModelCard) -> Callable[[bytes], bytes] | None:
    """How a card's model bytes are rewritten before they load: fixed or placeholder input dims made
    dynamic (N, H, W), so any padded size runs; None for a model that takes any size as stored."""
    if card.input.dynamic:
        return None
    return lambda data: set_input_dims(data, ["N", 3, "H", "W"])


def load_model(cfg: Config, name: str, scales: tuple[float, ...] = (1.0,)) -> tuple[Backend, registry.ModelCard]:
    """The backend that runs model `name` as the runtime section asks, with sessions for the graph `scales`."""
    cards_dir = cfg.models.cards_dir or None
    card = registry.card(name, cards_dir)
    path = registry.resolve(card, cache_dir=cfg.models.cache_dir or None, mirrors=cfg.models.mirrors)
    rewrite = input_rewrite(card)
    backend = load_backend(path, name=card.name, sha256=card.sha256, family=card.family,
                           options=cfg.runtime, graph_preprocess=cfg.runtime.graph_preprocess,
                           fp16=cfg.runtime.fp16, scales=scales,
                           cache_dir=cfg.models.cache_dir or registry.default_cache_dir(),
                           rewrite=rewrite, graph_filter=cfg.runtime.graph_filter)
    return backend, card


def build_class_detector(cfg: Config, cls_cfg: ClassConfig, class_name: str, classes: ClassTable,
                         stop: StopCheck | None = None):
    """The class's main model over its passes (scales, tiles), plus any ensemble members, merged together."""
    members = []
    for name, passes in [(cls_cfg.model, passes_from_config(cls_cfg)),
                         *((m, extra_passes(cls_cfg)) for m in cls_cfg.extra_models)]:
        check_stop(stop, f"loading model {name}")
        backend, card = load_model(cfg, name, graph_scales(passes))
        if class_name not in card.classes:
            raise StartupError(f"detect.{class_name}: model {card.name} detects {list(card.classes)}, not {class_name}")
        members.append(OnnxDetector(backend, class_id=classes.id(class_name),
                                    score_threshold=cls_cfg.score_threshold, nms_iou=cls_cfg.nms_iou, passes=passes,
                                    max_input_px=cfg.runtime.max_input_px))
    return members[0] if len(members) == 1 else EnsembleDetector(members, nms_iou=cls_cfg.nms_iou)


def build_guided(cfg: Config, context: ContextDetector, classes: ClassTable, stop: StopCheck | None = None
                 ) -> Detector:
    """The context stage, followed by the [vehicles] searches in vehicle crops when it detects vehicles."""
    v = cfg.vehicles
    if VEHICLE not in cfg.detect.context.classes:
        if v.crops or v.zones:
            raise StartupError(vehicles_need_vehicles())
        return context
    if not v.crops:
        return context
    found = {}
    for key, on, cls_cfg, threshold in (("plate", v.guided, cfg.detect.plate, v.plate_threshold),
                                        ("face", v.occupants, cfg.detect.face, v.face_threshold)):
        if on:
            check_stop(stop, f"loading model {cls_cfg.model}")
            backend, card = load_model(cfg, cls_cfg.model, (1.0,))
            if key not in card.classes:
                raise StartupError(f"vehicles: model {card.name} (detect.{key}.model) detects {list(card.classes)}, "
                                   f"not {key}")
            found[key] = OnnxDetector(backend, class_id=classes.id(key), score_threshold=threshold,
                                      nms_iou=cls_cfg.nms_iou, passes=full_frame_passes((1.0,), threshold))
    return GuidedDetector(context, vehicle_id=classes.id(VEHICLE), params=v, plates=found.get("plate"),
                          faces=found.get("face"))


def vehicles_need_vehicles() -> str:
    return (f"vehicles: plates guided by vehicles, occupants and plate zones need \"{VEHICLE}\" in "
            f"detect.context.classes (or vehicles.guided, occupants and zones = false)")


def build_detector(cfg: Config, classes: ClassTable | None = None, stop: StopCheck | None = None) -> MultiDetector:
    """The detector of cfg.detect; class ids from `classes` (default: the table of `cfg`); see check_stop."""
    classes = classes or class_table(cfg)
    detectors = []
    for class_name, cls_cfg in cfg.detect.classes():
        if cls_cfg.enabled:
            detectors.append(build_class_detector(cfg, cls_cfg, class_name, classes, stop))
    if cfg.detect.context.enabled:
        context = build_context_detector(cfg, cfg.detect.context, classes, stop)
        detectors.append(build_guided(cfg, context, classes, stop))
    # On the CPU every session already uses all cores: running classes at once only oversubscribes
    # them (2 cores, 1080p: 856 ms concurrent vs 380 ms one after another, scripts/bench_plates.py).
    return MultiDetector(detectors, concurrent=cfg.runtime.provider != "cpu")


def build_camera_detectors(cfg: Config, wrap_detector: Callable | None = None, stop: StopCheck | None = None
                           ) -> dict[str, MultiDetector]:
    """A detector per distinct [cameras.detect] (warmed up), shared by the cameras that have that section;
    cameras without one share the top-level detector."""
    out = {}
    by_section: dict = {}  # one set of sessions per distinct section, as the top-level one is shared
    for cam in cfg.cameras:
        if cam.detect is not None and cam.detect != cfg.detect:
            if cam.detect not in by_section:
                det = build_detector(dataclasses.replace(cfg, detect=cam.detect), class_table(cfg), stop)
                warm_up(det, stop=stop)
                by_section[cam.detect] = wrap_detector(det) if wrap_detector is not None else det
            out[cam.id] = by_section[cam.detect]
    return out


def batch_cameras(cfg: Config, detector: Detector, camera_detectors: dict, stop: StopCheck | None = None
                  ) -> tuple[Detector, dict]:
    """With runtime.batch_cameras: each detector shared by several cameras wrapped in a BatchingDetector."""
    if not cfg.runtime.batch_cameras:
        return detector, camera_detectors
    users: dict[int, int] = {}
    for cam in cfg.cameras:
        key = id(camera_detectors.get(cam.id, detector))
        users[key] = users.get(key, 0) + 1
    wrapped: dict[int, Detector] = {}

    def wrap(det: Detector) -> Detector:
        if users.get(id(det), 0) < 2:
            return det
        if id(det) not in wrapped:
            check_stop(stop, "warming up the batched detector")
            batching = BatchingDetector(det, cameras=users[id(det)], max_batch=cfg.runtime.batch_max,
                                        max_wait_ms=cfg.runtime.batch_wait_ms)
            batching.warm_up(np.zeros((720, 1280, 3), np.uint8))
            wrapped[id(det)] = batching
        return wrapped[id(det)]

    return wrap(detector), {cam: wrap(det) for cam, det in camera_detectors.items()}


def warm_up(detector: Detector, height: int = 720, width: int = 1280, runs: int = 2,
            stop: StopCheck | None = None) -> None:
    """Run the detector on a blank frame so the first real frame does not pay for graph setup."""
    image = np.zeros((height, width, 3), np.uint8)
    for _ in range(runs):
        check_stop(stop, "a warm-up run")
        detector.detect(image)


def self_test(cfg: Config, detector: Detector, camera_detectors: dict | None = None,
              stop: StopCheck | None = None) -> list[selftest.Result]:
    """The start-up privacy self-test (edge.selftest) of every detector the cameras run, built and warmed
    up, before any frame: StartupError in one line when one falls below a floor. With `[selftest] skip`
    it does not run, and says so loudly; the sinks and the audit record carry the reason."""
    if cfg.selftest.skip:
        log.warning("%s", selftest.skip_warning(cfg))
        return []
    check_stop(stop, "the self-test")
    try:
        results = selftest.check_all(cfg, detector, camera_detectors or {}, class_table(cfg),
                                     lambda c, det, classes: build_pipeline(c, None, detector=det, classes=classes),
                                     lambda: check_stop(stop, "a self-test image"))
        for result in results:
            log.info("self-test: %s (%.1f s)", result.line(), result.seconds)
        selftest.verdict(cfg, results)
    except selftest.SelfTestError as e:
        raise StartupError(str(e)) from None
    return results


def build_source(cam: CameraConfig):
    if cam.kind == "replay":
        from edge.sources.replay import open_replay

        return open_replay(cam.source, camera_id=cam.id, realtime=cam.realtime, loop=cam.loop, fps=cam.fps or None)
    from edge.sources.camera import CameraSource

    source = CameraSource(cam.source, cam.id, width=cam.width or None, height=cam.height or None,
                          fps=cam.fps or None, stall_timeout=cam.stall_timeout_s)
    source.start()
    return source


def build_curve(cfg: Config):
    """The CURVE server (context + authenticator) when the config switches it on, else None."""
    sec = cfg.security
    if not sec.curve:
        return None
    if cfg.output.kind != "zmq":
        log.warning("security.curve applies to the ZeroMQ output only; output.kind is %s", cfg.output.kind)
        return None
    from edge.security import CurveServer

    return CurveServer(sec.server_secret_key, sec.client_keys_dir)


def build_sink(cfg: Config, curve=None) -> Sink:
    out = cfg.output
    if out.kind == "folder":
        from edge.sinks.folder import FolderSink, check_apart

        check_apart(out.dir, [c.source for c in cfg.cameras if c.kind == "replay"])
        return FolderSink(out.dir, classes=class_table(cfg), annotate=out.annotate,
                          selftest_skipped=cfg.selftest.skip)
    if out.kind == "video":
        from edge.sinks.folder import check_apart
        from edge.sinks.video import DEFAULT_FPS, VideoSink, source_fps

        if len(cfg.cameras) > 1:  # one stream of one size and rate: cameras would interleave in it
            raise StartupError(f"output.kind = \"video\" takes one camera, the config has {len(cfg.cameras)}")
        cam = cfg.cameras[0] if cfg.cameras else None
        if cam is not None and cam.kind == "replay":
            check_apart(out.file, [cam.source])
        fps = (cam.fps or (source_fps(cam.source) if cam.kind == "replay" else 0.0)) if cam is not None else 0.0
        return VideoSink(out.file, fps=fps or DEFAULT_FPS, records=out.records, classes=class_table(cfg),
                         selftest_skipped=cfg.selftest.skip)
    if out.kind == "zmq":
        from edge.sinks.zmq_pub import ZmqPublisher

        return ZmqPublisher(out.bind, sndhwm=out.sndhwm, linger_ms=out.linger_ms, encoding=out.encoding,
                            jpeg_quality=out.jpeg_quality, classes=class_table(cfg),
                            context=curve.context if curve else None, socket_options_hook=curve.hook if curve else None,
                            selftest_skipped=cfg.selftest.skip)
    return NullSink()


def build_pipeline(cfg: Config, camera: CameraConfig | str | None = None, *, detector=None,
                   metrics: Metrics | None = None, tracker=None, classes: ClassTable | None = None) -> Pipeline:
    """The frame pipeline of one camera: its detector (built unless given), mask, policy, hold.

    `camera` (a camera of `cfg` or its id) picks the camera's own [cameras.detect] and its temporal
    hold (edge.track.for_camera); without one (evaluation, benchmarks) nothing is held unless a
    `tracker` is given. A detector built here is not warmed up (the service warms its own before
    READY; a benchmark warms up as it measures). `classes`: the run's table when `cfg` is a part of the
    run's config (the self-test's), default the table of `cfg`.
    """
    cam_id = camera.id if isinstance(camera, CameraConfig) else camera
    if detector is None:
        detector = build_detector(dataclasses.replace(cfg, detect=camera_detect(cfg, cam_id)), class_table(cfg))
    metrics = metrics or Metrics()
    if tracker is None and cam_id is not None:
        tracker = track.for_camera(cfg, cam_id, metrics)
    classes = classes or class_table(cfg)
    return Pipeline(detector, cfg.mask, cfg.service, metrics, tracker=tracker, classes=classes,
                    stages=paint_stages(cfg, classes))


def paint_stages(cfg: Config, classes: ClassTable) -> tuple:
    """The steps from detections to painted regions, in order (edge.pipeline.PaintStage)."""
    return (HeadStage(cfg.heads, classes), PlateZoneStage(cfg.vehicles, classes))


def camera_detect(cfg: Config, camera_id: str | None):
    """The detect section a camera runs with: its own override, else the top-level one."""
    cam = next((c for c in cfg.cameras if c.id == camera_id), None)
    return cam.detect if cam is not None and cam.detect is not None else cfg.detect


def passes_text(c: ClassConfig) -> str:
    """What a class's passes keep, with the values given: `score >= 0.3 at 0.5x; tiles 2x over ...`."""
    def region(r) -> str:
        return "" if tuple(r) == (0.0, 0.0, 1.0, 1.0) else f" over x {r[0]:g}-{r[2]:g} y {r[1]:g}-{r[3]:g}"

    def sizes(low: float, high: float) -> str:
        return (f", boxes {low:g}..{high:g} px" if high else f", boxes >= {low:g} px" if low
                else "")

    out = []
    for i, s in enumerate(c.scales):
        thr = c.thresholds[i] if c.thresholds else c.score_threshold
        low = c.min_box_px[i] if c.min_box_px else 0.0
        high = c.max_box_px[i] if c.max_box_px else 0.0
        out.append(f"score >= {thr:g} at {s:g}x{sizes(low, high)}")
    text = "; ".join(out) + region(c.region)
    t = c.tiles
    if t.enabled:
        text += (f"; tiles {t.scale:g}x{region(t.region) or ' over the frame'} score >= "
                 f"{t.score_threshold or c.score_threshold:g}{sizes(t.min_box_px, t.max_box_px)}")
    return text


def stages(cfg: Config, camera_id: str | None = None) -> str:
    """One line: the stages a camera runs (its masked classes' models, the context stage, head masks), each
    with what it does with the values given."""
    section = camera_detect(cfg, camera_id)
    parts = [f"{name} ({c.model}) {passes_text(c)}" for name, c in section.classes() if c.enabled]
    ctx = section.context
    if ctx.enabled:
        parts.append(f"context {'+'.join(ctx.classes)} ({ctx.model} {ctx.width}x{ctx.height}, score >= "
                     f"{ctx.score_threshold:g}, never painted)")
        h = cfg.heads
        if "person" in ctx.classes and h.fallback:
            parts.append(f"head zones of faceless persons (persons >= {h.min_person_px:g} px tall scoring >= "
                         f"{max(h.person_score, ctx.score_threshold):g}; zone {h.zone_per_height:g} of their "
                         f"height or {h.zone_per_width:g} of their width)")
        if "person" in ctx.classes and h.lone_share:
            parts.append(f"face boxes of >= {h.lone_share:g} of the frame scoring < {h.lone_score:g} in no person "
                         f"box dropped")
        v = cfg.vehicles
        widths = f"{v.min_vehicle_px:g}..{f'{v.zone_max_vehicle_px:g}' if v.zone_max_vehicle_px else 'any'} px wide"
        if VEHICLE in ctx.classes:
            parts += [what for on, what in (
                (v.guided, f"plates in vehicle crops ({section.plate.model} {v.crop_width}x{v.crop_height}, "
                           f"score >= {v.plate_threshold:g}, the {v.max_vehicles} largest vehicles >= "
                           f"{v.min_vehicle_px:g} px wide)"),
                (v.occupants, f"occupants' faces in windscreen bands ({section.face.model})"),
                (v.filter, "implausible plate boxes dropped"),
                (v.zones, f"plate zones of plateless vehicles (vehicles {widths}; zone {v.zone_width:g} x "
                          f"{v.zone_height:g} of the vehicle box; a plate excuses its vehicle from >= "
                          f"{v.zone_plate_score:g})")) if on]
    h = cfg.heads
    if h.grow_side or h.grow_up or h.grow_down:
        parts.append(f"faces grown to heads (side {h.grow_side:g}, up {h.grow_up:g}, down {h.grow_down:g})")
    return ", ".join(parts)


def stage_warnings(cfg: Config, camera_id: str | None = None) -> list[str]:
    """Values that switch a stage off while it says it is on (the self-test catches the result; these
    name the cause): `detect.face.region = [...]: its passes look at under 5% of the frame`. A score threshold
    that keeps no box is refused by the config's validation (config.BLIND_SCORE) before it gets here."""
    section = camera_detect(cfg, camera_id)
    where = f"camera {camera_id}: " if camera_id else ""
    out = []
    for name, c in section.classes():
        if not c.enabled:
            out.append(f"{where}detect.{name}.enabled = false: no {name} model runs")
            continue
        if all(s < 0.1 for s in c.scales):
            out.append(f"{where}detect.{name}.scales = {list(c.scales)}: the frame shrunk to under a tenth; "
                       f"nothing of the sizes a camera sees survives")
        r = c.region
        if (r[2] - r[0]) * (r[3] - r[1]) < 0.05:
            out.append(f"{where}detect.{name}.region = {list(r)}: its passes look at under 5% of the frame")
    ctx, h, v = section.context, cfg.heads, cfg.vehicles
    if ctx.enabled and "person" in ctx.classes and h.fallback:
        if h.person_score >= 1.0:
            out.append(f"heads.person_score = {h.person_score:g}: no person gets a head zone")
        if h.min_person_px >= 2160:
            out.append(f"heads.min_person_px = {h.min_person_px:g}: only persons taller than a 4K frame get a "
                       f"head zone")
    if ctx.enabled and VEHICLE in ctx.classes:
        if (v.guided or v.zones) and v.min_vehicle_px >= 3840:
            out.append(f"vehicles.min_vehicle_px = {v.min_vehicle_px:g}: only vehicles wider than a 4K frame get a "
                       f"crop or a plate zone")
    return out


def start_problems(cfg: Config, *, for_replay: bool, resolve: bool) -> list[str]:
    """What `run` (or `replay`, which adds its own camera) would refuse at start-up, found without starting
    (`check-config`): no camera, a model that is unknown or not of its classes (from the cards, always),
    weights that do not resolve (with `resolve`), a folder output overlapping a replayed input."""
    from edge.sinks.folder import FolderSinkError, check_apart

    problems = []
    if not cfg.cameras and not for_replay:
        problems.append("cameras: no camera configured (`run` refuses to start; a config for `replay` "
                        "is checked with --replay)")
    try:
        cards = registry.load_cards(cfg.models.cards_dir or None)
    except registry.ModelError as e:
        return [*problems, f"models.cards_dir: {e}"]
    resolved: set[str] = set()

    def check_model(key: str, name: str, classes: list[str], classes_key: str,
                    wrong: Callable[[list[str]], object]) -> None:
        """Unknown model or weights that do not resolve: said at `key`; classes it lacks: at `classes_key`."""
        card = cards.get(name)
        if card is None:
            problems.append(f"{key}: unknown model {name!r}; known models: {', '.join(sorted(cards)) or 'none'}")
            return
        missing = [c for c in classes if c not in card.classes]
        if missing:
            problems.append(f"{classes_key}: model {name} detects {list(card.classes)}, not {wrong(missing)}")
        if resolve and name not in resolved:
            resolved.add(name)
            try:
                registry.resolve(card, cache_dir=cfg.models.cache_dir or None, mirrors=cfg.models.mirrors)
            except registry.ModelError as e:
                problems.append(f"{key}: {one_line(e)}")

    sections = [("detect", cfg.detect), *((f"cameras[{i}].detect", c.detect)
                                          for i, c in enumerate(cfg.cameras) if c.detect is not None)]
    for where, section in sections:
        for class_name, cls_cfg in section.classes():
            if not cls_cfg.enabled or (where != "detect" and (class_name, cls_cfg) in cfg.detect.classes()):
                continue  # off, or inherited as it is from [detect]: said once there
            for key, name in [("model", cls_cfg.model),
                              *((f"extra_models[{j}]", m) for j, m in enumerate(cls_cfg.extra_models))]:
                where_key = f"{where}.{class_name}.{key}"
                check_model(where_key, name, [class_name], where_key, lambda missing: missing[0])
    ctx = cfg.detect.context
    if ctx.enabled:
        before = len(problems)
        check_model("detect.context.model", ctx.model, list(ctx.classes), "detect.context.classes",
                    lambda missing: missing)
        v = cfg.vehicles
        if len(problems) == before:  # with the context stage itself wrong, what hangs on its vehicles waits
            if VEHICLE not in ctx.classes and (v.crops or v.zones):
                problems.append(vehicles_need_vehicles())
            for on, key in ((v.guided, "plate"), (v.occupants, "face")):
                said = any(p.startswith(f"detect.{key}.model:") for p in problems)  # by its own enabled table
                if on and VEHICLE in ctx.classes and not said:
                    check_model(f"detect.{key}.model", cfg.detect.get(key).model, [key], f"detect.{key}.model",
                                lambda missing: missing[0])
    if cfg.output.kind == "video" and len(cfg.cameras) > 1:
        problems.append(f"output.kind: \"video\" takes one camera, the config has {len(cfg.cameras)}")
    if cfg.output.kind in ("folder", "video"):
        key, path = ("dir", cfg.output.dir) if cfg.output.kind == "folder" else ("file", cfg.output.file)
        try:
            check_apart(path, [c.source for c in cfg.cameras if c.kind == "replay"])
        except FolderSinkError as e:
            problems.append(f"output.{key}: {e}")
    return problems
