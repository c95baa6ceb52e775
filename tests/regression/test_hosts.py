"""Host allow-list and Origin scheme against ``kafkatail serve``, under gthread and gevent.

DNS rebinding: a page on ``evil.example``, whose name the attacker makes resolve to the server,
sends ``Host: evil.example:PORT`` and ``Origin: http://evil.example:PORT``. Host and Origin agree,
so only ``allowed_hosts`` can refuse it. And an https page is not the same site as a plain-http
server on the same host and port: the Origin's scheme counts.
"""
from __future__ import annotations

import http.client
import json

import pytest
import websocket

from helpers import WsClient


def get(server, path: str, host: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def tail_as(server, topic: str, host: str | None, origin: str) -> WsClient:
    """A tail sent with these Host and Origin headers."""
    return WsClient.adopt(websocket.create_connection(
        server.ws_url(f"/ws/tail/{topic}"), timeout=10, host=host, origin=origin))


def test_rebound_host_is_refused_when_allowed_hosts_is_set(cluster, server_process):
    server = server_process(allowed_hosts="127.0.0.1, localhost")
    topic = cluster.create_topic()
    evil = f"evil.example:{server.port}"
    # HTTP, even a path served without a token: 400 with a short JSON error.
    status, body = get(server, "/healthz", evil)
    assert status == 400 and "Host not allowed" in body["error"], (status, body)
    status, body = get(server, "/api/topics", evil)
    assert status == 400 and "Host not allowed" in body["error"], (status, body)
    # The WebSocket handshake: refused before the upgrade.
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        tail_as(server, topic, evil, f"http://{evil}")
    assert refused.value.status_code == 400
    # The server's own names still work, for HTTP and tails.
    assert get(server, "/healthz", f"127.0.0.1:{server.port}")[0] == 200
    assert get(server, "/healthz", f"localhost:{server.port}")[0] == 200
    tail_as(server, topic, None, f"http://127.0.0.1:{server.port}").status("live")


def test_rebound_host_passes_without_allowed_hosts(cluster, server_process):
    """The default (empty: any Host) is as before: the Origin check alone cannot tell."""
    server = server_process()
    evil = f"evil.example:{server.port}"
    assert get(server, "/healthz", evil)[0] == 200
    tail_as(server, cluster.create_topic(), evil, f"http://{evil}").status("live")


def test_https_origin_against_plain_http_server_closes_4403(cluster, server_process):
    server = server_process()
    topic = cluster.create_topic()
    here = f"127.0.0.1:{server.port}"
    assert tail_as(server, topic, None, f"https://{here}").closed() == (4403, "origin not allowed")
    assert tail_as(server, topic, None, f"http://{here}").status("live")
