"""Configuration: frozen typed tree, unknown keys and bad values are errors naming the key."""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge import config
from edge.config import Config, ConfigError

ROOT = Path(__file__).resolve().parents[1]


def run_edge(*args, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "edge", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def write(tmp_path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.toml")))
def test_shipped_configs_load(name):
    cfg = config.load(ROOT / "configs" / name)
    assert cfg.cameras and dataclasses.is_dataclass(cfg)


@pytest.mark.parametrize("text, key", [
    ("[service]\nfoo = 1\n", "service.foo: unknown key"),
    ("[detect.face]\nscale = [2.0]\n", "detect.face.scale: unknown key"),
    ("bogus = 1\n", "bogus: unknown key"),
    ("[[cameras]]\nid = \"a\"\nsource = \"0\"\nfsp = 30\n", "cameras[0].fsp: unknown key"),
    ("[service]\ndeadline_ms = \"fast\"\n", "service.deadline_ms: expected a number"),
    ("[service]\non_failure = \"ignore\"\n", "service.on_failure: 'ignore' is not one of"),
    ("[output]\nkind = \"zmq\"\nbind = \"localhost:5\"\n", "output.bind"),
    ("[output]\nkind = \"folder\"\n", "output.dir: required"),
    ("[output]\nkind = \"zmq\"\nannotate = true\n", "output.annotate: only for kind = \"folder\""),
    ("[output]\nkind = \"video\"\nfile = \"x.mkv\"\nannotate = true\n", "output.annotate: only for kind"),
    ("[detect.face]\nscore_threshold = 1.5\n", "detect.face.score_threshold: must be within"),
    ("[detect.face]\nscales = []\n", "detect.face.scales"),
    ("[detect.face]\nscales = [1.0, 2.0]\naspects = [1.3]\n", "detect.face.aspects: one value per entry of scales"),
    ("[detect.face]\naspects = [9.0]\n", "detect.face.aspects: each must be in"),
    ("[detect.face]\nenabled = false\n[detect.plate]\nenabled = false\n", "at least one of face / plate"),
    ("[mask]\nstyle = \"swirl\"\n", "mask.style"),
    ("[detect.face.tiles]\nsize = 16\n", "detect.face.tiles.size: must be within"),
    ("[runtime]\nbatch_max = 0\n", "runtime.batch_max: must be within"),
    ("[detect.plate]\nregion = [0.0, 0.5, 1.0, 0.4]\n", "detect.plate.region: expected"),
    ("[runtime]\nbatch_wait_ms = 500\n", "runtime.batch_wait_ms: must be within"),
    ("[detect.face.tiles]\nsize = 320\noverlap = 200\n", "detect.face.tiles.overlap: must be within"),
    ("[runtime]\nrequire_provider = \"yes\"\n", "runtime.require_provider: expected true or false"),
    ("[[cameras]]\nid = \"a b\"\nsource = \"0\"\n", "cameras[0].id"),
    ("[[cameras]]\nid = \"a\"\n", "cameras[0].source: required"),
    ("[[cameras]]\nid = \"a\"\nsource = \"0\"\n[[cameras]]\nid = \"a\"\nsource = \"1\"\n", "duplicate id"),
    ("[service\n", "not valid TOML"),
])
def test_bad_config_names_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        config.load(write(tmp_path, text))


def test_missing_file():
    with pytest.raises(ConfigError, match="no such config file"):
        config.load("/nonexistent/edge.toml")


def test_partial_table_keeps_that_fields_defaults(tmp_path):
    cfg = config.load(write(tmp_path, "[detect.plate]\nenabled = true\n"))
    assert cfg.detect.plate.model == "yolox_plate" and cfg.detect.plate.nms_iou == 0.3
    assert cfg.detect.face.model == "yunet_n"


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().service.deadline_ms = 1  # type: ignore[misc]


def test_relative_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    p = tmp_path / "sub" / "c.toml"
    p.write_text('[models]\nmirrors = ["../m"]\n[[cameras]]\nid = "r"\nkind = "replay"\nsource = "clip.mp4"\n')
    cfg = config.load(p)
    assert cfg.models.mirrors == (str((tmp_path / "m").resolve()),)
    assert cfg.cameras[0].source == str((tmp_path / "sub" / "clip.mp4").resolve())


@pytest.mark.parametrize("changes, check", [
    ({"detect.face.score_threshold": 0.3}, lambda c: c.detect.face.score_threshold == 0.3),
    ({"detect.face.scales": [1.0, 2.0]}, lambda c: c.detect.face.scales == (1.0, 2.0)),
    ({"detect.face.tiles.size": 0}, lambda c: c.detect.face.tiles.size == 0),
    ({"output.kind": "folder", "output.dir": "/tmp/x"}, lambda c: c.output.dir == "/tmp/x"),
    ({"output.kind": "folder", "output.dir": "/tmp/x", "output.annotate": True}, lambda c: c.output.annotate),
])
def test_override(changes, check):
    assert check(config.override(Config(), changes))


@pytest.mark.parametrize("changes, message", [
    ({"detect.face.threshold": 0.3}, "unknown key"),
    ({"nope.x": 1}, "unknown key"),
    ({"detect.face.score_threshold": "high"}, "expected a number"),
    ({"output.kind": "folder"}, "output.dir: required"),
])
def test_bad_override(changes, message):
    with pytest.raises(ConfigError, match=message):
        config.override(Config(), changes)


@pytest.mark.parametrize("text, value", [("0.3", 0.3), ("true", True), ("[1.0, 2.0]", [1.0, 2.0]), ("solid", "solid")])
def test_parse_value(text, value):
    assert config.parse_value(text) == value


# ------------------------------------------------------------------------------------------------
# every setting validated for what it means: a table of bad values per key, refused by name

CAMERA = '[[cameras]]\nid = "a"\nsource = "0"\n'
NON_FINITE = ["nan", "inf", "-inf"]

# (table, key, bad TOML values beyond nan / inf / -inf for a float; what the refusal names)
FLOAT_BOUNDS = [
    ("service", "deadline_ms", ["-1.0", "1e9"]),
    ("service", "stats_interval_s", ["-1.0", "1e9"]),
    ("runtime", "batch_wait_ms", ["-1.0", "1000.0"]),
    ("detect.face", "score_threshold", ["-0.1", "1.5"]),
    ("detect.face", "nms_iou", ["-0.1", "1.5"]),
    ("detect.face", "extra_score_threshold", ["-0.1", "1.5"]),
    ("detect.face", "aspect", ["0.0", "100.0"]),
    ("detect.face.tiles", "scale", ["0.0", "-1.0", "100.0"]),
    ("detect.face.tiles", "score_threshold", ["-0.1", "1.5"]),
    ("detect.face.tiles", "min_box_px", ["-1.0", "1e6"]),
    ("detect.face.tiles", "max_box_px", ["-1.0", "1e6"]),
    ("mask", "margin", ["-0.1", "3.0"]),
    ("mask", "small_margin", ["-0.1", "3.0"]),
    ("mask", "small_box_px", ["-1.0", "1e6"]),
    ("mask", "blur_fraction", ["0.0", "0.2", "0.33", "3.0"]),
    ("track", "iou_threshold", ["-0.1", "1.5"]),
    ("track", "max_center_dist", ["-1.0", "100.0"]),
    ("track", "margin_growth", ["-0.1", "3.0"]),
    ("track", "velocity_smoothing", ["0.0", "1.5"]),
    ("track", "score_decay", ["0.0", "1.5"]),
    ("cameras", "fps", ["-1.0", "1000.0"]),
    ("cameras", "stall_timeout_s", ["0.0", "-1.0", "1e6"]),
]
INT_BOUNDS = [
    ("service", "max_sink_errors", ["0", "10000000"]),
    ("runtime", "threads", ["-1", "65", "3000"]),
    ("runtime", "device_id", ["-1", "64"]),
    ("runtime", "trt_workspace_mb", ["-1", "100000000"]),
    ("runtime", "batch_max", ["0", "65"]),
    ("detect.face.tiles", "size", ["-1", "16", "5000"]),
    ("detect.face.tiles", "overlap", ["-1", "5000"]),
    ("track", "hold_frames", ["-1", "1001"]),
    ("track", "min_hits", ["0", "1001"]),
    ("track", "max_tracks", ["0", "5000"]),
    ("output", "sndhwm", ["0", "1001"]),
    ("output", "linger_ms", ["-1", "1000000"]),
    ("output", "jpeg_quality", ["0", "101"]),
    ("mask", "min_margin_px", ["-1", "65"]),
    ("mask", "pixel_cells", ["0", "9", "1000"]),
    ("mask", "min_cell_px", ["0", "1", "1000"]),
    ("mask", "color", ["[256, 0, 0]", "[-1, 0, 0]", "[0, 0]"]),
    ("cameras", "width", ["-1", "20000"]),
    ("cameras", "height", ["-1", "20000"]),
]
# lists of floats: every entry finite and in range, lists no longer than a start-up can afford
LIST_BOUNDS = [
    ("detect.face", "scales", ["[0.0]", "[-1.0]", "[9.0]", "[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]", "[]"]),
    ("detect.face", "extra_scales", ["[0.0]", "[9.0]", "[]"]),
    ("detect.face", "thresholds", ["[-0.1]", "[1.5]"]),
    ("detect.face", "min_box_px", ["[-1.0]", "[1e6]"]),
    ("detect.face", "max_box_px", ["[-1.0]", "[1e6]"]),
    ("detect.face", "aspects", ["[0.1]", "[10.0]"]),
    ("detect.face", "region", ["[0.0, 0.0, 1.0, 2.0]"]),
    ("detect.face.tiles", "region", ["[0.5, 0.0, 0.5, 1.0]"]),
]


def _text(table: str, key: str, value: str) -> str:
    if table == "cameras":
        return f"{CAMERA}{key} = {value}\n"
    return f"[{table}]\n{key} = {value}\n{CAMERA}"


def _named(table: str, key: str) -> str:
    return "cameras[0]." + key if table == "cameras" else f"{table}.{key}"


BAD_VALUES = sorted({
    *((t, k, v) for t, k, extra in FLOAT_BOUNDS for v in NON_FINITE + extra),
    *((t, k, v) for t, k, extra in INT_BOUNDS for v in extra),
    *((t, k, v) for t, k, extra in LIST_BOUNDS for v in [f"[{n}]" for n in NON_FINITE] + extra),
})


@pytest.mark.parametrize("table, key, value", BAD_VALUES)
def test_every_bad_value_is_refused_by_name(tmp_path, table, key, value):
    with pytest.raises(ConfigError) as e:
        config.load(write(tmp_path, _text(table, key, value)))
    message = str(e.value)
    assert _named(table, key) in message and "\n" not in message


@pytest.mark.parametrize("value", NON_FINITE)
def test_non_finite_is_refused_as_such_everywhere(tmp_path, value):
    """One rule for every float in the loader: the message says what is wrong, not only a range."""
    for table, key, _ in FLOAT_BOUNDS:
        with pytest.raises(ConfigError, match="must be a finite number"):
            config.load(write(tmp_path, _text(table, key, value)))
    with pytest.raises(ConfigError, match=r"detect\.face\.scales\[1\]: must be a finite number"):
        config.load(write(tmp_path, f"[detect.face]\nscales = [1.0, {value}]\n"))


@pytest.mark.parametrize("table, key, value", [
    ("detect.face", "thresholds", "[nan]"), ("mask", "small_box_px", "inf"), ("service", "deadline_ms", "nan"),
    ("runtime", "threads", "3000"), ("mask", "pixel_cells", "1000"), ("detect.face.tiles", "max_box_px", "-inf"),
])
def test_bad_override_value_is_refused_by_name(table, key, value):
    from edge.compose import load_config

    with pytest.raises(ConfigError, match=f"{table}.{key}".replace(".", r"\.")):
        load_config(None, [f"{table}.{key}={value}"])


@pytest.mark.parametrize("sets", [
    ["vehicles.zone_max_vehicle_px=0", "vehicles.min_vehicle_px=600"],
    ["vehicles.min_vehicle_px=600", "vehicles.zone_max_vehicle_px=0"],  # the limit lifted after: as good
])
def test_overrides_are_validated_together_whatever_their_order(sets):
    from edge.compose import load_config

    v = load_config(None, sets).vehicles
    assert (v.min_vehicle_px, v.zone_max_vehicle_px) == (600, 0)


@pytest.mark.parametrize("sets, message", [
    (["vehicles.min_vehicle_px=600"], "--set vehicles.min_vehicle_px=600: vehicles.zone_max_vehicle_px: 0 (every "
                                      "vehicle) or above"),  # the value the user set is named, not the default
    (["mask.style=solid", "vehicles.zone_y=1.5"], "--set vehicles.zone_y=1.5: must be within 0.0..1.0"),
    (["vehicles.zone_y=0.5", "vehicles.zone_y=1.5"], "--set vehicles.zone_y=1.5: "),  # the last of a key wins
    (["mask.margin=nan", "mask.style=solid"], "--set mask.margin=nan: must be a finite number"),
])
def test_a_refused_override_names_its_flag_once(sets, message):
    from edge.compose import load_config

    with pytest.raises(ConfigError) as e:
        load_config(None, sets)
    assert str(e.value).startswith(message) and "\n" not in str(e.value) and "override" not in str(e.value)


@pytest.mark.parametrize("text, key", [
    # a box-size window that no box passes: that pass (or the tiles) would silently detect nothing
    ("[detect.face]\nscales = [1.0]\nmin_box_px = [40.0]\nmax_box_px = [30.0]\n", "detect.face.max_box_px[0]"),
    ("[detect.face.tiles]\nenabled = true\nmin_box_px = 30.0\nmax_box_px = 30.0\n", "detect.face.tiles.max_box_px"),
    ("[detect.face]\nextra_models = [\"a\", \"b\", \"c\", \"d\", \"e\"]\n", "detect.face.extra_models"),
    ("[detect.face]\nthresholds = [0.5, 0.5]\n", "detect.face.thresholds: one value per entry"),
])
def test_settings_that_would_detect_nothing_or_cost_too_much_are_refused(tmp_path, text, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        config.load(write(tmp_path, text + CAMERA))


OWN_CAMERA = '[[cameras]]\nid = "b"\nsource = "1"\n'  # before CAMERA: cameras[0]
# A score threshold no real face, plate, person or vehicle reaches (config.BLIND_SCORE, 0.95) on a stage that
# protects faces or plates: (table text with {t} for the threshold, the key the refusal names)
BLIND_THRESHOLDS = [
    ("[detect.face]\nscore_threshold = {t}\n", "detect.face.score_threshold"),
    ("[detect.face]\nscales = [1.0, 2.0]\nthresholds = [0.3, {t}]\n", "detect.face.thresholds[1]"),
    ("[detect.face.tiles]\nscore_threshold = {t}\n", "detect.face.tiles.score_threshold"),
    ("[detect.face]\nextra_models = [\"yunet_s\"]\nextra_score_threshold = {t}\n", "detect.face.extra_score_threshold"),
    ("[detect.plate]\nscore_threshold = {t}\n", "detect.plate.score_threshold"),
    ("[detect.plate.tiles]\nenabled = true\nscore_threshold = {t}\n", "detect.plate.tiles.score_threshold"),
    ("[detect.context]\nclasses = [\"vehicle\"]\n[detect.person]\nmodel = \"yolox_nano\"\nscore_threshold = {t}\n",
     "detect.person.score_threshold"),  # any masked class
    ("[detect.context]\nscore_threshold = {t}\n", "detect.context.score_threshold"),
    ("[vehicles]\nplate_threshold = {t}\n", "vehicles.plate_threshold"),
    (OWN_CAMERA + "[cameras.detect.face.tiles]\nscore_threshold = {t}\n",
     "cameras[0].detect.face.tiles.score_threshold"),
    (OWN_CAMERA + "[cameras.detect.context]\nscore_threshold = {t}\n", "cameras[0].detect.context.score_threshold"),
]


@pytest.mark.parametrize("t", ["0.95", "1.0"])
@pytest.mark.parametrize("text, key", BLIND_THRESHOLDS)
def test_a_blind_score_threshold_is_refused(tmp_path, text, key, t):
    with pytest.raises(ConfigError, match=re.escape(f"{key}: at 0.95 or above, ") + r".* got " + t.rstrip(".0")):
        config.load(write(tmp_path, text.replace("{t}", t) + CAMERA))
    assert config.load(write(tmp_path, text.replace("{t}", "0.94") + CAMERA)).cameras  # under it: loads


@pytest.mark.parametrize("text", [
    # a stage that is off has no pass to blind: its threshold is not read
    "[detect.plate]\nenabled = false\nscore_threshold = 1.0\n",
    "[detect.face.tiles]\nenabled = false\nscore_threshold = 1.0\n",
    "[detect.face]\nextra_score_threshold = 1.0\n",  # no extra_models
    "[detect.context]\nenabled = false\nscore_threshold = 1.0\n",
    "[vehicles]\nguided = false\nplate_threshold = 1.0\n",
])
def test_the_threshold_of_a_stage_that_is_off_is_not_refused(tmp_path, text):
    assert config.load(write(tmp_path, text + CAMERA)).cameras


def test_no_default_nor_shipped_config_comes_near_the_blind_bound():
    """What stays usable: every threshold the project ships is at most 0.5, far under config.BLIND_SCORE."""
    def thresholds(cfg):
        for section in [cfg.detect, *(c.detect for c in cfg.cameras if c.detect is not None)]:
            for _, c in section.classes():
                yield from (c.score_threshold, *c.thresholds, c.tiles.score_threshold, c.extra_score_threshold)
            yield section.context.score_threshold
        yield cfg.vehicles.plate_threshold

    cfgs = [Config(), *(config.load(p) for p in sorted((ROOT / "configs").glob("*.toml")))]
    assert len(cfgs) > 5 and max(t for cfg in cfgs for t in thresholds(cfg)) <= 0.5 < config.BLIND_SCORE


@pytest.mark.parametrize("text", [
    "[detect.face]\nscales = [1.0, 8.0]\nmin_box_px = [0.0, 0.0]\nmax_box_px = [0.0, 16.0]\n",
    "[detect.face.tiles]\nenabled = true\nmax_box_px = 48.0\n",
    "[mask]\npixel_cells = 8\nmin_cell_px = 2\nblur_fraction = 0.3334\n",
    "[runtime]\nthreads = 64\n",
    "[service]\ndeadline_ms = 0\nstats_interval_s = 0\n",
])
def test_the_edges_of_each_range_load(tmp_path, text):
    assert config.load(write(tmp_path, text + CAMERA)).cameras


# ------------------------------------------------------------------------------------------------
# a config file that cannot be read is one line, never a traceback

@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b'[service]\nlog_level = "\xff\xfe"\n'), "not UTF-8 text"),
    (lambda p: p.mkdir(), "is a folder"),
    (lambda p: p.write_text("service = 3\n"), "service: expected a table"),
    (lambda p: p.write_text("cameras = {id = \"a\"}\n"), "cameras: expected a list"),
    (lambda p: p.write_text("[detect.face]\nscales = 2.0\n"), "detect.face.scales: expected a list"),
    (lambda p: p.write_text("[mask]\npixel_cells = 4.5\n"), "mask.pixel_cells: expected an integer"),
    (lambda p: p.write_text("[detect]\nface = 1\n"), "detect.face: expected a table"),
])
def test_unreadable_or_mistyped_file_is_one_line(tmp_path, make, message):
    p = tmp_path / "c.toml"
    make(p)
    with pytest.raises(ConfigError, match=message) as e:
        config.load(p)
    assert "\n" not in str(e.value)
    r = run_edge("check-config", "--no-models", p)
    assert r.returncode == 2 and message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 file")
def test_unreadable_file_is_one_line(tmp_path):
    p = write(tmp_path, CAMERA)
    p.chmod(0)
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(p)


def test_loader_filled_camera_keys_are_not_settable(tmp_path):
    with pytest.raises(ConfigError, match=r"cameras\[0\]\.detect_keys: unknown key"):
        config.load(write(tmp_path, CAMERA + 'detect_keys = ["face.scales"]\n'))


# ------------------------------------------------------------------------------------------------
# --set detect.X reaches the cameras' own [cameras.detect] sections, except where a camera sets X

CAMERAS = """
[detect.face]
score_threshold = 0.5
[[cameras]]
id = "inherits"
source = "0"
[cameras.detect.face]
scales = [1.0, 2.0]
[[cameras]]
id = "own"
source = "1"
[cameras.detect.face]
score_threshold = 0.3
[cameras.detect.face.tiles]
scale = 3.0
[[cameras]]
id = "top"
source = "2"
"""


@pytest.mark.parametrize("override, expected, warned", [
    # camera id -> the effective value (None: the camera uses the top-level [detect] itself)
    ("detect.face.score_threshold=0.2", {"[detect]": 0.2, "inherits": 0.2, "own": 0.3, "top": None},
     ["'own' sets detect.face.score_threshold"]),
    ("detect.face.scales=[3.0]", {"[detect]": (3.0,), "inherits": (1.0, 2.0), "own": (3.0,), "top": None},
     ["'inherits' sets detect.face.scales"]),
    ("detect.face.tiles.scale=2.5", {"[detect]": 2.5, "inherits": 2.5, "own": 3.0, "top": None},
     ["'own' sets detect.face.tiles.scale"]),
    ("detect.face.nms_iou=0.6", {"[detect]": 0.6, "inherits": 0.6, "own": 0.6, "top": None}, []),
])
def test_override_reaches_camera_sections(tmp_path, caplog, override, expected, warned):
    from edge.compose import load_config

    key = override.split("=")[0].split(".", 1)[1]

    def value(detect):
        node = detect
        for part in key.split("."):
            node = node.get(part) if part in ("face", "plate") else getattr(node, part)
        return node

    cfg = load_config(write(tmp_path, CAMERAS), [override])
    assert value(cfg.detect) == expected["[detect]"]
    for cam in cfg.cameras:
        if expected[cam.id] is None:
            assert cam.detect is None
        else:
            assert value(cam.detect) == expected[cam.id], cam.id
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == len(warned)
    for w, text in zip(warnings, warned):
        assert text in w and "its own value" in w


def test_override_of_a_whole_table_keeps_the_cameras_own_entries(tmp_path, caplog):
    cfg = config.override(config.load(write(tmp_path, CAMERAS)), {"detect.face.tiles": {"enabled": True, "scale": 1.5}})
    own = next(c for c in cfg.cameras if c.id == "own").detect.face.tiles
    inherits = next(c for c in cfg.cameras if c.id == "inherits").detect.face.tiles
    assert own.enabled and own.scale == 3.0
    assert inherits.enabled and inherits.scale == 1.5
    assert cfg.detect.face.tiles.scale == 1.5
    assert any("'own' sets detect.face.tiles.scale" in r.getMessage() for r in caplog.records)


def test_dump_holds_toml_keys_only(tmp_path):
    cfg = config.load(write(tmp_path, CAMERAS))
    assert cfg.cameras[1].detect_keys == ("face.score_threshold", "face.tiles.scale")
    assert all("detect_keys" not in cam for cam in config.to_dict(cfg)["cameras"])


def test_a_whole_table_problem_names_the_table_once():
    with pytest.raises(ConfigError) as info:
        config.override(config.Config(), {"detect.face.enabled": False, "detect.plate.enabled": False})
    assert str(info.value).endswith("detect: at least one of face / plate must be enabled")
    assert "detect.detect" not in str(info.value)
