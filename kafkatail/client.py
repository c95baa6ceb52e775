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
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator
from urllib.parse import urlencode, urlsplit, urlunsplit

from simple_websocket import Client, ConnectionClosed, ConnectionError as WSConnectionError
from simple_websocket.ws import Base
from wsproto import ConnectionType
from wsproto.events import AcceptConnection, RejectConnection, Request
from wsproto.utilities import RemoteProtocolError

# Close codes after which trying again cannot help: the request itself is wrong or done.
FINAL_CODES = {1000, 1009, 4400, 4401, 4403, 4404}
# HTTP answers to the upgrade that a later try can get past: a busy or restarting server or
# proxy. Any other refusal (404 for a wrong URL, 400, 403, ...) ends the tail.
RETRY_STATUSES = {408, 429, 500, 502, 503, 504}
# Client-side pings find a server that vanished without FIN (a half-open connection).
PING_INTERVAL_S = 20


class TailEnded(Exception):
    """The server ended the tail for good; ``code`` and ``reason`` say why."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(reason if code is None else f"{code} {reason}".strip())
        self.code = code
        self.reason = reason


class HandshakeFailed(OSError):
    """The server did not complete a WebSocket handshake: silent, closed, or not HTTP."""


class _Client(Client):
    """simple-websocket's Client with a deadline on connect and handshake.

    Its own handshake waits forever on a server that never answers (a Kafka port, say), spins
    on one that closes, and lets wsproto's RemoteProtocolError escape on one that is not HTTP.
    ``on_socket`` is handed the socket before it connects, so ``stop()`` can shut it down.
    """

    def __init__(self, url: str, headers: dict[str, str] | None, ping_interval: float,
                 timeout: float, on_socket: Callable[[socket.socket], None]) -> None:
        parts = urlsplit(url)
        secure = parts.scheme in ("https", "wss")
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if secure else 80)
        self.path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.subprotocols = []
        self.extra_headeers = list((headers or {}).items())
        self.timeout = timeout
        family, kind, proto, _, addr = socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        on_socket(sock)
        sock.settimeout(timeout)
        try:
            sock.connect(addr)
            if secure:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
                on_socket(sock)
            super(Client, self).__init__(sock, connection_type=ConnectionType.CLIENT,
                                         ping_interval=ping_interval)
        except BaseException:
            sock.close()
            raise

    def handshake(self) -> None:
        where = f"{self.host}:{self.port}"
        host = where if self.port not in (80, 443) else self.host
        event = None
        try:
            self.sock.send(self.ws.send(Request(host=host, target=self.path,
                                                extra_headers=self.extra_headeers)))
            while event is None:
                data = self.sock.recv(self.receive_bytes)
                if not data:
                    raise HandshakeFailed(f"{where} closed the connection during the handshake")
                self.ws.receive_data(data)
                event = next(self.ws.events(), None)
        except (ConnectionResetError, BrokenPipeError):
            # A peer that closes with our request unread resets instead: the same refusal.
            raise HandshakeFailed(f"{where} closed the connection during the handshake") from None
        except socket.timeout:
            raise HandshakeFailed(
                f"no WebSocket handshake from {where} within {self.timeout:g} s") from None
        except RemoteProtocolError:
            raise HandshakeFailed(f"{where} did not answer in HTTP; is it a kafkatail "
                                  "server?") from None
        self.sock.settimeout(None)
        if isinstance(event, RejectConnection):
            raise WSConnectionError(event.status_code)
        if not isinstance(event, AcceptConnection):
            raise WSConnectionError(400)
        self.connected = True


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
                 regex: str | None = None, where: str | None = None,
                 until: str | None = None, max_records: int | None = None,
                 format: str = "auto", max_backoff: float = 10.0,
                 reconnect: bool = True, token: str | None = None,
                 timeout: float = 10.0) -> None:
        self.base_url = base_url
        self.topic = topic
        self.start = start
        self.params = {"partitions": partitions, "filter": filter, "regex": regex,
                       "where": where, "until": until, "format": format}
        self.remaining = max_records
        self.max_backoff = max_backoff
        self.reconnect = reconnect
        self.timeout = timeout
        # A header, never a URL parameter: URLs end up in proxy logs.
        self.headers = {"Authorization": f"Bearer {token}"} if token else None
        self.cursor: dict[int, int] = {}
        self._stop = threading.Event()
        self._ws: Client | None = None
        self._connecting: socket.socket | None = None

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
            sock = self._connecting
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked connect or handshake
                except OSError:
                    pass
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
            self._ws = None
            try:
                self._ws = _Client(self.url(), self.headers, PING_INTERVAL_S, self.timeout,
                                   self._track)
            except (WSConnectionError, OSError) as exc:
                if self._stop.is_set():
                    return
                status = getattr(exc, "status_code", None)
                if status is not None and status not in RETRY_STATUSES:
                    raise TailEnded(None, f"the server refused the WebSocket upgrade with HTTP "
                                          f"{status}; is the URL a kafkatail server?") from None
                if not self.reconnect:
                    raise TailEnded(None, f"cannot connect: {exc}") from None
                error = f"HTTP {status} from the server" if status is not None else str(exc)
                yield Event("retry", detail={"error": error, "in_s": backoff})
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

    def _track(self, sock: socket.socket) -> None:
        self._connecting = sock
        if self._stop.is_set():
            sock.close()

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
