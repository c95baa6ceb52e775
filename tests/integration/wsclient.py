"""A small WebSocket test client that reads frames with deadlines (never bare sleeps)."""
from __future__ import annotations

import json
import socket
import time
from typing import Any, Callable
from urllib.parse import urlsplit

import websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import (AcceptConnection, CloseConnection, Ping, RejectConnection, Request,
                            TextMessage)
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import LocalProtocolError


class Closed(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed {code} {reason!r}")
        self.code = code
        self.reason = reason


OPEN: list["TailClient"] = []


def close_all() -> None:
    """Close every client a test opened (the suite's autouse fixture calls this)."""
    while OPEN:
        c = OPEN.pop()
        try:
            c.close()
        except (OSError, websocket.WebSocketException):
            pass


class TailClient:
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
    def adopt(cls, ws: websocket.WebSocket) -> "TailClient":
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


class DeflateClient(TailClient):
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
