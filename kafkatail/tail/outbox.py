"""The bounded hand-off between a ConsumerThread and one socket.

The consumer side never blocks: when the outbox holds ``max_records`` records or ``max_bytes``
bytes, or every outbox of the process together holds its ``ByteBudget``, the full policy
decides. ``drop-oldest`` discards the oldest buffered records and remembers which offsets went,
so the client gets an explicit ``dropped`` frame; ``disconnect`` closes the slow client
(``abort``). The socket side takes everything queued in one call and sends it as few frames as
possible. A shared feed puts the same Batch in many outboxes; a batch is only ever replaced here,
never changed.

The consumer side does write to the socket, on the idle path, and on purpose: when nothing is
queued and the socket side is not sending, ``put_records`` hands the batch to ``writer`` (the
socket's non-blocking write, given by its session) instead of waking the socket's thread, so a
feed's 200 idle viewers cost 200 non-blocking writes per poll, not 200 thread wake-ups. The
order holds, since anything queued or being sent makes the batch queue behind it. The outbox
itself knows nothing of sockets: ``notify``, ``writer`` and ``abort`` are its only ways out.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable

from . import frames
from .records import Batch

DROP_OLDEST = "drop-oldest"
DISCONNECT = "disconnect"


class ByteBudget:
    """The record bytes every outbox of a process holds together, against one limit: clients
    that never read cost at most this much memory, however many there are."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.total += n

    def over(self) -> bool:
        return self.total > self.limit


class Outbox:
    """``notify()``: something was queued or a close asked for (wake the socket side).
    ``writer(batch)``: write it now without blocking; True if written, None if partly (the socket
    side finishes it), False if not (it is queued). ``abort()``: cut the socket, from any thread.
    """

    def __init__(self, max_records: int, policy: str = DROP_OLDEST, *,
                 notify: Callable[[], None] = lambda: None, max_bytes: int = 1 << 62,
                 budget: ByteBudget | None = None,
                 writer: Callable[[Batch], bool | None] | None = None,
                 abort: Callable[[], None] = lambda: None) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.budget = budget or ByteBudget(1 << 62)
        self.policy = policy
        self._notify = notify
        self._writer = writer
        self._abort = abort
        self._lock = threading.Lock()
        self._items: deque[str | Batch] = deque()
        self._records = 0
        self._bytes = 0
        self._dropped = 0
        self._dropped_ranges: dict[int, list[int]] = {}
        self._close: frames.Close | None = None
        self._sending_since = 0.0
        self._remainder = False
        # Set while the backlog is under half the cap: a dedicated tail waits on it (see below).
        self._drained = threading.Event()
        self._drained.set()
        self.dropped_total = 0
        # Record frames written by the producing thread itself, and by the socket's thread.
        self.frames_direct = 0
        self.frames_queued = 0

    def put_frame(self, frame: str) -> None:
        """A control frame (hello, status): never dropped, order kept with records."""
        with self._lock:
            self._items.append(frame)
        self._notify()

    def put_records(self, batch: Batch) -> None:
        if not batch:
            return
        overflow = False
        with self._lock:
            if self._close is not None:
                return
            if (self._writer is not None and not self._items and not self._sending_since
                    and not self._dropped):
                written = self._writer(batch)
                if written is not False:
                    self.frames_direct += 1
                    if written is None:  # a part is left for the socket side to send
                        self._remainder = True
                        self._notify()
                    return
            # A producer that waits while behind (a dedicated tail) may overshoot the byte
            # caps by one poll, never more: only a put made while behind is cut for bytes.
            was_behind = self._behind()
            self._items.append(batch)
            self._records += len(batch)
            self._bytes += batch.size
            self.budget.add(batch.size)
            if self._behind():
                self._drained.clear()
            if self._records > self.max_records or (was_behind and self._over_bytes()):
                if self.policy == DISCONNECT:
                    self._close = frames.Close(frames.POLICY, "client too slow: outbox full")
                    overflow = True
                else:
                    self._drop_oldest()
        self._notify()
        if overflow:
            self._abort()

    def _behind(self) -> bool:
        """Under the lock: half a cap or more is queued, or the process is over its budget."""
        return (self._records * 2 >= self.max_records or self._bytes * 2 >= self.max_bytes
                or (self._bytes > 0 and self.budget.over()))

    def _over_bytes(self) -> bool:
        return self._bytes > self.max_bytes or (self._bytes > 0 and self.budget.over())

    def _drop_oldest(self) -> None:
        """Under the lock: drop the oldest records until under the caps, noting their offsets."""
        items, ranges = self._items, self._dropped_ranges
        while self._records > self.max_records or self._over_bytes():
            i = next(i for i, item in enumerate(items) if isinstance(item, Batch))
            batch = items[i]
            excess = self._records - self.max_records
            if excess <= 0:
                excess = _records_over(batch.records, max(self._bytes - self.max_bytes,
                                                          self.budget.total - self.budget.limit))
            cut = batch.records[:excess]
            if len(cut) == len(batch):
                del items[i]
            else:
                items[i] = Batch(batch.records[excess:])
            for rec in cut:
                r = ranges.get(rec["partition"])
                if r is None:
                    ranges[rec["partition"]] = [rec["offset"], rec["offset"]]
                else:
                    r[1] = rec["offset"]
            size = batch.size - (items[i].size if len(cut) < len(batch) else 0)
            self._bytes -= size
            self.budget.add(-size)
            self._records -= len(cut)
            self._dropped += len(cut)
            self.dropped_total += len(cut)

    def wake(self) -> None:
        """Have the socket side look again (its tail may have ended)."""
        self._notify()

    def close(self, code: int, reason: str) -> None:
        """Ask the socket side to send what is queued, then close with this code."""
        with self._lock:
            if self._close is None:
                self._close = frames.Close(code, reason)
        self._notify()

    def discard(self) -> None:
        """The socket is gone: drop what is queued, give its bytes back, take nothing more."""
        with self._lock:
            if self._close is None:
                self._close = frames.Close(frames.GOING_AWAY, "released")
            self._items.clear()
            self.budget.add(-self._bytes)
            self._records = self._bytes = 0
        self._drained.set()

    def take(self) -> tuple[list[str | Batch], frames.Close | None]:
        """Everything queued, as encoded frames (a lone Batch as itself: a feed's viewers share
        its framing), and the close to send after them (if any). Until ``sent()``, the socket
        side counts as sending, so nothing is written past what it took."""
        with self._lock:
            items, self._items = self._items, deque()
            self._records = 0
            self.budget.add(-self._bytes)
            self._bytes = 0
            self._drained.set()
            dropped, ranges = self._dropped, self._dropped_ranges
            self._dropped, self._dropped_ranges = 0, {}
            close = self._close
            if items or dropped or self._remainder:
                self._sending_since = time.monotonic()
                self._remainder = False
        out: list[str | Batch] = [frames.dropped(dropped, ranges)] if dropped else []
        run: list[Batch] = []
        for item in items:
            if isinstance(item, Batch):
                run.append(item)
                continue
            self._end_run(run, out)
            out.append(item)
        self._end_run(run, out)
        return out, close

    def _end_run(self, run: list[Batch], out: list[str | Batch]) -> None:
        if run:
            out.append(run[0] if len(run) == 1 else
                       frames.messages_joined([batch.json() for batch in run]))
            self.frames_queued += 1
            run.clear()

    def sent(self) -> None:
        """The socket side has sent what it took."""
        with self._lock:
            self._sending_since = 0.0

    def behind(self) -> bool:
        """Half a cap or more is queued: the socket is not keeping up."""
        return not self._drained.is_set()

    def wait_drained(self, timeout: float) -> bool:
        """For a producer that can wait instead of dropping: until the socket side took the
        backlog, or ``timeout``."""
        return self._drained.wait(timeout)

    def check_stall(self, timeout: float) -> bool:
        """Called from the consumer side: abort the socket if one send has hung too long."""
        since = self._sending_since
        if since and time.monotonic() - since > timeout:
            self.close(frames.POLICY, f"client did not read for {timeout:g}s")
            self._abort()
            return True
        return False


def _records_over(records: list[dict[str, Any]], excess_bytes: int) -> int:
    """How many of the first records to drop to free ``excess_bytes`` (at least one)."""
    n = freed = 0
    for rec in records:
        n += 1
        freed += rec["size"]
        if freed >= excess_bytes:
            break
    return n
