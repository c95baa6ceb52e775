"""The reaper, /debug/threads and /metrics, on a live in-process server with real tails."""
from __future__ import annotations

import json
import logging
import os
import threading
import urllib.request

import pytest
import websocket
from kafka import KafkaConsumer

from kafkatail.tail.outbox import Outbox
from kafkatail.tail.request import parse

from helpers import Backlog, Closed, WsClient, metrics, wait_for


def get_json(server, path):
    return json.load(urllib.request.urlopen(server.url(path)))


def test_debug_threads_names_roles_and_tails(cluster, server):
    t = cluster.create_topic()
    c = WsClient(server.ws_url(f"/ws/tail/{t}"))
    c.status("live")
    data = get_json(server, "/debug/threads?window=0.2")
    rows = data["threads"]
    by_role = {}
    for r in rows:
        by_role.setdefault(r["role"], []).append(r)
    assert {"consumer", "kafka-io", "websocket", "reaper", "server"} <= set(by_role)
    feed = by_role["consumer"][0]
    assert feed["topic"] == t and feed["owner"] == "pool"
    assert feed["nid"] == hex(feed["native_id"]) and feed["os_name"].startswith("kt-feed")
    assert any("consumer.py" in line for line in feed["stack"])
    assert by_role["kafka-io"][0]["topic"] == t
    ws = by_role["websocket"][0]
    assert ws["topic"] == t and ws["client"] == "127.0.0.1" and ws["tail_id"] == 1
    assert data["process"]["threads"] >= len(rows) - 1
    c.close()


def test_hot_thread_named_first_with_stack(server, hot_thread):
    top = get_json(server, "/debug/threads?top=1&window=0.5")["threads"]
    assert top[0]["name"] == "kt-test-hot" and top[0]["cpu_pct"] > 30
    assert any("in spin" in line for line in top[0]["stack"])
    assert top[0]["role"] == "unknown"


def test_metrics_parse_and_move_with_traffic(cluster, server):
    t = cluster.create_topic()
    before = metrics(server)
    c = WsClient(server.ws_url(f"/ws/tail/{t}?from=earliest"))
    c.status("live")
    cluster.produce(t, [(b"k", b"v" * 10) for _ in range(25)])
    c.collect(25)
    during = metrics(server)
    assert during["kafkatail_tails_active"] == 1
    assert during[f"kafkatail_topic_tails{{topic={t}}}"] == 1
    assert during["kafkatail_threads{role=consumer}"] >= 1
    assert during["kafkatail_records_sent_total"] - before["kafkatail_records_sent_total"] == 25
    assert during["kafkatail_record_bytes_sent_total"] - before["kafkatail_record_bytes_sent_total"] == 25 * 11
    assert during["process_open_fds"] > 0 and during["process_resident_memory_bytes"] > 0
    c.close()
    wait_for(lambda: metrics(server)["kafkatail_tails_active"] == 0, 5, lambda: metrics(server))
    assert metrics(server)["kafkatail_records_sent_total"] == during["kafkatail_records_sent_total"]


def test_reaper_joins_a_tail_whose_owner_vanished(cluster, make_server_, caplog):
    """Simulate a socket that vanished with no close at all: its owner dies without release()."""
    server = make_server_(reaper_interval_s=60, feed_linger_s=0)
    t = cluster.create_topic()
    opened = []

    def owner():
        opened.append(server.pool.open(parse(t, {}), Outbox(100), "10.0.0.9"))

    th = threading.Thread(target=owner, name="kt-test-vanishing-owner")
    th.start()
    th.join()
    tail = opened[0]
    wait_for(lambda: tail.state == "live", 10, tail.describe)
    assert len(server.pool) == 1
    with caplog.at_level(logging.WARNING, logger="kafkatail"):
        server.app.extensions["kafkatail"]["reaper"].tick()
    assert not tail.is_alive() and len(server.pool) == 0
    assert server.pool.reaped_total == 1
    msg = [r.getMessage() for r in caplog.records if "reaped orphaned tail" in r.getMessage()]
    assert msg and tail.name in msg[0] and "CPU" in msg[0]
    assert metrics(server)["kafkatail_tails_reaped_total"] == 1


def test_a_tail_its_session_released_during_the_reapers_pass_is_not_reaped(cluster, make_server_,
                                                                          caplog):
    """The pass lists the tails, then asks each owner; a session that releases its tail and
    ends in between (1,000 tails closing at once make that likely) was counted and logged as
    an orphan."""
    server = make_server_(reaper_interval_s=60)
    t = cluster.create_topic()

    class Session:
        """An owner that releases its tail and ends just as the reaper asks about it."""
        viewer = None

        def is_alive(self):
            server.pool.release(self.viewer)
            return False

    owner = Session()
    owner.viewer = server.pool.open(parse(t, {}), Outbox(100), "10.0.0.9", owner=owner)
    wait_for(lambda: owner.viewer.state == "live", 10, owner.viewer.describe)
    with caplog.at_level(logging.WARNING, logger="kafkatail"):
        server.app.extensions["kafkatail"]["reaper"].tick()
    assert server.pool.reaped_total == 0 and len(server.pool) == 0
    assert not [r for r in caplog.records if "reaped orphaned tail" in r.getMessage()]


def test_reaper_wakes_a_session_whose_thread_ended_without_closing_it(cluster, make_server_):
    """A session sleeps until something wakes it; a consumer thread that ends without closing
    its viewers' outboxes (a fault of ours) must not leave the socket open until the session's
    long safety timeout: the reaper's pass wakes it, and it closes with 1011."""
    server = make_server_(reaper_interval_s=60)
    t = cluster.create_topic()
    c = WsClient(server.ws_url(f"/ws/tail/{t}"))
    c.status("live")
    (viewer,) = server.pool.tails()
    thread = viewer.thread
    thread.stop()  # its loop ends; nothing closes the outbox
    thread.join(10)
    assert not thread.is_alive()
    with pytest.raises(websocket.WebSocketTimeoutException):
        c.recv(timeout=0.5)  # nothing yet: no timer of the session's own ends it
    server.app.extensions["kafkatail"]["reaper"].tick()
    with pytest.raises(Closed):
        c.until(lambda f: False, timeout=10)
    assert (c.close_code, c.close_reason) == (1011, "tail ended unexpectedly")


def test_reaper_logs_one_cheap_line_and_writes_snapshot(cluster, make_server_, tmp_path, caplog):
    snap = tmp_path / "threads.json"
    server = make_server_(snapshot_path=str(snap), reaper_interval_s=60)
    reaper = server.app.extensions["kafkatail"]["reaper"]
    with caplog.at_level(logging.INFO, logger="kafkatail"):
        reaper.tick()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("threads=")]
    assert len(lines) == 1 and "fds=" in lines[0] and "top:" in lines[0]
    data = json.loads(snap.read_text())
    assert any(r["name"] == "kt-reaper" and r["role"] == "reaper" for r in data["threads"])


def test_gevent_worker_attributes_cpu_per_tail(cluster):
    """Under gevent every tail shares one OS thread; the switch tracer still tells them apart.
    The busy tail's regex backtracks (``x+y+z`` over runs of x), at a few MB/s: within its time
    budget even on a loaded machine, so it keeps running while records keep coming."""
    from kafkatail.testing.server import ServerProcess

    busy, idle = cluster.create_topic(), cluster.create_topic()
    server = ServerProcess(cluster.bootstrap, "gevent")
    try:
        clients = [WsClient(server.ws_url(f"/ws/tail/{t}?regex=x%2By%2Bz")) for t in (busy, idle)]
        for c in clients:
            c.status("live")
        seen = []

        def busy_charged():
            rows = json.load(urllib.request.urlopen(server.url("/debug/threads?window=0.2")))["threads"]
            seen[:] = [rows]
            consumers = {r["topic"]: r for r in rows if r["role"] == "consumer"}
            return consumers if consumers.get(busy, {}).get("cpu_total_s", 0) > 0.5 else None
        with Backlog(cluster, busy, lambda i: json.dumps({"n": i, "pad": "x" * 200})):
            consumers = wait_for(busy_charged, 60, lambda: [
                (r["topic"], r["cpu_total_s"]) for r in seen[0] if r["role"] == "consumer"])
        assert set(consumers) == {busy, idle}
        assert len({r["native_id"] for r in seen[0]}) == 1, "gevent: one OS thread for all"
        b, i = consumers[busy]["cpu_total_s"], consumers[idle]["cpu_total_s"]
        assert b > 5 * i, (b, i)
        for c in clients:
            c.close()
    finally:
        server.stop()


def test_sigusr2_refreshes_the_snapshot_file(cluster, tmp_path):
    """An operator without ptrace asks a worker for its threads: SIGUSR2, then read the file."""
    import os
    import signal
    import subprocess
    import sys

    import psutil

    from kafkatail.broker import free_port, wait_for_port

    snap = tmp_path / "threads.json"
    port = free_port()
    env = {**os.environ, "KAFKATAIL_SNAPSHOT_PATH": str(snap), "KAFKATAIL_REAPER_INTERVAL_S": "600"}
    proc = subprocess.Popen([sys.executable, "-m", "kafkatail", "serve", "--bootstrap-servers",
                             cluster.bootstrap, "--bind", f"127.0.0.1:{port}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for_port("127.0.0.1", port, 30)
        # Answered by the worker, so its signal handlers are in place.
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz")
        worker = psutil.Process(proc.pid).children()[0]
        assert not snap.exists()
        os.kill(worker.pid, signal.SIGUSR2)
        wait_for(snap.exists, 10, lambda: "no snapshot")
        data = json.loads(snap.read_text())
        assert data["pid"] == worker.pid
        assert any(r["role"] == "reaper" and r["os_name"] == "kt-reaper" for r in data["threads"])
        main = [r for r in data["threads"] if r["name"] == "MainThread"]
        assert main and main[0]["native_id"] == worker.pid and main[0]["stack"]
    finally:
        proc.terminate()
        proc.wait(15)


def test_hot_thread_in_live_kafkatail_named_first_by_leakcheck_with_stack(cluster, server,
                                                                          hot_thread):
    """The same hot thread, seen from outside: leakcheck on this (kafkatail-serving) process."""
    import subprocess
    import sys
    from pathlib import Path

    t = cluster.create_topic()
    WsClient(server.ws_url(f"/ws/tail/{t}")).status("live")
    script = Path(__file__).resolve().parents[2] / "scripts" / "leakcheck.py"
    r = subprocess.run([sys.executable, str(script), "--pid", str(os.getpid()), "--interval",
                        "0.5", "--samples", "3", "-n", "3", "--url", server.url(""), "--json"],
                       capture_output=True, text=True, timeout=60)
    out = json.loads(r.stdout)
    first = (out["processes"][0] if "processes" in out else out)["top"][0]
    assert first["name"] == "kt-test-hot" and first["tid"] == hot_thread.native_id, first
    assert any("in spin" in line for line in first["stack"]), first
    assert r.returncode == 2, r.stdout[-2000:]  # a thread hot above 80% of a core


def test_stuck_tail_is_reported_with_its_stack_not_dropped(cluster, make_server_, caplog,
                                                          monkeypatch):
    server = make_server_(reaper_interval_s=60, poll_timeout_ms=100, share_live_feeds=False)
    t = cluster.create_topic()
    opened = []
    th = threading.Thread(target=lambda: opened.append(
        server.pool.open(parse(t, {}), Outbox(100), "10.0.0.9")), name="kt-test-owner")
    th.start()
    th.join()
    tail = opened[0]
    wait_for(lambda: tail.state == "live", 10, tail.describe)
    thread = tail.thread
    # A consumer call that hangs (a library bug, a wedged socket): the thread cannot stop.
    hung, gate, real_poll = threading.Event(), threading.Event(), KafkaConsumer.poll

    def hung_poll(self, *args, **kwargs):
        if threading.current_thread() is thread:
            hung.set()
            gate.wait(30)
        return real_poll(self, *args, **kwargs)

    monkeypatch.setattr(KafkaConsumer, "poll", hung_poll)
    try:
        assert hung.wait(5)
        with caplog.at_level(logging.ERROR, logger="kafkatail"):
            server.app.extensions["kafkatail"]["reaper"].tick()
        assert thread.is_alive() and thread in server.pool.stuck
        reaper = server.app.extensions["kafkatail"]["reaper"]
        assert any("in hung_poll" in line for line in reaper.stuck[tail.tail_id])
        assert any("consumer.py" in line for line in reaper.stuck[tail.tail_id])
        assert any("is stuck" in r.getMessage() for r in caplog.records)
        assert metrics(server)["kafkatail_threads_stuck"] == 1
    finally:
        gate.set()
        thread.join(5)
