"""Viewer: one socket's tail, whichever ConsumerThread serves it.

A viewer owns what is personal to one socket: its request, filter, pause state, record budget,
outbox and cursor (the next offset it should see, per partition). The ConsumerThread serving
it may change: a historical tail reads on a thread of its own, then joins the topic's shared
feed when it catches up; a viewer resumed too far behind its feed gets its own thread again.
The cursor is what makes those moves lossless.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from .outbox import Outbox
from .request import Matcher, TailRequest


class Viewer:
    def __init__(self, request: TailRequest, outbox: Outbox, tail_id: int, client: str,
                 owner: Any) -> None:
        self.request = request
        self.outbox = outbox
        self.tail_id = tail_id
        self.client = client
        # The session that opened this tail and must release it; if it dies first, the reaper does.
        self.owner = owner
        self.matcher: Matcher = request.matcher
        self.remaining = request.max_records
        self.paused = False
        self.cursor: dict[int, int] | None = None
        # Held while records are delivered to it (its filter runs) or its cursor moves.
        self.lock = threading.Lock()
        # The ConsumerThread serving it; only the pool writes this.
        self.thread: Any = None
        self.greeted = False
        self.caught_up = False
        # Partitions that reached the request's ``until`` bound.
        self.until_reached: set[int] = set()
        # Set when the budget is spent or the socket stalled: nothing more is delivered.
        self.done = False
        self.released = False
        self.sent = 0
        self.sent_bytes = 0
        self.started_at = time.monotonic()

    # -- control, called from the socket side (pausing goes through the pool) -------------
    def set_matcher(self, matcher: Matcher) -> None:
        self.matcher = matcher

    # -- what the session, the reaper and /debug ask -------------------------------------
    def is_alive(self) -> bool:
        """Something still serves this viewer (a thread, or one it is being handed to)."""
        thread = self.thread
        return thread is not None and (thread.is_alive() or not thread.started)

    @property
    def stopping(self) -> bool:
        return self.released

    @property
    def name(self) -> str:
        thread = self.thread
        return thread.name if thread is not None else f"kt-viewer-{self.tail_id}"

    @property
    def native_id(self) -> int | None:
        thread = self.thread
        return thread.native_id if thread is not None else None

    @property
    def ident(self) -> int | None:
        thread = self.thread
        return thread.ident if thread is not None else None

    @property
    def state(self) -> str:
        thread = self.thread
        if thread is None or self.released:
            return "stopped"
        if self.paused:
            return "paused"
        return "live" if thread.state == "paused" else thread.state

    def describe(self) -> dict[str, Any]:
        thread = self.thread
        return {"id": self.tail_id, "name": self.name, "topic": self.request.topic,
                "client": self.client, "native_id": self.native_id, "alive": self.is_alive(),
                "shared": bool(thread and thread.shared), "state": self.state,
                "stopping": self.stopping, "sent": self.sent, "dropped": self.outbox.dropped_total,
                "age_s": round(time.monotonic() - self.started_at, 3)}
