"""Slowloris against ``kafkatail serve`` reached directly, under gthread and gevent (issue #28).

140 connections send a request line and then one header every 2 s, and never finish; a closed
one is opened again at the next tick, as an attacker's tool does. Meanwhile ``/healthz`` must
answer in under 2 s every time it is asked, and a WebSocket tail must open.

The server has fewer request slots than there are slow connections (gthread: 32 threads; gevent:
64 worker_connections), so without kafkatail's workers (kafkatail/workers/) the slow heads hold
every slot. The attacker connects from 127.0.0.2, the probes from 127.0.0.1: a per-address cap
on unfinished heads (``header_conns_per_client``) is part of the defence.
"""
from __future__ import annotations

import selectors
import socket
import statistics
import threading
import time
import urllib.request

from helpers import WsClient

SLOW = 140
TICK_S = 2.0
ATTACK_S = 16.0          # longer than header_timeout_s (5 s by default), three times over
HEALTH_BUDGET_S = 2.0
ATTACKER = "127.0.0.2"   # all of 127/8 is loopback on Linux


class Slowloris:
    """``n`` connections from ``source`` that each send a request line, then one header per
    ``tick``; a connection the server closed (or answered) is counted and opened again at the
    next tick. One named thread; ``stop()`` ends it and closes every socket."""

    def __init__(self, host: str, port: int, n: int, source: str, tick: float) -> None:
        self.addr, self.n, self.source, self.tick = (host, port), n, source, tick
        self.sel = selectors.DefaultSelector()
        self.socks: set[socket.socket] = set()
        self.opened = 0
        self.answers: dict[str, int] = {}   # status line (or "closed") -> count
        self.max_open = 0
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kt-test-slowloris")

    def start(self) -> "Slowloris":
        self._thread.start()
        return self

    def wait_opened(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.opened < n:
            assert time.monotonic() < deadline, f"{self.opened} of {n} opened in {timeout}s"
            self._stop.wait(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "slowloris thread did not stop"
        if self._error is not None:
            raise self._error

    def _open(self) -> None:
        s = socket.socket()
        try:
            s.bind((self.source, 0))
            s.settimeout(2)
            s.connect(self.addr)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: slow\r\nX-0: 0\r\n")
            s.setblocking(False)
        except OSError:
            s.close()
            self.answers["connect failed"] = self.answers.get("connect failed", 0) + 1
            return
        self.opened += 1
        self.socks.add(s)
        self.sel.register(s, selectors.EVENT_READ)

    def _drop(self, s: socket.socket, what: str) -> None:
        self.answers[what] = self.answers.get(what, 0) + 1
        self.sel.unregister(s)
        self.socks.discard(s)
        s.close()

    def _run(self) -> None:
        try:
            k = 0
            while not self._stop.is_set():
                while len(self.socks) < self.n and not self._stop.is_set():
                    self._open()
                self.max_open = max(self.max_open, len(self.socks))
                k += 1
                for s in list(self.socks):
                    try:
                        s.send(f"X-{k}: {k}\r\n".encode())
                    except OSError:
                        self._drop(s, "closed")
                # Sleep one tick, noting what the server answers or closes meanwhile.
                deadline = time.monotonic() + self.tick
                while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
                    for key, _ in self.sel.select(min(left, 0.5)):
                        s = key.fileobj
                        try:
                            data = s.recv(4096)
                        except OSError:
                            data = b""
                        self._drop(s, data.split(b"\r\n", 1)[0].decode() if data else "closed")
        except BaseException as exc:  # reported by stop()
            self._error = exc
        finally:
            for s in list(self.socks):
                self.sel.unregister(s)
                s.close()
            self.socks.clear()
            self.sel.close()


def health_latency(server) -> float:
    t0 = time.monotonic()
    with urllib.request.urlopen(server.url("/healthz"), timeout=HEALTH_BUDGET_S + 3) as resp:
        assert resp.status == 200
        resp.read()
    return time.monotonic() - t0


def test_slowloris_leaves_healthz_and_tails_served(cluster, server_process):
    worker = server_process.worker_class
    size = {"threads": 32} if worker == "gthread" else {"worker_connections": 64}
    server = server_process(**size)
    topic = cluster.create_topic()
    cpu0 = server.cpu_seconds()
    attack = Slowloris(server.host, server.port, SLOW, ATTACKER, TICK_S).start()
    latencies: list[float] = []
    failures: list[str] = []
    tail_opened = False
    tail_failed = ""
    try:
        # Let the first wave of slow heads take the slots before asking.
        started = time.monotonic()
        attack.wait_opened(SLOW, 30)
        end = time.monotonic() + ATTACK_S
        while time.monotonic() < end:
            try:
                latencies.append(health_latency(server))
            except OSError as exc:
                failures.append(f"{time.monotonic() - started:.1f}s: {exc!r}")
                latencies.append(float("inf"))
            if not tail_opened and time.monotonic() - started > 6:
                # Past the first header deadline: the tail opens while the attack goes on.
                tail_opened = True
                try:
                    c = WsClient(server.ws_url(f"/ws/tail/{topic}"), timeout=HEALTH_BUDGET_S + 3)
                    c.status("live", timeout=HEALTH_BUDGET_S + 3)
                    c.close()
                except Exception as exc:
                    tail_failed = repr(exc)
            time.sleep(0.25)  # pacing between probes, not a synchronisation
        rss = server.worker.memory_info().rss
    finally:
        attack.stop()
    cpu = server.cpu_seconds() - cpu0
    finite = [x for x in latencies if x != float("inf")]
    print(f"\n{worker}: {SLOW} slow connections for {ATTACK_S:.0f}s ({attack.opened} opened, "
          f"answers {attack.answers}); /healthz x{len(latencies)}: median "
          f"{statistics.median(latencies) * 1000:.0f} ms, max "
          f"{(max(finite) if finite else float('nan')) * 1000:.0f} ms, {len(failures)} failed; "
          f"worker CPU {cpu:.2f}s, RSS {rss / 2**20:.0f} MiB; tail: {tail_failed or 'opened'}")
    assert not failures, f"/healthz failed under the slowloris: {failures[:5]}"
    slow = [round(x, 2) for x in latencies if x >= HEALTH_BUDGET_S]
    assert not slow, f"/healthz over {HEALTH_BUDGET_S}s: {slow}"
    assert tail_opened and not tail_failed, f"no tail under the slowloris: {tail_failed}"
    # The attack was real: its connections were open (and kept being reopened) throughout.
    assert attack.opened >= SLOW
    # Heads past header_timeout_s were answered 408 (some answers are lost to a reset: the
    # attacker keeps sending while the server closes).
    assert attack.answers.get("HTTP/1.1 408 Request Timeout"), attack.answers
