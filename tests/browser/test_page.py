"""The live-tail page in headless Chromium against the in-process server and the real broker.

Set ``KAFKATAIL_SCREENSHOTS=<dir>`` to save the screenshots the README shows.
"""
from __future__ import annotations

import base64
import json

import pytest

By = pytest.importorskip("selenium.webdriver.common.by", reason="selenium not installed (dev extra)").By

from selenium.webdriver.common.keys import Keys  # noqa: E402 (after the importorskip)

from helpers import wait_for

from .page import (by_partition, conn_state, dom_rows, markers, open_page, overflow, probe, rows,
                   shot, state, wait_rows, wait_state)

pytestmark = pytest.mark.timeout(120)

CAP = 10_000  # the default row limit (DEFAULTS.maxRows in app.js)


def test_records_appear_in_order(cluster, server, browser):
    t = cluster.create_topic(partitions=3)
    cluster.produce(t, [(f"order-{i}", json.dumps({"id": i, "item": "book", "qty": i % 4 + 1,
                                                    "customer": {"name": f"c{i % 7}"}}), i % 3,
                         [("source", b"web"), ("trace-id", f"{i:08x}".encode())])
                        for i in range(60)])
    open_page(browser, server, f"topic={t}&from=earliest")
    found = wait_rows(browser, 60)
    assert by_partition(found) == {p: list(range(20)) for p in range(3)}
    wait_state(browser, "live")
    # Live records keep coming in order behind the backlog.
    cluster.produce(t, [(f"order-{i}", json.dumps({"id": i, "item": "pen"}), i % 3,
                         [("source", b"app"), ("trace-id", f"{i:08x}".encode())])
                        for i in range(60, 90)])
    found = wait_rows(browser, 90)
    assert by_partition(found) == {p: list(range(30)) for p in range(3)}
    # Following the tail: the DOM shows the newest rows, in the list's order.
    wait_for(lambda: dom_rows(browser)[-1:] == found[-1:], what="the newest row in view")
    shown = dom_rows(browser)
    assert shown == found[-len(shown):]
    assert probe(browser)["sockets"] == 1
    shot(browser, "page-live")


def test_filter_change_applies_live(cluster, server, browser):
    t = cluster.create_topic()
    cluster.produce(t, [(f"k{i}", f"{'apple' if i % 2 else 'banana'} {i}") for i in range(10)])
    open_page(browser, server, f"topic={t}&from=earliest")
    wait_rows(browser, 10)
    browser.find_element(By.ID, "filter").send_keys("APPLE")
    wait_for(lambda: any('filter applied: substring "apple"' in m.lower() for m in markers(browser)),
             what="the server's filter echo")
    assert "filter=APPLE" in browser.current_url
    cluster.produce(t, [(f"k{i}", f"{'apple' if i % 2 else 'banana'} {i}") for i in range(10, 30)]
                    + [("last", "apple last")])
    wait_for(lambda: browser.execute_script(
        "const r = document.querySelector('#records .record:last-child');"
        "return r && r.textContent.includes('apple last');"), what="the last apple")
    values = browser.execute_script("return window.kafkatail.records().map((r) => r.value);")
    assert values[10:] == [f"apple {i}" for i in range(11, 30, 2)] + ["apple last"]
    assert probe(browser)["sockets"] == 1  # applied on the open socket, no reconnect


def test_pause_then_resume_loses_nothing(cluster, server, browser):
    t = cluster.create_topic(partitions=2)
    cluster.produce(t, [(None, f"a{i}", i % 2) for i in range(10)])
    open_page(browser, server, f"topic={t}&from=earliest")
    wait_rows(browser, 10)
    browser.find_element(By.ID, "pause").click()
    wait_state(browser, "paused")
    assert browser.find_element(By.ID, "pause").text == "Resume"
    cluster.produce(t, [(None, f"b{i}", i % 2) for i in range(40)])
    assert len(rows(browser)) == 10  # nothing rendered while paused
    browser.find_element(By.ID, "pause").click()
    wait_state(browser, "live")
    cluster.produce(t, [(None, f"c{i}", i % 2) for i in range(10)])
    found = wait_rows(browser, 60)
    assert sorted(found) == sorted(set(found))
    assert by_partition(found) == {0: list(range(30)), 1: list(range(30))}
    assert probe(browser)["sockets"] == 1


def test_server_restart_resumes_without_gap_or_duplicate(cluster, make_server_, browser):
    t = cluster.create_topic(partitions=2)
    first = make_server_()
    cluster.produce(t, [(None, f"v{i}", i % 2) for i in range(20)])
    open_page(browser, first, f"topic={t}&from=earliest")
    wait_rows(browser, 20)
    first.stop()
    wait_for(lambda: conn_state(browser) == "reconnecting", what="the page noticing the stop")
    cluster.produce(t, [(None, f"v{i}", i % 2) for i in range(20, 50)])
    make_server_(port=first.port)
    wait_for(lambda: any("reconnected after" in m for m in markers(browser)),
             timeout=30, what="a reconnected marker")
    found = wait_rows(browser, 50)
    wait_state(browser, "live")
    cluster.produce(t, [(None, f"v{i}", i % 2) for i in range(50, 60)])
    found = wait_rows(browser, 60)
    assert len(found) == len(set(found)) == 60
    assert by_partition(found) == {0: list(range(30)), 1: list(range(30))}
    reconnect = [m for m in markers(browser) if "reconnected after" in m]
    assert len(reconnect) == 1 and "offsets:0:10,1:10" in reconnect[0]


def test_buffer_cap_holds_rows_and_memory(cluster, server, browser):
    """50k records through the page: the DOM keeps the newest 10k rows, heap and nodes stay flat."""
    t = cluster.create_topic()
    batch, total = 10_000, 50_000
    payload = "x" * 100

    def produce(start):
        cluster.produce(t, [(f"k{i}", json.dumps({"n": i, "pad": payload}))
                            for i in range(start, start + batch)])

    def last_offset():
        return browser.execute_script(
            "const r = document.querySelector('#records .record:last-child');"
            "return r ? Number(r.dataset.offset) : -1;")

    def measure():
        browser.execute_script("window.gc && window.gc();")  # --js-flags=--expose-gc
        heap = browser.execute_script("return performance.memory.usedJSHeapSize;")
        nodes = browser.execute_cdp_cmd("Memory.getDOMCounters", {})["nodes"]
        return heap, nodes

    produce(0)
    open_page(browser, server, f"topic={t}&from=earliest")
    wait_for(lambda: last_offset() == batch - 1, timeout=60, what="the first 10k records")
    heap_at_cap, nodes_at_cap = measure()
    for start in range(batch, total, batch):
        produce(start)
    wait_for(lambda: last_offset() == total - 1, timeout=90, what=f"all {total} records")
    assert state(browser)["records"] == CAP
    assert rows(browser)[0] == (0, total - CAP)
    # Virtual: the DOM holds the rows in view and a margin, never the whole list.
    assert 0 < browser.execute_script("return document.querySelectorAll('.record').length;") < 200
    heap_end, nodes_end = measure()
    print(f"\nbuffer cap: JS heap {heap_at_cap / 1e6:.1f} MB at 10k, {heap_end / 1e6:.1f} MB after {total}; "
          f"DOM nodes {nodes_at_cap} -> {nodes_end}")
    assert heap_end < heap_at_cap * 1.5 + 5_000_000, (heap_at_cap, heap_end)
    assert nodes_end < nodes_at_cap * 1.2, (nodes_at_cap, nodes_end)
    # Caught up, the page joined the live feed: on a loaded machine a burst may overflow its
    # outbox there, and every record is then either received or counted as dropped.
    got = wait_for(lambda: (lambda s: s["received"] + s["dropped"] == total and s)(state(browser)),
                   what="every record received or counted as dropped")
    wait_for(lambda: browser.find_element(By.ID, "count").text.startswith(f"{got['received']} records"),
             what="the record counter")


@pytest.mark.parametrize("value", ["<img src=x onerror=alert(1)>",
                                   "</script><script>alert(2)</script>"])
def test_markup_in_values_renders_as_text(cluster, server, browser, value):
    t = cluster.create_topic()
    cluster.produce(t, [("<b>key</b>", value, None, [("h<i>", b"<svg onload=alert(3)>")])])
    open_page(browser, server, f"topic={t}&from=earliest")
    wait_rows(browser, 1)
    row = browser.find_element(By.CSS_SELECTOR, "#records .record")
    assert row.find_element(By.CSS_SELECTOR, ".c-val").get_attribute("textContent") == value
    assert row.find_element(By.CSS_SELECTOR, ".c-key").get_attribute("textContent") == "<b>key</b>"
    assert "<svg onload=alert(3)>" in row.find_element(By.CSS_SELECTOR, ".c-hdrs").get_attribute("textContent")
    assert browser.execute_script(
        "return document.querySelectorAll('#records img, #records script, #records svg, #records b').length;") == 0
    assert probe(browser)["alerts"] == 0


def test_binary_value_shows_as_base64(cluster, server, browser):
    t = cluster.create_topic()
    blob = bytes([0, 255, 254, 1, 128, 10, 13, 0]) * 4
    cluster.produce(t, [(b"\xff\x00", blob)])
    open_page(browser, server, f"topic={t}&from=earliest")
    wait_rows(browser, 1)
    val = browser.find_element(By.CSS_SELECTOR, "#records .record .c-val")
    assert val.find_element(By.CSS_SELECTOR, ".badge").text == "base64"
    assert val.find_element(By.CSS_SELECTOR, ".b64").get_attribute("textContent") == base64.b64encode(blob).decode()
    key = browser.find_element(By.CSS_SELECTOR, "#records .record .c-key").get_attribute("textContent")
    assert key == "b64" + base64.b64encode(b"\xff\x00").decode()


def test_schema_framed_records_show_their_schema_and_no_mangled_text(cluster, server, browser):
    """An Avro value and a Protobuf key in the Schema Registry wire format (valid UTF-8, NUL
    first): badges name the schema ids, and nothing shows as text."""
    avro = b"\x00\x00\x00\x00\x07\x0corder1\x02\x00\x00\x00\x00\x00\x00\x29\x40"
    key = b"\x00\x00\x00\x01\x2c\x00\x0a\x05hello"
    t = cluster.create_topic()
    cluster.produce(t, [(key, avro)])
    open_page(browser, server, f"topic={t}&from=earliest")
    wait_rows(browser, 1)
    row = browser.find_element(By.CSS_SELECTOR, "#records .record")
    val = row.find_element(By.CSS_SELECTOR, ".c-val")
    assert val.find_element(By.CSS_SELECTOR, ".badge").text == "schema 7 · undecoded"
    shown = val.get_attribute("textContent")
    assert base64.b64encode(avro[5:]).decode() in shown and "order1" not in shown
    badges = [b.text for b in row.find_elements(By.CSS_SELECTOR, ".c-key .badge")]
    assert badges == ["schema 300 · undecoded"]
    assert base64.b64encode(key).decode() in row.find_element(
        By.CSS_SELECTOR, ".c-key").get_attribute("textContent")


def test_unknown_topic_shows_the_close_reason(server, browser):
    open_page(browser, server, "topic=no.such.topic&from=earliest")
    wait_state(browser, "closed")
    assert "4404" in browser.find_element(By.ID, "status-detail").text
    wait_for(lambda: any("closed: 4404 unknown topic no.such.topic" in m for m in markers(browser)),
             what="a closed marker")
    assert probe(browser)["sockets"] == 1  # a 4xxx close is final: no retry loop
    shot(browser, "page-error")


def test_skipped_records_marker_while_paused(cluster, make_server_, browser):
    """A tiny server outbox drops records in a burst; the page says so, and pause keeps it."""
    srv = make_server_(outbox_max_records=20)
    t = cluster.create_topic()
    open_page(browser, srv, f"topic={t}")
    wait_state(browser, "live")
    # On a live feed: a historical tail would make the server wait for the page instead.
    overflow(cluster, browser, srv, t)
    assert any("skipped" in m for m in markers(browser)), markers(browser)
    browser.find_element(By.ID, "pause").click()
    wait_state(browser, "paused")
    found = rows(browser)
    assert len(found) == len(set(found))
    assert [o for _, o in found] == sorted(o for _, o in found)
    shot(browser, "page-paused")


def test_regex_filter_on_a_header_applies_live(cluster, server, browser):
    """A regex set in the page's regex box keeps only the records whose header matches it."""
    def batch(first, last):
        return [(f"k{i}", f"order {i}", None, [("region", f"{'us' if i % 3 else 'eu'}-west-{i}".encode())])
                for i in range(first, last)]

    t = cluster.create_topic()
    cluster.produce(t, batch(0, 6))
    open_page(browser, server, f"topic={t}&from=earliest")
    wait_rows(browser, 6)
    browser.find_element(By.ID, "regex").send_keys(r"^eu-west-\d+$", Keys.ENTER)
    wait_for(lambda: any("filter applied: regex /^eu-west-\\d+$/" in m for m in markers(browser)),
             what="the server's filter echo")
    cluster.produce(t, batch(6, 20) + [("last", "order last", None, [("region", b"eu-west-99")])])
    wait_for(lambda: browser.execute_script(
        "const r = document.querySelector('#records .record:last-child');"
        "return r && r.textContent.includes('order last');"), what="the last matching record")
    values = browser.execute_script("return window.kafkatail.records().map((r) => r.value);")
    assert values[6:] == [f"order {i}" for i in range(6, 20) if i % 3 == 0] + ["order last"]
    assert probe(browser)["sockets"] == 1  # applied on the open socket, no reconnect
