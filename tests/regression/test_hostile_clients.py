"""One client against everyone else: attacks on ``kafkatail serve`` (gthread and gevent), each
measured from outside the server process as the attack pass that found them measured them."""
from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import websocket

from helpers import WsClient, wait_for


def close_code(url: str, after_hello: bool = False) -> int | None:
    """Open a tail and read until the server closes it; the close code. ``after_hello``: leave
    (None) once the tail is open instead."""
    ws = websocket.create_connection(url, timeout=20)
    try:
        while True:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return int.from_bytes(data[:2], "big") if len(data) >= 2 else None
            if after_hello and opcode == websocket.ABNF.OPCODE_TEXT and b'"hello"' in data[:20]:
                return None
    finally:
        ws.shutdown()  # the server has closed: no close handshake left to wait for


def refused_tails(server, paths: list[str]) -> list[int | None]:
    with ThreadPoolExecutor(8, thread_name_prefix="kt-test-attacker") as pool:
        return list(pool.map(lambda p: close_code(server.ws_url(p)), paths))


def series(server) -> set[str]:
    """The /metrics series (names with labels) other than the process collector's."""
    return {k for k in server.metrics() if not k.startswith("process_")}


def test_failed_tails_leave_nothing_behind(server_process, cluster):
    """Finding 3: tails of topics that do not exist, or of partitions a topic lacks, each close
    (4404, 4400) and leave no pool entry, no metric series and no memory behind."""
    topic = f"kt-hostile.{uuid.uuid4().hex[:8]}"
    cluster.create_topic(topic, partitions=2)
    server = server_process(feed_linger_s=0.5, ping_interval_s=60)
    live = WsClient(server.ws_url(f"/ws/tail/{topic}"))
    live.status("live")

    def attack(n: int) -> list[int | None]:
        paths = [f"/ws/tail/kt-missing.{uuid.uuid4().hex[:12]}" if i % 4 else
                 f"/ws/tail/{topic}?partitions={i % 97 + 2}" for i in range(n)]
        return refused_tails(server, paths)

    codes = attack(200)  # warm-up: allocator pools, imports, the metadata of the cluster
    assert set(codes) == {4404, 4400}, codes
    wait_for(lambda: server.tails() == 1, 30, server.tails)
    before, rss_before = series(server), server.worker.memory_info().rss
    codes = attack(1000)
    assert set(codes) == {4404, 4400}
    wait_for(lambda: server.tails() == 1 and server.consumer_threads() == 1, 30,
             lambda: (server.tails(), server.consumer_threads()))
    after, rss_after = series(server), server.worker.memory_info().rss
    assert after == before, sorted(after ^ before)[:10]
    grown = (rss_after - rss_before) / 2**20
    print(f"{server_process.worker_class}: RSS +{grown:.1f} MB over 1,000 refused tails")
    assert grown < 8
    live.close()


def timed_get(url: str, timeout: float = 10) -> tuple[int, float]:
    """(HTTP status, seconds taken)."""
    start = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
        exc.close()
    return status, time.monotonic() - start


def test_api_flood_neither_queues_nor_blinds_readiness(server_process):
    """Finding 5: 16 clients looking up missing topics as fast as they can are rate-limited
    (429), and /readyz keeps answering from the broker state in well under a probe's 1 s."""
    server = server_process(api_rate_per_client=10, api_burst_per_client=30)  # the defaults
    stop = threading.Event()
    statuses: Counter[int] = Counter()

    def flood() -> None:
        while not stop.is_set():
            status, _ = timed_get(server.url(f"/api/topics/kt-missing.{uuid.uuid4().hex[:12]}"))
            statuses[status] += 1

    flooders = [threading.Thread(target=flood, name=f"kt-test-flood-{i}") for i in range(16)]
    for t in flooders:
        t.start()
    try:
        ready = []
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            ready.append(timed_get(server.url("/readyz")))
            stop.wait(0.2)
    finally:
        stop.set()
        for t in flooders:
            t.join(30)
    slowest = max(took for _, took in ready)
    print(f"{server_process.worker_class}: /readyz slowest {slowest:.3f}s of {len(ready)}; "
          f"/api answers {dict(statuses)}")
    assert {status for status, _ in ready} == {200}
    assert slowest < 1.0
    assert statuses[429] and statuses[404], statuses
    assert set(statuses) <= {404, 429, 503}, statuses


def test_readers_that_never_read_cost_bounded_memory_given_back(server_process, cluster):
    """Finding 2: four sockets tail 200 KB records from earliest and never read (4 KB receive
    buffers). The server holds at most a bounded number of bytes for them, not records, and
    gives the memory back when they are gone."""
    topic = cluster.create_topic(partitions=1)
    value = "v" * 200_000
    cluster.produce(topic, [(f"k{i}", value) for i in range(600)])  # 120 MB
    server = server_process(send_timeout_s=4, reaper_interval_s=1)
    warm = WsClient(server.ws_url(f"/ws/tail/{topic}?from=earliest&max=50"))
    assert len(warm.collect(50, timeout=60)) == 50
    warm.closed()
    wait_for(lambda: server.tails() == 0, 30, server.tails)
    base = server.worker.memory_info().rss
    mb = lambda: (server.worker.memory_info().rss - base) / 2**20  # noqa: E731
    stalled = [websocket.create_connection(
        server.ws_url(f"/ws/tail/{topic}?from=earliest"), timeout=10,
        sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),)) for _ in range(4)]
    try:
        peak, deadline = 0.0, time.monotonic() + 12
        while time.monotonic() < deadline:
            peak = max(peak, mb())
            time.sleep(0.2)  # sampling interval, not a wait for a condition
    finally:
        for ws in stalled:
            ws.shutdown()
    print(f"{server_process.worker_class}: RSS +{peak:.0f} MB at most while open")
    wait_for(lambda: server.tails() == 0, 30, server.tails)
    waiting = time.monotonic()
    wait_for(lambda: mb() < 50, 30, lambda: f"RSS +{mb():.0f} MB after they closed")
    took = time.monotonic() - waiting
    print(f"{server_process.worker_class}: RSS +{mb():.0f} MB {took:.1f} s after they closed")
    assert peak < 150


# Accepted (no shape the up-front check refuses) and slow on a long record: polynomial
# backtracking, 0.5 s a search on 300 characters with the regex module, more on longer ones.
SLOW_REGEX = r"\w+\w+\w+\w+\w+\w+\b\B"


def test_slow_regex_costs_its_viewers_not_the_process(server_process, cluster):
    """Finding 1: 30 tails of one topic whose regex backtracks for 0.5 s on each record, then
    10 such records, while the attacker keeps reconnecting with the same regex: /healthz keeps
    answering in under 1 s, a tail of another topic gets its records within 2 s, and the
    overruns stay charged to the attacker's address, so reconnecting does not reset them."""
    attacked = cluster.create_topic(partitions=1)
    other = cluster.create_topic(partitions=1)
    cluster.produce(other, [(f"k{i}", f"v{i}") for i in range(5)])
    server = server_process(ping_interval_s=30)
    url = server.ws_url(f"/ws/tail/{attacked}?regex={urllib.parse.quote(SLOW_REGEX)}")
    tails = [WsClient(url) for _ in range(30)]
    for t in tails:
        t.status("live")
    cluster.produce(attacked, [(f"k{i}", "a" * 400) for i in range(10)])
    stop = threading.Event()
    health: list[float] = []
    reconnects: Counter[int | None] = Counter()

    def probe() -> None:
        while not stop.is_set():
            health.append(timed_get(server.url("/healthz"))[1])
            stop.wait(0.1)

    def reconnect() -> None:
        while not stop.is_set():
            reconnects[close_code(url, after_hello=True)] += 1

    helpers = [threading.Thread(target=probe, name="kt-test-health-probe")] + [
        threading.Thread(target=reconnect, name=f"kt-test-reconnect-{i}") for i in range(4)]
    for h in helpers:
        h.start()
    try:
        start = time.monotonic()
        reader = WsClient(server.ws_url(f"/ws/tail/{other}?from=earliest"))
        got = reader.collect(5, timeout=30)
        delivered = time.monotonic() - start
        stop.wait(3)  # keep probing while the attacked feed works through its records
    finally:
        stop.set()
        for h in helpers:
            h.join(30)
    print(f"{server_process.worker_class}: /healthz slowest {max(health):.3f}s of {len(health)}, "
          f"other topic's 5 records in {delivered:.2f}s; reconnects closed {dict(reconnects)}")
    assert len(got) == 5
    assert max(health) < 1.0
    assert delivered < 2.0
    assert reconnects[4400], reconnects
    code, reason = WsClient(url).closed()
    assert code == 4400 and "regexes are refused for" in reason, reason


def test_hostile_input_gets_its_close_code_never_a_traceback(server_process, cluster):
    """Finding 6: Unicode digits in the query and a control frame nested 60,000 deep each get
    their answer (4400; an error frame on a socket that stays open), and the server logs no
    traceback."""
    topic = cluster.create_topic(partitions=1)
    server = server_process()
    for key, value in (("max", "\u00b2"), ("from", "-\u00b2"), ("partitions", "\u00b9"),
                       ("from", "offsets:0:\u00b3"), ("from", "ts:\u0661\u0667")):
        query = urllib.parse.urlencode({key: value})
        code, reason = WsClient(server.ws_url(f"/ws/tail/{topic}?{query}")).closed()
        assert code == 4400 and reason.startswith(f"{key}:"), (query, code, reason)
    tail = WsClient(server.ws_url(f"/ws/tail/{topic}"))
    tail.status("live")
    tail.ws.send("[" * 60_000)
    error = tail.until(lambda f: f["type"] == "error")
    assert error["code"] == 4400 and "nested" in error["message"], error
    tail.send({"op": "pause"})
    tail.status("paused")
    assert "Traceback" not in server.output, server.output[-3000:]
