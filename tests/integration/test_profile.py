"""``/debug/profile`` on a live server: a hot thread's function is on top of its folded stacks."""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest

from kafkatail.ops.threads import REGISTRY

from helpers import Backlog, WsClient, wait_for


def folded(base: str, query: str = "seconds=1&hz=200") -> list[tuple[list[str], int]]:
    body = urllib.request.urlopen(f"{base}/debug/profile?format=folded&{query}", timeout=90)
    out = []
    for line in body.read().decode().splitlines():
        stack, _, n = line.rpartition(" ")
        out.append((stack.split(";"), int(n)))
    return out


def spin_in_server(stop: threading.Event) -> None:
    while not stop.is_set():
        sum(range(1000))


def test_threaded_profile_puts_the_hot_function_on_top(server):
    stop = threading.Event()
    hot = threading.Thread(target=spin_in_server, args=(stop,), name="kt-test-hot")
    REGISTRY.register(hot, "consumer", owner="test")
    hot.start()
    try:
        stacks = folded(server.url(""))
    finally:
        stop.set()
        hot.join(5)
    mine = [(s, n) for s, n in stacks if s[:2] == ["consumer", "kt-test-hot"]]
    assert mine, stacks[:5]
    hottest = max(mine, key=lambda item: item[1])[0]
    assert hottest[-1].startswith("spin_in_server (test_profile.py:"), hottest
    # On-CPU: the counts are the CPU it got (up to 200 ticks in 1 s on an idle machine), and the
    # server's own threads, parked, add next to nothing.
    assert sum(n for _, n in mine) >= max(20, 0.8 * sum(n for _, n in stacks)), stacks[:5]
    assert not any(t.name == "kt-profiler" for t in threading.enumerate())


def test_on_cpu_profile_leaves_out_parked_threads_that_wall_mode_shows(server, kafka_topic):
    """With tails open (consumer, kafka-io and websocket threads parked in poll/select/wait) and
    one hot thread, the on-CPU graph is the hot thread; the wall-clock graph is mostly parked
    threads."""
    topic = kafka_topic()
    clients = [WsClient(server.ws_url(f"/ws/tail/{topic}?from=earliest")) for _ in range(5)]
    for c in clients:
        c.status("live")
    stop = threading.Event()
    hot = threading.Thread(target=spin_in_server, args=(stop,), name="kt-test-hot")
    REGISTRY.register(hot, "consumer", owner="test")
    hot.start()
    try:
        cpu = folded(server.url(""), "seconds=1&hz=100&mode=cpu")
        wall = folded(server.url(""), "seconds=1&hz=100&mode=wall")
    finally:
        stop.set()
        hot.join(5)
    for c in clients:
        c.close()

    def share_of_hot(stacks: list[tuple[list[str], int]]) -> float:
        return sum(n for s, n in stacks if s[1] == "kt-test-hot") / sum(n for _, n in stacks)

    assert share_of_hot(cpu) >= 0.8, cpu[:8]
    parked = {s[1] for s, _ in wall if s[0] in ("kafka-io", "websocket", "reaper")}
    assert len(parked) >= 5 and share_of_hot(wall) < 0.25, wall[:8]
    waits = [(s, n) for s, n in cpu if s[-1].startswith(("wait (", "select (", "poll ("))]
    assert sum(n for _, n in waits) <= 0.05 * sum(n for _, n in cpu), waits


def test_other_formats_and_bad_input(server, hot_thread):
    base = server.url("/debug/profile")
    svg = urllib.request.urlopen(base + "?seconds=0.2&format=svg")
    assert svg.headers["Content-Type"].startswith("image/svg+xml")
    assert svg.read().startswith(b"<svg")
    doc = json.load(urllib.request.urlopen(base + "?seconds=0.2&format=speedscope"))
    assert doc["profiles"] and doc["shared"]["frames"]
    for query in ("seconds=0.01", "seconds=61", "hz=0", "hz=1001", "hz=x", "format=png",
                  "mode=gpu"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}?{query}")
        assert err.value.code == 400, query
        err.value.close()


def test_a_second_concurrent_profile_gets_409(server):
    first: list[int] = []
    t = threading.Thread(target=lambda: first.append(
        urllib.request.urlopen(server.url("/debug/profile?seconds=2&format=folded")).status),
        name="kt-test-first-profile")
    t.start()
    ext = server.app.extensions["kafkatail"]
    wait_for(lambda: "profiler" in ext and ext["profiler"]._lock.locked(), 5, lambda: ext.keys())
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(server.url("/debug/profile?seconds=0.2"))
    assert err.value.code == 409
    err.value.close()
    t.join(10)
    assert first == [200] and ext["profiler"].profiles_taken == 1


def test_gevent_profile_names_the_hot_consumer_greenlet(cluster):
    """A tail whose regex backtracks (``x+y+z`` over runs of x) on a busy topic keeps its consumer
    greenlet on the CPU: that is a real, HTTP-reachable CPU-bound path of the server. The sampler
    is an OS thread, so it runs while that greenlet holds the only other one."""
    from kafkatail.testing.server import ServerProcess

    busy = cluster.create_topic()
    server = ServerProcess(cluster.bootstrap, "gevent")
    try:
        base = server.url("")
        c = WsClient(server.ws_url(f"/ws/tail/{busy}?regex=x%2By%2Bz"))
        c.status("live")
        # A few MB/s: within the regex's time budget even on a loaded machine, and records keep
        # coming for as long as the profile runs.
        with Backlog(cluster, busy, lambda i: json.dumps({"n": i, "pad": "x" * 200})):
            stacks = folded(base, "seconds=1.5&hz=100")
        consumers = [(s, n) for s, n in stacks if s[0] == "consumer"]
        assert consumers, stacks[:5]
        # The tail's own thread, or the shared feed it joins once it has caught up.
        assert consumers[0][0][1].startswith((f"kt-tail-{busy}-", f"kt-feed-{busy}-")), consumers[0]
        # The regex search, a C call, runs in the Matcher's _search: the top Python frame.
        assert consumers[0][0][-1].startswith("_search (request.py:"), consumers[0]
        # On a loaded machine the server gets less CPU; the hot greenlet still holds most of it.
        mine, total = sum(n for _, n in consumers), sum(n for _, n in stacks)
        assert mine >= 10 and mine >= 0.6 * total, (mine, total, consumers[:3])
        c.close()
    finally:
        server.stop()
