"""The consumer backends behind ConsumerThread: kafka-python (the default) and confluent-kafka.

A ConsumerThread talks to one ``Backend``: the few calls a group-less tail needs (assign with
explicit offsets, watermarks, time lookups, poll with a timeout, pause/resume, close). Both
implementations return records grouped by partition, as ``{TopicPartition: [record]}``, with
the attributes ``records.py`` reads (partition, offset, timestamp, key, value, headers,
serialized_*_size); neither joins a group or commits.

``consumer_backend = "confluent"`` needs the ``confluent`` extra (``confluent-kafka``).
librdkafka runs its own native threads (``rdk:main``, ``rdk:broker*``): they are not Python
threads, so the thread table gives them their role by name (``ops.threads.native_role``) and
the registry notes which client started them. ``close`` destroys the client, which joins them.
"""
from __future__ import annotations

import logging
import threading
from collections import namedtuple
from typing import Any, Iterable

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import (KafkaConnectionError, KafkaError, KafkaTimeoutError,
                          TopicAuthorizationFailedError)

from ..config import Config, check_backend
from ..ops import procfs
from ..ops.threads import REGISTRY, rename
from . import clientconf, kafkafix
from .failures import FAILURES, UndecodableBatch, classify_librdkafka

log = logging.getLogger(__name__)
kafkafix.apply()

BACKENDS = ("kafka-python", "confluent")
__all__ = ["BrokerUnavailable", "TopicDenied", "check_backend", "open_backend", "open_consumer"]


class BrokerUnavailable(Exception):
    """The cluster could not be reached, or would not let kafkatail in, within the request
    timeout; the message says why in plain words."""


class TopicDenied(Exception):
    """The cluster's ACLs do not let this client describe or read the topic."""

    def __init__(self, topic: str) -> None:
        super().__init__(topic)
        self.topic = topic


def describe_denied(consumer: KafkaConsumer, topic: str, timeout_ms: int) -> bool:
    """For a topic an all-topics metadata answer did not list: does a metadata request for it
    alone come back TOPIC_AUTHORIZATION_FAILED? (An all-topics answer leaves out topics the
    client may not describe, so an unknown topic and a denied one look the same there.)"""
    cluster = consumer._cluster

    async def ask() -> bool:
        # On the client's IO thread, which alone touches the tracked topics: the topic is
        # tracked for this one request, so a long-lived client (the API's) does not keep
        # asking for every name it was ever given.
        try:
            await consumer._manager.wait_for(cluster.add_topic(topic), timeout_ms)
        except KafkaError:
            pass
        finally:
            cluster._topics.discard(topic)
        return topic in cluster.unauthorized_topics
    return consumer._net.run(ask)


def unavailable_reason(exc: BaseException) -> str:
    """Why a client could not connect: the failure its attempts met (TLS, SASL, refused), else
    what the library said."""
    failure = FAILURES.current()
    return failure.reason if failure is not None else f"broker unavailable: {exc}"


def _fetch_wait_ms(config: Config) -> int:
    return min(500, config.poll_timeout_ms, config.request_timeout_ms // 2)


def _max_poll_records(config: Config) -> int:
    # At most half an outbox per poll: a dedicated tail stops polling at half full, so a poll
    # can never overflow it (see ConsumerThread._hold).
    return min(config.max_poll_records, max(1, config.outbox_max_records // 2))


def open_backend(config: Config, client_id: str, **owner: Any) -> "KafkaPythonBackend | ConfluentBackend":
    """The configured backend's consumer, connected (BrokerUnavailable if it cannot be)."""
    if config.consumer_backend == "confluent":
        check_backend(config)
        return ConfluentBackend.open(config, client_id, **owner)
    return KafkaPythonBackend(open_consumer(config, client_id, **owner), config)


# -- kafka-python ------------------------------------------------------------------------------
def open_consumer(config: Config, client_id: str, fetch_wait_ms: int | None = None,
                  **owner: Any) -> KafkaConsumer:
    """A group-less KafkaConsumer that leaves no IO thread behind when construction fails
    (``kafkafix.construct``). ``owner`` describes the IO thread in the thread registry
    (tail_id, topic, client); ``fetch_wait_ms`` overrides the fetch wait.
    """
    sec = clientconf.security(config.kafka)
    try:
        consumer = kafkafix.construct(
            KafkaConsumer,
            bootstrap_servers=config.bootstrap_servers.split(","),
            client_id=sec.client_id or client_id,
            group_id=None,
            enable_auto_commit=False,
            # A viewer must never create a topic: not a typo's, not one just deleted.
            allow_auto_create_topics=False,
            # read_committed unless configured: what Kafka users expect of a viewer (and
            # librdkafka's default), never an aborted transaction's records.
            isolation_level=sec.isolation_level,
            max_poll_records=_max_poll_records(config),
            request_timeout_ms=config.request_timeout_ms,
            bootstrap_timeout_ms=config.request_timeout_ms,
            fetch_max_wait_ms=_fetch_wait_ms(config) if fetch_wait_ms is None else fetch_wait_ms,
            # A poll's bytes are what a waiting historical tail may overshoot its outbox by.
            fetch_max_bytes=max(1 << 20, config.outbox_max_bytes),
            reconnect_backoff_max_ms=2000,
            **clientconf.kafka_python(config),
        )
    except (KafkaConnectionError, KafkaTimeoutError) as exc:
        raise BrokerUnavailable(unavailable_reason(exc)) from None
    FAILURES.connected()
    io_thread = kafkafix.io_thread(consumer)
    if io_thread is not None:  # named here: a configured client.id is every client's
        rename(io_thread, "kafka-io-" + client_id)
        REGISTRY.register(io_thread, "kafka-io", owner=client_id, **owner)
    return consumer


class KafkaPythonBackend:
    """A KafkaConsumer, as ConsumerThread has always used it."""

    name = "kafka-python"

    def __init__(self, consumer: KafkaConsumer, config: Config) -> None:
        self.consumer = consumer
        self.config = config

    # Looked up on each call, not bound once: tests patch KafkaConsumer's methods.
    def assign(self, tps: list[TopicPartition]) -> None:
        self.consumer.assign(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.consumer.seek(tp, offset)

    def poll(self, timeout_ms: int) -> dict:
        try:
            return self.consumer.poll(timeout_ms=timeout_ms)
        except TopicAuthorizationFailedError as exc:
            denied = exc.args[0] if exc.args else ()
            raise TopicDenied(next(iter(denied)) if isinstance(denied, (set, list))
                              else str(denied)) from None

    def pause(self, *tps: TopicPartition) -> None:
        self.consumer.pause(*tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.consumer.resume(*tps)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.consumer.highwater(tp)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        """The topic's partitions; None if it does not exist, TopicDenied if the cluster will
        not let this client describe it."""
        found = self.consumer.partitions_for_topic(topic)
        if not found and describe_denied(self.consumer, topic, self.config.request_timeout_ms):
            raise TopicDenied(topic)
        return found

    def _lookup(self, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except (KafkaTimeoutError, KafkaConnectionError) as exc:
            raise BrokerUnavailable(str(exc)) from None

    def beginning_offsets(self, tps: list[TopicPartition], timeout_ms: int) -> dict:
        return self._lookup(self.consumer.beginning_offsets, tps, timeout_ms=timeout_ms)

    def end_offsets(self, tps: list[TopicPartition], timeout_ms: int) -> dict:
        return self._lookup(self.consumer.end_offsets, tps, timeout_ms=timeout_ms)

    def offsets_for_times(self, times: dict, timeout_ms: int) -> dict:
        return self._lookup(self.consumer.offsets_for_times, times, timeout_ms=timeout_ms)

    def position(self, tp: TopicPartition, timeout_ms: int) -> int | None:
        try:
            return self.consumer.position(tp, timeout_ms=timeout_ms)
        except KafkaError:
            return None

    def topic_listed(self, topic: str) -> bool:
        """Does the consumer's last metadata answer still list the topic? From its cache, not a
        request (``partitions_for_topic`` would wait with no timeout for an unknown topic); a
        fetch of a deleted topic makes kafka-python refresh it, and a failed refresh keeps it."""
        return self.consumer._cluster.partitions_for_topic(topic) is not None

    def probe(self, tps: list[TopicPartition], timeout_ms: int) -> bool:
        try:
            self.consumer.end_offsets(tps[:1], timeout_ms=timeout_ms)
            return True
        except KafkaError:
            return False

    def close(self, timeout_ms: int) -> None:
        self.consumer.close(autocommit=False, timeout_ms=timeout_ms)


# -- confluent-kafka ---------------------------------------------------------------------------
Record = namedtuple("Record", ["topic", "partition", "offset", "timestamp", "key", "value",
                               "headers", "serialized_key_size", "serialized_value_size",
                               "serialized_header_size"])
OffsetAndTimestamp = namedtuple("OffsetAndTimestamp", ["offset", "timestamp"])

_OFFSET_INVALID = -1001
# librdkafka starts its threads inside rd_kafka_new and on the first metadata answer; one
# construction at a time lets the registry attribute the new rdk:* tasks to their client.
_construct_lock = threading.Lock()


def _rdk_tasks() -> set[int]:
    """This process's librdkafka threads (``rdk:*``), by OS name."""
    return {tid for tid, name in procfs.comms().items() if name.startswith("rdk:")}


def _error_callback(config: Config) -> Any:
    """librdkafka's error_cb: TLS and SASL failures to ``FAILURES``, named as kafka-python's
    are (a failed certificate check is retried once with Python's ssl, which says which)."""
    sec = clientconf.security(config.kafka)
    context = clientconf.ssl_context(sec) if sec.tls else None
    address = config.bootstrap_servers.split(",")[0].strip()

    def on_error(err: Any) -> None:
        FAILURES.failed(classify_librdkafka(err, sec.describe(), sec.trust, address, context))
    return on_error


def _header_size(headers: list[tuple[str, bytes | None]] | None) -> int:
    if not headers:
        return -1
    return sum(len(k.encode()) + (len(v) if v is not None else 0) for k, v in headers)


class ConfluentBackend:
    """A librdkafka Consumer used group-less: assign with explicit offsets, never commit."""

    name = "confluent"

    @classmethod
    def open(cls, config: Config, client_id: str, **owner: Any) -> "ConfluentBackend":
        from confluent_kafka import Consumer, KafkaException, libversion

        conf = {
            "bootstrap.servers": config.bootstrap_servers,
            "client.id": client_id,
            # librdkafka wants a group.id for any Consumer; assign() with explicit offsets and
            # no commits means the group is never joined nor written to.
            "group.id": "kafkatail-assign-only",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "allow.auto.create.topics": False,
            "auto.offset.reset": "latest",
            "enable.partition.eof": False,
            "fetch.wait.max.ms": _fetch_wait_ms(config),
            "socket.timeout.ms": max(10, config.request_timeout_ms),
            "reconnect.backoff.max.ms": 2000,
            "log.connection.close": False,
            # Prefetch bounded by bytes (8 MB a partition, not librdkafka's 64 MB or 100k
            # messages), refilled within 10 ms once the tail reads on: librdkafka's default
            # fetch.queue.backoff.ms (1 s) idled the fetcher every time the queue was full
            # (measured here: 200k records in 1.15 s with the defaults, 2.2 s with an 8 MB cap
            # alone, 0.24 s with both settings).
            "queued.min.messages": 10_000_000,
            "queued.max.messages.kbytes": 8192,
        }
        conf.update(clientconf.librdkafka(config))  # security, isolation.level
        conf["error_cb"] = _error_callback(config)
        sec = clientconf.security(config.kafka)
        if sec.client_id:
            conf["client.id"] = sec.client_id
        if libversion()[1] >= 0x020400FF:  # the setting is librdkafka 2.4's
            conf["fetch.queue.backoff.ms"] = 10
        consumer = None
        try:
            with _construct_lock:
                before = _rdk_tasks()
                consumer = Consumer(conf, logger=log)
                REGISTRY.register_native(_rdk_tasks() - before, "kafka-io", owner=client_id,
                                         **owner)
            # Connect now, as kafka-python's constructor does: a broker that is down fails
            # the tail at once, with the client (and its threads) destroyed.
            consumer.list_topics(timeout=config.request_timeout_ms / 1000)
        except BaseException as exc:
            if consumer is not None:
                consumer.close()
                REGISTRY.forget_native(client_id)
            if isinstance(exc, KafkaException):
                raise BrokerUnavailable(unavailable_reason(exc)) from None
            raise
        FAILURES.connected()
        # The brokers' own threads start on the first metadata answer, outside the lock (an
        # outage must not queue every construction behind one): claimed best effort, and by
        # role (rdk:* is kafka-io) whoever claims them.
        REGISTRY.register_native(_rdk_tasks() - before - REGISTRY.native_tids(), "kafka-io",
                                 owner=client_id, **owner)
        return cls(consumer, config, client_id)

    def __init__(self, consumer: Any, config: Config, client_id: str) -> None:
        from confluent_kafka import KafkaException
        from confluent_kafka import TopicPartition as CTP

        self.consumer = consumer
        self.config = config
        self.client_id = client_id
        self._ctp = CTP
        self._exc = KafkaException
        self._assigned: list[TopicPartition] = []
        self._started = False
        self._pos: dict[TopicPartition, int] = {}
        self._batch = _max_poll_records(config)
        self._closed = False

    def _timeout(self, timeout_ms: int) -> float:
        return max(timeout_ms, 1) / 1000

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        try:
            md = self.consumer.list_topics(topic, timeout=self.config.request_timeout_ms / 1000)
        except self._exc as exc:
            raise BrokerUnavailable(str(exc)) from None
        t = md.topics.get(topic)
        if t is not None and t.error is not None and (
                t.error.code() == t.error.TOPIC_AUTHORIZATION_FAILED):
            raise TopicDenied(topic)
        if t is None or t.error is not None or not t.partitions:
            return None
        return set(t.partitions)

    def assign(self, tps: Iterable[TopicPartition]) -> None:
        self._assigned = list(tps)

    def _watermarks(self, tps: list[TopicPartition], timeout_ms: int) -> dict:
        out = {}
        for tp in tps:
            try:
                out[tp] = self.consumer.get_watermark_offsets(
                    self._ctp(tp.topic, tp.partition), timeout=self._timeout(timeout_ms),
                    cached=False)
            except self._exc as exc:
                raise BrokerUnavailable(str(exc)) from None
            if out[tp] is None:
                raise BrokerUnavailable(f"no watermarks for {tp}")
        return out

    def beginning_offsets(self, tps: list[TopicPartition], timeout_ms: int) -> dict:
        return {tp: lo for tp, (lo, _hi) in self._watermarks(tps, timeout_ms).items()}

    def end_offsets(self, tps: list[TopicPartition], timeout_ms: int) -> dict:
        return {tp: hi for tp, (_lo, hi) in self._watermarks(tps, timeout_ms).items()}

    def offsets_for_times(self, times: dict, timeout_ms: int) -> dict:
        query = [self._ctp(tp.topic, tp.partition, ts) for tp, ts in times.items()]
        try:
            found = self.consumer.offsets_for_times(query, timeout=self._timeout(timeout_ms))
        except self._exc as exc:
            raise BrokerUnavailable(str(exc)) from None
        out = {}
        for c in found:
            tp = TopicPartition(c.topic, c.partition)
            out[tp] = OffsetAndTimestamp(c.offset, times[tp]) if c.offset >= 0 else None
        return out

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._pos[tp] = offset
        if self._started:
            # Re-assigning at the wanted offsets also drops what the fetcher queued past them.
            self._start()

    def _start(self) -> None:
        self.consumer.assign([self._ctp(tp.topic, tp.partition, self._pos.get(tp, -1))
                              for tp in self._assigned])
        self._started = True

    def poll(self, timeout_ms: int) -> dict[TopicPartition, list[Record]]:
        if not self._started:
            self._start()
        # What is queued already, at once; else wait for one message and take what came with it.
        msgs = self.consumer.consume(self._batch, 0)
        if not msgs:
            first = self.consumer.poll(self._timeout(timeout_ms))
            if first is None:
                return {}
            msgs = [first]
            if self._batch > 1:
                msgs += self.consumer.consume(self._batch - 1, 0)
        out: dict[TopicPartition, list[Record]] = {}
        topic = self._assigned[0].topic if self._assigned else None
        tps = {tp.partition: tp for tp in self._assigned}
        new, rec_type = tuple.__new__, Record  # the per-record path: no namedtuple __new__
        last_p, recs = None, None
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == err.TOPIC_AUTHORIZATION_FAILED:
                    raise TopicDenied(m.topic() or topic)
                if err.code() == err._BAD_COMPRESSION:
                    raise UndecodableBatch(m.topic() or topic, m.partition(), m.offset(),
                                           "its codec")
                if not err.retriable() and err.code() != err._PARTITION_EOF:
                    log.warning("%s: %s", self.client_id, err)
                continue
            p = m.partition()
            if p != last_p:
                tp = tps.get(p) or TopicPartition(topic, p)
                recs = out.setdefault(tp, [])
                last_p = p
            key, value, headers = m.key(), m.value(), m.headers()
            recs.append(new(rec_type, (
                topic, p, m.offset(), m.timestamp()[1], key, value,
                headers if headers else [],
                -1 if key is None else len(key), -1 if value is None else len(value),
                _header_size(headers) if headers else -1)))
        for tp, recs in out.items():
            self._pos[tp] = recs[-1].offset + 1
        return out

    def pause(self, *tps: TopicPartition) -> None:
        if self._started:
            self.consumer.pause([self._ctp(tp.topic, tp.partition) for tp in tps])

    def resume(self, *tps: TopicPartition) -> None:
        # Re-assigned at the next offsets poll() owes: what the fetcher had queued when paused
        # is neither lost nor repeated, whatever librdkafka does with a paused queue.
        if self._started:
            self.consumer.resume([self._ctp(tp.topic, tp.partition) for tp in tps])
            self._start()

    def highwater(self, tp: TopicPartition) -> int | None:
        """The high watermark of the last fetch answer (cached: no request)."""
        try:
            lo_hi = self.consumer.get_watermark_offsets(self._ctp(tp.topic, tp.partition),
                                                        cached=True)
        except self._exc:
            return None
        if not lo_hi or lo_hi[1] < 0:
            return None
        return lo_hi[1]

    def position(self, tp: TopicPartition, timeout_ms: int) -> int | None:
        """The next offset this backend returns for the partition: what poll() delivered or
        where it was sought, or past that where librdkafka passed offsets that hold no record
        for the application (transaction markers, aborted records)."""
        pos = self._pos.get(tp)
        if self._started and pos is not None:
            try:
                (found,) = self.consumer.position([self._ctp(tp.topic, tp.partition)])
            except self._exc:
                return pos
            if found.error is None and found.offset > pos:
                self._pos[tp] = pos = found.offset
        return pos

    def topic_listed(self, topic: str) -> bool:
        """A bounded metadata request; True when it cannot answer (probe() decides then)."""
        try:
            md = self.consumer.list_topics(topic, timeout=self._timeout(
                min(self.config.poll_timeout_ms, self.config.request_timeout_ms)))
        except self._exc:
            return True
        t = md.topics.get(topic)
        return t is not None and t.error is None and bool(t.partitions)

    def probe(self, tps: list[TopicPartition], timeout_ms: int) -> bool:
        try:
            self.consumer.get_watermark_offsets(self._ctp(tps[0].topic, tps[0].partition),
                                                timeout=self._timeout(timeout_ms), cached=False)
            return True
        except self._exc:
            return False

    def close(self, timeout_ms: int) -> None:
        if not self._closed:
            self._closed = True
            try:
                self.consumer.close()  # rd_kafka_destroy: joins every rdk:* thread
            finally:
                REGISTRY.forget_native(self.client_id)
