"""Both consumer backends (kafka-python, confluent-kafka): what differs between them.

The key protocol and feed tests (test_protocol.py, test_feeds.py) take the ``backend`` fixture
and so run once per backend; this module checks what differs: librdkafka's native ``rdk:*``
threads must have a role, be counted by the thread guard and end with the consumer, on every
path (close, abrupt close, failed construction).
"""
from __future__ import annotations

import gc
import os
import sys
import threading
import time

import pytest

from kafkatail.broker import free_port
from kafkatail.config import Config, ConfigError
from kafkatail.ops.reaper import thread_table
from kafkatail.ops.sampling import ThreadSampler
from kafkatail.tail.backend import BrokerUnavailable, check_backend, open_backend
from kafkatail.testing.threadguard import Guard, open_fds, task_ids

from helpers import WsClient, metrics, tail, wait_for

pytest.importorskip("confluent_kafka")


def rdk_tasks() -> dict[int, str]:
    """librdkafka's native threads in this process (tid -> OS name)."""
    out = {}
    for tid in task_ids():
        try:
            with open(f"/proc/self/task/{tid}/comm") as fh:
                name = fh.read().strip()
        except OSError:
            continue
        if name.startswith("rdk:"):
            out[tid] = name
    return out


def io_count(backend: str) -> int:
    """The consumer's IO threads: kafka-python's kafka-io-* or librdkafka's rdk:* tasks."""
    if backend == "confluent":
        return len(rdk_tasks())
    return sum(t.name.startswith("kafka-io-kt-") for t in threading.enumerate())


def counts() -> tuple[int, int]:
    return len(task_ids()), len(open_fds())


def test_shared_feed_two_viewers(cluster, server, backend):
    t = cluster.create_topic(partitions=2)
    a, b = tail(server, t), tail(server, t)
    a.status("live")
    b.status("live")
    assert len(server.pool.threads()) == 1
    cluster.produce(t, [(None, f"v{i}", i % 2) for i in range(40)])
    for c in (a, b):
        recs = c.collect(40)
        for p in range(2):
            assert [r["offset"] for r in recs if r["partition"] == p] == list(range(20))
    assert server.pool.threads()[0].shared


def test_native_threads_have_a_role_and_end_with_the_tail(cluster, make_server_, backend):
    """Warm up, then a live and a historical tail: every task (Python or rdk:*) and fd comes
    back after close; under confluent the rdk:* tasks show as kafka-io in the thread table."""
    server = make_server_(status_interval_s=30)
    t = cluster.create_topic()
    cluster.produce(t, [(None, f"v{i}") for i in range(10)])
    warm = tail(server, t)
    warm.status("live")
    warm.close()
    wait_for(lambda: not server.pool.threads() and io_count(backend) == 0, 10,
             lambda: (server.pool.threads(), rdk_tasks()))
    gc.collect()
    before = counts()
    live, old = tail(server, t), tail(server, t, "from=earliest")
    live.status("live")
    assert len(old.collect(10)) == 10
    assert io_count(backend) >= 2
    if backend == "confluent":
        sampler = ThreadSampler()
        sampler.sample()
        rows = {r["native_id"]: r for r in thread_table(sampler.sample(), stacks=False)}
        rdk = rdk_tasks()
        assert rdk and all(rows[tid]["role"] == "kafka-io" for tid in rdk if tid in rows), rows
        owners = {rows[tid]["owner"] for tid in rdk if tid in rows}
        assert {th.client_id for th in server.pool.threads()} <= owners, owners
        assert metrics(server)["kafkatail_native_threads{role=kafka-io}"] == len(rdk_tasks())
    live.close()
    old.ws.sock.close()  # abrupt: no close frame
    wait_for(lambda: not server.pool.threads() and io_count(backend) == 0, 10,
             lambda: (server.pool.threads(), rdk_tasks()))
    wait_for(lambda: counts() <= before, 10, lambda: (before, counts(), rdk_tasks()))


def test_thread_guard_counts_native_threads(cluster, backend):
    """The suite's guard sees a consumer's threads (rdk:* have no threading.Thread) until it
    closes, and is clean after."""
    cfg = Config(bootstrap_servers=cluster.bootstrap, consumer_backend=backend,
                 request_timeout_ms=3000)
    guard = Guard(fds=True)
    guard.start()
    try:
        consumer = open_backend(cfg, "kt-guarded")
        try:
            # librdkafka starts and renames threads on its own schedule: compare two snapshots
            # taken a moment apart until they agree, within a deadline.
            deadline = time.monotonic() + 5
            while True:
                c, rdk = guard.compare(), set(rdk_tasks())
                if backend != "confluent" or set(c.native_only) == rdk or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert not c.clean
            if backend == "confluent":
                assert set(c.native_only) == rdk and c.native_only
        finally:
            consumer.close(timeout_ms=500)
        result = guard.settle(5)
        assert result.ok, result.report()
    finally:
        guard.stop()


def test_failed_construct_leaves_no_thread(backend):
    """Broker down: BrokerUnavailable, and no thread (native included) or fd is left."""
    cfg = Config(bootstrap_servers=f"127.0.0.1:{free_port()}", request_timeout_ms=500,
                 consumer_backend=backend)
    gc.collect()
    before = counts()
    with pytest.raises(BrokerUnavailable):
        open_backend(cfg, "kt-doomed")
    wait_for(lambda: counts() <= before and not rdk_tasks(), 3,
             lambda: (before, counts(), rdk_tasks()))


@pytest.mark.parametrize("how", ["clean", "abrupt"])
def test_stop_latency_within_poll_timeout(cluster, make_server_, backend, how):
    server = make_server_(share_live_feeds=False)
    t = cluster.create_topic()
    c = tail(server, t)
    c.status("live")
    [thread] = server.pool.threads()
    assert io_count(backend) >= 1
    start = time.monotonic()
    if how == "clean":
        c.close()
    else:
        c.ws.sock.close()
    thread.join(5)
    took = time.monotonic() - start
    wait_for(lambda: io_count(backend) == 0, 2, rdk_tasks)
    poll_s = server.config.poll_timeout_ms / 1000
    assert not thread.is_alive() and took < poll_s + 1.0, took
    print(f"{backend} {how}: socket close to thread exit {took * 1000:.0f} ms "
          f"(poll_timeout_ms {server.config.poll_timeout_ms})")


def test_broker_down_mid_tail_is_reported(backend, make_server_):
    """Only as far as construction: an unreachable bootstrap closes the tail 1013, threads gone."""
    server = make_server_(bootstrap_servers=f"127.0.0.1:{free_port()}", request_timeout_ms=500)
    c = WsClient(server.ws_url("/ws/tail/anything"))
    code, _reason = c.closed()
    assert code == 1013
    wait_for(lambda: not server.pool.threads() and io_count(backend) == 0, 5, rdk_tasks)


def test_confluent_config_errors(monkeypatch):
    check_backend(Config(consumer_backend="confluent"))
    with pytest.raises(ConfigError, match="gevent"):
        check_backend(Config(consumer_backend="confluent", worker_class="gevent"))
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)
    with pytest.raises(ConfigError, match="pip install"):
        check_backend(Config(consumer_backend="confluent"))
    check_backend(Config())  # kafka-python needs nothing more
    with pytest.raises(ConfigError, match="consumer_backend"):
        Config(consumer_backend="librdkafka")
    assert os.environ.get("KAFKATAIL_CONSUMER_BACKEND") is None


def test_serve_refuses_confluent_under_gevent(tmp_path):
    """The gunicorn master refuses before forking: one line, exit 2, no traceback."""
    import subprocess

    conf = tmp_path / "k.toml"
    conf.write_text('consumer_backend = "confluent"\nworker_class = "gevent"\n')
    r = subprocess.run([sys.executable, "-m", "kafkatail", "serve", "--config", str(conf)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "consumer_backend: 'confluent' does not run under worker_class = 'gevent'" in r.stderr
    assert "Traceback" not in r.stderr


def test_both_backends_decode_the_same_records(cluster):
    """records.py sees the same fields from either backend: sizes (headers too), timestamps,
    nulls and binary, record for record."""
    from kafka import TopicPartition

    from kafkatail.tail.records import decode_batch

    t = cluster.create_topic(partitions=2)
    cluster.produce(t, [
        (b"k1", b'{"id": 1}', 0, [("trace", b"abc"), ("bin", b"\xff\x01")]),
        (b"tombstone", None, 1),
        (None, b"\x00\x01\xff", 0),
        (b"k4", b"plain text", 1, [], 1_700_000_000_123),
    ])
    seen = {}
    for backend in ("kafka-python", "confluent"):
        c = open_backend(Config(bootstrap_servers=cluster.bootstrap, consumer_backend=backend,
                                request_timeout_ms=3000), f"kt-same-{backend}")
        try:
            tps = [TopicPartition(t, p) for p in (0, 1)]
            c.assign(tps)
            for tp in tps:
                c.seek(tp, 0)
            got: dict[int, list] = {0: [], 1: []}
            deadline = time.monotonic() + 10
            while sum(map(len, got.values())) < 4 and time.monotonic() < deadline:
                for tp, recs in c.poll(timeout_ms=200).items():
                    assert all(r.partition == tp.partition for r in recs)
                    got[tp.partition] += recs
            seen[backend] = {p: [d[0] for d in decode_batch(recs, "auto", 1 << 20)]
                             for p, recs in got.items()}
            assert c.highwater(tps[0]) == 2 and c.position(tps[1], 500) == 2
        finally:
            c.close(timeout_ms=500)
    assert seen["confluent"] == seen["kafka-python"]
    assert seen["confluent"][1][1]["timestamp"] == 1_700_000_000_123


def test_twenty_live_viewers_cost_one_consumer_s_threads(cluster, server, backend):
    """The thread count of a shared feed does not grow with its viewers, native ones included."""
    t = cluster.create_topic()
    first = tail(server, t)
    first.status("live")
    per_consumer = io_count(backend)
    assert per_consumer >= 1
    others = [tail(server, t) for _ in range(19)]
    for c in others:
        c.status("live")
    assert len(server.pool.threads()) == 1 and io_count(backend) == per_consumer
    print(f"{backend}: {per_consumer} IO thread(s) for one consumer shared by 20 viewers")
