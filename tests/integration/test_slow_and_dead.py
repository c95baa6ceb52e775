"""Slow, silent and vanished peers, and a broker that goes away: bounded, detected, released."""
from __future__ import annotations

import logging
import time

import psutil
import websocket

from kafkatail.broker import EmbeddedBroker
from kafkatail.testing.kafka import Cluster

from helpers import Closed, WsClient, stalled_client, wait_for

PROC = psutil.Process()


def test_slow_client_gets_dropped_frame_and_fast_client_is_not_held_back(cluster, make_server_):
    server = make_server_(outbox_max_records=1000, send_timeout_s=60, ping_interval_s=60)
    t = cluster.create_topic()
    slow = WsClient.adopt(stalled_client(server.ws_url(f"/ws/tail/{t}")))
    fast = WsClient(server.ws_url(f"/ws/tail/{t}"))
    fast.status("live")
    wait_for(lambda: [x.state for x in server.pool.tails()] == ["live", "live"], 10,
             lambda: [x.describe() for x in server.pool.tails()])
    n = 5000
    t0 = time.monotonic()
    cluster.produce(t, [(None, "x" * 2000) for _ in range(n)])
    fast_dropped = fast.account(n, timeout=60)
    fast_took = time.monotonic() - t0
    assert fast.records[-1]["offset"] == n - 1
    slow_tail = min(server.pool.tails(), key=lambda x: x.tail_id)
    assert slow_tail.is_alive(), "the slow client is still served, by the drop-oldest policy"
    # The slow client now reads: an explicit dropped frame, and nothing missing silently.
    slow_dropped = slow.account(n, timeout=60)
    offsets = [r["offset"] for r in slow.records]
    assert slow_dropped > 0 and offsets == sorted(offsets) and offsets[-1] == n - 1
    slow.close()
    print(f"{n} records: fast client done in {fast_took:.1f}s ({fast_dropped} dropped), "
          f"stalled client dropped {slow_dropped}")


def test_a_historical_tail_waits_for_its_client_and_drops_nothing(cluster, make_server_):
    """From earliest the client sets the pace: its thread stops fetching while the socket is
    behind, so a client that stalls, then reads, gets every record and no dropped frame."""
    server = make_server_(outbox_max_records=100, send_timeout_s=60, ping_interval_s=60)
    t = cluster.create_topic()
    n = 3000
    cluster.produce(t, [(None, "h" * 2000) for _ in range(n)])
    slow = WsClient.adopt(stalled_client(server.ws_url(f"/ws/tail/{t}?from=earliest")))
    wait_for(lambda: server.pool.tails() and server.pool.tails()[0].outbox.behind(), 10,
             lambda: [x.describe() for x in server.pool.tails()])
    [tail] = server.pool.tails()
    assert tail.is_alive() and tail.outbox.dropped_total == 0
    assert slow.account(n, timeout=60) == 0
    assert [r["offset"] for r in slow.records] == list(range(n))


def read_to_end(c: WsClient, timeout: float) -> tuple[int | None, str] | None:
    """Read (and keep) every frame until the server ends the connection: its close frame's
    (code, reason), or None if it cut the connection without one."""
    try:
        c.until(lambda frame: False, timeout)
    except Closed as closed:
        return closed.code, closed.reason
    except (websocket.WebSocketConnectionClosedException, ConnectionError):
        return None


# Far beyond every bound below: the stall detector (a send hung this long) and the pings (a peer
# silent for two intervals) cannot be what ends these tails.
PATIENT = {"send_timeout_s": 60, "ping_interval_s": 60}


def test_disconnect_policy_closes_1008_with_reason(cluster, make_server_):
    """``disconnect``: the first put over the cap closes the slow client with 1008 and its
    reason, at once, never a ``dropped`` frame. The close is decided in the outbox, which also
    cuts the socket (a send to a client that does not read may never return), so the close
    frame itself cannot reach this client: it sees its connection end."""
    server = make_server_(outbox_max_records=100, outbox_full_policy="disconnect", **PATIENT)
    t = cluster.create_topic()
    slow = WsClient.adopt(stalled_client(server.ws_url(f"/ws/tail/{t}")))
    wait_for(lambda: [x.state for x in server.pool.tails()] == ["live"], 10, server.pool.tails)
    [viewer] = server.pool.tails()
    t0 = time.monotonic()
    cluster.produce(t, [(None, "y" * 2000) for _ in range(3000)])
    wait_for(lambda: len(server.pool) == 0, 10, lambda: [x.describe() for x in server.pool.tails()])
    took = time.monotonic() - t0
    _, close = viewer.outbox.take()
    assert (close.code, close.reason) == (1008, "client too slow: outbox full"), close
    assert viewer.outbox.dropped_total == 0
    end = read_to_end(slow, 30)
    assert end in (None, (1008, "client too slow: outbox full")), end
    assert not [f for f in slow.frames if f["type"] == "dropped"], slow.frames[-3:]
    assert len(slow.records) < 3000
    print(f"disconnect policy: slow client closed {took:.2f}s after the flood began "
          f"(send_timeout 60s); it had read {len(slow.records)} records, then "
          f"{'its connection ended' if end is None else end}")


def test_drop_oldest_policy_never_closes(cluster, make_server_):
    """``drop-oldest`` (the default), where ``disconnect`` would close: the slow client stays
    open, then gets ``dropped`` frames for what it missed, every record after, and new ones."""
    server = make_server_(outbox_max_records=100, outbox_full_policy="drop-oldest", **PATIENT)
    t = cluster.create_topic()
    slow = WsClient.adopt(stalled_client(server.ws_url(f"/ws/tail/{t}")))
    wait_for(lambda: [x.state for x in server.pool.tails()] == ["live"], 10, server.pool.tails)
    [viewer] = server.pool.tails()
    n = 3000
    cluster.produce(t, [(None, "y" * 2000) for _ in range(n)])
    wait_for(lambda: viewer.cursor == {0: n} or viewer.released, 20, viewer.describe)
    assert not viewer.released and len(server.pool) == 1, "the slow client was closed"
    assert viewer.outbox.dropped_total > 0, "the outbox never overflowed: no policy was applied"
    assert viewer.is_alive() and not viewer.done, viewer.describe()
    dropped = slow.account(n, timeout=60)
    offsets = [r["offset"] for r in slow.records]
    assert dropped > 0 and offsets == sorted(offsets) and offsets[-1] == n - 1
    cluster.produce(t, [(None, "after")])
    assert slow.collect(len(slow.records) + 1)[-1]["value"] == "after"
    assert slow.close_code is None and len(server.pool) == 1
    print(f"drop-oldest policy: {dropped} of {n} dropped, the client still open")


def test_client_that_stops_reading_is_cut_after_send_timeout(cluster, make_server_):
    server = make_server_(outbox_max_records=100_000, send_timeout_s=1.0, ping_interval_s=30)
    t = cluster.create_topic()
    slow = stalled_client(server.ws_url(f"/ws/tail/{t}"))
    wait_for(lambda: [x.state for x in server.pool.tails()] == ["live"], 10, server.pool.tails)
    thread = server.pool.tails()[0]
    t0 = time.monotonic()
    cluster.produce(t, [(None, "z" * 5000) for _ in range(2000)])
    wait_for(lambda: not thread.is_alive(), 15, lambda: thread.describe())
    took = time.monotonic() - t0
    wait_for(lambda: len(server.pool) == 0, 5, lambda: server.pool.tails())
    slow.close()
    print(f"stalled client released {took:.1f}s after the flood began (send_timeout 1s)")
    # Its send hung for send_timeout_s, not less; then the stall check (every poll), the feed's
    # linger and the time the flood takes to fill the socket, with room for a loaded machine
    # (typically 2 s in all). Not the pings (30 s) nor this test's 15 s deadline.
    cfg = server.config
    bound = cfg.send_timeout_s + cfg.poll_timeout_ms / 1000 + cfg.feed_linger_s + 3.0
    assert cfg.send_timeout_s <= took <= bound, (
        f"cut {took:.1f}s after the flood began, send_timeout {cfg.send_timeout_s:g}s "
        f"(bound {bound:.1f}s)")


def test_silent_peer_is_dropped_by_ping_timeout(cluster, make_server_):
    """A peer that never answers pings (like a half-open connection) is closed within ~2 intervals."""
    server = make_server_(ping_interval_s=0.5)
    t = cluster.create_topic()
    silent = stalled_client(server.ws_url(f"/ws/tail/{t}"))
    wait_for(lambda: len(server.pool) == 1, 5, lambda: len(server.pool))
    waiting = time.monotonic()
    wait_for(lambda: len(server.pool) == 0, 5, lambda: server.pool.tails())
    took = time.monotonic() - waiting
    assert took <= 2 * 0.5 + 0.2 + 0.5, f"silent peer reaped after {took:.2f}s"
    silent.close()


def test_messages_are_not_logged(cluster, server, caplog):
    t = cluster.create_topic()
    cluster.produce(t, [(None, f"v{i}") for i in range(2000)])
    with caplog.at_level(logging.DEBUG, logger="kafkatail"):
        c = WsClient(server.ws_url(f"/ws/tail/{t}?from=earliest"))
        c.collect(2000)
        c.close()
        wait_for(lambda: len(server.pool) == 0, 5, lambda: server.pool.tails())
    assert len([r for r in caplog.records if r.name.startswith("kafkatail")]) < 5


def test_broker_outage_reports_unavailable_then_reconnected(make_server_):
    broker = EmbeddedBroker().start()
    try:
        cl = Cluster(broker.bootstrap, broker)
        topic = cl.create_topic()
        server = make_server_(bootstrap_servers=broker.bootstrap, status_interval_s=0.5,
                              request_timeout_ms=1000)
        clients = [WsClient(server.ws_url(f"/ws/tail/{topic}")) for _ in range(5)]
        for c in clients:
            c.status("live")
        threads_before = PROC.num_threads()
        broker.stop()
        for c in clients:
            c.status("broker-unavailable", timeout=15)
        cpu0, t0 = sum(PROC.cpu_times()[:2]), time.monotonic()
        deadline = t0 + 3
        while time.monotonic() < deadline:
            time.sleep(0.1)
        cpu = (sum(PROC.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0)
        assert cpu < 0.25, f"{cpu * 100:.0f}% of a core with 5 tails during the outage"
        assert PROC.num_threads() <= threads_before
        broker.start()
        cl.create_topic(topic)
        for c in clients:
            c.status("reconnected", timeout=20)
        cl.produce(topic, [(None, "after")])
        for c in clients:
            assert c.collect(1)[-1]["value"] == "after"
            c.close()
        print(f"outage: {cpu * 100:.1f}% of a core for 5 tails")
    finally:
        broker.stop()
