"""A reconnecting tail client: what ``kafkatail tail`` and other Python programs use.

It keeps a cursor per partition (the next offset to read) and, when the socket drops for a
reason that is worth retrying, reconnects with backoff and resumes with ``from=offsets:...``, so
the records it yields have no gap and no duplicate across reconnects.
"""
from __future__ import annotations

import json
import random
import re
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator
from urllib.parse import urlencode, urlsplit, urlunsplit

from simple_websocket import Client, ConnectionClosed, ConnectionError as WSConnectionError
from simple_websocket.ws import Base

# Close codes after which trying again cannot help: the request itself is wrong or done.
FINAL_CODES = {1000, 1009, 4400, 4401, 4403, 4404}
# Client-side pings find a server that vanished without FIN (a half-open connection).
PING_INTERVAL_S = 20


class TailEnded(Exception):
    """The server ended the tail for good; ``code`` and ``reason`` say why."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"{code} {reason}".strip())
        self.code = code
        self.reason = reason


@dataclass
class Event:
    """One thing the client saw: a record, or a marker (reconnected, dropped, status)."""

    kind: str
    record: dict[str, Any] | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def tail_url(base: str, topic: str, **params: Any) -> str:
    """``ws://host[:port][/prefix]`` + ``/ws/tail/<topic>?...`` (params that are None are left out)."""
    parts = urlsplit(base)
    path = parts.path.rstrip("/")
    if "/ws/tail/" not in path:
        path += f"/ws/tail/{topic}"
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


class TailClient:
    """Iterate over a tail's records across reconnects; ``stop()`` ends it from another thread."""

    def __init__(self, base_url: str, topic: str, *, start: str = "latest",
                 partitions: str | None = None, filter: str | None = None,
                 regex: str | None = None, max_records: int | None = None,
                 format: str = "auto", max_backoff: float = 10.0,
                 reconnect: bool = True, token: str | None = None) -> None:
        self.base_url = base_url
        self.topic = topic
        self.start = start
        self.params = {"partitions": partitions, "filter": filter, "regex": regex,
                       "format": format}
        self.remaining = max_records
        self.max_backoff = max_backoff
        self.reconnect = reconnect
        # A header, never a URL parameter: URLs end up in proxy logs.
        self.headers = {"Authorization": f"Bearer {token}"} if token else None
        self.cursor: dict[int, int] = {}
        self._stop = threading.Event()
        self._ws: Client | None = None

    def url(self) -> str:
        start = self.start
        if self.cursor:
            start = "offsets:" + ",".join(f"{p}:{o}" for p, o in sorted(self.cursor.items()))
        return tail_url(self.base_url, self.topic, **{"from": start}, max=self.remaining,
                        **self.params)

    def stop(self) -> None:
        """Send a close frame and wake the reader; safe from a signal handler."""
        self._stop.set()
        ws = self._ws
        if ws is None:
            return
        try:
            # Client.close() would close the fd under its reader thread, which a blocked recv
            # never notices; shutdown() wakes it, and the reader closes the socket itself.
            Base.close(ws)
            ws.sock.shutdown(socket.SHUT_RDWR)
        except (ConnectionClosed, OSError):
            pass
        ws.event.set()

    def events(self) -> Iterator[Event]:
        backoff = 0.5
        reconnecting = False
        while not self._stop.is_set():
            try:
                self._ws = Client.connect(self.url(), headers=self.headers,
                                          ping_interval=PING_INTERVAL_S)
            except (WSConnectionError, OSError) as exc:
                if not self.reconnect:
                    raise TailEnded(None, f"cannot connect: {exc}") from None
                yield Event("retry", detail={"error": str(exc), "in_s": backoff})
                self._stop.wait(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, self.max_backoff)
                continue
            if reconnecting:
                yield Event("reconnected", detail={"from": self.url()})
            try:
                for event in self._read(self._ws):
                    backoff = 0.5
                    yield event
                return
            except ConnectionClosed as closed:
                code, reason = closed.reason, closed.message or ""
                if self._stop.is_set():
                    return
                if code in FINAL_CODES or not self.reconnect:
                    raise TailEnded(code, reason) from None
                yield Event("disconnected", detail={"code": code, "reason": reason})
                reconnecting = True

    def _read(self, ws: Client) -> Iterator[Event]:
        while True:
            raw = ws.receive()
            if raw is None:
                continue
            frame = json.loads(raw)
            kind = frame.get("type")
            if kind == "messages":
                for rec in frame["messages"]:
                    self.cursor[rec["partition"]] = rec["offset"] + 1
                    if self.remaining is not None:
                        self.remaining -= 1
                    yield Event("record", rec)
                yield Event("batch-end")
            elif kind == "hello":
                for p in frame["partitions"]:
                    self.cursor.setdefault(p["partition"], p["start"])
                yield Event("hello", detail=frame)
            else:
                yield Event(kind or "unknown", detail=frame)


_TOKEN = re.compile(r"%[tpoTksShK%]")


class Formatter:
    """kcat-style output: ``%t`` topic, ``%p`` partition, ``%o`` offset, ``%T`` timestamp (ms),
    ``%k`` key, ``%K`` key length, ``%s`` value, ``%S`` record size, ``%h`` headers, ``%%``.
    With no format, one JSON object per line. The format is parsed once, not per record."""

    def __init__(self, topic: str, fmt: str | None) -> None:
        self.topic = topic
        self.parts = None if fmt is None else [p for p in _TOKEN.split(fmt)]
        self.tokens = [] if fmt is None else _TOKEN.findall(fmt)

    def __call__(self, rec: dict[str, Any]) -> str:
        if self.parts is None:
            return json.dumps({"topic": self.topic, **rec}, ensure_ascii=False) + "\n"
        out = [self.parts[0]]
        for token, text in zip(self.tokens, self.parts[1:]):
            out.append(self._field(token, rec))
            out.append(text)
        return "".join(out)

    def _field(self, token: str, rec: dict[str, Any]) -> str:
        if token == "%s":
            v = rec["value"]
            return "" if v is None else v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
        if token == "%k":
            return rec["key"] or ""
        if token == "%h":
            return ",".join(f"{h[0]}={'' if h[1] is None else h[1]}" for h in rec["headers"])
        return str({"%t": self.topic, "%p": rec["partition"], "%o": rec["offset"],
                    "%T": rec["timestamp"], "%S": rec["size"], "%K": len(rec["key"] or ""),
                    "%%": "%"}[token])
