"""A small WebSocket test client that reads frames with deadlines (never bare sleeps)."""
from __future__ import annotations

import json
import time
from typing import Any, Callable

import websocket


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
