"""The HTML report: plots as pure functions, the worst-first choice, masked pixels only, and a real headless browser."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import SHARED, VIDEO, need
from edge import mask
from edge.config import Config, override
from edge.eval import evaluate, report
from edge.frame import Detections

PETS = "vtest_pets2009_480x360"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def marks(svg: str) -> int:
    return len(re.findall(r'class="mark"', svg))


# --- plots ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("groups, expected", [
    ([("a", [("face", 0.5, "")]), ("b", [("face", 1.0, "")])], 2),
    ([("a", [("face", 0.5, ""), ("plate", None, "")])], 1),  # no objects: a '-' and no bar
    ([("a", [("face", None, "")])], 0),
    ([("a", [("person", 0.0, ""), ("vehicle", 0.0, "")])], 2),  # 0% is a bar (of height 1), not nothing
])
def test_svg_bars_draws_one_mark_per_value(groups, expected):
    svg = report.svg_bars("t", groups)
    assert svg.startswith('<svg class="plot"') and svg.endswith("</svg>")
    assert marks(svg) == expected


def test_svg_escapes_names():
    svg = report.svg_bars("<b>", [("<script>x</script>", [("face", 0.5, "&")])])
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "<b>" not in svg


@pytest.mark.parametrize("values, expected", [([0.1, 0.3, 0.2], 1), ([0.0], 1), ([], 0)])
def test_svg_line(values, expected):
    assert marks(report.svg_line("painted", values)) == expected


def _card(name, **stats):
    return report.Card("set", name, stats, b"", (1, 1))


@pytest.mark.parametrize("stats, key, k, order", [
    ([{"leaked": 1}, {"leaked": 3}, {"leaked": 2}], "leaked", 6, ["1", "2", "0"]),
    ([{"leaked": 1}, {"leaked": 3}, {"leaked": 2}], "leaked", 2, ["1", "2"]),
    ([{"leaked": 0}, {"leaked": 2}, {}], "leaked", 6, ["1"]),  # nothing wrong is not "worst"
    ([{"overmask": 0.1}, {"overmask": 0.1}, {"overmask": 0.3}], "overmask", 6, ["2", "0", "1"]),  # ties keep order
])
def test_worst_first(stats, key, k, order):
    cards = [_card(str(i), **s) for i, s in enumerate(stats)]
    assert [c.name for c in report.worst(cards, key, k)] == order


# --- cards: masked pixels only ----------------------------------------------------------------------

def test_a_card_shows_the_masked_image_never_the_raw_one():
    """With a solid black fill, the card never shows a painted pixel as it was raw."""
    dev = evaluate.discover(need(SHARED / "data/eval"), ["berlin_dev"])[0].limited(1)
    cfg = override(Config(), {"mask.style": "solid"})
    scored = next(evaluate.score_images(evaluate.pipeline_for(cfg).process, dev.items))
    from edge.compose import class_table

    original = scored.original.copy()
    c = report.image_card("berlin_dev", scored, None, class_table(cfg), cfg.mask)
    np.testing.assert_array_equal(scored.original, original)  # the overlay drew on a copy
    shown = cv2.imdecode(np.frombuffer(c.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert shown.shape[1] == report.MAX_WIDTH and c.size == (shown.shape[1], shown.shape[0])
    # the painted pixels, scaled to the card and kept off the regions' borders, where the raw frame was bright:
    # the card shows them black (solid fill) or as an outline or label drawn over them, never as they were raw
    painted = mask.painted_map(original.shape, scored.regions).astype(np.uint8)
    painted = cv2.erode(cv2.resize(painted, (shown.shape[1], shown.shape[0]), interpolation=cv2.INTER_NEAREST),
                        np.ones((5, 5), np.uint8)).astype(bool)
    raw = cv2.resize(original, (shown.shape[1], shown.shape[0]), interpolation=cv2.INTER_AREA)
    bright = painted & (raw.max(axis=2) > 80)
    assert bright.sum() > 100
    like_raw = np.abs(shown[bright].astype(int) - raw[bright]).max(axis=1) < 20
    assert like_raw.mean() < 0.05
    assert c.stats["objects"] == len(scored.boxes) and "vehicles_lost" not in c.stats  # no judge, no losses


def test_lost_objects_are_the_judges_unkept_ones():
    counted = Detections(np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], np.float32),
                         np.array([0.9, 0.8, 0.7], np.float32), np.array([0, 1, 1], np.int32))
    lost = report.lost_of(counted, np.array([True, False, False]))
    assert lost.xyxy[:, 0].tolist() == [20, 40]
    assert report.lost_stats(lost) == {"persons_lost": 0, "vehicles_lost": 2}


# --- the whole report in a real browser -------------------------------------------------------------

def browse(index: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--no-first-run", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={profile}", "--virtual-time-budget=5000", *extra, index.as_uri()],
                          capture_output=True, text=True, timeout=180)


def verdict(index: Path, tmp_path: Path) -> str:
    r = browse(index, tmp_path, "--dump-dom")
    assert r.returncode == 0, r.stderr[-2000:]
    found = re.search(r'<p id="verdict">([^<]*)</p>', r.stdout)
    assert found, r.stdout[-2000:]
    return found.group(1)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """`edge-anon eval --all --report` on one labelled set and one clip, a few frames each."""
    from edge.cli import main

    need(VIDEO / f"{PETS}.avi")
    out = tmp_path_factory.mktemp("report")
    assert main(["eval", "--all", "--only", "berlin_dev", "--only", PETS, "--limit", "2",
                 "--report", str(out / "rep")]) == 0
    return out / "rep"


def test_the_report_is_one_folder_of_html_and_jpegs(built):
    files = sorted(p.relative_to(built).as_posix() for p in built.rglob("*") if p.is_file())
    assert "index.html" in files and "report.json" in files
    images = [f for f in files if f.startswith("img/")]
    assert images and all(f.endswith(".jpg") for f in images)
    assert {f.split("/")[1] for f in images} == {"berlin_dev", PETS}
    page = (built / "index.html").read_text()
    referenced = set(re.findall(r'<img src="([^"]+)"', page))
    assert referenced == set(images)  # every shown frame is there, nothing else was written
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page
    for heading in ("most labelled objects leaked", "most paint outside every label", "most vehicles lost",
                    "most of the frame painted"):
        assert heading in page
    parts = json.loads((built / "report.json").read_text())["sets"]["berlin_dev"]["overmask_by_class"]
    assert parts and f"by what was painted: {next(iter(parts))} " in page


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (scripts/setup.sh installs it with apt-get)")
def test_the_report_renders_its_images_and_plots_in_a_browser(built, tmp_path):
    got = verdict(built / "index.html", tmp_path)
    n = len(re.findall(r"<img ", (built / "index.html").read_text()))
    plots = len(re.findall(r'<svg class="plot"', (built / "index.html").read_text()))
    assert got == f"OK images={n} broken=0 plots={plots} empty=0" and n > 0 and plots >= 4


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (scripts/setup.sh installs it with apt-get)")
def test_the_browser_check_fails_on_a_missing_image_and_an_empty_plot(built, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(built, broken)
    next((broken / "img").rglob("*.jpg")).unlink()
    page = (broken / "index.html").read_text()
    page = page.replace("</body>", report.svg_line("empty", []) + "</body>", 1)
    (broken / "index.html").write_text(page)
    got = verdict(broken / "index.html", tmp_path)
    assert got.startswith("FAIL") and "broken=0" not in got and "empty=1" in got  # a frame may be shown twice
