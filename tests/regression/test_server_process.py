"""Thread-count regression and faults against ``kafkatail serve`` under each worker class.

Every scenario measures the server from outside (psutil, /proc) with the thread guard's
ProcessProbe, as an operator would, against the real broker.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import websocket

from kafkatail.ops.greenpool import NAME as GEVENT_POOL
from kafkatail.testing.probe import ProcessProbe, comm

from helpers import KILLED_CLIENT, wait_for
from helpers import WsClient


# gevent's DNS threadpool lets an idle thread go after 5 s (kafkatail/ops/greenpool.py).
GEVENT_POOL_IDLE_S = 5


def gevent_pool_threads(server) -> list[int]:
    return [t.id for t in server.worker.threads() if comm(server.worker.pid, t.id) == GEVENT_POOL]


def churn_wave(server, topic: str, n: int) -> None:
    """Open n tails and end them five ways, 1/5 each; return when the server holds none."""
    k = n // 5
    killed = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT,
                               server.ws_url(f"/ws/tail/{topic}"), str(k)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    clients = [WsClient(server.ws_url(f"/ws/tail/{topic}")) for _ in range(3 * k)]
    silent = [websocket.create_connection(server.ws_url(f"/ws/tail/{topic}"), timeout=10)
              for _ in range(n - 4 * k)]
    for c in clients:
        c.status("live")
    assert killed.stdout.readline().strip() == "open"
    wait_for(lambda: server.tails() == n, 30, server.tails)
    for i, c in enumerate(clients):
        if i % 3 == 0:
            c.close()                                     # clean close frame
        else:
            c.drop(reset=i % 3 == 2)                      # FIN or RST, no close frame
    killed.kill()                                         # client process killed
    killed.wait()
    killed.stdin.close()
    killed.stdout.close()
    # The silent clients never read, so never answer a ping: two ping intervals reap them.
    wait_for(lambda: server.tails() == 0, 30, server.tails)
    for s in silent:
        s.sock.close()


@pytest.mark.slow
def test_churn_500_tails_five_ways_returns_to_baseline(cluster, server_process):
    server = server_process(feed_linger_s=0.5)
    topic = cluster.create_topic(partitions=2)
    churn_wave(server, topic, 100)   # warm-up: gthread's pool keeps its threads at the peak
    wait_for(lambda: server.consumer_threads() == 0, 10, server.consumer_threads)
    worker = server.worker
    names = {t.id: comm(worker.pid, t.id) for t in worker.threads()}
    assert not [n for tid, n in names.items() if tid != worker.pid and n == "python"], (worker.pid, sorted(names.items()))
    # A baseline holding a DNS thread about to idle out would make "exactly" unreachable.
    wait_for(lambda: not gevent_pool_threads(server), GEVENT_POOL_IDLE_S + 10, gevent_pool_threads)
    probe = ProcessProbe(server.proc.pid, include_children=True)
    probe.baseline()
    rss0 = server.worker.memory_info().rss
    for _ in range(5):
        churn_wave(server, topic, 100)
    result = probe.assert_settled(grace=GEVENT_POOL_IDLE_S + 5)
    # Settled means "at or below"; the issue asks for exactly the baseline, and an empty pool.
    assert (result.threads, result.fds) == (result.baseline_threads, result.baseline_fds), result.report()
    assert (server.tails(), server.consumer_threads()) == (0, 0)
    rss = server.worker.memory_info().rss - rss0
    assert rss < 10 * 2**20, f"RSS grew {rss / 2**20:.1f} MB over 500 tails"
    print(f"{server_process.worker_class}: 500 tails churned; {result.threads} threads, "
          f"{result.fds} fds (baseline {result.baseline_threads}/{result.baseline_fds}); "
          f"RSS {rss / 2**20:+.1f} MB")


@pytest.mark.slow
def test_idle_tails_cost_no_cpu(cluster, server_process):
    server = server_process(threads=256, ping_interval_s=20, max_tails_per_client=1000)
    topic = cluster.create_topic()
    clients = [WsClient(server.ws_url(f"/ws/tail/{topic}")) for _ in range(200)]
    for c in clients:
        c.status("live")
    wait_for(lambda: server.tails() == 200, 30, server.tails)
    cpu0, t0 = server.cpu_seconds(), time.monotonic()
    deadline = t0 + 30
    while time.monotonic() < deadline:       # the idle period itself is what is measured
        time.sleep(1)
    pct = 100 * (server.cpu_seconds() - cpu0) / (time.monotonic() - t0)
    assert pct < 5, f"{pct:.1f}% of a core with 200 idle tails"
    print(f"{server_process.worker_class}: 200 idle tails for 30 s: {pct:.2f}% of a core")
    for c in clients:
        c.close()


def test_sigterm_with_100_tails_closes_1001_and_exits_0(cluster, server_process):
    server = server_process(shutdown_grace_s=10)
    topic = cluster.create_topic()
    clients = [WsClient(server.ws_url(f"/ws/tail/{topic}")) for _ in range(100)]
    for c in clients:
        c.status("live")
    children = server.worker.parent().children(recursive=True)
    t0 = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    for c in clients:
        assert c.closed(timeout=15) == (1001, "server shutting down")
    assert server.proc.wait(15) == 0
    took = time.monotonic() - t0
    assert took < 10, f"exit took {took:.1f}s, grace 10 s"
    assert not [p for p in children if p.is_running() and p.status() != "zombie"]
    print(f"{server_process.worker_class}: SIGTERM, 100 tails: all 1001, exit 0 in {took:.2f}s")


@pytest.mark.slow
def test_broker_outage_with_50_tails(server_process):
    from kafkatail.broker import EmbeddedBroker
    from kafkatail.testing.kafka import Cluster

    broker = EmbeddedBroker().start()
    try:
        cl = Cluster(broker.bootstrap, broker)
        topic = cl.create_topic()
        # Pings far apart: 50 clients read one after another here, so most sit unread a while.
        server = server_process(bootstrap_servers_override=broker.bootstrap, ping_interval_s=120)
        warm = [WsClient(server.ws_url(f"/ws/tail/{topic}")) for _ in range(55)]
        for c in warm:     # gthread's pool keeps its threads at the peak: reach it first
            c.status("live")
            c.close()
        wait_for(lambda: server.tails() == 0, 20, server.tails)
        clients = [WsClient(server.ws_url(f"/ws/tail/{topic}")) for _ in range(50)]
        for c in clients:
            c.status("live")
        probe = ProcessProbe(server.proc.pid, include_children=True)
        probe.baseline()
        broker.stop()
        for c in clients:
            c.status("broker-unavailable", timeout=30)
        cpu0, t0 = server.cpu_seconds(), time.monotonic()
        late = [WsClient(server.ws_url(f"/ws/tail/{topic}")) for _ in range(5)]
        for c in late:                                   # new tails fail cleanly
            assert c.closed(timeout=30)[0] == 1013
            c.close()
        while time.monotonic() - t0 < 20:               # the outage itself is what is measured
            time.sleep(1)
        pct = 100 * (server.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        grown = probe.settle(grace=5)
        broker = EmbeddedBroker(port=broker.port).start()  # same address, empty (memory storage)
        Cluster(broker.bootstrap, broker).create_topic(topic)
        for c in clients:
            c.status("reconnected", timeout=60)
        print(f"{server_process.worker_class}: 20 s outage, 50 tails: {pct:.1f}% of a core; "
              f"threads {grown.threads}/{grown.baseline_threads}, fds {grown.fds}/{grown.baseline_fds}")
        assert grown.ok, grown.report()
        assert pct < 10, f"{pct:.1f}% of a core during a 20 s outage with 50 tails"
    finally:
        broker.stop()
