"""Cluster metadata for the HTTP API, through one shared, lazily opened consumer.

One client for all API calls (not one per request): a KafkaConsumer costs a connection and an
IO thread. Calls are serialised by a lock; a failure closes the client so the next call starts
clean after a broker restart.
"""
from __future__ import annotations

import threading
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from ..config import Config
from .backend import (BrokerUnavailable, TopicDenied, describe_denied, open_consumer,
                      unavailable_reason)


class Metadata:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._consumer: KafkaConsumer | None = None
        self._closed = False

    def _call(self, fn: Any) -> Any:
        with self._lock:
            if self._closed:
                raise BrokerUnavailable("server shutting down")
            if self._consumer is None:
                self._consumer = open_consumer(self.config, "kt-meta")
            try:
                return fn(self._consumer)
            except KafkaError as exc:
                self._consumer.close(autocommit=False, timeout_ms=1000)
                self._consumer = None
                raise BrokerUnavailable(unavailable_reason(exc)) from None

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

    def unready(self) -> str | None:
        """None if the cluster answers a metadata request, else why not (``/readyz``)."""
        try:
            self._call(lambda c: c.topics())
            return None
        except BrokerUnavailable as exc:
            return str(exc)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._consumer is not None:
                self._consumer.close(autocommit=False, timeout_ms=1000)
                self._consumer = None
