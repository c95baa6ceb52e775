"""``GET /api/topics/<topic>/export``: a bounded range as NDJSON or CSV, masked as frames are,
filtered, capped in records and bytes, refused where a tail would be, and its consumer thread
released when the response ends."""
from __future__ import annotations

import csv
import io
import json
import urllib.error
import urllib.request
from urllib.parse import quote

from helpers import wait_for
from kafkatail.security.tokens import hash_token

CARD = "4111111111111111"


def get(server, path: str, token: str | None = None) -> tuple[int, str, dict]:
    req = urllib.request.Request(server.url(path))
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read().decode(), dict(err.headers)


def produce(cluster, t: str, n: int = 10, partitions: int = 1) -> None:
    # One record a batch: an export ends at the end offsets it starts with, and Tansu's end
    # offset is the last batch's base offset + 1 (see cluster.produce).
    cluster.produce(t, [(f"k{i}", json.dumps({"i": i, "card": CARD}), i % partitions,
                         [("h", b"v")]) for i in range(n)], flush_each=True)


def test_ndjson_of_every_partition_to_the_end_then_an_end_line(cluster, server, backend):
    t = cluster.create_topic(partitions=2)
    produce(cluster, t, 10, partitions=2)
    status, body, headers = get(server, f"/api/topics/{t}/export")
    assert status == 200 and headers["Content-Type"].startswith("application/x-ndjson")
    assert f'filename="{t}.ndjson"' in headers["Content-Disposition"]
    lines = [json.loads(x) for x in body.splitlines()]
    records, end = lines[:-1], lines[-1]
    assert sorted(r["value"]["i"] for r in records) == list(range(10))
    assert all(r["topic"] == t and r["headers"] == [["h", "v"]] for r in records)
    assert end["type"] == "end" and "until" in end["reason"]
    wait_for(lambda: not server.pool.threads(), 10, "the export's consumer thread to end")


def test_csv_with_a_range_a_where_and_masking(cluster, make_server_):
    server = make_server_(mask=[{"topics": ["**"], "fields": ["value.card"]}])
    t = cluster.create_topic()
    produce(cluster, t, 10)
    where = quote("value.i % 2 == 0")
    status, body, headers = get(server, f"/api/topics/{t}/export?format=csv&from=offsets:0:2"
                                        f"&until=offsets:0:8&where={where}")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [int(r["offset"]) for r in rows] == [2, 4, 6]
    assert [json.loads(r["value"]) for r in rows] == [{"i": i, "card": "***"} for i in (2, 4, 6)]
    assert CARD not in body and rows[0]["encoding"] == "json"


def test_caps_in_records_and_bytes(cluster, make_server_):
    t = cluster.create_topic()
    produce(cluster, t, 20)
    by_records = make_server_(export_max_records=4)
    _, body, _ = get(by_records, f"/api/topics/{t}/export?max=100")
    lines = [json.loads(x) for x in body.splitlines()]
    assert [r["offset"] for r in lines[:-1]] == [0, 1, 2, 3]
    assert lines[-1] == {"type": "end", "reason": "max 4 records reached"}
    by_bytes = make_server_(export_max_bytes=300)
    _, body, _ = get(by_bytes, f"/api/topics/{t}/export")
    lines = [json.loads(x) for x in body.splitlines()]
    assert lines[-1] == {"type": "end", "reason": "export_max_bytes (300) reached"}
    assert 1 <= len(lines) - 1 < 20 and len(body) - len(json.dumps(lines[-1])) - 1 <= 300


def test_refusals(cluster, make_server_):
    token = "viewer-token"
    server = make_server_(anonymous_topics="", tokens={
        "viewer": {"sha256": hash_token(token), "topics": ["kt-export-ok.**"]}})
    ok = cluster.create_topic(cluster.unique_topic("kt-export-ok"))
    other = cluster.create_topic()
    assert get(server, f"/api/topics/{ok}/export")[0] == 401
    assert get(server, f"/api/topics/{other}/export", token)[0] == 403
    assert get(server, f"/api/topics/{ok}/export?format=xml", token)[0] == 400
    status, body, _ = get(server, f"/api/topics/{ok}/export?where=value.(", token)
    assert status == 400 and "where: line 1" in json.loads(body)["error"]
    assert get(server, "/api/topics/kt-export-ok.none/export", token)[0] == 404
    assert get(server, f"/api/topics/{ok}/export", token)[0] == 200


def test_an_export_waiting_on_a_bound_ahead_ends_when_idle(cluster, server, monkeypatch):
    from kafkatail.web import export
    monkeypatch.setattr(export, "EXPORT_IDLE_S", 1.0)
    t = cluster.create_topic()
    produce(cluster, t, 3)
    _, body, _ = get(server, f"/api/topics/{t}/export?until=offsets:0:1000")
    lines = [json.loads(x) for x in body.splitlines()]
    assert [r["offset"] for r in lines[:-1]] == [0, 1, 2]
    assert lines[-1] == {"type": "end", "reason": "no record for 1 s"}
    wait_for(lambda: not server.pool.threads(), 10, "the export's consumer thread to end")


def test_csv_cells_cannot_start_a_formula(cluster, server):
    t = cluster.create_topic()
    cluster.produce(t, [("=HYPERLINK(\"http://x\")", "+1+2"), ("@SUM(A1)", "-3")],
                    flush_each=True)
    _, body, _ = get(server, f"/api/topics/{t}/export?format=csv")
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [(r["key"], r["value"]) for r in rows] == [("'=HYPERLINK(\"http://x\")", "'+1+2"),
                                                      ("'@SUM(A1)", "-3")]


def test_ndjson_is_masked_and_an_unmasked_token_sees_the_record(cluster, make_server_):
    ops, plain = "ops-export-token", "plain-export-token"
    server = make_server_(mask=[{"topics": ["**"], "fields": ["value.card"], "action": "hash"}],
                          anonymous_topics="", tokens={
                              "ops": {"sha256": hash_token(ops), "topics": ["**"],
                                      "unmasked": True},
                              "plain": {"sha256": hash_token(plain), "topics": ["**"]}})
    t = cluster.create_topic()
    produce(cluster, t, 3)
    _, masked, _ = get(server, f"/api/topics/{t}/export", plain)
    assert CARD not in masked
    cards = {json.loads(x)["value"]["card"] for x in masked.splitlines()[:-1]}
    assert len(cards) == 1 and cards.pop().startswith("hash:")
    _, raw, _ = get(server, f"/api/topics/{t}/export", ops)
    assert [json.loads(x)["value"]["card"] for x in raw.splitlines()[:-1]] == [CARD] * 3
