"""Who may tail what, against the real server and broker: tokens, anonymous access, topic rules,
admin-only /debug and /metrics, tokens never in URLs, and the rate limits."""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid

import psutil
import pytest
import websocket

from kafkatail.security.tokens import hash_token

from helpers import WsClient

OPS, VIEWER = "ops-" + uuid.uuid4().hex, "viewer-" + uuid.uuid4().hex
TOKENS = {
    "ops": {"sha256": hash_token(OPS), "topics": ["**"], "admin": True},
    "viewer": {"sha256": hash_token(VIEWER), "topics": ["kt-auth.*.eu", "kt-auth.logs.**",
                                                        "!kt-auth.logs.audit.**"]},
}
# Access as production has it by default: no anonymous tails, /debug for admins only.
LOCKED = {"tokens": TOKENS, "anonymous_topics": "", "debug_access": "admin"}


@pytest.fixture
def locked(make_server_):
    return make_server_(**LOCKED)


@pytest.fixture(scope="module")
def topics(cluster):
    run = uuid.uuid4().hex[:8]
    names = {"eu": f"kt-auth.{run}.eu", "us": f"kt-auth.{run}.us",
             "logs": f"kt-auth.logs.{run}", "audit": f"kt-auth.logs.audit.{run}"}
    for name in names.values():
        cluster.create_topic(name)
        cluster.produce(name, [("k", f"{name}-v{i}") for i in range(3)])
    return names


def connect(server, path, token=None, via="header", **kw) -> WsClient:
    headers, protocols = [], None
    if token and via == "header":
        headers.append(f"Authorization: Bearer {token}")
    elif token:
        protocols = [f"kafkatail.bearer.{token}", "kafkatail"]
    ws = websocket.create_connection(server.ws_url(path), timeout=10, header=headers,
                                     subprotocols=protocols, **kw)
    return WsClient.adopt(ws)


def http(server, path, token=None):
    req = urllib.request.Request(server.url(path))
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as err:
        with err:  # closes the connection now, not when the cyclic GC finds it
            return err.code, err.read(), err.headers


def test_no_credentials_closes_4401_with_reason(locked, topics, caplog):
    c = connect(locked, f"/ws/tail/{topics['eu']}")
    assert c.until(lambda f: f["type"] == "error")["code"] == 4401
    code, reason = c.closed()
    assert code == 4401 and reason.startswith("authentication required")
    status, body, headers = http(locked, "/api/topics")
    assert status == 401 and json.loads(body)["error"] == "authentication required"
    assert headers["WWW-Authenticate"] == "Bearer"
    assert len(locked.pool) == 0


def test_wrong_token_closes_4401_not_anonymous(make_server_, topics):
    server = make_server_(**{**LOCKED, "anonymous_topics": "**"})
    c = connect(server, f"/ws/tail/{topics['eu']}", token="not-a-token")
    assert c.closed() == (4401, "invalid token")
    status, body, _ = http(server, "/api/topics", token="not-a-token")
    assert status == 401 and json.loads(body)["error"] == "invalid token"


@pytest.mark.parametrize("via", ["header", "subprotocol"])
def test_token_tails_an_allowed_topic(locked, topics, via):
    c = connect(locked, f"/ws/tail/{topics['eu']}?from=earliest", token=VIEWER, via=via)
    if via == "subprotocol":  # the server picks the plain protocol, never echoes the token
        assert c.ws.getsubprotocol() == "kafkatail"
    assert c.hello()["topic"] == topics["eu"]
    assert [r["value"] for r in c.collect(3)] == [f"{topics['eu']}-v{i}" for i in range(3)]


def test_topic_not_allowed_closes_4403_logged_once(locked, topics, caplog):
    caplog.set_level(logging.INFO, logger="kafkatail")
    for name in (topics["us"], topics["audit"]):  # outside the rules; denied by !...audit.**
        c = connect(locked, f"/ws/tail/{name}?from=earliest", token=VIEWER)
        assert c.until(lambda f: f["type"] == "error")["code"] == 4403
        assert c.closed() == (4403, f"not allowed to tail {name}")
    refusals = [r for r in caplog.records if "topic not allowed" in r.getMessage()]
    assert len(refusals) == 2 and all(r.levelname == "WARNING" and not r.exc_info
                                      for r in refusals)
    assert topics["audit"] in refusals[1].getMessage() and "viewer" in refusals[1].getMessage()


def test_api_topics_lists_only_what_the_caller_may_tail(locked, topics):
    status, body, _ = http(locked, "/api/topics", token=VIEWER)
    names = {t["name"] for t in json.loads(body)["topics"]}
    assert status == 200 and {topics["eu"], topics["logs"]} <= names
    assert not names & {topics["us"], topics["audit"]}
    assert all(n.startswith("kt-auth.") for n in names)
    ops = {t["name"] for t in json.loads(http(locked, "/api/topics", token=OPS)[1])["topics"]}
    assert set(topics.values()) <= ops
    assert http(locked, f"/api/topics/{topics['eu']}", token=VIEWER)[0] == 200
    status, body, _ = http(locked, f"/api/topics/{topics['audit']}", token=VIEWER)
    assert status == 403 and "not allowed" in json.loads(body)["error"]


def test_exempt_paths_need_no_token(locked):
    for path in ("/", "/healthz", "/static/app.js", "/static/style.css"):
        assert http(locked, path)[0] == 200, path


def test_debug_and_metrics_admin_only(locked):
    for path in ("/debug/threads?window=0", "/debug/runtime", "/metrics"):
        assert http(locked, path)[0] == 401, path
        status, body, _ = http(locked, path, token=VIEWER)
        assert status == 403 and "admin only" in json.loads(body)["error"], path
        assert http(locked, path, token=OPS)[0] == 200, path


def test_debug_access_open(make_server_):
    server = make_server_(**{**LOCKED, "debug_access": "open"})
    assert http(server, "/metrics")[0] == 200 and http(server, "/debug/runtime")[0] == 200
    assert http(server, "/api/topics")[0] == 401  # only /debug and /metrics are opened


def test_anonymous_access_follows_its_own_rules(make_server_, topics):
    server = make_server_(**{**LOCKED, "anonymous_topics": "kt-auth.logs.** !kt-auth.logs.audit.**"})
    c = connect(server, f"/ws/tail/{topics['logs']}?from=earliest")
    assert len(c.collect(3)) == 3
    assert connect(server, f"/ws/tail/{topics['eu']}").closed()[0] == 4403
    names = {t["name"] for t in json.loads(http(server, "/api/topics")[1])["topics"]}
    assert topics["logs"] in names and topics["eu"] not in names and topics["audit"] not in names
    assert http(server, "/metrics")[0] == 403  # anonymous is never admin


@pytest.mark.parametrize("param", ["token", "access_token"])
def test_token_in_url_is_refused(locked, topics, param):
    c = connect(locked, f"/ws/tail/{topics['eu']}?{param}={VIEWER}", token=VIEWER)
    code, reason = c.closed()
    assert code == 4400 and reason.startswith("token: never in the URL")
    assert http(locked, f"/api/topics?{param}={VIEWER}", token=VIEWER)[0] == 400


def test_control_frame_flood_closes_1008(make_server_, topics):
    server = make_server_(control_rate_per_socket=2, control_burst_per_socket=5)
    c = connect(server, f"/ws/tail/{topics['eu']}")
    c.status("live")
    for i in range(30):
        try:
            c.send({"op": "pause" if i % 2 else "resume"})
        except (websocket.WebSocketException, OSError):
            break
    code, reason = c.closed()
    assert code == 1008 and reason == "more than 2 control frames a second"
    assert any(f["type"] == "error" and f["code"] == 1008 for f in c.frames)


def test_connection_rate_per_address_answers_429(make_server_, topics):
    server = make_server_(connect_rate_per_client=0.01, connect_burst_per_client=2)
    for _ in range(2):
        connect(server, f"/ws/tail/{topics['eu']}").status("live")
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        connect(server, f"/ws/tail/{topics['eu']}")
    assert err.value.status_code == 429
    assert int(err.value.resp_headers["retry-after"]) >= 1
    assert http(server, "/healthz")[0] == 200  # plain HTTP is not counted


def test_demo_enables_anonymous_access():
    """``kafkatail demo`` is for looking around: no token, unless its config says otherwise."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("KAFKATAIL_ANONYMOUS_TOPICS", "KAFKATAIL_DEBUG_ACCESS")}
    proc = subprocess.Popen([sys.executable, "-m", "kafkatail", "demo", "--port", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = next((m.group(1) for line in proc.stdout
                    if (m := re.search(r"(http://\S+)/\?", line))), None)
        assert url, "demo printed no URL"
        children = psutil.Process(proc.pid).children(recursive=True)
        with urllib.request.urlopen(url + "/api/topics", timeout=10) as resp:
            names = {t["name"] for t in json.load(resp)["topics"]}
        assert "demo.orders" in names
        c = WsClient(url.replace("http", "ws") + "/ws/tail/demo.orders?from=-1")
        assert c.hello()["topic"] == "demo.orders"
        c.close()
        assert http_status(url + "/metrics") == 403  # anonymous tails, but anonymous is no admin
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert not psutil.wait_procs(children, timeout=10)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        with err:
            return err.code


def test_tail_cli_sends_its_token_as_a_header(locked, topics, tmp_path):
    """``kafkatail tail`` against a locked server: 4401 without a token (final, no retry loop),
    records with one from $KAFKATAIL_TOKEN or --token-file."""
    cmd = [sys.executable, "-m", "kafkatail", "tail", topics["eu"], "--url",
           f"ws://127.0.0.1:{locked.port}", "-o", "earliest", "-c", "3", "-f", "%s\\n"]
    env = {k: v for k, v in os.environ.items() if k != "KAFKATAIL_TOKEN"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 1 and "4401" in r.stderr, r.stderr
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                       env={**env, "KAFKATAIL_TOKEN": VIEWER})
    assert r.returncode == 0 and r.stdout.splitlines() == [f"{topics['eu']}-v{i}" for i in range(3)]
    token_file = tmp_path / "token"
    token_file.write_text(VIEWER + "\n")
    r = subprocess.run(cmd + ["--token-file", str(token_file)], capture_output=True, text=True,
                       timeout=30, env=env)
    assert r.returncode == 0, r.stderr
