"""Through a real nginx running conf/nginx.conf, in front of two ``kafkatail serve`` instances
(conftest's ``nginx_stack``)."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from urllib.parse import parse_qs, urlsplit

import pytest

from helpers import NGINX_READ_TIMEOUT_S, Nginx, WsClient, wait_for


def test_tail_and_page_through_nginx(cluster, nginx_stack):
    nginx, servers = nginx_stack
    t = cluster.create_topic()
    page = urllib.request.urlopen(f"http://127.0.0.1:{nginx.port}/").read()
    assert b"<html" in page.lower()
    assert urllib.request.urlopen(f"http://127.0.0.1:{nginx.port}/static/app.js").status == 200
    c = WsClient(f"ws://127.0.0.1:{nginx.port}/ws/tail/{t}")
    c.status("live")
    cluster.produce(t, [(None, f"v{i}") for i in range(10)])
    assert [r["value"] for r in c.collect(10)] == [f"v{i}" for i in range(10)]


def test_idle_tail_outlives_nginx_read_timeout(cluster, nginx_stack):
    """Pings keep an idle tail open through nginx past proxy_read_timeout."""
    nginx, _ = nginx_stack
    t = cluster.create_topic()
    c = WsClient(f"ws://127.0.0.1:{nginx.port}/ws/tail/{t}")
    c.status("live")
    idle_until = time.monotonic() + 2 * NGINX_READ_TIMEOUT_S
    with pytest.raises(AssertionError, match="no matching frame"):
        c.until(lambda f: f["type"] == "messages",  # reads (answering pings) until the deadline
                timeout=idle_until - time.monotonic())
    cluster.produce(t, [(None, "still here")])
    assert c.collect(1)[0]["value"] == "still here"


class _Cli:
    """``kafkatail tail`` through nginx from the earliest offsets for ``n`` records, printing
    ``partition:offset`` lines. Both pipes are read as they come, so a test can wait on the
    client's markers (``% disconnected``, ``% reconnected`` on stderr) while it runs."""

    def __init__(self, nginx: Nginx, topic: str, n: int) -> None:
        self.n = n
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kafkatail", "tail", topic, "--url",
             f"ws://127.0.0.1:{nginx.port}", "-o", "earliest", "-c", str(n), "-f", "%p:%o\\n"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.err: list[str] = []
        self.readers = [threading.Thread(target=self.lines.extend, args=(self.proc.stdout,),
                                         name="kt-test-reader"),
                        threading.Thread(target=self.err.extend, args=(self.proc.stderr,),
                                         name="kt-test-reader-err")]
        for r in self.readers:
            r.start()

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def check(self) -> str:
        """Waits for the client to exit 0; asserts it printed every offset of both partitions
        exactly once. Returns its stderr."""
        assert self.proc.wait(60) == 0, self.stderr
        for r in self.readers:
            r.join(10)
        seen = [tuple(map(int, x.split(":"))) for x in self.lines]
        assert len(seen) == self.n and len(set(seen)) == self.n, \
            f"{len(seen)} records, {len(set(seen))} distinct, wanted {self.n}; {self.stderr}"
        for p in (0, 1):
            got = sorted(o for q, o in seen if q == p)
            assert got == list(range(self.n // 2)), \
                f"partition {p}: {len(got)} offsets {got[:3]}..{got[-3:]}, wanted 0..{self.n // 2 - 1}"
        return self.stderr

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for r in self.readers:
            r.join(10)
        self.proc.stdout.close()
        self.proc.stderr.close()


def _tail_across(cluster, nginx, disrupt) -> str:
    """``kafkatail tail`` through nginx, 200 records, ``disrupt(cli)``, 200 more: nothing lost or
    repeated. Returns the client's stderr (its reconnect markers)."""
    t = cluster.create_topic(partitions=2)
    cli = _Cli(nginx, t, 400)
    try:
        cluster.produce(t, [(None, f"a{i}", i % 2) for i in range(200)])
        wait_for(lambda: len(cli.lines) >= 200, 20, lambda: f"{len(cli.lines)} of 200 lines")
        disrupt(cli)
        cluster.produce(t, [(None, f"b{i}", i % 2) for i in range(200)])
        return cli.check()
    finally:
        cli.close()


def test_instance_killed_mid_stream_client_resumes_on_the_other(cluster, nginx_stack):
    nginx, servers = nginx_stack

    def kill_the_serving_instance(_cli):
        serving = next(s for s in servers if s.tails() == 1)
        serving.worker.kill()                 # no close frame, no goodbye
        serving.proc.kill()
        serving.proc.wait()

    assert "reconnected" in _tail_across(cluster, nginx, kill_the_serving_instance)


def test_nginx_reload_with_open_tails(cluster, nginx_stack):
    """``nginx -s reload`` with a tail open: the old worker keeps the tail until
    ``worker_shutdown_timeout`` (2 s) closes it, then the client reconnects through the new worker
    and resumes from its cursor. The second batch is produced only once the old worker has exited
    and the client has reconnected, so it can only arrive over the new connection; were it
    produced at once, it would come through the old worker and prove nothing about recovery."""
    nginx, _ = nginx_stack
    took = {}

    def reload_and_wait_for_the_reconnect(cli):
        old = nginx.workers()
        started = time.monotonic()
        nginx.reload()
        wait_for(lambda: (lambda w: w and not w & old)(nginx.workers()), 15,
                 lambda: f"nginx workers {nginx.workers()}, old ones {old}")
        took["old worker gone"] = time.monotonic() - started
        wait_for(lambda: "% reconnected" in cli.stderr, 15, lambda: f"client stderr {cli.stderr!r}")
        took["client reconnected"] = time.monotonic() - started

    err = _tail_across(cluster, nginx, reload_and_wait_for_the_reconnect)
    print("\nnginx reload: " + ", ".join(f"{k} after {v:.2f}s" for k, v in took.items()))
    # The old worker stayed for the open tail until its shutdown timeout closed it: had it left
    # at once, no tail was open through the reload.
    assert took["old worker gone"] > 1.0, took
    markers = [line for line in err.splitlines() if line.startswith("% ")]
    kinds = [m.split()[1] for m in markers]
    assert kinds.count("disconnected") == 1 and kinds.count("reconnected") == 1, markers
    resumed = json.loads(next(m for m in markers if m.startswith("% reconnected"))[len("% reconnected"):])
    assert parse_qs(urlsplit(resumed["from"]).query)["from"] == ["offsets:0:100,1:100"], resumed
