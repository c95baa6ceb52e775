"""ConsumerThread: one tail's Kafka consumer, polled with a timeout until its stop Event is set.

This is the fix for the original outage (a thread per page view looping ``for msg in consumer``
forever): the loop waits at most ``poll_timeout_ms`` per turn, checks the stop Event every turn,
and closes its own consumer (and with it kafka-python's ``kafka-io-*`` thread) in ``finally``.
It never touches the socket: records go to a bounded Outbox the socket side drains.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from kafka.net.compat import KafkaNetClient

from ..config import Config
from ..ops.threads import REGISTRY, rename, set_native_name
from . import frames, kafkafix
from .outbox import Outbox
from .records import encode_batch
from .request import Matcher, TailRequest

log = logging.getLogger(__name__)
kafkafix.apply()


class BrokerUnavailable(Exception):
    """The cluster could not be reached within the request timeout."""


def open_consumer(config: Config, client_id: str, **owner: Any) -> KafkaConsumer:
    """A group-less KafkaConsumer that leaves no IO thread behind when construction fails.

    kafka-python 3 starts the client's ``kafka-io-*`` thread before it bootstraps, so a broker
    that is down makes the constructor raise with that thread still running. The client factory
    keeps a handle on the client so it can be closed here. ``owner`` describes the IO thread in
    the thread registry (tail_id, topic, client).
    """
    made: list[KafkaNetClient] = []

    def client_factory(**kw: Any) -> KafkaNetClient:
        made.append(KafkaNetClient(**kw))
        return made[-1]

    try:
        consumer = KafkaConsumer(
            bootstrap_servers=config.bootstrap_servers.split(","),
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            # A viewer must never create a topic: not a typo's, not one just deleted.
            allow_auto_create_topics=False,
            max_poll_records=config.max_poll_records,
            request_timeout_ms=config.request_timeout_ms,
            bootstrap_timeout_ms=config.request_timeout_ms,
            fetch_max_wait_ms=min(500, config.poll_timeout_ms, config.request_timeout_ms // 2),
            reconnect_backoff_max_ms=2000,
            kafka_client=client_factory,
        )
    except BaseException as exc:
        for client in made:
            client.close()
        if isinstance(exc, (KafkaConnectionError, KafkaTimeoutError)):
            raise BrokerUnavailable(str(exc)) from None
        raise
    io_name = "kafka-io-" + client_id
    for t in threading.enumerate():
        if t.name == io_name:
            rename(t, io_name)
            REGISTRY.register(t, "kafka-io", owner=client_id, **owner)
    return consumer


class ConsumerThread(threading.Thread):
    """Tails one TailRequest into one Outbox; owned, started and joined by the ConsumerPool."""

    def __init__(self, request: TailRequest, outbox: Outbox, config: Config, tail_id: int,
                 client: str, owner: Any) -> None:
        super().__init__(name=f"kt-tail-{request.topic}-{tail_id}", daemon=True)
        self.request = request
        self.outbox = outbox
        self.config = config
        self.tail_id = tail_id
        self.client = client
        self.client_id = f"kt-{tail_id}"
        # The thread that opened this tail and must release it; if it dies first, the reaper does.
        self.owner = owner
        self.started_at = time.monotonic()
        self.matcher: Matcher = request.matcher
        self.sent = 0
        self.sent_bytes = 0
        self.state = "starting"
        self._stop_event = threading.Event()
        self._paused = False
        self._pause_wanted = False

    # -- control, called from the socket side -------------------------------------------
    def stop(self) -> None:
        self._stop_event.set()

    @property
    def stopping(self) -> bool:
        return self._stop_event.is_set()

    def set_paused(self, paused: bool) -> None:
        self._pause_wanted = paused

    def set_matcher(self, matcher: Matcher) -> None:
        self.matcher = matcher

    # -- the thread ------------------------------------------------------------------------
    def run(self) -> None:
        set_native_name(self.name)
        consumer = None
        try:
            consumer = open_consumer(self.config, self.client_id, topic=self.request.topic,
                                     client=self.client, tail_id=self.tail_id)
            tps = self._assign(consumer)
            self._loop(consumer, tps)
        except frames.Close as close:
            self.outbox.close(close.code, close.reason)
        except BrokerUnavailable:
            self.outbox.put_frame(frames.status("broker-unavailable"))
            self.outbox.close(frames.TRY_AGAIN, "broker unavailable, try again later")
        except Exception:
            log.exception("tail %s on %s failed", self.tail_id, self.request.topic)
            self.outbox.close(frames.INTERNAL, "internal error")
        finally:
            self.state = "closing"
            if consumer is not None:
                consumer.close(autocommit=False, timeout_ms=self.config.poll_timeout_ms)
            self.state = "stopped"

    def _assign(self, consumer: KafkaConsumer) -> list[TopicPartition]:
        req = self.request
        available = consumer.partitions_for_topic(req.topic)
        if not available:
            raise frames.Close(frames.NOT_FOUND, f"unknown topic {req.topic}")
        wanted = req.partitions or tuple(sorted(available))
        missing = [p for p in wanted if p not in available]
        if missing:
            raise frames.Close(frames.BAD_REQUEST,
                               f"partitions: {req.topic} has no partition {missing[0]}")
        tps = [TopicPartition(req.topic, p) for p in wanted]
        consumer.assign(tps)
        timeout = self.config.request_timeout_ms
        try:
            earliest = consumer.beginning_offsets(tps, timeout_ms=timeout)
            latest = consumer.end_offsets(tps, timeout_ms=timeout)
            starts = self._start_offsets(consumer, tps, earliest, latest, timeout)
        except (KafkaTimeoutError, KafkaConnectionError) as exc:
            raise BrokerUnavailable(str(exc)) from None
        for tp in tps:
            consumer.seek(tp, starts[tp])
        self._next = {tp.partition: starts[tp] for tp in tps}
        # The broker's time lookup is a lower bound (Tansu answers offset 0 for any time):
        # records before the first one at/after the time are skipped here, per partition.
        self._not_before = ({tp.partition: req.start.timestamp_ms for tp in tps}
                            if req.start.kind == "time" else {})
        self._end = {tp.partition: latest[tp] for tp in tps}
        self.outbox.put_frame(frames.hello(
            req.topic,
            [{"partition": tp.partition, "start": starts[tp], "end": latest[tp],
              "earliest": earliest[tp]} for tp in tps],
            req.describe()))
        return tps

    def _start_offsets(self, consumer: KafkaConsumer, tps: list[TopicPartition],
                       earliest: dict, latest: dict, timeout: int) -> dict[TopicPartition, int]:
        start = self.request.start
        if start.kind == "earliest":
            return dict(earliest)
        if start.kind == "last":
            return {tp: max(earliest[tp], latest[tp] - start.last) for tp in tps}
        if start.kind == "time":
            found = consumer.offsets_for_times({tp: start.timestamp_ms for tp in tps},
                                               timeout_ms=timeout)
            return {tp: found[tp].offset if found.get(tp) else latest[tp] for tp in tps}
        if start.kind == "offsets":
            # Not capped at the end: past it, the fetch resets to latest (auto_offset_reset).
            return {tp: max(start.offsets.get(tp.partition, latest[tp]), earliest[tp])
                    for tp in tps}
        return dict(latest)

    def _loop(self, consumer: KafkaConsumer, tps: list[TopicPartition]) -> None:
        cfg = self.config
        stop = self._stop_event
        outbox = self.outbox
        poll_ms = cfg.poll_timeout_ms
        status_every = cfg.status_interval_s
        remaining = self.request.max_records
        fmt, max_value = self.request.format, cfg.max_value_bytes
        caught_up = False
        broker_down = False
        next_check = time.monotonic() + status_every
        self.state = "live"
        outbox.put_frame(frames.status("live"))
        while not stop.is_set():
            if self._pause_wanted != self._paused:
                self._paused = self._pause_wanted
                (consumer.pause if self._paused else consumer.resume)(*tps)
                self.state = "paused" if self._paused else "live"
                outbox.put_frame(frames.status(self.state))
            polled = consumer.poll(timeout_ms=poll_ms)
            if stop.is_set():
                break
            for tp, recs in polled.items():
                self._next[tp.partition] = recs[-1].offset + 1
                if self._not_before:
                    recs = self._skip_early(tp.partition, recs)
                batch = encode_batch(recs, fmt, self.matcher, max_value)
                if remaining is not None and len(batch) >= remaining:
                    batch = batch[:remaining]
                    outbox.put_records(batch)
                    self.sent += remaining
                    self.sent_bytes += sum(r["size"] for r in batch)
                    outbox.put_frame(frames.status("end", reason="max reached"))
                    outbox.close(frames.NORMAL, f"max {self.request.max_records} records reached")
                    return
                if remaining is not None:
                    remaining -= len(batch)
                self.sent += len(batch)
                self.sent_bytes += sum(r["size"] for r in batch)
                outbox.put_records(batch)
            if outbox.check_stall(cfg.send_timeout_s):
                return
            if not caught_up and not self._paused:
                caught_up = self._caught_up(consumer, tps)
                if caught_up:
                    outbox.put_frame(frames.status("caught-up"))
            now = time.monotonic()
            if not polled and now >= next_check:
                next_check = now + status_every
                reachable = self._probe(consumer, tps)
                if reachable == broker_down:
                    broker_down = not reachable
                    self.state = "broker-unavailable" if broker_down else (
                        "paused" if self._paused else "live")
                    outbox.put_frame(frames.status(
                        "broker-unavailable" if broker_down else "reconnected"))

    def _skip_early(self, partition: int, recs: list) -> list:
        ts = self._not_before.get(partition)
        if ts is None:
            return recs
        for i, rec in enumerate(recs):
            if rec.timestamp >= ts:
                del self._not_before[partition]
                return recs[i:]
        return []

    def _caught_up(self, consumer: KafkaConsumer, tps: list[TopicPartition]) -> bool:
        for tp in tps:
            high = consumer.highwater(tp)
            end = self._end[tp.partition] if high is None else high
            if self._next[tp.partition] < end:
                return False
        return True

    def _probe(self, consumer: KafkaConsumer, tps: list[TopicPartition]) -> bool:
        """Is the cluster answering? Bounded by the poll timeout so stop latency holds."""
        try:
            consumer.end_offsets(tps[:1], timeout_ms=self.config.poll_timeout_ms)
            return True
        except KafkaError:
            return False

    def describe(self) -> dict[str, Any]:
        return {"id": self.tail_id, "name": self.name, "topic": self.request.topic,
                "client": self.client, "native_id": self.native_id, "alive": self.is_alive(),
                "state": self.state, "stopping": self.stopping, "sent": self.sent,
                "dropped": self.outbox.dropped_total,
                "age_s": round(time.monotonic() - self.started_at, 3)}
