"""gunicorn workers that keep slow clients off the request slots (slowloris).

gunicorn's gthread worker hands a new connection to a pool thread as soon as it has a byte to
read, and that thread then reads the request line and headers with blocking ``recv``: a client
that sends one header every few seconds holds the thread for as long as it likes, and a
hundred such clients hold every thread, ``/healthz`` included. The gevent worker bounds a
request's headers only by ``keepalive`` (and not at all with ``keepalive = 0``).

``kafkatail.workers.gthread.ThreadWorker`` and ``kafkatail.workers.ggevent.GeventWorker``
subclass gunicorn's two workers: a request's line and headers are read first, off the request
slots under gthread (in the worker's event loop), within ``header_timeout_s`` (then 408 and
close); one client address may have at most ``header_conns_per_client`` connections in that
state (then 429 and close). Only then does gunicorn parse and serve the request as usual.
``kafkatail serve`` and ``conf/gunicorn.conf.py`` both run them (``server.WORKER_CLASSES``).

The limits come from the kafkatail config of the app the worker serves (``app.extensions``),
or the defaults when it serves something else. Both workers also share ``Lifecycle``
(``lifecycle.py``): boot, signals, and the SIGTERM that closes every tail with 1001.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# Most bytes of request line and headers read ahead before the request goes to gunicorn's
# parser anyway (which then applies its own limit_request_* and answers 400 or 431).
MAX_HEAD_BYTES = 64 * 1024
HEAD_ENDS = (b"\r\n\r\n", b"\n\n")
REPORT_EVERY_S = 10.0


@dataclass(frozen=True)
class HeaderLimits:
    timeout_s: float
    per_client: int  # 0: no limit

    @classmethod
    def of(cls, kafkatail: dict[str, Any] | None) -> "HeaderLimits":
        """The limits in the config of the kafkatail app the worker serves (``Lifecycle.kafkatail``),
        else the defaults."""
        from ..config import Config

        config = kafkatail["config"] if kafkatail is not None else Config()
        per_client = 0 if config.proxy_hops else config.header_conns_per_client
        return cls(config.header_timeout_s, per_client)


def head_complete(buf: bytes | bytearray, start: int = 0) -> bool:
    """True when ``buf`` holds a whole request head (line and headers), looking from ``start``."""
    start = max(0, start - 3)
    return any(buf.find(end, start) >= 0 for end in HEAD_ENDS)


def response(status: str, message: str, extra: str = "") -> bytes:
    """A complete HTTP/1.1 response with a JSON error body and ``Connection: close``."""
    body = json.dumps({"error": message}).encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: "
            f"{len(body)}\r\n{extra}Connection: close\r\n\r\n").encode() + body


TIMED_OUT = response("408 Request Timeout", "request headers not received in time")
TOO_MANY = response("429 Too Many Requests",
                    "too many unfinished requests from this address", "Retry-After: 1\r\n")
TOO_LARGE = response("431 Request Header Fields Too Large", "request headers too large")


class Waiting:
    """Connections per client address still sending request headers. Called from one thread
    (gthread's event loop) or from greenlets of one hub: no lock needed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.by_client: Counter[str] = Counter()

    def enter(self, client: str) -> bool:
        """Count one more for ``client``; False (not counted) when it is at the limit."""
        if self.limit and self.by_client[client] >= self.limit:
            return False
        self.by_client[client] += 1
        return True

    def leave(self, client: str) -> None:
        self.by_client[client] -= 1
        if self.by_client[client] <= 0:
            del self.by_client[client]


class Refusals:
    """Counts of connections closed for slow or excess headers, logged at most every
    ``REPORT_EVERY_S`` (an attack must not become a log flood)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.clients: Counter[str] = Counter()
        self.last = time.monotonic() - REPORT_EVERY_S  # the first one is logged at once
        self.lock = threading.Lock()

    def add(self, reason: str, client: str) -> None:
        with self.lock:
            self.counts[reason] += 1
            self.clients[client] += 1
            now = time.monotonic()
            if now - self.last < REPORT_EVERY_S:
                return
            counts, clients = self.counts, self.clients
            self.counts, self.clients, self.last = Counter(), Counter(), now
        top = ", ".join(f"{c} ({n})" for c, n in clients.most_common(3))
        log.warning("closed %d connections before their request: %s; most from %s",
                    sum(counts.values()),
                    ", ".join(f"{n} {r}" for r, n in sorted(counts.items())), top)


def client_key(addr: Any) -> str:
    """The client address a per-client limit counts by (the host part of a TCP peer)."""
    if isinstance(addr, tuple) and addr:
        return str(addr[0])
    return str(addr or "")
