"""At the tail cap the service still answers health checks: an open tail holds a connection slot
(a gthread pool thread, one of gevent's worker_connections) for its whole life, so kafkatail
keeps some slots for plain HTTP (``kafkatail.server.http_reserve``)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from kafkatail.server import http_reserve
from kafkatail.testing.server import ServerProcess

from helpers import Closed, WsClient

SLOTS = 4
CASES = {"gthread": {"threads": SLOTS}, "gevent": {"worker_connections": SLOTS}}


def _health_within(server: ServerProcess, seconds: float) -> dict:
    t0 = time.monotonic()
    body = json.load(urllib.request.urlopen(server.url("/healthz"), timeout=seconds))
    assert time.monotonic() - t0 < seconds
    return body


@pytest.mark.parametrize("worker", CASES)
def test_at_the_cap_tails_are_refused_1013_and_healthz_answers(cluster, worker):
    s = ServerProcess(cluster.bootstrap, worker, ping_interval_s=2, poll_timeout_ms=250,
                      **CASES[worker])
    try:
        topic = cluster.create_topic()
        cap = SLOTS - http_reserve(SLOTS)
        assert cap == 3
        tails = [WsClient(s.ws_url(f"/ws/tail/{topic}")) for _ in range(cap)]
        for c in tails:
            c.status("live")
        assert _health_within(s, 3) == {"status": "ok", "tails": cap}
        extra = WsClient(s.ws_url(f"/ws/tail/{topic}"))
        with pytest.raises(Closed) as refused:
            extra.until(lambda f: False, timeout=10)
        assert refused.value.code == 1013
        assert f"server at capacity ({cap} tails)" in refused.value.reason
        # The refused tail gave its slot back: health answers, the open tails still deliver.
        assert _health_within(s, 3)["tails"] == cap
        cluster.produce(topic, [(None, "after the cap")])
        for c in tails:
            assert c.collect(1)[0]["value"] == "after the cap"
    finally:
        s.stop()


def test_no_room_for_a_tail_is_a_config_error():
    r = subprocess.run([sys.executable, "-m", "kafkatail", "serve", "--threads", "1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip() == ("kafkatail: config error: threads: 1 leaves no room for tails "
                                "under gthread (one is kept for /healthz); use 2 or more")
