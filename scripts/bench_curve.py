#!/usr/bin/env python3
"""Throughput cost of ZeroMQ CURVE on the output: raw 1080p frames over PUB/SUB on loopback TCP.

    .venv/bin/python scripts/bench_curve.py                  # out/bench_curve.json
    .venv/bin/python scripts/bench_curve.py --seconds 20 --width 1920 --height 1080

The product's own parts on both ends: edge.sinks.zmq_pub.ZmqPublisher (XPUB, NODROP, the wire
format's raw encoding) and edge.subscribe.Subscriber (decode and validate every message), with and
without CurveServer / client_hook (keys made fresh in a temp dir). The publisher offers frames as
fast as the subscriber takes them: a full queue is waited out (poll), not counted as a drop, so the
figure is the link's capacity. Publisher and subscriber run in separate processes (no shared GIL);
libzmq encrypts in its I/O threads. Timings depend on the machine's load: label them.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchlib import ROOT, harden_tool

from edge.frame import Detections, Frame, MaskedFrame


def make_keys(tmp: Path) -> dict:
    from edge.security import keygen

    keygen(tmp / "server", "server")
    client_public, _ = keygen(tmp / "private", "client")
    (tmp / "clients").mkdir()
    (tmp / "clients" / "client.key").write_bytes(client_public.read_bytes())
    return {"server_secret": str(tmp / "server" / "server.key_secret"), "server_public": str(tmp / "server" / "server.key"),
            "clients": str(tmp / "clients"), "client_secret": str(tmp / "private" / "client.key_secret")}


def subscriber(endpoint: str, keys: dict | None, seconds: float, warmup: int, result: mp.Queue) -> None:
    from edge.security import client_hook
    from edge.subscribe import Subscriber

    hook = client_hook(keys["server_public"], keys["client_secret"]) if keys else None
    n = nbytes = 0
    t0 = None
    with Subscriber(endpoint, rcvhwm=4, socket_options_hook=hook) as sub:
        deadline = time.monotonic() + 60.0  # to first frame (CURVE handshake, slow joiner)
        while True:
            got = sub.recv(1.0)
            now = time.monotonic()
            if got is None:
                if t0 is None and now < deadline:
                    continue
                break
            if t0 is None:
                warmup -= 1
                if warmup <= 0:
                    t0 = now  # timing starts after this frame
                continue
            n += 1
            nbytes += got[1].nbytes
            if now - t0 >= seconds:
                break
    elapsed = (time.monotonic() - t0) if t0 else 0.0
    result.put({"frames": n, "bytes": nbytes, "seconds": elapsed})


def publisher(endpoint_q: mp.Queue, stop, keys: dict | None, width: int, height: int) -> None:
    import zmq

    from edge.security import CurveServer
    from edge.sinks.zmq_pub import ZmqPublisher

    server = CurveServer(keys["server_secret"], keys["clients"]) if keys else None
    pub = ZmqPublisher("tcp://127.0.0.1:0", sndhwm=4, linger_ms=0,
                       context=server.context if server else None, socket_options_hook=server.hook if server else None)
    endpoint_q.put(pub.endpoint)
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), np.uint8)
    frame = Frame(image, "bench", 0, 0, 0, "")
    item = MaskedFrame(frame, np.zeros((0, 4), np.int32), Detections(), "masked", {})
    seq = 0
    try:
        while not stop.is_set():
            frame.seq = seq
            if pub.send(item):
                seq += 1
            else:
                pub._sock.poll(10, zmq.POLLOUT)  # queue full: wait for room rather than drop
    finally:
        pub.close()
        if server:
            server.close()


def run_one(curve: bool, args, tmp: Path) -> dict:
    keys = make_keys(tmp / ("curve" if curve else "plain")) if curve else None
    ctx = mp.get_context("spawn")
    endpoint_q, result_q, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    pub = ctx.Process(target=publisher, args=(endpoint_q, stop, keys, args.width, args.height), daemon=True)
    pub.start()
    endpoint = endpoint_q.get(timeout=60)
    sub = ctx.Process(target=subscriber, args=(endpoint, keys, args.seconds, args.warmup, result_q), daemon=True)
    sub.start()
    res = result_q.get(timeout=args.seconds + 120)
    sub.join(timeout=10)
    stop.set()
    pub.join(timeout=10)
    for p in (pub, sub):
        if p.is_alive():
            p.kill()
    fps = res["frames"] / res["seconds"] if res["seconds"] else 0.0
    return {"curve": curve, "frames": res["frames"], "seconds": round(res["seconds"], 2), "fps": round(fps, 1),
            "MB_per_s": round(res["bytes"] / res["seconds"] / 1e6, 1) if res["seconds"] else 0.0}


def main(argv: list[str] | None = None) -> int:
    harden_tool()  # no core dumps holding frames, onnxruntime telemetry off
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0, help="measured time per variant")
    p.add_argument("--warmup", type=int, default=10, help="frames received before timing starts")
    p.add_argument("--width", type=int, default=1920)
    p.add_argument("--height", type=int, default=1080)
    p.add_argument("--quiet-machine", dest="contended", action="store_false")
    p.add_argument("--out", default=str(ROOT / "out" / "bench_curve.json"))
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edge-curve-") as tmp:
        plain = run_one(False, args, Path(tmp))
        curve = run_one(True, args, Path(tmp))
    result = {
        "label": "contended CPU (shared 2-core machine)" if args.contended else "quiet machine",
        "frame": f"{args.width}x{args.height}x3 uint8 raw ({args.width * args.height * 3 / 1e6:.1f} MB)",
        "transport": "tcp://127.0.0.1 (loopback), XPUB sndhwm 4 -> SUB rcvhwm 4",
        "plain": plain, "curve": curve,
        "curve_over_plain_fps": round(curve["fps"] / plain["fps"], 3) if plain["fps"] else None,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"{'variant':8s} {'frames':>7s} {'s':>6s} {'fps':>7s} {'MB/s':>7s}   [{result['label']}]")
    for r in (plain, curve):
        print(f"{'CURVE' if r['curve'] else 'plain':8s} {r['frames']:7d} {r['seconds']:6.1f} {r['fps']:7.1f} {r['MB_per_s']:7.1f}")
    print(f"CURVE / plain throughput: {result['curve_over_plain_fps']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
