#!/usr/bin/env python3
"""Soak test: the real service (`python -m edge run`) on a recorded feed at N x its nominal rate.

One command reproduces the figures::

    .venv/bin/python scripts/soak.py --minutes 10                    # out/soak.json
    .venv/bin/python scripts/soak.py --minutes 2 --slow-consumer     # out/soak_slow.json

What it does: writes a config (replay camera looping the video at ``--rate`` x its fps, ZeroMQ
output on ipc in a temp dir, metrics endpoint on loopback, audit record), starts the service as a
subprocess, subscribes with a real ZeroMQ SUB socket (optionally sleeping per message so the
publisher's queue fills), samples the service's RSS from /proc and its /metrics endpoint, then
stops it with SIGTERM and reports:

* frames in / masked / dropped (with reasons) / sink-dropped, from the service's own counters;
* frames received by the subscriber;
* RSS start / max / end and the slope of a least-squares line over the run after warm-up;
* latency percentiles: capture -> received (wall clock in the header) and per stage (header timings).

Timings depend on the machine's load: label them as such when reporting.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from benchlib import ROOT, SHARED, harden_tool

from edge.subscribe import Subscriber
from edge.wire import WireError

DEFAULT_VIDEO = SHARED / "data" / "video" / "vtest_pets2009_480x360.avi"
WARMUP_FRACTION = 0.1  # RSS samples before this share of the run are left out of the slope


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nominal_fps(video: Path) -> float:
    import cv2

    cap = cv2.VideoCapture(str(video))
    try:
        fps = cap.get(cv2.CAP_PROP_FPS)
    finally:
        cap.release()
    if not fps or fps <= 0 or fps != fps:
        raise SystemExit(f"{video}: no frame rate in the file")
    return float(fps)


def write_config(path: Path, *, video: Path, fps: float, bind: str, metrics_port: int, audit: Path,
                 sndhwm: int, deadline_ms: float, threads: int) -> None:
    path.write_text(f"""
[service]
stats_interval_s = 30
deadline_ms = {deadline_ms}
audit_path = "{audit}"
[runtime]
threads = {threads}
[mask]
style = "solid"
[output]
kind = "zmq"
bind = "{bind}"
sndhwm = {sndhwm}
[metrics]
bind = "127.0.0.1:{metrics_port}"
[[cameras]]
id = "soak"
kind = "replay"
source = "{video}"
realtime = true
loop = true
fps = {fps}
""")


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def get_metrics(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


class Consumer(threading.Thread):
    """A real SUB socket; records capture->receipt latency and the header's stage timings."""

    def __init__(self, addr: str, slow_s: float, rcvhwm: int, stop: threading.Event) -> None:
        super().__init__(name="consumer", daemon=True)
        self.addr, self.slow_s, self.rcvhwm, self.stop = addr, slow_s, rcvhwm, stop
        self.received = self.masked = self.dropped_records = self.malformed = self.unmasked = 0
        self.latency_ms: list[float] = []
        self.stages: dict[str, list[float]] = {}

    def run(self) -> None:
        with Subscriber(self.addr, rcvhwm=self.rcvhwm) as sub:
            while not self.stop.is_set():
                try:
                    got = sub.recv(0.5)
                except WireError:
                    self.malformed += 1
                    continue
                if got is None:
                    continue
                header, image = got
                self.received += 1
                if image is None:
                    self.dropped_records += 1
                else:
                    self.masked += 1
                    self.unmasked += header.get("masked") is not True
                    self.latency_ms.append((time.time_ns() - header["t_capture_wall_ns"]) / 1e6)
                    for stage, ms in header["timings_ms"].items():
                        self.stages.setdefault(stage, []).append(ms)
                if self.slow_s:
                    time.sleep(self.slow_s)


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"n": len(values), "p50": round(float(p50), 2), "p90": round(float(p90), 2),
            "p99": round(float(p99), 2), "max": round(float(max(values)), 2)}


def rss_summary(samples: list[tuple[float, float]]) -> dict:
    t = np.array([s[0] for s in samples])
    mb = np.array([s[1] for s in samples])
    steady = t >= t[-1] * WARMUP_FRACTION
    late = t >= t[-1] / 2

    def slope(mask) -> float:
        return round(float(np.polyfit(t[mask] / 60, mb[mask], 1)[0]), 3) if mask.sum() >= 3 else float("nan")

    return {"start_mb": round(float(mb[0]), 1), "after_warmup_mb": round(float(mb[steady][0]), 1),
            "max_mb": round(float(mb.max()), 1), "end_mb": round(float(mb[-1]), 1),
            "slope_mb_per_min": slope(steady), "second_half_slope_mb_per_min": slope(late),
            "samples": len(samples)}


def run(args) -> dict:
    video = Path(args.video).resolve()
    nominal = nominal_fps(video)
    tmp = Path(tempfile.mkdtemp(prefix="edge-soak-"))
    bind, port, audit = f"ipc://{tmp}/out.sock", free_port(), tmp / "audit.jsonl"
    cfg = tmp / "soak.toml"
    write_config(cfg, video=video, fps=nominal * args.rate, bind=bind, metrics_port=port, audit=audit,
                 sndhwm=args.sndhwm, deadline_ms=args.deadline_ms, threads=args.threads)
    log_path = Path(args.log)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    models = SHARED / "models"
    if models.is_dir():
        env["EDGE_MODEL_PATH"] = os.pathsep.join(p for p in (env.get("EDGE_MODEL_PATH", ""), str(models)) if p)
    stop = threading.Event()
    consumer = Consumer(bind, args.slow_consumer_ms / 1e3 if args.slow_consumer else 0.0, args.rcvhwm, stop)
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "-c", str(cfg)], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            ready = wait_ready(proc, port, timeout_s=120)
            consumer.start()
            samples, metrics_series = [], []
            t0 = time.monotonic()
            end = t0 + args.minutes * 60
            while time.monotonic() < end and proc.poll() is None:
                now = time.monotonic() - t0
                mb = rss_mb(proc.pid)
                if mb is not None:
                    samples.append((now, mb))
                m = get_metrics(port)
                if m is not None:
                    metrics_series.append({"t_s": round(now, 1), "counters": m["counters"], "rss_mb": m["rss_mb"]})
                time.sleep(args.sample_s)
            final_metrics = get_metrics(port)
            crashed = proc.poll()
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=60)
        finally:
            stop.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        consumer.join(timeout=5)
    elapsed = time.monotonic() - t0
    audit_end = [json.loads(line) for line in audit.read_text().splitlines() if '"end"' in line]
    counters = (final_metrics or {}).get("counters", {})
    return {
        "label": "contended CPU (shared 2-core machine)" if args.contended else "quiet machine",
        "video": video.name, "nominal_fps": nominal, "rate_factor": args.rate, "offered_fps": nominal * args.rate,
        "minutes": round(elapsed / 60, 2), "slow_consumer": args.slow_consumer,
        "slow_consumer_ms": args.slow_consumer_ms if args.slow_consumer else 0,
        "startup_s": round(ready, 1), "exit_code_after_sigterm": rc, "exited_early": crashed is not None,
        "frames": {
            "in": counters.get("frames_in", 0), "masked": counters.get("frames_masked", 0),
            "masked_whole": counters.get("frames_masked_whole", 0), "dropped": counters.get("frames_dropped", 0),
            "dropped_by_reason": {k[8:]: v for k, v in counters.items() if k.startswith("dropped_")},
            "sink_dropped": counters.get("sink_dropped", 0),
            "achieved_fps": round(counters.get("frames_in", 0) / elapsed, 2),
        },
        "consumer": {"received": consumer.received, "masked": consumer.masked,
                     "dropped_records": consumer.dropped_records, "malformed": consumer.malformed,
                     "unmasked": consumer.unmasked},
        "sink": (final_metrics or {}).get("sink", {}),
        "rss": rss_summary(samples) if samples else {},
        "rss_series": [(round(t, 1), round(mb, 1)) for t, mb in samples[:: max(1, len(samples) // 60)]],
        "latency_ms": {"capture_to_received": percentiles(consumer.latency_ms),
                       **{f"stage_{k}": percentiles(v) for k, v in sorted(consumer.stages.items())}},
        "service_latency_ms": (final_metrics or {}).get("latency_ms", {}),
        "audit_end": audit_end[-1]["frames"] if audit_end else None,
        "log": str(log_path),
    }


def wait_ready(proc: subprocess.Popen, port: int, timeout_s: float) -> float:
    """Seconds until the metrics endpoint answers (the service binds it after warm-up and the output)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc.poll() is not None:
            raise SystemExit(f"service exited with {proc.returncode} before it was ready; see the log")
        if get_metrics(port) is not None:
            return time.monotonic() - t0
        time.sleep(0.2)
    raise SystemExit(f"service not ready within {timeout_s:g} s")


def print_table(r: dict) -> None:
    f, rss = r["frames"], r["rss"]
    rows = [
        ("label", r["label"]),
        ("feed", f"{r['video']} {r['nominal_fps']:g} fps x{r['rate_factor']:g} = {r['offered_fps']:g} fps offered"),
        ("duration", f"{r['minutes']} min, slow consumer: {r['slow_consumer']} ({r['slow_consumer_ms']} ms/msg)"),
        ("frames in/masked/whole/dropped", f"{f['in']} / {f['masked']} / {f['masked_whole']} / {f['dropped']}"),
        ("dropped by reason", json.dumps(f["dropped_by_reason"])),
        ("sink dropped (PUB HWM)", f["sink_dropped"]),
        ("achieved fps", f["achieved_fps"]),
        ("consumer received", f"{r['consumer']['received']} (unmasked {r['consumer']['unmasked']})"),
        ("RSS MB start/after warm-up/max/end", f"{rss.get('start_mb')} / {rss.get('after_warmup_mb')} / "
                                               f"{rss.get('max_mb')} / {rss.get('end_mb')}"),
        ("RSS slope MB/min after warm-up / 2nd half", f"{rss.get('slope_mb_per_min')} / "
                                                      f"{rss.get('second_half_slope_mb_per_min')}"),
        ("latency capture->received ms", json.dumps(r["latency_ms"]["capture_to_received"])),
        ("exit code after SIGTERM", r["exit_code_after_sigterm"]),
    ]
    for k, v in rows:
        print(f"{k:42s} {v}")


def main(argv: list[str] | None = None) -> int:
    harden_tool()  # no core dumps holding frames, onnxruntime telemetry off
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--video", default=str(DEFAULT_VIDEO))
    p.add_argument("--rate", type=float, default=2.0, help="multiple of the video's nominal fps")
    p.add_argument("--slow-consumer", action="store_true", help="the subscriber sleeps per message")
    p.add_argument("--slow-consumer-ms", type=float, default=250.0)
    p.add_argument("--sndhwm", type=int, default=4)
    p.add_argument("--rcvhwm", type=int, default=4)
    p.add_argument("--deadline-ms", type=float, default=250.0)
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = its default)")
    p.add_argument("--sample-s", type=float, default=2.0)
    p.add_argument("--quiet-machine", dest="contended", action="store_false",
                   help="label the figures as taken on a quiet machine")
    p.add_argument("--out", help="JSON result (default out/soak.json or out/soak_slow.json)")
    p.add_argument("--log", help="service log (default next to --out)")
    args = p.parse_args(argv)
    out = Path(args.out or ROOT / "out" / ("soak_slow.json" if args.slow_consumer else "soak.json"))
    args.log = args.log or str(out.with_suffix(".log"))
    result = run(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print_table(result)
    print(f"wrote {out}")
    ok = (result["exit_code_after_sigterm"] == 0 and not result["exited_early"]
          and result["consumer"]["unmasked"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
