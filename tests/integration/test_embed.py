"""kafkatail mounted inside a host Flask app under /tail, admitting the host's logged-in users
through ``init_app(..., authorize=...)``, next to the host's own routes and login (the host app
is ``helpers.host_app``)."""
from __future__ import annotations

import http.cookiejar
import json
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest
import websocket

from kafkatail.config import Config

from helpers import PREFIX, HostServer, InProcessServer, WsClient, close_all


@pytest.fixture
def host(cluster):
    server = HostServer(Config(bootstrap_servers=cluster.bootstrap, poll_timeout_ms=200,
                               ping_interval_s=5, status_interval_s=1, request_timeout_ms=3000))
    server.thread.start()
    yield server
    close_all()  # before the server: werkzeug's request threads drain until the client closes
    server.stop()


@pytest.fixture(scope="module")
def topics(cluster):
    run = uuid.uuid4().hex[:8]
    names = {"public": f"kt-embed.{run}.public", "private": f"kt-embed.{run}.private"}
    for name in names.values():
        cluster.create_topic(name)
        cluster.produce(name, [(None, f"{name}-v{i}") for i in range(3)])
    return names


def login(server: InProcessServer, user: str) -> str:
    """Log in through the host's form; returns the Cookie header value."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    data = urllib.parse.urlencode({"user": user}).encode()
    with opener.open(server.url("/login"), data=data, timeout=10) as resp:
        assert resp.status == 200
    return "; ".join(f"{c.name}={c.value}" for c in jar)


def get(server: InProcessServer, path: str, cookie: str | None = None):
    req = urllib.request.Request(server.url(path), headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read().decode()


def tail_signed_in(server: InProcessServer, topic: str, cookie: str | None = None) -> WsClient:
    """A tail under the host's prefix, from the earliest offsets, with the host's session cookie."""
    ws = websocket.create_connection(server.ws_url(f"{PREFIX}/ws/tail/{topic}?from=earliest"),
                                     timeout=10, cookie=cookie)
    return WsClient.adopt(ws)


def test_logged_in_user_tails_an_allowed_topic(host, topics):
    cookie = login(host, "alice")
    c = tail_signed_in(host, topics["public"], cookie)
    assert [r["value"] for r in c.collect(3)] == [f"{topics['public']}-v{i}" for i in range(3)]
    assert tail_signed_in(host, topics["private"], cookie).closed() == (
        4403, f"not allowed to tail {topics['private']}")
    status, body = get(host, f"{PREFIX}/api/topics", cookie)
    names = {t["name"] for t in json.loads(body)["topics"]}
    assert status == 200 and topics["public"] in names and topics["private"] not in names


def test_logged_out_user_is_refused_4401(host, topics):
    code, reason = tail_signed_in(host, topics["public"]).closed()
    assert code == 4401 and reason.startswith("authentication required")
    assert get(host, f"{PREFIX}/api/topics")[0] == 401
    assert get(host, f"{PREFIX}/metrics", login(host, "bob"))[0] == 403  # a host user is no admin


def test_host_routes_still_work(host):
    assert get(host, "/") == (200, "host home, user None")
    assert get(host, "/", login(host, "bob")) == (200, "host home, user bob")
    assert get(host, "/api/status") == (200, '{"host":"ok"}\n')  # no kafkatail guard on it
    assert get(host, f"{PREFIX}/healthz")[0] == 200  # exempt, relative to the prefix
    assert get(host, f"{PREFIX}/")[0] == 200
    assert get(host, "/healthz")[0] == 404  # kafkatail lives under its prefix only
