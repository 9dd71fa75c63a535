"""The plate detector's training run: fine-tune YOLOX-Nano from the COCO export with a fresh plate class.

Resumable: every `--checkpoint-every` steps the model, its EMA, the optimizer and the step go to
OUT/last.pt (written to a temporary file, then renamed, so an interrupted write never corrupts it); a
run started again with the same OUT continues from there. Batches depend only on (seed, step), so an
interrupted and resumed run trains on exactly the samples of an uninterrupted one.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from models.train import data
from models.train.loss import yolox_loss
from models.train.net import Exported, YoloxNano, load_onnx

DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "train" / "plates"
SETS = ("oi_train", "ro_train")
WEIGHTS = (0.6, 0.4)  # ro_train is the only dashcam footage: drawn far above its 17% share of the images
BASE_CARD = "yolox_nano"
OPSET = 17


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m models.train", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, log, model.onnx")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=100, help="steps of linear learning-rate warm-up")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding oi_train/ and ro_train/")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images of each set (tests)")
    p.add_argument("--checkpoint-every", type=int, default=200)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; 1 is fastest on a small machine another job also uses")
    p.add_argument("--base", type=Path, default=None,
                   help=f"COCO YOLOX-Nano ONNX to start from (default: the '{BASE_CARD}' card, resolved by sha256)")
    p.add_argument("--init", type=Path, default=None,
                   help="a one-class plate export (e.g. models/yolox_plate.onnx) to continue from, its plate "
                        "predictor included, instead of the COCO weights with a fresh one")
    p.add_argument("--plate-widths", type=float, nargs=2, default=data.PLATE_WIDTHS, metavar=("MIN", "MAX"),
                   help="px: the range plate-centred crops rescale a plate's width to (default %(default)s)")
    p.add_argument("--plate-blur", type=float, default=0.0, metavar="P",
                   help="share of crops whose plates are blurred or pixelated beyond reading, boxes kept "
                        "(default %(default)s)")
    p.add_argument("--freeze-trunk", action="store_true",
                   help="train the head only, on the COCO trunk (backbone and PAFPN) of the context model, "
                        "whose weights stay as they are")
    p.add_argument("--export-only", action="store_true",
                   help="train nothing: export the EMA weights of OUT/last.pt (also while a run goes on)")
    p.add_argument("--export-to", type=Path, default=None, help="the ONNX file to write (default OUT/model.onnx)")
    a = p.parse_args(argv)
    for name in ("steps", "batch", "checkpoint_every", "threads"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if not (math.isfinite(a.lr) and a.lr > 0):
        p.error("--lr must be a positive number")
    lo, hi = a.plate_widths
    if not (math.isfinite(lo) and math.isfinite(hi) and data.MIN_SIDE <= lo < hi <= data.SIZE):
        p.error(f"--plate-widths must be two numbers with {data.MIN_SIDE:g} <= MIN < MAX <= {data.SIZE}")
    a.plate_widths = (lo, hi)
    if not 0.0 <= a.plate_blur <= 1.0:  # NaN fails too
        p.error("--plate-blur must be a share within 0..1")
    if a.init is not None and a.base is not None:
        p.error("--init and --base both name the starting weights: give one")
    if a.freeze_trunk and a.init is not None:
        p.error("--freeze-trunk keeps the COCO trunk as it is: start it from --base (or the default), not --init")
    return a


def base_weights(path: Path | None) -> Path:
    if path is not None:
        return path
    from edge.models import registry

    return registry.resolve(registry.card(BASE_CARD))


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak at the last step."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(total - warmup, 1)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


class Ema:
    """Exponential moving average of the weights (what gets exported): smooths a short run's last steps."""

    def __init__(self, net: torch.nn.Module):
        self.net = copy.deepcopy(net).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def update(self, net: torch.nn.Module, step: int) -> None:
        """Average the weights that train; frozen ones stay exactly as loaded (no rounding drift)."""
        d = min(0.999, (1 + step) / (10 + step))
        training = {name for name, p in net.named_parameters() if p.requires_grad}
        with torch.no_grad():
            for (name, e), p in zip(self.net.state_dict().items(), net.state_dict().values()):
                if name in training:
                    e.mul_(d).add_(p.detach(), alpha=1 - d)


def save(path: Path, **state) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def export(net: YoloxNano, path: Path) -> Path:
    """ONNX in the COCO export's layout: input `images` [N,3,H,W] BGR 0..255 (H, W multiples of 32),
    output `output` [N,A,5+C]; N, H and W are dynamic (unlike the COCO export, whose batch is fixed at 1).

    The TorchScript exporter (dynamo=False) needs nothing beyond torch and onnx; the dynamo exporter
    would add onnxscript to the extra for no gain on a graph this plain.
    """
    import warnings

    net = copy.deepcopy(net).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(Exported(net), (torch.zeros(1, 3, 320, 320),), str(tmp), dynamo=False,
                          input_names=["images"], output_names=["output"], opset_version=OPSET,
                          dynamic_axes={"images": {0: "N", 2: "H", 3: "W"}, "output": {0: "N", 1: "A"}})
    os.replace(tmp, path)
    return path


def export_checkpoint(ckpt: Path, path: Path) -> Path:
    """Export the EMA weights a checkpoint holds."""
    net = YoloxNano(num_classes=1)
    net.load_state_dict(torch.load(ckpt, weights_only=True)["ema"])
    return export(net, path)


def train(a: argparse.Namespace, log=print) -> Path:
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    sets = data.load_sets([a.data / s for s in SETS], a.limit)
    recipe = data.Recipe(WEIGHTS, plate_widths=a.plate_widths, plate_blur=a.plate_blur)
    net = YoloxNano(num_classes=1)
    if a.init is not None:
        load_onnx(net, a.init, keep_classes=True)
    else:
        load_onnx(net, base_weights(a.base), keep_classes=False)
    if a.freeze_trunk:
        net.freeze_trunk()
    ema = Ema(net)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=a.weight_decay)
    a.out.mkdir(parents=True, exist_ok=True)
    ckpt, step = a.out / "last.pt", 0
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=True)
        if bool(state.get("freeze_trunk", False)) != a.freeze_trunk:
            raise ValueError(f"{ckpt}: trained {'with' if state.get('freeze_trunk') else 'without'} --freeze-trunk; "
                             f"resume it the same way (or use another --out)")
        net.load_state_dict(state["net"])
        ema.net.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step = int(state["step"])
        log(f"resumed from {ckpt} at step {step}")
    net.train()
    t0, window = time.monotonic(), []
    with open(a.out / "log.jsonl", "a") as journal:
        while step < a.steps:
            images, boxes = data.batch(a.seed, step, a.batch, sets, recipe)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, a.steps, a.lr, a.warmup)
            loss, parts = yolox_loss(net(torch.from_numpy(images)), [torch.from_numpy(b) for b in boxes])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"step {step}: loss is {float(loss)}; last checkpoint kept in {ckpt}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            ema.update(net, step)
            step += 1
            window.append(parts["loss"])
            journal.write(json.dumps({"step": step, "lr": opt.param_groups[0]["lr"],
                                      "s": round(time.monotonic() - t0, 2), **parts}) + "\n")
            if step % a.checkpoint_every == 0 or step == a.steps:
                journal.flush()
                save(ckpt, net=net.state_dict(), ema=ema.net.state_dict(), opt=opt.state_dict(), step=step,
                     freeze_trunk=a.freeze_trunk)
                log(f"step {step}/{a.steps}: mean loss {np.mean(window):.3f} over the last {len(window)} steps, "
                    f"{time.monotonic() - t0:.0f} s this session")
                window = []
    return export(ema.net, a.export_to or a.out / "model.onnx")


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    try:
        if a.export_only:
            ckpt = a.out / "last.pt"
            if not ckpt.is_file():
                raise ValueError(f"{ckpt}: no checkpoint to export")
            path = export_checkpoint(ckpt, a.export_to or a.out / "model.onnx")
        else:
            path = train(a, log=lambda m: print(m, file=sys.stderr, flush=True))
    except (OSError, ValueError) as e:
        print(f"python -m models.train: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0
