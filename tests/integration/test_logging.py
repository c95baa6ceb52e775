"""A blocked log sink costs tails nothing: ``kafkatail serve`` with a stderr pipe nobody reads."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import websocket

from kafkatail.broker import free_port, wait_for_port

from .test_lifecycle import wait_for
from .test_observability import metrics
from .wsclient import TailClient

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


def refused_tail(port: int) -> float:
    """Open a tail from a foreign origin (the server logs a warning) and return how long the
    server took to refuse it."""
    start = time.monotonic()
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws/tail/{LONG_TOPIC}",
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
        c = TailClient(server.ws_url(f"/ws/tail/{topic}?from=earliest"))
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
