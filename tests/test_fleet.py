"""`edge-anon batch` on a real local Ray instance (2 CPUs, one per module) with the real models and clips.

The clip is the first 24 frames of the shared 720p dashcam video, stored losslessly: a face is found
in frame 9 and held to frame 15, so with 10-frame chunks the hold crosses a chunk border.
"""
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import ROOT, VIDEO, video_frames

ray = pytest.importorskip("ray")

CLIP = VIDEO / "udacity_CarND-Vehicle-Detection_test_video.mp4"
FRAMES = 24
CHUNK = 10
# `edge-anon batch` on the default config, small chunks and a small object store (its own embedded Ray)
BATCH = ["--set", f"fleet.chunk_frames={CHUNK}", "--set", "fleet.num_cpus=2", "--set", "fleet.object_store_mb=100"]

pytestmark = [pytest.mark.slow]


def records(folder: Path, name: str = "detections.jsonl") -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "timings_ms"}
            for line in (folder / name).read_text().splitlines()]


def audit(folder: Path) -> tuple[dict, dict]:
    start, end = [json.loads(line) for line in (folder / "audit.jsonl").read_text().splitlines()]
    return start, end


def lossless_head(source: Path, frames: int, fps: float, path: Path) -> Path:
    """The first `frames` frames of a shared clip as an FFV1 .mkv at `path` (skips when the clip is missing)."""
    if not source.exists():
        pytest.skip("shared clip missing")
    images = video_frames(source)[:frames]
    h, w = images[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (w, h))
    for image in images:
        writer.write(image)
    writer.release()
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return lossless_head(CLIP, FRAMES, 25.0, tmp_path_factory.mktemp("clips") / "drive.mkv")


@pytest.fixture(scope="module")
def local_ray():
    from edge.fleet.run import LocalRay

    with LocalRay(num_cpus=2, object_store_mb=100) as instance:
        yield instance


@pytest.fixture(scope="module")
def cfg():
    from edge.compose import load_config

    return load_config(None, [f"fleet.chunk_frames={CHUNK}"])


@pytest.fixture(scope="module")
def replayed(clip, tmp_path_factory) -> Path:
    """`replay` of the clip to PNGs with its audit record: what batch must reproduce."""
    from edge import cli

    out = tmp_path_factory.mktemp("replay") / "out"
    rc = cli.main(["replay", str(clip), "--output-dir", str(out), "--set", f"service.audit_path={out}.audit",
                   "--set", "runtime.threads=1", "--set", f"fleet.chunk_frames={CHUNK}"])
    assert rc == 0
    os.replace(f"{out}.audit", out / "audit.jsonl")
    return out


@pytest.fixture(scope="module")
def batched(local_ray, cfg, clip, tmp_path_factory):
    from edge.fleet.run import run_batch

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = tmp_path_factory.mktemp("batch")
    result = run_batch(cfg, [str(clip)], out, stream=(terminal := Terminal()))
    result.terminal = terminal.getvalue()
    return out, result


def assert_same_as_replay(folder: Path, replayed: Path) -> None:
    assert sorted(p.name for p in folder.glob("*.png")) == sorted(p.name for p in replayed.glob("*.png"))
    assert len(list(folder.glob("*.png"))) == FRAMES
    assert records(folder) == records(replayed)
    for png in replayed.glob("*.png"):
        np.testing.assert_array_equal(cv2.imread(str(folder / png.name)), cv2.imread(str(png)))


def test_batch_writes_the_frames_names_records_and_audit_of_replay(batched, replayed):
    out, result = batched
    assert result.exit_code() == 0 and [o.status for o in result.outcomes] == ["complete"]
    folder = out / "drive"
    assert_same_as_replay(folder, replayed)
    (b_start, b_end), (r_start, r_end) = audit(folder), audit(replayed)
    for key in ("models", "thresholds"):
        assert b_start[key] == r_start[key]
    def ran(config: dict) -> dict:  # what decides the outcome: all but where the outputs went
        return {**{k: v for k, v in config.items() if k != "output"},
                "service": {k: v for k, v in config["service"].items() if k != "audit_path"}}

    assert ran(b_start["config"]) == ran(r_start["config"])
    assert b_end["frames"] == r_end["frames"] and b_end["counters"] == r_end["counters"]
    assert b_end["exit_code"] == r_end["exit_code"] == 0


def test_a_person_can_follow_the_progress_files_frames_rate_and_the_outcome(batched):
    text = batched[1].terminal
    draws = [d for line in text.split("\n") for d in line.split("\r") if d.startswith("batch ")]
    assert any(d.startswith("batch 0/1 files: ") and f"| {CHUNK}/{FRAMES} [" in d for d in draws), draws
    assert draws[-1].startswith("batch 1/1 files: 100%|") and f"| {FRAMES}/{FRAMES} [" in draws[-1]
    assert draws[-1].endswith(("frame/s]", "s/frame]"))  # the rate (tqdm turns it over below 1 a second)
    assert f"batch: drive: complete, {FRAMES} frames in, {FRAMES} masked, 0 masked whole, 0 dropped" in text


def test_every_region_replay_paints_is_painted_by_batch_across_chunk_borders(batched, replayed):
    """The hold carries across chunks (it runs over the recorded detections in order, in one task)."""
    out, _ = batched
    by_frame = {r["frame"]: r for r in records(out / "drive")}
    painted = [r for r in records(replayed) if r["boxes"]]
    assert painted, "the clip must have painted regions for this test to mean anything"
    seqs = [r["seq"] for r in painted]
    assert min(seqs) < CHUNK <= max(seqs), "the held face must cross a chunk border"
    for r in painted:
        assert by_frame[r["frame"]]["boxes"] == r["boxes"]
    _, end = audit(out / "drive")
    assert end["counters"].get("track_held", 0) > 0


def test_every_ray_worker_is_hardened(local_ray):
    from edge.fleet import worker

    states = ray.get([ray.remote(worker.hardening_state).options(num_cpus=0.5).remote() for _ in range(2)])
    for state in states:
        assert state["rlimit_core"] == [0, 0]
        assert state["dumpable"] == 0
        assert state["ort_telemetry_off"] is True
        assert state["pid"] != os.getpid()


# a fresh process that starts the embedded instance and says whether Ray's token authentication is on
AUTH_PROBE = ("from edge.fleet.run import LocalRay\n"
              "with LocalRay(num_cpus=1, object_store_mb=100):\n"
              "    from ray._raylet import AuthenticationMode, get_authentication_mode\n"
              "    print(get_authentication_mode() == AuthenticationMode.TOKEN)\n")


@pytest.mark.parametrize("mode, token", [(None, "True"), ("disabled", "False"), ("token", "True")])
def test_the_embedded_instance_keeps_token_auth_and_prints_no_ray_notice(tmp_path, mode, token):
    """Token authentication stays on unless the user's RAY_AUTH_MODE says otherwise, and Ray's notices
    (token authentication, object spilling through an unstable API) stay off the user's terminal."""
    from edge.fleet.reaper import INSTANCE_VAR

    env = {k: v for k, v in os.environ.items() if k not in (INSTANCE_VAR, "RAY_AUTH_MODE")}
    if mode is not None:
        env["RAY_AUTH_MODE"] = mode
    private = private_tmp()
    r = subprocess.run([sys.executable, "-c", AUTH_PROBE], capture_output=True, text=True, cwd=ROOT,
                       env={**env, "TMPDIR": str(private)}, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [token]
    assert "Token authentication" not in r.stderr and "unstable API" not in r.stderr, r.stderr
    private.rmdir()


def test_a_worker_killed_mid_run_costs_a_retry_never_a_missing_or_unmasked_frame(local_ray, clip, replayed,
                                                                                  tmp_path):
    from edge.compose import load_config
    from edge.fleet.run import run_batch

    cfg = load_config(None, [f"fleet.chunk_frames={CHUNK}", "fleet.workers=2", "fleet.cpus_per_actor=0.75"])
    killed = []

    def kill_first(done: int, pids: list[int]) -> None:
        if done == 1 and not killed:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    result = run_batch(cfg, [str(clip)], tmp_path, on_chunk=kill_first)
    assert killed and result.workers == 2
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)
    assert result.exit_code() == 0
    assert_same_as_replay(tmp_path / "drive", replayed)


def test_an_interrupted_run_resumed_gives_the_uninterrupted_result(local_ray, cfg, clip, batched, tmp_path):
    from edge.fleet.run import run_batch

    first = run_batch(cfg, [str(clip)], tmp_path, max_chunks=1)
    assert first.stopped_early and first.exit_code() == 1
    assert [o.status for o in first.outcomes] == ["not finished"]
    assert not (tmp_path / "drive").exists() and not list(tmp_path.glob(".drive.*"))
    second = run_batch(cfg, [str(clip)], tmp_path)
    assert second.exit_code() == 0
    assert 0 < second.frames_detected < FRAMES  # only the chunks the first run had not finished
    reference = batched[0] / "drive"
    assert sorted(p.name for p in (tmp_path / "drive").iterdir()) == sorted(p.name for p in reference.iterdir())
    assert records(tmp_path / "drive") == records(reference)
    for png in reference.glob("*.png"):
        assert (tmp_path / "drive" / png.name).read_bytes() == png.read_bytes()
    third = run_batch(cfg, [str(clip)], tmp_path)
    assert [o.status for o in third.outcomes] == ["done before"] and third.frames_detected == 0


def test_mkv_output_matches_replay_output_mkv(local_ray, cfg, clip, tmp_path):
    from edge import cli, config as config_mod
    from edge.fleet.run import run_batch

    assert cli.main(["replay", str(clip), "--output", str(tmp_path / "r.mkv"), "--set", "runtime.threads=1"]) == 0
    video_cfg = config_mod.override(cfg, {"output.kind": "video", "output.file": "batch.mkv"})
    assert run_batch(video_cfg, [str(clip)], tmp_path / "b").exit_code() == 0
    folder = tmp_path / "b" / "drive"
    assert sorted(p.name for p in folder.iterdir()) == ["audit.jsonl", "detections.jsonl", "drive.mkv"]
    batch_frames, replay_frames = video_frames(folder / "drive.mkv"), video_frames(tmp_path / "r.mkv")
    assert len(batch_frames) == len(replay_frames) == FRAMES
    for a, b in zip(batch_frames, replay_frames):
        np.testing.assert_array_equal(a, b)
    assert records(folder) == records(tmp_path, "r.jsonl")


def test_no_raw_pixels_under_the_output_or_rays_private_folder(local_ray, batched, clip, tmp_path):
    """A raw row of the face that frame 9 masks appears in no file Ray or the batch wrote (spill included)."""
    out, _ = batched
    face = next(r for r in records(out / "drive") if r["boxes"])
    x1, y1, x2, y2 = face["boxes"][0]
    raw = video_frames(clip)[face["seq"]]
    needle = raw[(y1 + y2) // 2, x1:x2].tobytes()
    assert len(needle) >= 24

    def holders(root: Path) -> list[str]:
        found = []
        for p in root.rglob("*"):
            if p.is_file() and not p.is_symlink():
                try:
                    if needle in p.read_bytes():
                        found.append(str(p))
                except OSError:
                    continue
        return found

    control = tmp_path / "control.npy"
    np.save(control, raw)  # the scan finds raw pixels where they are
    assert holders(tmp_path) == [str(control)]
    assert local_ray.private.stat().st_mode & 0o077 == 0
    assert holders(out) == []
    assert holders(local_ray.private) == []
    assert not any(local_ray.spill.rglob("*"))


def test_a_corrupt_input_fails_alone_and_is_reported(clip, tmp_path):
    """Through the command line (its own embedded Ray): the good inputs complete, exit status 1."""
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(os.urandom(50_000))
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"{clip}\n{bad}\n{tmp_path / 'missing.mkv'}\n")
    private = private_tmp()
    env = {**os.environ, "TMPDIR": str(private)}
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "edge", "batch", str(listing), "--output-dir", str(out), *BATCH],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=400)
    assert proc.returncode == 1, proc.stderr
    assert "drive: complete, 24 frames in" in proc.stderr
    assert "broken: failed" in proc.stderr and "missing: failed" in proc.stderr
    assert "1 complete" in proc.stderr and "2 failed" in proc.stderr
    assert len(list((out / "drive").glob("*.png"))) == FRAMES
    assert not (out / "broken").exists() and not list(out.glob(".broken*"))
    left = list(private.iterdir())
    private.rmdir()
    assert left == []  # Ray's private folder is gone


@pytest.mark.parametrize("changes, message", [
    (["fleet.workers=2"], "leaves less than"),
    (["fleet.cpus_per_actor=2"], "leaves less than"),
])
def test_shares_that_leave_no_cpu_for_painting_are_refused(local_ray, clip, tmp_path, changes, message):
    from edge.compose import load_config
    from edge.fleet.run import BatchError, run_batch

    with pytest.raises(BatchError, match=message):
        run_batch(load_config(None, changes), [str(clip)], tmp_path)


@pytest.mark.parametrize("key, value", [("fleet.chunk_frames", 0), ("fleet.cpus_per_actor", 0.0),
                                        ("fleet.object_store_mb", 10), ("fleet.max_retries", -1),
                                        ("fleet.workers", 5000), ("fleet.bogus", 1)])
def test_the_fleet_table_refuses_what_it_cannot_run(key, value):
    from edge import config as config_mod

    with pytest.raises(config_mod.ConfigError, match=key):
        config_mod.override(config_mod.Config(), {key: value})


def test_ctrl_c_then_a_rerun_gives_the_uninterrupted_result(local_ray, cfg, clip, batched, tmp_path):
    """SIGINT to `edge-anon batch` once the ledger holds a chunk: exit 130, Ray's folder gone; the rerun
    (here in-process) does only what is left and writes what an uninterrupted run wrote."""
    from edge.fleet.run import run_batch

    private = private_tmp()
    out = tmp_path / "out"
    proc = batch_proc([clip], out, private, flags=BATCH)
    wait_for_a_chunk(proc, out)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    left = list(private.iterdir())
    private.rmdir()
    assert proc.returncode == 130, err
    assert "interrupted" in err and left == []
    assert not (out / "drive").exists()  # nothing half-done under the final name
    resumed = run_batch(cfg, [str(clip)], out)
    assert resumed.exit_code() == 0 and resumed.frames_detected < FRAMES
    reference = batched[0] / "drive"
    assert records(out / "drive") == records(reference)
    for png in reference.glob("*.png"):
        assert (out / "drive" / png.name).read_bytes() == png.read_bytes()


# --- ends of a batch that must leave nothing behind: signals, SIGKILL, bad inputs (through the command line,
# each run with its own embedded Ray instance in a private TMPDIR; a small clip and the cheap config) ---------

PETS = VIDEO / "vtest_pets2009_480x360.avi"
SMALL = ["-c", str(ROOT / "configs" / "fast-faces-only.toml"), "--set", "fleet.chunk_frames=2",
         "--set", "fleet.num_cpus=2", "--set", "fleet.object_store_mb=100", "--log-level", "warning"]


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory) -> Path:
    """12 frames of the pedestrian clip, lossless: 6 chunks of 2."""
    return lossless_head(PETS, 12, 10.0, tmp_path_factory.mktemp("small") / "pets.mkv")


def private_tmp() -> Path:
    # short: Ray's socket paths live under it, and a Unix socket path has at most 107 bytes
    return Path(tempfile.mkdtemp(prefix="eb-"))


def batch_proc(inputs: list, out: Path, private: Path, *extra: str, flags: list[str] = SMALL) -> subprocess.Popen:
    """`edge-anon batch` with `flags` (the cheap config by default) and `extra`, its Ray instance in `private`."""
    from edge.fleet.reaper import INSTANCE_VAR

    # not marked as a process of this module's own embedded instance (local_ray), whose reaper would end it
    env = {k: v for k, v in os.environ.items() if k != INSTANCE_VAR}
    return subprocess.Popen([sys.executable, "-m", "edge", "batch", *map(str, inputs), "--output-dir", str(out),
                             *flags, *extra], stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**env, "TMPDIR": str(private)}, start_new_session=True)


def wait_for_a_chunk(proc: subprocess.Popen, out: Path) -> None:
    from edge.fleet.plan import LEDGER_DIR, LEDGER_NAME

    ledger = out / LEDGER_DIR / LEDGER_NAME
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if ledger.exists() and '"chunk"' in ledger.read_text():
            return
        time.sleep(0.1)
    raise AssertionError(f"no chunk finished (exit {proc.poll()}): {proc.stderr.read() if proc.poll() else ''}")


def ray_processes(private: Path) -> list[int]:
    """The processes of the embedded instances whose private folder is under `private` (their marker)."""
    from edge.fleet.reaper import marked

    return [pid for folder in private.glob("edge-batch-*") for pid in marked(str(folder))]


def wait_gone(pids: list[int], timeout: float = 60.0) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in alive if Path(f"/proc/{p}").exists() and "Z" not in _state(p)]
    return alive


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_ends_a_batch_as_sigint_does_with_the_summary(small_clip, tmp_path, sig, code):
    private, out = private_tmp(), tmp_path / "out"
    proc = batch_proc([small_clip], out, private)
    wait_for_a_chunk(proc, out)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "Fatal Python error" not in err and "*** SIGTERM" not in err
    name = signal.Signals(sig).name
    assert f"pets: not finished (interrupted ({name}); rerun to finish)" in err
    assert "batch: 1 input(s): 0 complete, 0 done before, 0 failed, 1 not finished" in err
    assert err.rstrip().endswith(f"batch: interrupted ({name}); finished chunks are in the ledger, rerun the same "
                                 "command to go on")
    assert not (out / "pets").exists() and not list(out.glob(".pets*"))
    assert wait_gone(ray_processes(private)) == []
    left = list(private.iterdir())
    private.rmdir()
    assert left == []


def test_no_ray_process_outlives_a_driver_killed_by_sigkill(small_clip, tmp_path):
    """SIGKILL of the driver mid-run: the reaper kills every process of its instance and removes its folder."""
    private, out = private_tmp(), tmp_path / "out"
    proc = batch_proc([small_clip], out, private)
    wait_for_a_chunk(proc, out)
    pids = ray_processes(private)
    assert len(pids) >= 4  # GCS, raylet, agents, the actor's worker at least
    proc.kill()
    proc.communicate(timeout=60)
    assert wait_gone(pids) == []
    deadline = time.monotonic() + 60
    while list(private.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = list(private.iterdir())
    private.rmdir()
    assert left == []


def test_the_next_run_removes_what_a_killed_driver_and_reaper_left(small_clip, tmp_path):
    """SIGKILL of the driver and its reaper together leaves Ray's processes and the private folder; the
    next run (resuming the same output) kills those processes and removes the folder, and completes."""
    from edge.fleet.reaper import PREFIX

    private, out = private_tmp(), tmp_path / "out"
    proc = batch_proc([small_clip], out, private)
    wait_for_a_chunk(proc, out)
    (stale,) = private.glob(f"{PREFIX}*")
    pids = ray_processes(private)
    reapers = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
               and f"edge.fleet.reaper\0{stale}".encode() in _cmdline(p)]
    assert len(reapers) == 1
    os.kill(reapers[0], signal.SIGKILL)  # first, or it would clean up after the driver
    assert wait_gone(reapers) == []
    proc.kill()
    proc.communicate(timeout=60)
    orphans = wait_gone(pids, timeout=5)  # what Ray does not end by itself (here often nothing)
    # a process of that instance that ignores SIGTERM, as Ray's agents were seen to do
    from edge.fleet.reaper import INSTANCE_VAR

    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                                 "signal.SIG_IGN); print(1, flush=True); time.sleep(600)"], stdout=subprocess.PIPE,
                                env={**os.environ, INSTANCE_VAR: str(stale)})
    stubborn.stdout.readline()
    orphans.append(stubborn.pid)
    assert stale.exists()  # what the next run has to clean up
    rerun = batch_proc([small_clip], out, private)
    _, err = rerun.communicate(timeout=400)
    assert rerun.returncode == 0, err
    assert f"removed {stale}, left by a batch driver that is gone" in err
    assert "pets: complete, 12 frames in" in err
    assert stubborn.wait(timeout=60) == -signal.SIGKILL
    assert wait_gone(orphans) == []
    left = list(private.iterdir())
    private.rmdir()
    assert left == []


def _cmdline(p: Path) -> bytes:
    try:
        return (p / "cmdline").read_bytes()
    except OSError:
        return b""


def test_a_bad_input_fails_alone_and_the_others_complete(small_clip, tmp_path):
    """A symlink loop, a truncated video (incomplete: exit 3 when nothing failed) and a good clip."""
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    private, out = private_tmp(), tmp_path / "out"
    r = batch_proc([small_clip, tmp_path / "loop_a"], out, private)
    _, err = r.communicate(timeout=400)
    assert r.returncode == 1, err
    assert "Traceback" not in err
    assert f"loop_a: failed ({tmp_path / 'loop_a'}: too many levels of symbolic links)" in err
    assert "pets: complete, 12 frames in, 12 masked" in err and "1 complete" in err and "1 failed" in err
    assert len(list((out / "pets").glob("*.png"))) == 12
    private.rmdir()


def test_a_truncated_input_is_incomplete_and_the_batch_exits_3(small_clip, tmp_path):
    """The frames that decode are masked and written; the input's line and the exit status say it is short."""
    whole = tmp_path / "whole.avi"
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (480, 360))
    for image in video_frames(small_clip):
        writer.write(image)
    writer.release()
    data = whole.read_bytes()
    start, end = data.find(b"movi"), data.find(b"idx1")
    (tmp_path / "cut.avi").write_bytes(data[: start + (end - start) // 2])
    private, out = private_tmp(), tmp_path / "out"
    r = batch_proc([tmp_path / "cut.avi"], out, private)
    _, err = r.communicate(timeout=400)
    assert r.returncode == 3, err
    assert "cut: incomplete (input truncated (decoded " in err and "of 12 frames))" in err
    assert "1 input(s): 0 complete, 1 incomplete" in err
    written = len(list((out / "cut").glob("*.png")))
    assert 0 < written < 12 and f"{written} frames in, {written} masked" in err
    private.rmdir()


def test_weights_the_actors_could_not_load_are_refused_before_ray_starts(small_clip, tmp_path):
    """One line per model, exit 2, no output folder, nothing in Ray's private folder (it never started)."""
    private, out = private_tmp(), tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "EDGE_MODEL_PATH"}
    r = subprocess.run([sys.executable, "-m", "edge", "batch", str(small_clip), "--output-dir", str(out), *SMALL],
                       capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env={**env, "TMPDIR": str(private), "XDG_CACHE_HOME": str(tmp_path / "empty")})
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines() == [r.stderr.splitlines()[0]]
    assert r.stderr.startswith("edge-anon batch: detect.face.model: model 'yunet_n': no verified copy")
    assert not out.exists()
    left = list(private.iterdir())
    private.rmdir()
    assert left == []
