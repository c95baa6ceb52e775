"""ConsumerThread: one Kafka consumer, polled with a timeout until its stop Event is set.

This is the fix for the original outage (a thread per page view looping ``for msg in consumer``
forever): the loop waits at most ``poll_timeout_ms`` per turn, checks the stop Event every turn,
and closes its own consumer (and with it kafka-python's ``kafka-io-*`` thread, or librdkafka's
``rdk:*`` native threads) in ``finally``. The consumer is a ``backend`` (``consumer_backend``).
It never touches a socket: each poll goes to its viewers' bounded Outboxes.

A thread is either *dedicated* (one viewer, any start: it hands the viewer to the shared feed
once caught up) or *shared*, a feed: every live viewer of the same topic and partitions, so
200 viewers cost one fetch stream. A feed keeps the last records per partition (the replay
window) so a viewer that joins or resumes behind it gets what it missed, with no gap. With many
viewers a feed gathers polls for a few milliseconds (``feed_writes_per_s``) so each viewer gets
one socket write per gathering, not one per poll.
"""
from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from collections import deque
from typing import TYPE_CHECKING, Any

from kafka import TopicPartition

from ..config import Config
from ..ops.threads import set_native_name
from . import clientconf, frames
from .backend import (BrokerUnavailable, TopicDenied, open_backend,  # noqa: F401 (re-exported)
                      open_consumer)
from .failures import FAILURES, UndecodableBatch
from .records import Batch, decode_batch, encode_batch, select
from .request import REGEX_BUDGET_S
from .viewer import Viewer

if TYPE_CHECKING:
    from .backend import ConfluentBackend, KafkaPythonBackend
    from .pool import ConsumerPool

    Consumer = KafkaPythonBackend | ConfluentBackend
else:
    Consumer = Any

log = logging.getLogger(__name__)


_offset = lambda rec: rec.offset  # noqa: E731


class ConsumerThread(threading.Thread):
    """Reads one topic's partitions for its viewers; owned, started and joined by the pool."""

    def __init__(self, pool: ConsumerPool, topic: str, partitions: tuple[int, ...] | None,
                 config: Config, thread_id: int, shared: bool,
                 viewer: Viewer, start: dict[int, int] | None = None) -> None:
        kind = "feed" if shared else "tail"
        super().__init__(name=f"kt-{kind}-{topic}-{thread_id}", daemon=True)
        self.pool = pool
        self.topic = topic
        self.partitions = partitions
        self.key = (topic, partitions)
        self.config = config
        self.thread_id = thread_id
        self.shared = shared
        self.client_id = f"kt-{kind}-{thread_id}" if shared else f"kt-{thread_id}"
        self.started_at = time.monotonic()
        self.state = "starting"
        self._start = start
        self._stop_event = threading.Event()
        # Guards the viewers, positions and replay window: a poll enters the window under it,
        # and a viewer joins or resumes under it, so neither can slip between the other's
        # steps. Delivery runs viewers' filters, so it happens outside it, under each viewer's
        # own lock: joining, pausing and leaving (and, through the pool's lock, admission and
        # health checks) never wait for someone's regex.
        self._lock = threading.Lock()
        self._viewers: tuple[Viewer, ...] = (viewer,)
        # A dedicated thread starts where its viewer asked; kept so a quick release cannot race it.
        self._origin = viewer
        viewer.thread = self
        self._positioned = False
        self._closed = False
        self._idle_since = 0.0
        self._next: dict[int, int] = {}
        self._floor: dict[int, int] = {}
        self._ring: dict[int, deque] = {}
        self._not_before: dict[int, int] = {}
        self._end: dict[int, int] = {}
        self._earliest: dict[int, int] = {}
        self._paused = False
        self._held: dict[TopicPartition, list] = {}
        self._held_records = 0
        self._held_until = 0.0

    # -- control, from the pool and the sockets -------------------------------------------
    def stop(self) -> None:
        self._stop_event.set()

    @property
    def stopping(self) -> bool:
        return self._stop_event.is_set()

    @property
    def started(self) -> bool:
        return self._started.is_set()  # type: ignore[attr-defined]

    def viewers(self) -> tuple[Viewer, ...]:
        return self._viewers

    def adopt(self, viewer: Viewer) -> bool:
        """Take a viewer if it can continue here with no gap; False if the feed is closing or
        the viewer's cursor is older than the replay window. Raises Close while the feed
        cannot reach the broker: a new tail fails now rather than wait on the outage."""
        with self._lock:
            if self.closed:
                return False
            if self.state == "broker-unavailable":
                raise frames.Close(frames.TRY_AGAIN, "broker unavailable, try again later")
            if viewer.cursor is not None and not self._covers(viewer):
                return False
            self._viewers += (viewer,)
            viewer.thread = self
            if self._positioned:
                with viewer.lock:
                    self._greet(viewer)
                    self._replay(viewer)
        return True

    def remove(self, viewer: Viewer) -> int:
        """Stop serving a viewer; returns how many are left."""
        with self._lock:
            self._viewers = tuple(v for v in self._viewers if v is not viewer)
            if not self._viewers:
                self._idle_since = time.monotonic()
            return len(self._viewers)

    def retire(self) -> bool:
        """Close a feed that has no viewers to new ones; False if someone joined meanwhile."""
        with self._lock:
            if self._viewers:
                return False
            self._closed = True
        self.stop()
        return True

    @property
    def closed(self) -> bool:
        """Takes no more viewers (failed, retired or stopping)."""
        return self._closed or self._stop_event.is_set()

    def set_paused(self, viewer: Viewer, paused: bool) -> bool:
        """Pause or resume one viewer (the pool calls this under its lock). False if a resumed
        viewer is further behind than the replay window, and so needs a thread of its own."""
        if not self.shared:
            viewer.paused = paused
            return True
        with self._lock, viewer.lock:
            if viewer.paused == paused:
                return True
            if not paused and not self._covers(viewer):
                return False
            viewer.paused = paused
            viewer.outbox.put_frame(frames.status("paused" if paused else "live"))
            if not paused:
                self._replay(viewer)
            return True

    # -- the thread ------------------------------------------------------------------------
    def run(self) -> None:
        set_native_name(self.name)
        consumer = None
        try:
            origin = self._origin
            consumer = open_backend(self.config, self.client_id, topic=self.topic,
                                    client="" if self.shared else origin.client,
                                    tail_id=None if self.shared else origin.tail_id)
            tps = self._assign(consumer)
            self._loop(consumer, tps)
        except frames.Close as close:
            self._close_all(close.code, close.reason)
        except BrokerUnavailable as exc:
            self._broadcast(frames.status("broker-unavailable", reason=str(exc)))
            self._close_all(frames.TRY_AGAIN, str(exc))
        except TopicDenied as exc:
            reason = FAILURES.denied(exc.topic, clientconf.security(self.config.kafka).describe())
            self._broadcast(frames.status("denied", reason=reason))
            self._close_all(frames.FORBIDDEN, reason)
        except Exception:
            log.exception("%s on %s failed", self.name, self.topic)
            self._close_all(frames.INTERNAL, "internal error")
        finally:
            self.state = "closing"
            if consumer is not None:
                consumer.close(timeout_ms=self.config.poll_timeout_ms)
            self.state = "stopped"

    def _close_all(self, code: int, reason: str) -> None:
        with self._lock:
            self._closed = True
            viewers = self._viewers
        for v in viewers:
            v.outbox.close(code, reason)

    def _broadcast(self, frame: str) -> None:
        for v in self._viewers:
            v.outbox.put_frame(frame)

    def _assign(self, consumer: Consumer) -> list[TopicPartition]:
        available = consumer.partitions_for_topic(self.topic)
        if not available:
            raise frames.Close(frames.NOT_FOUND, f"unknown topic {self.topic}")
        wanted = self.partitions or tuple(sorted(available))
        missing = [p for p in wanted if p not in available]
        if missing:
            raise frames.Close(frames.BAD_REQUEST,
                               f"partitions: {self.topic} has no partition {missing[0]}")
        tps = [TopicPartition(self.topic, p) for p in wanted]
        consumer.assign(tps)
        timeout = self.config.request_timeout_ms
        # Lookups that time out raise BrokerUnavailable.
        earliest = consumer.beginning_offsets(tps, timeout_ms=timeout)
        latest = consumer.end_offsets(tps, timeout_ms=timeout)
        starts = self._start_offsets(consumer, tps, earliest, latest, timeout)
        for tp in tps:
            consumer.seek(tp, starts[tp])
        replay = self.config.feed_replay_records
        with self._lock:
            self._next = {tp.partition: starts[tp] for tp in tps}
            self._earliest = {tp.partition: earliest[tp] for tp in tps}
            self._end = {tp.partition: latest[tp] for tp in tps}
            if self.shared:
                self._floor = dict(self._next)
                self._ring = {tp.partition: deque(maxlen=replay) for tp in tps}
            self._positioned = True
            for v in self._viewers:
                with v.lock:
                    self._greet(v)
        return tps

    def _start_offsets(self, consumer: Consumer, tps: list[TopicPartition],
                       earliest: dict, latest: dict, timeout: int) -> dict[TopicPartition, int]:
        viewer = self._origin
        cursor = self._start if self.shared else viewer.cursor
        # Starts below the earliest offset are clamped to it here and reported by _greet.
        if cursor is not None:
            return {tp: max(cursor.get(tp.partition, latest[tp]), earliest[tp]) for tp in tps}
        if self.shared:
            return dict(latest)
        start = viewer.request.start
        if start.kind == "earliest":
            return dict(earliest)
        if start.kind == "last":
            return {tp: max(earliest[tp], latest[tp] - start.last) for tp in tps}
        if start.kind == "time":
            # The broker's time lookup is a lower bound (Tansu answers offset 0 for any time):
            # records before the first one at/after the time are skipped here, per partition.
            self._not_before = {tp.partition: start.timestamp_ms for tp in tps}
            found = consumer.offsets_for_times({tp: start.timestamp_ms for tp in tps},
                                               timeout_ms=timeout)
            return {tp: found[tp].offset if found.get(tp) else latest[tp] for tp in tps}
        if start.kind == "offsets":
            # Not capped at the end: past it, the fetch resets to latest (auto_offset_reset).
            return {tp: max(start.offsets.get(tp.partition, latest[tp]), earliest[tp])
                    for tp in tps}
        return dict(latest)

    def _greet(self, viewer: Viewer) -> None:
        """Under both locks, once positioned: a new viewer's hello, and its cursor if it has none;
        then, to any viewer, a ``dropped`` frame for what retention deleted before it read it."""
        wanted = viewer.cursor
        if wanted is None:
            start = viewer.request.start
            wanted = dict(start.offsets) if start.kind == "offsets" else {}
            viewer.cursor = dict(self._next)
        gaps = self._retention_gaps(viewer.cursor, wanted)
        greeted, viewer.greeted = viewer.greeted, True
        if not greeted:
            viewer.outbox.put_frame(frames.hello(
                self.topic,
                [{"partition": p, "start": viewer.cursor[p], "end": self._end[p],
                  "earliest": self._earliest[p]} for p in self._next],
                {**viewer.request.describe(),
                 "isolation": clientconf.security(self.config.kafka).isolation_level}))
        if gaps:
            viewer.outbox.put_frame(frames.dropped(
                sum(last - first + 1 for first, last in gaps.values()), gaps, reason="retention"))
        if not greeted and self.shared:
            viewer.outbox.put_frame(frames.status("live"))

    def _retention_gaps(self, cursor: dict[int, int],
                        wanted: dict[int, int]) -> dict[int, list[int]]:
        """Under both locks: per partition, the [first, last] offsets from ``wanted`` to just before
        the earliest one the broker still keeps; ``cursor`` moves past them."""
        gaps = {}
        for p, earliest in self._earliest.items():
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
        if not self._positioned and self._start is None:
            return False
        floor = self._floor if self._positioned else self._start
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
        if self._not_before:
            recs = self._skip_early(partition, recs)
            whole = False
            if not recs:
                return
        fmt = v.request.format
        matcher = v.matcher
        if not whole or (matcher.active and len(self._viewers) == 1):
            batch = Batch(encode_batch(recs, fmt, matcher, self.config.max_value_bytes))
        else:
            decoded = shared.get(fmt)
            if decoded is None:
                decoded = shared[fmt] = decode_batch(recs, fmt, self.config.max_value_bytes)
            if matcher.active:
                batch = Batch(select(decoded, matcher))
            else:
                batch = shared.get(fmt + "/all")
                if batch is None:
                    batch = shared[fmt + "/all"] = Batch(select(decoded, matcher))
        if matcher.tripped:
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

    def _loop(self, consumer: Consumer, tps: list[TopicPartition]) -> None:
        cfg = self.config
        stop = self._stop_event
        poll_ms = cfg.poll_timeout_ms
        status_every = cfg.status_interval_s
        linger = cfg.feed_linger_s
        broker_down = False
        absent = 0
        caught_up = False
        next_check = next_share = next_ends = time.monotonic() + status_every
        last_ends: dict[int, int | None] = {}
        self.state = "live"
        if not self.shared:
            self._broadcast(frames.status("live"))
        while not stop.is_set():
            viewers = self._viewers
            pause = bool(viewers) and all(v.paused or v.done for v in viewers)
            if pause != self._paused:
                self._paused = pause
                (consumer.pause if pause else consumer.resume)(*tps)
                self.state = "paused" if pause else "live"
                if not self.shared:
                    if not pause:
                        self._rewind(consumer, tps)
                    self._broadcast(frames.status(self.state))
            if self._hold(poll_ms / 1000):
                continue
            try:
                polled = consumer.poll(timeout_ms=self._poll_ms(poll_ms))
            except UndecodableBatch as exc:
                self._undecodable(consumer, tps, exc)
                continue
            if stop.is_set():
                break
            if polled:
                FAILURES.readable(self.topic)
            if polled or self._held:
                ready = self._gather(polled)
                if ready:
                    self._take(ready)
            if not self._held and not self._paused:
                self._pass_markers(consumer, tps, polled)
            for v in self._viewers:
                if not v.done and v.outbox.check_stall(cfg.send_timeout_s):
                    v.done = True
            if not self.shared and not any(not v.done for v in self._viewers):
                return
            if not self._paused:
                caught_up = caught_up or self._caught_up(consumer, tps)
                if caught_up:
                    self._announce_caught_up()
            now = time.monotonic()
            if now >= next_ends:
                next_ends = now + status_every
                ends = {tp.partition: consumer.highwater(tp) for tp in tps}
                if ends != last_ends and None not in ends.values():
                    last_ends = ends
                    self._broadcast(frames.ends(ends))
            if not polled and now >= next_check:
                next_check = now + status_every
                # Twice in a row: a broker restarted empty may answer before its topics return.
                absent = 0 if self._topic_listed(consumer) else absent + 1
                if absent >= 2:
                    raise frames.Close(frames.NOT_FOUND, f"topic {self.topic} was deleted")
                reachable = absent > 0 or self._probe(consumer, tps)
                if reachable == broker_down:
                    broker_down = not reachable
                    self.state = "broker-unavailable" if broker_down else (
                        "paused" if self._paused else "live")
                    self._broadcast(frames.status(
                        "broker-unavailable" if broker_down else "reconnected"))
            if self.shared:
                if not self._viewers and now - self._idle_since >= linger and self.pool.retire(self):
                    return
            elif caught_up and now >= next_share and self._hand_over(consumer, tps):
                return
            elif caught_up and now >= next_share:
                next_share = now + status_every

    def _undecodable(self, consumer: Consumer, tps: list[TopicPartition],
                     exc: UndecodableBatch) -> None:
        """Stop reading the partition whose batch cannot be decoded, telling every viewer where
        and why; the other partitions go on. With none left, the tail ends (1003)."""
        tp = next(t for t in tps if t.partition == exc.partition)
        consumer.pause(tp)
        tps.remove(tp)
        log.warning("%s: %s", self.name, exc)
        self._broadcast(frames.error(frames.UNSUPPORTED, str(exc), topic=exc.topic,
                                     partition=exc.partition, offset=exc.offset,
                                     codec=exc.codec))
        if not tps:
            raise frames.Close(frames.UNSUPPORTED, f"{exc.codec} records cannot be decoded here")

    def _rewind(self, consumer: Consumer, tps: list[TopicPartition]) -> None:
        """A dedicated viewer resumes at its cursor: a poll that landed after the pause
        request was not delivered (a feed keeps such records in its replay window instead)."""
        with self._lock:
            for v in self._viewers:
                for tp in tps:
                    consumer.seek(tp, v.cursor[tp.partition])
                    self._next[tp.partition] = v.cursor[tp.partition]

    def _hold(self, timeout: float) -> bool:
        """A dedicated tail whose socket is behind waits for it instead of fetching on: reading
        history, the client sets the pace and nothing is dropped. A feed never waits (one slow
        viewer must not hold back the others); its viewers' outboxes apply the full policy."""
        if self.shared or not self._viewers:
            return False
        v = self._viewers[0]
        if v.done or not v.outbox.behind():
            return False
        v.outbox.wait_drained(timeout)
        if v.outbox.check_stall(self.config.send_timeout_s):
            v.done = True
        return True

    def _poll_ms(self, poll_ms: int) -> int:
        """The poll timeout: shorter while records are held, so they go out on time."""
        if not self._held:
            return poll_ms
        return max(1, min(poll_ms, round((self._held_until - time.monotonic()) * 1000)))

    def _gather(self, polled: dict) -> dict:
        """What to deliver now. A feed holds polls for viewers / ``feed_writes_per_s`` seconds
        (at most ``feed_max_delay_ms``, or until a poll's worth of records) and delivers them
        as one, so each viewer gets one socket write instead of one per poll: with 200 viewers,
        the writes, not the fetches, are what costs CPU."""
        held = self._held
        if not held:
            cfg = self.config
            delay = (min(cfg.feed_max_delay_ms / 1000, len(self._viewers) / cfg.feed_writes_per_s)
                     if self.shared and cfg.feed_writes_per_s else 0.0)
            if delay < 0.001:
                return polled
            self._held_until = time.monotonic() + delay
        for tp, recs in polled.items():
            if tp in held:
                held[tp].extend(recs)
            else:
                held[tp] = list(recs)
            self._held_records += len(recs)
        if (self._held_records < self.config.max_poll_records
                and time.monotonic() < self._held_until):
            return {}
        self._held, self._held_records = {}, 0
        return held

    def _take(self, polled: dict) -> None:
        """A poll into the replay window, then to each viewer of that moment. A viewer that
        joins or resumes meanwhile replays it from the window; its cursor drops duplicates."""
        with self._lock:
            viewers = self._viewers
            for tp, recs in polled.items():
                p = tp.partition
                self._next[p] = recs[-1].offset + 1
                if self.shared:
                    ring = self._ring[p]
                    ring.extend(recs)
                    if len(ring) == ring.maxlen:
                        self._floor[p] = ring[0].offset
        for tp, recs in polled.items():
            shared: dict[str, Any] = {}
            for v in viewers:
                with v.lock:
                    self._deliver(v, tp.partition, recs, shared)

    def _pass_markers(self, consumer: Consumer, tps: list[TopicPartition], polled: dict) -> None:
        """Move past offsets that hold no record for a tail: transaction markers, and aborted
        records under read_committed. A partition that polled nothing while behind the high
        watermark has its edge, and every viewer standing at it, moved to the consumer's
        position, so caught-up and the hand-over to a feed see the partition's true end."""
        for tp in tps:
            if tp in polled:
                continue
            p = tp.partition
            edge = self._next[p]
            high = consumer.highwater(tp)
            if high is None or high <= edge:
                continue
            pos = consumer.position(tp, timeout_ms=0)
            if pos is None or pos <= edge:
                continue
            with self._lock:
                if self._next[p] != edge:
                    continue
                for v in self._viewers:
                    with v.lock:
                        if v.cursor is not None and v.cursor.get(p) == edge:
                            v.cursor[p] = pos
                self._next[p] = pos

    def _announce_caught_up(self) -> None:
        with self._lock:
            for v in self._viewers:
                if not v.caught_up and not v.paused and all(
                        v.cursor[p] >= n for p, n in self._next.items()):
                    v.caught_up = True
                    v.outbox.put_frame(frames.status("caught-up"))

    def _hand_over(self, consumer: Consumer, tps: list[TopicPartition]) -> bool:
        """A caught-up dedicated tail joins the shared feed at its exact next offsets."""
        viewer = self._viewers[0] if self._viewers else None
        if (viewer is None or not self.config.share_live_feeds or viewer.paused or viewer.done
                or self._not_before or viewer.outbox.behind()):
            return False
        positions = {tp.partition: consumer.position(tp, timeout_ms=self.config.poll_timeout_ms)
                     for tp in tps}
        if None in positions.values():
            return False
        viewer.cursor = positions
        return self.pool.share(viewer, self)

    def _skip_early(self, partition: int, recs: list) -> list:
        ts = self._not_before.get(partition)
        if ts is None:
            return recs
        for i, rec in enumerate(recs):
            if rec.timestamp >= ts:
                del self._not_before[partition]
                return recs[i:]
        return []

    def _caught_up(self, consumer: Consumer, tps: list[TopicPartition]) -> bool:
        for tp in tps:
            high = consumer.highwater(tp)
            end = self._end[tp.partition] if high is None else high
            if self._next[tp.partition] < end:
                return False
        return True

    def _topic_listed(self, consumer: Consumer) -> bool:
        """Does the cluster still list the topic? (kafka-python: from its metadata cache.)"""
        return consumer.topic_listed(self.topic)

    def _probe(self, consumer: Consumer, tps: list[TopicPartition]) -> bool:
        """Is the cluster answering? Bounded by the poll timeout so stop latency holds."""
        return consumer.probe(tps, timeout_ms=self.config.poll_timeout_ms)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "topic": self.topic, "shared": self.shared,
                "viewers": len(self._viewers), "native_id": self.native_id,
                "alive": self.is_alive(), "state": self.state, "stopping": self.stopping,
                "age_s": round(time.monotonic() - self.started_at, 3)}
