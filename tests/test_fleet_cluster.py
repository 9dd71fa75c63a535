"""`edge-anon batch --address` against a real multi-node Ray cluster on this machine, one node killed mid-run.

The cluster is two `ray start --block` processes (a head and a second node, 1 CPU each, each with its
own private temp folder and a private auth token), as an operator would start them on two machines. A
batch runs through it uninterrupted, then again while the second node is killed (SIGKILL of its
`ray start`, raylet and agents, and of its worker processes: a machine lost) as soon as one of the
detector actors lives there and the first chunk is done. The second run must complete with outputs
identical to the first: every frame, every record.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import pytest

from tests.conftest import MODELS, ROOT, VIDEO, video_frames

pytest.importorskip("ray")

pytestmark = [pytest.mark.slow]

PETS = VIDEO / "vtest_pets2009_480x360.avi"
RAY = Path(sys.executable).parent / "ray"
FRAMES = 16
FLAGS = ["-c", str(ROOT / "configs" / "fast-faces-only.toml"), "--set", "fleet.chunk_frames=2",
         "--set", "fleet.workers=2", "--set", "fleet.cpus_per_actor=0.25", "--log-level", "warning"]


def free_ports(n: int) -> list[int]:
    """`n` distinct ports free now (held open together while they are picked, so never the same one twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def node_flags(temp: Path, ports: list[int]) -> list[str]:
    # every port of its own: two nodes on one machine must not share the fixed defaults
    return ["--num-cpus", "1", "--temp-dir", str(temp), "--disable-usage-stats", "--object-store-memory",
            str(100 * 2**20), "--dashboard-agent-listen-port", str(ports[0]), "--dashboard-agent-grpc-port",
            str(ports[1]), "--runtime-env-agent-port", str(ports[2]), "--metrics-export-port", str(ports[3]), "--block"]


def start_node(args: list[str], log: Path, env: dict) -> subprocess.Popen:
    proc = subprocess.Popen([str(RAY), "start", *args], stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    deadline = time.monotonic() + 180
    while "Ray runtime started" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"ray start {args[0]} did not come up: {log.read_text()[-2000:]}")
        time.sleep(0.3)
    return proc


def children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Cluster:
    """A head and a second node, separate processes; every process of both is tagged (edge.fleet.reaper's
    marker variable) so that the teardown finds all of them, workers included."""

    def __init__(self, root: Path) -> None:
        from edge.fleet.reaper import INSTANCE_VAR

        self.tag = str(root)
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                    "EDGE_MODEL_PATH": os.environ.get("EDGE_MODEL_PATH", str(MODELS)), "PYTHONPATH": str(ROOT),
                    INSTANCE_VAR: self.tag}
        port, *ports = free_ports(9)
        self.address = f"127.0.0.1:{port}"
        self.head = start_node(["--head", "--port", str(port), "--include-dashboard", "false",
                                *node_flags(root / "h", ports[:4])], root / "head.log", self.env)
        self.node = start_node(["--address", self.address, *node_flags(root / "n", ports[4:])], root / "node.log",
                               self.env)

    def node_raylet(self) -> int:
        (raylet,) = [p for p in children(self.node.pid) if "raylet/raylet" in cmdline(p)]
        return raylet

    def kill_node(self) -> list[int]:
        """SIGKILL the second node as a lost machine: its ray start, raylet, agents and workers."""
        victims = [self.node.pid, *children(self.node.pid)]
        victims += [w for p in list(victims) for w in children(p)]
        os.killpg(self.node.pid, signal.SIGKILL)
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.node.wait(timeout=30)
        return victims

    def close(self) -> None:
        from edge.fleet.reaper import kill_marked

        for proc in (self.node, self.head):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in (self.node, self.head):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        kill_marked(self.tag, exclude={os.getpid()})


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    if not PETS.exists():
        pytest.skip("shared clip missing")
    frames = video_frames(PETS)[: 2 * FRAMES]
    paths = []
    for k in range(2):
        path = tmp_path_factory.mktemp("clips") / f"clip{k}.mkv"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 10.0, (480, 360))
        for image in frames[k * FRAMES:(k + 1) * FRAMES]:
            writer.write(image)
        writer.release()
        paths.append(path)
    return paths


@pytest.fixture
def cluster():
    root = Path(tempfile.mkdtemp(prefix="ec-"))  # short: Ray's socket paths live under it
    c = Cluster(root)
    try:
        yield c
    finally:
        c.close()
        shutil.rmtree(root, ignore_errors=True)


def batch(cluster: Cluster, clips: list[Path], out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edge", "batch", *map(str, clips), "--output-dir", str(out),
                             "--address", cluster.address, *FLAGS], stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=cluster.env)


def records(folder: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "timings_ms"}
            for line in (folder / "detections.jsonl").read_text().splitlines()]


def test_a_batch_through_a_cluster_survives_losing_a_node_with_the_same_outputs(cluster, clips, tmp_path):
    from edge.fleet.plan import LEDGER_DIR, LEDGER_NAME

    reference = batch(cluster, clips, tmp_path / "ref")
    _, err = reference.communicate(timeout=400)
    assert reference.returncode == 0, err
    assert "2 input(s): 2 complete" in err and "on 2 worker(s)" in err

    out = tmp_path / "out"
    run = batch(cluster, clips, out)
    ledger = out / LEDGER_DIR / LEDGER_NAME
    raylet = cluster.node_raylet()
    deadline = time.monotonic() + 300
    on_node: list[int] = []
    while time.monotonic() < deadline and run.poll() is None:
        on_node = [p for p in children(raylet) if cmdline(p).startswith("ray::DetectWorker")]
        if on_node and ledger.exists() and '"chunk"' in ledger.read_text():
            break
        time.sleep(0.05)
    assert run.poll() is None and on_node, "the run ended before the second node held a detector"
    done_before_kill = ledger.read_text().count('"chunk"')
    victims = cluster.kill_node()
    assert set(on_node) <= set(victims)
    _, err = run.communicate(timeout=400)
    assert run.returncode == 0, err
    assert "2 input(s): 2 complete" in err and "Traceback" not in err
    assert done_before_kill < 2 * FRAMES // 2  # the node was lost mid-run, not after it

    for clip in clips:
        name = clip.stem
        expected = sorted(p.name for p in (tmp_path / "ref" / name).glob("*.png"))
        assert len(expected) == FRAMES
        assert sorted(p.name for p in (out / name).glob("*.png")) == expected
        for png in expected:
            assert (out / name / png).read_bytes() == (tmp_path / "ref" / name / png).read_bytes()
        assert records(out / name) == records(tmp_path / "ref" / name)
