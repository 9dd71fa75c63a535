#!/usr/bin/env python3
"""Latency profile: a recorded feed replayed through the real pipeline and a real ZeroMQ sink on loopback.

    .venv/bin/python scripts/profile_latency.py --frames 100                      # 720p clip, CPU
    .venv/bin/python scripts/profile_latency.py --resize 1920x1080 --composite --frames 200 \\
        --config configs/gpu-1080p.toml --provider cuda --json out/profile_1080p_gpu.json
    .venv/bin/python scripts/profile_latency.py --resize 1920x1080 --composite --config configs/gpu-1080p.toml \\
        --streams 8 --realtime --fps 30 --deadline --frames 300       # 8 cameras at 30 fps: any drops?

Stages per frame (ms): capture_decode (the source's read: video decode; with --preload a copy from memory), synth (upscaling /
compositing, only with --resize / --composite; excluded from end_to_end), upload, preprocess,
inference, download, decode (model output decode + merge), mask, encode (wire encoding, JPEG or
raw), publish (the socket send: the loop's send minus encode), end_to_end (capture_decode + from
the frame being handed to the pipeline until the sink returned; with --realtime the read includes
the wait for the frame's due time, so capture_decode is left out of end_to_end). Frames dropped
(with their reasons) and throughput are reported too. A subscriber on loopback receives every message, so
the sends are real ones. Writes JSON and, when matplotlib is importable (`pip install .[plot]`), a
PNG with the per-frame timeline and a histogram per stage.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

from benchlib import ROOT, SHARED, harden_tool

DEFAULT_FEED = SHARED / "data/video/udacity_CarND-Vehicle-Detection_test_video.mp4"
WIDER = SHARED / "data/eval/faces/wider_dev"
STAGES = ("capture_decode", "synth", "batch_wait", "upload", "preprocess", "inference", "download", "decode", "mask",
          "encode", "publish", "end_to_end")
SIZES = ("1280x720", "1920x1080", "3840x2160")


class Composer:
    """wider_dev images tiled over the whole frame (about 416 px cells), a different set each frame."""

    def __init__(self, folder: Path, cell: int = 416) -> None:
        import cv2

        paths = sorted((folder / "images").glob("*.jpg"))
        if not paths:
            raise SystemExit(f"--composite: no images in {folder / 'images'}")
        self.images = [cv2.imread(str(p)) for p in paths]
        self.cell = cell
        self._n = 0

    def __call__(self, height: int, width: int) -> np.ndarray:
        import cv2

        rows, cols = max(1, round(height / self.cell)), max(1, round(width / self.cell))
        out = np.zeros((height, width, 3), np.uint8)
        ys = np.linspace(0, height, rows + 1).astype(int)
        xs = np.linspace(0, width, cols + 1).astype(int)
        for r in range(rows):
            for c in range(cols):
                image = self.images[self._n % len(self.images)]
                self._n += 1
                out[ys[r]:ys[r + 1], xs[c]:xs[c + 1]] = cv2.resize(image, (xs[c + 1] - xs[c], ys[r + 1] - ys[r]))
        return out


class MemoryFeed:
    """The feed decoded once up front and handed out from memory, looped, as a camera hands over raw buffers.

    A short clip replayed from the file is reopened at every loop (about 45 ms on the H200 machine every
    38 frames for the default clip): that is the replay's cost, not the pipeline's, and with --preload it
    stays out of capture_decode. Each frame is a copy, since the pipeline masks in place.
    """

    def __init__(self, feed: Path, camera_id: str, *, realtime: bool, fps: float | None, limit: int = 600) -> None:
        from edge.sources.replay import open_replay

        src = open_replay(feed, camera_id=camera_id)
        self.fps = fps or getattr(src, "file_fps", None) or 30.0
        self.images = []
        try:
            while len(self.images) < limit:
                frame = src.read(5.0)
                if frame is None:
                    break
                self.images.append(frame.image)
        except Exception as e:  # EndOfStream: the whole file is in memory
            if not self.images:
                raise SystemExit(f"--preload: nothing decoded from {feed}: {e}") from e
        finally:
            src.close()
        self.camera_id, self.realtime = camera_id, realtime
        self._seq, self._start = 0, None

    def read(self, timeout: float):
        from edge.frame import Frame

        if self.realtime:
            now = time.monotonic()
            self._start = self._start if self._start is not None else now
            wait = self._start + self._seq / self.fps - now
            if wait > timeout:
                time.sleep(timeout)
                return None
            if wait > 0:
                time.sleep(wait)
        image = self.images[self._seq % len(self.images)].copy()
        self._seq += 1
        return Frame(image, self.camera_id, self._seq - 1, time.monotonic_ns(), time.time_ns(), f"{self._seq - 1:06d}")

    def close(self) -> None:
        self.images = []


class TimedSource:
    """Wraps the replay source: times each read (decode) and makes the frame the profile's size."""

    def __init__(self, inner, size: tuple[int, int] | None, composer: Composer | None) -> None:
        self.inner, self.size, self.composer = inner, size, composer
        self.read_ms: dict[int, float] = {}
        self.synth_ms: dict[int, float] = {}

    def read(self, timeout: float):
        import cv2

        from edge.frame import Frame

        t = time.perf_counter()
        frame = self.inner.read(timeout)
        if frame is None:
            return None
        t1 = time.perf_counter()
        self.read_ms[frame.seq] = (t1 - t) * 1e3
        if self.size is None and self.composer is None:
            return frame
        w, h = self.size or frame.image.shape[1::-1]
        if self.composer is not None:
            image = self.composer(h, w)
        else:
            image = cv2.resize(frame.image, (w, h), interpolation=cv2.INTER_LINEAR)
        self.synth_ms[frame.seq] = (time.perf_counter() - t1) * 1e3
        # stamped after synthesis: the pipeline's clock starts when a camera would have delivered this frame
        return Frame(image, frame.camera_id, frame.seq, time.monotonic_ns(), time.time_ns(), frame.name)

    def close(self) -> None:
        self.inner.close()


class Subscriber(threading.Thread):
    """A real ZeroMQ subscriber on loopback that drains every message (counts frames and bytes)."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(daemon=True)
        import zmq

        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.setsockopt(zmq.RCVHWM, 64)
        self.sock.connect(endpoint)
        self.stop = threading.Event()
        self.messages = self.bytes = 0

    def run(self) -> None:
        import zmq

        while not self.stop.is_set():
            if self.sock.poll(100, zmq.POLLIN):
                parts = self.sock.recv_multipart()
                self.messages += 1
                self.bytes += sum(len(p) for p in parts)

    def close(self) -> None:
        self.stop.set()
        self.join(timeout=2)
        self.sock.close(0)
        self.ctx.term()


def percentiles(values: list[float]) -> dict | None:
    if not values:
        return None
    a = np.array(values)
    return {"n": len(a), "p50": round(float(np.percentile(a, 50)), 3), "p90": round(float(np.percentile(a, 90)), 3),
            "p99": round(float(np.percentile(a, 99)), 3), "max": round(float(a.max()), 3),
            "mean": round(float(a.mean()), 3)}


def build(args):
    from edge import config as config_mod
    from edge.compose import build_detector, build_pipeline, build_sink, load_config, warm_up
    from edge.detect.batching import BatchingDetector

    overrides = list(args.set)
    if args.provider:
        overrides.append(f"runtime.provider={args.provider}")
    cfg = load_config(args.config, overrides)
    changes = {"output.kind": "zmq", "output.bind": "tcp://127.0.0.1:*"}
    if not args.deadline:
        changes["service.deadline_ms"] = 0.0
    if args.encoding:
        changes["output.encoding"] = args.encoding
    cfg = config_mod.override(cfg, changes)
    detector = build_detector(cfg)
    if args.batch and args.streams > 1:
        detector = BatchingDetector(detector, cameras=args.streams, max_batch=cfg.runtime.batch_max,
                                    max_wait_ms=cfg.runtime.batch_wait_ms)
    return cfg, detector, build_pipeline(cfg, detector=detector), build_sink(cfg), warm_up


def profile(args) -> dict:
    from edge.detect.batching import BatchingDetector
    from edge.frame import DroppedFrame
    from edge.pipeline import run_loop
    from edge.sources.replay import open_replay

    cfg, detector, pipeline, sink, warm_up = build(args)
    size = tuple(int(v) for v in args.resize.lower().split("x")) if args.resize else None
    def feed(i: int):
        if args.preload:
            return MemoryFeed(args.feed, f"cam{i}", realtime=args.realtime, fps=args.fps or None)
        return open_replay(args.feed, camera_id=f"cam{i}", realtime=args.realtime, loop=True, fps=args.fps or None)

    sources = [TimedSource(feed(i), size, Composer(WIDER) if args.composite else None) for i in range(args.streams)]
    warm_h, warm_w = (size[1], size[0]) if size else (720, 1280)
    t_warm = time.perf_counter()
    warm_up(detector, warm_h, warm_w)
    if isinstance(detector, BatchingDetector):  # every batch size once
        detector.warm_up(np.zeros((warm_h, warm_w, 3), np.uint8))
    # a first run per input shape can be slow (cuDNN algorithm search, TensorRT engines): say how slow
    print(f"warm-up at {warm_w}x{warm_h}: {time.perf_counter() - t_warm:.1f} s", file=sys.stderr, flush=True)
    sub = Subscriber(sink.endpoint)
    sub.start()
    sink.wait_for_subscriptions(1, timeout_s=5.0)
    rows: list[dict] = []
    t0 = time.perf_counter()

    def on_tick(source: TimedSource, outcome) -> None:
        if outcome is None:
            return
        t = dict(outcome.timings_ms)
        seq = outcome.seq if isinstance(outcome, DroppedFrame) else outcome.frame.seq
        t["capture_decode"] = source.read_ms.pop(seq, 0.0)
        if seq in source.synth_ms:
            t["synth"] = source.synth_ms.pop(seq)
        if "send" in t:
            t["publish"] = t["send"] - t.get("encode", 0.0)
        if "end_to_end" in t and not args.realtime:
            # paced replay: the read includes the wait for the frame's time, which a camera does not cost
            t["end_to_end"] += t["capture_decode"]
        rows.append({"camera": outcome.camera_id if isinstance(outcome, DroppedFrame) else outcome.frame.camera_id,
                     "seq": seq, "t_s": round(time.perf_counter() - t0, 4),
                     "status": getattr(outcome, "status", "dropped"), "reason": getattr(outcome, "reason", None),
                     "timings": t, "objects": 0 if isinstance(outcome, DroppedFrame) else int(len(outcome.regions))})

    # one loop per camera, sharing the detector and the sink, as edge.runtime.service runs several cameras
    stop = threading.Event()
    counts = [0] * len(sources)

    def loop(i: int) -> None:
        counts[i] = run_loop(sources[i], pipeline, sink, stop, on_tick=lambda o: on_tick(sources[i], o),
                             max_frames=args.frames)

    threads = [threading.Thread(target=loop, args=(i,), name=f"cam{i}") for i in range(len(sources))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=args.timeout_s)
    stop.set()  # a loop still running after the timeout stops at its next frame
    wall = time.perf_counter() - t0
    n = sum(counts)
    time.sleep(0.3)  # let the subscriber drain what is in flight
    sink_stats = sink.stats() if hasattr(sink, "stats") else {}
    sub.close()
    sink.close()
    for source in sources:
        source.close()

    dropped: dict[str, int] = {}
    for r in rows:
        if r["status"] == "dropped":
            dropped[r["reason"]] = dropped.get(r["reason"], 0) + 1
    counters = pipeline.metrics.snapshot() if hasattr(pipeline.metrics, "snapshot") else {}
    if sink_stats.get("dropped_hwm"):
        dropped["sink_hwm"] = sink_stats["dropped_hwm"]
    masked = [r for r in rows if r["status"] != "dropped"]
    return {
        "feed": str(args.feed), "preload": args.preload, "batch": args.batch,
        "batches": detector.batches if isinstance(detector, BatchingDetector) else None, "frames": n, "streams": args.streams, "realtime": args.realtime,
        "size": args.resize or "native", "composite": args.composite,
        "provider": cfg.runtime.provider, "providers_used": sorted(set(detector.providers)),
        "models": [list(m) for m in detector.models],
        "config": {"file": args.config, "overrides": args.set, "graph_preprocess": cfg.runtime.graph_preprocess,
                   "fp16": cfg.runtime.fp16, "encoding": cfg.output.encoding, "threads": cfg.runtime.threads},
        "stages_ms": {s: percentiles([r["timings"][s] for r in rows if s in r["timings"]]) for s in STAGES},
        "dropped": dropped, "masked_frames": len(masked),
        "objects_per_frame": round(float(np.mean([r["objects"] for r in masked])), 2) if masked else 0.0,
        "throughput_fps": round(n / wall, 2) if wall else None, "wall_s": round(wall, 2),
        "subscriber": {"messages": sub.messages, "bytes": sub.bytes}, "sink": sink_stats,
        "metrics": counters if isinstance(counters, dict) else {},
        "per_frame": rows,
        "command": " ".join(sys.argv),
    }


def print_table(result: dict) -> None:
    print(f"{result['frames']} frames ({result['streams']} stream(s){', realtime' if result['realtime'] else ''}"
          f"{', preloaded' if result.get('preload') else ''}), "
          f"{result['size']}{' composite' if result['composite'] else ''}, "
          f"provider {result['provider']} (ran on {', '.join(result['providers_used'])}), "
          f"encoding {result['config']['encoding']} (timings contended unless the machine was quiet)")
    print(f"{'stage':16s} {'p50':>9s} {'p90':>9s} {'p99':>9s} {'max':>9s} {'n':>6s}")
    for stage, s in result["stages_ms"].items():
        if s is None:
            print(f"{stage:16s} {'-':>9s}")
            continue
        print(f"{stage:16s} {s['p50']:9.2f} {s['p90']:9.2f} {s['p99']:9.2f} {s['max']:9.2f} {s['n']:6d}")
    if result.get("batches"):
        print(f"batched: {result['frames']} frames in {result['batches']} inference rounds")
    print(f"throughput {result['throughput_fps']} frames/s, masked {result['masked_frames']}, "
          f"dropped {result['dropped'] or 'none'}, objects/frame {result['objects_per_frame']}, "
          f"subscriber got {result['subscriber']['messages']} messages")


def plot(result: dict, path: Path) -> bool:
    """The per-stage PNG: each frame's stages stacked over time, and each stage's spread (p1..p99, p50 marked)."""
    import importlib.util
    import tempfile

    if importlib.util.find_spec("matplotlib") is None:
        return False
    # matplotlib keeps a font cache under ~/.cache; a tool writes only its outputs (tests/test_tool_hardening.py),
    # so its cache lives beside the plot for this run and goes with it
    before = os.environ.get("MPLCONFIGDIR")
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".matplotlib-") as cache:
        os.environ["MPLCONFIGDIR"] = before or cache
        try:
            return _draw(result, path)
        finally:
            if before is None:
                del os.environ["MPLCONFIGDIR"]


def _draw(result: dict, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["per_frame"]
    stages = [s for s in STAGES if s not in ("end_to_end", "synth") and result["stages_ms"].get(s)]
    fig, (ax, box) = plt.subplots(2, 1, figsize=(12, 8), height_ratios=(3, 2))
    x = np.arange(len(rows))
    bottom = np.zeros(len(rows))
    for s in stages:
        v = np.array([r["timings"].get(s, 0.0) for r in rows])
        ax.bar(x, v, bottom=bottom, width=1.0, label=s)
        bottom += v
    e2e = [r["timings"].get("end_to_end", np.nan) for r in rows]
    ax.plot(x, e2e, "k.", ms=4, label="end_to_end")
    ax.set_xlabel("frame")
    ax.set_ylabel("ms")
    fig.suptitle(f"{result.get('frames', len(rows))} frames, {result['size']}"
                 f"{' composite' if result['composite'] else ''}, {result['provider']}"
                 f"{', throughput %s frames/s' % result['throughput_fps'] if result.get('throughput_fps') else ''}")
    ax.legend(ncol=len(stages) + 1, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    spread = [*stages, "end_to_end"]
    values = [[r["timings"][s] for r in rows if s in r["timings"]] for s in spread]
    kept = [(s, v) for s, v in zip(spread, values) if v]
    if kept:
        box.boxplot([v for _, v in kept], orientation="horizontal", whis=(1, 99), showfliers=False, widths=0.6)
        box.set_yticks(range(1, len(kept) + 1), [f"{s}  p50 {np.median(v):.1f}" for s, v in kept], fontsize=8)
        box.set_xscale("symlog", linthresh=1.0)  # sub-ms stages beside a second of inference
        box.set_xlim(left=0)
        box.invert_yaxis()
    box.set_xlabel("ms per frame (box: p25..p75, whiskers p1..p99)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--feed", type=Path, default=DEFAULT_FEED, help="video file or image folder (looped)")
    p.add_argument("--config", "-c", help="config file (detect, mask, runtime, output.encoding are used)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--provider", choices=("cpu", "cuda", "tensorrt"), help="override runtime.provider")
    p.add_argument("--resize", choices=SIZES, help="frames resized (upscaled) to this size")
    p.add_argument("--composite", action="store_true", help="wider_dev images tiled into each frame (many real faces)")
    p.add_argument("--frames", type=int, default=100, help="frames per stream")
    p.add_argument("--streams", type=int, default=1,
                   help="cameras replaying the feed at once, one loop each, sharing detector and sink")
    p.add_argument("--fps", type=float, default=0.0, help="with --realtime: pace at this rate instead of the file's")
    p.add_argument("--timeout-s", type=float, default=3600.0, help="stop the loops after this long")
    p.add_argument("--encoding", choices=("raw", "jpeg"), help="override output.encoding")
    p.add_argument("--realtime", action="store_true", help="pace the feed at its frame rate (default: flat out)")
    p.add_argument("--batch", action="store_true",
                   help="with --streams N: the cameras' frames share inference calls (runtime.batch_cameras)")
    p.add_argument("--preload", action="store_true",
                   help="decode the feed into memory first and loop from there, as a camera delivers raw frames "
                        "(capture_decode is then a buffer copy, not the file's decoding and reopening)")
    p.add_argument("--deadline", action="store_true", help="apply the config's deadline (default: off, keep all)")
    p.add_argument("--json", type=Path,
                   help="write here (overwrites); default out/profile_<config>_<feed>_<size>[_composite]_<provider>"
                        "[_<N>streams][_realtime].json, never overwriting an earlier run's file (a _2, _3... is "
                        "added) unless --force")
    p.add_argument("--force", action="store_true", help="reuse the default file name, overwriting an earlier run")
    p.add_argument("--png", type=Path, help="default: next to the JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    harden_tool()  # no core dumps holding frames, onnxruntime telemetry off
    p = build_parser()
    args = p.parse_args(argv)
    if not args.feed.exists():
        p.exit(2, f"{p.prog}: --feed {args.feed}: no such file or directory\n")
    if args.frames < 1 or args.streams < 1:
        p.exit(2, f"{p.prog}: --frames and --streams: must be >= 1\n")
    if SHARED.joinpath("models").is_dir():
        os.environ.setdefault("EDGE_MODEL_PATH", str(SHARED / "models"))

    from edge.config import ConfigError
    from edge.models.registry import ModelError
    from edge.sources import SourceError

    try:
        result = profile(args)
    except (ConfigError, ModelError, SourceError) as e:
        p.exit(2, f"{p.prog}: {e}\n")
    print_table(result)
    json_path = args.json or default_json_path(args, result["provider"])
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1))
    print(f"json: {json_path}")
    png = args.png or json_path.with_suffix(".png")
    print(f"png: {png}" if plot(result, png) else "png: skipped (matplotlib not installed: pip install .[plot])")
    return 0


def profile_tag(args, provider: str) -> str:
    """What the run was: config, feed, frame size, compositing, provider, streams, pacing."""
    config = Path(args.config).stem if args.config else "defaults"
    parts = [config, Path(args.feed).stem, args.resize or "native"]
    parts += ["composite"] if args.composite else []
    parts.append(provider)
    parts += [f"{args.streams}streams"] if args.streams > 1 else []
    parts += ["realtime"] if args.realtime else []
    return "_".join(parts)


def default_json_path(args, provider: str, out_dir: Path = ROOT / "out") -> Path:
    """out/profile_<tag>.json; a free _2, _3... after it when that exists, unless --force."""
    base = out_dir / f"profile_{profile_tag(args, provider)}.json"
    if args.force or not base.exists():
        return base
    n = 2
    while (candidate := base.with_name(f"{base.stem}_{n}.json")).exists():
        n += 1
    return candidate


if __name__ == "__main__":
    sys.exit(main())
