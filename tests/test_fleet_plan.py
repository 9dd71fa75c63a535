"""The fleet's bookkeeping and its painting step without Ray: plans, chunks, the ledger, and that a frame
whose detection failed or does not match its pixels fails closed exactly as in the service."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.compose import load_config
from edge.fleet import plan, worker
from edge.fleet.plan import BAD_OUTPUT, DETECTOR_ERROR, OK, ChunkResult, Ledger
from edge.frame import FACE, PLATE, Detections
from tests.conftest import VIDEO

CLIP = VIDEO / "udacity_CarND-Vehicle-Detection_test_video.mp4"


def frames_of(path, n):
    cap = cv2.VideoCapture(str(path))
    out = [cap.read()[1] for _ in range(n)]
    cap.release()
    return out


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    if not CLIP.exists():
        pytest.skip("shared clip missing")
    path = tmp_path_factory.mktemp("clip") / "drive.mkv"
    images = frames_of(CLIP, 4)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 25.0, (1280, 720))
    for image in images:
        writer.write(image)
    writer.release()
    return path


@pytest.mark.parametrize("frames, kind, chunk, expected", [
    (24, "video", 10, [(0, 10), (10, 20), (20, None)]),  # a video's last chunk reads to its real end
    (20, "video", 10, [(0, 10), (10, None)]),
    (None, "video", 10, [(0, None)]),  # no count in the container: one chunk, to the end
    (7, "folder", 3, [(0, 3), (3, 6), (6, 7)]),
    (0, "folder", 3, [(0, 0)]),
])
def test_chunks_cover_every_frame_once(frames, kind, chunk, expected):
    item = plan.Input("/x", kind, "x", "k", frames)
    assert [(c.start, c.stop) for c in plan.chunks(item, chunk)] == expected
    assert [c.index for c in plan.chunks(item, chunk)] == list(range(len(expected)))


@pytest.mark.parametrize("paths, names", [
    (["/a/drive.mp4", "/b/drive.mkv", "/c/drive", "/d/other.mp4"], ["drive", "drive_2", "drive_3", "other"]),
    (["/a/a\nb.mp4", "/a/a_b.mp4"], ["a_b", "a_b_2"]),  # distinct inputs whose names become one
    (["/a/a_b_2.mp4", "/a/a_b.mp4", "/a/a\nb.mp4"], ["a_b_2", "a_b", "a_b_3"]),
    (["/a/...mp4", "/b/.."], ["_..", "_.._2"]),  # never "." or ".." as a folder name
])
def test_output_names_are_unique_in_input_order(paths, names):
    assert plan.output_names([Path(p) for p in paths]) == names


@pytest.mark.parametrize("make, words", [
    (lambda p: p / "missing.mkv", "no such file or directory"),
    (lambda p: (p / "a").symlink_to(p / "b") or (p / "b").symlink_to(p / "a") or p / "a",
     "too many levels of symbolic links"),
])
def test_an_input_that_cannot_be_planned_is_its_own_failure_in_one_line(tmp_path, make, words):
    path = make(tmp_path)
    with pytest.raises(plan.PlanError, match=words) as e:
        plan.plan_input(path, "x", "d")
    assert str(e.value) == f"{path}: {words}"


def test_a_list_file_names_inputs_relative_to_itself(tmp_path):
    (tmp_path / "sub").mkdir()
    listing = tmp_path / "sub" / "inputs.txt"
    listing.write_text("# recorded on day 1\na.mkv\n\n/abs/b.mp4\n")
    assert plan.read_inputs([str(listing), "c.mp4"]) == [tmp_path / "sub" / "a.mkv", Path("/abs/b.mp4"), Path("c.mp4")]


def test_the_ledger_key_changes_with_the_config_and_the_file(clip, tmp_path):
    a = plan.plan_input(clip, "drive", plan.config_digest(load_config(None)))
    b = plan.plan_input(clip, "drive", plan.config_digest(load_config(None, ["detect.face.score_threshold=0.61"])))
    same = plan.plan_input(clip, "elsewhere", plan.config_digest(load_config(None, ["output.kind=none"])))
    assert a.key != b.key and a.key == same.key and a.frames == 4 and a.kind == "video"


def test_chunk_results_round_trip_through_the_ledger_without_pickles(tmp_path):
    dets = Detections(np.array([[1, 2, 30, 40], [5, 5, 9, 9]], np.float32), [0.9, 0.4], [FACE, PLATE],
                      np.arange(16, dtype=np.float32).reshape(2, 4, 2))
    frames = [(3, b"a" * 16, OK, dets, ""), (4, b"b" * 16, DETECTOR_ERROR, None, "boom"),
              (5, b"c" * 16, OK, Detections(), "")]
    ledger = Ledger(tmp_path)
    ledger.add_chunk("key", 0, ChunkResult.build(frames, 12.5))
    ledger.close()
    again = Ledger(tmp_path)
    assert again.has_chunk("key", 0) and not again.has_chunk("key", 1)
    (loaded,) = again.load_chunks("key", 1)
    back = list(loaded.frames())
    assert [(s, k, o, m) for s, k, o, _, m in back] == [(s, k, o, m) for s, k, o, _, m in frames]
    np.testing.assert_array_equal(back[0][3].xyxy, dets.xyxy)
    np.testing.assert_array_equal(back[0][3].quad, dets.quad)
    assert back[1][3].quad is None and len(back[2][3]) == 0
    assert (tmp_path / plan.LEDGER_DIR).stat().st_mode & 0o777 == 0o700
    again.add_done("key", {"name": "x"})
    assert not (tmp_path / plan.LEDGER_DIR / "key").exists() and "key" in Ledger(tmp_path).done


def test_a_line_cut_by_a_crash_only_costs_its_chunk(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.add_chunk("key", 0, ChunkResult.build([(0, b"a" * 16, OK, Detections(), "")]))
    ledger.close()
    with open(tmp_path / plan.LEDGER_DIR / plan.LEDGER_NAME, "a") as f:
        f.write('{"input": "key", "chu')
    assert Ledger(tmp_path).chunks == {("key", 0)}


def recorded(images, outcomes, face_box=(100, 100, 200, 220)):
    frames = []
    for seq, (image, outcome) in enumerate(zip(images, outcomes)):
        key = worker.digest(image) if outcome != "other pixels" else b"x" * 16
        if outcome in ("ok", "other pixels"):
            frames.append((seq, key, OK, Detections(np.array([face_box], np.float32), [0.9], [FACE]), ""))
        elif outcome == "missing":
            continue
        else:
            frames.append((seq, key, outcome, None, "simulated"))
    return ChunkResult.build(frames)


def paint(clip, tmp_path, outcomes, *sets):
    item = plan.plan_input(clip, "drive", "d")
    cfg = load_config(None, list(sets))
    result = recorded(frames_of(clip, 4), outcomes)
    summary = worker.paint_input(cfg, item, [result], [("m", "0" * 64)], ["CPUExecutionProvider"], str(tmp_path))
    lines = [json.loads(line) for line in (tmp_path / "drive" / "detections.jsonl").read_text().splitlines()]
    return summary, lines


@pytest.mark.parametrize("policy, status", [("drop", "dropped"), ("mask_whole", "masked_whole")])
def test_a_frame_without_matching_detections_fails_closed_as_in_the_service(clip, tmp_path, policy, status):
    summary, lines = paint(clip, tmp_path, ["ok", DETECTOR_ERROR, "other pixels", BAD_OUTPUT],
                           f"service.on_failure={policy}")
    assert [r["status"] for r in lines] == ["masked", status, status, status]
    reasons = [r.get("reason") for r in lines]
    c = summary["counters"]
    if policy == "drop":
        assert reasons == [None, "detector_error", "detector_error", "bad_output"]
        assert sorted(p.name for p in (tmp_path / "drive").glob("*.png")) == ["000000.png"]
        assert c["dropped_detector_error"] == 2 and c["dropped_bad_output"] == 1
    else:
        assert c["masked_whole_detector_error"] == 2 and c["masked_whole_bad_output"] == 1
        for name in ("000001", "000002", "000003"):
            image = cv2.imread(str(tmp_path / "drive" / f"{name}.png"))
            assert len(np.unique(image.reshape(-1, 3), axis=0)) == 1  # filled whole
    assert summary["mismatches"] == 1
    assert lines[0]["boxes"]


def test_a_frame_no_worker_detected_is_dropped(clip, tmp_path):
    summary, lines = paint(clip, tmp_path, ["ok", "ok", "missing", "ok"])
    assert [r["status"] for r in lines] == ["masked", "masked", "dropped", "masked"]
    assert lines[2]["reason"] == "detector_error" and summary["mismatches"] == 1


def test_a_failed_paint_leaves_nothing_under_the_final_name(clip, tmp_path):
    (tmp_path / "drive").mkdir()  # an output that is not from this run's ledger
    with pytest.raises(FileExistsError):
        paint(clip, tmp_path, ["ok"] * 4)
    assert list((tmp_path / "drive").iterdir()) == [] and not list(tmp_path.glob(".drive.*"))
