"""Recall we can trust: run the real pipeline on annotated images and measure what it actually painted.

A ground-truth object is *protected* when at least 70% of its box's pixels lie in the pipeline's own
mask map (the regions it painted). Every image is run with a solid fill and the map is cross-checked
against the pixels that really changed, so a bug in masking cannot hide behind correct detections.
Over-masking is the share of frame area painted outside every ground-truth box, of any class.
Utility retention (edge.eval.utility) judges the same regions painted in the run's own mask style: the
share of the persons and vehicles a COCO detector finds on the raw image that it still finds after.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np

from edge import mask
from edge.eval.footage import ClipError, clip_name, discover_clips, painted_by_class
from edge.eval.utility import Judge, UtilityTally, match, share_cell
from edge.frame import FACE, PLATE, Detections, DroppedFrame, Frame, MaskedFrame
from edge.mask import MaskStyle, painted_map

BUCKETS = ((0, 8, "<8"), (8, 16, "8-16"), (16, 32, "16-32"), (32, 64, "32-64"), (64, float("inf"), ">=64"))
PROTECTED_SHARE = 0.7
EVAL_CLASSES = {"face": FACE, "plate": PLATE}  # the classes the dev sets label, by their annotation names


class DatasetError(ValueError):
    """An annotated set that cannot be read as it is: a missing or corrupt file, a malformed line."""


@dataclass(frozen=True)
class Item:
    path: Path
    boxes: np.ndarray  # (N, 4) xyxy in the stored image's pixels
    class_id: int  # the class of every box where the set labels one class
    classes: np.ndarray | None = None  # (N,) per-box class ids where the set has a class column

    def labels(self) -> np.ndarray:
        """The class id of every box."""
        if self.classes is not None:
            return self.classes
        return np.full(len(self.boxes), self.class_id, np.int32)


def _numbers(values: list[str], where: str) -> list[float]:
    try:
        out = [float(v) for v in values]
    except ValueError:
        raise DatasetError(f"{where}: expected numbers, got {' '.join(values)!r}") from None
    if not all(math.isfinite(v) for v in out):
        raise DatasetError(f"{where}: {out} is not finite")
    return out


def _box(xyxy: list[float], where: str) -> list[float]:
    if xyxy[2] <= xyxy[0] or xyxy[3] <= xyxy[1]:
        raise DatasetError(f"{where}: box {xyxy} is empty or inverted (expected x1 < x2, y1 < y2)")
    return xyxy


def read_list(gt_file: str | Path, images_dir: str | Path | None = None,
              default_class: int | None = FACE) -> list[Item]:
    """The list format (../shared/data/README.md): `# <file> <W> <H>` header lines, then per object
    `x1 y1 x2 y2` (the set's one class, `default_class`) or `x1 y1 x2 y2 <class>` (face or plate)."""
    gt_file = Path(gt_file)
    if not gt_file.is_file():
        raise DatasetError(f"{gt_file}: no such annotation file")
    images_dir = Path(images_dir) if images_dir else gt_file.parent / "images"
    items: list[Item] = []
    name, rows, ids = None, [], []
    has_column = False

    def flush() -> None:
        if name is not None:
            boxes = np.array(rows, np.float32).reshape(-1, 4)
            cls = np.array(ids, np.int32)
            single = default_class if default_class is not None else FACE
            items.append(Item(images_dir / name, boxes, single, cls if has_column else None))

    try:
        text = gt_file.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{gt_file}: cannot read ({e})") from None
    for n, line in enumerate(text.splitlines(), 1):
        where = f"{gt_file}:{n}"
        if line.startswith("#"):
            flush()
            parts = line[1:].split()
            if not parts:
                raise DatasetError(f"{where}: expected '# <file> <W> <H>'")
            name, rows, ids = parts[0], [], []
        elif line.strip():
            values = line.split()
            if name is None or len(values) not in (4, 5):
                raise DatasetError(f"{where}: expected 'x1 y1 x2 y2 [class]' after a '# file' header")
            box = _box(_numbers(values[:4], where), where)
            if len(values) == 5:
                if values[4] not in EVAL_CLASSES:
                    raise DatasetError(f"{where}: class {values[4]!r}, expected one of {sorted(EVAL_CLASSES)}")
                has_column = True
                ids.append(EVAL_CLASSES[values[4]])
            elif default_class is None:
                raise DatasetError(f"{where}: this set needs a class column ('x1 y1 x2 y2 <class>')")
            else:
                ids.append(default_class)
            rows.append(box)
    flush()
    return items


def read_face_list(gt_file: str | Path, images_dir: str | Path | None = None) -> list[Item]:
    """The list format of a faces-only set (wider_dev): every box without a class column is a face."""
    return read_list(gt_file, images_dir, FACE)


def read_openalpr(folder: str | Path) -> list[Item]:
    """One `<image>.txt` per image: `file x y w h TEXT` (tab separated), one plate per image."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder")
    items = []
    for txt in sorted(folder.glob("*.txt")):
        try:
            fields = txt.read_text().strip().split("\t")
        except (OSError, UnicodeDecodeError) as e:
            raise DatasetError(f"{txt}: cannot read ({e})") from None
        if len(fields) < 5:
            raise DatasetError(f"{txt}:1: expected 'file x y w h TEXT'")
        where = f"{txt}:1"
        x, y, w, h = _numbers(fields[1:5], where)
        box = _box([x, y, x + w, y + h], where)
        items.append(Item(txt.parent / fields[0], np.array([box], np.float32), PLATE))
    if not items:
        raise DatasetError(f"{folder}: no '<image>.txt' annotation files")
    return items


def box_pixels(box: np.ndarray, height: int, width: int) -> tuple[slice, slice]:
    """The pixels whose centres lie inside an xyxy box (at least one pixel)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    c0 = min(max(int(np.floor(x1 + 0.5)), 0), width - 1)
    r0 = min(max(int(np.floor(y1 + 0.5)), 0), height - 1)
    c1 = min(max(int(np.floor(x2 + 0.5)), c0 + 1), width)
    r1 = min(max(int(np.floor(y2 + 0.5)), r0 + 1), height)
    return slice(r0, r1), slice(c0, c1)


def bucket_of(size: float) -> str:
    for lo, hi, name in BUCKETS:
        if lo <= size < hi:
            return name
    return BUCKETS[-1][2]


def protected_flags(painted: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    h, w = painted.shape
    return np.array([painted[box_pixels(b, h, w)].mean() >= PROTECTED_SHARE for b in boxes], bool)


def labelled_map(shape: tuple[int, int], boxes: np.ndarray) -> np.ndarray:
    """The pixels inside any ground-truth box."""
    inside = np.zeros(shape, bool)
    for b in boxes:
        inside[box_pixels(b, *shape)] = True
    return inside


def outside_share(painted: np.ndarray, boxes: np.ndarray) -> int:
    """Painted pixels outside every ground-truth box."""
    return int((painted & ~labelled_map(painted.shape, boxes)).sum())


class CrossCheckError(AssertionError):
    """The pipeline's mask map disagrees with the pixels it changed: a masking bug, not a recall figure."""


def cross_check(original: np.ndarray, masked: np.ndarray, painted: np.ndarray, color=(0, 0, 0)) -> None:
    changed = (original != masked).any(axis=2)
    if (changed & ~painted).any():
        raise CrossCheckError(f"{int((changed & ~painted).sum())} pixels changed outside the mask map")
    untouched = painted & ~changed
    if untouched.any() and not (original[untouched] == np.array(color, np.uint8)).all():
        raise CrossCheckError("pixels in the mask map were not painted")


def _resize(image: np.ndarray, boxes: np.ndarray, shrink: float) -> tuple[np.ndarray, np.ndarray]:
    if shrink == 1.0:
        return image, boxes
    h, w = image.shape[:2]
    size = (max(1, round(w * shrink)), max(1, round(h * shrink)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return small, boxes * np.array([size[0] / w, size[1] / h] * 2, np.float32)


@dataclass
class Tally:
    """Accumulates per-object protection and painted area over a set of images."""

    sizes: list[float] = field(default_factory=list)
    flags: list[bool] = field(default_factory=list)
    outside: int = 0  # painted pixels outside every ground-truth box, summed over the set
    total: int = 0  # all pixels of the set
    times: list[float] = field(default_factory=list)
    dropped: int = 0
    images: int = 0
    per_image: list[dict] = field(default_factory=list)

    def add(self, painted: np.ndarray, boxes: np.ndarray, name: str | None = None) -> np.ndarray:
        """Score one image's mask map against its ground truth; returns the per-object protected flags."""
        f = protected_flags(painted, boxes)
        wh = boxes[:, 2:] - boxes[:, :2]
        self.sizes.extend(np.sqrt(np.clip(wh[:, 0], 0, None) * np.clip(wh[:, 1], 0, None)).tolist())
        self.flags.extend(f.tolist())
        out_px = outside_share(painted, boxes)
        self.outside += out_px
        self.total += painted.size
        self.images += 1
        if name is not None:
            self.per_image.append({"image": name, "objects": len(boxes), "protected": int(f.sum()),
                                   "overmask": round(out_px / painted.size, 5)})
        return f

    def result(self) -> dict:
        return summarize(np.array(self.sizes, np.float64), np.array(self.flags, bool), self.outside, self.total,
                         self.times, self.dropped, self.per_image, self.images)


@dataclass(frozen=True)
class Scored:
    """One image as the pipeline left it: its (possibly shrunk) boxes, the painted map, the time it took."""

    item: Item
    boxes: np.ndarray
    painted: np.ndarray
    ms: float
    dropped: bool
    original: np.ndarray | None = None  # the (possibly shrunk) raw image, in memory only: the judge's input
    regions: np.ndarray | None = None  # what the pipeline painted (MaskedFrame.regions)
    out: MaskedFrame | None = None  # the solid run's output: what each region was painted for

    def in_style(self, style: MaskStyle) -> np.ndarray | None:
        """The image as a run in `style` would have left it (None for a dropped frame): the same regions
        painted by the product's own mask function, since the regions do not depend on the fill."""
        if self.dropped or self.original is None or self.regions is None:
            return None
        image = self.original.copy()
        if self.out is not None and self.out.status == "masked_whole":
            mask.fill_whole(image, style)  # the fail-closed fill is solid whatever the style
        else:
            mask.apply(image, self.regions, style)
        return image


def read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"{path}: cannot read the image (missing or corrupt)")
    return image


def score_images(process: Callable[[Frame], MaskedFrame | DroppedFrame], items: Iterable[Item], *,
                 shrink: float = 1.0, color=(0, 0, 0)) -> Iterator[Scored]:
    """Run `process` (a Pipeline.process with a solid fill) on every item; the map is cross-checked first."""
    for seq, item in enumerate(items):
        image, boxes = _resize(read_image(item.path), item.boxes, shrink)
        original = image.copy()
        frame = Frame(image, "eval", seq, time.monotonic_ns(), time.time_ns(), item.path.stem)
        t0 = time.perf_counter()
        out = process(frame)
        ms = (time.perf_counter() - t0) * 1e3
        if isinstance(out, DroppedFrame):
            # a dropped frame leaks nothing, but it protects nothing either: count it, score it as unmasked
            yield Scored(item, boxes, np.zeros(image.shape[:2], bool), ms, True, original)
            continue
        painted = painted_map(image.shape, out.regions)
        cross_check(original, out.frame.image, painted, color)
        yield Scored(item, boxes, painted, ms, False, original, out.regions, out)


@dataclass(frozen=True)
class Judged:
    """One image's utility: its [kept, found] per class, and the objects counted with their kept flags."""

    row: dict[str, list[int]]
    counted: Detections
    kept: np.ndarray


# What a report (edge.eval.report) is handed per image: the set's name, the scored image, its utility.
OnImage = Callable[[str, Scored, "Judged | None"], None]


def judge_utility(judge: Judge, s: Scored, style: MaskStyle, tally: UtilityTally) -> Judged:
    """Count one scored image's persons and vehicles found on the raw image and still found in `style`."""
    raw = judge.find(s.original)
    masked = s.in_style(style)
    counted, kept = match(raw, judge.find(masked) if masked is not None else Detections())
    return Judged(tally.add(counted.class_id, kept), counted, kept)


def utility_result(judge: Judge, style: MaskStyle, tally: UtilityTally) -> dict:
    return {**tally.result(), "style": style.style, "judge": judge.describe()}


def evaluate(process: Callable[[Frame], MaskedFrame | DroppedFrame], items: Iterable[Item], *,
             shrink: float = 1.0, color=(0, 0, 0), keep_per_image: bool = False,
             judge: Judge | None = None, style: MaskStyle | None = None, on_image: OnImage | None = None,
             name: str = "images") -> dict:
    """Every box of every item pooled, whatever its class (the single-class sets' measurement); with a
    judge, the utility retention of the same regions painted in `style` too."""
    tally, useful = Tally(), UtilityTally()
    for s in score_images(process, items, shrink=shrink, color=color):
        tally.times.append(s.ms)
        tally.dropped += s.dropped
        tally.add(s.painted, s.boxes, s.item.path.name if keep_per_image else None)
        judged = judge_utility(judge, s, style or MaskStyle(), useful) if judge is not None else None
        if judged is not None and keep_per_image:
            tally.per_image[-1].update(judged.row)
        if on_image is not None:
            on_image(name, s, judged)
    result = tally.result()
    if judge is not None:
        result["utility"] = utility_result(judge, style or MaskStyle(), useful)
    return result


@dataclass(frozen=True)
class DevSet:
    """One annotated set: its items, the classes it labels, and what its labels leave out."""

    name: str
    items: list[Item]
    labelled: tuple[str, ...]  # class names with at least one box, or the one class of a single-class set
    incomplete: str = ""  # what is not labelled, where the set's over-masking is therefore not a real cost

    def limited(self, limit: int | None) -> "DevSet":
        return dataclasses.replace(self, items=self.items[:limit])


# What the dev sets leave unlabelled (../shared/data/README.md): paint there is not a real cost.
INCOMPLETE = {
    "openalpr_dev": "one plate per image is labelled",
    "ro_dev": "only the nearer plates are labelled",
    "oi_dev": "not every tiny plate is labelled",
    "street_dev": "not every face is labelled",
}
# The class of a set without a class column, by the folder it sits in.
GROUP_CLASS = {"faces": FACE, "plates": PLATE, "dashcam": None}


def read_set(folder: Path, default_class: int | None) -> DevSet:
    """A set folder: the list format (gt_xyxy.txt + images/) or openalpr per-image files."""
    gt = folder / "gt_xyxy.txt"
    items = read_list(gt, None, default_class) if gt.exists() else read_openalpr(folder)
    ids = sorted(set(np.concatenate([i.labels() for i in items]).tolist())) if items else []
    if not ids and default_class is not None:
        ids = [default_class]
    names = {v: k for k, v in EVAL_CLASSES.items()}
    return DevSet(folder.name, items, tuple(names[c] for c in ids), INCOMPLETE.get(folder.name, ""))


def discover(root: str | Path, only: Iterable[str] = ()) -> list[DevSet]:
    """Every set in root/{faces,plates,dashcam}/* (or only those named), in that order."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder (expected the eval root holding faces/, plates/, dashcam/)")
    only = list(only)
    sets = []
    for group, default_class in GROUP_CLASS.items():
        folders = sorted(d for d in (root / group).glob("*") if d.is_dir())
        sets += [read_set(d, default_class) for d in folders if not only or d.name in only]
    missing = sorted(set(only) - {s.name for s in sets})
    if missing:
        raise DatasetError(f"{root}: no set named {', '.join(missing)}")
    if not sets:
        raise DatasetError(f"{root}: no annotated sets under faces/, plates/ or dashcam/")
    return sets


def select(all_sets: bool, clips: bool, only: Iterable[str] = (), data: str | Path | None = None,
           clips_dir: str | Path | None = None) -> tuple[list[DevSet], list[Path]]:
    """The labelled sets (with `all_sets`) and unlabelled clips (with `all_sets` or `clips`) to run,
    narrowed to the names in `only` (a set's name, a clip's file name or stem); DatasetError for a name
    that is neither."""
    only = list(only)
    sets = discover(data or shared_root() / "data/eval") if all_sets else []
    found = discover_clips(clips_dir or shared_root() / "data/video") if (all_sets or clips) else []
    if only:
        sets = [s for s in sets if s.name in only]
        found = [p for p in found if p.name in only or clip_name(p) in only]
        missing = sorted(set(only) - {s.name for s in sets} - {p.name for p in found} - {clip_name(p) for p in found})
        if missing:
            raise DatasetError(f"no set or clip named {', '.join(missing)}")
    return sets, found


def warm_up(process: Callable[[Frame], MaskedFrame | DroppedFrame], item: Item, shrink: float = 1.0) -> None:
    """One untimed run at the set's image size: the first run at a new input shape allocates and is slow."""
    image, _ = _resize(read_image(item.path), item.boxes, shrink)
    process(Frame(image, "eval-warmup", 0, time.monotonic_ns(), time.time_ns(), "warmup"))


def evaluate_set(process: Callable[[Frame], MaskedFrame | DroppedFrame], dev: DevSet, *,
                 shrink: float = 1.0, color=(0, 0, 0), keep_per_image: bool = False,
                 judge: Judge | None = None, style: MaskStyle | None = None,
                 on_image: OnImage | None = None, painter=None) -> dict:
    """Per labelled class: protected share per bucket; over-masking outside every box of any class;
    with a judge, utility retention of the same regions painted in `style` (the run's own). With
    `painter` (the edge.pipeline.Pipeline behind `process`): the over-masking of each painted class's
    own regions (face, head zone, plate, plate zone...), which says what the over-masking is made of
    (a pixel painted for two classes counts for both, so the parts may sum to more than the whole).

    The set's first image is run once untimed first, so ms/img is the steady per-frame cost.
    """
    if dev.items:
        warm_up(process, dev.items[0], shrink)
    ids = {name: EVAL_CLASSES[name] for name in dev.labelled}
    tallies = {name: Tally() for name in ids}
    outside = total = dropped = 0
    by_class: dict[str, float] = {}
    split_paint = painter is not None and painter.classes is not None
    times, sizes, per_image = [], [], []
    useful = UtilityTally()
    for s in score_images(process, dev.items, shrink=shrink, color=color):
        labels = s.item.labels()
        row = {"image": s.item.path.name}
        for name, cid in ids.items():
            f = tallies[name].add(s.painted, s.boxes[labels == cid])
            row[name] = [int(f.sum()), int(len(f))]
        outside_labels = ~labelled_map(s.painted.shape, s.boxes)
        out_px = int((s.painted & outside_labels).sum())
        outside += out_px
        total += s.painted.size
        dropped += s.dropped
        if split_paint and s.out is not None and s.out.status == "masked":
            for cls, share in painted_by_class(s.out, painter.classes, painter.style, painter.tight,
                                               outside_labels).items():
                by_class[cls] = by_class.get(cls, 0) + share * s.painted.size
        times.append(s.ms)
        sizes.append(s.painted.shape[::-1])
        row["overmask"] = round(out_px / s.painted.size, 5)
        judged = judge_utility(judge, s, style or MaskStyle(), useful) if judge is not None else None
        if judged is not None:
            row.update(judged.row)
        if on_image is not None:
            on_image(dev.name, s, judged)
        per_image.append(row)
    classes = {name: summarize(np.array(t.sizes, np.float64), np.array(t.flags, bool), outside, total, times,
                               dropped, None, len(times)) for name, t in tallies.items()}
    result = {"images": len(times), "dropped_frames": dropped, "labelled": list(dev.labelled),
              "incomplete": dev.incomplete, "image_size": image_size(sizes),
              "overmask_share": round(outside / total, 5) if total else 0.0,
              "overmask_by_class": {k: round(v / total, 5) for k, v in sorted(by_class.items())} if total else {},
              "ms_per_image": summarize(np.zeros(0), np.zeros(0, bool), 0, 0, times)["ms_per_image"],
              "classes": classes}
    if judge is not None:
        result["utility"] = utility_result(judge, style or MaskStyle(), useful)
    if keep_per_image:
        result["per_image"] = per_image
    return result


def image_size(sizes: list[tuple[int, int]]) -> str:
    """`WxH` when every image has it, else the median width and height marked `~`."""
    if not sizes:
        return "-"
    if len(set(sizes)) == 1:
        return f"{sizes[0][0]}x{sizes[0][1]}"
    w, h = np.median(np.array(sizes), axis=0)
    return f"~{int(w)}x{int(h)}"


def summarize(sizes: np.ndarray, flags: np.ndarray, outside: int, total: int, times: list[float],
              dropped: int = 0, per_image: list | None = None, images: int | None = None) -> dict:
    buckets = {}
    for lo, hi, name in BUCKETS:
        sel = (sizes >= lo) & (sizes < hi)
        n = int(sel.sum())
        buckets[name] = {"objects": n, "protected": int(flags[sel].sum()),
                         "share": round(float(flags[sel].mean()), 4) if n else None}
    t = np.array(times) if times else np.zeros(1)
    result = {
        "objects": int(len(flags)),
        "protected": int(flags.sum()),
        "protected_share": round(float(flags.mean()), 4) if len(flags) else None,
        "buckets": buckets,
        "overmask_share": round(outside / total, 5) if total else 0.0,
        "images": len(times) if images is None else images,
        "dropped_frames": dropped,
        "ms_per_image": {"mean": round(float(t.mean()), 2), "p50": round(float(np.percentile(t, 50)), 2),
                         "p90": round(float(np.percentile(t, 90)), 2)},
    }
    if per_image:
        result["per_image"] = per_image
    return result


# The face recall line the recall configs were tuned to meet on wider_dev (the README's faces table): minimum
# protected share per size range, and the over-masking budget. Only meaningful for faces on wider_dev.
WIDER_FACE_TARGETS = ((">=32", 32, float("inf"), 0.97), ("16-32", 16, 32, 0.93), ("8-16", 8, 16, 0.85),
                      ("<8", 0, 8, 0.55))
WIDER_FACE_OVERMASK_BUDGET = 0.06


def check_targets(result: dict) -> dict[str, dict]:
    """Each wider_dev face target with the measured share and whether it is met (buckets pooled where a
    target spans two)."""
    out = {}
    for name, lo, hi, need in WIDER_FACE_TARGETS:
        parts = [b for b_lo, b_hi, b in BUCKETS if b_lo >= lo and b_hi <= hi]
        got = sum(result["buckets"][b]["protected"] for b in parts)
        n = sum(result["buckets"][b]["objects"] for b in parts)
        share = got / n if n else None
        out[name] = {"need": need, "share": None if share is None else round(share, 4),
                     "met": share is not None and share >= need}
    om = result["overmask_share"]
    out["overmask"] = {"need": WIDER_FACE_OVERMASK_BUDGET, "share": om, "met": om <= WIDER_FACE_OVERMASK_BUDGET}
    return out


def format_targets(result: dict) -> str:
    cells = []
    for name, t in check_targets(result).items():
        op = "<=" if name == "overmask" else ">="
        got = "-" if t["share"] is None else f"{100 * t['share']:.1f}%"
        cells.append(f"{name} {got} ({op}{100 * t['need']:.0f}%: {'met' if t['met'] else 'MISSED'})")
    return "wider_dev face targets: " + ", ".join(cells)


def format_table(results: dict[str, dict]) -> str:
    """One row per run: protected share per bucket, overall, over-masking and time."""
    names = [b[2] for b in BUCKETS]
    head = (f"{'run':28s} " + " ".join(f"{n:>12s}" for n in names) + f" {'overall':>14s} {'overmask':>9s}"
            f" {'persons kept':>14s} {'vehicles kept':>14s} {'ms/img':>7s}")
    lines = [head, "-" * len(head)]
    for run, r in results.items():
        cells = []
        for n in names:
            b = r["buckets"][n]
            cells.append(f"{'-':>12s}" if not b["objects"] else f"{100 * b['share']:5.1f}% ({b['objects']:4d})")
        overall = f"{100 * r['protected_share']:5.1f}% ({r['objects']:4d})" if r["objects"] else "-"
        lines.append(f"{run:28s} " + " ".join(cells) + f" {overall:>14s} {100 * r['overmask_share']:8.2f}%"
                     f" {share_cell(r.get('utility'), 'person')} {share_cell(r.get('utility'), 'vehicle')}"
                     f" {r['ms_per_image']['mean']:7.1f}")
    if any("utility" in r for r in results.values()):
        lines.append(UTILITY_NOTE)
    return "\n".join(lines)


UTILITY_NOTE = ("kept: of the persons / vehicles (car, motorcycle, bus, truck) the judge (YOLOX-Nano, native "
                "resolution) finds on the raw image at score >= 0.5 (objects counted), the share it still finds "
                "on the masked one in the run's mask style (same class, IoU >= 0.5, score >= 0.3)")


def _cells(r: dict) -> str:
    out = []
    for n in (b[2] for b in BUCKETS):
        b = r["buckets"][n]
        out.append(f"{'-':>12s}" if not b["objects"] else f"{100 * b['share']:5.1f}% ({b['objects']:4d})")
    return " ".join(out)


def format_sets_table(report: dict) -> str:
    """One row per set and labelled class; markers say where a set's over-masking is not a real cost."""
    names = [b[2] for b in BUCKETS]
    head = (f"{'set':18s} {'class':9s} " + " ".join(f"{n:>12s}" for n in names) +
            f" {'overall':>15s} {'overmask':>9s} {'persons kept':>14s} {'vehicles kept':>14s} {'ms/img':>7s}"
            f" {'size':>10s}")
    lines = [head, "-" * len(head)]
    enabled = report.get("enabled", {})
    notes: dict[str, str] = {}
    for name, r in report["sets"].items():
        marks = ""
        if len(r["labelled"]) == 1:
            marks += "*"
            notes["*"] = ("labels one class only: the other class's masks count as over-masking, "
                          "wherever that class appears unlabelled")
        if r["incomplete"]:
            marks += "+"
            notes.setdefault("+", "labels incompletely, its over-masking is not a real cost:")
            notes["+"] += f" {name}: {r['incomplete']};"
        for cls, c in r["classes"].items():
            off = "" if enabled.get(cls, True) else " off"
            overall = f"{100 * c['protected_share']:5.1f}% ({c['objects']:4d})" if c["objects"] else "-"
            lines.append(f"{name + marks:18s} {cls + off:9s} {_cells(c)} {overall:>15s}"
                         f" {100 * r['overmask_share']:8.2f}% {share_cell(r.get('utility'), 'person')}"
                         f" {share_cell(r.get('utility'), 'vehicle')} {r['ms_per_image']['mean']:7.1f}"
                         f" {r['image_size']:>10s}")
    if "off" in "".join(lines):
        notes["off"] = "the config runs no detector for this class"
    lines += [f"{k} {v.rstrip(';')}" for k, v in notes.items()]
    parts = [f"{name} " + ", ".join(f"{cls} {100 * v:.2f}%" for cls, v in r["overmask_by_class"].items())
             for name, r in report["sets"].items() if r.get("overmask_by_class")]
    lines.append("over-masking: share of frame area painted outside every labelled box of any class; "
                 "ms/img: the whole pipeline per image (the judge not included)")
    if parts:
        lines.append("over-masking by what was painted (a pixel painted for two classes counts for both): "
                     + "; ".join(parts))
    if "utility" in next(iter(report["sets"].values()), {}):
        lines.append(UTILITY_NOTE)
    return "\n".join(lines)


# --- command line -----------------------------------------------------------------------------------

def shared_root() -> Path:
    """../shared beside the project (EDGE_SHARED overrides)."""
    return Path(os.environ.get("EDGE_SHARED", Path(__file__).resolve().parents[3] / "shared"))


DEFAULT_SETS = {
    "faces": ("wider_dev", lambda shared: read_face_list(shared / "data/eval/faces/wider_dev/gt_xyxy.txt")),
    "plates": ("openalpr_dev", lambda shared: read_openalpr(shared / "data/eval/plates/openalpr_dev")),
}
DATASET_CLASS = {"faces": "face", "plates": "plate"}


def for_dataset(cfg, dataset: str, all_classes: bool = False):
    """The config with the dataset's class enabled and, unless all_classes, every other class off.

    Kept for `--dataset` and the scripts whose figures were measured so; `--all` runs the config as it is.
    """
    from edge import config as config_mod

    changes = {f"detect.{name}.enabled": name == DATASET_CLASS[dataset] or (all_classes and c.enabled)
               for name, c in cfg.detect.classes()}
    return config_mod.override(cfg, changes)


def pipeline_for(cfg):
    """The product's own pipeline built from a config, with the fill forced to solid for the cross-check."""
    from edge import config as config_mod
    from edge.compose import build_pipeline

    return build_pipeline(config_mod.override(cfg, {"mask.style": "solid", "service.deadline_ms": 0.0}))


def load_items(dataset: str, data: str | None) -> list[Item]:
    if data:
        return read_face_list(data) if dataset == "faces" else read_openalpr(data)
    return DEFAULT_SETS[dataset][1](shared_root())


def _provenance(cfg, config_file, overrides, shrink, **extra) -> dict:
    return {"file": config_file, "detect": dataclasses.asdict(cfg.detect), "mask": dataclasses.asdict(cfg.mask),
            "runtime": dataclasses.asdict(cfg.runtime), "overrides": list(overrides), "shrink": shrink, **extra}


def run(cfg, items: list[Item], dataset: str, *, shrink: float = 1.0, keep_per_image: bool = False,
        config_file: str | None = None, overrides: Iterable[str] = (), utility: bool = True,
        on_image: OnImage | None = None) -> dict:
    """`edge-anon eval --dataset`'s measurement: the config (already for_dataset) on the items, with what
    produced it, and (with `utility`) the utility retention in the config's own mask style. Faces are
    checked against the wider_dev face targets as well. `on_image` sees every image (a report's collector).
    """
    judge = Judge(cfg) if utility else None
    result = evaluate(pipeline_for(cfg).process, items, shrink=shrink, keep_per_image=keep_per_image,
                      judge=judge, style=cfg.mask, on_image=on_image, name=DEFAULT_SETS[dataset][0])
    result["config"] = _provenance(cfg, config_file, overrides, shrink, dataset=dataset)
    if dataset == "faces":
        result["targets"] = check_targets(result)
    if judge is not None:
        result["utility_judge"] = {**judge.describe(), "style": cfg.mask.style}
    return result


def run_all(cfg, sets: list[DevSet], *, shrink: float = 1.0, keep_per_image: bool = False,
            config_file: str | None = None, overrides: Iterable[str] = (), utility: bool = True,
            clips: list[Path] = (), clip_limit: int | None = None,
            progress: Callable[[str], None] | None = None, on_image: OnImage | None = None,
            on_frame=None) -> dict:
    """`edge-anon eval --all`: the config as it is (every enabled stage on) on every set, one pipeline;
    with `utility`, utility retention in the config's own mask style; then the unlabelled `clips`
    (edge.eval.footage), each through the replay pipeline with its hold, at most `clip_limit` frames.
    `on_image` and `on_frame` (edge.eval.footage.OnFrame) see every image and clip frame (a report's collector)."""
    from edge.eval.footage import evaluate_clips

    judge = Judge(cfg) if utility else None
    t0 = time.perf_counter()
    report = {"sets": {}, "enabled": {name: c.enabled for name, c in cfg.detect.classes()}}
    if sets:
        pipeline = pipeline_for(cfg)
        for dev in sets:
            if progress is not None:
                progress(f"{dev.name}: {len(dev.items)} images")
            report["sets"][dev.name] = evaluate_set(pipeline.process, dev, shrink=shrink,
                                                    keep_per_image=keep_per_image, judge=judge, style=cfg.mask,
                                                    on_image=on_image, painter=pipeline)
    if clips:
        report["clips"] = evaluate_clips(cfg, list(clips), judge, limit=clip_limit, progress=progress,
                                         on_frame=on_frame)
    if judge is not None:
        report["utility_judge"] = {**judge.describe(), "style": cfg.mask.style}
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    wider = report["sets"].get("wider_dev", {}).get("classes", {}).get("face")
    if wider is not None:
        report["wider_dev_face_targets"] = check_targets(wider)
    report["config"] = _provenance(cfg, config_file, overrides, shrink)
    return report
