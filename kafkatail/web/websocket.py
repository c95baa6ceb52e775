"""WebSocket: one accepted socket as kafkatail uses it, built whole around simple-websocket's.

Flask-Sock accepts the connection, hands the route a ``simple_websocket.Server`` and, once the
route returns, ends the request the way the server needs (gthread, gevent and werkzeug each
differ): kafkatail keeps that, and wraps the socket it is given. The constructor does all of it:

- every byte simple-websocket writes (its frames and close) goes through a ``Wire``, so it is
  written whole and in order with the frames a feed shares (see ``wire``);
- simple-websocket runs no ping timer: the process's one ``Pinger`` calls ``ping`` (see ``pings``);
- the session sleeps on one Event: simple-websocket's reader sets it when a message arrives or
  the peer goes, and the outbox sets it through ``wake``;
- inbound control frames are capped: beyond the token bucket, close 1008 with the reason.

The rest is ending a socket: ``close`` (an error frame first unless the end is normal),
``abort`` (from any thread) and ``finish`` (simple-websocket's reader joined).
"""
from __future__ import annotations

import logging
import socket
import threading

from simple_websocket import ConnectionClosed, Server

from ..security.limits import TokenBucket
from ..tail import frames
from ..tail.records import Batch
from .pings import PING, PING_TIMEOUT, Pinger
from .wire import Wire, negotiated_deflate

log = logging.getLogger(__name__)

# How long to wait for the peer's close reply before cutting the connection.
_CLOSE_WAIT_S = 1.0


class WebSocket:
    def __init__(self, ws: Server, controls: TokenBucket, pinger: Pinger | None = None) -> None:
        self._ws = ws
        # ``sock`` is what simple-websocket writes with (and its reader thread reads and closes):
        # swapped once, here, before anything but the handshake's answer was written.
        self.wire = ws.sock = Wire(ws.sock, negotiated_deflate(ws.ws))
        # simple-websocket's reader sets ``event`` on an inbound message and when the peer goes
        # (its ``receive`` waits on it); setting it too, the outbox wakes the same sleeper.
        self._event = ws.event
        self.reader: threading.Thread = ws.thread
        self._controls = controls
        # simple-websocket is given no ping interval: the process's one Pinger calls ``ping``.
        self._pinger = pinger
        if pinger is not None:
            pinger.add(self)

    @property
    def connected(self) -> bool:
        return self._ws.connected

    def wait(self, timeout: float) -> None:
        """Sleep until something happened (a message, the peer gone, ``wake``) or ``timeout``."""
        self._event.wait(timeout)
        self._event.clear()

    def wake(self) -> None:
        self._event.set()

    def receive(self) -> str | bytes | None:
        """The next inbound message without waiting, None if there is none. Beyond the control
        frame rate the socket is closed (1008) and ConnectionClosed raised, as for a peer gone."""
        ws = self._ws
        # What simple-websocket's receive(timeout=0) would answer, without its Event wait: under
        # gevent even a zero wait is a round trip through the hub, once per wake of every socket.
        if not ws.input_buffer:
            if not ws.connected:
                raise ConnectionClosed(ws.close_reason, ws.close_message)
            return None
        raw = ws.input_buffer.pop(0)
        if not self._controls.take():
            self.close(frames.Close(frames.POLICY,
                                    f"more than {self._controls.rate:g} control frames a second"))
            raise ConnectionClosed(frames.POLICY, "control frame rate")
        return raw

    def send(self, text: str) -> None:
        """A control frame (hello, status, error), framed by simple-websocket."""
        self._ws.send(text)

    def send_batch(self, batch: Batch) -> None:
        """A batch's shared frame, blocking until written (the session's thread)."""
        self.wire.send(batch.frame(self.wire))

    def try_send_batch(self, batch: Batch) -> bool | None:
        """A batch's shared frame, written without blocking by the feed's thread if the socket
        is idle: the outbox's ``writer`` (see ``Wire.try_send`` for the answers)."""
        return self._ws.connected and self.wire.try_send(batch.frame(self.wire))

    def flush(self) -> None:
        """Send what a non-blocking write left (the session's thread)."""
        self.wire.flush()

    def ping(self) -> bool | None:
        """One round of the keep-alive, from the Pinger: None once the socket is gone, or when
        the peer did not answer the previous ping (then it is sent 1008 if it can take it at
        once, and cut); otherwise whether a ping was written (not if the socket was busy)."""
        ws = self._ws
        if not ws.connected:
            return None
        if not ws.pong_received:
            self.wire.try_send(PING_TIMEOUT)
            self.abort()
            return None
        ws.pong_received = False
        # A socket with a timeout of its own cannot be written without waiting; a send on it
        # waits at most that long.
        try:
            written = (self.wire.try_send(PING) if self.wire.nonblocking
                       else bool(self.wire.send(PING)))
        except OSError:
            return None  # the peer is gone: its reader says so to the session
        if written is False:
            ws.pong_received = True  # not pinged: not judged at the next round either
            return False
        if written is None:
            self.wake()  # the session sends what the socket did not take
        return True

    def close(self, ending: frames.Close) -> None:
        """Send the close frame, preceded by an error frame unless it is a normal end or
        shutdown."""
        try:
            if ending.code not in (frames.NORMAL, frames.GOING_AWAY):
                self._ws.send(frames.error(ending.code, ending.reason))
            self._ws.close(reason=ending.code, message=ending.reason)
        except (ConnectionClosed, OSError):
            pass

    def abort(self) -> None:
        """Cut the connection from any thread: a send blocked on a stuck peer returns."""
        try:
            self.wire.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._event.set()

    def finish(self) -> None:
        """Make sure simple-websocket's reader thread has ended before the handler returns."""
        if self._pinger is not None:
            self._pinger.discard(self)
        reader = self.reader
        reader.join(_CLOSE_WAIT_S)
        if reader.is_alive():
            self.abort()
            reader.join(_CLOSE_WAIT_S)
        if reader.is_alive():
            log.warning("websocket reader %s did not end", reader.name)

    def refuse(self, ending: frames.Close) -> None:
        """End a socket that never got a tail (bad request, no capacity)."""
        self.close(ending)
        self.finish()
