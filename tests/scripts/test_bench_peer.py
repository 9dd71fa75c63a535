"""scripts/bench_peer.py: the parts that do not need the peer's virtualenv (frames, our side, stats)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import VIDEO, load_script, need


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_peer")


def test_read_frames_resizes_to_the_asked_size(bench):
    frames = bench.read_frames(need(VIDEO / "vtest_pets2009_480x360.avi"), 3, (320, 180))
    assert frames.shape == (3, 180, 320, 3) and frames.dtype == np.uint8


def test_our_side_masks_every_frame(bench):
    frames = bench.read_frames(need(VIDEO / "vtest_pets2009_480x360.avi"), 2, None)
    ours = bench.run_ours(frames, threads=1, warmup=1, config=None, overrides=[])
    assert len(ours["ms"]) == 2 and all(ms > 0 for ms in ours["ms"]) and len(ours["regions"]) == 2


@pytest.mark.parametrize("config, shipped", [(None, True), ("configs/fast-faces-only.toml", False)])
def test_our_side_runs_the_config_as_given(bench, config, shipped):
    """No hidden overrides: the defaults as shipped (horizon band, plates, persons and vehicles) unless -c says."""
    from conftest import ROOT

    frames = bench.read_frames(need(VIDEO / "vtest_pets2009_480x360.avi"), 1, None)
    ours = bench.run_ours(frames, threads=1, warmup=0, config=config and str(ROOT / config), overrides=[])
    for stage in ("tiles 2x", "plate (yolox_plate)", "context person+vehicle", "plates in vehicle crops"):
        assert (stage in ours["stages"]) == shipped, ours["stages"]


def test_stats_and_thread_env(bench):
    s = bench.stats([10.0, 20.0, 30.0])
    assert (s["mean"], s["p50"], s["max"]) == (20.0, 20.0, 30.0)
    env = bench.thread_env(2)
    assert env["OMP_NUM_THREADS"] == "2" and env["OPENBLAS_NUM_THREADS"] == "2"


def test_the_peer_gets_the_frames_through_a_pipe_not_a_file(bench, monkeypatch, tmp_path):
    """A stand-in peer reads the frames from stdin and reports what it got; nothing lands on disk."""
    monkeypatch.setattr(bench, "PEER_CODE", (
        "import io, json, sys, numpy as np\n"
        "threads, warmup = int(sys.argv[1]), int(sys.argv[2])\n"
        "frames = np.load(io.BytesIO(sys.stdin.buffer.read()))\n"
        "print(json.dumps({'ms': [1.0] * len(frames), 'regions': [int(frames.sum() % 1000)], 'shape': frames.shape}))\n"))
    monkeypatch.chdir(tmp_path)
    frames = np.random.default_rng(1).integers(0, 256, (3, 18, 32, 3), dtype=np.uint8)
    got = bench.run_peer(Path(sys.executable), frames, threads=1, warmup=0)
    assert got["shape"] == [3, 18, 32, 3] and got["regions"] == [int(frames.sum() % 1000)]
    assert list(tmp_path.iterdir()) == []


def test_the_peer_runs_without_core_dumps_and_not_dumpable(bench, monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "PEER_CODE", bench.PEER_PRELUDE + (
        "import json, resource, sys\n"
        "sys.stdin.buffer.read()\n"
        "dumpable = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE\n"
        "print(json.dumps({'ms': [], 'regions': [], 'core': resource.getrlimit(resource.RLIMIT_CORE), "
        "'dumpable': dumpable}))\n"))
    got = bench.run_peer(Path(sys.executable), np.zeros((1, 2, 2, 3), np.uint8), threads=1, warmup=0)
    assert got["core"] == [0, 0] and got["dumpable"] == 0
