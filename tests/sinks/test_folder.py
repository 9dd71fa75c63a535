import json
import os

import cv2
import numpy as np
import pytest

from conftest import unheld
from edge.frame import FACE, PLATE, Detections, DroppedFrame, Frame, MaskedFrame
from edge.sinks.folder import JSONL_NAME, FolderSink, FolderSinkError, frame_stem, safe_stem


def masked(seq: int = 3, name: str = "img_003", status: str = "masked") -> MaskedFrame:
    img = np.random.default_rng(seq).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    frame = Frame(img, "front", seq, 100, 200, name)
    det = Detections(np.array([[1, 1, 5, 5], [10, 2, 20, 8]], np.float32), [0.9, 0.7], [FACE, PLATE])
    regions = np.array([[0, 0, 6, 6], [9, 1, 21, 9]], np.int32)
    return MaskedFrame(frame, regions, det, status, {"detect": 3.5}, (("m", "00" * 32),))


def dropped(seq: int = 4, name: str = "img_004") -> DroppedFrame:
    return DroppedFrame.of(Frame(np.zeros((20, 30, 3), np.uint8), "front", seq, 0, 0, name), "bad_detections", {"detect": 1.0})


def lines(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / JSONL_NAME).read_text().splitlines()]


def test_masked_frame_becomes_lossless_png_and_a_line(tmp_path):
    item = masked()
    with FolderSink(tmp_path / "out") as sink:
        assert sink.send(item) is True
        assert sink.stats()["sent"] == 1

    png = cv2.imread(str(tmp_path / "out" / "img_003.png"), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(png, item.frame.image)
    (record,) = lines(tmp_path / "out")
    assert record["frame"] == "img_003"
    assert (record["camera_id"], record["seq"], record["status"]) == ("front", 3, "masked")
    assert "reason" not in record
    assert record["boxes"] == [[0, 0, 6, 6], [9, 1, 21, 9]]
    assert record["detections"] == unheld(item.detections.to_list())
    assert record["timings_ms"]["detect"] == 3.5 and "write" in record["timings_ms"]


def test_a_held_region_is_flagged_in_its_record(tmp_path):
    item = masked()
    item.held = np.array([True, False])  # the face was held by the tracker, the plate detected
    with FolderSink(tmp_path / "out") as sink:
        assert sink.send(item) is True
    (record,) = lines(tmp_path / "out")
    assert [(d["class"], d["held"]) for d in record["detections"]] == [("face", True), ("plate", False)]


@pytest.mark.parametrize("annotate", [False, True])
def test_annotate_writes_the_overlay_on_the_masked_image_and_the_same_record(tmp_path, annotate):
    from edge import overlay

    item = masked()
    before = item.frame.image.copy()
    with FolderSink(tmp_path, annotate=annotate) as sink:
        assert sink.send(item) is True
    png = cv2.imread(str(tmp_path / "img_003.png"), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(png, overlay.annotate(item) if annotate else before)
    assert np.array_equal(item.frame.image, before)  # drawn on a copy: the outcome's pixels are untouched
    assert np.array_equal(png, before) != annotate  # the overlay drew something, or nothing at all
    (record,) = lines(tmp_path)
    assert record["boxes"] == [[0, 0, 6, 6], [9, 1, 21, 9]] and record["detections"] == unheld(item.detections.to_list())


def test_dropped_frame_gets_a_line_and_no_image(tmp_path):
    with FolderSink(tmp_path) as sink:
        assert sink.send(dropped()) is True
        assert sink.stats()["sent_dropped_records"] == 1
    assert not list(tmp_path.glob("*.png"))
    (record,) = lines(tmp_path)
    assert (record["frame"], record["status"], record["reason"]) == ("img_004", "dropped", "bad_detections")
    assert record["boxes"] == [] and record["detections"] == []


def test_unnamed_frames_use_camera_and_seq(tmp_path):
    with FolderSink(tmp_path) as sink:
        sink.send(masked(seq=12, name=""))
        sink.send(dropped(seq=13, name=""))
    assert (tmp_path / "front_00000012.png").is_file()
    assert [r["frame"] for r in lines(tmp_path)] == ["front_00000012", "front_00000013"]


def test_two_cameras_with_the_same_frame_names_do_not_overwrite_each_other(tmp_path):
    def named(camera: str, seq: int) -> MaskedFrame:
        item = masked(seq=seq, name="000001")
        return MaskedFrame(Frame(item.frame.image, camera, seq, 0, 0, "000001"), item.regions, item.detections,
                           item.status, item.timings_ms)

    front, rear = named("front", 1), named("rear", 2)
    with FolderSink(tmp_path) as sink:
        sink.send(front)
        sink.send(rear)
        sink.send(DroppedFrame.of(Frame(np.zeros((20, 30, 3), np.uint8), "rear", 3, 0, 0, "000001"), "deadline"))
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "000001.png")), front.frame.image)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "rear__000001.png")), rear.frame.image)
    assert [(r["frame"], r["camera_id"]) for r in lines(tmp_path)] == [
        ("000001", "front"), ("rear__000001", "rear"), ("rear__000001", "rear")]


def test_each_line_is_on_disk_before_close(tmp_path):
    sink = FolderSink(tmp_path)
    sink.send(masked(seq=1, name="a"))
    sink.send(dropped(seq=2, name="b"))
    assert [r["frame"] for r in lines(tmp_path)] == ["a", "b"]
    sink.close()


def test_appends_to_an_existing_log(tmp_path):
    with FolderSink(tmp_path) as sink:
        sink.send(dropped(seq=1))
    with FolderSink(tmp_path) as sink:
        sink.send(dropped(seq=2))
    assert [r["seq"] for r in lines(tmp_path)] == [1, 2]


def test_png_compression_level_is_used(tmp_path):
    smooth = masked()
    smooth.frame.image[:] = 7
    with FolderSink(tmp_path / "fast", png_compression=0) as fast, FolderSink(tmp_path / "small", png_compression=9) as small:
        fast.send(smooth)
        small.send(smooth)
    assert (tmp_path / "small" / "img_003.png").stat().st_size < (tmp_path / "fast" / "img_003.png").stat().st_size


def test_refuses_a_plain_frame(tmp_path):
    with FolderSink(tmp_path) as sink:
        with pytest.raises(TypeError):
            sink.send(masked().frame)
    assert not list(tmp_path.glob("*.png"))
    assert not (tmp_path / JSONL_NAME).exists()  # nothing was written: no empty records file either


def test_unwritable_folder_fails_at_construction(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(FolderSinkError, match="file"):
        FolderSink(blocker / "out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_folder_fails_at_construction(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(FolderSinkError):
            FolderSink(folder)
    finally:
        folder.chmod(0o700)


def test_rejects_bad_compression(tmp_path):
    with pytest.raises(ValueError):
        FolderSink(tmp_path, png_compression=10)


def test_write_failure_is_counted_not_raised(tmp_path):
    with FolderSink(tmp_path) as sink:
        (tmp_path / "img_003.png").mkdir()  # the image path is taken by a folder
        assert sink.send(masked()) is False
        assert sink.stats()["write_errors"] == 1
    assert lines(tmp_path) == []


def test_send_after_close_is_refused(tmp_path):
    sink = FolderSink(tmp_path)
    sink.close()
    sink.close()
    assert sink.send(masked()) is False
    assert sink.stats()["dropped_closed"] == 1
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize("name, stem", [
    ("img_001", "img_001"),
    ("../../etc/passwd", ".._.._etc_passwd"),
    ("a\\b", "a_b"),
    ("..", "_.."),
    ("", "_"),
    ("kamera-ü", "kamera-ü"),
])
def test_safe_stem_keeps_files_inside_the_folder(name, stem):
    assert safe_stem(name) == stem


def test_frame_stem_falls_back_to_camera_and_seq():
    assert frame_stem("cam/1", 42) == "cam_1_00000042"
    assert frame_stem("cam1", 42, "x") == "x"


def test_a_symlink_planted_at_a_frame_name_is_replaced_not_followed(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"raw input the attacker wants overwritten")
    (out / "img_003.png").symlink_to(victim)
    with FolderSink(out) as sink:
        assert sink.send(masked()) is True
    assert victim.read_bytes() == b"raw input the attacker wants overwritten"
    assert not (out / "img_003.png").is_symlink()
    np.testing.assert_array_equal(cv2.imread(str(out / "img_003.png")), masked().frame.image)


def test_records_file_is_never_opened_through_a_symlink(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / JSONL_NAME).symlink_to(tmp_path / "elsewhere.jsonl")
    with pytest.raises(FolderSinkError):
        FolderSink(out)
    assert not (tmp_path / "elsewhere.jsonl").exists()


def test_no_partial_file_is_left_when_the_write_fails(tmp_path, monkeypatch):
    out = tmp_path / "out"

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    with FolderSink(out) as sink:
        monkeypatch.setattr(os, "replace", refuse)
        assert sink.send(masked()) is False
        assert sink.stats()["write_errors"] == 1
    assert sorted(p.name for p in out.iterdir()) == [JSONL_NAME]


@pytest.mark.parametrize("layout, refused", [
    ("same", True),          # --output-dir equal to the input folder
    ("inside", True),        # the output folder inside the input folder
    ("contains", True),      # the input folder inside the output folder
    ("beside_video", True),  # a video file inside the output folder
    ("sibling", False),
])
def test_output_folder_must_lie_apart_from_the_input(tmp_path, layout, refused):
    from edge.sinks.folder import check_apart

    inp = tmp_path / "in"
    inp.mkdir()
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    out, source = {"same": (inp, inp), "inside": (inp / "masked", inp), "contains": (tmp_path, inp),
                   "beside_video": (tmp_path, video), "sibling": (tmp_path / "out", inp)}[layout]
    if refused:
        with pytest.raises(FolderSinkError, match="overlaps the input"):
            check_apart(out, [source])
    else:
        check_apart(out, [source])


@pytest.mark.parametrize("names, stems, renamed", [
    (["a\nb", "a_b"], ["a_b", "a_b~2"], 1),
    (["a/b", "a_b", "a\\b", "a_b~2"], ["a_b", "a_b~2", "a_b~3", "a_b~2~2"], 3),
    (["..", "_.."], ["_..", "_..~2"], 1),
    (["img", "img"], ["img", "img"], 0),  # the same frame name again is the same frame (a rewrite)
])
def test_distinct_frames_never_share_a_file_or_a_record_name(tmp_path, names, stems, renamed):
    items = [masked(i, name) for i, name in enumerate(names)]
    with FolderSink(tmp_path) as sink:
        for item in items:
            assert sink.send(item) is True
        assert sink.stats()["renamed"] == renamed
    assert [r["frame"] for r in lines(tmp_path)] == stems
    for item, stem in zip(items, stems):
        if stems.count(stem) == 1:
            np.testing.assert_array_equal(cv2.imread(str(tmp_path / f"{stem}.png")), item.frame.image)


@pytest.mark.parametrize("existed, left", [
    (False, []),  # the sink made the folder: nothing at all is left
    (True, ["keep.txt"]),  # a folder the user gave keeps what it had, and gets no empty records file
])
def test_a_sink_that_wrote_nothing_leaves_no_empty_records_file(tmp_path, existed, left):
    out = tmp_path / "out"
    if existed:
        out.mkdir()
        (out / "keep.txt").write_text("x")
    FolderSink(out).close()
    assert sorted(p.name for p in out.iterdir()) == left if out.exists() else left == []


def test_an_existing_empty_records_file_is_left_as_it_was(tmp_path):
    (tmp_path / JSONL_NAME).write_text("")
    FolderSink(tmp_path).close()
    assert (tmp_path / JSONL_NAME).read_text() == ""
