"""The shared WebSocket framing and the non-blocking writer, checked against wsproto's client."""
import json
import socket
import threading

import gevent.socket
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage
from wsproto.extensions import PerMessageDeflate

from kafkatail.web.wire import Wire, negotiated_deflate, text_frame


def handshake(deflate: bool, **offer):
    """A client and a server wsproto connection, past the opening handshake."""
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    exts = [PerMessageDeflate(**offer)] if deflate else []
    server.receive_data(client.send(Request(host="x", target="/", extensions=exts)))
    assert isinstance(next(server.events()), Request)
    client.receive_data(server.send(AcceptConnection(
        extensions=[PerMessageDeflate()] if deflate else [])))
    assert isinstance(next(client.events()), AcceptConnection)
    return client, server


def texts(client, data: bytes) -> list[str]:
    client.receive_data(data)
    out, parts = [], []
    for event in client.events():
        assert isinstance(event, TextMessage), event
        parts.append(event.data)
        if event.message_finished:
            out.append("".join(parts))
            parts = []
    return out


def doc(n: int) -> str:
    """JSON of about n characters, repetitive like a batch of records, with non-ASCII text."""
    rec = {"offset": 0, "value": "grüße ✓ " * 4}
    return json.dumps([dict(rec, offset=i) for i in range(n // 60 + 1)])


@pytest.mark.parametrize("deflate", [False, True])
@pytest.mark.parametrize("size", [10, 125, 126, 4000, 65535, 70000, 300000])
def test_text_frame_is_one_whole_message(deflate, size):
    client, server = handshake(deflate)
    ext = negotiated_deflate(server)
    assert (ext is not None) == deflate
    text = doc(size)
    frame = text_frame(text, ext.server_max_window_bits if ext else None)
    assert texts(client, frame) == [text]
    if deflate and size > 1000:
        assert len(frame) * 4 < len(text.encode())


def test_negotiated_window_is_used():
    client, server = handshake(True, server_max_window_bits=10)
    ext = negotiated_deflate(server)
    assert ext.server_max_window_bits == 10
    text = doc(50000)
    assert texts(client, text_frame(text, 10)) == [text]


def test_wsprotos_own_frames_interleave_with_shared_ones():
    """wsproto's compressor must not reach back into messages it did not write."""
    client, server = handshake(True)
    a, b = socket.socketpair()
    with a, b:
        wire = Wire(a, negotiated_deflate(server))
        assert wire.key == "deflate-15"
        status = json.dumps({"type": "status", "state": "live", "pad": "x" * 200})
        ours = [doc(3000), doc(500)]
        wire.send(server.send(TextMessage(status)))
        assert wire.try_send(wire.frame(ours[0])) is True
        wire.send(server.send(TextMessage(status)))
        assert wire.try_send(wire.frame(ours[1])) is True
        wire.send(server.send(TextMessage(status)))
        data = recv_exactly(b, sum_pending(b))
        assert texts(client, data) == [status, ours[0], status, ours[1], status]


def sum_pending(sock) -> int:
    """All bytes already written to the other end (a socketpair delivers them at once)."""
    sock.setblocking(False)
    n = len(sock.recv(1 << 22, socket.MSG_PEEK))
    sock.setblocking(True)
    return n


def recv_exactly(sock, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        assert chunk
        buf += chunk
    return bytes(buf)


def small_pair(factory=socket.socketpair):
    a, b = factory()
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return a, b


def start_reader(sock, n, green):
    """Read n bytes on the side: a greenlet for a gevent socket (its hub is per thread)."""
    got = bytearray()
    work = lambda: got.extend(recv_exactly(sock, n))  # noqa: E731
    if green:
        g = gevent.spawn(work)
        return got, lambda: g.join(10) or g.dead
    t = threading.Thread(target=work, name="test-wire-reader")
    t.start()
    return got, lambda: t.join(10) or not t.is_alive()


@pytest.fixture(params=[False, True], ids=["std", "gevent"])
def green(request):
    yield request.param
    if request.param:
        # This thread's hub was made for this test: its loop's fds go with it.
        gevent.get_hub().destroy(destroy_loop=True)


def test_a_full_socket_keeps_the_rest_and_the_order(green):
    a, b = small_pair(gevent.socket.socketpair if green else socket.socketpair)
    with a, b:
        wire = Wire(a, None)
        big = bytes(range(256)) * 4096  # 1 MiB: more than the socket can take at once
        assert wire.try_send(big) is None and wire._pending
        assert wire.try_send(b"never") is False  # behind the remainder: the caller queues it
        got, finished = start_reader(b, len(big) + 4, green)
        try:
            wire.flush()
            assert not wire._pending
            wire.send(b"tail")
        finally:
            assert finished()
        assert bytes(got) == big + b"tail"


@pytest.mark.parametrize("wrapped", [False, True], ids=["socket", "head-first"])
def test_the_gevent_workers_socket_is_written_without_blocking(green, wrapped):
    """The gevent worker hands the socket on behind ``HeadFirst`` (the request head it read
    first); written from outside all the same, or pings and a feed's writes would wait."""
    from kafkatail.workers.ggevent import HeadFirst

    a, b = small_pair(gevent.socket.socketpair if green else socket.socketpair)
    with a, b:
        wire = Wire(HeadFirst(a, b"") if wrapped else a, None)
        assert wire.nonblocking
        assert wire.try_send(b"x") is True and b.recv(1) == b"x"
        assert wire.try_send(bytes(1 << 20)) is None  # more than it takes at once: no wait


def test_nothing_is_written_when_the_socket_is_full_or_closed():
    a, b = small_pair()
    with b:
        wire = Wire(a, None)
        while wire.try_send(b"x" * 65536) is True:
            pass
        assert wire._pending
        assert wire.try_send(b"y") is False
        wire.close()
        assert wire.try_send(b"z") is False


def test_a_socket_with_a_timeout_is_never_written_from_outside():
    """MSG_DONTWAIT would still wait out a Python timeout: such sockets always queue."""
    a, b = socket.socketpair()
    with a, b:
        a.settimeout(5.0)
        wire = Wire(a, None)
        assert wire.try_send(b"x") is False
        wire.send(b"x")
        assert b.recv(1) == b"x"


def test_a_busy_writer_is_not_waited_for():
    a, b = socket.socketpair()
    with a, b:
        wire = Wire(a, None)
        with wire._lock:
            assert wire.try_send(b"x") is False
        assert wire.try_send(b"x") is True
