"""``kafkatail tail``: kcat-style output through the service, and resume across a server restart."""
from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import sys
import threading
from typing import Iterator

import pytest

from kafkatail.client import Formatter

from helpers import wait_for

KT = [sys.executable, "-m", "kafkatail", "tail"]


def run(server, *args, timeout=30):
    url = f"ws://127.0.0.1:{server.port}"
    return subprocess.run(KT + list(args) + ["--url", url], capture_output=True, text=True,
                          timeout=timeout)


def test_format_tokens():
    rec = {"partition": 2, "offset": 7, "timestamp": 1000, "key": "k", "value": {"a": 1},
           "headers": [["h", "v"], ["n", None]], "size": 12}
    out = Formatter("t", "%t|%p|%o|%T|%k|%K|%s|%h|%S|%%\n")(rec)
    assert out == 't|2|7|1000|k|1|{"a": 1}|h=v,n=|12|%\n'
    assert json.loads(Formatter("t", None)(rec))["topic"] == "t"


def test_tail_prints_kcat_style_and_json(cluster, server):
    t = cluster.create_topic(partitions=2)
    cluster.produce(t, [(f"k{i}", f"v{i}", i % 2) for i in range(6)])
    r = run(server, t, "-o", "earliest", "-c", "6", "-f", "%p:%o %k=%s\\n")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == sorted(f"{i % 2}:{i // 2} k{i}=v{i}" for i in range(6))
    r = run(server, t, "-o", "earliest", "-c", "3", "--json", "-p", "1", "--filter", "V")
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [(x["partition"], x["value"]) for x in lines] == [(1, "v1"), (1, "v3"), (1, "v5")]


def test_tail_reports_final_errors(server):
    r = run(server, "no.such.topic")
    assert r.returncode == 1 and "4404 unknown topic" in r.stderr


def test_tail_resumes_across_a_server_restart_without_gap_or_duplicate(cluster, make_server_):
    t = cluster.create_topic(partitions=2)
    first = make_server_()
    port = first.port
    n = 400
    proc = subprocess.Popen(KT + [t, "--url", f"ws://127.0.0.1:{port}", "-o", "earliest",
                                  "-c", str(n), "-f", "%p:%o\\n"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), name="kt-test-reader")
    reader.start()
    try:
        cluster.produce(t, [(None, f"a{i}", i % 2) for i in range(200)])
        wait_for(lambda: len(lines) >= 200, 20, lambda: len(lines))
        first.stop()                       # clients get 1001 and start reconnecting
        cluster.produce(t, [(None, f"b{i}", i % 2) for i in range(200)])
        make_server_(port=port)            # same address, as after a restart
        assert proc.wait(30) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(10)
    seen = [tuple(map(int, x.split(":"))) for x in lines]
    assert len(seen) == n and len(set(seen)) == n
    for p in (0, 1):
        assert sorted(o for q, o in seen if q == p) == list(range(200))
    assert "reconnected" in proc.stderr.read()


def test_tail_exits_cleanly_on_ctrl_c(cluster, server):
    t = cluster.create_topic()
    proc = subprocess.Popen(KT + [t, "--url", f"ws://127.0.0.1:{server.port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: len(server.pool) == 1, 10, lambda: proc.poll())
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 0
    wait_for(lambda: len(server.pool) == 0, 5, lambda: server.pool.tails())


class Peer:
    """A TCP listener that answers a WebSocket upgrade wrongly, one way per ``mode``: silent
    (a Kafka port, say), close, reset, garbage (not HTTP), or an HTTP status line such as
    ``404``."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)  # the accept loop checks its stop event this often
        self.port = self.listener.getsockname()[1]
        self.requests = 0
        self.held: list[socket.socket] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="kt-test-peer")
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            if self.mode not in ("close", "reset") and conn.recv(4096).startswith(b"GET /ws/tail/"):
                self.requests += 1
            if self.mode == "garbage":
                conn.sendall(b"\x00\x00\x00\x10kafka-ish bytes\r\n\r\n")
            elif self.mode.isdigit():
                conn.sendall(f"HTTP/1.1 {self.mode} Nope\r\nContent-Length: 0\r\n"
                             "Connection: close\r\n\r\n".encode())
            if self.mode == "silent":
                self.held.append(conn)
            else:
                if self.mode == "reset":  # linger 0: close sends RST, not FIN
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        for conn in self.held:
            conn.close()
        self.listener.close()


@pytest.fixture
def peer(request) -> Iterator[Peer]:
    p = Peer(request.param)
    yield p
    p.stop()


class TailProc:
    """``kafkatail tail`` in a subprocess, its stderr lines collected as they come."""

    def __init__(self, port: int, *args: str) -> None:
        self.proc = subprocess.Popen(KT + ["t", "--url", f"ws://127.0.0.1:{port}", *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stderr),
                                       name="kt-test-reader")
        self.reader.start()

    def end(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.reader.join(10)


@pytest.mark.parametrize("peer", ["404", "403", "400"], indirect=True)
def test_tail_ends_at_once_when_the_upgrade_is_refused(peer):
    t = TailProc(peer.port)
    try:
        assert t.proc.wait(10) == 1
        t.reader.join(10)
        assert f"refused the WebSocket upgrade with HTTP {peer.mode}" in "".join(t.lines)
        assert peer.requests == 1, "a refusal that cannot change must not be retried"
    finally:
        t.end()


@pytest.mark.parametrize("peer, says", [
    ("503", "HTTP 503 from the server"), ("429", "HTTP 429 from the server"),
    ("close", "closed the connection during the handshake"),
    ("reset", "closed the connection during the handshake"),
    ("garbage", "did not answer in HTTP"),
    ("silent", "no WebSocket handshake from 127.0.0.1:{port} within 0.3 s"),
], indirect=["peer"])
def test_tail_retries_a_handshake_that_can_still_succeed(peer, says):
    """Every failed try is a ``% retry`` line with the reason, never a hang or a traceback."""
    says = says.format(port=peer.port)
    t = TailProc(peer.port, "--timeout", "0.3")
    try:
        wait_for(lambda: sum(says in x for x in t.lines) >= 2, 15, lambda: t.lines)
        assert all(x.startswith("% retry ") for x in t.lines), t.lines
        t.proc.send_signal(signal.SIGTERM)
        assert t.proc.wait(5) == 0
    finally:
        t.end()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("peer", ["silent"], indirect=True)
def test_a_signal_ends_a_tail_stuck_in_its_handshake(peer, sig):
    """A server that never answers held the handshake, and the signal, for good before the
    handshake had a deadline; the signal now shuts the socket being connected."""
    t = TailProc(peer.port)
    try:
        wait_for(lambda: peer.requests == 1, 10, lambda: t.lines)
        t.proc.send_signal(sig)
        assert t.proc.wait(3) == 0
        t.reader.join(10)
        assert t.lines == []
    finally:
        t.end()
