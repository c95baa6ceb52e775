"""ConsumerThread: one Kafka consumer, polled with a timeout until its stop Event is set.

This is the fix for the original outage (a thread per page view looping ``for msg in consumer``
forever): the loop waits at most ``poll_timeout_ms`` per turn, checks the stop Event every turn,
and closes its own consumer (and with it kafka-python's ``kafka-io-*`` thread, or librdkafka's
``rdk:*`` native threads) in ``finally``. The consumer is a ``backend`` (``consumer_backend``).

The thread fetches; its Feed fans the records out to the viewers' bounded Outboxes. An outbox
may write a batch straight to an idle socket through the writer its session gave it (a
non-blocking write), so this thread can touch a socket that way and no other.

How it reads is its ``Reading`` policy. ``Dedicated``: one viewer, any start; a socket that is
behind holds the fetch (history at the client's pace), and once caught up the viewer is handed
to the shared feed. ``Shared``: every live viewer of one topic and partitions (200 viewers cost
one fetch stream), with a replay window and gathered writes; it never waits for one viewer, and
retires after ``feed_linger_s`` with none. The thread holds no reference to its pool: it reports
"caught up" and "idle" through ``Reports``, and the pool decides.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from kafka import TopicPartition

from ..config import Config
from ..ops.threads import set_os_thread_name
from . import clientconf, frames
from .backend import BrokerUnavailable, TopicDenied, open_backend
from .failures import FAILURES, UndecodableBatch
from .feed import Feed, Gathering
from .viewer import Viewer

if TYPE_CHECKING:
    from .backend import ConfluentBackend, KafkaPythonBackend

    Consumer = KafkaPythonBackend | ConfluentBackend
else:
    Consumer = Any

log = logging.getLogger(__name__)


class Reports(Protocol):
    """What a ConsumerThread tells its owner; True means the owner took the step (the thread
    then ends)."""

    def caught_up(self, thread: ConsumerThread, viewer: Viewer) -> bool: ...
    def idle(self, thread: ConsumerThread) -> bool: ...


class Reading:
    """The hooks by which dedicated and shared reading differ; the loop is the thread's."""

    kind = ""
    shared = False

    def __init__(self, config: Config) -> None:
        self.config = config

    def replay_records(self) -> int:
        return 0

    def backend_args(self, feed: Feed) -> dict[str, Any]:
        """Who the consumer's IO thread serves, for the thread registry: no one client."""
        return {"client": "", "tail_id": None}

    def start_offsets(self, feed: Feed, consumer: Consumer, tps: list[TopicPartition],
                      earliest: dict, latest: dict) -> dict[TopicPartition, int]:
        raise NotImplementedError

    def live(self, thread: ConsumerThread) -> None:
        """The loop starts."""

    def paused(self, thread: ConsumerThread, consumer: Consumer, tps: list[TopicPartition],
               paused: bool) -> None:
        """Every viewer just paused (or one resumed)."""

    def hold(self, feed: Feed) -> bool:
        """Skip this turn's fetch (after waiting at most a poll timeout)?"""
        return False

    def gather_delay(self, feed: Feed) -> float:
        return 0.0

    def finished(self, feed: Feed) -> bool:
        return False

    def turn_end(self, thread: ConsumerThread, consumer: Consumer, tps: list[TopicPartition],
                 caught_up: bool, now: float) -> bool:
        """End of a turn: True to leave the loop (the viewers went elsewhere)."""
        return False


class Dedicated(Reading):
    kind = "tail"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._next_share = time.monotonic() + config.status_interval_s

    def backend_args(self, feed: Feed) -> dict[str, Any]:
        return {"client": feed.origin.client, "tail_id": feed.origin.tail_id}

    def start_offsets(self, feed: Feed, consumer: Consumer, tps: list[TopicPartition],
                      earliest: dict, latest: dict) -> dict[TopicPartition, int]:
        viewer = feed.origin
        # Starts below the earliest offset are clamped to it here and reported by the greeting.
        if viewer.cursor is not None:
            return {tp: max(viewer.cursor.get(tp.partition, latest[tp]), earliest[tp])
                    for tp in tps}
        start = viewer.request.start
        if start.kind == "earliest":
            return dict(earliest)
        if start.kind == "last":
            return {tp: max(earliest[tp], latest[tp] - start.last) for tp in tps}
        if start.kind == "time":
            feed.not_before = {tp.partition: start.timestamp_ms for tp in tps}
            found = consumer.offsets_for_times({tp: start.timestamp_ms for tp in tps},
                                               timeout_ms=self.config.request_timeout_ms)
            return {tp: found[tp].offset if found.get(tp) else latest[tp] for tp in tps}
        if start.kind == "offsets":
            # Not capped at the end: past it, the fetch resets to latest (auto_offset_reset).
            return {tp: max(start.offsets.get(tp.partition, latest[tp]), earliest[tp])
                    for tp in tps}
        return dict(latest)

    def live(self, thread: ConsumerThread) -> None:
        thread.feed.broadcast(frames.status("live"))

    def paused(self, thread: ConsumerThread, consumer: Consumer, tps: list[TopicPartition],
               paused: bool) -> None:
        if not paused:
            # A poll that landed after the pause request was not delivered: read it again.
            cursor = thread.feed.rewind()
            for tp in tps:
                if tp.partition in cursor:
                    consumer.seek(tp, cursor[tp.partition])
        thread.feed.broadcast(frames.status(thread.state))

    def hold(self, feed: Feed) -> bool:
        """A socket that is behind is waited for instead of fetching on: reading history, the
        client sets the pace and nothing is dropped."""
        if not feed.viewers:
            return False
        v = feed.viewers[0]
        if v.done or not v.outbox.behind():
            return False
        v.outbox.wait_drained(self.config.poll_timeout_ms / 1000)
        if v.outbox.check_stall(self.config.send_timeout_s):
            v.done = True
        return True

    def finished(self, feed: Feed) -> bool:
        return feed.finished()

    def turn_end(self, thread: ConsumerThread, consumer: Consumer, tps: list[TopicPartition],
                 caught_up: bool, now: float) -> bool:
        if not caught_up or now < self._next_share:
            return False
        if self._hand_over(thread, consumer, tps):
            return True
        self._next_share = now + self.config.status_interval_s
        return False

    def _hand_over(self, thread: ConsumerThread, consumer: Consumer,
                   tps: list[TopicPartition]) -> bool:
        """A caught-up viewer joins the shared feed at its exact next offsets."""
        feed = thread.feed
        viewer = feed.viewers[0] if feed.viewers else None
        if (viewer is None or not self.config.share_live_feeds or viewer.paused or viewer.done
                or feed.not_before or viewer.outbox.behind()):
            return False
        positions = {tp.partition: consumer.position(tp, timeout_ms=self.config.poll_timeout_ms)
                     for tp in tps}
        if None in positions.values():
            return False
        viewer.cursor = positions
        return thread.reports.caught_up(thread, viewer)


class Shared(Reading):
    kind = "feed"
    shared = True

    def replay_records(self) -> int:
        return self.config.feed_replay_records

    def start_offsets(self, feed: Feed, consumer: Consumer, tps: list[TopicPartition],
                      earliest: dict, latest: dict) -> dict[TopicPartition, int]:
        if feed.start is None:
            return dict(latest)
        return {tp: max(feed.start.get(tp.partition, latest[tp]), earliest[tp]) for tp in tps}

    def gather_delay(self, feed: Feed) -> float:
        """Polls are held for viewers / ``feed_writes_per_s`` seconds, at most
        ``feed_max_delay_ms`` (see ``Gathering``); not at all when ``feed_writes_per_s`` is 0."""
        cfg = self.config
        if not cfg.feed_writes_per_s:
            return 0.0
        return min(cfg.feed_max_delay_ms / 1000, len(feed.viewers) / cfg.feed_writes_per_s)

    def turn_end(self, thread: ConsumerThread, consumer: Consumer, tps: list[TopicPartition],
                 caught_up: bool, now: float) -> bool:
        feed = thread.feed
        return (not feed.viewers and now - feed.idle_since >= self.config.feed_linger_s
                and thread.reports.idle(thread))


class _Watch:
    """The loop's periodic checks: partition ends to the viewers, and the broker's health
    (reachable, topic still listed) when polls come back empty."""

    def __init__(self, config: Config) -> None:
        self.every = config.status_interval_s
        self.next_ends = self.next_check = time.monotonic() + self.every
        self.last_ends: dict[int, int | None] = {}
        self.absent = 0
        self.broker_down = False


class ConsumerThread(threading.Thread):
    """Reads one topic's partitions for its Feed; started, stopped and joined by the pool."""

    def __init__(self, feed: Feed, reading: Reading, config: Config, thread_id: int,
                 reports: Reports) -> None:
        super().__init__(name=f"kt-{reading.kind}-{feed.topic}-{thread_id}", daemon=True)
        self.feed = feed
        self.reading = reading
        self.reports = reports
        self.topic = feed.topic
        self.key = (feed.topic, feed.partitions)
        self.config = config
        self.thread_id = thread_id
        self.shared = reading.shared
        self.client_id = f"kt-feed-{thread_id}" if reading.shared else f"kt-{thread_id}"
        self.started_at = time.monotonic()
        self.state = "starting"
        self._stop_event = threading.Event()
        self._paused = False
        self.gathering = Gathering(config)

    def stop(self) -> None:
        self._stop_event.set()

    @property
    def stopping(self) -> bool:
        return self._stop_event.is_set()

    @property
    def started(self) -> bool:
        return self._started.is_set()  # type: ignore[attr-defined]

    @property
    def closed(self) -> bool:
        """Takes no more viewers (failed, retired or stopping)."""
        return self.feed.closed or self._stop_event.is_set()

    def run(self) -> None:
        set_os_thread_name(self.name)
        feed = self.feed
        consumer = None
        try:
            consumer = open_backend(self.config, self.client_id, topic=self.topic,
                                    **self.reading.backend_args(feed))
            tps = self._assign(consumer)
            self._loop(consumer, tps)
        except frames.Close as close:
            feed.close_all(close.code, close.reason)
        except BrokerUnavailable as exc:
            feed.broadcast(frames.status("broker-unavailable", reason=str(exc)))
            feed.close_all(frames.TRY_AGAIN, str(exc))
        except TopicDenied as exc:
            reason = FAILURES.denied(exc.topic, clientconf.security(self.config.kafka).describe())
            feed.broadcast(frames.status("denied", reason=reason))
            feed.close_all(frames.FORBIDDEN, reason)
        except Exception:
            log.exception("%s on %s failed", self.name, self.topic)
            feed.close_all(frames.INTERNAL, "internal error")
        finally:
            self.state = "closing"
            if consumer is not None:
                consumer.close(timeout_ms=self.config.poll_timeout_ms)
            self.state = "stopped"

    def _assign(self, consumer: Consumer) -> list[TopicPartition]:
        available = consumer.partitions_for_topic(self.topic)
        if not available:
            raise frames.Close(frames.NOT_FOUND, f"unknown topic {self.topic}")
        wanted = self.feed.partitions or tuple(sorted(available))
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
        starts = self.reading.start_offsets(self.feed, consumer, tps, earliest, latest)
        for tp in tps:
            consumer.seek(tp, starts[tp])
        by_partition = lambda d: {tp.partition: d[tp] for tp in tps}  # noqa: E731
        self.feed.position(by_partition(starts), by_partition(earliest), by_partition(latest))
        return tps

    def _loop(self, consumer: Consumer, tps: list[TopicPartition]) -> None:
        stop = self._stop_event
        feed, reading, gathering = self.feed, self.reading, self.gathering
        poll_ms = self.config.poll_timeout_ms
        watch = _Watch(self.config)
        caught_up = False
        self.state = "live"
        reading.live(self)
        while not stop.is_set():
            self._follow_pause(consumer, tps)
            if reading.hold(feed):
                continue
            try:
                polled = consumer.poll(timeout_ms=gathering.poll_ms(poll_ms))
            except UndecodableBatch as exc:
                self._undecodable(consumer, tps, exc)
                continue
            if stop.is_set():
                break
            if polled:
                FAILURES.readable(self.topic)
            if polled or gathering.holding:
                ready = gathering.gather(polled, reading.gather_delay(feed))
                if ready:
                    feed.take(ready)
            if not gathering.holding and not self._paused:
                self._pass_markers(consumer, tps, polled)
            feed.check_stalls()
            if reading.finished(feed):
                return
            if not self._paused:
                caught_up = caught_up or self._caught_up(consumer, tps)
                if caught_up:
                    feed.announce_caught_up(self._end_confirmed(consumer, tps))
            now = time.monotonic()
            self._watch(consumer, tps, watch, polled, now)
            if reading.turn_end(self, consumer, tps, caught_up, now):
                return

    def _follow_pause(self, consumer: Consumer, tps: list[TopicPartition]) -> None:
        """Pause the fetch while every viewer is paused (or done), resume when one is not."""
        pause = self.feed.paused()
        if pause == self._paused:
            return
        self._paused = pause
        (consumer.pause if pause else consumer.resume)(*tps)
        self.state = "paused" if pause else "live"
        self.reading.paused(self, consumer, tps, pause)

    def _watch(self, consumer: Consumer, tps: list[TopicPartition], watch: _Watch,
               polled: dict, now: float) -> None:
        if now >= watch.next_ends:
            watch.next_ends = now + watch.every
            ends = {tp.partition: consumer.highwater(tp) for tp in tps}
            if ends != watch.last_ends and None not in ends.values():
                watch.last_ends = ends
                self.feed.broadcast(frames.ends(ends))
        if polled or now < watch.next_check:
            return
        watch.next_check = now + watch.every
        # Twice in a row: a broker restarted empty may answer before its topics return.
        watch.absent = 0 if consumer.topic_listed(self.topic) else watch.absent + 1
        if watch.absent >= 2:
            raise frames.Close(frames.NOT_FOUND, f"topic {self.topic} was deleted")
        # Bounded by the poll timeout, so stop latency holds.
        reachable = watch.absent > 0 or consumer.probe(
            tps, timeout_ms=self.config.poll_timeout_ms)
        if reachable == watch.broker_down:
            watch.broker_down = self.feed.broker_down = not reachable
            self.state = "broker-unavailable" if watch.broker_down else (
                "paused" if self._paused else "live")
            self.feed.broadcast(frames.status(
                "broker-unavailable" if watch.broker_down else "reconnected"))

    def _undecodable(self, consumer: Consumer, tps: list[TopicPartition],
                     exc: UndecodableBatch) -> None:
        """Stop reading the partition whose batch cannot be decoded, telling every viewer where
        and why; the other partitions go on. With none left, the tail ends (1003)."""
        tp = next(t for t in tps if t.partition == exc.partition)
        consumer.pause(tp)
        tps.remove(tp)
        log.warning("%s: %s", self.name, exc)
        self.feed.broadcast(frames.error(frames.UNSUPPORTED, str(exc), topic=exc.topic,
                                         partition=exc.partition, offset=exc.offset,
                                         codec=exc.codec))
        if not tps:
            raise frames.Close(frames.UNSUPPORTED, f"{exc.codec} records cannot be decoded here")

    def _pass_markers(self, consumer: Consumer, tps: list[TopicPartition], polled: dict) -> None:
        """Move past offsets that hold no record for a tail: transaction markers, and aborted
        records under read_committed. A partition that polled nothing while behind the high
        watermark has its edge, and every viewer standing at it, moved to the consumer's
        position, so caught-up and the hand-over to a feed see the partition's true end."""
        for tp in tps:
            if tp in polled:
                continue
            edge = self.feed.next[tp.partition]
            high = consumer.highwater(tp)
            if high is None or high <= edge:
                continue
            pos = consumer.position(tp, timeout_ms=0)
            if pos is not None and pos > edge:
                self.feed.pass_marker(tp.partition, edge, pos)

    def _end_confirmed(self, consumer: Consumer, tps: list[TopicPartition]) -> bool:
        """At the high watermark a fetch answer gave for every partition: not the end offsets
        looked up at the start, which a just-created topic's leader may still answer with 0."""
        for tp in tps:
            high = consumer.highwater(tp)
            if high is None or self.feed.next[tp.partition] < high:
                return False
        return True

    def _caught_up(self, consumer: Consumer, tps: list[TopicPartition]) -> bool:
        feed = self.feed
        for tp in tps:
            high = consumer.highwater(tp)
            end = feed.end[tp.partition] if high is None else high
            if feed.next[tp.partition] < end:
                return False
        return True

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "topic": self.topic, "shared": self.shared,
                "viewers": len(self.feed.viewers), "native_id": self.native_id,
                "alive": self.is_alive(), "state": self.state, "stopping": self.stopping,
                "age_s": round(time.monotonic() - self.started_at, 3)}
