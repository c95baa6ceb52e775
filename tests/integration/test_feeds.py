"""Shared live feeds against the real broker: one consumer for many viewers, and the moves
between a viewer's own thread and the feed (catch up then join, resume behind the window)
that must lose and repeat nothing."""
from __future__ import annotations

import threading
import time

import pytest
from kafka import KafkaProducer

from kafkatail.ops.threads import REGISTRY

from helpers import DeflateClient, WsClient, metrics, tail, wait_for


def kafka_io_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if REGISTRY.info(t).role == "kafka-io"]


def assert_exact(records, expected, partitions=1):
    """Every offset of every partition exactly once, in order."""
    for p in range(partitions):
        got = [r["offset"] for r in records if r["partition"] == p]
        assert got == list(range(expected[p])), (p, got[:5], len(got), expected[p])


class Producer(threading.Thread):
    """Produces to one partition until stopped, so moves between threads happen under traffic."""

    def __init__(self, cluster, topic: str, pause_s: float = 0.005) -> None:
        super().__init__(name="kt-test-producer", daemon=True)
        self.cluster, self.topic, self.pause_s = cluster, topic, pause_s
        self.sent = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.sent += self.cluster.produce(self.topic, [(None, f"v{self.sent + i}") for i in range(20)])
            self.halt.wait(self.pause_s)

    def stop(self) -> int:
        self.halt.set()
        self.join(30)
        return self.sent


def test_twenty_live_viewers_share_one_consumer(cluster, server):
    t = cluster.create_topic(partitions=2)
    io_before = len(kafka_io_threads())
    started = metrics(server)["kafkatail_consumer_threads_started_total"]
    clients = [tail(server, t) for _ in range(20)]
    for c in clients:
        c.status("live")
    assert len(server.pool.threads()) == 1
    assert len(kafka_io_threads()) == io_before + 1
    m = metrics(server)
    assert m[f"kafkatail_feed_viewers{{topic={t}}}"] == 20
    assert m["kafkatail_consumer_threads{kind=shared}"] == 1
    assert m["kafkatail_consumer_threads{kind=dedicated}"] == 0
    assert m["kafkatail_consumer_threads_started_total"] == started + 1
    assert (m["kafkatail_consumer_threads_started_total"]
            - m["kafkatail_consumer_threads_joined_total"]) == 1
    cluster.produce(t, [(f"k{i}", f"v{i}", i % 2) for i in range(200)])
    for c in clients:
        assert_exact(c.collect(200), [100, 100], partitions=2)


def test_compressed_and_plain_viewers_get_every_record_from_the_feeds_own_writes(cluster, server):
    """The feed frames each batch once per wire format and writes it to idle sockets itself."""
    t = cluster.create_topic()
    plain = [tail(server, t) for _ in range(3)]
    packed = [DeflateClient(server.ws_url(f"/ws/tail/{t}")) for _ in range(3)]
    assert all(c.deflate.enabled() for c in packed)
    for c in plain + packed:
        c.status("live")
    before = metrics(server)
    n = 0
    for size in (1, 30, 400, 3000):  # frames from 2 bytes of length to 8
        n += cluster.produce(t, [(None, f"v{n + i}-" + "x" * (i % 50)) for i in range(size)])
    for c in plain + packed:
        assert_exact(c.collect(n), [n])
        assert c.records[-1]["value"].startswith(f"v{n - 1}-")
    m = metrics(server)
    sent = {w: m[f"kafkatail_record_frames_sent_total{{writer={w}}}"]
            - before.get(f"kafkatail_record_frames_sent_total{{writer={w}}}", 0)
            for w in ("consumer", "session")}
    # Idle, fast readers: the session threads should hardly ever have had to send.
    assert sent["consumer"] > 0 and sent["consumer"] >= 2 * sent["session"], sent


@pytest.mark.parametrize("writes_per_s", [1, 0])
def test_a_feed_gathers_polls_into_fewer_writes_within_its_delay_cap(cluster, make_server_,
                                                                     writes_per_s):
    """3 viewers at 1 write/s: hold 3 s, capped at 1.5 s, so 12 produces over 1.1 s reach each
    viewer in at most 2 frames, complete and in order. With 0 (every poll) they take several."""
    server = make_server_(feed_writes_per_s=writes_per_s, feed_max_delay_ms=1500)
    t = cluster.create_topic()
    clients = [tail(server, t) for _ in range(3)]
    for c in clients:
        c.status("live")
    pace = threading.Event()
    producer = KafkaProducer(bootstrap_servers=cluster.bootstrap, client_id="kt-test-gather")
    try:
        for i in range(12):
            for j in range(5):
                producer.send(t, value=f"v{i * 5 + j}".encode())
            producer.flush()
            if i == 0:
                started = time.monotonic()
            pace.wait(0.1)
    finally:
        producer.close(timeout=5)
    for c in clients:
        first = c.until(lambda f: f["type"] == "messages")
        if writes_per_s:
            # Held no longer than the cap (1.5 s) plus one fetch wait (poll_timeout_ms 200).
            assert time.monotonic() - started < 1.5 + 1.0
        assert_exact(c.collect(60), [60])
        frames = [f for f in c.frames if f["type"] == "messages"]
        assert frames[0] is first
        if writes_per_s:
            assert len(frames) <= 2, [len(f["messages"]) for f in frames]
        else:
            assert len(frames) >= 3, [len(f["messages"]) for f in frames]


def test_each_viewer_keeps_its_own_filter_and_budget(cluster, server, backend):
    t = cluster.create_topic()
    every, odd, five = tail(server, t), tail(server, t, "filter=odd"), tail(server, t, "max=5")
    for c in (every, odd, five):
        c.status("live")
    assert len(server.pool.threads()) == 1
    cluster.produce(t, [(None, f"{'odd' if i % 2 else 'even'}-{i}") for i in range(40)])
    assert len(every.collect(40)) == 40
    assert [r["value"] for r in odd.collect(20)] == [f"odd-{i}" for i in range(1, 40, 2)]
    assert five.closed() == (1000, "max 5 records reached") and len(five.records) == 5
    odd.send({"op": "filter", "filter": "even"})
    odd.status("filter")
    cluster.produce(t, [(None, "even-40"), (None, "odd-41")])
    assert odd.until(lambda f: f["type"] == "messages")["messages"][0]["value"] == "even-40"
    assert [r["value"] for r in every.collect(42)[-2:]] == ["even-40", "odd-41"]


def paused_and_live(server, topic: str) -> tuple[WsClient, WsClient]:
    """Two live viewers of one feed, the first paused."""
    paused, live = tail(server, topic), tail(server, topic)
    paused.status("live")
    live.status("live")
    paused.send({"op": "pause"})
    paused.status("paused")
    return paused, live


def test_pause_on_a_feed_loses_nothing_and_never_holds_back_the_others(cluster, server, backend):
    t = cluster.create_topic()
    paused, live = paused_and_live(server, t)
    cluster.produce(t, [(None, f"v{i}") for i in range(50)])
    assert_exact(live.collect(50), [50])
    assert not paused.records
    paused.send({"op": "resume"})
    assert_exact(paused.collect(50), [50])
    cluster.produce(t, [(None, f"v{i}") for i in range(50, 60)])
    assert_exact(paused.collect(60), [60])
    assert_exact(live.collect(60), [60])
    assert len(server.pool.threads()) == 1


def test_every_viewer_paused_pauses_the_fetch(cluster, server):
    t = cluster.create_topic()
    c = tail(server, t)
    c.status("live")
    [feed] = server.pool.threads()
    c.send({"op": "pause"})
    c.status("paused")
    wait_for(lambda: feed.state == "paused", 5, feed.describe)
    c.send({"op": "resume"})
    wait_for(lambda: feed.state == "live", 5, feed.describe)


def test_resume_behind_the_replay_window_reads_alone_then_rejoins(cluster, make_server_):
    server = make_server_(feed_replay_records=10)
    t = cluster.create_topic()
    behind, live = paused_and_live(server, t)
    cluster.produce(t, [(None, f"v{i}") for i in range(100)])
    live.collect(100)
    behind.send({"op": "resume"})
    assert_exact(behind.collect(100), [100])
    assert any(t_.name.startswith("kt-tail-") for t_ in server.pool.threads())
    wait_for(lambda: server.pool.handovers == 1, 10, server.pool.threads)
    wait_for(lambda: len(server.pool.threads()) == 1, 5, server.pool.threads)
    cluster.produce(t, [(None, f"v{i}") for i in range(100, 120)])
    assert_exact(behind.collect(120), [120])
    assert_exact(live.collect(120), [120])


def test_historical_viewer_catches_up_then_joins_the_feed_under_traffic(cluster, server, backend):
    t = cluster.create_topic()
    cluster.produce(t, [(None, f"v{i}") for i in range(500)])
    live = tail(server, t)
    live.status("live")
    producer = Producer(cluster, t)
    producer.start()
    try:
        old = tail(server, t, "from=earliest")
        old.status("caught-up")
        wait_for(lambda: server.pool.handovers == 1, 10, server.pool.threads)
        wait_for(lambda: len(server.pool.threads()) == 1, 5, server.pool.threads)
    finally:
        total = 500 + producer.stop()
    assert_exact(old.collect(total), [total])
    assert len(old.records) == total
    assert server.pool.threads()[0].shared


def test_last_viewer_out_leaves_the_feed_to_linger(cluster, make_server_):
    server = make_server_(feed_linger_s=1.0)
    t = cluster.create_topic()
    c = tail(server, t)
    c.status("live")
    [feed] = server.pool.threads()
    c.close()
    wait_for(lambda: len(server.pool) == 0, 5, server.pool.tails)
    again = tail(server, t)  # a page reload
    again.status("live")
    assert server.pool.threads() == [feed] and feed.is_alive()
    again.close()
    left = time.monotonic()
    feed.join(5)
    took = time.monotonic() - left
    assert not feed.is_alive()
    assert 0.9 <= took <= 1.0 + server.config.poll_timeout_ms / 1000 + 0.5, took


@pytest.mark.parametrize("mode", [{}, {"share_live_feeds": False}], ids=["feed", "dedicated"])
def test_pause_resume_under_traffic_loses_and_repeats_nothing(cluster, make_server_, mode, backend):
    server = make_server_(**mode)
    t = cluster.create_topic()
    c = tail(server, t)
    c.status("live")
    producer = Producer(cluster, t, pause_s=0.001)
    producer.start()
    try:
        for _ in range(8):
            c.send({"op": "pause"})
            c.status("paused")
            c.send({"op": "resume"})
            c.status("live")
            c.until(lambda f: f["type"] == "messages")
    finally:
        total = producer.stop()
    assert_exact(c.collect(total), [total])


def test_a_regex_over_its_budget_closes_only_its_viewer(cluster, server):
    t = cluster.create_topic()
    slow, other = tail(server, t, "regex=x%2Bx%2Bx%2By"), tail(server, t)
    slow.status("live")
    other.status("live")
    # One record a batch: each batch that runs out of the budget is one overrun of the caller.
    for i in range(4):
        cluster.produce(t, [(None, "x" * 20000)])
        other.collect(i + 1)
    code, reason = slow.closed()
    assert code == 4400 and reason.startswith("regex: over its 0.1 s budget"), reason
    assert len(other.records) == 4
