"""TailSession: one WebSocket, from admission to the last frame, run on the socket's handler thread.

It asks the pool for a Viewer (served by a shared feed or a thread of its own), then sleeps on
one Event that both the socket's reader (inbound frame, peer gone) and the Outbox (records
queued, close requested) set. Each wake it reads control frames, sends everything queued, and
leaves when the socket or the tail ends.

The feed's thread writes to this socket too, deliberately: while the session has nothing queued
or in flight, the Outbox hands a batch to its ``writer``, the non-blocking write this session
gives it (``WebSocket.try_send_batch``), so a shared feed's 200 viewers cost 200 non-blocking
writes per poll, not 200 thread wake-ups; whatever the socket cannot take at once is left for
this thread to send. Whatever ends the session, ``finally`` releases the viewer; the pool joins
its thread if no one else uses it.
"""
from __future__ import annotations

import json
import logging
import threading

from simple_websocket import ConnectionClosed

from ..config import Config
from ..ops.threads import REGISTRY, name_pool_thread, rename
from ..tail import frames
from ..tail.outbox import Outbox
from ..tail.pool import ConsumerPool
from ..tail.records import Batch
from ..tail.request import BadRequest, RegexCharge, TailRequest, compile_matcher
from ..tail.viewer import Viewer
from .websocket import WebSocket

log = logging.getLogger(__name__)

# Every state change sets the Event, and the reaper's pass wakes a session whose thread ended
# without a word; this timeout only bounds a wake-up that was missed. Each one costs a timer and
# a switch per tail: at 10,000 tails, 33 wake-ups a second.
_WAKE_S = 300.0


class TailSession:
    def __init__(self, sock: WebSocket, pool: ConsumerPool, request: TailRequest, config: Config,
                 client: str, charge: RegexCharge | None = None) -> None:
        self.sock = sock
        self.pool = pool
        # The caller's account of regex overruns, which every regex this socket sets is charged to.
        self.charge = charge or RegexCharge()
        self.request = request
        self.client = client
        self.outbox = Outbox(config.outbox_max_records, config.outbox_full_policy,
                             notify=sock.wake, max_bytes=config.outbox_max_bytes,
                             budget=pool.outbox_bytes, writer=sock.try_send_batch,
                             abort=sock.abort)
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
                self.sock.close(refused)
                return
            rename(self.sock.reader, f"kt-ws-{viewer.tail_id}")
            REGISTRY.register(self.sock.reader, "websocket", owner=self.name,
                              topic=self.request.topic, client=self.client,
                              tail_id=viewer.tail_id)
            try:
                self._pump(viewer)
            finally:
                self.pool.release(viewer)
        finally:
            self._running = False
            self.sock.finish()

    def _pump(self, viewer: Viewer) -> None:
        sock, outbox = self.sock, self.outbox
        while True:
            sock.wait(_WAKE_S)
            if not sock.connected:
                return
            try:
                self._read_controls(viewer)
            except ConnectionClosed:
                return
            except Exception:  # a fault of ours: the client still gets a close frame
                log.exception("%s: a control frame failed", self.name)
                sock.close(frames.Close(frames.INTERNAL, "internal error"))
                return
            # Seen before the take, so whatever the thread queued before it ended is taken.
            ended = not viewer.is_alive() and not viewer.stopping
            out, ending = outbox.take()
            try:
                sock.flush()
                for frame in out:
                    if isinstance(frame, Batch):
                        if not sock.connected:
                            return
                        sock.send_batch(frame)
                    else:
                        sock.send(frame)
            except (ConnectionClosed, OSError):
                return
            finally:
                outbox.sent()
            if ending is not None:
                sock.close(ending)
                return
            if ended:
                sock.close(frames.Close(frames.INTERNAL, "tail ended unexpectedly"))
                return

    def _read_controls(self, viewer: Viewer) -> None:
        while (raw := self.sock.receive()) is not None:
            try:
                self._apply(viewer, raw)
            except BadRequest as exc:
                self.sock.send(frames.error(frames.BAD_REQUEST, str(exc)))

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
            substring, regex, where = msg.get("filter"), msg.get("regex"), msg.get("where")
            if not all(v is None or isinstance(v, str) for v in (substring, regex, where)):
                raise BadRequest("filter: filter, regex and where must be strings")
            viewer.set_matcher(compile_matcher(substring, regex, self.charge, where))
            self.sock.send(frames.status("filter", **viewer.matcher.describe()))
        else:
            raise BadRequest("control frame: op must be pause, resume or filter")
