"""Through a real nginx running conf/nginx.conf, in front of two ``kafkatail serve`` instances."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from kafkatail.broker import free_port, wait_for_port
from kafkatail.web.page import STATIC
from regression.conftest import ServerProcess

from .test_lifecycle import wait_for
from .wsclient import TailClient

CONF = Path(__file__).resolve().parents[2] / "conf" / "nginx.conf"
READ_TIMEOUT_S = 3
PING_S = 1


class Nginx:
    """nginx in the foreground with conf/nginx.conf included, ports and paths rewritten."""

    def __init__(self, tmp: Path, upstreams: list[int]) -> None:
        self.tmp, self.port = tmp, free_port()
        site = CONF.read_text()
        site = site.replace("listen 80;", f"listen 127.0.0.1:{self.port};")
        site = site.replace("127.0.0.1:8001", f"127.0.0.1:{upstreams[0]}")
        site = site.replace("127.0.0.1:8002", f"127.0.0.1:{upstreams[1]}")
        site = site.replace("/opt/kafkatail/static/", f"{STATIC}/")
        site = site.replace("proxy_read_timeout 60s;", f"proxy_read_timeout {READ_TIMEOUT_S}s;")
        (tmp / "kafkatail.conf").write_text(site)
        temp = " ".join(f"{k}_temp_path {tmp}/{k};" for k in
                        ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (tmp / "nginx.conf").write_text(f"""
            daemon off; user root; worker_processes 1; pid {tmp}/nginx.pid;
            error_log {tmp}/error.log info; worker_shutdown_timeout 2s;
            events {{ worker_connections 1024; }}
            http {{ access_log off; {temp} include {tmp}/kafkatail.conf; }}
        """)
        self.proc = subprocess.Popen(["nginx", "-c", f"{tmp}/nginx.conf", "-p", str(tmp)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_for_port("127.0.0.1", self.port, 10), (tmp / "error.log").read_text()

    def reload(self) -> None:
        subprocess.run(["nginx", "-c", f"{self.tmp}/nginx.conf", "-p", str(self.tmp), "-s",
                        "reload"], check=True, capture_output=True)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def stack(cluster, tmp_path):
    if not shutil.which("nginx"):
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed; .ci/run installs it")
        pytest.skip("nginx is not installed (apt-get install nginx)")
    servers = [ServerProcess(cluster.bootstrap, "gthread", proxy_hops=1, ping_interval_s=PING_S,
                             poll_timeout_ms=250) for _ in range(2)]
    nginx = Nginx(tmp_path, [s.port for s in servers])
    yield nginx, servers
    nginx.stop()
    for s in servers:
        s.stop()


def test_tail_and_page_through_nginx(cluster, stack):
    nginx, servers = stack
    t = cluster.create_topic()
    page = urllib.request.urlopen(f"http://127.0.0.1:{nginx.port}/").read()
    assert b"<html" in page.lower()
    assert urllib.request.urlopen(f"http://127.0.0.1:{nginx.port}/static/app.js").status == 200
    c = TailClient(f"ws://127.0.0.1:{nginx.port}/ws/tail/{t}")
    c.status("live")
    cluster.produce(t, [(None, f"v{i}") for i in range(10)])
    assert [r["value"] for r in c.collect(10)] == [f"v{i}" for i in range(10)]


def test_idle_tail_outlives_nginx_read_timeout(cluster, stack):
    """Pings keep an idle tail open through nginx past proxy_read_timeout."""
    nginx, _ = stack
    t = cluster.create_topic()
    c = TailClient(f"ws://127.0.0.1:{nginx.port}/ws/tail/{t}")
    c.status("live")
    idle_until = time.monotonic() + 2 * READ_TIMEOUT_S
    with pytest.raises(AssertionError, match="no matching frame"):
        c.until(lambda f: f["type"] == "messages",  # reads (answering pings) until the deadline
                timeout=idle_until - time.monotonic())
    cluster.produce(t, [(None, "still here")])
    assert c.collect(1)[0]["value"] == "still here"


def _cli(nginx, topic, n):
    proc = subprocess.Popen([sys.executable, "-m", "kafkatail", "tail", topic, "--url",
                             f"ws://127.0.0.1:{nginx.port}", "-o", "earliest", "-c", str(n),
                             "-f", "%p:%o\\n"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), name="kt-test-reader")
    reader.start()
    return proc, lines, reader


def _check(proc, lines, reader, n):
    assert proc.wait(60) == 0, proc.stderr.read()
    reader.join(10)
    err = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    seen = [tuple(map(int, x.split(":"))) for x in lines]
    assert len(seen) == n and len(set(seen)) == n
    for p in (0, 1):
        assert sorted(o for q, o in seen if q == p) == list(range(n // 2))
    return err


def _tail_across(cluster, nginx, disrupt) -> str:
    """``kafkatail tail`` through nginx, 200 records, ``disrupt()``, 200 more: nothing lost or
    repeated. Returns the client's stderr (its reconnect markers)."""
    t = cluster.create_topic(partitions=2)
    proc, lines, reader = _cli(nginx, t, 400)
    cluster.produce(t, [(None, f"a{i}", i % 2) for i in range(200)])
    wait_for(lambda: len(lines) >= 200, 20, lambda: len(lines))
    disrupt()
    cluster.produce(t, [(None, f"b{i}", i % 2) for i in range(200)])
    return _check(proc, lines, reader, 400)


def test_instance_killed_mid_stream_client_resumes_on_the_other(cluster, stack):
    nginx, servers = stack

    def kill_the_serving_instance():
        serving = next(s for s in servers if s.tails() == 1)
        serving.worker.kill()                 # no close frame, no goodbye
        serving.proc.kill()
        serving.proc.wait()

    assert "reconnected" in _tail_across(cluster, nginx, kill_the_serving_instance)


def test_nginx_reload_with_open_tails(cluster, stack):
    nginx, _ = stack
    _tail_across(cluster, nginx, nginx.reload)  # old worker leaves after worker_shutdown_timeout
