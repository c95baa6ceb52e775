import json
import logging
import random
import threading
import time

import pytest
from kafka.errors import KafkaError

from kafkatail import demo_traffic as dt

BUILDERS = [dt.make_log_line, dt.make_order, dt.make_sensor, dt.make_audit]
UNREACHABLE = "127.0.0.1:1"


def _draws(builder, n=200, seed=7):
    rng = random.Random(seed)
    return [builder(rng) for _ in range(n)]


def _leftover_threads():
    return [t.name for t in threading.enumerate()
            if t.name == dt.THREAD_NAME
            or t.name.startswith(("kafka-io-kt-demo", "kt-demo-producer"))]


def _wait_until(predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_demo_topics():
    assert [(t.name, t.num_partitions) for t in dt.DEMO_TOPICS] == [
        ("demo.app-logs", 3), ("demo.orders", 3), ("demo.sensor-bin", 1), ("demo.audit", 1)]


@pytest.mark.parametrize("builder", BUILDERS)
def test_builders_are_deterministic_and_well_typed(builder):
    records = _draws(builder, n=50)
    assert records == _draws(builder, n=50)
    assert len(set(map(repr, records))) > 1
    for key, value, headers in records:
        assert key is None or isinstance(key, bytes)
        assert value is None or isinstance(value, bytes)
        assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in headers)


def test_log_lines_are_utf8_text_keyed_by_service():
    levels = set()
    for key, value, _ in _draws(dt.make_log_line):
        line = value.decode("utf-8")
        assert line.startswith("2026-11-24T06:00:00.000Z ")
        assert key.decode() in line
        assert "request_id=" in line
        levels.add(line.split()[1])
    assert {"INFO", "WARN", "ERROR"} <= levels


def test_log_level_mix_has_rare_warnings_and_errors():
    levels = [v.decode().split()[1] for _, v, _ in _draws(dt.make_log_line, n=2000)]
    assert levels.count("INFO") > 10 * levels.count("ERROR")
    assert levels.count("INFO") > 4 * levels.count("WARN")


def test_orders_are_json_keyed_by_order_id():
    for key, value, headers in _draws(dt.make_order):
        order = json.loads(value)
        assert key.decode() == order["order_id"]
        assert order["items"] and all({"sku", "qty", "unit_price"} <= set(i) for i in order["items"])
        total = sum(i["qty"] * i["unit_price"] for i in order["items"])
        assert order["total"] == pytest.approx(total)
        assert {"trace-id", "source"} <= dict(headers).keys()


def test_sensor_payloads_are_binary():
    records = _draws(dt.make_sensor)
    not_utf8 = 0
    for key, value, _ in records:
        assert isinstance(value, bytes) and len(value) == dt.SENSOR_FORMAT.size
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            not_utf8 += 1
    assert not_utf8 > 0
    keys = [k for k, _, _ in records]
    assert None in keys and any(isinstance(k, bytes) for k in keys)


def test_audit_has_tombstones_with_keys():
    records = _draws(dt.make_audit)
    values = [v for _, v, _ in records]
    assert None in values
    assert any(v is not None for v in values)
    for key, value, _ in records:
        assert key  # a tombstone without a key is meaningless
        if value is not None:
            assert json.loads(value)["entity"] == key.decode()


def test_pacing_is_bursty_but_bounded():
    gaps = list(zip(range(5000), dt.pacing(random.Random(3))))
    gaps = [g for _, g in gaps]
    assert min(gaps) > 0  # never a busy loop
    assert max(gaps) >= 1.0  # quiet spells happen
    assert 5 <= len(gaps) / sum(gaps) <= 40


def test_stop_ends_thread_when_broker_unreachable(caplog):
    caplog.set_level(logging.WARNING, logger=dt.__name__)
    gen = dt.TrafficGenerator(UNREACHABLE, seed=1)
    gen.start()
    try:
        assert gen.running
        assert dt.THREAD_NAME in [t.name for t in threading.enumerate()]
        # Let at least one producer construction fail so its cleanup path runs.
        assert _wait_until(lambda: any(r.name == dt.__name__ for r in caplog.records), 15)
    finally:
        started = time.monotonic()
        gen.stop()
    assert time.monotonic() - started < 5.0
    assert not gen.running
    assert _wait_until(lambda: not _leftover_threads(), 5), _leftover_threads()
    warnings = [r for r in caplog.records if r.name == dt.__name__ and r.levelno == logging.WARNING]
    assert len(warnings) == 1  # throttled to one per 30 s


def test_stop_right_after_start():
    gen = dt.TrafficGenerator(UNREACHABLE)
    gen.start()
    gen.stop()
    assert not gen.running
    assert _wait_until(lambda: not _leftover_threads(), 5), _leftover_threads()


def test_create_demo_topics_unreachable_leaves_no_thread():
    with pytest.raises(KafkaError):
        dt.create_demo_topics(UNREACHABLE, bootstrap_timeout_ms=500)
    assert _wait_until(lambda: not _leftover_threads(), 5), _leftover_threads()
