"""One frozen, typed configuration tree loaded from TOML. Unknown keys and bad values are errors.

Every error names the key (`cameras[1].fps`), so `edge-anon check-config` and a refused service
start say exactly what to fix. There is no fallback "safe mode": a config either loads or not.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
import logging
from typing import Any

from edge import wire
from edge.checks import at_most_items, each_within, one_of, within
from edge.detect.backends.options import PROVIDERS, SessionOptions
from edge.detect.context import ContextParams
from edge.detect.multiscale import MAX_INPUT_PX
from edge.frame import CLASS_NAME
from edge.heads import HeadParams
from edge.mask import MaskStyle
from edge.pipeline import ON_FAILURE, Policy
from edge.track import TrackParams
from edge.vehicles import VehicleParams

LOG_LEVELS = ("info", "debug", "warning", "error")  # the first is the default
PROVIDER_NAMES = tuple(PROVIDERS)
OUTPUT_KINDS = ("zmq", "folder", "video", "none")
VIDEO_SUFFIXES = (".mkv", ".mp4")  # FFV1 in Matroska (lossless), mp4v in MP4 (lossy): edge.sinks.video
CAMERA_KINDS = ("camera", "replay")
# Largest frame side and box size (px) a setting may name: beyond any camera this service runs, and
# a bound on what a size can make it allocate.
MAX_SIDE_PX = 16384
MAX_PASSES = 8  # entries of a scales list: each is one more inference pass and session per frame
# A score threshold at or above this keeps (almost) no box: over 150 dev images (25 each of wider_dev,
# street_dev, berlin_dev, ro_dev, oi_dev, openalpr_dev; every box above 0.05, the default pipeline) YuNet-n's
# faces (sqrt(cls*obj), native and horizon band) peaked at 0.948, yolox_plate's plates (obj*cls, whole frame
# and crops) at 0.876, the context model's persons at 0.915, and 1 vehicle box of 1256 reached 0.95. Such a
# value on a stage that protects faces or plates is blind, and the privacy self-test cannot see every pass
# alone (the horizon band, the whole-frame plate pass): refused here.
BLIND_SCORE = 0.95


log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration that must not be run; the message names the key and the problem."""


class TableError(ConfigError):
    """A problem of a whole table rather than of one of its keys: named `table: problem`, not `table.key: ...`."""


def _choices(values: tuple[str, ...]):
    return field(default=values[0], metadata={"choices": values})


class _Checked:
    """A config-only table: checked as it is made, so no unchecked one exists."""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        pass


@dataclass(frozen=True)
class ServiceConfig(Policy):
    """The pipeline's failure Policy (on_failure, deadline_ms) plus the service's own settings."""

    on_failure: str = ON_FAILURE[0]  # what happens to a frame whose detection failed
    deadline_ms: float = 250.0  # capture to masked; 0 disables (bench replay keeps every frame)
    log_level: str = LOG_LEVELS[0]
    stats_interval_s: float = 10.0  # periodic metrics line in the log / journal
    max_sink_errors: int = 20  # consecutive sink failures before the service gives up (and restarts)
    mlock: bool = False  # mlockall so frame buffers never reach swap (needs LimitMEMLOCK=infinity)
    audit_path: str = ""  # per-session audit record (JSON lines, no pixels); "" = none

    def __post_init__(self) -> None:
        super().__post_init__()
        one_of(self, "log_level", LOG_LEVELS)
        within(self, "stats_interval_s", 0.0, 86400.0)
        within(self, "max_sink_errors", 1, 100000)


@dataclass(frozen=True)
class ModelsConfig(_Checked):
    cache_dir: str = ""  # default $XDG_CACHE_HOME/edge-anon/models
    mirrors: tuple[str, ...] = ()  # folders searched by file name (EDGE_MODEL_PATH adds more)
    cards_dir: str = ""  # default: the project's models/ folder


@dataclass(frozen=True)
class RuntimeConfig(SessionOptions):
    """The onnxruntime SessionOptions (handed to every session as they are) plus how detection runs."""

    # Cameras sharing a detector send their frames through one inference call (edge.detect.batching):
    # the first frame waits up to batch_wait_ms for the others. Pays on a GPU, not on a busy CPU.
    batch_cameras: bool = False
    batch_max: int = 8
    batch_wait_ms: float = 2.0
    # Preprocessing inside the ONNX graph (edge.detect.graph): the frame goes in as uint8, IO-bound.
    graph_preprocess: bool = False
    # With graph_preprocess: the score threshold runs in the graph too, so only the rows that pass it
    # come back to the host (edge.detect.graph.append_filter); false downloads every output whole.
    graph_filter: bool = True
    fp16: bool = False  # fp16 copy of each model (CUDA / TensorRT only), cached next to the model
    # Most pixels one network input (and one inference call) may hold: larger passes run as overlapping
    # tiles, the context letterbox shrinks (edge.detect.multiscale). Peak memory follows it: on the CPU
    # about 80 MB (YuNet) to 350 MB (LPD-YuNet) per megapixel; the default (12 Mi px) keeps the shipped
    # configs' windows whole at 1080p except recall-faces (3x) and plates-far (5x, 6x).
    max_input_px: int = MAX_INPUT_PX

    def __post_init__(self) -> None:
        super().__post_init__()
        within(self, "batch_max", 1, 64)
        within(self, "max_input_px", 2**18, 2**25)
        within(self, "batch_wait_ms", 0.0, 100.0)


def _check_region(region: tuple[float, ...]) -> None:
    if len(region) != 4 or not (0 <= region[0] < region[2] <= 1 and 0 <= region[1] < region[3] <= 1):
        raise ConfigError(f"region: expected [x0, y0, x1, y1] with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, "
                          f"got {list(region)}")


@dataclass(frozen=True)
class TilesConfig(_Checked):
    """Upscaled tiles over a region of the frame (e.g. the horizon band where distant people appear)."""

    enabled: bool = False
    region: tuple[float, ...] = (0.0, 0.0, 1.0, 1.0)  # x0, y0, x1, y1 as fractions of the frame
    scale: float = 2.0
    size: int = 640  # tile side in network-input pixels (after upscaling); 0 = the whole region as one input
    overlap: int = 96  # input pixels shared by neighbouring tiles: at least the largest face they should see whole
    score_threshold: float = 0.0  # 0 = the class's score_threshold
    min_box_px: float = 0.0  # drop tile boxes smaller than this (frame px, sqrt of area)
    max_box_px: float = 0.0  # drop tile boxes at least this large (frame px); 0 = no limit

    def check(self) -> None:
        _check_region(self.region)
        within(self, "scale", 0.25, 8.0)
        within(self, "overlap", 0, 4096)  # bounded even where unused (size 0): a wrong value is refused when typed
        if self.size != 0:  # 0: no tiles, the fully convolutional models take the region whole
            within(self, "size", 32, 4096)
            within(self, "overlap", 0, self.size // 2)
        within(self, "score_threshold", 0.0, 1.0)
        within(self, "min_box_px", 0.0, MAX_SIDE_PX)
        within(self, "max_box_px", 0.0, MAX_SIDE_PX)
        if self.enabled and self.max_box_px and self.max_box_px <= self.min_box_px:
            # no box could pass: the tiles would silently detect nothing
            raise ConfigError(f"max_box_px: must be 0 (no limit) or above min_box_px ({self.min_box_px}), "
                              f"got {self.max_box_px}")


# a 2x pass over the horizon band of a forward camera, as one input (YuNet is fully convolutional: tiles
# would only add cut faces), kept to the small boxes an upscaled pass is good at
HORIZON_BAND = TilesConfig(enabled=True, region=(0.0, 0.3, 1.0, 0.7), scale=2.0, size=0, score_threshold=0.25,
                           max_box_px=48.0)


@dataclass(frozen=True)
class ClassConfig(_Checked):
    enabled: bool = True
    model: str = "yunet_n"
    score_threshold: float = 0.5
    nms_iou: float = 0.45
    scales: tuple[float, ...] = (1.0,)  # full-frame passes, as factors of the frame size
    # The part of the frame those passes look at (x0, y0, x1, y1 fractions): e.g. plates only below
    # the top 30% of a forward camera's frame, where no plate of a road user appears.
    region: tuple[float, ...] = (0.0, 0.0, 1.0, 1.0)
    # Per entry of `scales` (empty = the same for every pass): score threshold, and the box sizes
    # (frame px, sqrt of area) the pass is trusted for; an upscaled pass is best kept to small boxes.
    thresholds: tuple[float, ...] = ()
    min_box_px: tuple[float, ...] = ()
    max_box_px: tuple[float, ...] = ()  # 0 = no limit
    aspect: float = 1.0  # horizontal stretch before detection: a source pixel's width / height
    # Per entry of `scales` (empty = `aspect` for every pass): a second pass at another stretch is a
    # second chance for faces whose true proportions are uncertain (re-scaled or anamorphic streams).
    aspects: tuple[float, ...] = ()
    tiles: TilesConfig = TilesConfig()
    # Ensemble: more models for this class, run over the whole frame at extra_scales, boxes merged with the main one's
    extra_models: tuple[str, ...] = ()
    extra_score_threshold: float = 0.5
    extra_scales: tuple[float, ...] = (1.0,)

    def check(self) -> None:
        _check_region(self.region)
        within(self, "score_threshold", 0.0, 1.0)
        within(self, "nms_iou", 0.0, 1.0)
        within(self, "extra_score_threshold", 0.0, 1.0)
        within(self, "aspect", 0.25, 4.0)
        for name in ("scales", "extra_scales"):
            values = getattr(self, name)
            if not values or any(not 0 < s <= 8 for s in values):
                raise ConfigError(f"{name}: each must be in (0, 8], got {list(values)}")
            at_most_items(self, name, MAX_PASSES)
        at_most_items(self, "extra_models", 4)
        if any(not 0.25 <= a <= 4.0 for a in self.aspects):
            raise ConfigError(f"aspects: each must be in [0.25, 4], got {list(self.aspects)}")
        for name in ("thresholds", "min_box_px", "max_box_px", "aspects"):
            values = getattr(self, name)
            if values and len(values) != len(self.scales):
                raise ConfigError(f"{name}: one value per entry of scales ({len(self.scales)}), got {list(values)}")
        each_within(self, "thresholds", 0.0, 1.0)
        each_within(self, "min_box_px", 0.0, MAX_SIDE_PX)
        each_within(self, "max_box_px", 0.0, MAX_SIDE_PX)
        if self.enabled:
            for i, (low, high) in enumerate(zip(self.min_box_px, self.max_box_px)):
                if high and high <= low:  # that pass could keep no box: it would silently detect nothing
                    raise ConfigError(f"max_box_px[{i}]: must be 0 (no limit) or above min_box_px[{i}] ({low}), "
                                      f"got {high}")


@dataclass(frozen=True)
class DetectConfig(_Checked):
    """One [detect.<class>] table per class: the built-in face and plate, and any class a model card
    declares (e.g. [detect.person] with `model` naming a card whose classes include "person")."""

    # The privacy-first operating point (README "Defaults"): faces at a recall threshold plus a 2x pass
    # over the horizon band, where distant pedestrians of a forward camera are small; plates on (their
    # search in vehicle crops and the plate zones: [vehicles]). A cheaper mode is a config that says
    # what it gives up (configs/fast-faces-only.toml).
    face: ClassConfig = ClassConfig(score_threshold=0.3, tiles=HORIZON_BAND)
    # the whole-frame plate pass at half size finds the large plates of close vehicles the context stage
    # misses (they fill or leave the frame); small plates are searched in vehicle crops ([vehicles]).
    # Our own plate model (models/yolox_plate.toml, licensed training data) in both: against LPD-YuNet in the
    # same pipeline it protects as many or more plates on every plate set at less paint (berlin_dev 93.8%
    # both, over-masking 3.37 vs 3.93%; ro_dev 97.7 vs 76.0%; oi_dev 77.1% both, 7.59 vs 9.28%; openalpr_dev
    # 100 vs 97.2%; scripts/sweep_paint.py, README "Plate zones"), so fewer vehicles need a zone
    plate: ClassConfig = ClassConfig(enabled=True, model="yolox_plate", score_threshold=0.3, nms_iou=0.3, scales=(0.5,))
    more: tuple[tuple[str, ClassConfig], ...] = ()  # the other classes' tables, by class name
    # [detect.context]: persons and vehicles from one general detector, never painted themselves
    context: ContextParams = ContextParams(enabled=True, score_threshold=0.2)

    def classes(self) -> list[tuple[str, ClassConfig]]:
        """(class name, its table) for every class, the built-ins first."""
        return [("face", self.face), ("plate", self.plate), *self.more]

    def get(self, name: str) -> ClassConfig:
        for n, c in self.classes():
            if n == name:
                return c
        raise KeyError(f"detect.{name}: no such class table")

    def with_class(self, name: str, table: ClassConfig) -> "DetectConfig":
        """A copy with class `name`'s table replaced (or added, for a class beyond face / plate)."""
        if name in ("face", "plate"):
            return dataclasses.replace(self, **{name: table})
        others = [(n, c) for n, c in self.more if n != name]
        return dataclasses.replace(self, more=tuple(sorted([*others, (name, table)], key=lambda entry: entry[0])))

    def check(self) -> None:
        if not any(c.enabled for _, c in self.classes()):
            raise TableError(f"at least one of {' / '.join(n for n, _ in self.classes())} must be enabled")
        if self.context.enabled:
            clash = sorted(set(self.context.classes) & {n for n, _ in self.more})
            if clash:
                raise ConfigError(f"detect.context.classes: {clash} also have their own masked [detect.<class>] table "
                                  f"(the context stage, on by default, detects {list(self.context.classes)}: "
                                  f"list the classes it should keep, or set detect.context.enabled = false)")


@dataclass(frozen=True)
class TrackConfig(TrackParams):
    """The tracker's TrackParams (handed to edge.track.Tracker as they are) and whether to track at all."""

    # On by default: in a video one missed frame is a leak, and a hold costs only a few frames of
    # extra mask after an object leaves. Image-folder replays never track (edge.track.for_camera).
    enabled: bool = True


@dataclass(frozen=True)
class OutputConfig(_Checked):
    kind: str = _choices(OUTPUT_KINDS)
    bind: str = "tcp://127.0.0.1:5555"
    encoding: str = wire.ENCODINGS[0]
    jpeg_quality: int = 90
    sndhwm: int = 4  # frames queued per subscriber before they are dropped (and counted)
    linger_ms: int = 500
    dir: str = ""  # for kind = "folder"
    file: str = ""  # for kind = "video": the masked video, .mkv (FFV1, lossless) or .mp4 (mp4v, lossy)
    records: str = ""  # for kind = "video": its JSON lines; "" = beside it, <stem>.jsonl
    # for kind = "folder": outline and label every painted region on the PNGs (edge.overlay), for a person
    # to see why each was painted; the pixels under the outlines are the masked ones
    annotate: bool = False

    def check(self) -> None:
        wire.check_encoding(self.encoding, self.jpeg_quality)
        within(self, "sndhwm", 1, 1000)  # frames held per subscriber: memory
        within(self, "linger_ms", 0, 10000)  # how long a stop may wait for unsent frames
        if self.kind == "zmq":
            wire.check_endpoint(self.bind, bind=True, name="bind")
        if self.kind == "folder" and not self.dir:
            raise ConfigError("dir: required when kind = \"folder\"")
        if self.annotate and self.kind != "folder":
            raise ConfigError(f"annotate: only for kind = \"folder\" (PNG frames for a person), kind is {self.kind!r}")
        if self.kind == "video":
            if Path(self.file).suffix.lower() not in VIDEO_SUFFIXES:
                raise ConfigError(f"file: a {' or '.join(VIDEO_SUFFIXES)} file is required when kind = \"video\", "
                                  f"got {self.file!r}")
            if self.records and Path(self.records).suffix != ".jsonl":
                raise ConfigError(f"records: a .jsonl file, got {self.records!r}")


@dataclass(frozen=True)
class FleetConfig(_Checked):
    """`edge-anon batch` on Ray (edge.fleet): how the work is split and how many workers share a machine."""

    workers: int = 0  # detector actors; 0 = the cluster's CPUs (GPUs where present) / cpus_per_actor
    cpus_per_actor: float = 1.0  # Ray CPU share of one detector actor (fractional on a small machine)
    threads: int = 0  # onnxruntime threads of an actor when runtime.threads is 0; 0 = its CPU share, at least 1
    chunk_frames: int = 64  # frames of one detection task: a long video is shared by many actors
    num_cpus: int = 0  # the embedded local instance's CPUs; 0 = the machine's cores
    object_store_mb: int = 256  # the local instance's object store (detections only, never pixels)
    max_retries: int = 3  # per task, and restarts per actor, after a worker process died

    def check(self) -> None:
        within(self, "workers", 0, 4096)
        within(self, "cpus_per_actor", 0.05, 256.0)
        within(self, "threads", 0, 64)
        within(self, "chunk_frames", 1, 100000)
        within(self, "num_cpus", 0, 4096)
        within(self, "object_store_mb", 80, 1 << 20)  # Ray refuses less than ~75 MB
        within(self, "max_retries", 0, 100)


@dataclass(frozen=True)
class SecurityConfig(_Checked):
    curve: bool = False  # ZeroMQ CURVE encryption + client authentication on the output
    server_secret_key: str = ""  # secret certificate made by `edge-anon keygen`
    client_keys_dir: str = ""  # public certificates (*.key) of the clients allowed to subscribe

    def check(self) -> None:
        if self.curve and not (self.server_secret_key and self.client_keys_dir):
            raise ConfigError("curve: needs server_secret_key and client_keys_dir")


@dataclass(frozen=True)
class MetricsConfig(_Checked):
    bind: str = ""  # HOST:PORT of the JSON metrics endpoint on loopback, e.g. "127.0.0.1:9108"; "" = off

    def check(self) -> None:
        if not self.bind:
            return
        host, sep, port = self.bind.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(f"bind: expected HOST:PORT, got {self.bind!r}")
        if host.strip("[]") not in ("127.0.0.1", "localhost", "::1") and not host.startswith("127."):
            raise ConfigError(f"bind: the metrics endpoint is for loopback only, got host {host!r}")


@dataclass(frozen=True)
class CameraConfig(_Checked):
    id: str = ""
    source: str = ""  # device index, /dev/videoN, rtsp:// URL, GStreamer pipeline, or a file/folder
    kind: str = _choices(CAMERA_KINDS)
    realtime: bool = True  # replay: honour the recording's fps
    loop: bool = False  # replay: start again at the end
    fps: float = 0.0  # camera: requested fps; replay: overrides the file's (needed for image folders)
    width: int = 0
    height: int = 0
    stall_timeout_s: float = 2.0  # camera: no frame for this long means reopen
    # This camera's own [cameras.detect] (enable, thresholds, scales, tiles per class); keys it leaves
    # out are inherited from the top-level [detect] when the file is loaded (see _inherit_detect).
    detect: DetectConfig | None = None
    # The dotted keys under `detect` that this camera's own [cameras.detect] sets (`face.score_threshold`):
    # filled by the loader, so that `--set detect.X` reaches every camera that inherits X. Not a TOML key.
    detect_keys: tuple[str, ...] = field(default=(), metadata={"derived": True})

    def check(self) -> None:
        if not self.id or not self.id.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"id: must be a non-empty name of letters, digits, '-' and '_', got {self.id!r}")
        if not self.source:
            raise ConfigError("source: required")
        within(self, "fps", 0.0, 240.0)
        within(self, "width", 0, MAX_SIDE_PX)
        within(self, "height", 0, MAX_SIDE_PX)
        within(self, "stall_timeout_s", 0.1, 600.0)


@dataclass(frozen=True)
class SelftestConfig(_Checked):
    """[selftest]: the start-up privacy self-test (edge.selftest) runs unless `skip` gives a reason.

    There is no floor to lower and no switch without a reason: a deliberate experiment names itself,
    is warned about at start, and is written into the audit record and every frame header.
    """

    skip: str = ""  # why this run goes without the self-test; "" = it runs

    def check(self) -> None:
        if self.skip and (not self.skip.strip() or not self.skip.isprintable() or len(self.skip) > 200):
            raise ConfigError(f"skip: a reason of one printable line, 1..200 characters, got {self.skip!r}")


@dataclass(frozen=True)
class Config(_Checked):
    service: ServiceConfig = ServiceConfig()
    models: ModelsConfig = ModelsConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    detect: DetectConfig = DetectConfig()
    mask: MaskStyle = MaskStyle()
    heads: HeadParams = HeadParams()
    vehicles: VehicleParams = VehicleParams()
    track: TrackConfig = TrackConfig()
    output: OutputConfig = OutputConfig()
    security: SecurityConfig = SecurityConfig()
    metrics: MetricsConfig = MetricsConfig()
    fleet: FleetConfig = FleetConfig()
    selftest: SelftestConfig = SelftestConfig()
    cameras: tuple[CameraConfig, ...] = ()

    def check(self) -> None:
        ids = [c.id for c in self.cameras]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ConfigError(f"cameras: duplicate id {sorted(dup)}")
        v = self.vehicles
        if v.zones and 0 < v.zone_max_vehicle_px <= v.min_vehicle_px:
            # a cap at or under the floor meant "none" by accident (1 read as "no limit"): say it explicitly
            raise ConfigError(f"vehicles.zone_max_vehicle_px: 0 (every vehicle) or above vehicles.min_vehicle_px "
                              f"({v.min_vehicle_px:g}), got {v.zone_max_vehicle_px:g}: no vehicle would get a plate "
                              f"zone (vehicles.zones = false switches them off)")
        self._refuse_blind_thresholds()

    def _refuse_blind_thresholds(self) -> None:
        """A protecting stage whose score threshold keeps no box is refused, in every [detect] and
        [cameras.detect] section: its value means "off" by accident (switching a stage off is said with
        its `enabled`, which check-config then reports)."""
        def refuse(key: str, value: float, what: str, off: str) -> None:
            if value >= BLIND_SCORE:
                raise ConfigError(f"{key}: at {BLIND_SCORE} or above, {what} would keep (almost) no box (almost "
                                  f"every real face, plate, person and vehicle scores below it), got {value:g}; a "
                                  f"blind pass the privacy self-test may not see alone ({off} switches it off)")

        sections = [("detect", self.detect), *((f"cameras[{i}].detect", c.detect)
                                                for i, c in enumerate(self.cameras) if c.detect is not None)]
        for where, section in sections:
            for name, c in section.classes():
                if not c.enabled:
                    continue
                key = f"{where}.{name}"
                refuse(f"{key}.score_threshold", c.score_threshold, f"the {name} model", f"{key}.enabled = false")
                for i, t in enumerate(c.thresholds):
                    refuse(f"{key}.thresholds[{i}]", t, f"its pass {i}", f"{key}.enabled = false")
                if c.tiles.enabled:
                    refuse(f"{key}.tiles.score_threshold", c.tiles.score_threshold, f"the {name} tiles",
                           f"{key}.tiles.enabled = false")
                if c.extra_models:
                    refuse(f"{key}.extra_score_threshold", c.extra_score_threshold, f"the {name} ensemble",
                           f"{key}.extra_models = []")
            if section.context.enabled:
                refuse(f"{where}.context.score_threshold", section.context.score_threshold,
                       "the context stage (head zones, vehicle crops, plate zones)", f"{where}.context.enabled = false")
        if self.vehicles.guided:
            refuse("vehicles.plate_threshold", self.vehicles.plate_threshold, "the plate search in vehicle crops",
                   "vehicles.guided = false")


def _convert(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {type(value).__name__}")
        return from_dict(hint, value, key)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        return tuple(_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in typing.get_args(hint):
            return None
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _convert(value, args[0], key)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):  # one rule for every float, lists included: nan / inf never mean a setting
            raise ConfigError(f"{key}: must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {hint}")  # a schema bug, not a user error


def _more_classes(data: dict, prefix: str) -> dict:
    """[detect] tables beyond face / plate become DetectConfig.more: each names its model explicitly."""
    data = dict(data)
    more = []
    for name in [k for k in data if k not in ("face", "plate", "context")]:
        full = f"{prefix}.{name}" if prefix else name
        table = data.pop(name)
        if not isinstance(table, dict):
            raise ConfigError(f"{full}: unknown key (known: face, plate, or a [{full}] table for a class "
                              f"a model card declares)")
        if not CLASS_NAME.fullmatch(name):
            raise ConfigError(f"{full}: a class name is lowercase letters, digits and '_'")
        if "model" not in table:
            raise ConfigError(f"{full}.model: required for a class other than face / plate (the name of a model "
                              f"card whose classes include {name!r})")
        more.append((name, from_dict(ClassConfig, table, full)))
    if more:
        data["more"] = sorted(more, key=lambda entry: entry[0])
    return data


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from a TOML table, rejecting unknown keys and wrong types by name."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    if cls is Config:
        data = _inherit_detect(data)
    if cls is DetectConfig:
        data = _more_classes(data, prefix)
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in known:
            raise ConfigError(f"{full}: unknown key (known: {', '.join(sorted(known))})")
        if cls is DetectConfig and key == "more":
            kwargs[key] = tuple(value)
            continue
        default = known[key].default
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            # a partial table overlays the field's own default (the plate detector keeps its plate model)
            value = _overlay(_as_dict(default), value)
        converted = _convert(value, hints[key], full)
        choices = known[key].metadata.get("choices")
        if choices and converted not in choices:
            raise ConfigError(f"{full}: {converted!r} is not one of {', '.join(choices)}")
        kwargs[key] = converted
    try:
        return cls(**kwargs)
    except ValueError as e:  # the table's own check (a component's or a config table's): name the key
        if isinstance(e, TableError):
            raise ConfigError(f"{prefix}: {e}" if prefix else str(e)) from None
        raise ConfigError(f"{prefix}.{e}" if prefix else str(e)) from None


def _overlay(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _overlay(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _leaves(table: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in table.items():
        key = f"{prefix}.{k}" if prefix else k
        out.extend(_leaves(v, key) if isinstance(v, dict) else [key])
    return out


def _inherit_detect(data: dict) -> dict:
    """Each camera's partial [cameras.detect] laid over the top-level [detect] (itself over the defaults).

    A camera keeps the list of keys it set itself (detect_keys), unless it already has one: a tree
    made by override() is inherited already.
    """
    cams = data.get("cameras")
    if not isinstance(cams, list) or not any(isinstance(c, dict) and isinstance(c.get("detect"), dict) for c in cams):
        return data
    top = data.get("detect", {})
    base = _overlay(_as_dict(DetectConfig()), top if isinstance(top, dict) else {})
    cams = [{**c, "detect": _overlay(base, c["detect"]),
             "detect_keys": c.get("detect_keys", _leaves(c["detect"]))}
            if isinstance(c, dict) and isinstance(c.get("detect"), dict) else c for c in cams]
    return {**data, "cameras": cams}


def _refuse_derived(data: dict) -> None:
    """Keys the loader fills itself are not for the file to set."""
    cams = data.get("cameras")
    for i, c in enumerate(cams if isinstance(cams, list) else []):
        if isinstance(c, dict) and "detect_keys" in c:
            raise ConfigError(f"cameras[{i}].detect_keys: unknown key (the loader fills it from [cameras.detect])")


def _resolve_paths(cfg: Config, base: Path) -> Config:
    """Relative paths in a config file are relative to the file, not to the working directory."""
    def rel(p: str) -> str:
        return str((base / p).resolve()) if p and not Path(p).is_absolute() else p

    def source(c: CameraConfig) -> CameraConfig:
        return dataclasses.replace(c, source=rel(c.source)) if c.kind == "replay" else c

    return dataclasses.replace(
        cfg,
        models=dataclasses.replace(cfg.models, cache_dir=rel(cfg.models.cache_dir), cards_dir=rel(cfg.models.cards_dir),
                                   mirrors=tuple(rel(m) for m in cfg.models.mirrors)),
        output=dataclasses.replace(cfg.output, dir=rel(cfg.output.dir), file=rel(cfg.output.file),
                                   records=rel(cfg.output.records)),
        service=dataclasses.replace(cfg.service, audit_path=rel(cfg.service.audit_path)),
        security=dataclasses.replace(cfg.security, server_secret_key=rel(cfg.security.server_secret_key),
                                     client_keys_dir=rel(cfg.security.client_keys_dir)),
        cameras=tuple(source(c) for c in cfg.cameras),
    )


def load(path: str | Path) -> Config:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); a config file is UTF-8 TOML") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        _refuse_derived(data)
        return _resolve_paths(from_dict(Config, data), path.resolve().parent)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def parse_value(text: str) -> Any:
    """A command-line value in TOML syntax (`0.3`, `true`, `[1.0, 2.0]`, `"x"`); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def override(cfg: Config, changes: dict[str, Any]) -> Config:
    """A copy of `cfg` with dotted keys replaced (`detect.face.scales`), re-validated as a whole."""
    data = _as_dict(cfg)
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for i, part in enumerate(parents):
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"{dotted}: unknown key {'.'.join(parents[:i + 1])!r}")
            node = node[part]
        if last not in node:
            raise ConfigError(f"{dotted}: unknown key (known: {', '.join(sorted(node))})")
        node[last] = _as_dict_value(value)
        if parents and parents[0] == "detect":
            _override_cameras(data, dotted.split(".", 1)[1], value)
    try:
        return from_dict(type(cfg), data)
    except ConfigError as e:
        raise ConfigError(f"override {', '.join(changes)}: {e}") from None


def _override_cameras(data: dict, key: str, value: Any) -> None:
    """`detect.<key>` overridden in every camera's own [cameras.detect] that does not set it itself;
    where a camera does, its value wins, and a warning line says so."""
    for cam in data.get("cameras", []):
        if cam.get("detect") is None:
            continue  # the camera uses the top-level [detect] itself
        own = [k for k in cam["detect_keys"] if k == key or k.startswith(key + ".")]
        node = cam["detect"]
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        if own == [key]:
            log.warning("--set detect.%s: camera %r sets detect.%s itself; its own value %r is kept",
                        key, cam["id"], key, node[last])
            continue
        kept = {k: _get(cam["detect"], k) for k in own}
        node[last] = copy.deepcopy(_as_dict_value(value))  # its own copy: the camera's entries go into it
        for k, v in kept.items():
            log.warning("--set detect.%s: camera %r sets detect.%s itself; its own value %r is kept",
                        key, cam["id"], k, v)
            _put(cam["detect"], k, v)


def _get(tree: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def _put(tree: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[last] = value


def _overlay(default: dict, value: dict) -> dict:
    """`value` over `default`, table by table: a partial [detect.face.tiles] keeps the other keys of the
    default face's tiles, not those of a bare TilesConfig."""
    out = dict(default)
    for key, v in value.items():
        out[key] = _overlay(out[key], v) if isinstance(v, dict) and isinstance(out.get(key), dict) else v
    return out


def _as_dict_value(v: Any) -> Any:
    if dataclasses.is_dataclass(v):
        return _as_dict(v)
    if isinstance(v, tuple):
        return [_as_dict_value(x) for x in v]
    return v


def _as_dict(obj: Any) -> dict:
    if isinstance(obj, DetectConfig):  # the TOML shape: one table per class, side by side
        return {**{name: _as_dict(c) for name, c in obj.classes()}, "context": _as_dict(obj.context)}
    return {f.name: _as_dict_value(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def to_dict(cfg: Any) -> dict:
    """Plain dict (JSON/TOML-ready) of a config tree, for audit records and `check-config` output:
    the TOML keys only (a dumped tree loads back)."""
    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "detect_keys"}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return strip(_as_dict(cfg))

