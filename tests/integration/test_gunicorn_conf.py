"""Plain ``gunicorn -c conf/gunicorn.conf.py`` (``kafkatail.wsgi:app``), as a deployment that runs
gunicorn itself would: config from ``$KAFKATAIL_CONFIG``, SIGTERM closes tails with 1001."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from kafkatail.broker import free_port, wait_for_port
from kafkatail.server import WORKER_CLASSES

from helpers import assert_worker_runtime
from helpers import WsClient

CONF = Path(__file__).resolve().parents[2] / "conf" / "gunicorn.conf.py"
LOGGING = CONF.with_name("logging.toml")
GUNICORN = [sys.executable, "-m", "gunicorn"]
GRACE_S = 4


class Gunicorn:
    """gunicorn with conf/gunicorn.conf.py, its output drained as a journal would read it."""

    def __init__(self, tmp: Path, bootstrap: str, worker_class: str) -> None:
        self.port = free_port()
        self.logfile = tmp / "kafkatail.log"
        logging = tmp / "logging.toml"
        logging.write_text(LOGGING.read_text().replace("/var/log/kafkatail/kafkatail.log",
                                                       str(self.logfile))
                           .replace('level = "WARNING"\ndelay', 'level = "INFO"\ndelay'))
        config = tmp / "kafkatail.toml"
        config.write_text(f'worker_class = "{worker_class}"\nthreads = 8\n'
                          f"shutdown_grace_s = {GRACE_S}\nping_interval_s = 2\n"
                          f'log_config = "{logging}"\n')
        env = {**os.environ, "KAFKATAIL_CONFIG": str(config),
               "KAFKATAIL_BOOTSTRAP_SERVERS": bootstrap}
        self.proc = subprocess.Popen(GUNICORN + ["-c", str(CONF), "-b", f"127.0.0.1:{self.port}"],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self._lines: list[str] = []
        self._drain = threading.Thread(target=self._lines.extend, args=(self.proc.stdout,),
                                       name="kt-test-drain")
        self._drain.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self) -> dict:
        """The worker answers (its hooks are installed); returns /debug/runtime."""
        assert wait_for_port("127.0.0.1", self.port, 30), self.output()
        deadline = time.monotonic() + 30
        while True:
            try:
                return json.load(urllib.request.urlopen(self.url("/debug/runtime"), timeout=5))
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise AssertionError(self.output())
                time.sleep(0.1)

    def output(self) -> str:
        return "".join(self._lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._drain.join(10)
        self.proc.stdout.close()


@pytest.fixture
def gunicorn(cluster, tmp_path):
    made: list[Gunicorn] = []

    def make(worker_class: str) -> Gunicorn:
        g = Gunicorn(tmp_path, cluster.bootstrap, worker_class)
        made.append(g)
        return g

    yield make
    for g in made:
        g.stop()


@pytest.mark.parametrize("worker", ["gthread", "gevent"])
def test_gunicorn_conf_serves_and_sigterm_closes_tails_1001(cluster, gunicorn, worker):
    topic = cluster.create_topic()
    g = gunicorn(worker)
    runtime = g.wait_ready()
    # The worker class came from $KAFKATAIL_CONFIG.
    assert_worker_runtime(runtime, worker)
    clients = [WsClient(f"ws://127.0.0.1:{g.port}/ws/tail/{topic}") for _ in range(3)]
    for c in clients:
        c.status("live")
    cluster.produce(topic, [(None, f"v{i}") for i in range(10)])
    for c in clients:
        assert [r["value"] for r in c.collect(10)] == [f"v{i}" for i in range(10)]
    children = psutil.Process(g.proc.pid).children(recursive=True)
    assert children, "gunicorn started no worker"
    t0 = time.monotonic()
    g.proc.send_signal(signal.SIGTERM)
    for c in clients:
        assert c.closed() == (1001, "server shutting down")
    assert g.proc.wait(GRACE_S + 5) == 0
    took = time.monotonic() - t0
    assert not psutil.wait_procs(children, timeout=5)[1]
    g.stop()
    log = g.output()
    assert took < GRACE_S, f"exit after {took:.1f}s, grace {GRACE_S}s:\n{log[-3000:]}"
    assert "Booting worker" in log and "Shutting down: Master" in log, log[-3000:]
    # gunicorn's lines went through kafkatail's log format; no traceback through kafkatail.
    assert " INFO gunicorn.error: " in log and "kafkatail/" not in log, log[-3000:]
    assert "Exception in thread" not in log, log[-3000:]
    if worker == "gthread":
        assert "max_tails 1000 lowered to 7 per worker (threads 8, 1 kept for HTTP)" in log
    # conf/logging.toml's file sink (at INFO here) got the master's and the worker's records.
    written = g.logfile.read_text()
    assert "gunicorn.error: Booting worker" in written and "Worker exiting" in written, written
    print(f"{worker}: gunicorn -c conf/gunicorn.conf.py, SIGTERM with 3 tails: exit 0 after "
          f"{took * 1000:.0f} ms")


def test_gunicorn_conf_config_error_is_one_line(tmp_path):
    bad = tmp_path / "k.toml"
    bad.write_text('worker_class = "sync"\n')
    r = subprocess.run(GUNICORN + ["-c", str(CONF)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "KAFKATAIL_CONFIG": str(bad)})
    assert r.returncode == 1
    assert r.stderr.strip() == (f"kafkatail: config error: worker_class: 'sync' must be one of "
                                f"gthread, gevent (from {bad})")


PLAIN_APP = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"plain"]
"""


@pytest.mark.parametrize("worker", ["gthread", "gevent"])
def test_kafkatail_workers_serve_another_app_as_plain_gunicorn(tmp_path, worker):
    """kafkatail's worker classes with an app that is not kafkatail's: it is served, and SIGTERM
    is gunicorn's own graceful stop (nothing of kafkatail's shutdown runs, nothing fails)."""
    (tmp_path / "plainapp.py").write_text(PLAIN_APP)
    port = free_port()
    proc = subprocess.Popen(GUNICORN + ["-k", WORKER_CLASSES[worker], "-b", f"127.0.0.1:{port}",
                                        "--chdir", str(tmp_path), "plainapp:app"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_for_port("127.0.0.1", port, 30)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read()
        assert body == b"plain"
        children = psutil.Process(proc.pid).children()
        assert children, "gunicorn started no worker"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out[-3000:]
    assert not psutil.wait_procs(children, timeout=5)[1]
    assert "Traceback" not in out and "Exception" not in out, out[-3000:]
