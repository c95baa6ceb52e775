"""Helpers the suite's test modules share (tests import them from here, never from each other):
the WebSocket client and ``tail()``, ``wait_for``, the in-process servers, the consumer backends
and nginx in front of two servers. Fixtures built on them live in conftest.py."""
from __future__ import annotations

import gc
import importlib.util
import json
import os
import socket
import struct
import subprocess
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, NoReturn
from urllib.parse import urlsplit

import psutil
import pytest
import websocket
from flask import Flask, Request as FlaskRequest, jsonify, request, session
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.serving import make_server
from wsproto import ConnectionType, WSConnection
from wsproto.events import (AcceptConnection, CloseConnection, Ping, RejectConnection, Request,
                            TextMessage)
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import LocalProtocolError

from kafkatail.app import create_app, init_app, shutdown
from kafkatail.broker import free_port, wait_for_port
from kafkatail.config import Config
from kafkatail.security.tokens import Identity
from kafkatail.security.trie import PatternTrie
from kafkatail.web.page import STATIC

# The consumer backends; a test that takes the ``backend`` fixture (conftest.py) runs once per
# backend, and the servers ``make_server_`` builds for it use that backend.
BACKENDS = ["kafka-python", pytest.param("confluent", marks=pytest.mark.skipif(
    importlib.util.find_spec("confluent_kafka") is None, reason="needs confluent-kafka"))]


def unavailable(reason: str) -> NoReturn:
    """Skip a test whose program or privilege this machine lacks; fail instead under CI
    (``.ci/run`` sets CI=1 and installs everything), where a skip would hide a broken install."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; .ci/run should have provided it")
    pytest.skip(reason)


def wait_for(check: Callable[[], Any], timeout: float = 20, what: str | Callable[[], Any] = "condition",
             interval: float = 0.02) -> Any:
    """Poll ``check`` until it returns something truthy, and return that. After ``timeout`` s
    fail with ``what``: a description, or a callable whose result shows the state at that time."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            shown = what() if callable(what) else what
            raise AssertionError(f"not within {timeout}s: {shown} (last: {last!r})")
        time.sleep(interval)


# --- the WebSocket client -------------------------------------------------------------------


class Closed(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed {code} {reason!r}")
        self.code = code
        self.reason = reason


OPEN: list["WsClient"] = []


def close_all() -> None:
    """Close every client a test opened (the suite's autouse fixture calls this)."""
    while OPEN:
        c = OPEN.pop()
        try:
            c.close()
        except (OSError, websocket.WebSocketException):
            pass


class WsClient:
    """The suite's WebSocket client: reads frames with deadlines (never bare sleeps) and keeps
    the frames and records it read. (The product's terminal client is ``kafkatail.client.TailClient``.)"""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.ws = websocket.create_connection(url, timeout=timeout)
        OPEN.append(self)
        self.frames: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.close_reason = ""

    def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        """Next frame; raises Closed when the server closed the socket."""
        deadline = time.monotonic() + timeout
        while True:
            # Pings are answered inside recv; re-arm the timeout so they cannot extend it.
            self.ws.settimeout(max(0.01, deadline - time.monotonic()))
            opcode, data = self.ws.recv_data(control_frame=True)
            if opcode not in (websocket.ABNF.OPCODE_PING, websocket.ABNF.OPCODE_PONG):
                break
            if time.monotonic() >= deadline:
                raise websocket.WebSocketTimeoutException("timed out")
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
            self.close_code, self.close_reason = code, data[2:].decode("utf-8", "replace")
            raise Closed(self.close_code, self.close_reason)
        return self._received(data)

    def _received(self, data: str | bytes) -> dict[str, Any]:
        frame = json.loads(data)
        self.frames.append(frame)
        if frame["type"] == "messages":
            self.records.extend(frame["messages"])
        return frame

    def until(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching frame within {timeout}s; got {self.frames[-5:]}")
            try:
                frame = self.recv(left)
            except websocket.WebSocketTimeoutException:
                continue  # the deadline check above reports it
            if pred(frame):
                return frame

    def hello(self) -> dict[str, Any]:
        return self.until(lambda f: f["type"] == "hello")

    def status(self, state: str, timeout: float = 15.0) -> dict[str, Any]:
        return self.until(lambda f: f["type"] == "status" and f["status"] == state, timeout)

    def collect(self, n: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Read until at least n records arrived; return them."""
        deadline = time.monotonic() + timeout
        while len(self.records) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"got {len(self.records)} of {n} records in {timeout}s")
            self.recv(left)
        return self.records

    def account(self, n: int, timeout: float = 60.0) -> int:
        """Read until records + reported drops cover n records; returns the dropped count."""
        deadline = time.monotonic() + timeout
        while len(self.records) + self.dropped < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{len(self.records)} records + {self.dropped} dropped "
                                     f"of {n} in {timeout}s")
            self.recv(left)
        return self.dropped

    @property
    def dropped(self) -> int:
        return sum(f["count"] for f in self.frames if f["type"] == "dropped")

    @classmethod
    def adopt(cls, ws: websocket.WebSocket) -> "WsClient":
        """Wrap a socket opened elsewhere (e.g. with special socket options)."""
        c = cls.__new__(cls)
        c.ws, c.frames, c.records, c.close_code, c.close_reason = ws, [], [], None, ""
        OPEN.append(c)
        return c

    def closed(self, timeout: float = 15.0) -> tuple[int | None, str]:
        """Read until the server closes; returns (code, reason)."""
        try:
            self.until(lambda f: False, timeout)
        except Closed as c:
            return c.code, c.reason
        raise AssertionError("not closed")

    def send(self, obj: Any) -> None:
        self.ws.send(obj if isinstance(obj, str) else json.dumps(obj))

    def close(self) -> None:
        """Clean close; websocket-client skips the socket once the server has closed, so shut it too."""
        self.ws.close(timeout=2)
        self.ws.shutdown()

    def drop(self, reset: bool = False) -> None:
        """End the TCP connection with no close frame, as a tab that is gone does: a FIN, or
        with ``reset`` an RST (SO_LINGER 0)."""
        sock = self.ws.sock
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


class DeflateClient(WsClient):
    """A client that asks for permessage-deflate, as every browser does (websocket-client never
    does): wsproto over a plain socket, read with the same deadlines."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        u = urlsplit(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
        OPEN.append(self)
        self.frames, self.records = [], []
        self.close_code, self.close_reason = None, ""
        self.conn = WSConnection(ConnectionType.CLIENT)
        self.deflate = PerMessageDeflate()
        target = u.path + (f"?{u.query}" if u.query else "")
        self.sock.sendall(self.conn.send(Request(host=u.netloc, target=target,
                                                 extensions=[self.deflate])))
        self._text: list[str] = []
        event = self._event(time.monotonic() + timeout)
        if isinstance(event, RejectConnection):
            raise Closed(event.status_code, "rejected")
        assert isinstance(event, AcceptConnection), event

    def _event(self, deadline: float) -> Any:
        while True:
            for event in self.conn.events():
                return event
            left = deadline - time.monotonic()
            if left <= 0:
                raise websocket.WebSocketTimeoutException("timed out")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 16)
            except socket.timeout:
                continue
            self.conn.receive_data(data or None)

    def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            event = self._event(deadline)
            if isinstance(event, Ping):
                self.sock.sendall(self.conn.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.close_code, self.close_reason = event.code, event.reason or ""
                raise Closed(self.close_code, self.close_reason)
            elif isinstance(event, TextMessage):
                self._text.append(event.data)
                if event.message_finished:
                    text, self._text = "".join(self._text), []
                    return self._received(text)

    def send(self, obj: Any) -> None:
        text = obj if isinstance(obj, str) else json.dumps(obj)
        self.sock.sendall(self.conn.send(TextMessage(text)))

    def close(self) -> None:
        try:
            self.sock.sendall(self.conn.send(CloseConnection(code=1000)))
        except (OSError, LocalProtocolError):  # already closed by either side
            pass
        self.sock.close()


def tail(server, topic: str, query: str = "", **kw) -> WsClient:
    """A client on ``/ws/tail/<topic>?<query>`` of ``server``."""
    return WsClient(server.ws_url(f"/ws/tail/{topic}{'?' + query if query else ''}"), **kw)


def offsets(records: list[dict], partition: int = 0) -> list[int]:
    return [r["offset"] for r in records if r["partition"] == partition]


def stalled_client(url: str) -> websocket.WebSocket:
    """A client with a tiny receive buffer that never reads (nor answers pings)."""
    ws = websocket.WebSocket()
    ws.connect(url, sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)], timeout=10)
    WsClient.adopt(ws)  # closed by the suite after the test
    return ws


# A client process to SIGKILL: opens argv[2] tails of argv[1], reads each one's first frame,
# prints "open" and waits on stdin.
KILLED_CLIENT = """
import sys, websocket
socks = [websocket.create_connection(sys.argv[1], timeout=10) for _ in range(int(sys.argv[2]))]
for s in socks:
    s.recv()
print("open", flush=True)
sys.stdin.read()
"""


def metrics(server) -> dict:
    """The server's /metrics samples by name and labels, e.g. ``m["kafkatail_tails{state=live}"]``."""
    text = urllib.request.urlopen(server.url("/metrics")).read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = s.name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}"
                            if s.labels else "")
            out[key] = s.value
    return out


# --- servers ---------------------------------------------------------------------------------


class InProcessServer:
    """The app on a real socket in this process, so tests can count this process's threads."""

    def __init__(self, config: Config, port: int = 0, app: Flask | None = None) -> None:
        self.app = app if app is not None else create_app(config)
        self.config = config
        self.http = make_server("127.0.0.1", port, self.app, threaded=True)
        self.port = self.http.server_port
        self.thread = threading.Thread(target=self.http.serve_forever, name="kt-test-http",
                                       kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def pool(self):
        return self.app.extensions["kafkatail"]["pool"]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        shutdown(self.app, timeout=5)
        self.http.shutdown()
        self.http.server_close()
        self.thread.join(5)
        # Werkzeug does not join its request threads, and its post-request drain leaves an epoll
        # selector to the cyclic GC when the socket is already closed. Production (gunicorn) has
        # neither; here, wait for the threads and collect, so the thread guard sees our leaks only.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(
                t.name.endswith("(process_request_thread)") for t in threading.enumerate()):
            time.sleep(0.02)
        gc.collect()


# kafkatail mounted in a host Flask app under PREFIX (test_embed.py, browser/test_page_access.py).
PREFIX = "/tail"
# Which topics each host user may tail, in the host's own terms.
USERS = {"alice": ["kt-embed.*.public"], "bob": ["**"]}


def host_app(config: Config) -> Flask:
    app = Flask("host")
    app.secret_key = uuid.uuid4().hex

    @app.get("/")
    def home():
        return f"host home, user {session.get('user')}"

    @app.post("/login")
    def login():
        session["user"] = request.form["user"]
        return "ok"

    @app.get("/api/status")  # a host route on a path kafkatail also uses under its prefix
    def status():
        return jsonify(host="ok")

    def authorize(req: FlaskRequest) -> Identity | None:
        user = session.get("user")
        return None if user not in USERS else Identity(user, PatternTrie(USERS[user]))

    init_app(app, config, authorize=authorize, url_prefix=PREFIX)
    return app


class HostServer(InProcessServer):
    """InProcessServer's socket, thread and teardown around the host app."""

    def __init__(self, config: Config) -> None:
        super().__init__(config, app=host_app(config))


# --- nginx in front of two servers (conf/nginx.conf) ---------------------------------------------

NGINX_CONF = Path(__file__).resolve().parents[1] / "conf" / "nginx.conf"
NGINX_READ_TIMEOUT_S = 3
NGINX_PING_S = 1  # the servers' ping interval behind nginx


class Nginx:
    """nginx in the foreground with conf/nginx.conf included, ports and paths rewritten."""

    def __init__(self, tmp: Path, upstreams: list[int]) -> None:
        self.tmp, self.port = tmp, free_port()
        site = NGINX_CONF.read_text()
        site = site.replace("listen 80;", f"listen 127.0.0.1:{self.port};")
        site = site.replace("127.0.0.1:8001", f"127.0.0.1:{upstreams[0]}")
        site = site.replace("127.0.0.1:8002", f"127.0.0.1:{upstreams[1]}")
        site = site.replace("/opt/kafkatail/static/", f"{STATIC}/")
        site = site.replace("proxy_read_timeout 60s;", f"proxy_read_timeout {NGINX_READ_TIMEOUT_S}s;")
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

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def workers(self) -> set[int]:
        """The pids of the master's worker processes (old ones too, while they shut down)."""
        return {c.pid for c in psutil.Process(self.proc.pid).children()}

    def reload(self) -> None:
        subprocess.run(["nginx", "-c", f"{self.tmp}/nginx.conf", "-p", str(self.tmp), "-s",
                        "reload"], check=True, capture_output=True)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def assert_worker_runtime(runtime: dict, worker: str) -> None:
    """``/debug/runtime`` of a worker: its class, and under gevent kafka-python imported after
    monkey-patching (it captured gevent's selector, not the blocking one)."""
    assert runtime["worker_class"] == worker and runtime["green"] is (worker == "gevent")
    assert runtime["kafka_selector_is_default"] is True
    if worker == "gevent":
        assert runtime["kafka_selector"].startswith("gevent.")


class Backlog:
    """Keeps ``topic`` busy while a test measures: produces ``value(n)`` records in batches of
    ``batch`` on a thread of its own until the ``with`` block ends, so a reader always has
    records to work through however slowly the machine runs it."""

    def __init__(self, cluster: Any, topic: str, value: Callable[[int], str], batch: int = 2000) -> None:
        self.cluster, self.topic, self.value, self.batch = cluster, topic, value, batch
        self.produced = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kt-test-backlog")

    def _run(self) -> None:
        while not self._stop.is_set():
            n = self.produced
            self.produced += self.cluster.produce(
                self.topic, [(None, self.value(i)) for i in range(n, n + self.batch)])

    def __enter__(self) -> "Backlog":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)
