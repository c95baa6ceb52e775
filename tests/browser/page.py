"""Driving the live-tail page in headless Chromium: load it with a probe, read its rows and state
through its console API (window.kafkatail), hold its script, overflow its server's outbox."""
from __future__ import annotations

import contextlib
import http.server
import json
import os
import random
import threading
import time
from typing import Iterator

import pytest

from helpers import wait_for

By = pytest.importorskip("selenium.webdriver.common.by", reason="selenium not installed (dev extra)").By

# Installed before app.js runs: counts WebSocket constructions and alert()/confirm()/prompt().
PROBE = """
window.__kt = {sockets: 0, alerts: 0};
for (const name of ['alert', 'confirm', 'prompt']) window[name] = () => { window.__kt.alerts++; };
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(...args) { super(...args); window.__kt.sockets++; }
};
"""

# The list is virtual: only rows near the viewport are in the DOM, so tests read the page's list
# through its read-only console API (window.kafkatail) and check the DOM where it matters.
ROWS_JS = "return window.kafkatail.rows();"


def install_probe(browser, settings: dict | None = None) -> None:
    """Install the probe and, if given, the page settings in localStorage for every later load."""
    source = PROBE
    if settings is not None:
        source += f"localStorage.setItem('kafkatail.settings', {json.dumps(json.dumps(settings))});"
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": source})


def open_page(browser, server, query: str, settings: dict | None = None) -> None:
    """Load the page with the probe installed; return once its script has run."""
    install_probe(browser, settings)
    browser.get(server.url(f"/?{query}"))
    # get() can return before the deferred app.js has run (seen 1 load in 80).
    wait_for(lambda: browser.execute_script("return window.kafkatail !== undefined;"), what="app.js")


def rows(browser) -> list[tuple[int, int]]:
    return [tuple(r) for r in browser.execute_script(ROWS_JS)]


def wait_rows(browser, n: int, timeout: float = 30) -> list[tuple[int, int]]:
    wait_for(lambda: browser.execute_script("return window.kafkatail.state().records") >= n,
             timeout, f"{n} records on the page")
    return rows(browser)


def state(browser) -> dict:
    return browser.execute_script("return window.kafkatail.state();")


def dom_rows(browser) -> list[tuple[int, int]]:
    """The record rows the virtual list has in the DOM (the visible ones and a margin)."""
    return [tuple(r) for r in browser.execute_script(
        "return Array.from(document.querySelectorAll('#records .record'),"
        " (r) => [Number(r.dataset.partition), Number(r.dataset.offset)]);")]


@contextlib.contextmanager
def script_blocked(browser, most_s: float = 6.0) -> Iterator[None]:
    """Hold the page's script in a synchronous XHR until the block ends (at most ``most_s``, under
    the test server's 10 s ping timeout): the browser stops reading the socket meanwhile."""
    entered, release = threading.Event(), threading.Event()

    class Gate(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            entered.set()
            release.wait(most_s)
            self.send_response(204)
            self.send_header("Access-Control-Allow-Origin", "*")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    gate = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gate)
    gate.daemon_threads = True
    serving = threading.Thread(target=gate.serve_forever, name="kt-test-gate",
                               kwargs={"poll_interval": 0.1})
    script = ("const x = new XMLHttpRequest(); x.open('GET', arguments[0], false);"
              " try { x.send(); } catch (e) {}")
    blocker = threading.Thread(target=browser.execute_script, name="kt-test-page-block",
                               args=(script, f"http://127.0.0.1:{gate.server_port}/"))
    serving.start()
    try:
        blocker.start()
        assert entered.wait(10), "the page never sent its blocking request"
        yield
    finally:
        release.set()
        blocker.join(most_s + 10)
        gate.shutdown()
        gate.server_close()
        serving.join(5)


def overflow(cluster, browser, server, topic: str, burst: int = 500, bursts: int = 10) -> int:
    """Produce on the page's live feed while its script is held until the server's outbox
    overflows; returns how many records went once the page has accounted for them all.

    Each value is ~4 KB of random readings, so that even compressed (the page asks for
    permessage-deflate) the bursts outgrow the sockets' buffers and the tiny outbox drops.
    """
    rng = random.Random(topic)
    total = 0
    def drops() -> int:
        return server.pool.totals()["dropped"]

    before = drops()
    with script_blocked(browser):
        for _ in range(bursts):
            cluster.produce(topic, [(f"sensor-{n % 5}", json.dumps(
                {"reading": n, "unit": "C", "samples": [round(rng.uniform(15, 30), 4) for _ in range(450)]}))
                for n in range(total, total + burst)])
            total += burst
            deadline = time.monotonic() + 0.3  # for the feed to poll the burst
            while drops() == before and time.monotonic() < deadline:
                time.sleep(0.02)
            if drops() > before:
                break
        else:
            raise AssertionError(f"{total} records while the page was held and the server never dropped")
    wait_for(lambda: (lambda s: s["received"] + s["dropped"] == total and not s["pending"] and s["dropped"])(
             state(browser)), timeout=30, what=f"all {total} records shown or counted as dropped")
    return total


def conn_state(browser) -> str:
    return browser.find_element(By.ID, "conn").get_attribute("data-state")


def wait_state(browser, state: str, timeout: float = 20) -> None:
    wait_for(lambda: conn_state(browser) == state, timeout, f"connection state {state!r}")


def markers(browser) -> list[str]:
    return browser.execute_script("return window.kafkatail.markers();")


def probe(browser) -> dict:
    return browser.execute_script("return window.__kt;")


def shot(browser, name: str) -> None:
    target = os.environ.get("KAFKATAIL_SCREENSHOTS")
    if target:
        os.makedirs(target, exist_ok=True)
        browser.save_screenshot(os.path.join(target, f"{name}.png"))


def by_partition(found) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for p, o in found:
        out.setdefault(p, []).append(o)
    return out
