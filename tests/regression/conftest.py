"""The server as production runs it (``kafkatail serve``, a subprocess), measured from outside."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Iterator

import psutil
import pytest

from kafkatail.broker import free_port, wait_for_port

WORKERS = ["gthread", "gevent"]


class ServerProcess:
    """``python -m kafkatail serve`` on a free port; ``worker`` is its one gunicorn worker."""

    def __init__(self, bootstrap: str, worker_class: str, host: str = "127.0.0.1",
                 **config: object) -> None:
        self.host = host
        self.port = free_port(host)
        env = {**os.environ, **{f"KAFKATAIL_{k.upper()}": str(v) for k, v in config.items()}}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kafkatail", "serve", "--bootstrap-servers", bootstrap,
             "--bind", f"{host}:{self.port}", "--worker-class", worker_class],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # Drain the server's output as a journal or terminal would: an unread pipe would block
        # every thread that logs (the blocked-sink case has its own test).
        self._lines: list[str] = []
        self._drain = threading.Thread(target=self._lines.extend, args=(self.proc.stdout,),
                                       name="kt-test-drain", daemon=True)
        self._drain.start()
        if not wait_for_port(host, self.port, 30):
            self.stop()
            raise RuntimeError("server did not start")
        self.health()  # answered by the worker: its handlers are installed
        self.worker = psutil.Process(self.proc.pid).children()[0]

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def ws_url(self, path: str) -> str:
        return f"ws://{self.host}:{self.port}{path}"

    def health(self) -> dict:
        deadline = time.monotonic() + 30
        while True:
            try:
                return json.load(urllib.request.urlopen(self.url("/healthz"), timeout=5))
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def tails(self) -> int:
        return self.health()["tails"]

    def consumer_threads(self) -> int:
        """Consumer threads alive in the worker (shared feeds and dedicated), from /metrics."""
        text = urllib.request.urlopen(self.url("/metrics"), timeout=5).read().decode()
        return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
                   if line.startswith("kafkatail_consumer_threads{"))

    def cpu_seconds(self) -> float:
        t = self.worker.cpu_times()
        return t.user + t.system

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._drain.join(10)
        self.proc.stdout.close()
        self.output = "".join(self._lines)
        return self.proc.returncode


@pytest.fixture(params=WORKERS)
def server_process(request, cluster) -> Iterator:
    made: list[ServerProcess] = []

    def make(bootstrap_servers_override: str | None = None, host: str = "127.0.0.1",
             **config: object) -> ServerProcess:
        config.setdefault("ping_interval_s", 2)
        config.setdefault("poll_timeout_ms", 250)
        s = ServerProcess(bootstrap_servers_override or cluster.bootstrap, request.param, host,
                          **config)
        made.append(s)
        return s

    make.worker_class = request.param
    yield make
    for s in made:
        s.stop()
