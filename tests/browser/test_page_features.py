"""The page's own features in headless Chromium, against the in-process server and the real broker:
the virtual list and its row limit, autoscroll, keyboard, hidden-tab pause, the record pane, copy,
NDJSON download, highlight rules, the status bar and the themes.

Ordering, live filters, pause/resume, server restarts, markup and binary values: test_page.py.
"""
from __future__ import annotations

import json
import time
import urllib.request

import pytest

By = pytest.importorskip("selenium.webdriver.common.by", reason="selenium not installed (dev extra)").By
ActionChains = pytest.importorskip("selenium.webdriver.common.action_chains").ActionChains

from helpers import wait_for
from .page import (by_partition, conn_state, dom_rows, markers, open_page, overflow, probe, rows, state,
                   wait_rows)

pytestmark = pytest.mark.timeout(60)

HIDE_JS = """
Object.defineProperty(document, 'hidden', {configurable: true, get: () => arguments[0]});
Object.defineProperty(document, 'visibilityState', {configurable: true,
                                                    get: () => arguments[0] ? 'hidden' : 'visible'});
document.dispatchEvent(new Event('visibilitychange'));
"""


def press(browser, keys: str) -> None:
    ActionChains(browser).send_keys(keys).perform()


def js_state(browser, key: str):
    return state(browser)[key]


def stays(check, seconds: float, what: str) -> None:
    """Assert ``check()`` holds on every look for ``seconds`` (for "nothing happens" claims)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert check(), what
        time.sleep(0.05)


def test_row_limit_holds_under_a_fast_topic(cluster, server, browser):
    """15k records through a list limited to 1,000 rows: never more in the list, a few in the DOM."""
    t = cluster.create_topic()
    total, cap = 15_000, 1_000
    cluster.produce(t, [(f"k{i}", json.dumps({"n": i})) for i in range(total)])
    open_page(browser, server, f"topic={t}&from=earliest", settings={"maxRows": cap})
    peak_rows = peak_dom = 0

    def done():
        nonlocal peak_rows, peak_dom
        s, dom = browser.execute_script(
            "return [window.kafkatail.state(), document.querySelectorAll('#records .record').length];")
        peak_rows, peak_dom = max(peak_rows, s["rows"]), max(peak_dom, dom)
        return s["received"] == total and s["pending"] == 0

    wait_for(done, timeout=30, what=f"all {total} records", interval=0.02)
    assert peak_rows <= cap and peak_dom < 200, (peak_rows, peak_dom)
    found = rows(browser)
    assert found == [(0, o) for o in range(total - cap, total)]
    # Following: the newest record is the last row in the DOM.
    wait_for(lambda: dom_rows(browser)[-1:] == [(0, total - 1)], what="the newest row in view")
    assert browser.find_element(By.ID, "shown").text == f"{cap} shown"
    # Lowering the limit in the settings trims the list at once.
    browser.find_element(By.ID, "open-settings").click()
    box = browser.find_element(By.ID, "set-max")
    box.clear()
    box.send_keys("500\t")
    wait_for(lambda: js_state(browser, "records") == 500, what="the list trimmed to 500")
    assert rows(browser)[0] == (0, total - 500)
    assert js_state(browser, "settings")["maxRows"] == 500
    assert json.loads(browser.execute_script("return localStorage.getItem('kafkatail.settings');"))["maxRows"] == 500


def test_autoscroll_stops_when_scrolled_up_and_jump_resumes(cluster, server, browser):
    t = cluster.create_topic()
    cluster.produce(t, [(None, f"a{i}") for i in range(300)])
    open_page(browser, server, f"topic={t}&from=earliest")
    wait_rows(browser, 300)
    jump = browser.find_element(By.ID, "jump")
    wait_for(lambda: dom_rows(browser)[-1:] == [(0, 299)], what="following the tail")
    assert not jump.is_displayed()
    browser.execute_script("document.getElementById('records').scrollTop = 0;")
    wait_for(lambda: not js_state(browser, "follow"), what="autoscroll off after scrolling up")
    cluster.produce(t, [(None, f"b{i}") for i in range(50)])
    wait_rows(browser, 350)
    wait_for(lambda: jump.is_displayed() and "+50" in jump.text, what="the jump button with 50 new")
    assert dom_rows(browser)[0] == (0, 0)  # the view stayed where the user put it
    assert browser.execute_script("return document.getElementById('records').scrollTop;") == 0
    jump.click()
    wait_for(lambda: dom_rows(browser)[-1:] == [(0, 349)], what="the newest row after the jump")
    assert js_state(browser, "follow") and not jump.is_displayed()
    cluster.produce(t, [(None, "c")])
    wait_for(lambda: dom_rows(browser)[-1:] == [(0, 350)], what="following again")


def test_keyboard_shortcuts(cluster, server, browser):
    t = cluster.create_topic()
    cluster.produce(t, [(None, f"v{i}") for i in range(200)])
    open_page(browser, server, f"topic={t}&from=earliest")
    wait_rows(browser, 200)
    # space pauses and resumes, even with the focus on a button (it must not restart the tail)
    browser.execute_script("document.getElementById('start').focus();")
    press(browser, " ")
    wait_for(lambda: conn_state(browser) == "paused", what="paused by space")
    wait_for(lambda: js_state(browser, "serverStatus") == "paused", what="the server's pause")
    assert browser.find_element(By.ID, "pause").text == "Resume"
    press(browser, " ")
    wait_for(lambda: conn_state(browser) == "live", what="resumed by space")
    assert probe(browser)["sockets"] == 1
    # / focuses the filter without typing the slash; Esc leaves it
    press(browser, "/")
    assert browser.execute_script("return document.activeElement.id;") == "filter"
    assert browser.find_element(By.ID, "filter").get_attribute("value") == ""
    press(browser, "x")  # typing in the filter is typing, not a shortcut
    assert browser.find_element(By.ID, "filter").get_attribute("value") == "x"
    press(browser, "\ue00c")  # Escape
    assert browser.execute_script("return document.activeElement === document.body;")
    assert browser.find_element(By.ID, "filter").get_attribute("value") == "x"
    # g jumps to the latest row
    browser.execute_script("document.getElementById('records').scrollTop = 0;")
    wait_for(lambda: not js_state(browser, "follow"), what="scrolled up")
    press(browser, "g")
    wait_for(lambda: js_state(browser, "follow") and dom_rows(browser)[-1:] == [(0, 199)], what="jumped by g")


def test_hidden_tab_pauses_the_tail_and_loses_nothing(cluster, server, browser):
    t = cluster.create_topic(partitions=2)
    cluster.produce(t, [(None, f"a{i}", i % 2) for i in range(10)])
    open_page(browser, server, f"topic={t}&from=earliest")
    wait_rows(browser, 10)
    wait_for(lambda: conn_state(browser) == "live", what="live")
    browser.execute_script(HIDE_JS, True)
    wait_for(lambda: js_state(browser, "autoPaused") and conn_state(browser) == "paused", what="auto-pause")
    assert "tab hidden" in browser.find_element(By.ID, "status-detail").text
    # The server confirms, so it stops delivering (and, alone on the topic, fetching).
    wait_for(lambda: js_state(browser, "serverStatus") == "paused", what="the server's pause")
    cluster.produce(t, [(None, f"b{i}", i % 2) for i in range(30)])
    stays(lambda: js_state(browser, "received") == 10, 1.0, "records arrived while hidden")
    browser.execute_script(HIDE_JS, False)
    wait_for(lambda: conn_state(browser) == "live" and not js_state(browser, "autoPaused"), what="resumed")
    found = wait_rows(browser, 40)
    assert len(found) == len(set(found)) == 40
    assert by_partition(found) == {0: list(range(20)), 1: list(range(20))}
    assert probe(browser)["sockets"] == 1


def test_hidden_tab_keeps_tailing_when_auto_pause_is_off(cluster, server, browser):
    t = cluster.create_topic()
    cluster.produce(t, [(None, "a")])
    open_page(browser, server, f"topic={t}&from=earliest", settings={"autoPause": False})
    wait_rows(browser, 1)
    browser.execute_script(HIDE_JS, True)
    cluster.produce(t, [(None, "b")])
    wait_rows(browser, 2)
    assert conn_state(browser) == "live" and not js_state(browser, "paused")


def test_record_pane_and_copy_as_json(cluster, server, browser):
    t = cluster.create_topic()
    doc = {"order": {"id": 7, "lines": [{"sku": "<b>a</b>", "qty": 2}]}, "ok": True}
    blob = bytes([0, 255, 254, 1]) + b"kafka"
    cluster.produce(t, [("k-json", json.dumps(doc), None, [("trace", b"t-1")]), (b"\x01", blob)])
    open_page(browser, server, f"topic={t}&from=earliest")
    wait_rows(browser, 2)
    browser.execute_script("""
        window.__copied = [];
        navigator.clipboard.writeText = (text) => { window.__copied.push(text); return Promise.resolve(); };
    """)
    browser.find_element(By.CSS_SELECTOR, '#records .record[data-offset="0"]').click()
    pane = browser.find_element(By.ID, "detail")
    wait_for(pane.is_displayed, what="the record pane")
    assert browser.find_element(By.ID, "detail-title").text == "p0 · offset 0"
    body = browser.find_element(By.ID, "detail-body")
    assert "trace" in body.text and "t-1" in body.text
    # JSON as a collapsible tree, every string as text
    assert browser.execute_script("return document.querySelectorAll('#detail-body details.jt').length;") >= 3
    # deeper levels are built when opened
    browser.find_element(By.XPATH, "//details[summary='[ 1 item ]']/summary").click()
    inner = "//details[summary='[ 1 item ]']//details/summary"
    wait_for(lambda: browser.find_elements(By.XPATH, inner), what="the array built on opening")
    browser.find_element(By.XPATH, inner).click()
    wait_for(lambda: '"sku": "<b>a</b>"' in body.text, what="the opened array")
    browser.find_element(By.XPATH, "//div[@id='detail-body']//button[text()='text']").click()
    assert '"sku": "<b>a</b>",' in body.find_element(By.CSS_SELECTOR, ".views pre").text
    assert browser.execute_script("return document.querySelectorAll('#detail-body b').length;") == 0
    browser.find_element(By.ID, "copy").click()
    wait_for(lambda: browser.execute_script("return window.__copied.length;") == 1, what="a copy")
    copied = json.loads(browser.execute_script("return window.__copied[0];"))
    assert copied == browser.execute_script("return window.kafkatail.records()[0];")
    assert copied["value"] == doc and copied["key"] == "k-json" and copied["offset"] == 0
    assert copied["headers"] == [["trace", "t-1"]]
    # A binary value: base64 first, hex on the toggle; c copies the selected record.
    browser.find_element(By.CSS_SELECTOR, '#records .record[data-offset="1"]').click()
    wait_for(lambda: browser.find_element(By.ID, "detail-title").text == "p0 · offset 1", what="record 1")
    browser.find_element(By.XPATH, "//div[@id='detail-body']//button[text()='hex']").click()
    hexdump = browser.find_element(By.CSS_SELECTOR, "#detail-body pre.hex").text
    assert hexdump.startswith("00000000  00 ff fe 01 6b 61 66 6b 61") and hexdump.endswith("|....kafka|")
    press(browser, "c")
    wait_for(lambda: browser.execute_script("return window.__copied.length;") == 2, what="a copy by c")
    assert json.loads(browser.execute_script("return window.__copied[1];"))["encoding"] == "base64"
    press(browser, "\ue00c")  # Escape closes the pane
    wait_for(lambda: not pane.is_displayed(), what="the pane closed")


def finished_downloads(folder, pattern: str) -> list:
    """Downloads matching ``pattern`` once Chromium has finished writing them.

    Chromium reserves the final name with an empty file and writes into a ``.crdownload``
    beside it, so a bare glob can see the name before there is anything in it.
    """
    if any(folder.glob("*.crdownload")):
        return []
    return [p for p in folder.glob(pattern) if p.stat().st_size > 0]


def test_download_visible_records_as_ndjson(cluster, server, browser, tmp_path):
    t = cluster.create_topic(partitions=2)
    cluster.produce(t, [(f"k{i}", json.dumps({"i": i}) if i % 3 else f"<i>text {i}</i>", i % 2)
                        for i in range(20)] + [(None, b"\xff\xfe", 0)])
    open_page(browser, server, f"topic={t}&from=earliest", settings={"maxRows": 100})
    wait_rows(browser, 21)
    browser.execute_cdp_cmd("Browser.setDownloadBehavior",
                            {"behavior": "allow", "downloadPath": str(tmp_path)})
    browser.find_element(By.ID, "download").click()
    done = wait_for(lambda: finished_downloads(tmp_path, "*.ndjson"), what="the downloaded file")
    assert done[0].name.startswith(f"{t}-")
    lines = done[0].read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == browser.execute_script("return window.kafkatail.records();")
    got = {(r["partition"], r["offset"]): r for r in map(json.loads, lines)}
    assert len(got) == 21
    assert got[(1, 0)]["value"] == {"i": 1} and got[(1, 0)]["encoding"] == "json"
    assert got[(0, 0)]["value"] == "<i>text 0</i>" and got[(0, 0)]["encoding"] == "text"
    assert got[(0, 10)]["encoding"] == "base64" and got[(0, 10)]["value"] == "//4="


def test_highlight_rules(cluster, server, browser):
    t = cluster.create_topic()
    cluster.produce(t, [("a", "all good"), ("b", "disk ERROR on node 3"), ("c", "<b>error</b> again"),
                        ("d", "slow request")])
    open_page(browser, server, f"topic={t}&from=earliest")
    wait_rows(browser, 4)
    browser.find_element(By.ID, "open-settings").click()
    browser.find_element(By.ID, "hl-term").send_keys("error")
    browser.execute_script("document.getElementById('hl-color').value = '#ff0000';")
    browser.find_element(By.ID, "hl-add").click()
    browser.find_element(By.ID, "hl-term").send_keys("slow\n")  # Enter adds too, in the next colour
    browser.find_element(By.ID, "settings-close").click()

    def row_marks():
        return browser.execute_script("""
            return Array.from(document.querySelectorAll('#records .record'), (r) => [
              Number(r.dataset.offset), r.classList.contains('hl'), r.style.getPropertyValue('--hl'),
              Array.from(r.querySelectorAll('mark'), (m) => [m.textContent, m.style.backgroundColor])]);""")

    expected = [
        [0, False, "", []],
        [1, True, "#ff0000", [["ERROR", "rgb(255, 0, 0)"]]],
        [2, True, "#ff0000", [["error", "rgb(255, 0, 0)"]]],
        [3, True, "#ff8c8c", [["slow", "rgb(255, 140, 140)"]]],
    ]
    try:
        wait_for(lambda: row_marks() == expected, what="the highlighted rows")
    except AssertionError:
        assert row_marks() == expected  # the diff
        raise
    # The value still reads as text, markup and all.
    assert browser.execute_script(
        "return document.querySelector('#records .record[data-offset=\"2\"] .c-val').textContent;") == "<b>error</b> again"
    saved = json.loads(browser.execute_script("return localStorage.getItem('kafkatail.settings');"))
    assert saved["highlights"] == [{"term": "error", "color": "#ff0000"}, {"term": "slow", "color": "#ff8c8c"}]


def test_status_bar_counts_drops_and_shows_lag(cluster, make_server_, browser):
    srv = make_server_(outbox_max_records=20)
    t = cluster.create_topic()
    open_page(browser, srv, f"topic={t}")
    wait_for(lambda: js_state(browser, "serverStatus") == "live", what="the live feed")
    # Bursts on a live feed overflow the tiny outbox (a historical tail would wait instead).
    total = overflow(cluster, browser, srv, t)
    s = state(browser)
    skipped = [int(m.split()[1]) for m in markers(browser) if m.startswith("skipped ")]
    assert sum(skipped) == s["dropped"]
    wait_for(lambda: browser.find_element(By.ID, "dropped").text == f"{s['dropped']} dropped", what="drops")
    wait_for(lambda: browser.find_element(By.ID, "lag").text == "lag p0 0", what="caught up, lag 0")
    # Paused, the lag grows with what is produced (the page asks for fresh end offsets).
    press(browser, " ")
    wait_for(lambda: js_state(browser, "serverStatus") == "paused", what="the server's pause")
    # (one record a batch: Tansu's end offset is the last batch's base offset + 1)
    cluster.produce(t, [(None, f"late {i}") for i in range(25)], flush_each=True)
    wait_for(lambda: browser.find_element(By.ID, "lag").text == "lag p0 25", timeout=15, what="lag 25")
    press(browser, " ")
    wait_for(lambda: browser.find_element(By.ID, "lag").text == "lag p0 0", what="lag 0 after resume")
    assert rows(browser)[-1] == (0, total + 24)
    # The flame graph link opens the profiler in a new tab.
    flame = browser.find_element(By.ID, "flame")
    assert flame.get_attribute("target") == "_blank"
    href = flame.get_attribute("href")
    assert href == srv.url("/debug/profile?seconds=5&format=svg")
    with urllib.request.urlopen(href.replace("seconds=5", "seconds=0.2"), timeout=10) as res:
        assert res.headers["Content-Type"].startswith("image/svg+xml")


@pytest.mark.parametrize("scheme,theme,expected", [
    ("light", "system", "rgb(251, 251, 250)"),
    ("dark", "system", "rgb(22, 24, 27)"),
    ("dark", "light", "rgb(251, 251, 250)"),
    ("light", "dark", "rgb(22, 24, 27)"),
])
def test_theme_follows_the_system_unless_set(server, browser, scheme, theme, expected):
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia",
                            {"features": [{"name": "prefers-color-scheme", "value": scheme}]})
    open_page(browser, server, "", settings={"theme": theme})
    assert browser.execute_script("return getComputedStyle(document.documentElement).backgroundColor;") == expected


def test_narrow_window(cluster, server, browser):
    t = cluster.create_topic()
    cluster.produce(t, [(f"key-{i}", "v" * 500) for i in range(5)])
    browser.set_window_size(420, 800)
    open_page(browser, server, f"topic={t}&from=earliest")
    wait_rows(browser, 5)
    assert browser.execute_script(
        "return document.documentElement.scrollWidth <= document.documentElement.clientWidth;")
    assert not browser.find_element(By.CSS_SELECTOR, "#records .record .c-hdrs").is_displayed()
    # The topic's info arrives after the first records: filling it must not move the rows (a click
    # aimed at a row would land on the header).
    info = browser.find_element(By.ID, "topic-info")
    wait_for(lambda: "retained" in info.text, what="the topic info")
    top = "return document.getElementById('records').getBoundingClientRect().top;"
    filled = browser.execute_script(top)
    for text in ("", "12 partitions · 1,234,567,890 retained", "no info (" + "x" * 200 + ")"):
        browser.execute_script("arguments[0].textContent = arguments[1];", info, text)
        assert browser.execute_script(top) == filled, text
    # Nor must the status bar, whatever the counts grow to; the state, its detail and the main
    # counts stay in sight.
    grown = {"conn": "broker-unavailable", "status-detail": "closed: 4404 " + "y" * 200,
             "rate": "123456.7/s", "count": "1,234,567,890 records", "shown": "10,000 shown",
             "dropped": "1,234,567 dropped", "lag": "lag " + ", ".join(f"p{i} 99999" for i in range(12))}
    visible = browser.execute_script("""
        const [texts, wanted] = arguments;
        for (const [id, text] of Object.entries(texts)) {
          const el = document.getElementById(id);
          el.hidden = false;
          el.textContent = text;
        }
        const bar = document.getElementById('status').getBoundingClientRect();
        return wanted.filter((id) => {
          const r = document.getElementById(id).getBoundingClientRect();
          return r.width > 0 && r.top >= bar.top && r.bottom <= bar.bottom;
        });""", grown, ["conn", "status-detail", "rate", "count"])
    assert browser.execute_script(top) == filled
    assert visible == ["conn", "status-detail", "rate", "count"]
    browser.find_element(By.CSS_SELECTOR, '#records .record[data-offset="0"]').click()
    pane = browser.find_element(By.ID, "detail")
    wait_for(pane.is_displayed, what="the record pane")
    assert pane.rect["width"] <= 420


def test_since_time_shortcuts_and_picker(cluster, server, browser):
    t = cluster.create_topic()
    now = int(time.time() * 1000)
    cluster.produce(t, [(f"old{i}", "old", 0, None, now - 2 * 3600_000) for i in range(5)]
                    + [(f"new{i}", "new", 0, None, now - 60_000) for i in range(3)],
                    flush_each=True)  # Tansu's end offset is the last batch's base + 1
    open_page(browser, server, f"topic={t}")
    wait_for(lambda: conn_state(browser) == "live", what="the live tail")
    Select = pytest.importorskip("selenium.webdriver.support.select").Select
    Select(browser.find_element(By.ID, "from-mode")).select_by_value("ts")
    picker = browser.find_element(By.ID, "from-arg")
    assert picker.get_attribute("type") == "datetime-local"
    browser.find_element(By.CSS_SELECTOR, '#ts-quick button[data-minutes="60"]').click()
    wait_for(lambda: probe(browser)["sockets"] == 2, what="the tail restarted")
    found = wait_rows(browser, 3)
    assert found == [(0, 5), (0, 6), (0, 7)]
    typed = picker.get_attribute("value")
    assert typed and "from=ts%3A" in browser.current_url
    # The address is a bookmark: a reload starts the same tail with the same picker value.
    browser.refresh()
    assert wait_rows(browser, 3) == [(0, 5), (0, 6), (0, 7)]
    assert browser.find_element(By.ID, "from-arg").get_attribute("value") == typed


# ---------- start modes, since-time shortcut, long values, row cells, rate, broker outage ----------

def select_value(browser, element_id: str, value: str) -> None:
    Select = pytest.importorskip("selenium.webdriver.support.select").Select
    Select(browser.find_element(By.ID, element_id)).select_by_value(value)


def retype(browser, element_id: str, text: str) -> None:
    box = browser.find_element(By.ID, element_id)
    box.clear()
    if text:
        box.send_keys(text)


def query_of(browser) -> dict:
    from urllib.parse import parse_qs, urlsplit
    return {k: v[0] for k, v in parse_qs(urlsplit(browser.current_url).query).items()}


def test_start_modes_chosen_in_the_page(cluster, server, browser):
    """Partitions, last N per partition and exact offsets, picked in the form (not the URL)."""
    t = cluster.create_topic(partitions=3)
    # One record a batch: "last N" starts from the end offsets, which Tansu gets right only so.
    cluster.produce(t, [(f"k{i}", f"v{i}", i % 3) for i in range(18)], flush_each=True)
    open_page(browser, server, f"topic={t}")
    wait_for(lambda: conn_state(browser) == "live", what="the live tail")
    assert rows(browser) == []
    # One partition, from the beginning.
    retype(browser, "partitions", "1")
    select_value(browser, "from-mode", "earliest")
    browser.find_element(By.ID, "start").click()
    wait_for(lambda: probe(browser)["sockets"] == 2, what="the tail restarted")
    assert wait_rows(browser, 6) == [(1, o) for o in range(6)]
    stays(lambda: rows(browser) == [(1, o) for o in range(6)], 0.5, "records of other partitions")
    assert query_of(browser) == {"topic": t, "from": "earliest", "partitions": "1"}
    # The last 2 of every partition.
    retype(browser, "partitions", "")
    select_value(browser, "from-mode", "last")
    assert browser.find_element(By.ID, "from-arg").is_displayed()
    retype(browser, "from-arg", "2")
    browser.find_element(By.ID, "start").click()
    wait_for(lambda: probe(browser)["sockets"] == 3, what="the tail restarted")
    found = wait_rows(browser, 6)
    assert by_partition(found) == {0: [4, 5], 1: [4, 5], 2: [4, 5]}
    assert query_of(browser) == {"topic": t, "from": "-2"}
    # Exact offsets: only the partitions named, from the offsets given.
    select_value(browser, "from-mode", "offsets")
    retype(browser, "from-arg", "0:3, 2:5")
    browser.find_element(By.ID, "start").click()
    wait_for(lambda: probe(browser)["sockets"] == 4, what="the tail restarted")
    found = wait_rows(browser, 4)
    assert by_partition(found) == {0: [3, 4, 5], 2: [5]}
    assert query_of(browser) == {"topic": t, "from": "offsets:0:3,2:5"}
    # Live records keep to the partitions named.
    cluster.produce(t, [("late", f"late{p}", p) for p in range(3)], flush_each=True)
    found = wait_rows(browser, 6)
    assert by_partition(found) == {0: [3, 4, 5, 6], 2: [5, 6]}


def test_since_five_minutes_shortcut(cluster, server, browser):
    t = cluster.create_topic()
    now = int(time.time() * 1000)
    cluster.produce(t, [("old", "an hour ago", 0, None, now - 3600_000),
                        ("old", "six minutes ago", 0, None, now - 6 * 60_000),
                        ("new", "four minutes ago", 0, None, now - 4 * 60_000),
                        ("new", "just now", 0, None, now)], flush_each=True)
    open_page(browser, server, f"topic={t}")
    wait_for(lambda: conn_state(browser) == "live", what="the live tail")
    select_value(browser, "from-mode", "ts")
    browser.find_element(By.CSS_SELECTOR, '#ts-quick button[data-minutes="5"]').click()
    wait_for(lambda: probe(browser)["sockets"] == 2, what="the tail restarted")
    found = wait_rows(browser, 2)
    assert found == [(0, 2), (0, 3)]
    values = browser.execute_script("return window.kafkatail.records().map((r) => r.value);")
    assert values == ["four minutes ago", "just now"]
    # The picker holds a time about five minutes ago, and the URL carries it.
    picked = browser.find_element(By.ID, "from-arg").get_attribute("value")
    picked_ms = browser.execute_script("return new Date(arguments[0]).getTime();", picked)
    assert abs(picked_ms - (now - 5 * 60_000)) < 60_000, (picked, now)
    assert query_of(browser)["from"] == f"ts:{picked}"


def test_show_all_for_a_long_value(cluster, server, browser):
    t = cluster.create_topic()
    limit = 20_000  # DETAIL_CHARS in app.js
    value = "".join(f"{i:08d}," for i in range(25_000 // 9 + 1))[:25_000]
    cluster.produce(t, [("long", value)])
    open_page(browser, server, f"topic={t}&from=earliest")
    wait_rows(browser, 1)
    cell = browser.find_element(By.CSS_SELECTOR, "#records .record .c-val").get_attribute("textContent")
    assert cell == value[:300] + "…"  # the one-line row: PREVIEW_CHARS
    browser.find_element(By.CSS_SELECTOR, '#records .record[data-offset="0"]').click()
    wait_for(browser.find_element(By.ID, "detail").is_displayed, what="the record pane")
    pre_js = "return document.querySelector('#detail-body section:last-of-type pre').textContent;"
    assert browser.execute_script(pre_js) == value[:limit] + "…"
    title = browser.find_element(By.CSS_SELECTOR, "#detail-body section:last-of-type h4").text
    assert title.startswith("value · text"), title
    more = browser.find_element(By.CSS_SELECTOR, "#detail-body button.more")
    assert more.text == "show all (25,000 characters)"
    more.click()
    wait_for(lambda: browser.execute_script(pre_js) == value, what="the whole value")
    assert not browser.find_elements(By.CSS_SELECTOR, "#detail-body button.more")


def test_row_time_and_size_cells(cluster, server, browser):
    t = cluster.create_topic()
    now = int(time.time() * 1000)
    big = "x" * 3000
    cluster.produce(t, [("k1", "hello", 0, [("h", b"vv"), ("trace", b"abc")], now - 30_000),
                        ("key", big, 0, None, now - 2 * 3600_000),
                        (None, "v", 0, None, now - 3 * 86400_000 - 60_000)])
    open_page(browser, server, f"topic={t}&from=earliest")
    wait_rows(browser, 3)
    cells = browser.execute_script("""
        return Array.from(document.querySelectorAll('#records .record'), (r) => ({
          rel: r.querySelector('.c-time .rel').textContent,
          title: r.querySelector('.c-time').title,
          size: r.querySelector('.c-size').textContent}));""")
    sizes = browser.execute_script("return window.kafkatail.records().map((r) => r.size);")
    # key + value + header names and values, in bytes
    assert sizes == [2 + 5 + (1 + 2) + (5 + 3), 3 + 3000, 1]
    assert [c["size"] for c in cells] == ["18 B", "2.9 KB", "1 B"]
    seconds = cells[0]["rel"]
    assert seconds.endswith("s ago") and 25 <= int(seconds[:-len("s ago")]) <= 60, seconds
    assert [c["rel"] for c in cells[1:]] == ["2h ago", "3d ago"]
    iso = browser.execute_script("return new Date(arguments[0]).toISOString();", now - 30_000)
    assert cells[0]["title"] == f"{iso} ({now - 30_000})"


def rate(browser) -> float:
    text = browser.find_element(By.ID, "rate").text
    assert text.endswith("/s"), text
    return float(text[:-2])


def test_rate_rises_while_records_flow_and_falls_back(cluster, server, browser):
    t = cluster.create_topic()
    open_page(browser, server, f"topic={t}")
    wait_for(lambda: conn_state(browser) == "live", what="the live tail")
    assert rate(browser) == 0.0
    cluster.produce(t, [(None, f"v{i}") for i in range(100)])
    wait_for(lambda: rate(browser) > 0, timeout=5, what="a rate above 0")
    wait_rows(browser, 100)
    # RATE_WINDOW_MS is 5 s and the bar refreshes every second: 0 again well within 8 s.
    stopped = time.monotonic()
    wait_for(lambda: rate(browser) == 0.0, timeout=8, what="the rate back to 0")
    assert time.monotonic() - stopped > 2  # not at once: the window still holds the burst
    stays(lambda: rate(browser) == 0.0, 1.5, "the rate stays 0 with nothing flowing")


@pytest.fixture
def private_broker():
    """A broker of this test's own, to stop and start again; stopped after the servers."""
    from kafkatail.broker import EmbeddedBroker
    broker = EmbeddedBroker().start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.mark.timeout(120)
def test_broker_outage_shows_and_recovers(private_broker, make_server_, browser):
    from kafkatail.testing.kafka import Cluster

    broker = private_broker
    own = Cluster(broker.bootstrap, broker)
    t = own.create_topic()
    srv = make_server_(bootstrap_servers=broker.bootstrap)
    open_page(browser, srv, f"topic={t}")
    wait_for(lambda: js_state(browser, "serverStatus") == "live", what="the live feed")
    # Nothing produced before the outage: the broker comes back empty (memory storage), with
    # offsets from 0 again, which a page that had seen records would take for a replay.
    broker.stop()
    wait_for(lambda: conn_state(browser) == "broker-unavailable", timeout=40, what="broker-unavailable")
    # The marker reaches the list with the next flush (FLUSH_MS), just after the status.
    wait_for(lambda: "broker unavailable — waiting for it to come back" in markers(browser),
             what="the broker-unavailable marker")
    assert browser.find_element(By.ID, "conn").text == "broker-unavailable"
    broker.start()  # the same port; memory storage, so the topic is made again
    own.create_topic(t)
    wait_for(lambda: "broker connection restored" in markers(browser), timeout=60, what="the restored marker")
    wait_for(lambda: conn_state(browser) == "live", what="live again")
    assert markers(browser).index("broker connection restored") > markers(browser).index(
        "broker unavailable — waiting for it to come back")
    own.produce(t, [(None, "after the outage")])
    assert wait_rows(browser, 1) == [(0, 0)]
    assert browser.execute_script("return window.kafkatail.records()[0].value;") == "after the outage"
