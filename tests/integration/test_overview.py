"""GET /api/overview against the real server and broker: only the topics the caller may tail,
their partitions, retained records, newest record's time and a rate from the end offsets'
change between two passes, one pass serving every caller, the cap, and 503 without a broker."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid

import pytest

from kafka import TopicPartition
from kafka.errors import TopicAuthorizationFailedError

from kafkatail.broker import free_port
from kafkatail.config import Config
from kafkatail.security.tokens import hash_token
from kafkatail.tail import metadata
from kafkatail.tail.metadata import Metadata

from helpers import wait_for

VIEWER, OPS = "viewer-" + uuid.uuid4().hex, "ops-" + uuid.uuid4().hex
# The records' timestamps, so that the newest record's time is known exactly: an hour ago, within
# every broker's retention (the Apache Kafka of the tests deletes older records within seconds).
T0 = (int(time.time()) - 3600) * 1000


def get(server, path: str, token: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(server.url(path))
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())


def by_name(answer: dict) -> dict[str, dict]:
    return {t["name"]: t for t in answer["topics"]}


@pytest.fixture(scope="module")
def topics(cluster):
    """Two public topics and a private one, under this run's prefix."""
    run = uuid.uuid4().hex[:8]
    names = {"busy": f"kt-ov.{run}.pub.busy", "empty": f"kt-ov.{run}.pub.empty",
             "private": f"kt-ov.{run}.priv.c", "run": run}
    cluster.create_topic(names["busy"], partitions=2)
    cluster.create_topic(names["empty"])
    cluster.create_topic(names["private"])
    # One record a batch: Tansu's end offset is the last batch's base offset + 1.
    cluster.produce(names["busy"], [(f"k{i}", f"v{i}", i % 2, None, T0 + i) for i in range(5)],
                    flush_each=True)
    cluster.produce(names["private"], [("k", "secret", 0, None, T0 + 100 + i) for i in range(3)],
                    flush_each=True)
    return names


@pytest.fixture
def locked(make_server_, topics):
    run = topics["run"]
    return make_server_(tokens={
        "viewer": {"sha256": hash_token(VIEWER), "topics": [f"kt-ov.{run}.priv.**"]},
        "ops": {"sha256": hash_token(OPS), "topics": ["**"]},
    }, anonymous_topics=f"kt-ov.{run}.pub.**")


def test_each_caller_sees_only_what_it_may_tail(locked, topics):
    status, anonymous = get(locked, "/api/overview")
    assert status == 200
    shown = by_name(anonymous)
    assert set(shown) == {topics["busy"], topics["empty"]}
    assert shown[topics["busy"]] == {"name": topics["busy"], "partitions": 2, "retained": 5,
                                     "rate": None, "last_record": T0 + 4}
    assert shown[topics["empty"]] == {"name": topics["empty"], "partitions": 1, "retained": 0,
                                      "rate": None, "last_record": None}
    assert anonymous["total"] == 2 and anonymous["truncated"] is False
    status, viewer = get(locked, "/api/overview", VIEWER)
    assert status == 200 and list(by_name(viewer)) == [topics["private"]]
    assert by_name(viewer)[topics["private"]]["last_record"] == T0 + 102
    assert by_name(viewer)[topics["private"]]["retained"] == 3
    ops = by_name(get(locked, "/api/overview", OPS)[1])
    assert {topics["busy"], topics["empty"], topics["private"]} <= set(ops)
    assert [t["name"] for t in get(locked, "/api/overview", OPS)[1]["topics"]] == sorted(ops)
    assert get(locked, "/api/overview", "not-a-token")[0] == 401


def test_one_pass_serves_every_caller_while_fresh(locked, topics, monkeypatch):
    monkeypatch.setattr(metadata, "OVERVIEW_FRESH_S", 60.0)  # no pass expires mid-test
    passes = []
    real = Metadata._call
    monkeypatch.setattr(Metadata, "_call", lambda self, fn, wait_s=None: (
        passes.append(fn), real(self, fn, wait_s))[1])
    everything = by_name(get(locked, "/api/overview", OPS)[1])
    assert len(passes) == 1
    # Narrower callers' topics were all measured by that pass: answered from it, no client call.
    assert by_name(get(locked, "/api/overview")[1]) == {
        n: everything[n] for n in (topics["busy"], topics["empty"])}
    assert by_name(get(locked, "/api/overview", VIEWER)[1]) == {
        topics["private"]: everything[topics["private"]]}
    assert len(passes) == 1


def test_rate_from_the_end_offsets_between_two_passes(cluster, make_server_, monkeypatch):
    monkeypatch.setattr(metadata, "OVERVIEW_FRESH_S", 0.5)
    server = make_server_()
    t = cluster.create_topic(partitions=2)
    cluster.produce(t, [("k", "v", i % 2, None, T0 + i) for i in range(4)], flush_each=True)
    first = by_name(get(server, "/api/overview")[1])[t]
    assert first["retained"] == 4 and first["rate"] is None  # nothing to measure it from yet
    cluster.produce(t, [("k", "v", i % 2, None, T0 + 10 + i) for i in range(20)], flush_each=True)

    def grown():
        found = by_name(get(server, "/api/overview")[1])[t]
        return found if found["retained"] == 24 else None
    after = wait_for(grown, what="the 20 new records counted")
    # The pass that first saw the last of them measured a rise since the pass before it, at
    # most everything over the shortest gap between two passes.
    assert 0 < after["rate"] <= 20 / 0.5
    assert after["last_record"] == T0 + 29
    # Nothing more: a later pass measures no change.
    wait_for(lambda: by_name(get(server, "/api/overview")[1])[t]["rate"] == 0.0,
             what="the rate back at 0")


def test_at_most_the_cap_in_name_order(locked, topics, monkeypatch):
    monkeypatch.setattr(metadata, "OVERVIEW_MAX_TOPICS", 1)
    status, answer = get(locked, "/api/overview")
    assert status == 200
    assert [t["name"] for t in answer["topics"]] == [topics["busy"]]  # before ".pub.empty"
    assert answer["total"] == 2 and answer["truncated"] is True


def test_broker_down_is_503(make_server_):
    server = make_server_(bootstrap_servers=f"127.0.0.1:{free_port()}", request_timeout_ms=500)
    status, body = get(server, "/api/overview")
    assert status == 503 and body["error"] == "broker unavailable"


def test_newest_records_read_a_few_partitions_a_pass(cluster, make_server_, monkeypatch):
    """With more partitions to read than a pass may, the largest are read first and the rest by
    later passes; a pass over idle topics reads none again."""
    monkeypatch.setattr(metadata, "OVERVIEW_FRESH_S", 0.2)
    monkeypatch.setattr(metadata, "LAST_READS_MAX", 2)
    reads = []
    real = metadata._read_last
    monkeypatch.setattr(metadata, "_read_last", lambda c, want: (reads.append(set(want)),
                                                                  real(c, want))[1])
    prefix = f"kt-ov-reads.{uuid.uuid4().hex[:8]}."
    server = make_server_(anonymous_topics=f"{prefix}**")
    sizes = {f"{prefix}a": 1, f"{prefix}b": 3, f"{prefix}c": 2}
    for name, n in sizes.items():
        cluster.create_topic(name)
        cluster.produce(name, [("k", "v", 0, None, T0 + n)] * n, flush_each=True)
    first = by_name(get(server, "/api/overview")[1])
    assert {n: t["last_record"] for n, t in first.items()} == {
        f"{prefix}a": None, f"{prefix}b": T0 + 3, f"{prefix}c": T0 + 2}
    assert reads == [{TopicPartition(f"{prefix}b", 0), TopicPartition(f"{prefix}c", 0)}]

    def last_of_a():
        return by_name(get(server, "/api/overview")[1])[f"{prefix}a"]["last_record"]
    assert wait_for(last_of_a, what="the last partition read") == T0 + 1
    done = len(reads)
    wait_for(lambda: get(server, "/api/overview") and len(reads) >= done + 2,
             what="two more passes")
    assert not any(reads[done:]), "idle partitions read again"


class _FakeClient:
    """Enough of a KafkaConsumer for a pass: two topics, one the cluster then refuses."""

    def topics(self):
        return {"ok", "refused"}

    def partitions_for_topic(self, topic):
        return {0}

    def beginning_offsets(self, tps, timeout_ms):
        if any(tp.topic == "refused" for tp in tps):
            raise TopicAuthorizationFailedError({"refused"})
        return {tp: 0 for tp in tps}

    def end_offsets(self, tps, timeout_ms):
        return {tp: 0 for tp in tps}


def test_a_topic_refused_mid_pass_is_left_out_and_not_asked_again():
    calls = []

    class FakeMetadata:
        config = Config(request_timeout_ms=1000)

        def _call(self, fn):
            calls.append(fn)
            return fn(_FakeClient())

    overview = metadata.Overview(FakeMetadata())
    answer = overview.snapshot(lambda name: True)
    assert answer == {"topics": [{"name": "ok", "partitions": 1, "retained": 0, "rate": None,
                                  "last_record": None}], "total": 2, "truncated": False}
    assert overview.snapshot(lambda name: True) == answer and len(calls) == 1
