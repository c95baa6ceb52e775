"""The page through a real nginx (conf/nginx.conf) in front of two ``kafkatail serve`` instances,
with the harness of tests/integration/test_nginx.py (conftest's ``nginx_stack``): the instance
that serves the page's socket is SIGKILLed while records flow, and the page reconnects through
nginx to the other instance and resumes from its per-partition cursor, with no gap and no
duplicate.
"""
from __future__ import annotations

import threading
import time

import pytest
from kafka import KafkaProducer

from helpers import wait_for
from .page import by_partition, markers, open_page, rows, state, wait_rows, wait_state

pytestmark = pytest.mark.timeout(120)

# Installed before app.js runs, next to page.PROBE: every record each WebSocket delivers, as
# [socket number, partition, offset]. The page drops records it already has (an overlap after a
# reconnect), so its rows alone cannot show whether the server resent any; the wire can.
WIRE = """
window.__wire = {sockets: 0, records: []};
const WireWebSocket = window.WebSocket;
window.WebSocket = class extends WireWebSocket {
  constructor(...args) {
    super(...args);
    const n = ++window.__wire.sockets;
    this.addEventListener('message', (ev) => {
      let m;
      try { m = JSON.parse(ev.data); } catch { return; }
      if (m.type === 'messages') for (const r of m.messages) window.__wire.records.push([n, r.partition, r.offset]);
    });
  }
};
"""


def settle(check, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``check`` until it is true (True) or ``timeout`` passes (False), for waits whose
    failure the assertions after them explain better than a timeout would."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


class Traffic:
    """One producer thread sending ``batch`` records, half to each of two partitions, every
    ``pause_s`` until ``stop()``; ``produced`` counts the records the broker acknowledged, so
    partition p ends with offsets 0..produced/2-1."""

    def __init__(self, bootstrap: str, topic: str, batch: int = 10, pause_s: float = 0.05) -> None:
        self.bootstrap, self.topic, self.batch, self.pause_s = bootstrap, topic, batch, pause_s
        self.produced = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kt-test-traffic")

    def _run(self) -> None:
        try:
            producer = KafkaProducer(bootstrap_servers=self.bootstrap,
                                     client_id="kt-test-traffic", linger_ms=5)
        except BaseException as exc:
            self.error = exc
            return
        try:
            while not self._stop.is_set():
                n = self.produced
                for i in range(n, n + self.batch):
                    producer.send(self.topic, value=f"v{i}".encode(), partition=i % 2)
                producer.flush(10)
                self.produced = n + self.batch
                self._stop.wait(self.pause_s)
        except BaseException as exc:
            self.error = exc
        finally:
            producer.close(timeout=5)

    def __enter__(self) -> "Traffic":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "the producer thread did not stop within 30s"
        if self.error is not None:
            raise AssertionError(f"producing failed after {self.produced} records") from self.error


def test_page_through_nginx_resumes_on_the_other_instance_after_sigkill(cluster, nginx_stack, browser):
    """Records flow to the page through nginx; the instance holding the page's socket is
    SIGKILLed (no close frame). The page shows its reconnect marker, resumes on the other instance
    from its cursor, and ends with every offset of both partitions exactly once, in order, though
    records kept being produced while it was disconnected."""
    nginx, servers = nginx_stack
    t = cluster.create_topic(partitions=2)
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": WIRE})
    open_page(browser, nginx, f"topic={t}&from=earliest")
    wait_state(browser, "live")
    with Traffic(cluster.bootstrap, t) as traffic:
        wait_rows(browser, 100)
        serving = wait_for(lambda: (lambda s: len(s) == 1 and s)([s for s in servers if s.tails() == 1]),
                           10, "exactly one instance serving the page's tail")[0]
        other = next(s for s in servers if s is not serving)
        shown_at_kill = state(browser)["records"]
        serving.worker.kill()                 # no close frame, no goodbye
        serving.proc.kill()
        serving.proc.wait()
        killed_at, produced_at_kill = time.monotonic(), traffic.produced
        wait_for(lambda: any("reconnected after" in m for m in markers(browser)), 30,
                 "the page's reconnect marker")
        reconnect_s, produced_at_reconnect = time.monotonic() - killed_at, traffic.produced
        # Live again: a new socket carries records produced after the reconnect, not only the
        # ones produced while the page was away.
        live_from = produced_at_reconnect // 2 + 25  # on partition 0
        wait_for(lambda: browser.execute_script(
            "return Math.max(-1, ...window.__wire.records.filter((r) => r[0] > 1 && r[1] === 0)"
            ".map((r) => r[2]));") >= live_from, 30,
            f"partition 0 offset {live_from} over a new socket")
    total = traffic.produced
    # Until the page holds them all; if it never does, the assertions below say what is missing.
    settled = settle(lambda: (lambda s: s["records"] >= total and not s["pending"])(state(browser)), 30)
    found = rows(browser)
    summary = (f"{'' if settled else 'not settled in 30s: '}{total} produced ({produced_at_kill}"
               f" before the kill, {produced_at_reconnect} before the reconnect"
               f" {reconnect_s:.2f}s later), the page had {shown_at_kill} at the kill")
    print(f"\npage through nginx, SIGKILL: {summary}")

    half = total // 2
    assert len(found) == len(set(found)) == total, \
        f"{len(found)} rows, {len(set(found))} distinct; {summary}"
    got = by_partition(found)
    for p in (0, 1):
        offsets = got.get(p, [])
        bad = next((i for i, o in enumerate(offsets) if o != i), len(offsets))
        assert offsets == list(range(half)), \
            (f"partition {p}: {len(offsets)} offsets, wanted 0..{half - 1}; at index {bad}: "
             f"{offsets[max(bad - 2, 0):bad + 3]}; {summary}")
    reconnects = [m for m in markers(browser) if "reconnected after" in m]
    assert len(reconnects) == 1 and "resumed from offsets:" in reconnects[0], reconnects
    assert other.tails() == 1, f"the surviving instance serves {other.tails()} tails"

    # The wire: each record was sent once, and the second socket started at the cursor the
    # page resumed from (the marker's offsets:p:o,...), on the other instance.
    wire = browser.execute_script("return window.__wire;")
    sent = [(p, o) for _, p, o in wire["records"]]
    assert len(sent) == len(set(sent)) == total, \
        f"{len(sent)} records on the wire, {len(set(sent))} distinct, over {wire['sockets']} sockets"
    carried = {n for n, _, _ in wire["records"]}
    assert len(carried) == 2, f"records came over sockets {sorted(carried)} of {wire['sockets']}"
    resumed = dict(tuple(map(int, po.split(":")))
                   for po in reconnects[0].split("resumed from offsets:")[1].split(","))
    second = max(carried)
    first_after = {p: min(o for n, q, o in wire["records"] if n == second and q == p) for p in (0, 1)}
    assert first_after == resumed, f"resumed from {resumed}, the new socket began at {first_after}"
