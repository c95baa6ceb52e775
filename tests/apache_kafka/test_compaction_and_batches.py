"""What every real producer and cluster does, and Tansu cannot show: multi-record batches
(ListOffsets answers the high watermark, not a batch's base offset) and compacted topics
(offsets with holes where older values of a key were removed)."""
from __future__ import annotations

import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from helpers import tail


def produce_batched(bootstrap: str, topic: str, records: list[tuple], partitions: int = 1) -> None:
    """Many records per batch, as real producers send them: one flush for all."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, client_id="kt-test-batch",
                             linger_ms=1000, batch_size=1 << 20)
    try:
        for key, value, partition in records:
            producer.send(topic, key=key and key.encode(), value=value.encode(),
                          partition=partition)
        producer.flush()
    finally:
        producer.close(timeout=5)


def test_latest_and_last_n_with_multi_record_batches(apache, cluster, server):
    topic = cluster.create_topic(partitions=2)
    produce_batched(cluster.bootstrap, topic,
                    [(None, f"v{p}-{i}", p) for p in (0, 1) for i in range(40)])
    last = tail(server, topic, "from=-5")
    hello = last.hello()
    assert [(p["start"], p["end"]) for p in hello["partitions"]] == [(35, 40), (35, 40)]
    last.collect(10)
    last.status("caught-up")
    for p in (0, 1):
        assert [(r["offset"], r["value"]) for r in last.records if r["partition"] == p] == [
            (i, f"v{p}-{i}") for i in range(35, 40)]
    live = tail(server, topic)
    assert [p["start"] for p in live.hello()["partitions"]] == [40, 40]
    live.status("live")
    produce_batched(cluster.bootstrap, topic, [(None, f"new{i}", 0) for i in range(3)])
    live.collect(3)
    assert [(r["partition"], r["offset"], r["value"]) for r in live.records] == [
        (0, 40, "new0"), (0, 41, "new1"), (0, 42, "new2")]


COMPACT = {"cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01",
           "min.compaction.lag.ms": "0", "delete.retention.ms": "100"}


def compacted_log(bootstrap: str, topic: str, timeout: float = 60.0) -> list[tuple[int, str]]:
    """Wait until the broker has compacted the topic to one record per key; its
    (offset, value)s."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id="kt-test-compacted")
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    deadline = time.monotonic() + timeout
    try:
        while True:
            consumer.seek(tp, 0)
            end = consumer.end_offsets([tp])[tp]
            got: list[tuple[int, str, bytes]] = []
            while not got or got[-1][0] < end - 1:
                polled = consumer.poll(timeout_ms=500)
                if not polled:
                    break
                for recs in polled.values():
                    got += [(r.offset, r.value.decode(), r.key) for r in recs]
            if len(got) == len({key for _, _, key in got}):
                return [(o, v) for o, v, _ in got]
            assert time.monotonic() < deadline, f"not compacted in {timeout}s: {len(got)} records"
            time.sleep(0.5)
    finally:
        consumer.close()


def test_resume_across_compacted_offsets_loses_nothing(apache, cluster, server):
    topic = cluster.create_topic(configs=COMPACT)
    # Keys rewritten unevenly, in separate segments (segment.ms=100): compaction keeps each
    # key's last value and leaves holes between the offsets that remain.
    rounds = [range(10), range(0, 10, 2), range(2)]
    for keys in rounds:
        cluster.produce(topic, [(f"k{i}", f"k{i}-{len(keys)}") for i in keys])
        # Not a wait for a condition: segment.ms must pass for the next append to roll a segment.
        time.sleep(0.15)
    cluster.produce(topic, [("tail", "last")])  # the active segment is never cleaned
    kept = compacted_log(cluster.bootstrap, topic)
    offsets = [o for o, _ in kept]
    holes = sorted(set(range(offsets[0], offsets[-1] + 1)) - set(offsets))
    assert offsets[0] == 3 and holes, f"not compacted as planned: {offsets}"
    # Read part of it, then resume at the client's cursor, which may name a removed offset;
    # and resume at a removed offset directly.
    first = tail(server, topic, "from=earliest&max=3")
    first.collect(3)
    assert first.closed()[0] == 1000
    cursor = first.records[-1]["offset"] + 1
    second = tail(server, topic, f"from=offsets:0:{cursor}")
    second.collect(len(kept) - 3)
    second.status("caught-up")
    combined = [(r["offset"], r["value"]) for r in first.records + second.records]
    assert combined == kept
    third = tail(server, topic, f"from=offsets:0:{holes[-1]}")
    expected = [(o, v) for o, v in kept if o >= holes[-1]]
    third.collect(len(expected))
    third.status("caught-up")
    assert [(r["offset"], r["value"]) for r in third.records] == expected
    # And at a kept record between holes: that record first.
    at = offsets[offsets.index(holes[-1] + 1) + 1]
    fourth = tail(server, topic, f"from=offsets:0:{at}")
    expected = [(o, v) for o, v in kept if o >= at]
    fourth.collect(len(expected))
    fourth.status("caught-up")
    assert [(r["offset"], r["value"]) for r in fourth.records] == expected
    # Holes are not losses: no viewer is told records were dropped.
    assert not [f for c in (first, second, third, fourth) for f in c.frames
                if f["type"] == "dropped"]
