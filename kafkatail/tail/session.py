"""TailSession: one WebSocket, from admission to the last frame, run on the socket's handler thread.

It asks the pool for a Viewer (served by a shared feed or a thread of its own), then sleeps on
one Event that both the socket reader (inbound frame, peer gone) and the Outbox (records queued,
close requested) set. Each wake it reads control frames, sends everything queued, and leaves
when the socket or the tail ends. While it has nothing to send, the ConsumerThread writes records
to the socket itself (``Wire.try_send``): a shared feed's 200 viewers cost 200 non-blocking
writes per poll, not 200 thread wake-ups. Whatever ends it, ``finally`` releases the viewer; the pool
joins its thread if no one else uses it.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
from typing import Any

from simple_websocket import ConnectionClosed

from ..config import Config
from ..ops.threads import REGISTRY, name_pool_thread, rename
from . import frames
from .outbox import Outbox
from .pool import ConsumerPool
from .records import Batch
from .request import BadRequest, RegexCharge, TailRequest, compile_matcher
from .viewer import Viewer
from .wire import Wire, negotiated_deflate

log = logging.getLogger(__name__)

# The Event wait is only a safety net: every state change sets it.
_WAKE_S = 5.0
# How long to wait for the peer's close reply before cutting the connection.
_CLOSE_WAIT_S = 1.0


class TailSession:
    def __init__(self, ws: Any, pool: ConsumerPool, request: TailRequest, config: Config,
                 client: str, charge: RegexCharge | None = None) -> None:
        self.ws = ws
        self.pool = pool
        # The caller's account of regex overruns, which every regex this socket sets is charged to.
        self.charge = charge or RegexCharge()
        self.request = request
        self.config = config
        self.client = client
        self.wire = ws.sock = Wire(ws.sock, negotiated_deflate(ws))
        self.outbox = Outbox(config.outbox_max_records, config.outbox_full_policy,
                             notify=ws.event.set, max_bytes=config.outbox_max_bytes,
                             budget=pool.outbox_bytes)
        self.outbox.abort = self.abort
        self.outbox.writer = self._write
        self._handler = threading.current_thread()
        self._running = False

    @property
    def name(self) -> str:
        return self._handler.name

    def is_alive(self) -> bool:
        """The pool's owner check: this session still runs on a live handler thread."""
        return self._running and self._handler.is_alive()

    def run(self) -> None:
        self._running = True
        # A host app's own gthread pool: kafkatail serve names its pool threads as they start.
        name_pool_thread(self._handler)
        try:
            try:
                viewer = self.pool.open(self.request, self.outbox, self.client, owner=self)
            except frames.Close as refused:
                send_close(self.ws, refused)
                return
            rename(self.ws.thread, f"kt-ws-{viewer.tail_id}")
            REGISTRY.register(self.ws.thread, "websocket", owner=self.name,
                              topic=self.request.topic, client=self.client,
                              tail_id=viewer.tail_id)
            try:
                self._pump(viewer)
            finally:
                self.pool.release(viewer)
        finally:
            self._running = False
            finish(self.ws)

    def _pump(self, viewer: Viewer) -> None:
        ws, wire, outbox, event = self.ws, self.wire, self.outbox, self.ws.event
        while True:
            event.wait(_WAKE_S)
            event.clear()
            if not ws.connected:
                return
            try:
                self._read_controls(viewer)
            except ConnectionClosed:
                return
            except Exception:  # a fault of ours: the client still gets a close frame
                log.exception("%s: a control frame failed", self.name)
                send_close(self.ws, frames.Close(frames.INTERNAL, "internal error"))
                return
            # Seen before the take, so whatever the thread queued before it ended is taken.
            ended = not viewer.is_alive() and not viewer.stopping
            out, ending = outbox.take()
            try:
                wire.flush()
                for frame in out:
                    if isinstance(frame, Batch):
                        if not ws.connected:
                            return
                        wire.send(frame.frame(wire))
                    else:
                        ws.send(frame)
            except (ConnectionClosed, OSError):
                return
            finally:
                outbox.sent()
            if ending is not None:
                send_close(self.ws, ending)
                return
            if ended:
                send_close(self.ws, frames.Close(frames.INTERNAL, "tail ended unexpectedly"))
                return

    def _read_controls(self, viewer: Viewer) -> None:
        while (raw := self.ws.receive(timeout=0)) is not None:
            try:
                self._apply(viewer, raw)
            except BadRequest as exc:
                self.ws.send(frames.error(frames.BAD_REQUEST, str(exc)))

    def _apply(self, viewer: Viewer, raw: str | bytes) -> None:
        try:
            msg = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("control frame: not JSON") from None
        except RecursionError:  # thousands of [ or {: the decoder recurses once per level
            raise BadRequest("control frame: nested too deeply") from None
        op = msg.get("op") if isinstance(msg, dict) else None
        if op == "pause":
            self.pool.set_paused(viewer, True)
        elif op == "resume":
            self.pool.set_paused(viewer, False)
        elif op == "filter":
            substring, regex = msg.get("filter"), msg.get("regex")
            if not all(v is None or isinstance(v, str) for v in (substring, regex)):
                raise BadRequest("filter: filter and regex must be strings")
            viewer.set_matcher(compile_matcher(substring, regex, self.charge))
            self.ws.send(frames.status("filter", **viewer.matcher.describe()))
        else:
            raise BadRequest("control frame: op must be pause, resume or filter")

    def _write(self, batch: Batch) -> bool | None:
        """The outbox's writer: the feed's thread writes the shared frame itself, if it can."""
        return self.ws.connected and self.wire.try_send(batch.frame(self.wire))

    def abort(self) -> None:
        abort(self.ws)


def send_close(ws: Any, close: frames.Close) -> None:
    """Send the close frame, preceded by an error frame unless it is a normal end or shutdown."""
    try:
        if close.code not in (frames.NORMAL, frames.GOING_AWAY):
            ws.send(frames.error(close.code, close.reason))
        ws.close(reason=close.code, message=close.reason)
    except (ConnectionClosed, OSError):
        pass


def abort(ws: Any) -> None:
    """Cut the connection from any thread: a send blocked on a stuck peer returns."""
    try:
        ws.sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    ws.event.set()


def finish(ws: Any) -> None:
    """Make sure simple-websocket's reader thread has ended before the handler returns."""
    reader = ws.thread
    reader.join(_CLOSE_WAIT_S)
    if reader.is_alive():
        abort(ws)
        reader.join(_CLOSE_WAIT_S)
    if reader.is_alive():
        log.warning("websocket reader %s did not end", reader.name)


def refuse(ws: Any, reason: frames.Close) -> None:
    """End a socket that never got a tail (bad request, no capacity)."""
    send_close(ws, reason)
    finish(ws)

