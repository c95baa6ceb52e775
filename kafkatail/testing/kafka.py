"""Real-broker helpers for tests: a session broker, unique topics and a produce helper.

``KAFKATAIL_TEST_BOOTSTRAP=host:port`` points them at an existing cluster instead of starting
the embedded Tansu broker, so the same suite runs against Apache Kafka where one exists.
"""
from __future__ import annotations

import itertools
import os
import uuid
from typing import Iterable, Iterator

from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from ..broker import EmbeddedBroker

BOOTSTRAP_ENV = "KAFKATAIL_TEST_BOOTSTRAP"


class Cluster:
    """Where the tests' Kafka is, and (when embedded) the broker process to stop or restart."""

    def __init__(self, bootstrap: str, broker: EmbeddedBroker | None = None) -> None:
        self.bootstrap = bootstrap
        self.broker = broker
        self.external = broker is None
        self._names = itertools.count(1)
        self._run = uuid.uuid4().hex[:6]

    def unique_topic(self, prefix: str = "t") -> str:
        return f"{prefix}.{self._run}.{next(self._names)}"

    def create_topic(self, name: str | None = None, partitions: int = 1) -> str:
        name = name or self.unique_topic()
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="kt-test-admin")
        try:
            admin.create_topics([NewTopic(name, partitions, 1)])
        finally:
            admin.close()
        return name

    def topics(self) -> set[str]:
        """The names of the topics the cluster lists now."""
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="kt-test-admin")
        try:
            return set(admin.list_topics())
        finally:
            admin.close()

    def delete_topic(self, name: str) -> None:
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="kt-test-admin")
        try:
            admin.delete_topics([name])
        finally:
            admin.close()

    def delete_records(self, topic: str, before: dict[int, int], timeout_ms: int = 5000) -> None:
        """Delete each partition's records below the given offset, so its earliest offset moves
        up as retention would move it. Raises KafkaError where the broker cannot (Tansu 0.6's
        memory storage advertises DeleteRecords but drops the connection)."""
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="kt-test-admin")
        try:
            admin.delete_records({TopicPartition(topic, p): o for p, o in before.items()},
                                 timeout_ms=timeout_ms)
        finally:
            admin.close()

    def produce(self, topic: str, records: Iterable[tuple], flush_each: bool = False) -> int:
        """Send (key, value[, partition[, headers[, timestamp_ms]]]) tuples; returns the count.

        ``flush_each`` puts every record in its own batch: Tansu's ListOffsets LATEST answers
        with the last batch's base offset + 1, which is only the true end with one-record batches.
        """
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, client_id="kt-test-producer",
                                 linger_ms=5)
        n = 0
        try:
            for rec in records:
                key, value, *rest = rec
                partition = rest[0] if len(rest) > 0 else None
                headers = rest[1] if len(rest) > 1 else None
                ts = rest[2] if len(rest) > 2 else None
                producer.send(topic, key=_b(key), value=_b(value), partition=partition,
                              headers=headers, timestamp_ms=ts)
                n += 1
                if flush_each:
                    producer.flush()
            producer.flush()
        finally:
            producer.close(timeout=5)
        return n


def _b(v: object) -> bytes | None:
    if v is None or isinstance(v, bytes):
        return v
    return str(v).encode()


def start_cluster() -> Iterator[Cluster]:
    """Yield the external cluster if configured, else a fresh embedded broker, stopped after."""
    external = os.environ.get(BOOTSTRAP_ENV)
    if external:
        yield Cluster(external)
        return
    broker = EmbeddedBroker().start()
    try:
        yield Cluster(broker.bootstrap, broker)
    finally:
        broker.stop()
