"""What a batch run has to do: the inputs, their chunks, and the ledger of what is already done.

Pure bookkeeping, no Ray and no models: the driver (edge.fleet.run) plans here, the workers
(edge.fleet.worker) only see one Input and one Chunk at a time.

The ledger lives in the output folder (``.edge-batch/``, mode 0700): one JSON line per finished
detection chunk and per finished input, and each chunk's detections (boxes, scores, classes and a
digest of the frame they were found in; never pixels) as an .npz without pickles. A rerun after a
crash or Ctrl-C redoes only what has no line; a rerun with another config or a changed input file
has other keys and starts that input afresh.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge import config as config_mod
from edge.config import Config
from edge.frame import Detections
from edge.sinks.folder import safe_stem
from edge.sources.images import IMAGE_SUFFIXES

LEDGER_DIR = ".edge-batch"
LEDGER_NAME = "ledger.jsonl"
LIST_SUFFIXES = (".txt", ".list", ".lst")  # a text file naming one input per line

# per-frame outcome of detection, as the pipeline will see it again when it paints
OK, DETECTOR_ERROR, BAD_OUTPUT, BAD_FRAME = 0, 1, 2, 3


class PlanError(ValueError):
    """The inputs or the output folder cannot be planned (named, one line)."""


@dataclass(frozen=True)
class Input:
    path: str  # absolute
    kind: str  # "video" | "folder"
    name: str  # the output's name inside the output folder, unique in the run
    key: str  # ledger key: path, size, mtime and the config's digest
    frames: int | None  # planned frames (a video's container count, a folder's image files); None = unknown


@dataclass(frozen=True)
class Chunk:
    input: Input
    index: int
    start: int  # first frame (video) or file index (folder)
    stop: int | None  # one past the last; None = to the end (the last chunk of a video: counts can lie)


def read_inputs(args: list[str]) -> list[Path]:
    """The inputs as given: video files and image folders, a text file (.txt/.list/.lst) expanded to its lines."""
    out: list[Path] = []
    for arg in args:
        p = Path(arg)
        if p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            base = p.resolve().parent
            for line in p.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    q = Path(line)
                    out.append(q if q.is_absolute() else base / q)
        else:
            out.append(p)
    return out


def config_digest(cfg: Config) -> str:
    """What decides a chunk's detections and where its frames lie: the config an actor runs (its onnxruntime
    threads included) and the chunk length; not the output's place nor how many workers share the work."""
    tree = config_mod.to_dict(dataclasses.replace(cfg, output=config_mod.OutputConfig(), cameras=(),
                                                  fleet=config_mod.FleetConfig()))
    tree["chunk_frames"] = cfg.fleet.chunk_frames
    return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()[:16]


def folder_files(path: Path) -> list[Path]:
    """The images of a folder in the order edge.sources.replay.ImageFolderSource replays them."""
    return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def video_frames(path: Path) -> int | None:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT) if cap.isOpened() else 0.0
    finally:
        cap.release()
    return int(count) if math.isfinite(count) and count > 0 else None


def plan_input(path: Path, name: str, digest: str) -> Input:
    """One input, or OSError / PlanError for one that does not exist; decoding is the workers' job."""
    try:
        st = os.stat(path)
    except OSError as e:  # missing, a symlink loop, no permission: this input's failure, not the run's
        raise PlanError(f"{path}: {(e.strerror or str(e)).lower()}") from None
    p = Path(os.path.realpath(path))
    key = hashlib.sha256(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\0{digest}".encode()).hexdigest()[:20]
    if p.is_dir():
        return Input(str(p), "folder", name, key, len(folder_files(p)))
    if not p.is_file():
        raise PlanError(f"{path}: neither a video file nor an image folder")
    return Input(str(p), "video", name, key, video_frames(p))


def output_names(paths: list[Path]) -> list[str]:
    """A unique output name per input, from its stem: `clip`, then `clip_2`... in input order."""
    seen: set[str] = set()
    names = []
    for p in paths:
        base = safe_stem(p.stem if p.suffix else p.name) or "input"
        name, n = base, 1
        while name in seen:
            n += 1
            name = f"{base}_{n}"
        seen.add(name)
        names.append(name)
    return names


def chunks(item: Input, chunk_frames: int) -> list[Chunk]:
    """Frame ranges of `chunk_frames`; a video's last chunk runs to the end, whatever its container said."""
    if item.frames is None:
        return [Chunk(item, 0, 0, None)]
    n = max(1, math.ceil(item.frames / chunk_frames))
    out = [Chunk(item, i, i * chunk_frames, (i + 1) * chunk_frames) for i in range(n)]
    if item.kind == "video":
        out[-1] = dataclasses.replace(out[-1], stop=None)
    else:
        out[-1] = dataclasses.replace(out[-1], stop=item.frames)
    return out


# -- per-chunk detections: what a worker found, frame by frame, as arrays (no pickles on disk) --

@dataclass(frozen=True)
class ChunkResult:
    """The detections of one chunk: per frame its seq, the digest of its pixels, an outcome, its rows."""

    seq: np.ndarray  # (F,) int64
    digest: np.ndarray  # (F, 16) uint8: blake2b of the decoded pixels the detections belong to
    outcome: np.ndarray  # (F,) int8: OK, DETECTOR_ERROR, BAD_OUTPUT, BAD_FRAME
    rows: np.ndarray  # (F,) int64 detections per frame
    xyxy: np.ndarray  # (R, 4) float32
    score: np.ndarray  # (R,) float32
    class_id: np.ndarray  # (R,) int32
    quad: np.ndarray  # (R, 4, 2) float32; NaN rows where a frame had no quads
    has_quad: np.ndarray  # (F,) bool
    message: np.ndarray  # (F,) str: the error of a failed frame, "" otherwise
    detect_ms: float = 0.0

    @staticmethod
    def build(frames: list[tuple[int, bytes, int, Detections | None, str]], detect_ms: float = 0.0) -> "ChunkResult":
        """From (seq, digest, outcome, detections or None, message) per frame."""
        dets = [d if d is not None else Detections() for _, _, _, d, _ in frames]
        quads = [d.quad if d.quad is not None else np.full((len(d), 4, 2), np.nan, np.float32) for d in dets]
        return ChunkResult(
            seq=np.array([f[0] for f in frames], np.int64),
            digest=np.array([np.frombuffer(f[1], np.uint8) for f in frames], np.uint8).reshape(-1, 16),
            outcome=np.array([f[2] for f in frames], np.int8),
            rows=np.array([len(d) for d in dets], np.int64),
            xyxy=np.concatenate([d.xyxy for d in dets]) if dets else np.zeros((0, 4), np.float32),
            score=np.concatenate([d.score for d in dets]) if dets else np.zeros(0, np.float32),
            class_id=np.concatenate([d.class_id for d in dets]) if dets else np.zeros(0, np.int32),
            quad=np.concatenate(quads) if quads else np.zeros((0, 4, 2), np.float32),
            has_quad=np.array([d.quad is not None for d in dets], bool),
            message=np.array([f[4] for f in frames], dtype=str),
            detect_ms=float(detect_ms),
        )

    def frames(self):
        """(seq, digest bytes, outcome, Detections, message) per frame."""
        ends = np.cumsum(self.rows)
        for i in range(len(self.seq)):
            a, b = int(ends[i] - self.rows[i]), int(ends[i])
            dets = Detections(self.xyxy[a:b], self.score[a:b], self.class_id[a:b],
                              self.quad[a:b] if self.has_quad[i] else None)
            yield int(self.seq[i]), self.digest[i].tobytes(), int(self.outcome[i]), dets, str(self.message[i])

    def save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.partial")
        with open(tmp, "wb") as f:
            np.savez(f, **{k.name: np.asarray(getattr(self, k.name)) for k in dataclasses.fields(self)})
        os.replace(tmp, path)

    @staticmethod
    def load(path: Path) -> "ChunkResult":
        with np.load(path, allow_pickle=False) as z:
            kw = {k.name: z[k.name] for k in dataclasses.fields(ChunkResult)}
        kw["detect_ms"] = float(kw["detect_ms"])
        return ChunkResult(**kw)


class Ledger:
    """Finished chunks and inputs of one output folder (see the module docstring)."""

    def __init__(self, output_dir: Path) -> None:
        self.root = output_dir / LEDGER_DIR
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.path = self.root / LEDGER_NAME
        self.chunks: set[tuple[str, int]] = set()
        self.done: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash: its chunk is simply done again
                if "chunk" in rec:
                    self.chunks.add((rec["input"], int(rec["chunk"])))
                elif "done" in rec:
                    self.done[rec["input"]] = rec
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)

    def chunk_path(self, key: str, index: int) -> Path:
        return self.root / key / f"{index:06d}.npz"

    def has_chunk(self, key: str, index: int) -> bool:
        return (key, index) in self.chunks and self.chunk_path(key, index).is_file()

    def add_chunk(self, key: str, index: int, result: ChunkResult) -> None:
        path = self.chunk_path(key, index)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        result.save(path)
        self._append({"input": key, "chunk": index, "frames": len(result.seq)})
        self.chunks.add((key, index))

    def load_chunks(self, key: str, n: int) -> list[ChunkResult]:
        return [ChunkResult.load(self.chunk_path(key, i)) for i in range(n)]

    def add_done(self, key: str, record: dict) -> None:
        rec = {"input": key, "done": True, **record}
        self._append(rec)
        self.done[key] = rec
        for f in sorted((self.root / key).glob("*.npz")) if (self.root / key).is_dir() else ():
            f.unlink()  # the painted output holds what they were for
        if (self.root / key).is_dir():
            (self.root / key).rmdir()

    def _append(self, rec: dict) -> None:
        os.write(self._fd, (json.dumps(rec, sort_keys=True) + "\n").encode())
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
