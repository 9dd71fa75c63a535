"""Configuration: frozen typed tree, unknown keys and bad values are errors naming the key."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edge import config
from edge.config import Config, ConfigError

ROOT = Path(__file__).resolve().parents[1]


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
    ("[detect.face]\nscore_threshold = 1.5\n", "detect.face.score_threshold: must be within"),
    ("[detect.face]\nscales = []\n", "detect.face.scales"),
    ("[detect.face]\nscales = [1.0, 2.0]\naspects = [1.3]\n", "detect.face.aspects: one value per entry of scales"),
    ("[detect.face]\naspects = [9.0]\n", "detect.face.aspects: each must be in"),
    ("[detect.face]\nenabled = false\n", "at least one of face / plate"),
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
    assert cfg.detect.plate.model == "lpd_yunet" and cfg.detect.plate.nms_iou == 0.3
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
