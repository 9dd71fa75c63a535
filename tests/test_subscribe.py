import itertools
import json
import signal
import socket
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest
import zmq

from edge import wire
from edge.frame import PLATE, Detections, DroppedFrame, Frame, MaskedFrame
from edge.sinks.folder import FolderSinkError
from edge.sinks.zmq_pub import ZmqPublisher
from edge.subscribe import SubscribeError, Subscriber, run_subscribe


def masked(seq: int, camera: str = "cam0", status: str = "masked") -> MaskedFrame:
    img = np.random.default_rng(seq).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    frame = Frame(img, camera, seq, 0, 1_000_000 * seq, "")
    det = Detections(np.array([[3, 4, 12, 9]], np.float32), [0.75], [PLATE])
    return MaskedFrame(frame, np.array([[2, 3, 13, 10]], np.int32), det, status, {"detect": 1.0})


def dropped(seq: int, camera: str = "cam0") -> DroppedFrame:
    return DroppedFrame.of(Frame(np.zeros((16, 24, 3), np.uint8), camera, seq, 0, 1_000_000 * seq), "deadline")


@pytest.fixture
def pub():
    publisher = ZmqPublisher("tcp://127.0.0.1:0", linger_ms=0)
    yield publisher
    publisher.close()


def joined(sub: Subscriber, pub: ZmqPublisher) -> Subscriber:
    """Wait until the publisher has the subscription (ZeroMQ's slow joiner) before sending."""
    assert pub.wait_for_subscriptions(1, timeout_s=5.0)
    return sub


def test_recv_times_out_with_none(pub):
    with Subscriber(pub.endpoint) as sub:
        assert sub.recv(0.05) is None


def test_recv_returns_header_and_pixels(pub):
    with joined(Subscriber(pub.endpoint), pub) as sub:
        item = masked(1)
        pub.send(item)
        pub.send(dropped(2))
        header, pixels = sub.recv(5.0)
        assert (header["seq"], header["status"]) == (1, "masked")
        np.testing.assert_array_equal(pixels, item.frame.image)
        header, pixels = sub.recv(5.0)
        assert (header["seq"], header["reason"], pixels) == (2, "deadline", None)


def test_topics_select_cameras(tmp_path):
    with ZmqPublisher(f"ipc://{tmp_path}/t.ipc", linger_ms=0) as pub:
        with joined(Subscriber(pub.endpoint, topics=("rear",)), pub) as sub:
            pub.send(masked(1, camera="front"))
            pub.send(masked(2, camera="rear"))
            header, _ = sub.recv(5.0)
            assert (header["camera_id"], header["seq"]) == ("rear", 2)
            assert sub.recv(0.05) is None


def test_topics_match_camera_ids_exactly_not_by_prefix(tmp_path):
    with ZmqPublisher(f"ipc://{tmp_path}/t.ipc", linger_ms=0) as pub:
        with joined(Subscriber(pub.endpoint, topics=("cam1",)), pub) as sub:
            pub.send(masked(1, camera="cam10"))
            pub.send(masked(2, camera="cam1"))
            pub.send(masked(3, camera="cam1x"))
            header, _ = sub.recv(5.0)
            assert (header["camera_id"], header["seq"]) == ("cam1", 2)
            assert sub.recv(0.2) is None
            assert sub.foreign == 2


def _raw_publisher(ctx: zmq.Context) -> tuple[zmq.Socket, str]:
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind("tcp://127.0.0.1:0")
    return sock, sock.getsockopt_string(zmq.LAST_ENDPOINT)


def _await_subscription(sock: zmq.Socket) -> None:
    assert sock.poll(5000, zmq.POLLIN), "subscriber never subscribed"
    assert sock.recv()[:1] == b"\x01"


def _unmasked_claiming_pixels(seq: int) -> list[bytes]:
    """A forged message: masked status but masked=false, with pixels. Must never be used."""
    topic, header, pixels = wire.encode(masked(seq))
    forged = json.loads(header)
    forged["masked"] = False
    return [topic, json.dumps(forged).encode(), bytes(memoryview(pixels).cast("B"))]


def test_recv_raises_wire_error_on_malformed():
    ctx = zmq.Context()
    raw, endpoint = _raw_publisher(ctx)
    try:
        with Subscriber(endpoint, context=ctx) as sub:
            _await_subscription(raw)
            raw.send_multipart(_unmasked_claiming_pixels(1))
            with pytest.raises(wire.WireError, match="masked"):
                sub.recv(5.0)
    finally:
        raw.close(linger=0)
        ctx.term()


def test_run_subscribe_saves_masked_frames_and_prints_a_line_each(pub, tmp_path):
    out = tmp_path / "saved"
    lines: list[str] = []
    result: dict = {}

    def consume() -> None:
        result.update(run_subscribe(
            pub.endpoint, save_dir=out, count=3, timeout_s=10.0, log=lines.append,
            wall_clock_ns=lambda: 5_000_000_000,
        ))

    thread = threading.Thread(target=consume)
    thread.start()
    try:
        assert pub.wait_for_subscriptions(1, timeout_s=5.0)
        items = [masked(1), dropped(2), masked(3, status="masked_whole")]
        assert all(pub.send(i) for i in items)
    finally:
        thread.join(timeout=15.0)
    assert not thread.is_alive()

    assert result == {"received": 3, "masked": 2, "dropped": 1, "saved": 2, "malformed": 0, "ended": "count"}
    assert sorted(p.name for p in out.iterdir()) == ["cam0_00000001.png", "cam0_00000003.png"]
    np.testing.assert_array_equal(cv2.imread(str(out / "cam0_00000001.png")), items[0].frame.image)
    np.testing.assert_array_equal(cv2.imread(str(out / "cam0_00000003.png")), items[2].frame.image)
    assert lines == [
        "cam0 seq=1 masked boxes=1 latency=4999.0ms",
        "cam0 seq=2 dropped boxes=0 latency=4998.0ms reason=deadline",
        "cam0 seq=3 masked_whole boxes=1 latency=4997.0ms",
    ]


def test_run_subscribe_never_saves_a_frame_not_marked_masked(tmp_path):
    ctx = zmq.Context()
    raw, endpoint = _raw_publisher(ctx)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(run_subscribe(
        endpoint, save_dir=tmp_path, count=1, timeout_s=10.0, log=lambda line: None, context=ctx,
    )))
    thread.start()
    try:
        _await_subscription(raw)
        raw.send_multipart(_unmasked_claiming_pixels(1))
        raw.send_multipart(wire.encode(masked(2)))
    finally:
        thread.join(timeout=15.0)
        raw.close(linger=0)
        ctx.term()
    assert not thread.is_alive()
    assert result == {"received": 1, "masked": 1, "dropped": 0, "saved": 1, "malformed": 1, "ended": "count"}
    assert [p.name for p in tmp_path.iterdir()] == ["cam0_00000002.png"]


def test_run_subscribe_stops_after_idle_timeout(pub):
    ticks = itertools.count(step=0.3)  # each look at the clock is 0.3 s later
    result = run_subscribe(pub.endpoint, timeout_s=1.0, log=lambda line: None, clock=lambda: next(ticks))
    assert {k: v for k, v in result.items() if k != "silence"} == {
        "received": 0, "masked": 0, "dropped": 0, "saved": 0, "malformed": 0, "ended": "timeout"}
    assert result["silence"].startswith("no frames:")


def test_subscribe_says_when_a_publisher_is_there_but_sends_nothing(pub):
    result = run_subscribe(pub.endpoint, timeout_s=1.0, log=lambda line: None)
    assert result["silence"] == f"no frames: connected to {pub.endpoint}, but the publisher sent nothing for these topics"


def test_run_subscribe_refuses_unwritable_save_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(FolderSinkError):
        run_subscribe("tcp://127.0.0.1:1", save_dir=blocker / "out", count=1, timeout_s=0.1)


@pytest.mark.parametrize("kwargs", [{"rcvhwm": 0}, {"linger_ms": -1}])
def test_subscriber_rejects_bad_options(kwargs):
    with pytest.raises(ValueError):
        Subscriber("tcp://127.0.0.1:1", **kwargs)


def test_subscriber_connect_failure_names_the_address():
    with pytest.raises(OSError, match="bogus://x"):
        Subscriber("bogus://x")


def test_subscribe_says_when_no_publisher_is_there():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    result = run_subscribe(f"tcp://127.0.0.1:{port}", timeout_s=0.5, log=lambda line: None)
    assert result["ended"] == "timeout"
    assert result["silence"] == f"no frames: no publisher at tcp://127.0.0.1:{port}"


@pytest.mark.parametrize("address", ["foo", "tcp://127.0.0.1:99999", "tcp://127.0.0.1", "udp://127.0.0.1:5555"])
def test_a_malformed_address_is_one_clear_error(address):
    with pytest.raises(SubscribeError, match="cannot connect ZeroMQ subscriber"):
        Subscriber(address)


@pytest.mark.parametrize("args, code, says", [
    (["--connect", "foo"], 2, "subscribe: cannot connect ZeroMQ subscriber"),
    (["--connect", "tcp://127.0.0.1:1", "--timeout", "0.3"], 1, "subscribe: no frames: no publisher at"),
])
def test_subscribe_command_exit_codes_and_lines(tmp_path, args, code, says):
    r = subprocess.run([sys.executable, "-m", "edge", "subscribe", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == code
    assert says in r.stderr and "Traceback" not in r.stderr


def test_subscribe_command_refuses_an_unwritable_save_folder(tmp_path):
    (tmp_path / "file").write_text("")
    r = subprocess.run([sys.executable, "-m", "edge", "subscribe", "--save", str(tmp_path / "file" / "out")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot create save folder" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_subscribe_prints_the_summary_and_exits_128_plus_the_signal(signum):
    proc = subprocess.Popen([sys.executable, "-m", "edge", "subscribe", "--connect", "tcp://127.0.0.1:1",
                             "--timeout", "0"], stderr=subprocess.PIPE, text=True)
    try:
        assert "waiting for frames from tcp://127.0.0.1:1" in proc.stderr.readline()
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum
    assert '"ended": "interrupted"' in err and "Traceback" not in err
