"""Realistic sample traffic for the kafkatail demo: four topics (text logs, JSON orders,
binary sensor readings, an audit log with tombstones) fed at a bursty rate by one
background thread, so a fresh broker has something worth tailing.
"""
from __future__ import annotations

import json
import logging
import random
import struct
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from .tail.kafkafix import construct

log = logging.getLogger(__name__)

Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]

LOGS_TOPIC = "demo.app-logs"
ORDERS_TOPIC = "demo.orders"
SENSOR_TOPIC = "demo.sensor-bin"
AUDIT_TOPIC = "demo.audit"

DEMO_TOPICS: tuple[NewTopic, ...] = (
    NewTopic(LOGS_TOPIC, num_partitions=3, replication_factor=1),
    NewTopic(ORDERS_TOPIC, num_partitions=3, replication_factor=1),
    NewTopic(SENSOR_TOPIC, num_partitions=1, replication_factor=1),
    NewTopic(AUDIT_TOPIC, num_partitions=1, replication_factor=1),
)

# Builders default to this instant (2026-11-24T06:00:00Z) so that their output is a pure
# function of the Random; the generator passes the real time.
REFERENCE_TIME = 1795500000.0

THREAD_NAME = "kt-demo-traffic"
PRODUCER_CLIENT_ID = "kt-demo-producer"
ADMIN_CLIENT_ID = "kt-demo-admin"

_WARN_EVERY_S = 30.0
_BACKOFF_MIN_S = 1.0
_BACKOFF_MAX_S = 30.0


def _iso(ts: float) -> str:
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _hex(rng: random.Random, nbytes: int) -> str:
    return f"{rng.getrandbits(nbytes * 8):0{nbytes * 2}x}"


# --- demo.app-logs -------------------------------------------------------------------

_SERVICES = {
    "checkout-svc": [("POST", "/api/checkout"), ("GET", "/api/cart"), ("PUT", "/api/cart/items")],
    "catalog-svc": [("GET", "/api/products"), ("GET", "/api/products/{id}"), ("GET", "/api/categories")],
    "auth-svc": [("POST", "/api/login"), ("POST", "/api/token/refresh"), ("POST", "/api/logout")],
    "payment-svc": [("POST", "/api/payments"), ("GET", "/api/payments/{id}")],
    "search-svc": [("GET", "/api/search"), ("GET", "/api/suggest")],
}
_LEVELS = ("DEBUG", "INFO", "WARN", "ERROR")
_LEVEL_WEIGHTS = (8, 80, 9, 3)
_WARN_MESSAGES = ("slow upstream response", "retrying request", "rate limit close to quota",
                  "cache miss storm")
_ERROR_MESSAGES = ("upstream timeout", "connection reset by peer", "unhandled exception",
                   "database deadlock detected")


def make_log_line(rng: random.Random, now: float = REFERENCE_TIME) -> Record:
    """One access-log style text line; key is the service name."""
    service = rng.choice(list(_SERVICES))
    method, path = rng.choice(_SERVICES[service])
    path = path.replace("{id}", str(rng.randint(1000, 99999)))
    level = rng.choices(_LEVELS, _LEVEL_WEIGHTS)[0]
    latency = max(1, int(rng.lognormvariate(2.7, 0.7)))
    if level == "ERROR":
        status = rng.choice((500, 502, 503, 504))
        latency += rng.randint(200, 5000)
    elif level == "WARN":
        status = rng.choice((200, 404, 409, 429))
        latency += rng.randint(300, 1500)
    else:
        status = rng.choices((200, 201, 204, 304), (80, 8, 7, 5))[0]
    line = (f"{_iso(now)} {level:<5} {service} request_id={_hex(rng, 8)} "
            f"{method} {path} {status} {latency}ms")
    if level == "WARN":
        line += f' msg="{rng.choice(_WARN_MESSAGES)}"'
    elif level == "ERROR":
        line += f' msg="{rng.choice(_ERROR_MESSAGES)}"'
    return service.encode(), line.encode("utf-8"), []


# --- demo.orders ---------------------------------------------------------------------

_PRODUCTS = (
    ("SKU-1001", "Espresso beans 1kg", 2490),
    ("SKU-1002", "Ceramic mug", 1250),
    ("SKU-2040", "Pour-over kettle", 5990),
    ("SKU-2077", "Burr grinder", 12900),
    ("SKU-3105", "Paper filters (100)", 499),
    ("SKU-3300", "Milk frother", 3450),
)
_COUNTRIES = ("DE", "FR", "NL", "US", "GB", "ES", "PL")
_SOURCES = ("web", "ios", "android", "pos")


def make_order(rng: random.Random, now: float = REFERENCE_TIME) -> Record:
    """One JSON order with nested items; key is the order id, headers trace-id and source."""
    order_id = f"ord-{_hex(rng, 5)}"
    items = []
    total_cents = 0
    for sku, name, price in rng.sample(_PRODUCTS, rng.randint(1, 4)):
        qty = rng.choices((1, 2, 3, 6), (70, 20, 7, 3))[0]
        total_cents += qty * price
        items.append({"sku": sku, "name": name, "qty": qty, "unit_price": price / 100})
    order = {
        "order_id": order_id,
        "created_at": _iso(now),
        "status": rng.choices(("created", "paid", "cancelled"), (70, 25, 5))[0],
        "customer": {"id": f"cus-{rng.randint(10000, 99999)}", "country": rng.choice(_COUNTRIES)},
        "items": items,
        "currency": "EUR",
        "total": total_cents / 100,
    }
    headers = [("trace-id", _hex(rng, 16).encode()), ("source", rng.choice(_SOURCES).encode())]
    return order_id.encode(), json.dumps(order, separators=(",", ":")).encode(), headers


# --- demo.sensor-bin -----------------------------------------------------------------

# magic 0xA5, version, timestamp ms, sensor id, temperature (centi-degC),
# relative humidity (per mille), battery (%); little endian, 17 bytes.
SENSOR_FORMAT = struct.Struct("<BBQHhHB")
_SENSOR_MAGIC = 0xA5


def make_sensor(rng: random.Random, now: float = REFERENCE_TIME) -> Record:
    """One struct-packed sensor reading (never valid UTF-8); key is the device id or None."""
    sensor_id = rng.randint(1, 24)
    payload = SENSOR_FORMAT.pack(
        _SENSOR_MAGIC, 1, int(now * 1000), sensor_id,
        int(rng.gauss(2150, 350)), max(0, min(1000, int(rng.gauss(450, 80)))), rng.randint(5, 100),
    )
    # Some legacy devices publish without a key.
    key = None if rng.random() < 0.25 else f"th-{sensor_id:04d}".encode()
    return key, payload, [("schema", b"sensor.v1")]


# --- demo.audit ----------------------------------------------------------------------

_ACTORS = ("user:alice", "user:bob", "user:carol", "svc:billing", "svc:scheduler")
_ACTIONS = ("login", "logout", "role.grant", "role.revoke", "apikey.create", "settings.update")


def make_audit(rng: random.Random, now: float = REFERENCE_TIME) -> Record:
    """One JSON audit event keyed by the affected entity; ~10% are tombstones (value None)."""
    entity = f"user-{rng.randint(1, 40):03d}"
    actor = rng.choice(_ACTORS)
    if rng.random() < 0.1:
        return entity.encode(), None, [("actor", actor.encode()), ("reason", b"erasure-request")]
    event = {
        "event_id": _hex(rng, 8),
        "ts": _iso(now),
        "actor": actor,
        "action": rng.choice(_ACTIONS),
        "entity": entity,
        "ip": f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
        "success": rng.random() > 0.05,
    }
    return entity.encode(), json.dumps(event, separators=(",", ":")).encode(), [("actor", actor.encode())]


_BUILDERS: tuple[tuple[str, Callable[[random.Random, float], Record]], ...] = (
    (LOGS_TOPIC, make_log_line), (ORDERS_TOPIC, make_order),
    (SENSOR_TOPIC, make_sensor), (AUDIT_TOPIC, make_audit),
)
_BUILDER_WEIGHTS = (50, 25, 15, 10)


def pacing(rng: random.Random) -> Iterator[float]:
    """Endless gaps in seconds between records: 1-3 s phases at 5-40 records/s,
    now and then a quiet spell of over a second."""
    while True:
        if rng.random() < 0.12:
            yield rng.uniform(1.0, 2.5)
            continue
        rate = rng.triangular(5.0, 40.0, 12.0)
        phase, elapsed = rng.uniform(1.0, 3.0), 0.0
        while elapsed < phase:
            gap = max(0.002, rng.expovariate(rate))
            elapsed += gap
            yield gap


# --- kafka ---------------------------------------------------------------------------

def create_demo_topics(bootstrap_servers: str, *, bootstrap_timeout_ms: int = 10_000,
                       security: dict[str, Any] | None = None) -> None:
    """Create DEMO_TOPICS; topics that already exist are left alone. ``security``: kafka-python
    settings for a cluster that needs them (``tail.clientconf.kafka_python``)."""
    admin = construct(KafkaAdminClient, bootstrap_servers=bootstrap_servers,
                       client_id=ADMIN_CLIENT_ID, bootstrap_timeout_ms=bootstrap_timeout_ms,
                       **(security or {}))
    try:
        specs = {t.name: {"num_partitions": t.num_partitions,
                          "replication_factor": t.replication_factor} for t in DEMO_TOPICS}
        result = admin.create_topics(specs, timeout_ms=10_000, raise_errors=False)
        for topic in result["topics"]:
            code = topic["error_code"]
            if code and code != TopicAlreadyExistsError.errno:
                raise for_code(code)(f"creating {topic['name']}: {topic.get('error_message')}")
    finally:
        admin.close()


class TrafficGenerator:
    """Produces demo records to DEMO_TOPICS from one daemon thread until stop()."""

    def __init__(self, bootstrap_servers: str, *, seed: int | None = None,
                 security: dict[str, Any] | None = None) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._security = dict(security or {})
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warn_lock = threading.Lock()
        self._last_warning = float("-inf")

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            raise RuntimeError("TrafficGenerator already running")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Signal the thread and wait up to ``timeout`` s for it (and its producer) to end."""
        self._stop.set()
        if self._thread is None:
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("demo traffic thread still running %.1f s after stop()", timeout)

    def _warn(self, exc: BaseException) -> None:
        with self._warn_lock:
            now = time.monotonic()
            if now - self._last_warning < _WARN_EVERY_S:
                return
            self._last_warning = now
        log.warning("demo traffic: producing to %s failed (%s); retrying, further "
                    "failures muted for %.0f s", self._bootstrap_servers, exc, _WARN_EVERY_S)

    def _on_send_error(self, exc: BaseException) -> None:
        # Runs on the producer's sender thread; records aborted by close() are expected.
        if not self._stop.is_set():
            self._warn(exc)

    def _new_producer(self) -> KafkaProducer:
        return construct(
            KafkaProducer,
            bootstrap_servers=self._bootstrap_servers,
            client_id=PRODUCER_CLIENT_ID,
            linger_ms=20,
            # A demo feed needs no exactly-once; idempotence would wedge the producer in a
            # fatal state when an in-memory broker restarts and forgets its producer ids.
            enable_idempotence=False,
            acks=1,
            # Bound every blocking call so stop() is honoured within a few seconds.
            bootstrap_timeout_ms=2000,
            max_block_ms=2000,
            **self._security,
        )

    def _run(self) -> None:
        rng, stop = self._rng, self._stop
        gaps = pacing(rng)
        topics = [topic for topic, _ in _BUILDERS]
        builders = dict(_BUILDERS)
        producer: KafkaProducer | None = None
        backoff = _BACKOFF_MIN_S
        try:
            while not stop.is_set():
                try:
                    if producer is None:
                        producer = self._new_producer()
                        log.info("demo traffic: producing to %s", self._bootstrap_servers)
                    topic = rng.choices(topics, _BUILDER_WEIGHTS)[0]
                    key, value, headers = builders[topic](rng, time.time())
                    producer.send(topic, key=key, value=value, headers=headers) \
                        .add_errback(self._on_send_error)
                    backoff = _BACKOFF_MIN_S
                except KafkaError as exc:
                    self._warn(exc)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX_S)
                    continue
                stop.wait(next(gaps))
        except Exception:
            log.exception("demo traffic thread crashed")
        finally:
            if producer is not None:
                try:
                    producer.close(timeout=2)
                except Exception:
                    log.debug("closing demo producer failed", exc_info=True)
