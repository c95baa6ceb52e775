"""Issue #27 at its scale: 1,000 tails open at once on one gevent worker of ``kafkatail serve``,
then ended five ways, and the server's threads and fds are back exactly at the baseline.

test_server_process.py churns 500 tails in waves of 100 on both workers; here each of two waves
holds 1,000 tails of one client address on one gevent worker at the same time, and the threads
and fds are compared after each with a baseline taken before the first tail. At that count, opening
the clients takes longer than a ping interval, so the clients meant to end some other way answer
the server's pings from this thread (``Pump``, between the other steps) instead of being reaped
as silent; the silent ones are opened last and never read at all. Every wait is a condition with
a deadline; the server is measured from outside (ProcessProbe over the gunicorn process tree).
"""
from __future__ import annotations

import resource
import select
import subprocess
import sys
import time
from collections import Counter
from typing import Any, Callable, Iterator

import pytest
import websocket

from kafkatail.ops.greenpool import NAME as GEVENT_POOL
from kafkatail.testing.probe import ProcessProbe, comm

from helpers import WsClient, unavailable, wait_for

N = 1000                 # tails open at once in each of the two waves: 200 ended each way
PING_S = 3               # a client that never answers a ping is dropped 2 intervals after it opened
# Room for N tails from one address on one worker: gevent keeps a sixteenth of
# worker_connections for plain HTTP (1200 -> 1125 tails at most), and no connect rate limit.
LIMITS = {"max_tails": 1100, "max_tails_per_client": 1100, "max_tails_per_topic": 1100,
          "worker_connections": 1200, "connect_rate_per_client": 0}
FDS_NEEDED = 4 * N       # this process: N client sockets; the server (inherits it): N + its own
# The worker's RSS. A wave of 1,000 tails raises it ~47 MB at its peak (~45 KB a tail) and the
# first such wave leaves ~40 MB of it behind (measured 39.2-40.3 MB: the allocator keeps its
# high-water mark; 5 tails leave 3.4 MB, 100 5.8, 300 13); a second wave at the same peak then
# leaves 0.0-0.9 MB alone, 3.5 MB once in a full CI run. So: the first wave under 64 MB, the
# second under 6 MB, which a leak of an eighth of what a tail holds while open (6 KB a tail)
# would already exceed (8 KB a tail, put in on purpose, grew it 9.1 MB).
RSS_FIRST_BOUND = 64 * 2**20
RSS_BOUND = 6 * 2**20
# Server log lines that mean a tail did not end the way it should have.
PROBLEMS = ("reaped orphaned tail", "did not stop within", "did not end", "Traceback", "ERROR")

# gevent's DNS threadpool lets an idle thread go after 5 s (kafkatail/ops/greenpool.py).
GEVENT_POOL_IDLE_S = 5

# A client process to SIGKILL: opens argv[2] tails of argv[1], reads each one's first frame,
# prints "open", then answers the server's pings (reading every frame) until it is killed.
KILLED_CLIENT = """
import select, sys, websocket
socks = [websocket.create_connection(sys.argv[1], timeout=10) for _ in range(int(sys.argv[2]))]
for s in socks:
    s.recv()
print("open", flush=True)
poll, by_fd = select.poll(), {s.sock.fileno(): s for s in socks}
for fd in by_fd:
    poll.register(fd, select.POLLIN)
while True:
    for fd, _ in poll.poll(1000):
        by_fd[fd].recv_data_frame(control_frame=True)
"""


def gevent_pool_threads(server) -> list[int]:
    return [t.id for t in server.worker.threads() if comm(server.worker.pid, t.id) == GEVENT_POOL]


@pytest.fixture
def fd_room() -> Iterator[None]:
    """A soft RLIMIT_NOFILE with room for every client socket here and every tail in the server
    (started after this, it inherits the limit); the old soft limit again afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < FDS_NEEDED:
        if hard != resource.RLIM_INFINITY and hard < FDS_NEEDED:
            unavailable(f"needs {FDS_NEEDED} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (FDS_NEEDED, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class Pump:
    """Keeps clients alive from this thread: reads whatever frames have arrived for them (which
    answers the server's pings, as a browser would) without blocking, between other steps."""

    def __init__(self) -> None:
        self.poll = select.poll()          # no fd of its own, unlike an epoll selector
        self.clients: dict[int, WsClient] = {}

    def add(self, c: WsClient) -> WsClient:
        fd = c.ws.sock.fileno()
        self.clients[fd] = c
        self.poll.register(fd, select.POLLIN)
        return c

    def discard(self, c: WsClient) -> None:
        fd = c.ws.sock.fileno()
        if self.clients.pop(fd, None) is not None:
            self.poll.unregister(fd)

    def __call__(self) -> None:
        for fd, _ in self.poll.poll(0):
            c = self.clients[fd]
            c.ws.settimeout(5)  # the frame has begun to arrive; the server writes it whole
            opcode, frame = c.ws.recv_data_frame(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_TEXT:
                c._received(frame.data.decode())
            elif opcode == websocket.ABNF.OPCODE_CLOSE:
                raise AssertionError(f"the server closed a tail it should have kept: "
                                     f"{frame.data[:2].hex()} {frame.data[2:]!r}")

    def wait(self, check: Callable[[], Any], timeout: float, what: Any = "condition") -> Any:
        """``wait_for`` that keeps pumping while it polls."""
        return wait_for(lambda: (self(), check())[1], timeout, what, interval=0.01)

    def live(self) -> bool:
        return all(any(f["type"] == "status" and f["status"] == "live" for f in c.frames)
                   for c in self.clients.values())


def churn(server, topic: str, n: int, phases: dict[str, float] | None = None,
          peak: Callable[[], None] | None = None) -> None:
    """Hold n tails open at once, then end them five ways, n/5 each: clean close frame, FIN
    without a close frame, RST, the client process killed, and silent clients (never read, so
    never answer a ping) reaped by the ping timeout. Returns when the server holds none."""
    url = server.ws_url(f"/ws/tail/{topic}")
    k = n // 5
    pump = Pump()
    silent: list[websocket.WebSocket] = []
    killed = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, url, str(k)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    try:
        for i in range(3 * k):
            pump.add(WsClient(url))
            if i % 20 == 19:
                pump()
        out = select.poll()
        out.register(killed.stdout.fileno(), select.POLLIN)
        pump.wait(lambda: out.poll(0), 60, "the killed-client process's tails")
        assert killed.stdout.readline().strip() == "open"
        pump.wait(pump.live, 30, lambda: sum(not any(f.get("status") == "live" for f in c.frames)
                                             for c in pump.clients.values()))
        # Last, and quickly: from here the silent ones have 2 ping intervals to be counted.
        t_silent = time.monotonic()
        for i in range(n - 4 * k):
            silent.append(websocket.create_connection(url, timeout=10))
            if i % 20 == 19:
                pump()
        pump.wait(lambda: server.tails() == n, 2 * PING_S, server.tails)
        t_open = time.monotonic()
        if phases is not None:
            phases["open"] = t_open - t0
            phases["open_silent"] = t_open - t_silent
        if peak is not None:
            peak()
        for i, c in enumerate(list(pump.clients.values())):
            pump.discard(c)                                   # the rest still answer pings
            if i % 20 == 19:
                pump()
            if i % 3 == 0:
                c.ws.send_close()                             # clean close frame: 1000 back
                assert c.closed(timeout=10) == (1000, ""), c.frames[-3:]
                c.ws.shutdown()
            else:
                c.drop(reset=i % 3 == 2)                      # FIN or RST, no close frame
        assert killed.poll() is None, "the killed-client process ended by itself"
        killed.kill()                                         # client process killed
        killed.wait()
        # The silent clients never read: two ping intervals after they opened, they are reaped.
        pump.wait(lambda: server.tails() == 0, 30, server.tails)  # (pump: empty by now)
        if phases is not None:
            phases["end"] = time.monotonic() - t_open
        # What the silent ones were sent, read only now: it ends with the ping timeout's close.
        codes = Counter(ending(s) for s in silent)
        assert codes == {1008: len(silent)}, \
            f"how the silent clients' streams ended (None: cut without a close frame): {codes}"
    finally:
        if killed.poll() is None:
            killed.kill()
            killed.wait()
        killed.stdin.close()
        killed.stdout.close()
        for s in silent:
            s.shutdown()


def ending(ws: websocket.WebSocket) -> int | str | None:
    """The close code at the end of what a client was sent, None if the connection ended without
    a close frame (read as raw frames: no pong, no close frame back to a server that has gone)."""
    ws.settimeout(10)
    try:
        while True:
            frame = ws.recv_frame()
            if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
                return int.from_bytes(frame.data[:2], "big") if len(frame.data) >= 2 else "empty"
    except (websocket.WebSocketConnectionClosedException, ConnectionResetError):
        return None


def settled_exactly(probe: ProcessProbe) -> Any:
    """The server's threads and fds back at the probe's baseline: not just at or below it."""
    result = probe.assert_settled(grace=GEVENT_POOL_IDLE_S + 5)
    assert (result.threads, result.fds) == (result.baseline_threads, result.baseline_fds), \
        result.report()
    return result


@pytest.mark.slow
@pytest.mark.parametrize("server_process", ["gevent"], indirect=True)
def test_churn_1000_concurrent_tails_on_gevent_returns_to_baseline(fd_room, cluster,
                                                                    server_process):
    server = server_process(feed_linger_s=0.5, ping_interval_s=PING_S, **LIMITS)
    topic = cluster.create_topic(partitions=2)
    probe = ProcessProbe(server.proc.pid, include_children=True)
    probe.baseline()   # before any tail: the worker has not yet connected to the broker
    rss0 = server.worker.memory_info().rss
    waves = []
    for wave in range(2):
        phases: dict[str, Any] = {}

        def peak() -> None:
            snap = probe.snapshot()
            phases["threads"] = sum(len(s.tids) for s in snap.values())
            phases["fds"] = sum(len(s.fds) for s in snap.values())
            phases["rss"] = server.worker.memory_info().rss

        churn(server, topic, N, phases, peak)
        wait_for(lambda: server.consumer_threads() == 0, 10, server.consumer_threads)
        # gevent's DNS threads (kafka-python resolves the broker on each connect) idle out in 5 s.
        wait_for(lambda: not gevent_pool_threads(server), GEVENT_POOL_IDLE_S + 10,
                 gevent_pool_threads)
        result = settled_exactly(probe)
        assert (server.tails(), server.consumer_threads()) == (0, 0)
        phases["after"] = server.worker.memory_info().rss
        waves.append(phases)
        print(f"gevent wave {wave + 1}: {N} tails open at once (opened in {phases['open']:.1f}s, "
              f"the {N // 5} silent in {phases['open_silent']:.2f}s), all ended in "
              f"{phases['end']:.1f}s; at the peak {phases['threads']} threads, "
              f"{phases['fds']} fds, RSS {(phases['rss'] - rss0) / 2**20:+.1f} MB; "
              f"after: {result.threads} threads, "
              f"{result.fds} fds (baseline {result.baseline_threads}/{result.baseline_fds}), "
              f"RSS {(phases['after'] - rss0) / 2**20:+.1f} MB")
    # The first wave's RSS stays (allocator high-water, structures grown to 1,000 entries); the
    # second must give back what it took.
    first = waves[0]["after"] - rss0
    second = waves[1]["after"] - waves[0]["after"]
    assert first < RSS_FIRST_BOUND, f"RSS grew {first / 2**20:.1f} MB over the first {N} tails"
    assert second < RSS_BOUND, f"RSS grew {second / 2**20:.1f} MB over the second {N} tails"
    # Every tail was ended by its own session: none left for the reaper, no thread stuck.
    m = server.metrics()
    assert (m["kafkatail_tails_started_total"], m["kafkatail_tails_reaped_total"],
            m["kafkatail_threads_stuck"]) == (2 * N, 0, 0), \
        {k: v for k, v in m.items() if "tails" in k or "stuck" in k}
    problems = [line for line in server.lines if any(w in line for w in PROBLEMS)]
    assert not problems, "".join(problems[:20])
