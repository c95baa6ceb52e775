"""A blocked log sink costs tails nothing: ``kafkatail serve`` with a stderr pipe nobody reads.
And what is still queued at SIGTERM is written before the process ends."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import websocket

from kafkatail.broker import free_port, wait_for_port

from helpers import WsClient, metrics, wait_for

# Every refused tail logs one WARNING naming the topic: a long name makes a long line, so a few
# dozen refusals fill the 64 KiB pipe and a few hundred more fill the log queue.
LONG_TOPIC = "t" * 2000


class _Url:
    def __init__(self, port: int) -> None:
        self.port = port

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


def refused_tail(port: int, topic: str = LONG_TOPIC) -> float:
    """Open a tail from a foreign origin (the server logs a warning) and return how long the
    server took to refuse it."""
    start = time.monotonic()
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws/tail/{topic}",
                                     origin="http://evil.example", timeout=10)
    try:
        opcode, data = ws.recv_data(control_frame=True)
        while opcode != websocket.ABNF.OPCODE_CLOSE:   # an error frame comes first
            opcode, data = ws.recv_data(control_frame=True)
        assert int.from_bytes(data[:2], "big") == 4403
    finally:
        ws.close()
        ws.shutdown()  # close() leaves the socket open when the server closed first
    return time.monotonic() - start


@pytest.mark.parametrize("worker_class", ["gthread", "gevent"])
def test_blocked_stderr_drops_logs_not_records(cluster, worker_class):
    topic = cluster.create_topic()
    port = free_port()
    env = {**os.environ, "KAFKATAIL_LOG_LEVEL": "DEBUG", "KAFKATAIL_LOG_QUEUE_SIZE": "300",
           "KAFKATAIL_REAPER_INTERVAL_S": "0.2"}
    proc = subprocess.Popen([sys.executable, "-m", "kafkatail", "serve", "--worker-class",
                             worker_class, "--bootstrap-servers", cluster.bootstrap,
                             "--bind", f"127.0.0.1:{port}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    server = _Url(port)
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), name="kt-test-stderr")
    try:
        assert wait_for_port("127.0.0.1", port, 30)
        json.load(urllib.request.urlopen(server.url("/healthz"), timeout=10))
        # Nobody reads stderr: fill the pipe, then the queue, with refusal warnings.
        slowest = max(refused_tail(port) for _ in range(600))
        assert slowest < 5, slowest
        wait_for(lambda: metrics(server)["kafkatail_log_records_dropped_total"] > 0, 20,
                 lambda: metrics(server))
        # With the sink still blocked, a tail delivers as usual and logging goes on dropping.
        c = WsClient(server.ws_url(f"/ws/tail/{topic}?from=earliest"))
        c.status("live")
        start = time.monotonic()
        cluster.produce(topic, [(None, f"r{i}") for i in range(2000)])
        assert len(c.collect(2000, timeout=20)) == 2000
        took = time.monotonic() - start
        assert took < 15, took
        before = metrics(server)["kafkatail_log_records_dropped_total"]
        for _ in range(50):
            refused_tail(port)
        assert metrics(server)["kafkatail_log_records_dropped_total"] > before
        c.close()
        # Read the pipe: the listener writes again, says what it dropped, and goes on logging.
        reader.start()
        wait_for(lambda: any(b"log sink too slow: dropped" in ln for ln in lines), 20,
                 lambda: lines[-5:])
        first_summary = next(i for i, ln in enumerate(lines) if b"log sink too slow" in ln)
        wait_for(lambda: any(b" threads=" in ln for ln in lines[first_summary:]), 20,
                 lambda: lines[-5:])
    finally:
        proc.terminate()
        if reader.ident is None:
            reader.start()  # drain, so the server can log its way out
        proc.wait(20)
        reader.join(10)
        proc.stderr.close()


# A file sink that stalls while its gate file exists: a disk that stopped, then came back. Under
# gevent the listener is a real OS thread, so it waits with the original sleep.
GATED_SINK = '''
import logging
import os

try:
    from gevent.monkey import get_original
    _sleep = get_original("time", "sleep")
except ImportError:
    from time import sleep as _sleep


class GatedFileHandler(logging.FileHandler):
    def __init__(self, filename, gate, **kwargs):
        super().__init__(filename, **kwargs)
        self.gate = gate

    def emit(self, record):
        while os.path.exists(self.gate):
            _sleep(0.01)
        super().emit(record)
'''
BURST = 200
GATE_OPENS_AFTER_S = 2.0  # after SIGTERM: the worker is past its loop, in its final flush
BURST_LINE = re.compile(r"refused tail of 'burst-(\d+)' from origin")


def burst_lines(logfile) -> list[int]:
    return [int(m.group(1)) for m in BURST_LINE.finditer(logfile.read_text())]


@pytest.mark.parametrize("worker_class", ["gthread", "gevent"])
def test_records_queued_at_sigterm_reach_the_sink(cluster, tmp_path, worker_class):
    """The worker logs BURST warnings while its file sink is stalled, so all of them are still
    in the log queue when SIGTERM comes; the sink recovers during the shutdown. A clean stop
    (exit 0) must have written every one, once."""
    (tmp_path / "gatedsink.py").write_text(GATED_SINK)
    logfile, gate = tmp_path / "kafkatail.log", tmp_path / "sink-stalled"
    conf = tmp_path / "logging.toml"
    conf.write_text(f'''version = 1
[formatters.plain]
format = "%(levelname)s %(process)d %(name)s: %(message)s"
[handlers.file]
class = "gatedsink.GatedFileHandler"
filename = "{logfile}"
gate = "{gate}"
formatter = "plain"
[root]
handlers = ["file"]
''')
    port = free_port()
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "KAFKATAIL_LOG_CONFIG": str(conf),
           "KAFKATAIL_LOG_LEVEL": "INFO"}
    with open(tmp_path / "stderr.txt", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "kafkatail", "serve", "--worker-class",
                                 worker_class, "--bootstrap-servers", cluster.bootstrap,
                                 "--bind", f"127.0.0.1:{port}"],
                                env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        assert wait_for_port("127.0.0.1", port, 30), (tmp_path / "stderr.txt").read_text()
        json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10))
        wait_for(lambda: "Booting worker" in logfile.read_text(), 10, logfile.read_text)
        gate.touch()
        for i in range(BURST):
            refused_tail(port, f"burst-{i:03d}")  # the warning is queued before the refusal
        assert burst_lines(logfile) == []  # all BURST records wait in the queue
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        time.sleep(GATE_OPENS_AFTER_S)
        assert proc.poll() is None, "exited with records still queued"
        gate.unlink()
        assert proc.wait(20) == 0, (tmp_path / "stderr.txt").read_text()
        took = time.monotonic() - t0
    finally:
        gate.unlink(missing_ok=True)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    written = burst_lines(logfile)
    assert sorted(written) == list(range(BURST)), (
        f"{len(written)} of {BURST} queued records written, "
        f"{len(set(written))} distinct; last lines: {logfile.read_text()[-2000:]}")
    text = logfile.read_text()
    assert "Shutting down: Master" in text, text[-2000:]
    print(f"{worker_class}: {BURST} records queued at SIGTERM, sink stalled "
          f"{GATE_OPENS_AFTER_S:g}s more: all written once, exit 0 after {took:.1f}s")
