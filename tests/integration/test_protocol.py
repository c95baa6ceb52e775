"""The public tail protocol against the real broker: every from form, filters, formats, closes."""
from __future__ import annotations

import base64
import json
import time
from datetime import datetime, timezone

import pytest
import websocket

from helpers import WsClient, offsets, tail


@pytest.fixture
def topic10(cluster):
    """A one-partition topic with offsets 0..9, one record per batch (see broker-notes)."""
    t = cluster.create_topic()
    cluster.produce(t, [(f"k{i}", f"v{i}") for i in range(10)], flush_each=True)
    return t


def test_earliest_in_order_per_partition(cluster, server, backend):
    t = cluster.create_topic(partitions=3)
    cluster.produce(t, [(f"k{i}", f"v{i}", i % 3) for i in range(60)])
    c = tail(server, t, "from=earliest")
    hello = c.hello()
    assert [p["start"] for p in hello["partitions"]] == [0, 0, 0]
    recs = c.collect(60)
    for p in range(3):
        assert offsets(recs, p) == list(range(20))
        assert [r["value"] for r in recs if r["partition"] == p] == [f"v{i}" for i in range(p, 60, 3)]
    c.status("caught-up")


def test_latest_sees_only_new_records(cluster, server, topic10, backend):
    c = tail(server, topic10)
    hello = c.hello()
    assert hello["partitions"][0]["start"] == 10 and hello["options"]["from"] == "latest"
    c.status("live")
    cluster.produce(topic10, [("new", "n1"), ("new", "n2")])
    recs = c.collect(2)
    assert [(r["offset"], r["value"]) for r in recs] == [(10, "n1"), (11, "n2")]


def test_last_n_per_partition(cluster, server, backend):
    t = cluster.create_topic(partitions=2)
    cluster.produce(t, [(None, f"v{i}", i % 2) for i in range(20)], flush_each=True)
    c = tail(server, t, "from=-3")
    assert [p["start"] for p in c.hello()["partitions"]] == [7, 7]
    recs = c.collect(6)
    assert offsets(recs, 0) == [7, 8, 9] and offsets(recs, 1) == [7, 8, 9]


def test_last_n_larger_than_partition_starts_at_earliest(server, topic10):
    c = tail(server, topic10, "from=-500")
    assert c.hello()["partitions"][0]["start"] == 0
    assert offsets(c.collect(10)) == list(range(10))


def test_from_timestamp_epoch_and_iso(cluster, server, backend):
    t = cluster.create_topic()
    # An hour ago, on a whole second: Apache Kafka 4 refuses timestamps over an hour ahead of
    # its clock (log.message.timestamp.after.max.ms).
    base = (int(time.time()) - 3600) * 1000
    cluster.produce(t, [(None, f"v{i}", 0, None, base + i * 1000) for i in range(6)])
    # Tansu answers offset 0 to every time lookup (Apache Kafka the first at/after it): the
    # hello start is the broker's answer, the records delivered are the ones at/after the time.
    c = tail(server, t, f"from=ts:{base + 3000}")
    assert c.hello()["partitions"][0]["start"] <= 3
    assert offsets(c.collect(3)) == [3, 4, 5]
    c.status("caught-up")
    assert len(c.records) == 3
    iso = datetime.fromtimestamp(base / 1000 + 4, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    c2 = tail(server, t, f"from=ts:{iso}")
    assert [r["offset"] for r in c2.collect(2)] == [4, 5]


def test_offsets_resume_has_no_gap_and_no_duplicate(cluster, server, backend):
    t = cluster.create_topic(partitions=2)
    cluster.produce(t, [(None, f"v{i}", i % 2) for i in range(40)])
    first = tail(server, t, "from=earliest&max=15")
    got = first.collect(15)
    assert first.closed()[0] == 1000
    cursor = {}
    for r in got:
        cursor[r["partition"]] = r["offset"] + 1
    resume = ",".join(f"{p}:{cursor.get(p, 0)}" for p in (0, 1))
    second = tail(server, t, f"from=offsets:{resume}&partitions=0,1")
    rest = second.collect(25)
    combined = got + rest
    for p in (0, 1):
        assert offsets(combined, p) == list(range(20))


def test_partition_selection(cluster, server, backend):
    t = cluster.create_topic(partitions=3)
    cluster.produce(t, [(None, f"v{i}", i % 3) for i in range(30)])
    c = tail(server, t, "from=earliest&partitions=2,0")
    assert [p["partition"] for p in c.hello()["partitions"]] == [0, 2]
    recs = c.collect(20)
    assert {r["partition"] for r in recs} == {0, 2}
    c.status("caught-up")
    assert len(c.records) == 20


def test_filter_regex_and_max(cluster, server):
    t = cluster.create_topic()
    lines = [("svc-a", "INFO ok"), ("svc-b", "ERROR disk full"), ("svc-a", "error: timeout 30ms"),
             ("svc-c", "WARN slow 900ms"), ("error-key", "INFO fine")]
    cluster.produce(t, lines * 3)
    c = tail(server, t, "from=earliest&filter=error")
    recs = c.collect(9)
    c.status("caught-up")
    assert len(c.records) == 9 and {r["key"] for r in recs} == {"svc-b", "svc-a", "error-key"}
    r = tail(server, t, "from=earliest&regex=%5Cd%2Bms%24")
    r.collect(6)
    r.status("caught-up")
    assert {x["value"] for x in r.records} == {"error: timeout 30ms", "WARN slow 900ms"}
    m = tail(server, t, "from=earliest&filter=error&max=4")
    assert len(m.collect(4)) == 4
    assert m.status("end")["reason"] == "max reached"
    code, reason = m.closed()
    assert code == 1000 and "max 4" in reason
    assert len(m.records) == 4


def test_max_delivers_exactly_n_across_batches(cluster, server):
    """``max=N`` counts across the batches the tail delivers (a poll's records each): N=7 ends
    inside the third batch of three, N=6 exactly at the end of the second. Either way the client
    gets exactly N records, then status end and a 1000 close, with nothing after; a budget
    spent exactly at a batch's end must end the tail then, not when the next batch comes."""
    t = cluster.create_topic()
    seven, six = tail(server, t, "max=7"), tail(server, t, "max=6")
    for c in (seven, six):
        c.status("live")

    def batch(b: int) -> None:
        """Three records in one produce, each client reading them before the next is sent."""
        cluster.produce(t, [(None, f"b{b}-{i}") for i in range(3)])

    batch(0)
    for c in (seven, six):
        c.collect(3)
    batch(1)
    six.collect(6)
    # Spent exactly at the end of this batch: the end comes now, with no third batch sent.
    assert six.status("end", timeout=10)["reason"] == "max reached"
    assert six.closed() == (1000, "max 6 records reached")
    assert [r["offset"] for r in six.records] == list(range(6))
    seven.collect(6)
    batch(2)
    seven.collect(7)
    assert seven.status("end")["reason"] == "max reached"
    assert seven.closed() == (1000, "max 7 records reached")
    assert [r["offset"] for r in seven.records] == list(range(7))
    assert seven.records[-1]["value"] == "b2-0"
    for c in (six, seven):  # closed() read every frame up to the close: none with records
        end = max(i for i, f in enumerate(c.frames) if f.get("status") == "end")
        assert not [f for f in c.frames[end:] if f["type"] == "messages"], c.frames[end:]


def test_live_filter_change_and_pause_resume(cluster, server, backend):
    t = cluster.create_topic()
    c = tail(server, t, "filter=apple")
    c.hello()
    c.status("live")
    cluster.produce(t, [(None, "apple 1"), (None, "pear 1")])
    assert [r["value"] for r in c.collect(1)] == ["apple 1"]
    c.send({"op": "filter", "filter": "pear"})
    assert c.status("filter")["filter"] == "pear"
    cluster.produce(t, [(None, "apple 2"), (None, "pear 2")])
    assert c.collect(2)[-1]["value"] == "pear 2"
    c.send({"op": "pause"})
    c.status("paused")
    cluster.produce(t, [(None, "pear 3")])
    with pytest.raises(Exception):
        c.until(lambda f: f["type"] == "messages", timeout=1.0)
    c.send({"op": "resume"})
    c.status("live")
    assert c.collect(3)[-1]["value"] == "pear 3"


def test_formats_keys_headers_nulls_binary(cluster, server, backend):
    t = cluster.create_topic()
    cluster.produce(t, [
        (b"k1", b'{"id": 1, "items": [1, 2]}', 0, [("trace", b"abc"), ("bin", b"\xff\x01")]),
        (b"tombstone", None),
        (b"\xfe\xff", b"\x00\x01\xff"),
        (b"k4", b"plain text"),
    ])
    auto = tail(server, t, "from=earliest").collect(4)
    assert auto[0]["value"] == {"id": 1, "items": [1, 2]} and auto[0]["encoding"] == "json"
    assert auto[0]["headers"] == [["trace", "abc"], ["bin", "/wE=", "base64"]]
    assert auto[1]["value"] is None and auto[1]["encoding"] == "null"
    assert auto[2]["key_encoding"] == "base64" and auto[2]["encoding"] == "base64"
    assert base64.b64decode(auto[2]["value"]) == b"\x00\x01\xff"
    assert auto[3]["value"] == "plain text" and auto[3]["size"] == 2 + 10
    text = tail(server, t, "from=earliest&format=text").collect(4)
    assert text[0]["value"] == '{"id": 1, "items": [1, 2]}' and text[0]["encoding"] == "text"
    b64 = tail(server, t, "from=earliest&format=base64").collect(4)
    assert base64.b64decode(b64[3]["value"]) == b"plain text"
    js = tail(server, t, "from=earliest&format=json").collect(4)
    assert js[0]["encoding"] == "json" and js[3]["encoding"] == "text"


# What confluent-kafka's serializers write (issue #24): magic 0, a 4-byte schema id, then Avro
# (here a record {"id": "order1", "qty": 1, "price": 12.5}) or Protobuf with its message index.
AVRO_FRAMED = b"\x00\x00\x00\x00\x07\x0corder1\x02\x00\x00\x00\x00\x00\x00\x29\x40"
PROTO_FRAMED = b"\x00\x00\x00\x01\x2c\x00\x0a\x05hello\x10\x01"


def test_schema_framed_records_show_their_schema_ids_never_as_text(cluster, server, backend):
    """Without a registry, framed keys and values are recognised, from earliest and live: the
    value as its schema id and payload, the key as base64; UTF-8 binary is never text."""
    t = cluster.create_topic()
    # One batch per record: Tansu's latest offset is the last batch's base offset + 1.
    cluster.produce(t, [(PROTO_FRAMED, AVRO_FRAMED), (b"k", b"\x0a\x05hello\x12\x01x")],
                    flush_each=True)
    live = tail(server, t)
    live.status("live")
    for got in (tail(server, t, "from=earliest").collect(2), None):
        if got is None:
            cluster.produce(t, [(PROTO_FRAMED, AVRO_FRAMED), (b"k", b"\x0a\x05hello\x12\x01x")])
            got = live.collect(2)
        framed, proto = got[:2]
        assert framed["value"] == {"schema_id": 7,
                                   "payload": base64.b64encode(AVRO_FRAMED[5:]).decode()}
        assert (framed["encoding"], framed["value_schema_id"]) == ("json", 7)
        assert (framed["key_encoding"], framed["key_schema_id"]) == ("base64", 300)
        assert base64.b64decode(framed["key"]) == PROTO_FRAMED
        assert proto["encoding"] == "base64" and "value_schema_id" not in proto
        assert base64.b64decode(proto["value"]) == b"\x0a\x05hello\x12\x01x"


def test_oversized_value_is_truncated(cluster, make_server_):
    server = make_server_(max_value_bytes=1024)
    t = cluster.create_topic()
    big = json.dumps({"blob": "x" * 5000}).encode()
    cluster.produce(t, [(b"big", big), (b"small", b"ok")])
    recs = tail(server, t, "from=earliest").collect(2)
    assert recs[0]["truncated"] is True and len(recs[0]["value"]) == 1024
    assert recs[0]["size"] == 3 + len(big) and "truncated" not in recs[1]


def test_large_frames_arrive_whole(cluster, make_server_):
    """2 MB of values in one batch: the frame is cut by neither short writes nor pings. (Pings
    every 0.5 s: this process is client and server, and a peer silent for two intervals is
    dropped; at 0.2 s a busy 2-core machine running Kafka beside it dropped the client once.)"""
    server = make_server_(ping_interval_s=0.5)
    t = cluster.create_topic()
    cluster.produce(t, [(None, "é" * 100_000) for _ in range(10)])
    recs = tail(server, t, "from=earliest").collect(10)
    assert all(r["value"] == "é" * 100_000 for r in recs)


@pytest.mark.parametrize("query,needle", [
    ("from=bogus", "from:"), ("regex=(", "regex:"), ("partitions=7", "no partition 7"),
    ("format=xml", "format:"), ("max=-1", "max:"),
    # The caps, one past each: a client cannot ask for an unbounded replay or budget.
    ("max=10000001", "max <= 10000000"), ("from=-100001", "N <= 100000"),
])
def test_bad_requests_close_4400_with_reason(server, topic10, query, needle):
    c = tail(server, topic10, query)
    err = c.until(lambda f: f["type"] == "error")
    assert err["code"] == 4400 and needle in err["message"]
    code, reason = c.closed()
    assert code == 4400 and needle in reason


def test_unknown_topic_4404_and_not_created(cluster, server, backend):
    name = cluster.unique_topic("typo")
    c = tail(server, name)
    assert c.until(lambda f: f["type"] == "error")["code"] == 4404
    assert c.closed() == (4404, f"unknown topic {name}")
    import urllib.request
    topics = json.load(urllib.request.urlopen(server.url("/api/topics")))["topics"]
    assert name not in {t["name"] for t in topics}, "a viewer created the topic it asked for"


def test_bad_control_frames_get_error_frames_not_a_crash(server, topic10):
    c = tail(server, topic10, "from=earliest")
    c.collect(10)
    for bad in ["not json", "[1]", '{"op": "explode"}', '{"op": "filter", "regex": "("}',
                '{"op": "filter", "filter": 5}', b"\xff\xfe"]:
        if isinstance(bad, bytes):
            c.ws.send_binary(bad)
        else:
            c.send(bad)
        err = c.until(lambda f: f["type"] == "error")
        assert err["code"] == 4400
    c.send({"op": "filter", "filter": "v3"})
    c.status("filter")


def test_inbound_frame_too_large_1009(make_server_, topic10):
    server = make_server_(max_inbound_bytes=1024)
    c = tail(server, topic10)
    c.hello()
    c.send({"op": "filter", "filter": "x" * 4096})
    assert c.closed()[0] == 1009


def test_capacity_limits_1013(cluster, make_server_, topic10):
    server = make_server_(max_tails_per_topic=2)
    held = [tail(server, topic10) for _ in range(2)]
    for h in held:
        h.hello()
    c = tail(server, topic10)
    err = c.until(lambda f: f["type"] == "error")
    assert err["code"] == 1013 and "too many tails" in err["message"]
    assert c.closed()[0] == 1013
    other = cluster.create_topic()
    tail(server, other).hello()


def test_per_client_and_total_limits(make_server_, topic10):
    server = make_server_(max_tails_per_client=1)
    tail(server, topic10).hello()
    assert tail(server, topic10).closed()[0] == 1013
    server2 = make_server_(max_tails=1)
    tail(server2, topic10).hello()
    code, reason = tail(server2, topic10).closed()
    assert code == 1013 and "capacity" in reason


def test_internal_error_1011(server, topic10, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("decoder bug")
    monkeypatch.setattr("kafkatail.tail.feed.encode_batch", boom)
    monkeypatch.setattr("kafkatail.tail.feed.decode_batch", boom)
    c = tail(server, topic10, "from=earliest")
    err = c.until(lambda f: f["type"] == "error")
    assert err == {"type": "error", "code": 1011, "message": "internal error"}
    assert c.closed()[0] == 1011


def test_server_shutdown_sends_1001(server, topic10):
    clients = [tail(server, topic10) for _ in range(5)]
    for c in clients:
        c.hello()
    server.stop()
    for c in clients:
        assert c.closed() == (1001, "server shutting down")
    assert len(server.pool) == 0


def test_http_api(cluster, server, topic10):
    import urllib.request
    topics = json.load(urllib.request.urlopen(server.url("/api/topics")))["topics"]
    assert {"name": topic10, "partitions": 1} in topics
    detail = json.load(urllib.request.urlopen(server.url(f"/api/topics/{topic10}")))
    assert detail["partitions"] == [{"partition": 0, "earliest": 0, "latest": 10}]
    assert json.load(urllib.request.urlopen(server.url("/readyz")))["status"] == "ready"
    assert json.load(urllib.request.urlopen(server.url("/healthz")))["status"] == "ok"
    for path, status in (("/api/topics/no.such", 404), ("/api/topics/bad%20name", 400)):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(server.url(path))
        assert e.value.code == status


def test_cross_site_origin_refused_4403(server, make_server_, topic10, caplog):
    ws = websocket.create_connection(server.ws_url(f"/ws/tail/{topic10}"),
                                     origin="http://evil.example", timeout=10)
    evil = WsClient.adopt(ws)
    assert evil.until(lambda f: f["type"] == "error")["code"] == 4403
    assert evil.closed() == (4403, "origin not allowed")
    refused = [r for r in caplog.records
               if r.name == "kafkatail.web.socket" and "refused" in r.getMessage()]
    assert len(refused) == 1 and "'http://evil.example'" in refused[0].getMessage(), caplog.text
    assert not refused[0].exc_info  # one line for an operator, no stack trace for user input
    same = websocket.create_connection(server.ws_url(f"/ws/tail/{topic10}"),
                                       origin=f"http://127.0.0.1:{server.port}", timeout=10)
    assert WsClient.adopt(same).hello()["topic"] == topic10
    listed = make_server_(allowed_origins="https://app.example")
    ok = websocket.create_connection(listed.ws_url(f"/ws/tail/{topic10}"),
                                     origin="https://app.example", timeout=10)
    assert WsClient.adopt(ok).hello()["topic"] == topic10


def test_two_viewers_of_one_topic_each_get_every_record(cluster, server, backend):
    """No consumer group: a group per socket would split the partitions between the viewers."""
    t = cluster.create_topic(partitions=3)
    a, b = tail(server, t, "from=earliest"), tail(server, t, "from=earliest")
    cluster.produce(t, [(None, f"v{i}", i % 3) for i in range(30)])
    for c in (a, b):
        assert sorted(r["value"] for r in c.collect(30)) == sorted(f"v{i}" for i in range(30))


def test_ends_frames_carry_the_high_watermark_for_the_lag(cluster, server, backend):
    t = cluster.create_topic(partitions=2)
    c = tail(server, t, "filter=nothing-matches")
    c.status("live")
    cluster.produce(t, [(None, f"v{i}", i % 2) for i in range(30)])
    frame = c.until(lambda f: f["type"] == "ends" and f["partitions"] == {"0": 15, "1": 15})
    assert not c.records  # the filter hid every record, yet the client knows how far the topic is
    assert frame["partitions"] == {"0": 15, "1": 15}


def test_values_strict_json_cannot_carry_reach_every_viewer_as_text(cluster, server, caplog):
    """One record whose value is NaN or 1e400 used to make a poll's frame unencodable: every
    session of the feed raised on it, and a resumed page met it again in the replay window.
    NaN is not JSON, so it goes as text; 1e400 is, and goes as the producer's own text."""
    t = cluster.create_topic()
    viewers = [tail(server, t) for _ in range(2)]
    for v in viewers:
        v.status("live")
    cluster.produce(t, [(None, b'{"n": 0}'), (None, b'{"x": NaN}'), (None, b'{"y": 1e400}'),
                        (None, b'{"n": 3}')])
    for v in viewers:
        recs = v.collect(4)
        assert [r["encoding"] for r in recs] == ["json", "text", "json", "json"], recs
        assert recs[1]["value"] == '{"x": NaN}' and recs[2]["value"] == {"y": float("inf")}
    assert not [r for r in caplog.records if r.exc_info], caplog.text
