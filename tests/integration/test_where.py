"""``where=``: a CEL expression over each record (nested fields, headers, numbers and strings,
missing fields, the record's position), as a query parameter, as a live control and in
``kafkatail tail``; a mistake is 4400 with the parser's position."""
from __future__ import annotations

import json
import subprocess
import sys
from urllib.parse import quote

from helpers import tail

RECORDS = [
    (f"k{i}", json.dumps({"user": {"id": i, "name": f"u{i}"}, "amount": i * 500,
                          "status": "FAILED" if i % 3 == 0 else "PAID"}),
     None, [("trace-id", f"t{i % 2}".encode())])
    for i in range(9)
] + [("text", "plain text, not JSON", None, None)]


def ids(records):
    return [r["value"]["user"]["id"] for r in records if r["encoding"] == "json"]


def query(expr: str) -> str:
    return "from=earliest&where=" + quote(expr)


def test_nested_fields_headers_numbers_and_strings(cluster, server, backend):
    t = cluster.create_topic()
    cluster.produce(t, RECORDS)
    cases = {
        'value.user.id == 4': [4],
        'value.status == "FAILED" && value.amount > 1000.0': [3, 6],
        'headers["trace-id"] == "t1" && value.user.name.startsWith("u")': [1, 3, 5, 7],
        'value.nope == 1 || value.user.id == 8': [8],   # an error on one side is not a match
        'offset >= 7 && partition == 0': [7, 8],
        'value.contains("not JSON")': [],
    }
    for expr, want in cases.items():
        c = tail(server, t, query(expr))
        c.status("caught-up")
        assert ids(c.records) == want, expr
    text = tail(server, t, query('value.contains("not JSON")'))
    assert [r["value"] for r in text.collect(1)] == ["plain text, not JSON"]


def test_a_missing_field_or_wrong_type_does_not_match(cluster, server):
    t = cluster.create_topic()
    cluster.produce(t, RECORDS)
    c = tail(server, t, query('value.user.id > "x" || value.missing.deeper == 2'))
    c.status("caught-up")
    assert c.records == []


def test_a_mistake_is_4400_with_the_position(server):
    c = tail(server, "any", query("value.user.id == "))
    code, reason = c.closed()
    assert code == 4400 and reason.startswith("where: line 1, column 17: Syntax error"), reason
    c = tail(server, "any", query("nope == 1"))
    assert c.closed() == (4400, "where: line 1, column 1: undeclared reference to 'nope' "
                                "(in container '')")


def test_a_live_change_applies_to_later_records(cluster, server, backend):
    t = cluster.create_topic()
    c = tail(server, t)
    c.status("live")
    c.send({"op": "filter", "where": "value.amount >= 3000"})
    echoed = c.until(lambda f: f["type"] == "status" and f["status"] == "filter")
    assert echoed["where"] == "value.amount >= 3000"
    cluster.produce(t, RECORDS)
    assert ids(c.collect(3)) == [6, 7, 8]
    c.send({"op": "filter", "where": "value.("})
    error = c.until(lambda f: f["type"] == "error")
    assert error["code"] == 4400 and "column" in error["message"]


def test_kafkatail_tail_where(cluster, server):
    t = cluster.create_topic()
    cluster.produce(t, RECORDS)
    r = subprocess.run([sys.executable, "-m", "kafkatail", "tail", t, "--url",
                        f"ws://127.0.0.1:{server.port}", "-o", "earliest", "-c", "2", "--json",
                        "--where", 'value.status == "FAILED" && value.user.id > 0'],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert [json.loads(x)["value"]["user"]["id"] for x in r.stdout.splitlines()] == [3, 6]
