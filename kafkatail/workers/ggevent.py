"""gunicorn's gevent worker, with each request head read within ``header_timeout_s``.

gunicorn bounds the wait for a request by ``keepalive`` (2 s by default, none with
``keepalive = 0``), and a connection holds one of ``worker_connections`` greenlets while it
trickles its headers. Here the first request's head is read before gunicorn's handler runs:
within ``header_timeout_s`` (then 408), with at most ``header_conns_per_client`` connections
per address doing so (then 429), and then handed to gunicorn's parser through a socket wrapper
that returns the buffered bytes first. Later requests on a kept-alive connection get gunicorn's
own bound, ``min(keepalive, header_timeout_s)`` here. TLS and HTTP/2 prior-knowledge
connections are left to gunicorn.

Boot, signals and the stop that closes every tail with 1001 are ``Lifecycle``'s
(``lifecycle.py``); here the stop runs on a greenlet, and a worker serving kafkatail's app
also counts CPU per greenlet (``ops/greencpu.py``) and names the hub's DNS threads
(``ops/greenpool.py``).
"""
from __future__ import annotations

from typing import Any, Callable

import gevent
from gunicorn.http2 import negotiation
from gunicorn.workers import ggevent

from . import (MAX_HEAD_BYTES, TIMED_OUT, TOO_LARGE, TOO_MANY, HeaderLimits, Refusals,
               Waiting, client_key, head_complete)
from .lifecycle import Lifecycle


class HeadFirst:
    """A client socket whose request head was already read: ``recv`` returns those bytes
    first, then reads the socket; everything else is the socket's."""

    def __init__(self, sock: Any, head: bytes) -> None:
        self._sock = sock
        self._head = head

    def recv(self, size: int, *flags: int) -> bytes:
        if self._head:
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._sock.recv(size, *flags)

    def recv_into(self, buffer: Any, nbytes: int = 0, *flags: int) -> int:
        if self._head:
            n = min(len(buffer), nbytes or len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return self._sock.recv_into(buffer, nbytes, *flags)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class GeventWorker(Lifecycle, ggevent.GeventWorker):
    """gevent, where a request head must arrive within ``header_timeout_s``."""

    def init_kafkatail(self) -> None:
        from ..ops import greencpu, greenpool  # imported in the worker only, after patching

        super().init_kafkatail()
        greencpu.install()
        greenpool.install()

    def run_aside(self, fn: Callable[[], None]) -> gevent.Greenlet:
        # A signal handler runs on the hub, where nothing may block (Thread.start does).
        return gevent.spawn(fn)

    def run(self) -> None:
        # The app is loaded by now (init_process): its config holds the limits.
        self.limits = HeaderLimits.of(self.kafkatail)
        self.waiting = Waiting(self.limits.per_client)
        self.refusals = Refusals()
        super().run()

    def timeout_ctx(self) -> Any:
        """The wait for a kept-alive connection's next request, head included."""
        return gevent.Timeout(min(self.cfg.keepalive, self.limits.timeout_s), False)

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        if self.cfg.is_ssl or negotiation.prior_knowledge_allowed(self.cfg, addr):
            super().handle(listener, client, addr)
            return
        key = client_key(addr)
        if not self.waiting.enter(key):
            self._refuse(client, TOO_MANY, "over header_conns_per_client", key)
            return
        try:
            head = self._read_head(client, key)
        finally:
            self.waiting.leave(key)
        if head is None:
            client.close()
            return
        super().handle(listener, HeadFirst(client, head), addr)

    def _read_head(self, client: Any, key: str) -> bytes | None:
        """The request head (and whatever came with it), or None when the client left, was
        too slow (408) or too large (431)."""
        client.setblocking(1)  # gevent's cooperative blocking
        buf = bytearray()
        timer = gevent.Timeout(self.limits.timeout_s)
        timer.start()
        try:
            while True:
                data = client.recv(MAX_HEAD_BYTES)
                if not data:
                    return None
                seen = len(buf)
                buf += data
                if head_complete(buf, seen):
                    return bytes(buf)
                if len(buf) >= MAX_HEAD_BYTES:
                    self._refuse(client, TOO_LARGE, "headers too large", key)
                    return None
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            if buf:
                self._refuse(client, TIMED_OUT, "header_timeout_s passed", key)
            return None
        except OSError:
            return None
        finally:
            timer.close()

    def _refuse(self, client: Any, answer: bytes, reason: str, key: str) -> None:
        self.refusals.add(reason, key)
        try:
            client.setblocking(0)
            client.send(answer)
        except OSError:
            pass
        client.close()
