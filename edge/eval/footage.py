"""The painted share of the frame, and utility retention, on unlabelled footage (../shared/data/video).

No labels are needed for either: the painted share is the mask map's share of the frame (every painted
pixel counts, whatever it covers), and utility is judged against the raw frame (edge.eval.utility).
Each clip runs as `edge-anon replay` runs it: a replay camera over the real source, the pipeline of
that camera built by edge.compose with its temporal hold (none for an image folder, whose stills are
no sequence), in the run's own mask style; the raw frame stays in memory for the judge only.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge import mask
from edge.eval.utility import Judge, UtilityTally, match
from edge.frame import Detections, DroppedFrame, MaskedFrame

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class ClipError(ValueError):
    """A clip folder or clip that cannot be used as it is."""


def discover_clips(folder: str | Path, only: tuple[str, ...] | list[str] = ()) -> list[Path]:
    """The video files and image folders in `folder` (sorted), or only those whose name or stem is in
    `only` (names not found are the caller's to report)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ClipError(f"{folder}: no such folder (expected the shared video folder)")
    clips = [p for p in sorted(folder.iterdir())
             if (p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
             or (p.is_dir() and any(f.suffix.lower() in IMAGE_SUFFIXES for f in p.iterdir()))]
    if only:
        clips = [p for p in clips if p.name in only or p.stem in only]
    return clips


def clip_name(path: Path) -> str:
    return path.stem if path.is_file() else path.name


def painted_by_class(out, classes, style, tight, where: np.ndarray | None = None) -> dict[str, float]:
    """Share of the frame each masked class's regions cover (a pixel under two classes counts for both);
    `tight`: the pipeline's tightly painted class ids, so the shares are of the regions it really painted;
    `where` (a boolean map of the frame): only the painted pixels it marks count, e.g. those outside labels."""
    shape = out.frame.image.shape
    dets = out.detections
    share = {}
    for cid in np.unique(dets.class_id):
        painted = mask.painted_map(shape, mask.regions(dets.take(np.flatnonzero(dets.class_id == cid)), shape,
                                                       style, tight))
        share[classes.names[int(cid)]] = float((painted if where is None else painted & where).mean())
    return share


# What a report (edge.eval.report) is handed per masked clip frame: the clip's name, the frame as it left
# the pipeline, and the judge's counted objects with their kept flags (None without a judge).
OnFrame = Callable[[str, MaskedFrame, "Detections | None", "np.ndarray | None"], None]


def evaluate_clip(cfg, path: Path, detector, judge: Judge | None, *, limit: int | None = None,
                  progress: Callable[[str], None] | None = None, on_frame: OnFrame | None = None) -> dict:
    """One clip through the replay pipeline (its hold included): painted share per frame, per class, and
    utility retention in the run's own mask style."""
    from edge.compose import build_pipeline, build_source
    from edge.config import CameraConfig
    from edge.sources import EndOfStream

    cam = CameraConfig(id="eval", source=str(path.resolve()), kind="replay", realtime=False, loop=False)
    run_cfg = dataclasses.replace(cfg, cameras=(cam,))
    run_cfg = dataclasses.replace(run_cfg, service=dataclasses.replace(run_cfg.service, deadline_ms=0.0))
    pipeline = build_pipeline(run_cfg, cam, detector=detector)
    source = build_source(cam)
    shares, held, dropped, masked_whole = [], 0, 0, 0
    by_class: dict[str, float] = {}
    held_share = 0.0
    useful = UtilityTally()
    size = None
    try:
        while limit is None or len(shares) + dropped < limit:
            try:
                frame = source.read(1.0)
            except EndOfStream:
                break
            if frame is None:
                continue
            size = frame.image.shape[1::-1]
            raw = frame.image.copy() if judge is not None else None
            out = pipeline.process(frame)
            if isinstance(out, DroppedFrame):
                dropped += 1
                if judge is not None:
                    useful.add_lost(judge.find(raw))
                continue
            masked_whole += out.status == "masked_whole"
            shares.append(float(mask.painted_map(out.frame.image.shape, out.regions).mean()))
            for name, share in painted_by_class(out, pipeline.classes, pipeline.style, pipeline.tight).items():
                by_class[name] = by_class.get(name, 0.0) + share
            if out.held.any():
                rows = np.flatnonzero(out.held)
                held += len(rows)
                regions = mask.regions(out.detections.take(rows), out.frame.image.shape, pipeline.style,
                                       pipeline.tight)
                held_share += float(mask.painted_map(out.frame.image.shape, regions).mean())
            counted, kept = match(judge.find(raw), judge.find(out.frame.image)) if judge is not None else (None, None)
            if counted is not None:
                useful.add(counted.class_id, kept)
            if on_frame is not None:
                on_frame(clip_name(path), out, counted, kept)
            if progress is not None and len(shares) % 25 == 0:
                progress(f"{clip_name(path)}: frame {len(shares)}")
    finally:
        source.close()  # the detector is shared by every clip: the caller closes it
    n = len(shares)
    result = {"source": path.name, "frames": n + dropped, "size": f"{size[0]}x{size[1]}" if size else "-",
              "hold": pipeline.tracker is not None, "dropped_frames": dropped, "masked_whole": masked_whole,
              "painted_share_mean": round(float(np.mean(shares)), 5) if n else None,
              "painted_share_max": round(float(np.max(shares)), 5) if n else None,
              "painted_share_by_class": {k: round(v / n, 5) for k, v in sorted(by_class.items())} if n else {},
              "held_regions": held, "held_share_mean": round(held_share / n, 5) if n else None,
              "painted_share_per_frame": [round(s, 5) for s in shares]}
    if judge is not None:
        result["utility"] = {**useful.result(), "style": pipeline.style.style}
    return result


def evaluate_clips(cfg, clips: list[Path], judge: Judge | None, *, limit: int | None = None,
                   progress: Callable[[str], None] | None = None, on_frame: OnFrame | None = None) -> dict:
    """Every clip with one detector (built once, as a service builds it once for its cameras)."""
    from edge.compose import build_detector, class_table

    if not clips:
        raise ClipError("no clips to evaluate")
    detector = build_detector(cfg, class_table(cfg))
    try:
        return {clip_name(p): evaluate_clip(cfg, p, detector, judge, limit=limit, progress=progress, on_frame=on_frame)
                for p in clips}
    finally:
        detector.close()


def format_clips_table(clips: dict[str, dict]) -> str:
    """One row per clip: frames, painted share mean / max, the largest classes' shares, utility."""
    from edge.eval.utility import share_cell

    head = (f"{'clip':44s} {'frames':>6s} {'size':>9s} {'painted':>8s} {'max':>7s} {'held':>6s} "
            f"{'persons kept':>14s} {'vehicles kept':>14s}  painted by class")
    lines = [head, "-" * len(head)]
    for name, c in clips.items():
        mean = "-" if c["painted_share_mean"] is None else f"{100 * c['painted_share_mean']:.2f}%"
        top = "-" if c["painted_share_max"] is None else f"{100 * c['painted_share_max']:.1f}%"
        held = "-" if c["held_share_mean"] is None else f"{100 * c['held_share_mean']:.2f}%"
        parts = sorted(c["painted_share_by_class"].items(), key=lambda kv: -kv[1])
        classes = ", ".join(f"{k} {100 * v:.2f}%" for k, v in parts) or "-"
        lines.append(f"{name[:44]:44s} {c['frames']:6d} {c['size']:>9s} {mean:>8s} {top:>7s} {held:>6s} "
                     f"{share_cell(c.get('utility'), 'person')} {share_cell(c.get('utility'), 'vehicle')}  {classes}")
    lines.append("painted: mean share of the frame painted (max: the worst frame); held: of it, regions held by "
                 "the tracker without a detection; kept: persons / vehicles the judge finds on the raw frame "
                 "(objects counted) still found on the masked one")
    return "\n".join(lines)
