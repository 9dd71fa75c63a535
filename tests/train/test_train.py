"""The plate detector's training recipe (models/train): real weights, real training images, real export."""
from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the [train] extra; scripts/setup.sh installs it

from conftest import MODELS, SHARED, host  # noqa: E402
from edge.detect.backends.session import OnnxModel  # noqa: E402
from edge.detect.detector import OnnxDetector  # noqa: E402
from edge.frame import PLATE  # noqa: E402
from models.train import data  # noqa: E402
from models.train.net import HEAD, YoloxNano, load_onnx  # noqa: E402
from models.train.train import main  # noqa: E402

COCO = MODELS / "yolox_nano_kazuhito00.onnx"
TRAIN = SHARED / "data" / "train" / "plates"
needs_data = pytest.mark.skipif(not (COCO.is_file() and TRAIN.is_dir()), reason="../shared models or training data absent")


def first_image(folder: str) -> Path:
    return sorted((TRAIN / folder / "images").iterdir())[0]


@needs_data
@pytest.mark.parametrize("folder", ["oi_train", "ro_train"])
def test_the_pytorch_rebuild_reproduces_the_coco_export(folder):
    import onnxruntime as ort

    net = YoloxNano(num_classes=80)
    load_onnx(net, COCO, keep_classes=True)
    net.eval()
    x = cv2.resize(cv2.imread(str(first_image(folder))), (416, 416)).transpose(2, 0, 1)[None].astype(np.float32)
    ref = ort.InferenceSession(str(COCO), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    with torch.no_grad():
        out = net.export_rows(torch.from_numpy(x)).numpy()
    assert out.shape == ref.shape == (1, 3549, 85)
    assert np.abs(out - ref).max() < 1e-3
    assert ref[..., 4].max() > 0.3  # a real street image: the comparison covers confident rows too


@needs_data
def test_a_wrong_structure_is_refused_not_loaded():
    class Wider(YoloxNano):
        def __init__(self):
            super().__init__(num_classes=80)
            self.stems[0] = torch.nn.Sequential(torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.SiLU())

    with pytest.raises(ValueError, match="conv #"):
        load_onnx(Wider(), COCO, keep_classes=True)


@needs_data
@pytest.mark.parametrize("seed", [0, 1])
def test_crops_keep_their_plates_inside_and_are_reproducible(seed):
    sets = data.load_sets([TRAIN / "oi_train", TRAIN / "ro_train"], limit=5)
    recipe = data.Recipe((0.6, 0.4))
    images, boxes = data.batch(seed, 3, 6, sets, recipe)
    again, boxes_again = data.batch(seed, 3, 6, sets, recipe)
    assert images.shape == (6, 3, data.SIZE, data.SIZE) and images.dtype == np.float32
    assert np.array_equal(images, again) and all(np.array_equal(a, b) for a, b in zip(boxes, boxes_again))
    found = np.concatenate(boxes)
    assert len(found) >= 3  # most crops are centred on a plate
    assert (found >= 0).all() and (found <= data.SIZE).all()
    assert ((found[:, 2:] - found[:, :2]) >= data.MIN_SIDE).all()


def weights_of(run: Path) -> dict:
    return torch.load(run / "last.pt", weights_only=True)["ema"]


@needs_data
def test_a_few_steps_train_export_and_run_in_the_pipeline_and_a_resumed_run_matches(tmp_path):
    common = ["--batch", "2", "--limit", "4", "--checkpoint-every", "2", "--data", str(TRAIN), "--base", str(COCO)]
    assert main(["--out", str(tmp_path / "a"), "--steps", "3", *common]) == 0
    # the same run interrupted after 2 steps and resumed: the same weights
    assert main(["--out", str(tmp_path / "b"), "--steps", "2", *common]) == 0
    assert main(["--out", str(tmp_path / "b"), "--steps", "3", *common]) == 0
    a, b = weights_of(tmp_path / "a"), weights_of(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a" / "log.jsonl").read_text().count("\n") == 3

    onnx_path = tmp_path / "a" / "model.onnx"
    assert onnx_path.stat().st_size < 10 * 2**20
    sha = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    backend = host(OnnxModel(onnx_path, name="trained", sha256=sha), "yolox_single")
    detector = OnnxDetector(backend, class_id=PLATE, score_threshold=0.0, nms_iou=0.3, scales=(0.5, 1.0))
    frame = cv2.imread(str(first_image("ro_train")))
    found = detector.detect(frame)
    assert found.xyxy.shape[1] == 4 and len(found.xyxy) > 0 and np.isfinite(found.xyxy).all()
    assert (found.class_id == PLATE).all() and ((found.score >= 0) & (found.score <= 1)).all()


@needs_data
def test_a_run_continues_from_a_plate_export_with_its_plate_predictor(tmp_path):
    """--init starts from a one-class export (models/yolox_plate.onnx), its plate predictor included: the
    starting weights reproduce that model's output, and a few steps train on from there."""
    import onnxruntime as ort

    own = Path(__file__).resolve().parents[2] / "models" / "yolox_plate.onnx"
    net = YoloxNano(num_classes=1)
    load_onnx(net, own, keep_classes=True)
    net.eval()
    x = cv2.resize(cv2.imread(str(first_image("ro_train"))), (320, 320)).transpose(2, 0, 1)[None].astype(np.float32)
    ref = ort.InferenceSession(str(own), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    with torch.no_grad():
        assert np.abs(net.export_rows(torch.from_numpy(x)).numpy() - ref).max() < 1e-3
    assert ref[..., 5].max() > 0.5  # a dashcam frame with plates: the trained plate predictor came along
    common = ["--batch", "2", "--limit", "4", "--data", str(TRAIN), "--plate-widths", "20", "300", "--plate-blur", "0.5"]
    assert main(["--out", str(tmp_path / "a"), "--steps", "2", "--init", str(own), *common]) == 0
    assert main(["--out", str(tmp_path / "b"), "--steps", "2", "--base", str(COCO), *common]) == 0
    a, b = weights_of(tmp_path / "a"), weights_of(tmp_path / "b")
    head = [k for k in a if k.startswith("cls_preds")]
    assert head and not all(torch.equal(a[k], b[k]) for k in head)


@needs_data
def test_a_frozen_trunk_run_trains_the_head_alone_on_the_exact_coco_trunk(tmp_path, capsys):
    """--freeze-trunk: backbone and PAFPN stay the context model's COCO weights bit for bit (in the weights and
    in their average, which is what gets exported), the head trains; a resume without the flag is refused."""
    common = ["--batch", "2", "--limit", "4", "--data", str(TRAIN), "--base", str(COCO)]
    assert main(["--out", str(tmp_path / "a"), "--steps", "2", "--freeze-trunk", *common]) == 0
    coco = YoloxNano(num_classes=1)
    load_onnx(coco, COCO, keep_classes=False)
    ref = coco.state_dict()
    state = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    trunk = [k for k in ref if k.split(".")[0] not in HEAD]
    head = [k for k in ref if k.split(".")[0] in HEAD and not k.startswith("cls_preds")]  # cls_preds: fresh
    assert trunk and all(torch.equal(state[w][k], ref[k]) for w in ("net", "ema") for k in trunk)
    assert head and any(not torch.equal(state["net"][k], ref[k]) for k in head)
    capsys.readouterr()
    assert main(["--out", str(tmp_path / "a"), "--steps", "3", *common]) == 2
    assert "trained with --freeze-trunk; resume it the same way" in capsys.readouterr().err


@needs_data
@pytest.mark.parametrize("widths", [(12.0, 24.0), (150.0, 300.0)])
def test_plate_centred_crops_rescale_plates_within_the_widths(widths):
    sets = data.load_sets([TRAIN / "ro_train"], limit=8)
    recipe = data.Recipe((1.0,), plate_centred=1.0, flip=0.0, blur=0.0, plate_widths=widths)
    rng = np.random.default_rng(0)
    widest = [float((b[:, 2] - b[:, 0]).max()) for b in (data.sample(rng, sets, recipe)[1] for _ in range(24)) if len(b)]
    assert len(widest) >= 12
    # the centred plate is the widest unless a larger one shares the crop; clipping only narrows it
    assert np.median(widest) <= widths[1] + 1 and max(widest) >= widths[0]
    if widths[0] > 100:
        assert np.median(widest) > 100  # large plates, where the default widths stop at 200


@pytest.mark.parametrize("seed", range(6))
def test_smudged_plates_lose_their_characters_and_nothing_else_changes(seed):
    rng = np.random.default_rng(seed)
    crop = np.full((data.SIZE, data.SIZE, 3), 90, np.uint8)
    crop[100:130, 60:180] = 230
    for x in range(66, 175, 9):  # dark "characters" on a white plate
        crop[105:125, x:x + 4] = 20
    before = crop.copy()
    box = np.array([[60, 100, 180, 130]], np.float32)
    data.smudge_plates(rng, crop, box)
    outside = np.ones(crop.shape[:2], bool)
    outside[100:130, 60:180] = False
    assert np.array_equal(crop[outside], before[outside])
    detail = [cv2.Laplacian(cv2.cvtColor(c[100:130, 60:180], cv2.COLOR_BGR2GRAY), cv2.CV_64F).var() for c in (before, crop)]
    assert detail[1] < detail[0] / 4
    assert abs(float(crop[100:130, 60:180].mean()) - float(before[100:130, 60:180].mean())) < 25  # still a light plate


@pytest.mark.parametrize("args, message", [
    (["--plate-blur", "1.5"], "--plate-blur must be a share within 0..1"),
    (["--plate-blur", "nan"], "--plate-blur must be a share within 0..1"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--plate-widths", "1", "50"], "--plate-widths must be two numbers"),
    (["--plate-widths", "80", "40"], "--plate-widths must be two numbers"),
    (["--plate-widths", "nan", "40"], "--plate-widths must be two numbers"),
    (["--init", "x.onnx", "--base", "y.onnx"], "--init and --base"),
    (["--init", "x.onnx", "--freeze-trunk"], "--freeze-trunk keeps the COCO trunk as it is"),
    (["--init", "/nonexistent.onnx", "--limit", "2"], "/nonexistent.onnx"),
    (["--lr", "nan"], "--lr must be a positive number"),
    (["--export-only"], "no checkpoint to export"),
    (["--data", "/nonexistent"], "no such annotation file"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        raise SystemExit(main(["--out", str(tmp_path / "run"), *args]))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err
