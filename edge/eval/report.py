"""`edge-anon eval --report DIR`: a static HTML report of one run (one operating point), built from masked pixels.

One folder: index.html and img/<set>/*.jpg; no server, no script from elsewhere, opens from disk. The
plots are hand-written inline SVG: no dependency (matplotlib is only the optional [plot] extra, and a
report must not depend on what happens to be installed), crisp at any zoom, and each mark is an element
a browser test can count. Then, per set (and per clip), its frames worst first: most labelled objects
leaked, most paint outside every label, most vehicles lost (for clips: most of the frame painted),
each the masked output in the run's own style with the painted regions outlined by class (edge.overlay:
face, head zone, plate, plate zone; dashed when the tracker held it), the labelled boxes (protected
green, leaked red) and the persons and vehicles the judge lost (yellow).

Raw pixels never reach this module's output: a card is rendered from the masked image it is handed
(Scored.in_style, a MaskedFrame's image) and only then encoded and kept in memory; the files are
written through Python's open, in DIR only.
"""
from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge import overlay
from edge.eval.evaluate import BUCKETS, EVAL_CLASSES, outside_share, protected_flags
from edge.eval.utility import UTILITY_CLASSES
from edge.frame import Detections
from edge.mask import painted_map

MAX_WIDTH = 1280  # a report frame's width: 1080p text and outlines stay readable on a laptop screen
JPEG_QUALITY = 85
PER_ORDER = 6  # frames shown per "worst" order of a set
LOST_COLOUR = (0, 255, 255)  # yellow (BGR): a hue neither the classes nor the ground truth use
CLASS_FILL = {"face": "#ff00ff", "plate": "#00c8c8", "person": "#e08000", "vehicle": "#2060ff", "overmask": "#888",
              "painted": "#b55"}

# the orders a set's frames are shown in: (stat key, heading)
SET_ORDERS = (("leaked", "most labelled objects leaked"), ("overmask", "most paint outside every label"),
              ("vehicles_lost", "most vehicles lost"))
CLIP_ORDERS = (("painted", "most of the frame painted"), ("vehicles_lost", "most vehicles lost"))


@dataclass
class Card:
    """One frame of the report: its figures and its rendered (masked, annotated) JPEG, in memory."""

    group: str
    name: str
    stats: dict
    jpeg: bytes
    size: tuple[int, int]
    file: str = ""


def render(masked: np.ndarray, regions: np.ndarray, labels: list[str], held: list[bool], *,
           truth: np.ndarray | None = None, protected: np.ndarray | None = None,
           truth_labels: list[str] | None = None, lost: Detections | None = None) -> np.ndarray:
    """The masked image with its painted regions, ground truth and lost objects drawn, at most MAX_WIDTH wide."""
    out = overlay.draw_regions(masked, regions, labels, held)
    if truth is not None and len(truth):
        out = overlay.draw_truth(out, truth, protected, truth_labels)
    if lost is not None and len(lost):
        names = [f"{UTILITY_CLASSES[c]} lost" for c in lost.class_id.tolist()]
        out = overlay.draw_regions(out, lost.xyxy, names, colours=[LOST_COLOUR] * len(lost))
    h, w = out.shape[:2]
    if w > MAX_WIDTH:
        out = cv2.resize(out, (MAX_WIDTH, max(1, round(h * MAX_WIDTH / w))), interpolation=cv2.INTER_AREA)
    return out


def encode(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("cannot encode a report frame as JPEG")
    return buf.tobytes()


def card(group: str, name: str, stats: dict, image: np.ndarray) -> Card:
    return Card(group, name, stats, encode(image), (image.shape[1], image.shape[0]))


def worst(cards: list[Card], key: str, k: int = PER_ORDER) -> list[Card]:
    """The k cards with the largest `key` (ties: the order they came in), leaving out those where it is 0."""
    ranked = sorted((c for c in cards if c.stats.get(key, 0) > 0), key=lambda c: -c.stats[key])
    return ranked[:k]


def lost_of(counted: Detections | None, kept: np.ndarray | None) -> Detections:
    """The judge's objects counted on the raw image and not found on the masked one."""
    if counted is None or kept is None:
        return Detections()
    return counted.take(np.flatnonzero(~np.asarray(kept, bool)))


def lost_stats(lost: Detections) -> dict[str, int]:
    return {f"{name}s_lost": int((lost.class_id == i).sum()) for i, name in enumerate(UTILITY_CLASSES)}


def image_card(group: str, s, judged, classes, style) -> Card:
    """A labelled image (edge.eval.evaluate.Scored) as the run's style left it, its labels and losses drawn."""
    masked = s.in_style(style)
    if masked is None:  # dropped: nothing of it left the pipeline, and the card says so
        masked, regions, labels, held = np.zeros((*s.painted.shape, 3), np.uint8), np.zeros((0, 4)), [], []
    else:
        regions = s.out.regions
        labels, held = overlay.region_labels(s.out, classes)
    protected = protected_flags(s.painted, s.boxes)
    wh = s.boxes[:, 2:] - s.boxes[:, :2]
    sizes = np.sqrt(np.clip(wh[:, 0] * wh[:, 1], 0, None))
    names = {v: k for k, v in EVAL_CLASSES.items()}
    truth_labels = [f"{names.get(int(c), '?')} {z:.0f}px" for c, z in zip(s.item.labels().tolist(), sizes.tolist())]
    lost = lost_of(judged.counted if judged else None, judged.kept if judged else None)
    stats = {"leaked": int((~protected).sum()), "objects": int(len(protected)),
             "overmask": round(outside_share(s.painted, s.boxes) / s.painted.size, 5),
             **(lost_stats(lost) if judged else {}), **({"dropped": 1} if s.dropped else {})}
    image = render(masked, regions, labels, held, truth=s.boxes, protected=protected, truth_labels=truth_labels,
                   lost=lost)
    return card(group, s.item.path.name, stats, image)


def frame_card(group: str, out, classes, counted: Detections | None, kept: np.ndarray | None) -> Card:
    """A clip frame as it left the pipeline (a MaskedFrame), its regions and the judge's losses drawn."""
    labels, held = overlay.region_labels(out, classes)
    lost = lost_of(counted, kept)
    shape = out.frame.image.shape
    stats = {"painted": round(float(painted_map(shape, out.regions).mean()), 5), "held": int(np.sum(held)),
             **(lost_stats(lost) if counted is not None else {})}
    return card(group, out.frame.name or f"{out.frame.seq:06d}", stats,
                render(out.frame.image, out.regions, labels, held, lost=lost))


@dataclass
class Collector:
    """The cards of every set and clip of a run, as the evaluation hands them over."""

    classes: object = None  # the run's ClassTable (edge.frame), naming each painted region's class
    style: object = None  # the run's own MaskStyle: the style the cards show
    cards: dict[str, list[Card]] = field(default_factory=dict)

    def add(self, c: Card) -> None:
        self.cards.setdefault(c.group, []).append(c)

    def on_image(self, group: str, s, judged) -> None:
        """edge.eval.evaluate.OnImage."""
        self.add(image_card(group, s, judged, self.classes, self.style))

    def on_frame(self, group: str, out, counted: Detections | None, kept: np.ndarray | None) -> None:
        """edge.eval.footage.OnFrame."""
        self.add(frame_card(group, out, self.classes, counted, kept))


# --- plots (inline SVG) -----------------------------------------------------------------------------

def _x(text) -> str:
    return html.escape(str(text), quote=True)


def svg_bars(title: str, groups: list[tuple[str, list[tuple[str, float | None, str]]]], *, top: float = 1.0,
             percent: bool = True, width: int = 640, height: int = 240) -> str:
    """A grouped bar chart: per group (label, [(series, value or None, note)]); None draws no bar but a '-'.

    Every bar is a <rect class="mark">, every value also in its <title> (hover) and printed above it.
    """
    left, bottom, top_pad = 44, 48, 28
    plot_w, plot_h = width - left - 10, height - bottom - top_pad
    n = max(1, len(groups))
    series = sorted({s for _, bars in groups for s, _, _ in bars}, key=lambda s: [
        b[0] for _, bars in groups for b in bars].index(s))
    slot = plot_w / n
    bar_w = max(4.0, min(40.0, (slot - 8) / max(1, len(series))))
    parts = [f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{_x(title)}">',
             f'<text x="{left}" y="16" class="title">{_x(title)}</text>']
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top_pad + plot_h * (1 - frac)
        value = frac * top
        label = f"{round(100 * value, 1):g}%" if percent else f"{value:g}"
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{left - 4}" y="{y + 4:.1f}" class="tick" text-anchor="end">{label}</text>')
    for g, (label, bars) in enumerate(groups):
        x0 = left + g * slot + (slot - bar_w * len(bars)) / 2
        for b, (name, value, note) in enumerate(bars):
            x = x0 + b * bar_w
            fill = CLASS_FILL.get(name, "#4a7")
            if value is None:
                parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{top_pad + plot_h - 3:.1f}" class="tick" '
                             f'text-anchor="middle">-</text>')
                continue
            h = plot_h * min(max(value / top, 0.0), 1.0) if top else 0.0
            y = top_pad + plot_h - h
            shown = f"{100 * value:.1f}%" if percent else f"{value:g}"
            parts.append(f'<rect class="mark" x="{x:.1f}" y="{y:.1f}" width="{bar_w - 2:.1f}" height="{max(h, 1):.1f}" '
                         f'fill="{fill}"><title>{_x(label)} {_x(name)}: {shown} {_x(note)}</title></rect>'
                         f'<text x="{x + bar_w / 2 - 1:.1f}" y="{y - 3:.1f}" class="val" text-anchor="middle">'
                         f'{shown}</text>')
        parts.append(f'<text x="{left + g * slot + slot / 2:.1f}" y="{top_pad + plot_h + 16:.1f}" class="tick" '
                     f'text-anchor="middle">{_x(label)}</text>')
    for i, name in enumerate(series):
        x = left + i * 110
        parts.append(f'<rect x="{x}" y="{height - 16}" width="10" height="10" fill="{CLASS_FILL.get(name, "#4a7")}"/>'
                     f'<text x="{x + 14}" y="{height - 7}" class="tick">{_x(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def svg_line(title: str, values: list[float], *, width: int = 640, height: int = 160) -> str:
    """Share of the frame per frame index as one polyline (class "mark"), 0..max(values) rounded up."""
    left, bottom, top_pad = 44, 22, 24
    plot_w, plot_h = width - left - 10, height - bottom - top_pad
    top = max(0.05, float(np.ceil(max(values, default=0.0) * 20) / 20))
    parts = [f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{_x(title)}">',
             f'<text x="{left}" y="15" class="title">{_x(title)}</text>']
    for frac in (0.0, 0.5, 1.0):
        y = top_pad + plot_h * (1 - frac)
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{left - 4}" y="{y + 4:.1f}" class="tick" text-anchor="end">{100 * frac * top:.0f}%</text>')
    if values:
        step = plot_w / max(1, len(values) - 1)
        pts = " ".join(f"{left + i * step:.1f},{top_pad + plot_h * (1 - v / top):.1f}" for i, v in enumerate(values))
        parts.append(f'<polyline class="mark" points="{pts}" fill="none" stroke="#c33" stroke-width="1.5">'
                     f'<title>{len(values)} frames</title></polyline>')
    parts.append(f'<text x="{width - 10}" y="{height - 6}" class="tick" text-anchor="end">frame '
                 f'{max(len(values) - 1, 0)}</text></svg>')
    return "".join(parts)


# --- the page ---------------------------------------------------------------------------------------

CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:1320px;color:#222}
h1{font-size:1.5em}h2{margin-top:2em;border-bottom:1px solid #ccc}h3{font-size:1.05em;margin:1.2em 0 .4em}
.plots{display:flex;flex-wrap:wrap;gap:12px}svg.plot{border:1px solid #eee;background:#fff}
svg .title{font-size:13px;font-weight:600}svg .tick{font-size:11px;fill:#555}svg .val{font-size:10px;fill:#222}
svg .grid{stroke:#eee}figure{margin:0 0 1.2em}figure img{max-width:100%;height:auto;border:1px solid #ccc}
figcaption{font-size:12px;color:#444}table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left}.key span{display:inline-block;padding:0 6px;margin-right:6px;color:#fff}
#verdict{font-family:monospace;color:#666}"""

# On load: every image decoded with a size and every plot with at least one mark, written into the DOM
# (a headless browser's --dump-dom reads it; a person sees it at the bottom of the page).
CHECK = """<script>window.addEventListener('load',function(){var imgs=[].slice.call(document.images);
var bad=imgs.filter(function(i){return !(i.complete&&i.naturalWidth>0)});
var plots=[].slice.call(document.querySelectorAll('svg.plot'));
var empty=plots.filter(function(p){return p.querySelectorAll('.mark').length===0});
document.getElementById('verdict').textContent=(bad.length||empty.length?'FAIL':'OK')+' images='+imgs.length+
' broken='+bad.length+' plots='+plots.length+' empty='+empty.length;});</script>"""

KEY = ('<p class="key">Outlines: <span style="background:#f0f">face</span><span style="background:#ffa500">head zone'
       '</span><span style="background:#0ff;color:#000">plate</span><span style="background:#0060ff">plate zone</span>'
       'dashed = held by the tracker; labelled boxes: <span style="background:#00c800">protected</span>'
       '<span style="background:#f00">leaked</span>; judge: <span style="background:#ff0;color:#000">person / '
       'vehicle lost</span></p>')


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80] or "frame"


def _figures(cards: list[Card], orders) -> list[str]:
    out = []
    for key, heading in orders:
        chosen = worst(cards, key)
        out.append(f"<h3>{_x(heading)}</h3>")
        if not chosen:
            out.append("<p>none</p>")
        for c in chosen:
            caption = ", ".join(f"{k.replace('_', ' ')} {_pct(v) if k in ('overmask', 'painted') else v}"
                                for k, v in c.stats.items())
            out.append(f'<figure><img src="{_x(c.file)}" width="{c.size[0]}" height="{c.size[1]}" alt="{_x(c.name)}">'
                       f"<figcaption><b>{_x(c.name)}</b>: {_x(caption)}</figcaption></figure>")
    return out


def _set_plots(name: str, r: dict) -> str:
    groups = []
    for lo, hi, bucket in BUCKETS:
        bars = []
        for cls, c in r["classes"].items():
            b = c["buckets"][bucket]
            bars.append((cls, b["share"], f"({b['protected']}/{b['objects']})"))
        groups.append((bucket, bars))
    return svg_bars(f"{name}: protected share per size bucket (sqrt area, px)", groups)


def _utility_groups(items: dict[str, dict]) -> list:
    groups = []
    for name, r in items.items():
        u = r.get("utility")
        if u:
            groups.append((name, [(c, u[c]["share"], f"({u[c]['still_found']}/{u[c]['found_raw']})")
                                  for c in UTILITY_CLASSES]))
    return groups


def page(report: dict, collector: Collector, title: str) -> str:
    sets, clips = report.get("sets", {}), report.get("clips", {})
    cfg = report.get("config", {})
    judge = report.get("utility_judge")
    head = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_x(title)}</title><style>{CSS}</style>"
            f"</head><body><h1>{_x(title)}</h1>",
            f"<p>Operating point: <b>{_x(cfg.get('file') or 'the defaults (no config file)')}</b>"
            + (f", overrides {_x(' '.join(cfg.get('overrides') or []))}" if cfg.get("overrides") else "")
            + f", mask style <b>{_x((cfg.get('mask') or {}).get('style', '?'))}</b>"
            + (f", images shrunk x{cfg['shrink']:g}" if cfg.get("shrink", 1) != 1 else "") + ".</p>"]
    if judge:
        head.append(f"<p>Utility: of the persons and vehicles ({_x(', '.join(judge['classes']['vehicle']))}) the "
                    f"judge ({_x(judge['model']['name'])}, {_x(judge['letterbox'])}) finds on the raw image at score "
                    f"&ge; {judge['raw_score']}, the share still found on the masked one (same class, IoU &ge; "
                    f"{judge['kept_iou']}, score &ge; {judge['kept_score']}).</p>")
    body = ['<h2 id="summary">Summary</h2><div class="plots">']
    if sets:
        body.append(svg_bars("over-masking: share of frame area painted outside every label",
                             [(n, [("overmask", r["overmask_share"], "")]) for n, r in sets.items()],
                             top=max(0.05, float(np.ceil(max(r["overmask_share"] for r in sets.values()) * 20) / 20))))
    if clips:
        shares = [c["painted_share_mean"] or 0.0 for c in clips.values()]
        body.append(svg_bars("unlabelled clips: mean share of the frame painted",
                             [(n[:18], [("painted", c["painted_share_mean"], f"max {_pct(c['painted_share_max'])}")])
                              for n, c in clips.items()], top=max(0.05, float(np.ceil(max(shares) * 20) / 20))))
    groups = _utility_groups({**sets, **{n[:18]: c for n, c in clips.items()}})
    if groups:
        body.append(svg_bars("utility: persons and vehicles still found after masking", groups))
    body.append("</div>")
    if sets:
        body.append("<table><tr><th>set</th><th>class</th><th>objects</th><th>protected</th><th>over-masking</th>"
                    "<th>persons kept</th><th>vehicles kept</th><th>ms/img</th></tr>")
        for n, r in sets.items():
            u = r.get("utility") or {}
            for cls, c in r["classes"].items():
                body.append(f"<tr><td><a href='#set-{_x(n)}'>{_x(n)}</a></td><td>{_x(cls)}</td><td>{c['objects']}</td>"
                            f"<td>{_pct(c['protected_share'])}</td><td>{_pct(r['overmask_share'])}</td>"
                            f"<td>{_pct((u.get('person') or {}).get('share'))}</td>"
                            f"<td>{_pct((u.get('vehicle') or {}).get('share'))}</td>"
                            f"<td>{r['ms_per_image']['mean']}</td></tr>")
        body.append("</table>")
    body.append(KEY)
    for n, r in sets.items():
        body.append(f'<h2 id="set-{_x(n)}">{_x(n)} ({r["images"]} images, {_x(r["image_size"])})</h2>')
        if r.get("incomplete"):
            body.append(f"<p>Labels incomplete: {_x(r['incomplete'])}; its over-masking overstates the cost.</p>")
        if r.get("overmask_by_class"):
            body.append(f"<p>Over-masking {_pct(r['overmask_share'])}, by what was painted: "
                        + _x(", ".join(f"{k} {_pct(v)}" for k, v in r["overmask_by_class"].items())) + ".</p>")
        body.append(f'<div class="plots">{_set_plots(n, r)}</div>')
        body += _figures(collector.cards.get(n, []), SET_ORDERS)
    for n, c in clips.items():
        body.append(f'<h2 id="clip-{_x(n)}">{_x(n)} ({c["frames"]} frames, {_x(c["size"])}, '
                    f'{"with" if c["hold"] else "without"} the hold)</h2>')
        body.append(f"<p>Painted: mean {_pct(c['painted_share_mean'])}, max {_pct(c['painted_share_max'])}; by class "
                    + _x(", ".join(f"{k} {_pct(v)}" for k, v in c["painted_share_by_class"].items()) or "-")
                    + f"; held {_pct(c['held_share_mean'])}.</p>")
        body.append(f'<div class="plots">{svg_line("share of the frame painted, per frame", c["painted_share_per_frame"])}</div>')
        body += _figures(collector.cards.get(n, []), CLIP_ORDERS)
    tail = [f'<p id="verdict">not checked (scripts off)</p>{CHECK}</body></html>']
    return "\n".join(head + body + tail)


def dataset_page(result: dict, set_name: str, class_name: str) -> dict:
    """`eval --dataset`'s result (one class pooled) in the shape of an --all report of that one set."""
    one = {"classes": {class_name: result}, "images": result["images"], "image_size": "-", "incomplete": "",
           "overmask_share": result["overmask_share"], "ms_per_image": result["ms_per_image"],
           **({"utility": result["utility"]} if "utility" in result else {})}
    return {"sets": {set_name: one}, "config": result.get("config", {}),
            **({"utility_judge": result["utility_judge"]} if "utility_judge" in result else {})}


def write(folder: str | Path, report: dict, collector: Collector, title: str = "edge-anon evaluation") -> Path:
    """index.html and the shown frames' JPEGs under `folder` (created); returns the index's path."""
    folder = Path(folder)
    shown: dict[int, Card] = {}
    for group, cards in collector.cards.items():
        for key, _ in (*SET_ORDERS, *CLIP_ORDERS):
            for c in worst(cards, key):
                shown[id(c)] = c
    used: set[str] = set()
    for c in shown.values():
        rel = f"img/{_safe(c.group)}/{_safe(Path(c.name).stem)}.jpg"
        while rel in used:
            rel = rel[:-4] + "_.jpg"
        used.add(rel)
        c.file = rel
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        with open(folder / rel, "wb") as f:
            f.write(c.jpeg)
    index = folder / "index.html"
    folder.mkdir(parents=True, exist_ok=True)
    with open(index, "w", encoding="utf-8") as f:
        f.write(page(report, collector, title))
    with open(folder / "report.json", "w", encoding="utf-8") as f:
        json.dump({k: v for k, v in report.items()}, f, indent=1)
    return index
