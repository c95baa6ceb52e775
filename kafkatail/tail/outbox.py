"""The bounded hand-off between a ConsumerThread and one socket.

The consumer side never blocks: when the outbox holds ``max_records`` records, the full policy
decides. ``drop-oldest`` discards the oldest buffered records and remembers which offsets went,
so the client gets an explicit ``dropped`` frame; ``disconnect`` closes the slow client. The
socket side takes everything queued in one call and sends it as few frames as possible. A shared
feed puts the same Batch in many outboxes; a batch is only ever replaced here, never changed.

When nothing is queued and the socket side is not sending, ``put_records`` hands the batch to
``writer`` (the socket's non-blocking write, see ``wire``) instead of waking the socket's thread:
the order holds, since anything queued or being sent makes the batch queue behind it.
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


class Outbox:
    def __init__(self, max_records: int, policy: str = DROP_OLDEST,
                 notify: Callable[[], None] = lambda: None) -> None:
        self.max_records = max_records
        self.policy = policy
        self.notify = notify
        self.abort: Callable[[], None] = lambda: None
        self.writer: Callable[[Batch], bool | None] | None = None
        self._lock = threading.Lock()
        self._items: deque[str | Batch] = deque()
        self._records = 0
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
        self.notify()

    def put_records(self, batch: Batch | list[dict[str, Any]]) -> None:
        if not batch:
            return
        if not isinstance(batch, Batch):
            batch = Batch(batch)
        overflow = False
        with self._lock:
            if self._close is not None:
                return
            if (self.writer is not None and not self._items and not self._sending_since
                    and not self._dropped):
                written = self.writer(batch)
                if written is not False:
                    self.frames_direct += 1
                    if written is None:  # a part is left for the socket side to send
                        self._remainder = True
                        self.notify()
                    return
            self._items.append(batch)
            self._records += len(batch)
            if self._records * 2 >= self.max_records:
                self._drained.clear()
            if self._records > self.max_records:
                if self.policy == DISCONNECT:
                    self._close = frames.Close(frames.POLICY, "client too slow: outbox full")
                    overflow = True
                else:
                    self._drop_oldest(self._records - self.max_records)
        self.notify()
        if overflow:
            self.abort()

    def _drop_oldest(self, excess: int) -> None:
        items, ranges = self._items, self._dropped_ranges
        while excess > 0:
            i = next(i for i, item in enumerate(items) if isinstance(item, Batch))
            records = items[i].records
            cut = records[:excess]
            if len(cut) == len(records):
                del items[i]
            else:
                items[i] = Batch(records[excess:])
            for rec in cut:
                r = ranges.get(rec["partition"])
                if r is None:
                    ranges[rec["partition"]] = [rec["offset"], rec["offset"]]
                else:
                    r[1] = rec["offset"]
            excess -= len(cut)
            self._records -= len(cut)
            self._dropped += len(cut)
            self.dropped_total += len(cut)

    def close(self, code: int, reason: str) -> None:
        """Ask the socket side to send what is queued, then close with this code."""
        with self._lock:
            if self._close is None:
                self._close = frames.Close(code, reason)
        self.notify()

    def take(self) -> tuple[list[str | Batch], frames.Close | None]:
        """Everything queued, as encoded frames (a lone Batch as itself: a feed's viewers share
        its framing), and the close to send after them (if any). Until ``sent()``, the socket
        side counts as sending, so nothing is written past what it took."""
        with self._lock:
            items, self._items = self._items, deque()
            self._records = 0
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
        """Half the cap or more is queued: the socket is not keeping up."""
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
            self.abort()
            return True
        return False
