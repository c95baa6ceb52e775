"""The topic overview in headless Chromium: with no topic chosen the page lists every topic the
caller may read, filters them as you type, sorts them, refreshes itself while shown and never
while a tail runs, and a click on a topic tails it."""
from __future__ import annotations

import uuid

import pytest

By = pytest.importorskip("selenium.webdriver.common.by", reason="selenium not installed (dev extra)").By

from selenium.webdriver.common.keys import Keys  # noqa: E402 (after the importorskip)

from helpers import wait_for

from .page import open_page, probe, shot, wait_rows, wait_state

pytestmark = pytest.mark.timeout(120)

# Installed before app.js: counts the page's /api/overview requests and keeps the delays of its
# pending overview refreshes (timers of the function refreshOverview), so a test sees whether a
# refresh is scheduled without waiting for one.
OVERVIEW_PROBE = """
window.__ov = {fetches: 0, timers: new Map()};
const nativeFetch = window.fetch;
window.fetch = function (url, ...rest) {
  if (String(url).includes('/api/overview')) window.__ov.fetches++;
  return nativeFetch.call(this, url, ...rest);
};
const nativeSet = window.setTimeout, nativeClear = window.clearTimeout;
window.setTimeout = function (fn, ms, ...args) {
  if (typeof fn !== 'function' || fn.name !== 'refreshOverview') return nativeSet.call(this, fn, ms, ...args);
  const id = nativeSet.call(this, () => { window.__ov.timers.delete(id); fn(...args); }, ms);
  window.__ov.timers.set(id, ms);
  return id;
};
window.clearTimeout = function (id) {
  window.__ov.timers.delete(id);
  return nativeClear.call(this, id);
};
"""


def overview_probe(browser) -> dict:
    return browser.execute_script(
        "return {fetches: window.__ov.fetches, timers: [...window.__ov.timers.values()]};")


def table(browser) -> list[list[str]]:
    """The overview's rows as shown: name, partitions, retained, rate, last record."""
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('#ov-rows tr'),"
        " (tr) => Array.from(tr.cells, (td) => td.textContent));")


def names(browser) -> list[str]:
    return [row[0] for row in table(browser)]


def shown(browser, element_id: str) -> bool:
    return browser.find_element(By.ID, element_id).is_displayed()


@pytest.fixture
def topics(cluster):
    run = uuid.uuid4().hex[:8]
    made = {"orders": f"kt-ovp.{run}.orders", "payments": f"kt-ovp.{run}.payments",
            "idle": f"kt-ovp.{run}.idle"}
    cluster.create_topic(made["orders"], partitions=2)
    cluster.create_topic(made["payments"])
    cluster.create_topic(made["idle"], partitions=3)
    # One record a batch: Tansu's end offset is the last batch's base offset + 1.
    cluster.produce(made["orders"], [(f"o{i}", f"order {i}", i % 2) for i in range(6)], flush_each=True)
    cluster.produce(made["payments"], [(f"p{i}", f"payment {i}") for i in range(2)], flush_each=True)
    made["pattern"] = f"kt-ovp.{run}.**"
    return made


def open_overview(browser, make_server_, topics):
    """A server that lets anonymous callers read only this test's topics, and the page on it."""
    server = make_server_(anonymous_topics=topics["pattern"])
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": OVERVIEW_PROBE})
    open_page(browser, server, "")
    wait_for(lambda: len(table(browser)) == 3, what=lambda: f"3 topics listed: {table(browser)}")
    shot(browser, "page-overview")
    return server


def test_overview_lists_filters_sorts_and_a_click_tails(cluster, make_server_, browser, topics):
    open_overview(browser, make_server_, topics)
    assert shown(browser, "overview") and not shown(browser, "list")
    rows = {row[0]: row for row in table(browser)}
    assert names(browser) == sorted(rows)  # name order
    orders = rows[topics["orders"]]
    assert orders[1:3] == ["2", "6"] and (orders[4].endswith(" ago") or orders[4] == "now")
    assert rows[topics["idle"]][1:3] == ["3", "0"] and rows[topics["idle"]][4] == "—"
    assert rows[topics["payments"]][2] == "2"
    assert "3 topics" in browser.find_element(By.ID, "ov-info").text
    # Filtered as you type, any case; the other rows come back when the box is emptied.
    search = browser.find_element(By.ID, "ov-search")
    search.send_keys("PAY")
    wait_for(lambda: names(browser) == [topics["payments"]], what="only the payments topic")
    assert "1 of 3 topics" in browser.find_element(By.ID, "ov-info").text
    search.send_keys("x")
    wait_for(lambda: browser.find_element(By.ID, "ov-empty").text == 'no topic matches "PAYx"',
             what="the no-match note")
    search.send_keys(Keys.BACKSPACE * 4)
    wait_for(lambda: len(names(browser)) == 3, what="every topic again")
    # A click on a column sorts by it, the largest first.
    browser.find_element(By.CSS_SELECTOR, '#ov-table th[data-sort="retained"]').click()
    assert names(browser) == [topics["orders"], topics["payments"], topics["idle"]]
    # A click on a row tails its topic, as typing its name and Start would.
    browser.find_element(By.XPATH, f"//tr[@data-topic='{topics['orders']}']/td[3]").click()
    wait_state(browser, "live")
    assert not shown(browser, "overview") and shown(browser, "list")
    assert browser.find_element(By.ID, "topic").get_attribute("value") == topics["orders"]
    assert f"topic={topics['orders']}" in browser.current_url
    cluster.produce(topics["orders"], [(f"new{i}", f"new order {i}", i % 2) for i in range(4)])
    wait_rows(browser, 4)
    assert probe(browser)["sockets"] == 1


def test_refreshes_while_shown_never_while_a_tail_runs(cluster, make_server_, browser, topics):
    open_overview(browser, make_server_, topics)
    # Shown: a refresh is always pending, and it brings new numbers.
    assert overview_probe(browser)["timers"], "no refresh scheduled"
    cluster.produce(topics["payments"], [("p", "late payment")] * 3, flush_each=True)
    wait_for(lambda: {r[0]: r[2] for r in table(browser)}[topics["payments"]] == "5",
             timeout=30, what=lambda: f"the new records counted: {table(browser)}")
    # A tail runs: no refresh is pending, and none is asked for.
    search = browser.find_element(By.ID, "ov-search")
    search.send_keys(topics["payments"], Keys.ENTER)  # the exact name: Enter tails it
    wait_state(browser, "live")
    wait_for(lambda: not overview_probe(browser)["timers"], what="the refresh cancelled")
    asked = overview_probe(browser)["fetches"]
    cluster.produce(topics["payments"], [("p", "live payment")])
    wait_rows(browser, 1)
    assert overview_probe(browser) == {"fetches": asked, "timers": []}
    # Stopped and cleared: the overview is back, asked for again at once.
    browser.find_element(By.ID, "stop").click()
    wait_state(browser, "stopped")
    assert not shown(browser, "overview"), "the stopped tail's records stay in view"
    browser.find_element(By.ID, "clear").click()
    wait_for(lambda: shown(browser, "overview") and overview_probe(browser)["fetches"] > asked,
             what="the overview back")
    assert not shown(browser, "list")


def test_hidden_tab_stops_the_refresh(make_server_, browser, topics):
    open_overview(browser, make_server_, topics)
    hide = """
Object.defineProperty(document, 'hidden', {configurable: true, get: () => arguments[0]});
document.dispatchEvent(new Event('visibilitychange'));"""
    browser.execute_script(hide, True)
    wait_for(lambda: not overview_probe(browser)["timers"], what="the refresh stopped")
    asked = overview_probe(browser)["fetches"]
    browser.execute_script(hide, False)
    wait_for(lambda: (lambda p: p["timers"] or p["fetches"] > asked)(overview_probe(browser)),
             what="the refresh resumed")
