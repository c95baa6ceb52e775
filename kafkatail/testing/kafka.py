"""Real-broker helpers for tests: a session broker, unique topics and a produce helper.

``KAFKATAIL_TEST_BROKER`` chooses the broker the session starts: ``tansu`` (the default: the
embedded broker, no JVM) or ``kafka`` (Apache Kafka, fetched with Maven: ``apache_kafka.py``).
``KAFKATAIL_TEST_BOOTSTRAP=host:port`` points them at an existing cluster instead, starting none;
one that needs TLS or SASL takes its client properties from ``KAFKATAIL_KAFKA_PROPERTIES`` (the
file ``kafkatail serve`` reads too), and every helper here connects with them.
"""
from __future__ import annotations

import itertools
import os
import uuid
from typing import TYPE_CHECKING, Iterable, Iterator

from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from ..broker import BrokerError, EmbeddedBroker
from ..clientprops import ClientProps, read_properties

if TYPE_CHECKING:
    from .apache_kafka import ApacheKafka

BOOTSTRAP_ENV = "KAFKATAIL_TEST_BOOTSTRAP"
PROPERTIES_ENV = "KAFKATAIL_KAFKA_PROPERTIES"
BROKER_ENV = "KAFKATAIL_TEST_BROKER"
BROKERS = ("tansu", "kafka")


class Cluster:
    """Where the tests' Kafka is, and (when embedded) the broker process to stop or restart."""

    def __init__(self, bootstrap: str, broker: EmbeddedBroker | ApacheKafka | None = None,
                 props: ClientProps | None = None) -> None:
        self.bootstrap = bootstrap
        self.broker = broker
        self.props = props or ClientProps()
        self.external = broker is None
        self._names = itertools.count(1)
        self._run = uuid.uuid4().hex[:6]

    @property
    def kind(self) -> str:
        """``tansu``, ``kafka`` or ``external``."""
        if self.broker is None:
            return "external"
        return "kafka" if hasattr(self.broker, "listeners") else "tansu"

    def describe(self) -> str:
        """What the session runs on, e.g. ``Apache Kafka 4.4.0 at 127.0.0.1:41234 (ready in
        5.2 s)``."""
        if self.broker is None:
            return f"an external cluster at {self.bootstrap}"
        if self.kind == "kafka":
            fetched = self.broker.fetch_seconds
            return (f"{self.broker.name} at {self.bootstrap} (ready in "
                    f"{self.broker.start_seconds:.1f} s"
                    + (f", after {fetched:.1f} s fetching it" if fetched >= 1 else "") + ")")
        return f"Tansu (embedded) at {self.bootstrap}"

    @property
    def client_settings(self) -> dict:
        """kafka-python settings for the cluster's security (none on the brokers started
        here): what the helpers below, and a test's own clients, connect with."""
        from ..config import Config
        from ..tail.clientconf import kafka_python
        return kafka_python(Config(kafka=self.props, bootstrap_servers=self.bootstrap))

    def _admin(self) -> KafkaAdminClient:
        return KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="kt-test-admin",
                                **self.client_settings)

    def unique_topic(self, prefix: str = "t") -> str:
        return f"{prefix}.{self._run}.{next(self._names)}"

    def create_topic(self, name: str | None = None, partitions: int = 1,
                     configs: dict[str, str] | None = None) -> str:
        """A topic (a unique name unless given); ``configs`` are topic configs, e.g.
        ``{"cleanup.policy": "compact"}``."""
        name = name or self.unique_topic()
        admin = self._admin()
        try:
            admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs or {})])
        finally:
            admin.close()
        return name

    def topics(self) -> set[str]:
        """The names of the topics the cluster lists now."""
        admin = self._admin()
        try:
            return set(admin.list_topics())
        finally:
            admin.close()

    def delete_topic(self, name: str) -> None:
        admin = self._admin()
        try:
            admin.delete_topics([name])
        finally:
            admin.close()

    def delete_records(self, topic: str, before: dict[int, int], timeout_ms: int = 5000) -> None:
        """Delete each partition's records below the given offset, so its earliest offset moves
        up as retention would move it. Raises KafkaError where the broker cannot (Tansu 0.6's
        memory storage advertises DeleteRecords but drops the connection)."""
        admin = self._admin()
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
                                 linger_ms=5, **self.client_settings)
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


def broker_kind() -> str:
    """The broker ``KAFKATAIL_TEST_BROKER`` asks for; BrokerError for an unknown name."""
    kind = os.environ.get(BROKER_ENV, "").strip().lower() or "tansu"
    if kind not in BROKERS:
        raise BrokerError(f"{BROKER_ENV}={kind!r}: use one of {', '.join(BROKERS)}")
    return kind


def start_cluster(kind: str | None = None) -> Iterator[Cluster]:
    """Yield the external cluster if configured, else a fresh broker of ``kind`` (default:
    ``broker_kind()``), stopped after."""
    external = os.environ.get(BOOTSTRAP_ENV)
    if external:
        path = os.environ.get(PROPERTIES_ENV)
        yield Cluster(external, props=ClientProps(read_properties(path), source=path)
                      if path else None)
        return
    if (kind or broker_kind()) == "kafka":
        from .apache_kafka import ApacheKafka
        broker: EmbeddedBroker | ApacheKafka = ApacheKafka().start()
    else:
        broker = EmbeddedBroker().start()
    try:
        yield Cluster(broker.bootstrap, broker)
    finally:
        broker.stop()
