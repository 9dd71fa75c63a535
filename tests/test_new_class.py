"""A third class is a model card and a decoder, nothing else: a card declaring class "person" (here YuNet-n's
weights stand in for a person model) and a decoder module dropped into edge/detect/families run end to end through
config, detector, masks, wire header and audit record, with no edit to the package."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import MODELS, ROOT, WIDER, need
from edge import config as config_mod
from edge import wire
from edge.detect.context import ContextParams
from edge.frame import Frame

IMAGE = "7_Cheering_Cheering_7_118.jpg"
DECODER = '''"""A decoder as a new family would ship it: here it reuses YuNet's arithmetic under its own name."""
from edge.detect.families.yunet import CHANNELS, MULTIPLE, PAD_VALUE, STRIDES, candidates  # noqa: F401

FILTER_GROUPS = ()  # no in-graph score threshold of its own
'''


def cards_with_person(tmp_path: Path, family: str) -> Path:
    cards = tmp_path / "cards"
    shutil.copytree(ROOT / "models", cards, ignore=shutil.ignore_patterns("README.md"))
    text = (ROOT / "models" / "yunet_n.toml").read_text()
    text = text.replace('name = "yunet_n"', 'name = "person_demo"').replace('classes = ["face"]', 'classes = ["person"]')
    (cards / "person_demo.toml").write_text(text.replace('family = "yunet"', f'family = "{family}"'))
    return cards


def write_config(tmp_path: Path, cards: Path, person: str = 'model = "person_demo"\nscore_threshold = 0.5') -> Path:
    path = tmp_path / "c.toml"
    path.write_text(f"""
[models]
cards_dir = "{cards}"
mirrors = ["{MODELS}"]
[detect.face]
enabled = false
[detect.plate]
enabled = false
[detect.context]
enabled = false
[detect.person]
{person}
[mask]
style = "solid"
[selftest]
skip = "a masked class of its own: faces and plates are off"
[[cameras]]
id = "cam"
kind = "replay"
source = "{WIDER / 'images'}"
""")
    return path


@pytest.fixture()
def decoder_family(tmp_path, monkeypatch):
    """A decoder module `persondec` on edge.detect.families' search path, as a new file there would be."""
    from edge.detect import families

    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "persondec.py").write_text(DECODER)
    monkeypatch.setattr(families, "__path__", [*families.__path__, str(folder)])
    monkeypatch.setattr(families, "FAMILIES", dict(families.FAMILIES))
    monkeypatch.delitem(sys.modules, "edge.detect.families.persondec", raising=False)
    return "persondec"


def test_a_card_and_a_decoder_make_a_new_class_run_end_to_end(tmp_path, decoder_family):
    from edge.compose import build_detector, class_table
    from edge.runtime.audit import AuditLog
    from edge.pipeline import Pipeline, Policy

    need(MODELS / "yunet_n_dynamic.onnx")
    cfg = config_mod.load(write_config(tmp_path, cards_with_person(tmp_path, decoder_family)))
    assert [n for n, c in cfg.detect.classes() if c.enabled] == ["person"]
    classes = class_table(cfg)
    detector = build_detector(cfg, classes)
    try:
        image = cv2.imread(str(need(WIDER / "images" / IMAGE)))
        outcome = Pipeline(detector, cfg.mask, Policy("drop", 0)).process(
            Frame(image.copy(), "cam", 0, 0, 0, "x"))
    finally:
        detector.close()
    person = classes.id("person")
    assert person >= 2 and len(outcome.detections) >= 3
    assert (outcome.detections.class_id == person).all()
    for x1, y1, x2, y2 in outcome.regions:
        assert (outcome.frame.image[y1:y2, x1:x2] == 0).all()
    header = json.loads(bytes(wire.encode(outcome, classes=classes)[1]))
    assert {d["class"] for d in header["detections"]} == {"person"}

    log = AuditLog(tmp_path / "audit.jsonl")
    log.start(cfg, [])
    log.close()
    start = json.loads((tmp_path / "audit.jsonl").read_text().splitlines()[0])
    assert start["thresholds"]["person"]["model"] == "person_demo"


def test_override_and_dump_carry_the_new_class(tmp_path, decoder_family):
    cfg = config_mod.load(write_config(tmp_path, cards_with_person(tmp_path, decoder_family)))
    changed = config_mod.override(cfg, {"detect.person.score_threshold": 0.7})
    assert changed.detect.get("person").score_threshold == 0.7
    assert config_mod.to_dict(changed)["detect"]["person"]["model"] == "person_demo"


@pytest.mark.parametrize("name", ["face", "person"])
def test_with_class_replaces_or_adds_a_table(name):
    detect = config_mod.DetectConfig(context=ContextParams())  # a masked person: no context stage finding persons
    table = config_mod.ClassConfig(model="m", score_threshold=0.42)
    changed = detect.with_class(name, table)
    assert changed.get(name) == table
    assert [n for n, _ in changed.classes()][:2] == ["face", "plate"]
    assert changed.with_class(name, table) == changed  # replacing again adds nothing


def test_check_config_names_every_class(tmp_path):
    need(MODELS / "yunet_n_dynamic.onnx")
    path = write_config(tmp_path, cards_with_person(tmp_path, "yunet"))
    run = subprocess.run([sys.executable, "-m", "edge", "check-config", str(path)], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "faces off, plates off, persons on" in run.stdout


@pytest.mark.parametrize("person, message", [
    ("score_threshold = 0.5", "detect.person.model: required"),
    ('model = "person_demo"\nscore_treshold = 0.5', "detect.person.score_treshold: unknown key"),
])
def test_bad_class_tables_name_the_key(tmp_path, person, message):
    with pytest.raises(config_mod.ConfigError, match=message):
        config_mod.load(write_config(tmp_path, cards_with_person(tmp_path, "yunet"), person))


def test_a_class_the_model_does_not_detect_refuses_to_start(tmp_path):
    from edge.compose import StartupError, build_detector

    need(MODELS / "yunet_n_dynamic.onnx")
    cfg = config_mod.load(write_config(tmp_path, cards_with_person(tmp_path, "yunet"), 'model = "yunet_n"'))
    with pytest.raises(StartupError, match="detect.person: model yunet_n detects \\['face'\\], not person"):
        build_detector(cfg)


def test_detections_of_an_unregistered_class_are_refused():
    from edge.frame import BadDetections, ClassTable, Detections

    classes = ClassTable.of(["person"])
    with pytest.raises(BadDetections, match="class_id outside"):
        classes.names_of(Detections(np.array([[0, 0, 4, 4]], np.float32), [0.9], [len(classes)]).class_id)
