"""The page's where box, "between" (until=), and its downloads, in headless Chromium against the
in-process server and the real broker: a CEL where filters the list (from the URL and live), a
refused one shows at its box while the tail goes on, an end time ends the tail at its bound, the
list downloads as CSV with a formula guard, and "Range…" saves the server's export of the form's
range (fetched with the bearer token a link could not carry)."""
from __future__ import annotations

import csv
import io
import json
import time
import urllib.request
import uuid
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pytest

By = pytest.importorskip("selenium.webdriver.common.by", reason="selenium not installed (dev extra)").By
Keys = pytest.importorskip("selenium.webdriver.common.keys").Keys
Select = pytest.importorskip("selenium.webdriver.support.select").Select

from helpers import wait_for
from kafkatail.security.tokens import hash_token

from .page import conn_state, markers, open_page, probe, rows, state, wait_rows, wait_state

pytestmark = pytest.mark.timeout(90)

CSV_HEADER = ["partition", "offset", "timestamp", "key", "key_encoding", "value", "encoding", "headers"]


def values(browser) -> list:
    return browser.execute_script("return window.kafkatail.records().map((r) => r.value);")


def query_of(browser) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(browser.current_url).query).items()}


def retype(browser, element_id: str, text: str, enter: bool = False) -> None:
    """Replace a box's text as typing over it would (Selenium's clear() fires a change, which
    would apply an empty where first)."""
    box = browser.find_element(By.ID, element_id)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys((text or Keys.DELETE) + (Keys.ENTER if enter else ""))


def local_input(browser, ms: int) -> str:
    """``ms`` as a datetime-local value in the browser's zone, to the second."""
    return browser.execute_script(
        "const d = new Date(arguments[0]);"
        "return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 19);", ms)


def set_input(browser, element_id: str, value: str) -> None:
    """Set a field as the user would (a picker cannot be typed into reliably) and fire change."""
    browser.execute_script(
        "const box = document.getElementById(arguments[0]); box.value = arguments[1];"
        "box.dispatchEvent(new Event('change', {bubbles: true}));", element_id, value)


def where_error(browser) -> str:
    """The text of the error under the where box, or '' while it is hidden."""
    return browser.execute_script(
        "const e = document.getElementById('where-error'); return e.hidden ? '' : e.textContent;")


def finished(folder, pattern: str) -> list:
    """Downloads matching ``pattern`` once Chromium has finished writing them (it reserves the
    name with an empty file and writes into a .crdownload beside it)."""
    if any(folder.glob("*.crdownload")):
        return []
    return [p for p in folder.glob(pattern) if p.stat().st_size > 0]


def allow_downloads(browser, folder) -> None:
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(folder)})


def orders(first: int, last: int) -> list[tuple]:
    """JSON orders: user 1 on every third, a large amount on every fourth, an error on the fifth."""
    out = []
    for i in range(first, last):
        doc = {"n": i, "user": {"id": i % 3}, "amount": 2000.5 if i % 4 == 0 else 10.0}
        if i % 5 == 0:
            doc["error"] = "declined"
        out.append((f"{'eu' if i % 2 else 'us'}-{i}", json.dumps(doc), None, [("trace-id", f"t{i}".encode())]))
    return out


def test_where_filters_the_list_from_the_url_and_live(cluster, server, browser):
    t = cluster.create_topic()
    cluster.produce(t, orders(0, 12))
    where = 'value.user.id == 1 && headers["trace-id"] != "t4"'
    open_page(browser, server, f"topic={t}&from=earliest&where={quote(where)}")
    wait_rows(browser, 3)
    assert [v["n"] for v in values(browser)] == [1, 7, 10]
    assert browser.find_element(By.ID, "where").get_attribute("value") == where
    assert query_of(browser)["where"] == where  # kept in the address, like filter and regex
    # Changed live, on the open socket: Enter applies it; the server's echo is a marker.
    retype(browser, "where", "value.amount > 1000.0", enter=True)
    wait_for(lambda: any("filter applied: where value.amount > 1000.0" in m for m in markers(browser)),
             what="the server's echo of the where")
    assert query_of(browser)["where"] == "value.amount > 1000.0"
    cluster.produce(t, orders(12, 30))
    wait_for(lambda: [v["n"] for v in values(browser)][3:] == [12, 16, 20, 24, 28],
             what="only the large amounts after the change")
    # With a substring too: the one control frame carries both, and both must pass.
    retype(browser, "filter", "eu-")
    wait_for(lambda: any('substring "eu-" and where value.amount > 1000.0' in m for m in markers(browser)),
             what="the echo of filter and where")
    assert query_of(browser)["filter"] == "eu-"
    retype(browser, "where", "has(value.error)", enter=True)
    wait_for(lambda: any("where has(value.error)" in m for m in markers(browser)), what="the third echo")
    cluster.produce(t, orders(30, 46))
    # keys eu-<odd>: of 30..45 the odd ones with an error are 35 and 45
    wait_for(lambda: [v["n"] for v in values(browser)][8:] == [35, 45], what="odd keys with an error")
    assert probe(browser)["sockets"] == 1
    assert state(browser)["conn"] in ("live", "caught-up")


def test_a_refused_where_shows_at_its_box_and_the_tail_goes_on(cluster, server, browser):
    t = cluster.create_topic()
    cluster.produce(t, orders(0, 6))
    open_page(browser, server, f"topic={t}&from=earliest&where={quote('has(value.error)')}")
    wait_rows(browser, 2)
    assert [v["n"] for v in values(browser)] == [0, 5]
    box = browser.find_element(By.ID, "where")
    assert where_error(browser) == "" and box.get_attribute("aria-invalid") is None
    # The second > is at column 15 (1-based); the error and a caret under it show at the box.
    retype(browser, "where", "value.amount >> 5", enter=True)
    text = wait_for(lambda: where_error(browser), what="the where error at its box")
    assert text.startswith("where: line 1, column 15: Syntax error")
    caret = browser.find_element(By.CSS_SELECTOR, "#where-error .caret").text
    assert caret.splitlines() == ["value.amount >> 5", " " * 14 + "^"]
    assert box.get_attribute("aria-invalid") == "true"
    assert browser.find_element(By.ID, "where-error").is_displayed()
    assert any("filter not applied" in m and "column 15" in m for m in markers(browser))
    # The tail goes on, with the where it had.
    cluster.produce(t, orders(6, 16))
    wait_for(lambda: [v["n"] for v in values(browser)] == [0, 5, 10, 15],
             what=lambda: (values(browser), markers(browser), state(browser)))
    assert conn_state(browser) in ("live", "caught-up") and probe(browser)["sockets"] == 1
    # Markup in a refused expression is shown as text.
    img = "<img src=x onerror=alert(1)>"
    retype(browser, "where", f'key == "{img}" &&', enter=True)
    wait_for(lambda: img in where_error(browser), what="the second error, with the expression")
    assert browser.execute_script("return document.querySelectorAll('#where-box img').length;") == 0
    # The next accepted where clears it.
    retype(browser, "where", 'key.startsWith("eu-")', enter=True)
    wait_for(lambda: where_error(browser) == "", what="the error cleared by the echo")
    assert box.get_attribute("aria-invalid") is None
    cluster.produce(t, orders(16, 20))
    wait_for(lambda: [v["n"] for v in values(browser)][4:] == [17, 19], what="the new where applied")
    assert probe(browser)["alerts"] == 0 and probe(browser)["sockets"] == 1


def test_a_refused_where_in_the_url_closes_4400_and_shows_at_its_box(cluster, server, browser):
    t = cluster.create_topic()
    open_page(browser, server, f"topic={t}&from=earliest&where={quote('value.n ==')}")
    wait_state(browser, "closed")
    assert "4400" in browser.find_element(By.ID, "status-detail").text
    text = wait_for(lambda: where_error(browser), what="the where error at its box")
    assert text.startswith("where: line 1, column 11:")
    # Fixed and started again: the error goes.
    retype(browser, "where", "value.n == 1")
    browser.find_element(By.ID, "start").click()
    wait_for(lambda: conn_state(browser) in ("live", "caught-up"), what="the tail running")
    assert where_error(browser) == ""


def test_between_ends_the_tail_at_the_until_time(cluster, server, browser):
    t = cluster.create_topic(partitions=2)
    now = int(time.time() * 1000)
    hour = 3600_000
    recs = [("early", "3h ago", 0, None, now - 3 * hour)]
    recs += [(f"in{i}", f"in range {i}", i % 2, None, now - 2 * hour + i * 1000) for i in range(4)]
    recs += [("late", "1h ago", 0, None, now - hour), ("late", "30m ago", 1, None, now - hour // 2)]
    cluster.produce(t, recs, flush_each=True)
    open_page(browser, server, f"topic={t}")
    wait_for(lambda: conn_state(browser) == "live", what="the live tail")
    until = browser.find_element(By.ID, "until-arg")
    assert not until.is_displayed()  # only for a start time
    Select(browser.find_element(By.ID, "from-mode")).select_by_value("ts")
    assert until.is_displayed() and until.get_attribute("type") == "datetime-local"
    start_at, end_at = local_input(browser, now - 150 * 60_000), local_input(browser, now - 90 * 60_000)
    set_input(browser, "from-arg", start_at)
    # An end before the start is refused in the page.
    set_input(browser, "until-arg", local_input(browser, now - 3 * hour))
    browser.find_element(By.ID, "start").click()
    wait_for(lambda: "until: must be later than the start" in browser.find_element(By.ID, "status-detail").text,
             what="the page's refusal")
    set_input(browser, "until-arg", end_at)
    browser.find_element(By.ID, "start").click()
    # A normal end: the server's "until reached", then close 1000.
    wait_for(lambda: conn_state(browser) == "ended" and not state(browser)["pending"],
             what=lambda: (values(browser), markers(browser), state(browser), browser.current_url))
    assert sorted(values(browser)) == [f"in range {i}" for i in range(4)]
    assert "tail ended: until reached" in markers(browser)
    detail = browser.find_element(By.ID, "status-detail").text
    assert detail.startswith("1000 normal end: until"), detail
    assert query_of(browser)["until"] == f"ts:{end_at}"
    # The address is a bookmark: a reload runs the same range.
    browser.refresh()
    wait_for(lambda: browser.execute_script("return window.kafkatail !== undefined;"), what="app.js")
    wait_for(lambda: conn_state(browser) == "ended" and not state(browser)["pending"], what="the end again")
    assert sorted(values(browser)) == [f"in range {i}" for i in range(4)]
    assert browser.find_element(By.ID, "until-arg").get_attribute("value") == end_at
    # Cleared: a live tail again, which does not end.
    browser.find_element(By.ID, "until-clear").click()
    assert "until" not in query_of(browser)
    browser.find_element(By.ID, "start").click()
    wait_for(lambda: conn_state(browser) in ("live", "caught-up") and len(rows(browser)) == 6,
             what="the records since the start, without an end")


def test_csv_download_of_the_list_quotes_and_guards_formulas(cluster, server, browser, tmp_path):
    t = cluster.create_topic()
    doc = {"name": "a, \"b\"", "n": -5}
    cluster.produce(t, [
        ("+cmd", json.dumps(doc), None, [("h", b"@SUM(1)")]),
        ("k1", '=HYPERLINK("http://x","y")'),
        ("-k", 'line one\nline "two", more'),
        ("@k", "-5"),
        (None, b"\xff\xfe"),
        ("gone", None),
        ("plain", "\tTAB"),
    ])
    open_page(browser, server, f"topic={t}&from=earliest")
    wait_rows(browser, 7)
    allow_downloads(browser, tmp_path)
    browser.find_element(By.ID, "download-csv").click()
    done = wait_for(lambda: finished(tmp_path, "*.csv"), what="the downloaded CSV")
    assert done[0].name.startswith(f"{t}-")
    raw = done[0].read_bytes().decode("utf-8")
    table = list(csv.reader(io.StringIO(raw, newline="")))
    assert table[0] == CSV_HEADER
    got = [dict(zip(CSV_HEADER, r)) for r in table[1:]]
    recs = browser.execute_script("return window.kafkatail.records();")
    assert [(int(r["partition"]), int(r["offset"]), int(r["timestamp"])) for r in got] == \
        [(r["partition"], r["offset"], r["timestamp"]) for r in recs]
    # A JSON value as its JSON text; headers as JSON; a leading = + - @ or tab gets a '.
    assert got[0]["key"] == "'+cmd" and got[0]["encoding"] == "json"
    assert json.loads(got[0]["value"]) == doc
    assert json.loads(got[0]["headers"]) == [["h", "@SUM(1)"]]
    assert got[1]["value"] == "'=HYPERLINK(\"http://x\",\"y\")" and got[1]["key"] == "k1"
    assert got[2]["key"] == "'-k" and got[2]["value"] == 'line one\nline "two", more'
    assert got[3]["key"] == "'@k" and got[3]["value"] == "'-5" and got[3]["encoding"] == "json"
    assert got[4]["key"] == "" and got[4]["encoding"] == "base64" and got[4]["value"] == "//4="
    assert got[5]["value"] == "" and got[5]["encoding"] == "null"
    assert got[6]["value"] == "'\tTAB"
    assert [r["headers"] for r in got[1:]] == [""] * 6
    # Quoted by RFC 4180: the embedded line break and quotes survive; records end with CRLF.
    assert '"line one\nline ""two"", more"' in raw and raw.endswith("\r\n")


TOKEN = "viewer-" + uuid.uuid4().hex


def export(server, query: dict) -> str:
    req = urllib.request.Request(server.url(f"/api/topics/{query.pop('topic')}/export?{urlencode(query)}"),
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read().decode()


def test_range_download_saves_the_servers_export_of_the_forms_range(cluster, make_server_, browser,
                                                                     tmp_path):
    """On a server that wants a token: the export is fetched with it, as NDJSON and as CSV."""
    server = make_server_(tokens={"viewer": {"sha256": hash_token(TOKEN), "topics": ["**"]}},
                          anonymous_topics="", debug_access="admin")
    t = cluster.create_topic(partitions=2)
    now = int(time.time() * 1000)
    minute = 60_000
    cluster.produce(t, [(f"k{i}", json.dumps({"i": i, "note": "=1+1" if i == 4 else "ok"}), i % 2,
                         [("h", f"v{i}".encode())], now - (40 - i) * minute) for i in range(20)],
                    flush_each=True)
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                            {"source": f"sessionStorage.setItem('kafkatail.token', {json.dumps(TOKEN)});"})
    # Not started (no topic in the address): the range comes from the form alone.
    open_page(browser, server, "")
    browser.find_element(By.ID, "topic").send_keys(t)
    Select(browser.find_element(By.ID, "from-mode")).select_by_value("ts")
    start_at, end_at = local_input(browser, now - 37 * minute), local_input(browser, now - 27 * minute)
    set_input(browser, "from-arg", start_at)
    set_input(browser, "until-arg", end_at)
    retype(browser, "where", "value.i % 2 == 0")
    retype(browser, "filter", "ok")
    # Records 3..12 are in the range; the even ones pass the where; 4's note is not "ok".
    expected = [6, 8, 10, 12]
    browser.find_element(By.ID, "range").click()
    pop = browser.find_element(By.ID, "range-pop")
    wait_for(pop.is_displayed, what="the range panel")
    summary = browser.find_element(By.ID, "range-summary").text
    assert t in summary and "where value.i % 2 == 0" in summary and 'substring "ok"' in summary
    allow_downloads(browser, tmp_path)
    server_query = {"topic": t, "from": f"ts:{now - 37 * minute}", "until": f"ts:{now - 27 * minute}",
                    "filter": "ok", "where": "value.i % 2 == 0"}
    # The page sends the picker's local times (whole seconds) as epoch ms.
    server_query["from"] = "ts:" + str(browser.execute_script("return new Date(arguments[0]).getTime();", start_at))
    server_query["until"] = "ts:" + str(browser.execute_script("return new Date(arguments[0]).getTime();", end_at))

    browser.find_element(By.ID, "range-ndjson").click()
    done = wait_for(lambda: finished(tmp_path, "*.ndjson"), what="the NDJSON range")
    lines = [json.loads(x) for x in done[0].read_text(encoding="utf-8").splitlines()]
    records, end = lines[:-1], lines[-1]
    assert end["type"] == "end" and "until" in end["reason"]
    assert sorted(r["value"]["i"] for r in records) == expected
    assert all(r["topic"] == t and r["headers"] == [["h", f"v{r['value']['i']}"]] for r in records)
    direct = [json.loads(x) for x in export(server, {**server_query, "format": "ndjson"}).splitlines()]
    key = lambda r: (r.get("partition", -1), r.get("offset", -1))  # noqa: E731
    assert sorted(lines, key=key) == sorted(direct, key=key)
    status = browser.find_element(By.ID, "range-status")
    wait_for(lambda: "downloaded" in status.text, what="the range status")
    assert f"{len(expected)} records (until" in status.text

    browser.find_element(By.ID, "range-csv").click()
    done = wait_for(lambda: finished(tmp_path, "*.csv"), what="the CSV range")
    table = list(csv.DictReader(io.StringIO(done[0].read_text(encoding="utf-8"), newline="")))
    assert sorted(json.loads(r["value"])["i"] for r in table) == expected
    direct = list(csv.DictReader(io.StringIO(export(server, {**server_query, "format": "csv"}), newline="")))
    by_pos = lambda r: (int(r["partition"]), int(r["offset"]))  # noqa: E731
    assert sorted(table, key=by_pos) == sorted(direct, key=by_pos)
    # Where the server refuses the range, the panel says why.
    retype(browser, "where", "value.i ==")
    if not pop.is_displayed():  # a click outside the panel closes it
        browser.find_element(By.ID, "range").click()
        wait_for(pop.is_displayed, what="the range panel again")
    browser.find_element(By.ID, "range-csv").click()
    wait_for(lambda: "export failed: where: line 1" in status.text, what="the server's refusal")
    assert "bad" in status.get_attribute("class")
