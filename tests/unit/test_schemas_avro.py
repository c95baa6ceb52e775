"""kafkatail.schemas.avro: what every Avro type looks like as JSON, and bytes that do not match
their schema are a SchemaError, never another exception."""
from __future__ import annotations

import datetime
import io
import json
import uuid
from decimal import Decimal

import pytest
from fastavro import parse_schema, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from kafkatail.schemas import SchemaError
from kafkatail.schemas.avro import avro_decoder

UTC = datetime.timezone.utc
EVERY = {"type": "record", "name": "Every", "fields": [
    {"name": "b", "type": "boolean"}, {"name": "i", "type": "int"}, {"name": "l", "type": "long"},
    {"name": "f", "type": "float"}, {"name": "d", "type": "double"},
    {"name": "s", "type": "string"}, {"name": "raw", "type": "bytes"},
    {"name": "fx", "type": {"type": "fixed", "name": "Four", "size": 4}},
    {"name": "dec", "type": {"type": "bytes", "logicalType": "decimal", "precision": 20,
                             "scale": 4}},
    {"name": "fdec", "type": {"type": "fixed", "name": "Dec8", "size": 8,
                              "logicalType": "decimal", "precision": 18, "scale": 2}},
    {"name": "ts_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "ts_us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    {"name": "local_ms", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
    {"name": "day", "type": {"type": "int", "logicalType": "date"}},
    {"name": "t_ms", "type": {"type": "int", "logicalType": "time-millis"}},
    {"name": "t_us", "type": {"type": "long", "logicalType": "time-micros"}},
    {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
    {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN"]}},
    {"name": "maybe", "type": ["null", "long", "string"]},
    {"name": "many", "type": {"type": "array", "items": "int"}},
    {"name": "named", "type": {"type": "map", "values": "double"}},
]}
ID = uuid.UUID("12345678-1234-5678-1234-567812345678")


def encode(schema: dict, datum: dict) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, parse_schema(schema), datum)
    return out.getvalue()


def test_every_type_and_logical_type_shows_faithfully():
    datum = {"b": True, "i": -5, "l": 2**62, "f": 1.5, "d": 0.1, "s": "héllo\n", "raw": b"\x00\xff",
             "fx": b"abcd", "dec": Decimal("-12345678.9012"), "fdec": Decimal("0.05"),
             "ts_ms": datetime.datetime(2026, 12, 6, 10, 10, 0, 123000, tzinfo=UTC),
             "ts_us": datetime.datetime(2026, 12, 6, 10, 10, 0, 123456, tzinfo=UTC),
             "local_ms": datetime.datetime(2026, 12, 6, 10, 10, 0, 5000),
             "day": datetime.date(2026, 12, 6), "t_ms": datetime.time(23, 59, 59, 999000),
             "t_us": datetime.time(0, 0, 0, 1), "id": ID, "color": "GREEN", "maybe": "x",
             "many": [1, 2, 3], "named": {"a": 0.5}}
    shown = json.loads(avro_decoder(json.dumps(EVERY), {})(encode(EVERY, datum)))
    assert shown == {
        "b": True, "i": -5, "l": 2**62, "f": 1.5, "d": 0.1, "s": "héllo\n", "raw": "AP8=",
        "fx": "YWJjZA==", "dec": "-12345678.9012", "fdec": "0.05",
        "ts_ms": "2026-12-06T10:10:00.123000Z", "ts_us": "2026-12-06T10:10:00.123456Z",
        "local_ms": "2026-12-06T10:10:00.005000", "day": "2026-12-06", "t_ms": "23:59:59.999000",
        "t_us": "00:00:00.000001", "id": str(ID), "color": "GREEN", "maybe": "x",
        "many": [1, 2, 3], "named": {"a": 0.5}}


def test_a_union_shows_its_branch_and_null():
    schema = {"type": "record", "name": "U", "fields": [{"name": "v", "type": ["null", "long"]}]}
    decode = avro_decoder(json.dumps(schema), {})
    assert decode(encode(schema, {"v": None})) == '{"v":null}'
    assert decode(encode(schema, {"v": 7})) == '{"v":7}'


def test_a_schema_that_is_not_avro_is_a_schema_error():
    with pytest.raises(SchemaError, match="Avro schema cannot be read"):
        avro_decoder('{"type": "record", "name": "R", "fields": [{"name": "x", "type": "nope"}]}',
                     {})
    with pytest.raises(SchemaError, match="Avro schema cannot be read"):
        avro_decoder("not json", {})


DECODE = avro_decoder(json.dumps(EVERY), {})


@settings(max_examples=500, deadline=1000)
@given(st.binary(max_size=300))
def test_random_bytes_only_ever_raise_schema_error(payload):
    try:
        json.loads(DECODE(payload))
    except SchemaError:
        pass
