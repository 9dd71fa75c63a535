"""The recall evaluation: readers, the 70% rule, the mask-map cross-check, buckets, targets, a real run."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import WIDER, need
from edge.eval import evaluate
from edge.config import Config, override
from edge.eval.evaluate import (CrossCheckError, Item, box_pixels, bucket_of, check_targets, cross_check,
                           outside_share, protected_flags, read_face_list, read_openalpr, summarize)
from edge.frame import FACE, PLATE, Detections, DroppedFrame, Frame, MaskedFrame


# --- readers ----------------------------------------------------------------------------------------

def test_read_face_list_groups_boxes_under_their_header(tmp_path):
    gt = tmp_path / "gt_xyxy.txt"
    gt.write_text("# a.jpg 1024 768\n1 2 11 12\n20.5 30 40 50.25\n"
                  "# empty.jpg 640 480\n"
                  "\n# b.jpg 800 600\n0 0 5 5\n")
    items = read_face_list(gt)
    assert [i.path.name for i in items] == ["a.jpg", "empty.jpg", "b.jpg"]
    assert all(i.path.parent == tmp_path / "images" for i in items)
    np.testing.assert_allclose(items[0].boxes, [[1, 2, 11, 12], [20.5, 30, 40, 50.25]])
    assert items[1].boxes.shape == (0, 4)
    assert items[2].boxes.shape == (1, 4)
    assert {i.class_id for i in items} == {FACE}


def test_read_face_list_images_dir_override(tmp_path):
    gt = tmp_path / "gt.txt"
    gt.write_text("# a.jpg 1 1\n0 0 1 1\n")
    assert read_face_list(gt, tmp_path / "elsewhere")[0].path == tmp_path / "elsewhere" / "a.jpg"


@pytest.mark.parametrize("text, line", [
    ("1 2 3 4\n", 1),  # a box before any header
    ("# a.jpg 1 1\n1 2 3\n", 2),  # three numbers
    ("# a.jpg 1 1\n0 0 1 1\n1 2 3 4 5\n", 3),
])
def test_read_face_list_rejects_malformed_lines(tmp_path, text, line):
    gt = tmp_path / "gt.txt"
    gt.write_text(text)
    with pytest.raises(ValueError, match=f"gt.txt:{line}:"):
        read_face_list(gt)


def test_read_openalpr_converts_xywh_to_xyxy(tmp_path):
    (tmp_path / "car1.txt").write_text("car1.jpg\t100\t200\t50\t12\tAB123CD\n")
    (tmp_path / "car2.txt").write_text("car2.png\t0\t1\t2\t3\tX\n")
    items = read_openalpr(tmp_path)
    assert [i.path for i in items] == [tmp_path / "car1.jpg", tmp_path / "car2.png"]
    np.testing.assert_allclose(items[0].boxes, [[100, 200, 150, 212]])
    np.testing.assert_allclose(items[1].boxes, [[0, 1, 2, 4]])
    assert items[0].class_id == PLATE


def test_read_openalpr_rejects_short_lines(tmp_path):
    (tmp_path / "bad.txt").write_text("bad.jpg\t1\t2\t3\n")
    with pytest.raises(ValueError, match="bad.txt"):
        read_openalpr(tmp_path)


@pytest.mark.parametrize("reader, path", [
    (read_face_list, "faces/wider_dev/gt_xyxy.txt"),
    (read_openalpr, "plates/openalpr_dev"),
])
def test_readers_on_the_shared_sets(reader, path):
    items = reader(need(WIDER.parents[1] / path))
    assert len(items) >= 100
    assert all(i.path.exists() for i in items[:5])
    boxes = np.concatenate([i.boxes for i in items])
    assert (boxes[:, 2:] > boxes[:, :2]).all()


# --- the 70% rule -----------------------------------------------------------------------------------

@pytest.mark.parametrize("box, pixels", [
    ((0, 0, 10, 10), 100),
    ((0.4, 0.4, 10.4, 10.4), 100),  # pixel centres at .5: columns 0..9
    ((0.6, 0.6, 10.6, 10.6), 100),  # columns 1..10
    ((3.2, 3.2, 3.4, 3.4), 1),  # smaller than a pixel: still one pixel
    ((-5, -5, 4, 4), 16),  # clipped to the frame
    ((15, 15, 40, 40), 25),
])
def test_box_pixels(box, pixels):
    rows, cols = box_pixels(np.array(box, np.float32), 20, 20)
    assert np.ones((20, 20))[rows, cols].sum() == pixels


@pytest.mark.parametrize("painted_rows, expected", [
    (0, False),
    (6, False),  # 60%
    (7, True),  # exactly 70%
    (10, True),
])
def test_protected_flags_at_the_70_percent_rule(painted_rows, expected):
    painted = np.zeros((30, 30), bool)
    painted[10:10 + painted_rows, 10:20] = True
    flags = protected_flags(painted, np.array([[10, 10, 20, 20], [0, 0, 5, 5]], np.float32))
    assert flags.tolist() == [expected, False]


def test_protected_needs_pixels_inside_the_box_not_nearby():
    painted = np.zeros((30, 30), bool)
    painted[:, :10] = True  # a large area, right next to the box
    painted[20:, :] = True
    assert not protected_flags(painted, np.array([[10, 10, 20, 20]], np.float32))[0]


def test_outside_share_counts_painted_pixels_outside_every_box():
    painted = np.zeros((20, 20), bool)
    painted[0:10, 0:10] = True  # 100 px, of which 25 inside box A
    boxes = np.array([[5, 5, 10, 10], [15, 15, 20, 20]], np.float32)
    assert outside_share(painted, boxes) == 75
    assert outside_share(painted, np.zeros((0, 4), np.float32)) == 100


@pytest.mark.parametrize("size, bucket", [
    (0.0, "<8"), (7.99, "<8"), (8.0, "8-16"), (15.99, "8-16"), (16.0, "16-32"),
    (31.9, "16-32"), (32.0, "32-64"), (63.99, "32-64"), (64.0, ">=64"), (900.0, ">=64"),
])
def test_bucket_boundaries(size, bucket):
    assert bucket_of(size) == bucket


def test_summarize_buckets_by_sqrt_area():
    # sqrt(w*h): a 4x16 box is 8 px (bucket 8-16), a 63x65 box is 63.99 (32-64)
    boxes = np.array([[0, 0, 4, 16], [0, 0, 7, 9], [0, 0, 63, 65], [0, 0, 64, 64]], np.float32)
    tally = evaluate.Tally()
    painted = np.zeros((100, 100), bool)
    painted[:16, :4] = True  # protects only the first box (and 28/63 of the second)
    tally.add(painted, boxes)
    r = tally.result()
    assert {k: (v["objects"], v["protected"]) for k, v in r["buckets"].items()} == {
        "<8": (1, 0), "8-16": (1, 1), "16-32": (0, 0), "32-64": (1, 0), ">=64": (1, 0)}
    assert r["buckets"]["16-32"]["share"] is None
    assert r["protected_share"] == 0.25
    assert r["overmask_share"] == 0.0  # the painted pixels all lie inside a box
    assert r["images"] == 1


# --- the cross-check --------------------------------------------------------------------------------

def _images():
    rng = np.random.default_rng(0)
    original = rng.integers(1, 255, (20, 30, 3), np.uint8)  # no pixel is already black
    painted = np.zeros((20, 30), bool)
    painted[2:8, 3:12] = True
    masked = original.copy()
    masked[painted] = 0
    return original, masked, painted


def test_cross_check_accepts_a_map_that_matches_the_changed_pixels():
    original, masked, painted = _images()
    cross_check(original, masked, painted)


@pytest.mark.parametrize("tamper", ["changed_outside", "unpainted_inside", "map_too_small"])
def test_cross_check_catches_a_map_that_disagrees(tamper):
    original, masked, painted = _images()
    if tamper == "changed_outside":
        masked[15, 20] = 0  # a pixel painted that the map does not report
    elif tamper == "unpainted_inside":
        masked[4, 5] = original[4, 5]  # the map claims a pixel the fill did not touch
    else:
        painted[7, :] = False
    with pytest.raises(CrossCheckError):
        cross_check(original, masked, painted)


def test_cross_check_allows_map_pixels_that_were_already_the_fill_colour():
    original, masked, painted = _images()
    original[3, 4] = 0
    masked[3, 4] = 0
    cross_check(original, masked, painted)


# --- evaluate() with stand-in pipelines -------------------------------------------------------------

@pytest.fixture()
def one_image(tmp_path):
    image = np.full((40, 60, 3), 128, np.uint8)
    path = tmp_path / "img.png"
    cv2.imwrite(str(path), image)
    return Item(path, np.array([[10, 10, 20, 20], [40, 20, 50, 30]], np.float32), FACE)


def _painting(region, lie: bool = False):
    def process(frame: Frame):
        x1, y1, x2, y2 = region
        frame.image[y1:y2, x1:x2] = 0
        reported = np.array([[x1, y1, x2 + (5 if lie else 0), y2]], np.int32)
        return MaskedFrame(frame, reported, Detections.empty(), "masked", {})
    return process


def test_evaluate_scores_what_was_painted(one_image):
    r = evaluate.evaluate(_painting((8, 8, 22, 22)), [one_image], keep_per_image=True)
    assert r["objects"] == 2 and r["protected"] == 1
    assert r["overmask_share"] == pytest.approx((14 * 14 - 100) / (40 * 60), abs=1e-5)
    assert r["per_image"] == [{"image": "img.png", "objects": 2, "protected": 1, "overmask": r["overmask_share"]}]


def test_evaluate_refuses_a_pipeline_whose_map_lies(one_image):
    with pytest.raises(CrossCheckError):
        evaluate.evaluate(_painting((8, 8, 22, 22), lie=True), [one_image])


def test_evaluate_counts_dropped_frames_as_unprotected(one_image):
    r = evaluate.evaluate(lambda f: DroppedFrame.of(f, "test"), [one_image])
    assert r["dropped_frames"] == 1 and r["protected"] == 0 and r["overmask_share"] == 0


def test_evaluate_shrink_scales_boxes_with_the_image(one_image):
    r = evaluate.evaluate(_painting((4, 4, 11, 11)), [one_image], shrink=0.5)
    assert r["protected"] == 1  # box (10,10,20,20) became (5,5,10,10)
    assert r["buckets"]["<8"]["objects"] == 2


# --- targets ----------------------------------------------------------------------------------------

def _result(shares: dict[str, tuple[int, int]], overmask: float) -> dict:
    sizes, flags = [], []
    mid = {"<8": 4, "8-16": 12, "16-32": 24, "32-64": 48, ">=64": 100}
    for name, (n, ok) in shares.items():
        sizes += [mid[name]] * n
        flags += [True] * ok + [False] * (n - ok)
    return summarize(np.array(sizes, float), np.array(flags, bool), int(overmask * 1e6), 10 ** 6, [1.0])


@pytest.mark.parametrize("shares, overmask, met", [
    ({"<8": (100, 55), "8-16": (100, 85), "16-32": (100, 93), "32-64": (50, 49), ">=64": (50, 48)}, 0.06,
     {">=32": True, "16-32": True, "8-16": True, "<8": True, "overmask": True}),
    # >=32 pools two buckets: 50/50 and 46/50 is 96% < 97%
    ({"<8": (100, 54), "8-16": (100, 84), "16-32": (100, 92), "32-64": (50, 50), ">=64": (50, 46)}, 0.061,
     {">=32": False, "16-32": False, "8-16": False, "<8": False, "overmask": False}),
    ({"8-16": (10, 9)}, 0.0, {">=32": False, "16-32": False, "8-16": True, "<8": False, "overmask": True}),
])
def test_check_targets(shares, overmask, met):
    got = check_targets(_result(shares, overmask))
    assert {k: v["met"] for k, v in got.items()} == met
    if ">=64" in shares:
        lo, hi = shares["32-64"], shares[">=64"]
        assert got[">=32"]["share"] == pytest.approx((lo[1] + hi[1]) / (lo[0] + hi[0]), abs=1e-4)
    else:
        assert got[">=32"]["share"] is None  # no objects is not a met target


# --- the real pipeline on real images ---------------------------------------------------------------

def _faces_cfg(**changes) -> Config:
    # the face model alone: no context stage (its head zones would protect faces the model misses)
    base = {"detect.face.scales": (2.0,), "detect.face.score_threshold": 0.3, "mask.style": "pixelate",
            "detect.face.tiles.enabled": False, "detect.context.enabled": False}
    return evaluate.for_dataset(override(Config(), {**base, **changes}), "faces")


def test_for_dataset_turns_other_classes_off():
    cfg = evaluate.for_dataset(override(Config(), {"detect.plate.enabled": True}), "faces")
    assert cfg.detect.face.enabled and not cfg.detect.plate.enabled
    cfg = evaluate.for_dataset(override(Config(), {"detect.plate.enabled": True}), "plates")
    assert cfg.detect.plate.enabled and not cfg.detect.face.enabled


def test_real_pipeline_on_wider_dev(yunet_model):
    items = read_face_list(need(WIDER / "gt_xyxy.txt"))[:4]
    pipeline = evaluate.pipeline_for(_faces_cfg())
    assert pipeline.style.style == "solid"  # forced, whatever the config says, for the cross-check
    r = evaluate.evaluate(pipeline.process, items)  # raises CrossCheckError if the map lied
    assert r["objects"] == sum(len(i.boxes) for i in items)
    assert r["dropped_frames"] == 0
    assert 0.3 < r["protected_share"] <= 1.0
    assert 0 < r["overmask_share"] < 0.2
    none = evaluate.evaluate(evaluate.pipeline_for(_faces_cfg(**{"detect.face.min_box_px": (16384.0,)})).process,
                             items)
    assert none["protected"] == 0 and none["overmask_share"] == 0


def test_cli_eval_writes_json_with_targets(tmp_path, capsys, yunet_model):
    from edge.cli import main

    out = tmp_path / "r.json"
    need(WIDER / "gt_xyxy.txt")
    assert main(["eval", "--limit", "2", "--set", "detect.face.scales=[2.0]", "--json", str(out),
                 "--name", "probe"]) == 0
    r = json.loads(out.read_text())
    assert r["images"] == 2 and set(r["targets"]) == {">=32", "16-32", "8-16", "<8", "overmask"}
    assert r["config"]["detect"]["face"]["scales"] == [2.0]
    printed = capsys.readouterr().out
    assert "probe" in printed and "targets:" in printed


def test_cli_eval_dataset_choices_are_the_evaluations_sets():
    from edge.cli import EVAL_DATASETS

    assert sorted(EVAL_DATASETS) == sorted(evaluate.DEFAULT_SETS) == sorted(evaluate.DATASET_CLASS)


def test_the_service_and_the_cli_parser_load_no_tooling():
    """The evaluation and the downloader are tooling: building the CLI and the service must not import them."""
    code = ("import sys, edge.cli, edge.runtime.service, edge.compose; edge.cli.build_parser(); "
            "print(sorted(m for m in sys.modules if m.startswith('edge.eval') or m == 'edge.models.fetch'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


# --- every dev set: the class column, discovery, per-class scoring, the table, the command --------------

def test_read_list_with_and_without_a_class_column(tmp_path):
    gt = tmp_path / "gt_xyxy.txt"
    gt.write_text("# a.jpg 100 50\n1 2 11 12 face\n20 30 40 50 plate\n# b.jpg 10 10\n0 0 5 5\n")
    a, b = evaluate.read_list(gt, None, PLATE)
    assert a.labels().tolist() == [FACE, PLATE]
    assert b.labels().tolist() == [PLATE]  # no class column: the set's own class
    np.testing.assert_allclose(a.boxes, [[1, 2, 11, 12], [20, 30, 40, 50]])


@pytest.mark.parametrize("text, line, words", [
    ("# a.jpg 1 1\n0 0 1 1\n", 2, "needs a class column"),  # a dashcam set has no single class
    ("# a.jpg 1 1\n0 0 1 1 car\n", 2, "class 'car'"),
    ("# a.jpg 1 1\n0 0 x 1 face\n", 2, "expected numbers"),
    ("# a.jpg 1 1\n0 0 1 1 face\n0 0 nan 1 face\n", 3, "not finite"),
    ("# a.jpg 1 1\n0 0 1 inf face\n", 2, "not finite"),
    ("# a.jpg 1 1\n5 0 1 1 face\n", 2, "inverted"),
    ("#\n", 1, "expected '# <file>"),
])
def test_read_list_names_the_file_and_line_of_a_malformed_annotation(tmp_path, text, line, words):
    gt = tmp_path / "gt_xyxy.txt"
    gt.write_text(text)
    with pytest.raises(evaluate.DatasetError, match=f"gt_xyxy.txt:{line}: .*{words}"):
        evaluate.read_list(gt, None, None)


@pytest.mark.parametrize("make, words", [
    (lambda d: (d / "a.txt").write_text("a.jpg\t1\tx\t3\t4\tAB\n"), "a.txt:1: expected numbers"),
    (lambda d: (d / "a.txt").write_text("a.jpg\t1\t2\t-3\t4\tAB\n"), "a.txt:1: box .* inverted"),
    (lambda d: None, "no '<image>.txt'"),
])
def test_read_openalpr_names_the_malformed_file(tmp_path, make, words):
    make(tmp_path)
    with pytest.raises(evaluate.DatasetError, match=words):
        read_openalpr(tmp_path)


@pytest.mark.parametrize("reader", [read_face_list, read_openalpr])
def test_readers_refuse_a_missing_path(tmp_path, reader):
    with pytest.raises(evaluate.DatasetError, match="missing"):
        reader(tmp_path / "missing")


def _eval_root(tmp_path):
    """A small eval root in the shared layout: one set of each format, 40x60 grey images."""
    image = np.full((40, 60, 3), 128, np.uint8)
    for folder in ("faces/wide/images", "plates/alpr", "dashcam/drive/images"):
        (tmp_path / folder).mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "faces/wide/images/f.png"), image)
    (tmp_path / "faces/wide/gt_xyxy.txt").write_text("# f.png 60 40\n10 10 20 20\n")
    cv2.imwrite(str(tmp_path / "plates/alpr/p.png"), image)
    (tmp_path / "plates/alpr/p.txt").write_text("p.png\t30\t20\t20\t10\tAB123\n")
    (tmp_path / "plates/LICENSE.txt").write_text("a file beside the sets, not a set\n")
    cv2.imwrite(str(tmp_path / "dashcam/drive/images/d.png"), image)
    (tmp_path / "dashcam/drive/gt_xyxy.txt").write_text("# d.png 60 40\n10 10 20 20 face\n40 20 50 30 plate\n")
    return tmp_path


def test_discover_reads_every_set_in_the_shared_layout(tmp_path):
    sets = evaluate.discover(_eval_root(tmp_path))
    assert [(s.name, s.labelled) for s in sets] == [
        ("wide", ("face",)), ("alpr", ("plate",)), ("drive", ("face", "plate"))]
    assert [s.name for s in evaluate.discover(tmp_path, ["drive"])] == ["drive"]


@pytest.mark.parametrize("root, only, words", [
    ("missing", (), "no such folder"),
    (".", ("nope",), "no set named nope"),
    ("empty", (), "no annotated sets"),
])
def test_discover_refuses(tmp_path, root, only, words):
    _eval_root(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(evaluate.DatasetError, match=words):
        evaluate.discover(tmp_path / root, only)


def test_incomplete_sets_are_the_ones_the_data_readme_names():
    assert set(evaluate.INCOMPLETE) == {"openalpr_dev", "ro_dev", "oi_dev", "street_dev"}


@pytest.mark.parametrize("region, protected, overmask_px", [
    ((10, 10, 20, 20), (1, 0), 0),  # the face box exactly
    ((40, 20, 50, 30), (0, 1), 0),  # a labelled plate is no over-masking, whatever the run looked for
    ((8, 8, 22, 22), (1, 0), 14 * 14 - 100),
    ((0, 0, 60, 40), (1, 1), 60 * 40 - 200),
])
def test_evaluate_set_scores_each_class_and_counts_paint_outside_every_class(tmp_path, region, protected,
                                                                            overmask_px):
    drive = evaluate.discover(_eval_root(tmp_path), ["drive"])[0]
    r = evaluate.evaluate_set(_painting(region), drive, keep_per_image=True)
    assert {c: (v["protected"], v["objects"]) for c, v in r["classes"].items()} == {
        "face": (protected[0], 1), "plate": (protected[1], 1)}
    assert r["overmask_share"] == pytest.approx(overmask_px / (60 * 40), abs=1e-5)
    assert r["classes"]["face"]["overmask_share"] == r["overmask_share"]
    assert r["image_size"] == "60x40" and r["images"] == 1 and r["dropped_frames"] == 0
    assert r["per_image"] == [{"image": "d.png", "face": [protected[0], 1], "plate": [protected[1], 1],
                               "overmask": r["overmask_share"]}]


def test_evaluate_set_refuses_a_corrupt_image(tmp_path):
    drive = evaluate.discover(_eval_root(tmp_path), ["drive"])[0]
    (tmp_path / "dashcam/drive/images/d.png").write_bytes(b"not a png")
    with pytest.raises(evaluate.DatasetError, match="d.png: cannot read the image"):
        evaluate.evaluate_set(_painting((0, 0, 1, 1)), drive)


def test_the_sets_table_marks_single_class_incomplete_and_disabled():
    face = _result({"8-16": (10, 9)}, 0.01)
    plate = _result({"32-64": (4, 1)}, 0.01)
    row = {"images": 1, "dropped_frames": 0, "image_size": "60x40", "overmask_share": 0.01,
           "ms_per_image": face["ms_per_image"]}
    report = {"enabled": {"face": True, "plate": False}, "sets": {
        "both": {**row, "labelled": ["face", "plate"], "incomplete": "", "classes": {"face": face, "plate": plate}},
        "ro_dev": {**row, "labelled": ["plate"], "incomplete": "only the nearer plates are labelled",
                   "classes": {"plate": plate}}}}
    lines = evaluate.format_sets_table(report).splitlines()
    rows = [line.split() for line in lines[2:5]]
    assert [r[:3] for r in rows] == [["both", "face", "-"], ["both", "plate", "off"], ["ro_dev*+", "plate", "off"]]
    assert "90.0%" in lines[2] and "25.0%" in lines[3] and "60x40" in lines[4]
    notes = "\n".join(lines[5:])
    assert "* labels one class only" in notes and "ro_dev: only the nearer plates are labelled" in notes
    assert "off the config runs no detector" in notes


def test_cli_eval_all_on_the_shared_sets(tmp_path, capsys, yunet_model):
    from edge.cli import main

    out = tmp_path / "all.json"
    need(WIDER / "gt_xyxy.txt")
    assert main(["eval", "--all", "--only", "berlin_dev", "--only", "wider_dev", "--limit", "2",
                 "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert list(r["sets"]) == ["wider_dev", "berlin_dev"]  # faces/, plates/, dashcam/ order
    berlin = r["sets"]["berlin_dev"]
    assert berlin["images"] == 2 and berlin["image_size"] == "1920x1080"
    assert set(berlin["classes"]) == {"face", "plate"} and berlin["labelled"] == ["face", "plate"]
    assert berlin["classes"]["face"]["objects"] > 0 and berlin["classes"]["plate"]["objects"] > 0
    assert r["enabled"] == {"face": True, "plate": True}  # the defaults as they are: nothing turned on or off
    assert r["sets"]["wider_dev"]["labelled"] == ["face"] and "wider_dev_face_targets" in r
    printed = capsys.readouterr().out
    assert "berlin_dev" in printed and "wider_dev*" in printed
    assert "plate off" not in printed  # the defaults search plates


@pytest.mark.parametrize("argv, words", [
    (["--all", "--data", "/missing"], "eval: /missing: no such folder"),
    (["--dataset", "faces", "--data", "/missing/gt.txt"], "eval: /missing/gt.txt: no such annotation file"),
    (["--dataset", "plates", "--data", "/missing"], "eval: /missing: no such folder"),
    (["--all", "--only", "nope"], "no set or clip named nope"),
    (["--all", "--dataset", "faces"], "give one of them"),
    (["--only", "berlin_dev"], "--only selects sets of --all"),
    (["--shrink", "nan"], "--shrink nan"),
    (["--shrink", "0"], "--shrink 0.0"),
    (["--limit", "0"], "--limit 0"),
])
def test_cli_eval_refuses_in_one_line(argv, words):
    r = subprocess.run([sys.executable, "-m", "edge", "eval", *argv], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and words in r.stderr, r.stderr


def test_cli_eval_names_the_line_of_a_malformed_annotation(tmp_path):
    root = _eval_root(tmp_path)
    (root / "dashcam/drive/gt_xyxy.txt").write_text("# d.png 60 40\n10 10 20 20 face\n40 20 50 plate\n")
    r = subprocess.run([sys.executable, "-m", "edge", "eval", "--all", "--data", str(root)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (f"eval: {root}/dashcam/drive/gt_xyxy.txt:3: expected numbers, got '40 20 50 plate'")


def _a_file(tmp_path):
    (tmp_path / "file").write_text("")
    return tmp_path / "file" / "out.json"


@pytest.mark.parametrize("where, words", [
    (lambda tmp: _a_file(tmp), "cannot be written ("),  # (.../file is not a folder)
    (lambda tmp: tmp, "is a folder"),
    (lambda tmp: "/proc/edge-eval.json", "cannot be written"),
    (lambda tmp: "/dev/null/out.json", "cannot be written"),
])
@pytest.mark.parametrize("mode", [["--all"], ["--dataset", "faces"]])
def test_cli_eval_refuses_an_unwritable_json_before_evaluating(tmp_path, where, words, mode):
    """Checked by trying (this may run as root, which passes every access() check); refused before any image
    is read: nothing on stdout, one line, exit 2, nothing left beside the path."""
    path = where(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    r = subprocess.run([sys.executable, "-m", "edge", "eval", *mode, "--json", str(path)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stdout == "" and r.stderr.strip().splitlines() == [r.stderr.strip()], r.stderr
    assert r.stderr.startswith(f"eval: --json {path}: {words}"), r.stderr
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("changes, painted", [
    # faces only: the one painted class is the whole over-masking
    ({"detect.plate.enabled": False, "detect.context.enabled": False}, {"face"}),
    # the defaults: faces, head zones, plates, plate zones, each a part of the over-masking
    ({}, {"face", "head", "plate", "plate_zone"}),
])
def test_evaluate_set_splits_over_masking_by_the_class_painted(changes, painted):
    from conftest import SHARED

    dev = evaluate.discover(need(SHARED / "data/eval"), ["berlin_dev"])[0].limited(3)
    pipeline = evaluate.pipeline_for(override(Config(), changes))
    r = evaluate.evaluate_set(pipeline.process, dev, painter=pipeline)
    parts = r["overmask_by_class"]
    assert set(parts) == painted and r["overmask_share"] > 0
    # each class's paint outside labels is part of all paint outside labels; together they cover it
    assert all(0 < v <= r["overmask_share"] + 1e-5 for v in parts.values())
    assert sum(parts.values()) >= r["overmask_share"] - 1e-5
    if len(painted) == 1:
        assert parts.popitem()[1] == pytest.approx(r["overmask_share"], abs=1e-5)
    assert evaluate.evaluate_set(pipeline.process, dev.limited(1))["overmask_by_class"] == {}  # no painter
