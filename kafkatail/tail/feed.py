"""Feed: one topic's records fanned out to its viewers. No thread, no socket.

A feed holds what its viewers share: the offsets read so far, the replay window (the last
records per partition, kept so a viewer that joins or resumes behind gets what it missed, with no
gap) and the greeting a new viewer gets. ``take`` puts a poll into the window under the feed's
lock and then delivers it outside that lock, under each viewer's own lock: a viewer's filter or
regex never holds up joining, pausing or leaving.

The ConsumerThread that reads for a feed calls ``position`` once its consumer is assigned, then
``take`` per poll; the pool calls ``adopt``, ``remove`` and ``set_paused``. A feed with a
replay window of zero serves one viewer (a dedicated tail); with one, every live viewer of the
same topic and partitions.
"""
from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import deque
from typing import Any

from ..config import Config
from . import clientconf, frames
from ..schemas.decoding import Schemas
from .masking import Masker
from .records import Batch, decode_batch, encode_batch, select
from .request import REGEX_BUDGET_S
from .viewer import Viewer

# How often a feed looks for viewers whose socket stopped taking (``check_stalls``).
STALL_CHECK_S = 1.0

_offset = lambda rec: rec.offset  # noqa: E731


class Feed:
    def __init__(self, topic: str, partitions: tuple[int, ...] | None, config: Config,
                 viewer: Viewer, replay: int, start: dict[int, int] | None = None,
                 schemas: Schemas | None = None, masker: Masker | None = None) -> None:
        self.topic = topic
        self.partitions = partitions
        self.config = config
        self.replay_records = replay
        self.schemas = schemas
        # The topic's [[mask]] rules; a viewer whose token says unmasked reads without them.
        self.masker = masker
        # Where a feed that continues a handed-over viewer starts (None: latest).
        self.start = start
        # Guards the viewers, positions and replay window: a poll enters the window under it,
        # and a viewer joins or resumes under it, so neither can slip between the other's steps.
        self.lock = threading.Lock()
        self.viewers: tuple[Viewer, ...] = (viewer,)
        # Viewers the end of the topic still means something to (not told "caught-up" yet, or
        # waiting for an ``until`` bound): what ``announce_caught_up`` visits, each poll at the end.
        self._unsettled: list[Viewer] = [viewer]
        self._stalls_checked = 0.0
        # The viewer the feed was opened for: a dedicated tail starts where it asked.
        self.origin = viewer
        self.positioned = False
        self.closed = False
        self.broker_down = False
        self.idle_since = 0.0
        self.next: dict[int, int] = {}
        self.end: dict[int, int] = {}
        self.earliest: dict[int, int] = {}
        self._floor: dict[int, int] = {}
        self._ring: dict[int, deque] = {}
        # Per partition, the time a start by timestamp asked for (see ``skip_early``).
        self.not_before: dict[int, int] = {}

    # -- viewers, from the pool ---------------------------------------------------------
    def adopt(self, viewer: Viewer) -> bool:
        """Take a viewer if it can continue here with no gap; False if the feed is closed or
        the viewer's cursor is older than the replay window. Raises Close while the feed
        cannot reach the broker: a new tail fails now rather than wait on the outage."""
        with self.lock:
            if self.closed:
                return False
            if self.broker_down:
                raise frames.Close(frames.TRY_AGAIN, "broker unavailable, try again later")
            if viewer.cursor is not None and not self._covers(viewer):
                return False
            self.viewers += (viewer,)
            self._unsettled.append(viewer)
            if self.positioned:
                with viewer.lock:
                    self._greet(viewer)
                    self._replay(viewer)
        return True

    def remove(self, viewer: Viewer) -> int:
        """Stop serving a viewer; returns how many are left."""
        with self.lock:
            self.viewers = tuple(v for v in self.viewers if v is not viewer)
            self._unsettled = [v for v in self._unsettled if v is not viewer]
            if not self.viewers:
                self.idle_since = time.monotonic()
            return len(self.viewers)

    def retire(self) -> bool:
        """Close a feed that has no viewers to new ones; False if someone joined meanwhile."""
        with self.lock:
            if self.viewers:
                return False
            self.closed = True
        return True

    def set_paused(self, viewer: Viewer, paused: bool) -> bool:
        """Pause or resume one viewer. False if a resumed viewer is further behind than the
        replay window, and so needs a feed of its own."""
        if not self.replay_records:
            viewer.paused = paused
            return True
        with self.lock, viewer.lock:
            if viewer.paused == paused:
                return True
            if not paused and not self._covers(viewer):
                return False
            viewer.paused = paused
            viewer.outbox.put_frame(frames.status("paused" if paused else "live"))
            if not paused:
                self._replay(viewer)
            return True

    # -- what the reading thread tells it ---------------------------------------------------
    def position(self, start: dict[int, int], earliest: dict[int, int],
                 end: dict[int, int]) -> None:
        """The consumer is assigned and seeked: greet every viewer from here."""
        with self.lock:
            self.next = dict(start)
            self.earliest = dict(earliest)
            self.end = dict(end)
            if self.replay_records:
                self._floor = dict(start)
                self._ring = {p: deque(maxlen=self.replay_records) for p in start}
            self.positioned = True
            for v in self.viewers:
                with v.lock:
                    self._greet(v)

    def take(self, polled: dict) -> None:
        """A poll into the replay window, then to each viewer of that moment. A viewer that
        joins or resumes meanwhile replays it from the window; its cursor drops duplicates."""
        with self.lock:
            viewers = self.viewers
            for tp, recs in polled.items():
                p = tp.partition
                self.next[p] = recs[-1].offset + 1
                ring = self._ring.get(p)
                if ring is not None:
                    ring.extend(recs)
                    if len(ring) == ring.maxlen:
                        self._floor[p] = ring[0].offset
        for tp, recs in polled.items():
            shared: dict[str, Any] = {}
            for v in viewers:
                with v.lock:
                    self._deliver(v, tp.partition, recs, shared)

    def pass_marker(self, partition: int, edge: int, position: int) -> None:
        """Records up to ``position`` hold nothing for a tail (transaction markers, aborted
        records): the edge, and every viewer standing at it, move there."""
        with self.lock:
            if self.next[partition] != edge:
                return
            for v in self.viewers:
                with v.lock:
                    if v.cursor is not None and v.cursor.get(partition) == edge:
                        v.cursor[partition] = position
            self.next[partition] = position

    def rewind(self) -> dict[int, int]:
        """A dedicated viewer resumes at its cursor (a poll that landed after its pause was not
        delivered): the positions to seek to."""
        with self.lock:
            if not self.viewers:
                return {}
            cursor = dict(self.viewers[0].cursor)
            self.next.update(cursor)
        return cursor

    def announce_caught_up(self, confirmed: bool) -> None:
        """The consumer is at the end: each viewer at it hears so once, and one that asked for
        ``until`` a time now past ends, once a fetch answer ``confirmed`` where the end is."""
        with self.lock:
            unsettled = []
            for v in self._unsettled:
                if v.paused or not all(v.cursor[p] >= n for p, n in self.next.items()):
                    unsettled.append(v)
                    continue
                if not v.caught_up:
                    v.caught_up = True
                    v.outbox.put_frame(frames.status("caught-up"))
                if v.request.until is not None and not v.done:
                    with v.lock:
                        self._check_until(v, at_end=confirmed)
                    if not v.done:
                        unsettled.append(v)
            self._unsettled = unsettled

    def _check_until(self, v: Viewer, at_end: bool) -> None:
        """Under the viewer's lock: end the tail with 1000 once every partition passed its
        ``until`` bound."""
        until = v.request.until
        if not until.passed(v.cursor, v.until_reached, at_end, int(time.time() * 1000)):
            return
        v.done = True
        v.outbox.put_frame(frames.status("end", reason="until reached"))
        v.outbox.close(frames.NORMAL, f"until {until.describe()} reached")

    def broadcast(self, frame: str) -> None:
        for v in self.viewers:
            v.outbox.put_frame(frame)

    def close_all(self, code: int, reason: str) -> None:
        with self.lock:
            self.closed = True
            viewers = self.viewers
        for v in viewers:
            v.outbox.close(code, reason)

    # -- questions ----------------------------------------------------------------------------
    def paused(self) -> bool:
        """Every viewer is paused or done: nothing to fetch for."""
        viewers = self.viewers
        return bool(viewers) and all(v.paused or v.done for v in viewers)

    def finished(self) -> bool:
        return not any(not v.done for v in self.viewers)

    def check_stalls(self) -> None:
        """A viewer whose socket has taken nothing for ``send_timeout_s`` gets no more. Looked
        at once a second, not every poll: it visits every viewer."""
        now = time.monotonic()
        if now - self._stalls_checked < STALL_CHECK_S:
            return
        self._stalls_checked = now
        for v in self.viewers:
            if not v.done and v.outbox.check_stall(self.config.send_timeout_s):
                v.done = True

    # -- under the locks ------------------------------------------------------------------
    def _greet(self, viewer: Viewer) -> None:
        """Under both locks, once positioned: a new viewer's hello, and its cursor if it has none;
        then, to any viewer, a ``dropped`` frame for what retention deleted before it read it."""
        wanted = viewer.cursor
        if wanted is None:
            start = viewer.request.start
            wanted = dict(start.offsets) if start.kind == "offsets" else {}
            viewer.cursor = dict(self.next)
        gaps = self._retention_gaps(viewer.cursor, wanted)
        greeted, viewer.greeted = viewer.greeted, True
        if not greeted:
            viewer.outbox.put_frame(frames.hello(
                self.topic,
                [{"partition": p, "start": viewer.cursor[p], "end": self.end[p],
                  "earliest": self.earliest[p]} for p in self.next],
                {**viewer.request.describe(),
                 "isolation": clientconf.security(self.config.kafka).isolation_level}))
        if gaps:
            viewer.outbox.put_frame(frames.dropped(
                sum(last - first + 1 for first, last in gaps.values()), gaps, reason="retention"))
        if not greeted and self.replay_records:
            viewer.outbox.put_frame(frames.status("live"))
        if viewer.request.until is not None and not viewer.done:
            self._check_until(viewer, at_end=False)

    def _retention_gaps(self, cursor: dict[int, int],
                        wanted: dict[int, int]) -> dict[int, list[int]]:
        """Per partition, the [first, last] offsets from ``wanted`` to just before the earliest
        one the broker still keeps; ``cursor`` moves past them."""
        gaps = {}
        for p, earliest in self.earliest.items():
            want = wanted.get(p)
            if want is not None and want < earliest:
                gaps[p] = [want, earliest - 1]
                cursor[p] = max(cursor[p], earliest)
        return gaps

    def _covers(self, viewer: Viewer) -> bool:
        """Under the lock: can the viewer continue from its cursor here with no gap?"""
        cursor = viewer.cursor
        if cursor is None:
            return True
        if not self.positioned and self.start is None:
            return False
        floor = self._floor if self.positioned else self.start
        return all(p in cursor and cursor[p] >= low for p, low in floor.items())

    def _replay(self, viewer: Viewer) -> None:
        """Under both locks: what the replay window holds past the viewer's cursor."""
        for p, ring in self._ring.items():
            if ring and ring[-1].offset >= viewer.cursor[p]:
                self._deliver(viewer, p, [r for r in ring if r.offset >= viewer.cursor[p]], {})

    def _deliver(self, v: Viewer, partition: int, recs: list, shared: dict) -> None:
        """Under the viewer's lock: one partition's records to one viewer, past its cursor.

        ``shared`` caches, per format, the whole poll decoded (filtered viewers select from
        it) and as one Batch (unfiltered viewers all send the same JSON).
        """
        if v.paused or v.done:
            return
        cursor = v.cursor[partition]
        whole = recs[0].offset >= cursor
        if not whole:
            if recs[-1].offset < cursor:
                return
            recs = recs[bisect_left(recs, cursor, key=_offset):]
        v.cursor[partition] = recs[-1].offset + 1
        if self.not_before:
            recs = self._skip_early(partition, recs)
            whole = False
        until = v.request.until
        if until is not None:
            kept, reached = until.cut(partition, recs)
            whole = whole and len(kept) == len(recs)
            recs = kept
            if reached:
                v.until_reached.add(partition)
        if recs:
            self._send(v, recs, whole, shared)
        if until is not None and not v.done:
            self._check_until(v, at_end=False)

    def _send(self, v: Viewer, recs: list, whole: bool, shared: dict) -> None:
        """Under the viewer's lock: encode, apply ``max``, and queue."""
        batch = self._batch(v, recs, whole, shared)
        if v.matcher.tripped:
            v.done = True
            v.outbox.close(frames.BAD_REQUEST, f"regex: over its {REGEX_BUDGET_S:g} s budget on "
                           "these records; use a simpler pattern")
            return
        if v.remaining is not None and len(batch) >= v.remaining:
            batch = Batch(batch.records[:v.remaining])
            v.done = True
        if v.remaining is not None:
            v.remaining -= len(batch)
        v.sent += len(batch)
        v.sent_bytes += batch.size
        v.outbox.put_records(batch)
        if v.done:
            v.outbox.put_frame(frames.status("end", reason="max reached"))
            v.outbox.close(frames.NORMAL, f"max {v.request.max_records} records reached")

    def _batch(self, v: Viewer, recs: list, whole: bool, shared: dict) -> Batch:
        """The records as this viewer sees them: encoded once per poll and format when the
        viewer takes the whole poll, selected by its filter from the shared decode if it has one."""
        fmt = v.request.format
        matcher = v.matcher
        max_bytes = self.config.max_value_bytes
        masker = None if v.request.unmasked else self.masker
        if not whole or (matcher.selective and len(self.viewers) == 1):
            return Batch(encode_batch(recs, fmt, matcher, max_bytes, self.schemas, masker))
        kind = fmt if masker is None else fmt + "/masked"
        decoded = shared.get(kind)
        if decoded is None:
            decoded = shared[kind] = decode_batch(recs, fmt, max_bytes, schemas=self.schemas,
                                                  masker=masker)
        if matcher.selective:
            return Batch(select(decoded, matcher))
        batch = shared.get(kind + "/all")
        if batch is None:
            batch = shared[kind + "/all"] = Batch(select(decoded, matcher))
        return batch

    def _skip_early(self, partition: int, recs: list) -> list:
        """Records before the first one at or after the start time (the broker's time lookup is
        a lower bound: Tansu answers offset 0 for any time), per partition."""
        ts = self.not_before.get(partition)
        if ts is None:
            return recs
        for i, rec in enumerate(recs):
            if rec.timestamp >= ts:
                del self.not_before[partition]
                return recs[i:]
        return []


class Gathering:
    """A shared feed delivers at most once every viewers / ``feed_writes_per_s`` seconds (at most
    ``feed_max_delay_ms``), so each viewer gets one socket write per delivery, not one per poll:
    with 200 viewers, the writes, not the fetches, are what costs CPU. A poll that comes at least
    that long after the last delivery goes out at once (a quiet topic's record waits for
    nothing); one that comes sooner is held, with any that follow, until that long after it, or
    until a poll's worth of records is held."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._held: dict[Any, list] = {}
        self._records = 0
        self._until = 0.0
        self._last = float("-inf")   # when the last delivery went

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def gather(self, polled: dict, delay: float) -> dict:
        """What to deliver now: ``polled`` itself when nothing is held and the last delivery is
        ``delay`` or more ago, else whatever is held once it is due or a poll's worth."""
        held = self._held
        now = time.monotonic()
        if not held:
            if not polled:
                return polled
            if now - self._last >= delay:
                self._last = now
                return polled
            self._until = self._last + delay
        for tp, recs in polled.items():
            if tp in held:
                held[tp].extend(recs)
            else:
                held[tp] = list(recs)
            self._records += len(recs)
        if self._records < self.config.max_poll_records and now < self._until:
            return {}
        self._held, self._records, self._last = {}, 0, now
        return held

    def poll_ms(self, poll_ms: int) -> int:
        """The poll timeout: shorter while records are held, so they go out on time."""
        if not self._held:
            return poll_ms
        return max(1, min(poll_ms, round((self._until - time.monotonic()) * 1000)))
