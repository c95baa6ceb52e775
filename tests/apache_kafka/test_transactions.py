"""Transactions on Apache Kafka: a tail shows committed records only (read_committed), never an
aborted one nor a control record, and moves past the offsets markers take, so it reports
caught-up, joins the live feed and resumes at its cursor with nothing lost or repeated."""
from __future__ import annotations

import uuid

import pytest
import websocket
from kafka import KafkaProducer

from helpers import tail


class Transactions:
    """One transactional producer; each transaction's records are flushed to the log before it
    commits or aborts, so aborted records are really there for a reader to skip."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, client_id="kt-test-txn",
                                      transactional_id=f"kt-test-{uuid.uuid4().hex[:8]}")
        self.producer.init_transactions()

    def run(self, values: list[str], commit: bool, partition: int = 0) -> None:
        self.producer.begin_transaction()
        for v in values:
            self.producer.send(self.topic, value=v.encode(), partition=partition)
        self.producer.flush()
        (self.producer.commit_transaction if commit else self.producer.abort_transaction)()

    def close(self) -> None:
        self.producer.close(timeout=5)


@pytest.fixture
def txn(apache, cluster):
    made = []

    def make(topic: str) -> Transactions:
        made.append(Transactions(cluster.bootstrap, topic))
        return made[-1]

    yield make
    for t in made:
        t.close()


def values(records):
    return [r["value"] for r in records]


def test_committed_only_and_caught_up_past_the_markers(make_server_, cluster, txn, backend):
    topic = cluster.create_topic()
    t = txn(topic)
    t.run(["c1-0", "c1-1", "c1-2"], commit=True)       # offsets 0-2, marker 3
    t.run(["a-0", "a-1", "a-2"], commit=False)          # 4-6, marker 7
    t.run(["c2-0", "c2-1"], commit=True)                # 8-9, marker 10: the log ends at 11
    server = make_server_(consumer_backend=backend)
    c = tail(server, topic, "from=earliest")
    hello = c.hello()
    assert hello["partitions"][0]["end"] == 11
    c.collect(5)
    # The last record is offset 9 and the end 11: only a tail that moves past the trailing
    # commit marker knows it has caught up.
    c.status("caught-up")
    assert values(c.records) == ["c1-0", "c1-1", "c1-2", "c2-0", "c2-1"]
    assert [r["offset"] for r in c.records] == [0, 1, 2, 8, 9]
    # Live now (on the shared feed once handed over): more transactions, and a plain record.
    t.run(["a2-0"], commit=False)                       # 11, marker 12
    t.run(["c3-0", "c3-1"], commit=True)                # 13-14, marker 15
    cluster.produce(topic, [(None, "plain")])           # 16
    c.collect(8)
    assert values(c.records[5:]) == ["c3-0", "c3-1", "plain"]
    assert [r["offset"] for r in c.records[5:]] == [13, 14, 16]


def test_resume_at_a_cursor_that_points_at_a_marker(make_server_, cluster, txn, backend):
    """The cursor a client keeps (last offset + 1) may name a marker's offset: resuming there
    gives exactly the next committed records."""
    topic = cluster.create_topic()
    t = txn(topic)
    t.run(["c1-0", "c1-1"], commit=True)                # 0-1, marker 2
    t.run(["a-0", "a-1"], commit=False)                 # 3-4, marker 5
    t.run(["c2-0"], commit=True)                        # 6, marker 7
    server = make_server_(consumer_backend=backend)
    first = tail(server, topic, "from=earliest&max=2")
    first.collect(2)
    assert first.closed()[0] == 1000
    cursor = first.records[-1]["offset"] + 1
    assert cursor == 2
    second = tail(server, topic, f"from=offsets:0:{cursor}")
    second.collect(1)
    second.status("caught-up")
    assert [(r["offset"], r["value"]) for r in second.records] == [(6, "c2-0")]


def test_an_open_transaction_shows_nothing_until_it_commits(server, cluster, txn):
    topic = cluster.create_topic()
    t = txn(topic)
    c = tail(server, topic)
    c.hello()
    c.status("live")
    t.producer.begin_transaction()
    t.producer.send(topic, value=b"pending")
    t.producer.flush()
    cluster.produce(topic, [(None, "outside")])         # after the open transaction's record
    # Held back by the last stable offset, the plain record too: nothing arrives meanwhile.
    with pytest.raises((AssertionError, websocket.WebSocketTimeoutException)):
        c.collect(1, timeout=2)
    assert c.records == []
    t.producer.commit_transaction()
    c.collect(2)
    assert values(c.records) == ["pending", "outside"]


def test_read_uncommitted_shows_aborted_records_and_says_so(make_server_, cluster, txn, backend):
    from kafkatail.clientprops import ClientProps
    topic = cluster.create_topic()
    t = txn(topic)
    t.run(["c-0"], commit=True)                         # 0, marker 1
    t.run(["a-0"], commit=False)                        # 2, marker 3
    default = make_server_(consumer_backend=backend)
    c = tail(default, topic, "from=earliest")
    assert c.hello()["options"]["isolation"] == "read_committed"
    c.collect(1)
    c.status("caught-up")
    assert values(c.records) == ["c-0"]
    server = make_server_(consumer_backend=backend,
                          kafka=ClientProps({"isolation.level": "read_uncommitted"}))
    c = tail(server, topic, "from=earliest")
    assert c.hello()["options"]["isolation"] == "read_uncommitted"
    c.collect(2)
    assert values(c.records) == ["c-0", "a-0"]
