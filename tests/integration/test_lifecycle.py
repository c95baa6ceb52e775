"""Every way a tail can end leaves nothing behind: threads, fds and pool entries come back."""
from __future__ import annotations

import gc
import os
import selectors
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from kafkatail.broker import EmbeddedBroker, free_port
from kafkatail.config import Config
from kafkatail.ops.threads import REGISTRY
from kafkatail.tail.backend import BrokerUnavailable, open_consumer

from helpers import KILLED_CLIENT, WsClient, wait_for

PROC = psutil.Process()


def counts() -> tuple[int, int]:
    return PROC.num_threads(), PROC.num_fds()


def tail_threads() -> list[threading.Thread]:
    """Threads that serve tails, by the registry's word (not guessed from names)."""
    return [t for t in threading.enumerate()
            if REGISTRY.info(t).role in ("consumer", "kafka-io", "websocket")]


def thread_names() -> list[str]:
    return sorted(t.name for t in threading.enumerate())


def leftovers() -> dict:
    """What a failed baseline comparison prints: the counts, thread names and fd targets."""
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    selectors_open = [
        {"map": [repr(k.fileobj)[:80] for k in o.get_map().values()],
         "referrers": [type(r).__name__ for r in gc.get_referrers(o)][:6]}
        for o in gc.get_objects()
        # type(), not isinstance: a dead weakproxy among the objects raises on isinstance.
        if type(o) is selectors.EpollSelector and not o._selector.closed]
    return {"counts": counts(), "threads": thread_names(), "fds": dict(sorted(fds.items())),
            "epoll selectors": selectors_open}


def open_tails(server, topic, n, query="") -> list[WsClient]:
    clients = [WsClient(server.ws_url(f"/ws/tail/{topic}?{query}")) for _ in range(n)]
    for c in clients:
        c.status("live")
    return clients


def warm_baseline(server, topic):
    """Open and close one tail, so lazily created objects are part of the baseline."""
    c = open_tails(server, topic, 1)[0]
    c.close()
    wait_for(lambda: len(server.pool) == 0, 5, lambda: server.pool.tails())
    wait_for(lambda: not tail_threads(), 5, thread_names)
    return counts()


def test_failed_construct_leaves_no_io_thread():
    """kafka-python 3 starts kafka-io before bootstrapping; the broker is down here."""
    cfg = Config(bootstrap_servers=f"127.0.0.1:{free_port()}", request_timeout_ms=500)
    gc.collect()  # earlier tests' garbage must not close fds during this measurement
    before = counts()
    with pytest.raises(BrokerUnavailable):
        open_consumer(cfg, "kt-doomed")
    assert not [t for t in threading.enumerate() if "kt-doomed" in t.name]
    wait_for(lambda: counts() <= before, 2, lambda: (before, leftovers()))


def test_thread_names_visible_to_the_os(cluster, make_server_):
    server = make_server_(status_interval_s=30)  # no handover to the feed during the test
    t = cluster.create_topic()
    live, old = open_tails(server, t, 1)[0], open_tails(server, t, 1, "from=earliest")[0]
    feed, own = sorted(server.pool.tails(), key=lambda v: v.tail_id)
    comms = {}
    for task in PROC.threads():
        try:
            with open(f"/proc/self/task/{task.id}/comm") as fh:
                comms[task.id] = fh.read().strip()
        except OSError:
            pass
    assert comms[feed.native_id].startswith("kt-feed-")
    assert comms[own.native_id].startswith("kt-tail-")
    assert sum(v.startswith("kafka-io-") for v in comms.values()) == 2, comms
    assert sum(v.startswith("kt-ws-") for v in comms.values()) == 2, comms
    live.close()
    old.close()


@pytest.mark.parametrize("mode", [{"feed_linger_s": 0}, {"share_live_feeds": False}],
                         ids=["feed", "dedicated"])
@pytest.mark.parametrize("how", ["clean", "abrupt"])
def test_stop_latency_within_poll_timeout(cluster, make_server_, how, mode):
    server = make_server_(**mode)
    t = cluster.create_topic()
    c = open_tails(server, t, 1)[0]
    [thread] = server.pool.threads()
    io = [x for x in threading.enumerate() if x.name == "kafka-io-" + thread.client_id]
    assert io
    start = time.monotonic()
    if how == "clean":
        c.close()
    else:
        c.ws.sock.close()
    thread.join(5)
    took = time.monotonic() - start
    bound = server.config.poll_timeout_ms / 1000 + 0.2
    assert not thread.is_alive() and not io[0].is_alive()
    assert took <= bound, f"stop took {took * 1000:.0f} ms, bound {bound * 1000:.0f} ms"
    wait_for(lambda: len(server.pool) == 0, 2, lambda: server.pool.tails())


@pytest.mark.parametrize("shared", [True, False], ids=["feed", "dedicated"])
def test_100_tails_closed_every_way_return_to_baseline(cluster, make_server_, shared):
    # Nothing reads these sockets while the 100 open: with the suite's 5 s pings, a slow start
    # (100 consumers on a broker holding the whole run's topics) had them dropped for silence.
    server = make_server_(max_tails_per_client=1000, share_live_feeds=shared, ping_interval_s=120)
    topic = cluster.create_topic(partitions=2)
    base = warm_baseline(server, topic)
    killed = subprocess.Popen(
        [sys.executable, "-c", KILLED_CLIENT, server.ws_url(f"/ws/tail/{topic}"), "25"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        clients = open_tails(server, topic, 75)
        assert killed.stdout.readline().strip() == "open"
        wait_for(lambda: len(server.pool) == 100, 20, lambda: len(server.pool))
        peak = counts()
        cluster.produce(topic, [(None, f"v{i}", i % 2) for i in range(50)])
        for i, c in enumerate(clients):
            if i % 3 == 0:
                c.close()
            else:
                c.drop(reset=i % 3 == 2)
        os.kill(killed.pid, signal.SIGKILL)
        start = time.monotonic()
        killed.wait()
        killed.stdin.close()
        killed.stdout.close()
        wait_for(lambda: len(server.pool) == 0, 10, lambda: len(server.pool))
        wait_for(lambda: counts() <= base, 10, lambda: (base, leftovers()))
        took = time.monotonic() - start
    finally:
        killed.kill()
        killed.wait()
    assert server.pool.stuck == []
    server.pool.threads()  # forgets threads that ended by themselves
    # One thread for the warm-up tail, then one feed, or one thread per tail.
    assert server.pool.threads_joined == server.pool.threads_started == (2 if shared else 101)
    print(f"100 tails: peak threads/fds {peak}, back to {base} in {took * 1000:.0f} ms")


def test_100_tails_with_the_broker_down_leave_nothing(make_server_):
    broker = EmbeddedBroker().start()
    from kafkatail.testing.kafka import Cluster
    topic = Cluster(broker.bootstrap).create_topic()
    broker.stop()
    server = make_server_(bootstrap_servers=broker.bootstrap, request_timeout_ms=1000,
                          max_tails_per_client=1000)
    warm = WsClient(server.ws_url(f"/ws/tail/{topic}"))
    assert warm.closed(timeout=30)[0] == 1013
    warm.close()
    wait_for(lambda: len(server.pool) == 0, 10, lambda: len(server.pool))
    gc.collect()
    base = counts()
    clients = [WsClient(server.ws_url(f"/ws/tail/{topic}")) for _ in range(100)]
    cpu0 = sum(PROC.cpu_times()[:2])
    t0 = time.monotonic()
    for c in clients:
        frame = c.until(lambda f: f["type"] in ("status", "error"), timeout=30)
        assert frame.get("status") == "broker-unavailable" or frame.get("code") == 1013, frame
        code, reason = c.closed(timeout=30)
        assert code == 1013 and "broker unavailable" in reason
        c.close()
    cpu = (sum(PROC.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0)
    wait_for(lambda: len(server.pool) == 0, 10, lambda: len(server.pool))
    # Werkzeug's dev server (this in-process harness only) leaves an epoll selector per
    # server-closed WebSocket to the cyclic GC: its post-request drain raises on the closed
    # socket before selector.close(). The out-of-process gunicorn suite measures without GC.
    wait_for(lambda: gc.collect() >= 0 and counts() <= base, 10, lambda: (base, leftovers()))
    print(f"100 tails, broker down: CPU {cpu * 100:.0f}% of a core while they failed")
