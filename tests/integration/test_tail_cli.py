"""``kafkatail tail``: kcat-style output through the service, and resume across a server restart."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

from kafkatail.client import Formatter

from .test_lifecycle import wait_for

KT = [sys.executable, "-m", "kafkatail", "tail"]


def run(server, *args, timeout=30):
    url = f"ws://127.0.0.1:{server.port}"
    return subprocess.run(KT + list(args) + ["--url", url], capture_output=True, text=True,
                          timeout=timeout)


def test_format_tokens():
    rec = {"partition": 2, "offset": 7, "timestamp": 1000, "key": "k", "value": {"a": 1},
           "headers": [["h", "v"], ["n", None]], "size": 12}
    out = Formatter("t", "%t|%p|%o|%T|%k|%K|%s|%h|%S|%%\n")(rec)
    assert out == 't|2|7|1000|k|1|{"a": 1}|h=v,n=|12|%\n'
    assert json.loads(Formatter("t", None)(rec))["topic"] == "t"


def test_tail_prints_kcat_style_and_json(cluster, server):
    t = cluster.create_topic(partitions=2)
    cluster.produce(t, [(f"k{i}", f"v{i}", i % 2) for i in range(6)])
    r = run(server, t, "-o", "earliest", "-c", "6", "-f", "%p:%o %k=%s\\n")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == sorted(f"{i % 2}:{i // 2} k{i}=v{i}" for i in range(6))
    r = run(server, t, "-o", "earliest", "-c", "3", "--json", "-p", "1", "--filter", "V")
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [(x["partition"], x["value"]) for x in lines] == [(1, "v1"), (1, "v3"), (1, "v5")]


def test_tail_reports_final_errors(server):
    r = run(server, "no.such.topic")
    assert r.returncode == 1 and "4404 unknown topic" in r.stderr


def test_tail_resumes_across_a_server_restart_without_gap_or_duplicate(cluster, make_server_):
    t = cluster.create_topic(partitions=2)
    first = make_server_()
    port = first.port
    n = 400
    proc = subprocess.Popen(KT + [t, "--url", f"ws://127.0.0.1:{port}", "-o", "earliest",
                                  "-c", str(n), "-f", "%p:%o\\n"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), name="kt-test-reader")
    reader.start()
    try:
        cluster.produce(t, [(None, f"a{i}", i % 2) for i in range(200)])
        wait_for(lambda: len(lines) >= 200, 20, lambda: len(lines))
        first.stop()                       # clients get 1001 and start reconnecting
        cluster.produce(t, [(None, f"b{i}", i % 2) for i in range(200)])
        make_server_(port=port)            # same address, as after a restart
        assert proc.wait(30) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(10)
    seen = [tuple(map(int, x.split(":"))) for x in lines]
    assert len(seen) == n and len(set(seen)) == n
    for p in (0, 1):
        assert sorted(o for q, o in seen if q == p) == list(range(200))
    assert "reconnected" in proc.stderr.read()


def test_tail_exits_cleanly_on_ctrl_c(cluster, server):
    t = cluster.create_topic()
    proc = subprocess.Popen(KT + [t, "--url", f"ws://127.0.0.1:{server.port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: len(server.pool) == 1, 10, lambda: proc.poll())
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 0
    wait_for(lambda: len(server.pool) == 0, 5, lambda: server.pool.tails())
