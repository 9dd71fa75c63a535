import socket
import subprocess
import sys
import threading

import numpy as np
import pytest
import zmq

from edge import wire
from edge.frame import FACE, Detections, DroppedFrame, Frame, MaskedFrame
from edge.sinks.zmq_pub import PublisherBindError, ZmqPublisher

SHA = "cd" * 32


def image(h: int = 24, w: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def masked(seq: int = 1, camera: str = "cam0", status: str = "masked", img: np.ndarray | None = None) -> MaskedFrame:
    frame = Frame(image(seed=seq) if img is None else img, camera, seq, 10 + seq, 20 + seq, f"n{seq}")
    det = Detections(np.array([[2, 3, 9, 11]], np.float32), [0.8], [FACE])
    return MaskedFrame(frame, np.array([[1, 2, 10, 12]], np.int32), det, status, {"detect": 2.0}, (("yunet", SHA),))


def dropped(seq: int = 2, camera: str = "cam0", reason: str = "queue_full") -> DroppedFrame:
    return DroppedFrame.of(Frame(image(), camera, seq, 30, 40, f"n{seq}"), reason, {"wait": 9.0})


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def pub():
    publisher = ZmqPublisher("tcp://127.0.0.1:0", linger_ms=0)
    yield publisher
    publisher.close()


@pytest.fixture
def subscribe():
    """Factory of SUB sockets known to be subscribed (ZeroMQ's slow joiner) before they are returned."""
    context = zmq.Context()
    sockets: list[zmq.Socket] = []

    def make(pub: ZmqPublisher, *, rcvhwm: int = 16, rcvbuf: int = -1) -> zmq.Socket:
        sock = context.socket(zmq.SUB)
        sockets.append(sock)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, rcvhwm)
        sock.setsockopt(zmq.RCVBUF, rcvbuf)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(pub.endpoint)
        before = pub.stats()["subscriptions"]
        assert pub.wait_for_subscriptions(before + 1, timeout_s=5.0)
        return sock

    yield make
    for sock in sockets:
        sock.close(linger=0)
    context.term()


def receive(sock: zmq.Socket, timeout_s: float = 5.0) -> list[zmq.Frame]:
    assert sock.poll(int(timeout_s * 1000), zmq.POLLIN), "nothing arrived"
    return sock.recv_multipart(copy=False)


def test_headers_and_pixels_end_to_end_over_tcp(subscribe, pub):
    sub = subscribe(pub)
    items = [masked(1), dropped(2, reason="deadline"), masked(3, status="masked_whole")]
    assert [pub.send(i) for i in items] == [True, True, True]

    got = [wire.decode(receive(sub)) for _ in items]

    (h1, px1), (h2, px2), (h3, px3) = got
    assert (h1["camera_id"], h1["seq"], h1["status"], h1["masked"]) == ("cam0", 1, "masked", True)
    assert (h1["t_capture_mono_ns"], h1["t_capture_wall_ns"], h1["name"]) == (11, 21, "n1")
    assert h1["boxes"] == [[1, 2, 10, 12]]
    assert h1["detections"] == [{"xyxy": [2.0, 3.0, 9.0, 11.0], "class": "face", "score": 0.8, "held": False}]
    assert h1["models"] == [{"name": "yunet", "sha256": SHA}]
    assert h1["timings_ms"]["detect"] == 2.0 and "encode" in h1["timings_ms"]
    np.testing.assert_array_equal(px1, items[0].frame.image)
    assert (h2["status"], h2["masked"], h2["reason"], px2) == ("dropped", False, "deadline", None)
    assert h3["status"] == "masked_whole"
    np.testing.assert_array_equal(px3, items[2].frame.image)
    stats = pub.stats()
    assert (stats["sent"], stats["sent_dropped_records"], stats["dropped_hwm"]) == (2, 1, 0)
    assert stats["bytes"] > 2 * items[0].frame.image.nbytes


def test_ipc_with_jpeg(subscribe, tmp_path):
    endpoint = f"ipc://{tmp_path}/p.ipc"
    with ZmqPublisher(endpoint, encoding="jpeg", jpeg_quality=90, linger_ms=0) as pub:
        assert pub.endpoint == endpoint
        sub = subscribe(pub)
        smooth = np.full((40, 60, 3), (10, 120, 240), np.uint8)
        assert pub.send(masked(5, img=smooth))
        header, pixels = wire.decode(receive(sub))
    assert header["encoding"] == "jpeg" and header["seq"] == 5
    assert pixels.shape == (40, 60, 3)
    assert np.abs(pixels.astype(int) - smooth.astype(int)).max() <= 3


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:0", "tcp://127.0.0.1:*"])
def test_random_port_endpoint_is_the_real_one(address):
    with ZmqPublisher(address, linger_ms=0) as pub:
        host, port = pub.endpoint.rsplit(":", 1)
        assert host == "tcp://127.0.0.1"
        assert port.isdigit() and int(port) > 0


def test_bind_failure_names_the_address(pub):
    with pytest.raises(PublisherBindError, match=pub.endpoint.replace(".", r"\.")):
        ZmqPublisher(pub.endpoint)


def test_an_ipc_address_served_by_another_live_process_is_refused(tmp_path):
    path = tmp_path / "out.sock"
    server = subprocess.Popen([sys.executable, "-c", (
        "import sys, zmq; s = zmq.Context().socket(zmq.XPUB); s.bind(sys.argv[1]); print('up', flush=True); "
        "sys.stdin.read(); s.close(0)"), f"ipc://{path}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "up"
        with pytest.raises(PublisherBindError, match="another live process serves it"):
            ZmqPublisher(f"ipc://{path}", linger_ms=0)
        assert path.exists()  # the running publisher keeps its address
    finally:
        server.communicate("", timeout=10)
    # its socket file, left by a process that is gone, may be taken over
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(tmp_path / "stale.sock"))
    leftover.close()
    with ZmqPublisher(f"ipc://{tmp_path / 'stale.sock'}", linger_ms=0) as pub:
        assert pub.endpoint.endswith("stale.sock")


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:notaport", "carrier-pigeon://coop", "ipc:///nonexistent-dir/x/p.ipc"])
def test_bad_address_raises_clear_error(address):
    with pytest.raises(PublisherBindError) as info:
        ZmqPublisher(address)
    assert address in str(info.value)
    assert isinstance(info.value, OSError)


@pytest.mark.parametrize("kwargs", [{"sndhwm": 0}, {"linger_ms": -1}, {"encoding": "bmp"}, {"jpeg_quality": 200}])
def test_rejects_bad_options(kwargs):
    with pytest.raises(ValueError):
        ZmqPublisher("tcp://127.0.0.1:0", **kwargs)


@pytest.mark.parametrize("bad", [Frame(image(), "cam0", 1, 0, 0), image(), "frame"])
def test_refuses_anything_but_outcomes(pub, bad):
    with pytest.raises(TypeError):
        pub.send(bad)
    assert pub.stats()["sent"] == 0 and pub.stats()["bytes"] == 0


def _small_buffers(sock: zmq.Socket) -> None:
    # Small kernel buffers: the HWM is reached after a few frames instead of megabytes.
    sock.setsockopt(zmq.SNDBUF, 64 * 1024)


def test_slow_subscriber_costs_counted_drops_not_memory(subscribe):
    total = 200
    with ZmqPublisher("tcp://127.0.0.1:0", sndhwm=2, linger_ms=0, socket_options_hook=_small_buffers) as pub:
        slow = subscribe(pub, rcvhwm=1, rcvbuf=64 * 1024)
        big = image(240, 320)
        # NOBLOCK: if a send could block, this loop would hang rather than finish.
        results = [pub.send(masked(i, img=big) if i % 10 else dropped(i)) for i in range(total)]
        stats = pub.stats()

        assert stats["dropped_hwm"] > 0
        assert results.count(False) == stats["dropped_hwm"]
        assert stats["sent"] + stats["sent_dropped_records"] + stats["dropped_hwm"] == total
        delivered = stats["sent"] + stats["sent_dropped_records"]
        assert delivered < total / 2  # the queue stayed bounded: most frames were refused

        # What was accepted arrives whole and valid; what was refused never arrives.
        seqs = [wire.decode(receive(slow))[0]["seq"] for _ in range(delivered)]
        assert seqs == [i for i, ok in enumerate(results) if ok]
        assert not slow.poll(200, zmq.POLLIN)


def test_send_copies_pixels_so_later_changes_cannot_leak(subscribe, pub):
    sub = subscribe(pub)
    img = image(240, 320)  # above pyzmq's zero-copy threshold
    original = img.copy()
    assert pub.send(masked(1, img=img))
    img[:] = 255  # e.g. a source reusing its buffer for the next, unmasked, capture
    _, pixels = wire.decode(receive(sub))
    np.testing.assert_array_equal(pixels, original)


def test_subscriptions_are_drained_and_counted(subscribe, pub):
    subs = [subscribe(pub) for _ in range(3)]
    assert pub.stats()["subscriptions"] == 3
    for sock in subs[:2]:
        sock.close(linger=0)
    for _ in range(250):  # bounded: unsubscriptions arrive asynchronously
        pub.send(dropped())
        if pub.stats()["subscriptions"] == 1:
            break
        pub.wait_for_subscriptions(99, timeout_s=0.02)
    assert pub.stats()["subscriptions"] == 1


def test_wait_for_subscriptions_times_out_without_subscribers(pub):
    assert pub.wait_for_subscriptions(1, timeout_s=0.05) is False


def test_options_hook_runs_before_bind_with_options_set():
    seen = {}

    def hook(sock: zmq.Socket) -> None:
        seen["type"] = sock.getsockopt(zmq.TYPE)
        seen["endpoint"] = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        seen["linger"] = sock.getsockopt(zmq.LINGER)
        seen["sndhwm"] = sock.getsockopt(zmq.SNDHWM)

    with ZmqPublisher("tcp://127.0.0.1:0", sndhwm=3, linger_ms=123, socket_options_hook=hook) as pub:
        assert pub.endpoint
    assert seen == {"type": zmq.XPUB, "endpoint": "", "linger": 123, "sndhwm": 3}


def test_hook_failure_propagates():
    def hook(sock: zmq.Socket) -> None:
        raise RuntimeError("no keys")

    with pytest.raises(RuntimeError, match="no keys"):
        ZmqPublisher("tcp://127.0.0.1:0", socket_options_hook=hook)


def test_close_is_idempotent_and_later_sends_are_counted():
    pub = ZmqPublisher("tcp://127.0.0.1:0", linger_ms=0)
    pub.close()
    pub.close()
    assert pub.send(masked()) is False
    assert pub.stats()["dropped_closed"] == 1


def test_shared_context_is_left_running(ctx):
    pub = ZmqPublisher("tcp://127.0.0.1:0", context=ctx, linger_ms=0)
    pub.close()
    assert not ctx.closed
    ctx.socket(zmq.PUB).close()


def test_concurrent_senders_share_one_publisher(pub):
    def loop(camera: str) -> None:
        for seq in range(50):
            pub.send(masked(seq, camera=camera))

    threads = [threading.Thread(target=loop, args=(f"cam{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert pub.stats()["sent"] == 200


def test_first_drop_for_a_slow_subscriber_is_warned_once(subscribe, caplog):
    with ZmqPublisher("tcp://127.0.0.1:0", sndhwm=2, linger_ms=0, socket_options_hook=_small_buffers) as pub:
        subscribe(pub, rcvhwm=1, rcvbuf=64 * 1024)
        big = image(240, 320)
        with caplog.at_level("WARNING", logger="edge.sinks.zmq_pub"):
            results = [pub.send(masked(i, img=big)) for i in range(200)]
        warnings = [r.getMessage() for r in caplog.records if "not keeping up" in r.getMessage()]
        assert results.count(False) == pub.stats()["dropped_hwm"] > 1
        assert len(warnings) == 1 and pub.endpoint in warnings[0] and "dropped_hwm" in warnings[0]


def test_waiting_for_subscriptions_ends_when_stopped():
    stop = threading.Event()
    stop.set()
    with ZmqPublisher("tcp://127.0.0.1:0", linger_ms=0) as pub:
        # no limit on time: only the stop flag can end this wait, so a hang here is the failure
        assert pub.wait_for_subscriptions(1, float("inf"), stop=stop) is False
        assert pub.stats()["sent"] == 0
