"""``kafkatail serve`` as a subprocess, started as production starts it and measured from outside.

The regression suite and ``make bench`` both need it: one gunicorn master with one worker,
extra config as ``KAFKATAIL_*`` environment, its output drained, and the worker's CPU, RSS,
health and metrics at hand.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import psutil

from ..broker import free_port, wait_for_port


class ServerProcess:
    """``python -m kafkatail serve`` on a free port; ``worker`` is its one gunicorn worker, the
    process every CPU and RSS figure is about."""

    def __init__(self, bootstrap: str, worker_class: str = "gthread", host: str = "127.0.0.1",
                 **config: object) -> None:
        self.host = host
        self.port = free_port(host)
        env = {**os.environ, **{f"KAFKATAIL_{k.upper()}": str(v) for k, v in config.items()}}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kafkatail", "serve", "--bootstrap-servers", bootstrap,
             "--bind", f"{host}:{self.port}", "--worker-class", worker_class],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # Drain the output as a journal or terminal would: an unread pipe would block every
        # thread in the server that logs.
        self.lines: list[str] = []
        self._drain = threading.Thread(target=self.lines.extend, args=(self.proc.stdout,),
                                       name="kt-server-drain", daemon=True)
        self._drain.start()
        try:
            if not wait_for_port(host, self.port, 30):
                raise RuntimeError("server did not start: " + "".join(self.lines[-20:]))
            self.health()  # answered by the worker: its handlers are installed
            self.worker = psutil.Process(self.proc.pid).children()[0]
        except BaseException:
            self.stop()
            raise

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def ws_url(self, path: str) -> str:
        return f"ws://{self.host}:{self.port}{path}"

    def get(self, path: str, timeout: float = 30) -> bytes:
        with urllib.request.urlopen(self.url(path), timeout=timeout) as resp:
            return resp.read()

    def health(self, timeout: float = 30) -> dict:
        """``/healthz``, retried until ``timeout`` while the worker is still starting."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return json.loads(self.get("/healthz", timeout=5))
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def tails(self) -> int:
        return self.health()["tails"]

    def metrics(self, timeout: float = 30) -> dict[str, float]:
        """``/metrics`` as {"name{labels}": value}."""
        out = {}
        for line in self.get("/metrics", timeout).decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def consumer_threads(self) -> int:
        """Consumer threads alive in the worker (shared feeds and dedicated)."""
        return int(sum(v for k, v in self.metrics().items()
                       if k.startswith("kafkatail_consumer_threads{")))

    def cpu_seconds(self) -> float:
        t = self.worker.cpu_times()
        return t.user + t.system

    def profile(self, seconds: float) -> str:
        """A folded on-CPU profile of the worker, taken inside it."""
        return self.get(f"/debug/profile?seconds={seconds:g}&format=folded",
                        timeout=seconds + 30).decode()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, as systemd or a container runtime would; killed after ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._drain.join(10)
        self.proc.stdout.close()
        return self.proc.returncode
