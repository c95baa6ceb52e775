"""``until=``: a tail ends with 1000 once every partition has passed its bound (kcat's
``-o e@<ts>``), by time or by offsets, from ``earliest`` and live, on both backends."""
from __future__ import annotations

import time

from helpers import tail

# An hour ago, to the second: within every broker's retention (the Apache Kafka of the tests
# deletes older records within seconds).
BASE = (int(time.time()) - 3600) * 1000


def test_until_a_time_on_several_partitions(cluster, server, backend):
    t = cluster.create_topic(partitions=3)
    # Partition 2 has nothing at or after the bound: it passes once the tail is at its end.
    cluster.produce(t, [(f"k{i}", f"v{i}", i % 3, None, BASE + i * 1000) for i in range(12)]
                    + [("late", "late-0", 0, None, BASE + 60_000),
                       ("late", "late-1", 1, None, BASE + 60_000)])
    c = tail(server, t, f"from=earliest&until=ts:{BASE + 6_000}")
    hello = c.hello()
    assert hello["options"]["until"] == f"ts:{BASE + 6000}"
    code, reason = c.closed()
    assert (code, reason) == (1000, f"until ts:{BASE + 6000} reached")
    assert sorted(r["value"] for r in c.records) == sorted(f"v{i}" for i in range(6))
    assert any(f.get("status") == "end" and f.get("reason") == "until reached" for f in c.frames)


def test_until_offsets_names_the_partitions_and_ends_exactly(cluster, server, backend):
    t = cluster.create_topic(partitions=2)
    cluster.produce(t, [(None, f"p{i % 2}-{i // 2}", i % 2) for i in range(20)])
    c = tail(server, t, "from=earliest&until=offsets:0:4,1:7")
    assert [p["partition"] for p in c.hello()["partitions"]] == [0, 1]
    assert c.closed()[0] == 1000
    got = sorted((r["partition"], r["offset"]) for r in c.records)
    assert got == [(0, o) for o in range(4)] + [(1, o) for o in range(7)]


def test_until_a_bound_ahead_waits_for_live_records(cluster, server, backend):
    t = cluster.create_topic()
    cluster.produce(t, [(None, f"v{i}") for i in range(3)])
    c = tail(server, t, "from=earliest&until=offsets:0:5")
    c.collect(3)
    c.status("caught-up")
    cluster.produce(t, [(None, f"v{i}") for i in range(3, 8)])
    assert c.closed()[0] == 1000
    assert [r["value"] for r in c.records] == [f"v{i}" for i in range(5)]


def test_until_a_time_already_past_on_a_quiet_topic_ends_at_once(cluster, server, backend):
    t = cluster.create_topic()
    cluster.produce(t, [(None, "old", None, None, BASE)])
    c = tail(server, t, f"from=earliest&until=ts:{int(time.time() * 1000) - 1000}")
    assert c.closed()[0] == 1000
    assert [r["value"] for r in c.records] == ["old"]


def test_until_mistakes_are_4400(server):
    for query, reason in (("until=yesterday", "until: use ts:"),
                          ("until=ts:soon", "until: ts: needs epoch"),
                          ("until=offsets:0:5&partitions=0,1", "must name every partition")):
        c = tail(server, "any-topic", query)
        code, text = c.closed()
        assert code == 4400 and reason in text, (query, text)
