"""Cluster metadata for the HTTP API, through one shared, lazily opened consumer.

One client for all API calls (not one per request): a KafkaConsumer costs a connection and an
IO thread. Calls take turns on it; at most ``MAX_WAITING`` wait for their turn, each for at most
the request timeout, so a flood of lookups is refused (``MetadataBusy``, 503) instead of queueing
without end. Every call's outcome is remembered: ``/readyz`` answers from it while it is fresh
and never waits behind the API. A failure closes the client so the next call starts clean after
a broker restart.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from ..config import Config
from .backend import (BrokerUnavailable, TopicDenied, describe_denied, open_consumer,
                      unavailable_reason)

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
                self._consumer = open_consumer(self.config, "kt-meta")
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
