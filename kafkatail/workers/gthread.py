"""gunicorn's gthread worker, with request heads read in the event loop, not in pool threads.

gunicorn hands a readable connection to a pool thread, which reads the request line and
headers with blocking ``recv``: a slow client holds that thread. Here a connection (new, or
kept alive and readable again) first stays in the worker's selector; each readable event reads
what is there without blocking, and only a complete head goes to the pool, already buffered in
gunicorn's parser, so the thread never waits for a client's headers. A head not complete within
``header_timeout_s`` gets 408; an address with ``header_conns_per_client`` heads pending gets
429 for the next connection. TLS and HTTP/2 prior-knowledge connections are left to gunicorn.

The request pool's threads are named ``kt-http-N``. Boot, signals and the stop that closes
every tail with 1001 are ``Lifecycle``'s (``lifecycle.py``); here the stop runs on a thread,
``kt-shutdown``.
"""
from __future__ import annotations

import selectors
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Callable

from gunicorn.http2 import negotiation
from gunicorn.workers import gthread

from ..ops.threads import name_pool_thread
from . import (MAX_HEAD_BYTES, TIMED_OUT, TOO_LARGE, TOO_MANY, HeaderLimits, Refusals,
               Waiting, client_key, head_complete)
from .lifecycle import Lifecycle


class _Head:
    """A connection's request head while it arrives."""

    __slots__ = ("client", "deadline", "buf")

    def __init__(self, client: str, deadline: float) -> None:
        self.client = client
        self.deadline = deadline
        self.buf = bytearray()


class ThreadWorker(Lifecycle, gthread.ThreadWorker):
    """gthread, where only connections with a complete request head take a pool thread."""

    def get_thread_pool(self) -> ThreadPoolExecutor:
        """gunicorn's request pool (threads started on demand), each thread named ``kt-http-N``
        (OS name too) instead of the interpreter's name."""
        return ThreadPoolExecutor(max_workers=self.cfg.threads, initializer=name_pool_thread)

    def run_aside(self, fn: Callable[[], None]) -> threading.Thread:
        thread = threading.Thread(target=fn, name="kt-shutdown", daemon=True)
        thread.start()
        return thread

    def init_process(self) -> None:
        self.heads: dict[Any, _Head] = {}  # TConn -> head; insertion order is deadline order
        self.refusals = Refusals()
        super().init_process()

    def run(self) -> None:
        # The app is loaded by now (init_process): its config holds the limits.
        self.limits = HeaderLimits.of(self.kafkatail)
        self.waiting = Waiting(self.limits.per_client)
        super().run()

    def _reads_heads(self, conn: Any) -> bool:
        return not self.cfg.is_ssl and not negotiation.prior_knowledge_allowed(self.cfg,
                                                                                conn.client)

    def enqueue_req(self, conn: Any) -> None:
        """A new connection (from ``accept``) waits for its head here first; a connection whose
        head is buffered (or that gunicorn serves itself) goes to the pool."""
        if conn.initialized or conn in self.heads or not self._reads_heads(conn):
            super().enqueue_req(conn)
            return
        self._wait_for_head(conn)

    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        """A kept-alive connection's next request: its head is read here too."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        if self._reads_heads(conn):
            self._wait_for_head(conn)
        else:
            super().enqueue_req(conn)

    def _wait_for_head(self, conn: Any) -> None:
        client = client_key(conn.client)
        if not self.waiting.enter(client):
            self._drop(conn, None, TOO_MANY, "over header_conns_per_client")
            return
        head = _Head(client, time.monotonic() + self.limits.timeout_s)
        self.heads[conn] = head
        conn.sock.setblocking(False)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_head_bytes, conn))
        self._on_head_bytes(conn, conn.sock)  # bytes may be there already

    def _on_head_bytes(self, conn: Any, sock: Any) -> None:
        head = self.heads[conn]
        try:
            data = sock.recv(MAX_HEAD_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away
            self._drop(conn, head, None, "")
            return
        seen = len(head.buf)
        head.buf += data
        if head_complete(head.buf, seen):
            self._to_pool(conn, head)
        elif len(head.buf) >= MAX_HEAD_BYTES:
            self._drop(conn, head, TOO_LARGE, "headers too large")

    def _to_pool(self, conn: Any, head: _Head) -> None:
        self._forget(conn, head)
        conn.sock.setblocking(True)
        conn.init()  # the parser, in this thread: plain HTTP/1, nothing here blocks
        conn.parser.unreader.unread(bytes(head.buf))
        conn.data_ready = True  # gunicorn's handle() must not wait for the socket again
        super().enqueue_req(conn)

    def _forget(self, conn: Any, head: _Head) -> None:
        del self.heads[conn]
        self.waiting.leave(head.client)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    def _drop(self, conn: Any, head: _Head | None, answer: bytes | None, reason: str) -> None:
        """Close a connection that never got its request to the pool, with ``answer`` sent
        first if the socket takes it at once."""
        if head is not None:
            self._forget(conn, head)
        if answer is not None:
            self.refusals.add(reason, client_key(conn.client))
            try:
                conn.sock.setblocking(False)
                conn.sock.send(answer)
            except OSError:
                pass
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """gunicorn's pending sweep (run each loop turn), and then the heads past their
        deadline; once the worker is stopping, heads not begun are closed at once."""
        super().murder_pending()
        now = time.monotonic()
        stopping = not self.alive
        for conn, head in list(self.heads.items()):
            if now >= head.deadline:
                self._drop(conn, head, TIMED_OUT if head.buf else None,
                           "header_timeout_s passed")
            elif stopping and not head.buf:
                self._drop(conn, head, None, "")
            elif not stopping:
                break  # the rest have later deadlines
