"""Retention under a tail: records deleted below a resume point. DeleteRecords is what moves a
partition's earliest offset as retention does, and Tansu's memory storage has none, so these
tests run on Apache Kafka (``apache_kafka``) whatever the session's broker."""
from __future__ import annotations

import pytest

from helpers import offsets, tail


@pytest.fixture(scope="session")
def cluster(apache_kafka):
    return apache_kafka


def test_resume_below_retention_reports_the_deleted_offsets(cluster, server):
    """A resume point whose records are deleted starts at the earliest offset, and says so."""
    t = cluster.create_topic(partitions=2)
    cluster.produce(t, [(None, f"v{i}", i % 2) for i in range(20)], flush_each=True)
    cluster.delete_records(t, {0: 6})
    c = tail(server, t, "from=offsets:0:2,1:3")
    hello = c.hello()
    assert {p["partition"]: p["start"] for p in hello["partitions"]} == {0: 6, 1: 3}
    dropped = c.until(lambda f: f["type"] == "dropped")
    assert dropped == {"type": "dropped", "count": 4, "partitions": {"0": [2, 5]},
                       "reason": "retention"}
    recs = c.collect(4 + 7)
    assert offsets(recs, 0) == list(range(6, 10)) and offsets(recs, 1) == list(range(3, 10))
    kinds = [f["type"] for f in c.frames]
    assert kinds.index("hello") < kinds.index("dropped") < kinds.index("messages")
