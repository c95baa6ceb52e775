"""SIGTERM ends consumer threads by their stop Event, even while their sockets are stuck.

Issue #29 (mutation A: ``ConsumerThread.stop()`` sets nothing; mutation B: ``_loop`` ignores the
Event): a consumer thread also ends when its viewers leave or its viewer is done, which hides
the Event everywhere those happen. Behind a client that never reads they do not happen: the
session is stuck in ``sendall`` and never releases its viewer, a historical tail waits in
``Dedicated.hold`` for a socket that never drains (it never reaches the check after ``poll``), and a
feed keeps polling for its stuck viewer. Only the Event ends those threads before gunicorn's
graceful timeout kills the worker, so the test watches, from outside, how soon after SIGTERM
the worker lets go of the broker (every consumer closes its connection when its thread ends)
and, under gthread, when the consumer threads leave /proc.

The worker itself does not exit within ``shutdown_grace_s`` here: its session threads stay
stuck in ``sendall`` to the sockets nobody reads until gunicorn's master kills it at
``graceful_timeout`` (``shutdown_grace_s`` + 1). That holds with or without the Event, so the
exit is bounded by that, and the Event by the broker connections. Nor does the log tell the
two apart: ``pool.shutdown`` does not report threads it could not join.
"""
from __future__ import annotations

import json
import signal
import socket
import time

import psutil
import websocket

from kafkatail.testing.probe import comm

from helpers import WsClient, wait_for

POLL_MS = 250
GRACE_S = 6
VALUE = "v" * 200_000
# Consumers end within a poll timeout, then close (kafka-python: its kafka-io thread and its
# broker connections). Generous for a loaded 2-core machine; without the Event they live until
# the worker is killed, GRACE_S + 1 seconds after SIGTERM.
STOP_BOUND_S = POLL_MS / 1000 + 2.5


def never_reads(url: str) -> websocket.WebSocket:
    """A client with a 4 KB receive buffer that never reads (nor answers pings)."""
    ws = websocket.create_connection(url, timeout=10,
                                     sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    WsClient.adopt(ws)  # closed by the suite after the test
    return ws


def broker_connections(worker: psutil.Process, port: int) -> int:
    """The worker's TCP connections to the broker (0 once it has exited)."""
    try:
        return sum(1 for c in worker.net_connections("tcp") if c.raddr and c.raddr.port == port)
    except psutil.NoSuchProcess:
        return 0


def consumer_tasks(worker: psutil.Process) -> list[str]:
    """The worker's OS threads that serve consumers (gthread: kt-tail-*, kt-feed-*, kafka-io-*;
    gevent has none, its threads are greenlets)."""
    try:
        names = [comm(worker.pid, t.id) for t in worker.threads()]
    except psutil.NoSuchProcess:
        return []
    return [n for n in names if n and n.startswith(("kt-tail-", "kt-feed-", "kafka-io-"))]


def stacks(server) -> dict[str, list[str]]:
    rows = json.loads(server.get("/debug/threads"))["threads"]
    return {r["name"]: r["stack"] for r in rows if r["role"] == "consumer"}


def held(server) -> bool:
    """A historical tail waits in ``Dedicated.hold`` for its socket to drain."""
    return any(name.startswith("kt-tail-") and any(s.endswith(" in hold") for s in stack)
               for name, stack in stacks(server).items())


def test_sigterm_ends_feeds_stuck_on_readers_that_never_read(cluster, server_process):
    # Neither the stall detector nor the pings end a tail here, and a feed left with no viewer
    # would linger far longer than the bound.
    server = server_process(shutdown_grace_s=GRACE_S, poll_timeout_ms=POLL_MS, send_timeout_s=60,
                            ping_interval_s=60, feed_linger_s=30)
    worker = server.worker
    broker_port = int(cluster.bootstrap.rsplit(":", 1)[1])
    topic = cluster.create_topic()
    cluster.produce(topic, [(f"k{i}", VALUE) for i in range(40)])  # 8 MB behind
    never_reads(server.ws_url(f"/ws/tail/{topic}?from=earliest"))
    wait_for(lambda: held(server), 30, lambda: stacks(server))
    queued = lambda: server.metrics()["kafkatail_outbox_bytes"]  # noqa: E731
    held_bytes = queued()
    never_reads(server.ws_url(f"/ws/tail/{topic}"))  # the topic's live feed
    wait_for(lambda: server.tails() == 2, 15, server.tails)
    cluster.produce(topic, [(f"n{i}", VALUE) for i in range(40)])  # 8 MB more
    # The feed's viewer is stuck too: its session sends, so what the feed puts stays queued.
    wait_for(lambda: queued() > held_bytes, 30, lambda: (held_bytes, server.metrics()))
    assert held(server), stacks(server)
    assert broker_connections(worker, broker_port) >= 2
    gthread = server_process.worker_class == "gthread"
    if gthread:
        assert len(consumer_tasks(worker)) >= 4, consumer_tasks(worker)

    start = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    waiting = time.monotonic()
    wait_for(
        lambda: broker_connections(worker, broker_port) == 0 and not consumer_tasks(worker),
        STOP_BOUND_S, lambda: f"the worker still has {broker_connections(worker, broker_port)} "
                              f"broker connections and threads {consumer_tasks(worker)}: its "
                              f"consumers did not stop")
    took = time.monotonic() - waiting
    assert worker.is_running(), "the worker exited before the measurement meant anything"
    assert server.proc.wait(GRACE_S + 15) == 0
    exited = time.monotonic() - start
    assert exited < GRACE_S + 1 + 5, f"exit took {exited:.1f}s"
    out = server.output
    assert "did not stop within" not in out and "Traceback" not in out, out[-3000:]
    print(f"{server_process.worker_class}: SIGTERM with 2 tails stuck on readers that never read: "
          f"consumers closed in {took * 1000:.0f} ms (bound {STOP_BOUND_S * 1000:.0f} ms); "
          f"process exited after {exited:.1f}s (graceful_timeout {GRACE_S + 1}s)")
