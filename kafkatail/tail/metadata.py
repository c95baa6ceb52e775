"""Cluster metadata for the HTTP API, through one shared, lazily opened consumer.

One client for all API calls (not one per request): a KafkaConsumer costs a connection and an
IO thread. Calls take turns on it; at most ``MAX_WAITING`` wait for their turn, each for at most
the request timeout, so a flood of lookups is refused (``MetadataBusy``, 503) instead of queueing
without end. Every call's outcome is remembered: ``/readyz`` answers from it while it is fresh
and never waits behind the API. A failure closes the client so the next call starts clean after
a broker restart.

``overview`` (the page's start screen) measures every topic a caller may read on the same
client, on the request thread: see ``Overview`` for what one pass costs and how it is shared.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError, TopicAuthorizationFailedError

from ..config import Config
from .backend import (BrokerUnavailable, TopicDenied, describe_denied, open_consumer,
                      unavailable_reason)
from .failures import UndecodableBatch

MAX_WAITING = 4
# How long a call's outcome answers /readyz: a probe every few seconds sees an outage that soon.
STATE_FRESH_S = 2.0


class MetadataBusy(BrokerUnavailable):
    """Too many lookups already wait for the metadata client: try again shortly."""


class Metadata:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._waiting = threading.BoundedSemaphore(MAX_WAITING)
        self._consumer: KafkaConsumer | None = None
        self._closed = False
        # (monotonic time, None if the cluster answered else why not) of the last call.
        self._state: tuple[float, str | None] | None = None
        self._answered = threading.Event()
        self._overview = Overview(self)

    def _call(self, fn: Any, wait_s: float | None = None) -> Any:
        if not self._waiting.acquire(blocking=False):
            raise MetadataBusy("too many metadata lookups in progress; retry shortly")
        try:
            if wait_s is None:
                wait_s = self.config.request_timeout_ms / 1000
            if not self._lock.acquire(timeout=wait_s):
                raise MetadataBusy("metadata lookups are queued; retry shortly")
            try:
                return self._locked_call(fn)
            finally:
                self._lock.release()
        finally:
            self._waiting.release()

    def _locked_call(self, fn: Any) -> Any:
        if self._closed:
            raise BrokerUnavailable("server shutting down")
        try:
            if self._consumer is None:
                # A broker answers one connection's requests in order: a fetch left waiting
                # for data would hold up the next metadata or offsets request. The records
                # the overview reads are there already, so a short wait loses nothing.
                self._consumer = open_consumer(self.config, "kt-meta",
                                               fetch_wait_ms=LAST_FETCH_WAIT_MS)
            result = fn(self._consumer)
        except BrokerUnavailable as exc:
            self._record(str(exc))
            raise
        except KafkaError as exc:
            if self._consumer is not None:
                self._consumer.close(autocommit=False, timeout_ms=1000)
                self._consumer = None
            reason = unavailable_reason(exc)
            self._record(reason)
            raise BrokerUnavailable(reason) from None
        self._record(None)
        return result

    def _record(self, reason: str | None) -> None:
        self._state = (time.monotonic(), reason)
        self._answered.set()

    def topics(self) -> list[dict[str, Any]]:
        def fetch(c: KafkaConsumer) -> list[dict[str, Any]]:
            names = sorted(c.topics())
            return [{"name": n, "partitions": len(c.partitions_for_topic(n))} for n in names]
        return self._call(fetch)

    def topic(self, name: str) -> dict[str, Any] | None:
        timeout = self.config.request_timeout_ms

        def fetch(c: KafkaConsumer) -> dict[str, Any] | None:
            c.topics()
            parts = c.partitions_for_topic(name)
            if not parts:
                if describe_denied(c, name, timeout):
                    raise TopicDenied(name)
                return None
            tps = [TopicPartition(name, p) for p in sorted(parts)]
            first = c.beginning_offsets(tps, timeout_ms=timeout)
            last = c.end_offsets(tps, timeout_ms=timeout)
            return {"name": name, "partitions": [
                {"partition": tp.partition, "earliest": first[tp], "latest": last[tp]} for tp in tps]}
        return self._call(fetch)

    def overview(self, allowed: Callable[[str], bool]) -> dict[str, Any]:
        """The topics ``allowed`` admits, measured (``Overview.snapshot``)."""
        return self._overview.snapshot(allowed)

    def unready(self) -> str | None:
        """None if the cluster answers metadata requests, else why not (``/readyz``): the last
        call's outcome while fresh, else a new call; while the API holds the client, the last
        outcome however old, so a readiness probe never queues behind lookups."""
        state = self._state
        if state is not None and time.monotonic() - state[0] < STATE_FRESH_S:
            return state[1]
        try:
            self._call(lambda c: c.topics(), wait_s=0 if state is not None else None)
            return None
        except MetadataBusy as exc:
            if state is None and self._answered.wait(self.config.request_timeout_ms / 1000):
                state = self._state
            return state[1] if state is not None else str(exc)
        except BrokerUnavailable as exc:
            return str(exc)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._consumer is not None:
                self._consumer.close(autocommit=False, timeout_ms=1000)
                self._consumer = None


# -- the topic overview ------------------------------------------------------------------------
# Module constants, not config fields: they set how fresh the page's start screen is and what
# one look at it may cost, which nothing else depends on and no operator has had to tune.
OVERVIEW_FRESH_S = 5.0      # numbers younger than this answer every caller (the page's refresh)
OVERVIEW_MAX_TOPICS = 500   # topics one answer covers, in name order; beyond: "truncated"
RATE_WINDOW_MAX_S = 60.0    # a rate over a longer gap than this is no recent rate: None
LAST_READS_MAX = 200        # partitions whose newest record one pass reads
LAST_READ_BUDGET_S = 1.0    # and for at most this long
# A read that found no record at end - 1 (a transaction marker there, or a fetch that raced the
# assignment) is tried again after this long, not only when the end moves.
LAST_NONE_RETRY_S = 10.0
LAST_FETCH_WAIT_MS = 20     # the metadata client's fetch wait (see _read_last)


@dataclass(frozen=True)
class TopicStats:
    """One topic, as a pass measured it."""

    at: float                # monotonic time of the pass
    partitions: int
    retained: int            # end - earliest offset, summed over the partitions
    end: int                 # the end offsets, summed: what the next rate is measured from
    rate: float | None       # records/s since the previous measure, None without a recent one
    last_ms: int | None      # the newest record's timestamp (epoch ms), None if none was read

    def as_json(self, name: str) -> dict[str, Any]:
        return {"name": name, "partitions": self.partitions, "retained": self.retained,
                "rate": None if self.rate is None else round(self.rate, 2),
                "last_record": self.last_ms}


@dataclass(frozen=True)
class LastRead:
    """The newest record of one partition, when its end offset was ``end``."""

    end: int
    ts: int | None           # None: the offset held no visible record, or it could not be read
    at: float                # monotonic time of the read


class Overview:
    """Every topic a caller may read, with its partition count, retained records, a recent rate
    and the time of its newest record: the page's start screen (``GET /api/overview``).

    Cost and sharing: a pass runs on the request thread, on the shared metadata client under
    its bounded wait (``Metadata._call``: no thread of its own), and measures only those of the
    caller's topics whose numbers are older than OVERVIEW_FRESH_S: one metadata request for the
    topic names (itself reused that long), one ListOffsets request per broker for the earliest
    offsets and one for the end offsets, then a bounded fetch for the newest records. Any caller
    whose topics are all fresh is answered from the cache without touching the client, so one
    pass a few seconds serves every open page. At most OVERVIEW_MAX_TOPICS topics (in name
    order, of those the caller may read) are covered; the answer says when there were more.

    Retained records are offsets (end - earliest): compaction gaps and transaction markers
    count. The rate is the change of the summed end offsets since the topic's previous
    measure, per second; None on the first pass, after a gap over RATE_WINDOW_MAX_S, or when
    the offsets went back (the topic was re-created).

    The newest record's time is the timestamp of the record at end - 1 of each partition (as
    the producer or the broker stamped it), the latest over the partitions. It is read by
    assigning the client those partitions, seeking to end - 1 and polling, and read again only
    when the partition's end moved: an idle cluster costs no fetch at all. One pass reads at most
    LAST_READS_MAX partitions for at most LAST_READ_BUDGET_S, never-read ones first, then the
    least recently read; with more partitions moving than that, a topic's time is a lower bound
    (an earlier read's) until a later pass reaches it. A partition whose end - 1 holds no record
    this client may see (a transaction marker, an aborted record) gives no time.
    """

    def __init__(self, metadata: Metadata) -> None:
        self._metadata = metadata
        self._lock = threading.Lock()    # the caches below; a pass also holds Metadata's lock
        self._names_at = 0.0
        self._names: dict[str, list[int]] | None = None   # topic -> partitions, name order
        self._stats: dict[str, TopicStats] = {}
        # Topics a pass had to leave out (the cluster would not describe them after all), when:
        # not shown, and not asked about again until their numbers would be stale.
        self._skipped: dict[str, float] = {}
        self._last: dict[TopicPartition, LastRead] = {}

    def snapshot(self, allowed: Callable[[str], bool]) -> dict[str, Any]:
        """``{"topics": [{name, partitions, retained, rate, last_record}], "total",
        "truncated"}`` for the topics ``allowed`` admits; BrokerUnavailable or MetadataBusy
        when a pass is needed and cannot run."""
        answer = self._cached(allowed)
        if answer is None:
            answer = self._metadata._call(lambda c: self._pass(c, allowed))
        return answer

    def _wanted(self, allowed: Callable[[str], bool]) -> tuple[list[str], int]:
        assert self._names is not None
        wanted = [n for n in self._names if allowed(n)]
        return wanted[:OVERVIEW_MAX_TOPICS], len(wanted)

    def _stale(self, name: str, now: float) -> bool:
        stats = self._stats.get(name)
        at = stats.at if stats is not None else self._skipped.get(name)
        return at is None or now - at >= OVERVIEW_FRESH_S

    def _cached(self, allowed: Callable[[str], bool]) -> dict[str, Any] | None:
        with self._lock:
            now = time.monotonic()
            if self._names is None or now - self._names_at >= OVERVIEW_FRESH_S:
                return None
            shown, total = self._wanted(allowed)
            if any(self._stale(n, now) for n in shown):
                return None
            return self._answer(shown, total)

    def _answer(self, shown: list[str], total: int) -> dict[str, Any]:
        return {"topics": [self._stats[n].as_json(n) for n in shown if n in self._stats],
                "total": total, "truncated": total > len(shown)}

    def _pass(self, c: KafkaConsumer, allowed: Callable[[str], bool]) -> dict[str, Any]:
        now = time.monotonic()
        if self._names is None or now - self._names_at >= OVERVIEW_FRESH_S:
            names = {n: sorted(c.partitions_for_topic(n) or ()) for n in sorted(c.topics())}
            with self._lock:
                self._names, self._names_at = names, now
                self._forget_gone()
        with self._lock:
            shown, total = self._wanted(allowed)
            stale = [n for n in shown if self._stale(n, now)]
        if stale:
            self._measure(c, stale)
        with self._lock:
            return self._answer(shown, total)

    def _forget_gone(self) -> None:
        """Drop what is kept of topics and partitions the cluster no longer lists."""
        names = self._names or {}
        for name in [n for n in self._stats if n not in names]:
            del self._stats[name]
        self._skipped = {n: at for n, at in self._skipped.items() if n in names}
        for tp in [tp for tp in self._last if tp.partition not in names.get(tp.topic, ())]:
            del self._last[tp]

    def _offsets(self, c: KafkaConsumer, names: list[str]) -> tuple[dict, dict]:
        """Earliest and end offsets of the topics' partitions, leaving out any topic the cluster
        will not let this client describe (it lists only those it will, but ACLs can change)."""
        timeout = self._metadata.config.request_timeout_ms
        assert self._names is not None
        for _attempt in range(2):
            tps = [TopicPartition(n, p) for n in names for p in self._names.get(n, ())]
            try:
                return (c.beginning_offsets(tps, timeout_ms=timeout),
                        c.end_offsets(tps, timeout_ms=timeout))
            except TopicAuthorizationFailedError as exc:
                denied = exc.args[0] if exc.args and isinstance(exc.args[0], set) else set()
                if not denied:
                    raise
                names = [n for n in names if n not in denied]
        return {}, {}

    def _measure(self, c: KafkaConsumer, names: list[str]) -> None:
        first, last = self._offsets(c, names)
        now = time.monotonic()
        to_read: dict[TopicPartition, int] = {}
        for tp, end in last.items():
            earliest = first.get(tp, end)
            seen = self._last.get(tp)
            if end <= earliest:
                self._last.pop(tp, None)  # nothing retained: no newest record
            elif seen is None or seen.end != end or (
                    seen.ts is None and now - seen.at > LAST_NONE_RETRY_S):
                to_read[tp] = end
        order = sorted(to_read, key=lambda tp: (tp in self._last,
                                                self._last[tp].at if tp in self._last else 0.0,
                                                -(to_read[tp] - first.get(tp, 0))))
        read = _read_last(c, {tp: to_read[tp] for tp in order[:LAST_READS_MAX]})
        with self._lock:
            for tp, ts in read.items():
                self._last[tp] = LastRead(to_read[tp], ts, now)
            self._store(names, first, last, now)

    def _store(self, names: list[str], first: dict, last: dict, now: float) -> None:
        assert self._names is not None
        for name in names:
            tps = [TopicPartition(name, p) for p in self._names.get(name, ())]
            if not all(tp in last for tp in tps):
                self._stats.pop(name, None)  # left out (denied): not shown
                self._skipped[name] = now
                continue
            self._skipped.pop(name, None)
            end = sum(last[tp] for tp in tps)
            retained = sum(max(0, last[tp] - first.get(tp, last[tp])) for tp in tps)
            prev = self._stats.get(name)
            rate = None
            if prev is not None and 0 < now - prev.at <= RATE_WINDOW_MAX_S and end >= prev.end:
                rate = (end - prev.end) / (now - prev.at)
            times = [r.ts for tp in tps if (r := self._last.get(tp)) is not None and r.ts is not None]
            self._stats[name] = TopicStats(now, len(tps), retained, end, rate,
                                           max(times) if times else None)


def _read_last(c: KafkaConsumer, want: dict[TopicPartition, int]) -> dict[TopicPartition, int | None]:
    """The timestamp of the record at ``end - 1`` of each partition (``want``: partition ->
    end offset), read on the metadata client, which is assigned them for the call only. A
    partition whose position passes ``end - 1`` without a record there, or that cannot be read
    (denied, a codec this server lacks), gives None; one not reached within the budget is left
    out."""
    if not want:
        return {}
    found: dict[TopicPartition, int | None] = {}
    c.assign(list(want))
    try:
        for tp, end in want.items():
            c.seek(tp, end - 1)
        deadline = time.monotonic() + LAST_READ_BUDGET_S
        while len(found) < len(want):
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                break
            try:
                # Partitions already read are not paused: kafka-python parks what a paused
                # partition had buffered, and parked data kept it from ever being fetched
                # again by this client (seen on a second pass). Their records are ignored.
                _took(c, want, c.poll(timeout_ms=min(left_ms, 200)), found)
            except (TopicAuthorizationFailedError, UndecodableBatch) as exc:
                failed = [tp for tp in want if tp not in found and _failed(exc, tp)]
                if not failed:
                    break  # not told which, or the same again: the rest waits for a later pass
                found.update((tp, None) for tp in failed)
    finally:
        c.unsubscribe()
    return found


def _failed(exc: Exception, tp: TopicPartition) -> bool:
    """Is ``tp`` a partition the failure of a poll names?"""
    if isinstance(exc, UndecodableBatch):
        return tp == (exc.topic, exc.partition)
    denied = exc.args[0] if exc.args and isinstance(exc.args[0], (set, list)) else ()
    return tp.topic in denied


def _took(c: KafkaConsumer, want: dict[TopicPartition, int], batch: dict,
          found: dict[TopicPartition, int | None]) -> None:
    """Note in ``found`` what a poll brought of the wanted records."""
    for tp, recs in batch.items():
        rec = next((r for r in recs if r.offset >= want[tp] - 1), None) if tp in want else None
        if rec is not None and tp not in found:
            found[tp] = rec.timestamp if rec.timestamp is not None and rec.timestamp >= 0 else None
    for tp, end in want.items():
        if tp not in found and tp not in batch:
            position = c.position(tp, timeout_ms=0)
            if position is not None and position >= end:  # passed end - 1: nothing to show
                found[tp] = None
