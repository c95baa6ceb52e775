"""The two commands a newcomer runs: ``kafkatail demo`` and ``kafkatail serve``, as subprocesses."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

from kafkatail.broker import free_port, wait_for_port

from helpers import WsClient, assert_worker_runtime

KT = [sys.executable, "-m", "kafkatail"]



def test_help_lists_commands():
    out = subprocess.run(KT + ["--help"], capture_output=True, text=True, check=True).stdout
    assert "demo" in out and "serve" in out


def test_leakcheck_takes_its_own_options():
    """``kafkatail leakcheck`` hands every argument to ``kafkatail.leakcheck``'s parser."""
    out = subprocess.run(KT + ["--help"], capture_output=True, text=True, check=True).stdout
    assert "leakcheck" in out
    r = subprocess.run(KT + ["leakcheck", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "--pid" in r.stdout and "--snapshot" in r.stdout and "--profile" in r.stdout, r.stdout


def test_config_errors_are_one_line_without_traceback(tmp_path):
    bad = tmp_path / "k.toml"
    bad.write_text("poll_timeout_ms = 0\n")
    r = subprocess.run(KT + ["serve", "--config", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == (f"kafkatail: config error: poll_timeout_ms: 0 must be greater "
                                f"than 0 (from {bad})")
    r = subprocess.run(KT + ["serve", "--bind", "nowhere"], capture_output=True, text=True)
    assert r.returncode == 2 and "bind: 'nowhere' must look like HOST:PORT" in r.stderr
    assert "Traceback" not in r.stderr


def test_demo_prints_url_serves_live_messages_and_ctrl_c_leaves_nothing():
    # Started as a shell starts a background job: SIGINT ignored. Ctrl-C must still stop it.
    proc = subprocess.Popen(KT + ["demo", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        start = time.monotonic()
        url = None
        for line in proc.stdout:
            m = re.search(r"(http://\S+)", line)
            if m:
                url = m.group(1)
                break
        assert url, "demo printed no URL"
        took = time.monotonic() - start
        assert took < 60, f"URL after {took:.1f}s"
        base = url.split("/?")[0]
        children = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        assert "tansu" in names and "serve" in names
        assert b"<html" in urllib.request.urlopen(base + "/").read().lower()
        topics = {t["name"] for t in json.load(urllib.request.urlopen(base + "/api/topics"))["topics"]}
        assert {"demo.app-logs", "demo.orders", "demo.sensor-bin", "demo.audit"} <= topics
        c = WsClient(base.replace("http", "ws") + "/ws/tail/demo.orders")
        recs = c.collect(3, timeout=30)
        assert all(isinstance(r["value"], dict) for r in recs[:3])
        c.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, [a.cmdline() for a in alive]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("worker", ["gthread", "gevent"])
def test_serve_runs_gunicorn_and_sigterm_closes_tails_1001(cluster, worker):
    topic = cluster.create_topic()
    port = free_port()
    proc = subprocess.Popen(KT + ["serve", "--bootstrap-servers", cluster.bootstrap,
                                  "--bind", f"127.0.0.1:{port}", "--worker-class", worker],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_for_port("127.0.0.1", port, 30)
        runtime = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/debug/runtime"))
        assert_worker_runtime(runtime, worker)
        assert runtime["kafka_crc32c_native"] is True
        clients = [WsClient(f"ws://127.0.0.1:{port}/ws/tail/{topic}") for _ in range(5)]
        for c in clients:
            c.status("live")
        cluster.produce(topic, [(None, f"v{i}") for i in range(20)])
        for c in clients:
            assert [r["value"] for r in c.collect(20)] == [f"v{i}" for i in range(20)]
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "gunicorn started no worker"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        for c in clients:
            assert c.closed() == (1001, "server shutting down")
        assert proc.wait(15) == 0
        took = time.monotonic() - t0
        assert not psutil.wait_procs(children, timeout=5)[1]
        log = proc.stdout.read()
        # No traceback through kafkatail's code and no thread died. (kafka-python 3.0.12 may log
        # an AttributeError from its IO loop when a consumer closes mid-read: its own race.)
        assert "gunicorn" in log and "kafkatail/" not in log, log[-3000:]
        assert "Exception in thread" not in log, log[-3000:]
        print(f"{worker}: SIGTERM with 5 tails: exit 0 after {took * 1000:.0f} ms")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
