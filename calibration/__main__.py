"""python -m calibration: calibrate, quantize, card, gate. Exit status 1 when any method fails the gate."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from calibration.gate import DATASET_OF_CLASS, check_gate, evaluate_config, gate_configs
from calibration.quantize import METHODS, quantize_model, write_card
from calibration.reader import RuntimeCalibrationReader, iter_frames, runtime_detector
from edge.runtime.hardening import harden_tool

log = logging.getLogger("calibration")
# what onnxruntime raises (none derives from RuntimeError)
ORT_ERRORS = (ort_state.Fail, ort_state.InvalidArgument, ort_state.NoSuchFile, ort_state.NoModel,
              ort_state.InvalidProtobuf, ort_state.InvalidGraph, ort_state.RuntimeException)


def default_out_dir() -> Path:
    """Outside the repository: quantized weights are data, like every other model file."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edge-anon" / "calibrated"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m calibration", description=__doc__)
    p.add_argument("--model", default="yunet_n", help="model card name of the fp32 model")
    p.add_argument("--source", action="append", required=True, metavar="PATH",
                   help="calibration images: an image, a folder of images or a video (repeatable)")
    p.add_argument("--every", type=int, default=1, help="take every N-th video frame")
    p.add_argument("--per-source", type=int, help="at most N frames / images from each source")
    p.add_argument("--method", choices=[*METHODS, "all"], default="MinMax")
    p.add_argument("--out", type=Path, default=None, help=f"output folder (default {default_out_dir()})")
    p.add_argument("--config", "-c",
                   help="runtime config: its passes build the calibration inputs, and the gate runs it")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--eval-data", help="annotated set for the gate (default: the class's set in ../shared/data/eval)")
    p.add_argument("--eval-limit", type=int, help="only the first N images of the gate's set")
    p.add_argument("--quantize-heads", action="store_true",
                   help="quantize the output heads too (default: kept float, see quantize.head_nodes)")
    p.add_argument("--no-gate", action="store_true", help="quantize only (the card still says the gate was not run)")
    p.add_argument("--timing-runs", type=int, default=10, help="session runs per model for the ms figure")
    return p


def time_model(path: Path, blob: np.ndarray, input_name: str, threads: int, runs: int) -> float:
    """Median ms of a plain CPU session run on one calibration input (a contended figure on a shared machine)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    sess.run(None, {input_name: blob})
    times = []
    for _ in range(max(1, runs)):
        t = time.perf_counter()
        sess.run(None, {input_name: blob})
        times.append((time.perf_counter() - t) * 1e3)
    return round(float(np.median(times)), 2)


class CalibrationError(ValueError):
    """A bad flag, source or output folder: one line, exit status 2, nothing loaded."""


def check_args(args) -> None:
    """Refuse what would fail (or silently do nothing) only after the models are loaded."""
    for flag in ("every", "per_source", "timing_runs", "eval_limit"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise CalibrationError(f"--{flag.replace('_', '-')} {value}: must be at least 1")
    for src in map(Path, args.source):
        if not src.exists():
            raise CalibrationError(f"--source {src}: no such file or folder")
    out = (args.out or default_out_dir()).resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CalibrationError(f"--out {out}: cannot create it ({e.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise CalibrationError(f"--out {out}: not writable")


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: the run unwinds (temporary folders removed, no half-written model) and exits 128 + it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum, _frame):
    raise Interrupted(signum)


def main(argv: list[str] | None = None) -> int:
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _main(argv)
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"calibration: interrupted ({signal.Signals(signum).name}); models and cards finished before "
              f"it are kept, nothing half-written", file=sys.stderr)
        return 128 + signum
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _main(argv: list[str] | None) -> int:
    harden_tool()  # before onnxruntime loads and before the first frame is decoded
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from edge.compose import StartupError
    from edge.config import ConfigError
    from edge.models.registry import ModelError
    from edge.checks import one_line

    try:
        check_args(args)
        return run(args)
    except (CalibrationError, ConfigError, ModelError, StartupError, OSError, ValueError) as e:
        print(f"calibration: {one_line(e)}", file=sys.stderr)
        return 2
    except (RuntimeError, *ORT_ERRORS) as e:  # onnxruntime refusing the model or an input: a multi-line message
        print(f"calibration: onnxruntime: {one_line(e)}", file=sys.stderr)
        return 2


def run(args) -> int:
    from edge import config as config_mod
    from edge.compose import input_rewrite, load_config
    from edge.eval.evaluate import format_table, load_items
    from edge.models.registry import card as load_source_card, resolve
    from edge.progress import track

    cfg = load_config(args.config, args.set)
    source_card = load_source_card(args.model, cfg.models.cards_dir or None)
    class_name = source_card.classes[0]
    try:
        cls_cfg = dataclasses.replace(cfg.detect.get(class_name), enabled=True, model=args.model)
    except KeyError:  # a class the config has no table for: the model's own defaults
        cls_cfg = config_mod.ClassConfig(model=args.model)
    cfg = dataclasses.replace(cfg, detect=cfg.detect.with_class(class_name, cls_cfg))
    resolved = resolve(source_card, cache_dir=cfg.models.cache_dir or None, mirrors=cfg.models.mirrors)
    src_path = resolved
    out_dir = (args.out or default_out_dir()).resolve()
    methods = list(METHODS) if args.method == "all" else [args.method]

    report: dict = {"model": args.model, "float_heads": not args.quantize_heads,
                    "source_sha256": source_card.sha256, "config": args.config, "overrides": args.set, "methods": {}}
    failed = []
    with tempfile.TemporaryDirectory(prefix="calib-cards-") as work:  # models and cards only: frames stay in memory
        rewrite = input_rewrite(source_card)
        if rewrite is not None:  # calibrate, quantize and time the model with the input dims the runtime gives it
            src_path = Path(work) / f"{args.model}_dynamic.onnx"
            src_path.write_bytes(rewrite(resolved.read_bytes()))
        detector, _ = runtime_detector(cfg, class_name)
        frames = track(iter_frames(args.source, every=args.every, per_source=args.per_source), "calibration set",
                       unit="frames")
        reader = RuntimeCalibrationReader(detector, frames)
        described = reader.describe()
        report["calibration_set"] = described
        print(f"calibration set: {described}")
        # timed on the largest input (the 720p frames when the set has them)
        first_blob = reader.largest()
        threads = cfg.runtime.threads
        report["fp32_ms"] = time_model(src_path, first_blob, reader.input_name, threads, args.timing_runs)
        if not args.no_gate:
            items = load_items(DATASET_OF_CLASS[class_name], args.eval_data)[: args.eval_limit]
            fp32_result = evaluate_config(cfg, class_name, items)
            report["fp32"] = fp32_result
        for method in methods:
            name = f"{args.model}_int8_{method.lower()}{'_qheads' if args.quantize_heads else ''}"
            model_path = quantize_model(src_path, out_dir / f"{name}.onnx", reader, method,
                                        float_heads=not args.quantize_heads)
            card_path = write_card(source_card, model_path, out_dir, name=name, method=method,
                                   calibration_set=described, float_heads=not args.quantize_heads)
            entry = {"model": str(model_path), "card": str(card_path),
                     "ms": time_model(model_path, first_blob, reader.input_name, threads, args.timing_runs)}
            if not args.no_gate:
                _, int8_cfg = gate_configs(cfg, class_name, name, card_path, out_dir, Path(work) / name)
                result = evaluate_config(int8_cfg, class_name, items)
                gate = check_gate(fp32_result, result)
                entry.update(result=result, gate={"passed": gate.passed, "failures": list(gate.failures),
                                                  "deltas_points": gate.deltas})
                print(format_table({f"{args.model} fp32": fp32_result, name: result}))
                print(f"{name}: {gate.message()}")
                # the card says whether this model passed, for whoever deploys it later
                write_card(source_card, model_path, out_dir, name=name, method=method, calibration_set=described,
                           float_heads=not args.quantize_heads, gate=gate.message())
                if not gate.passed:
                    failed.append(name)
            shape = "x".join(map(str, first_blob.shape))
            print(f"{name}: {entry['ms']} ms vs fp32 {report['fp32_ms']} ms per {shape} input "
                  f"(CPU, threads={threads or 'default'}, contended)")
            report["methods"][method] = entry
    report_path = out_dir / f"{args.model}_int8{'_qheads' if args.quantize_heads else ''}_report.json"
    report_path.write_text(json.dumps(report, indent=2))
    print(f"report: {report_path}")
    if failed:
        print(f"calibration gate FAILED for {', '.join(failed)}: int8 loses more protected share than allowed",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
