"""Avro payloads as JSON, with fastavro (C-accelerated, the reader confluent-kafka uses too).

Logical types are shown so a reader can see them and a program can recover them exactly: a
decimal as its exact digits in a string, timestamps, dates and times in ISO 8601 (UTC with
``Z``, to the microsecond the type holds), a UUID as its text. ``bytes`` and ``fixed`` are
base64, as in the Protobuf JSON mapping. Unions show the branch's value alone.
"""
from __future__ import annotations

import base64
import io
import json
from decimal import Decimal
from typing import Any, Callable, Mapping

import fastavro
import orjson

from . import SchemaError

_OPTIONS = orjson.OPT_UTC_Z


def _jsonable(value: Any) -> Any:
    """What orjson cannot write itself: decimals (exact, as strings) and bytes (base64)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(type(value).__name__)


def avro_decoder(schema: str, references: Mapping[str, str]) -> Callable[[bytes], str]:
    """``decode(payload) -> JSON text`` for payloads written with ``schema``, whose named types
    may come from ``references`` (texts of the referenced schemas, dependencies first)."""
    named: dict[str, Any] = {}
    try:
        for text in references.values():
            fastavro.parse_schema(json.loads(text), named_schemas=named)
        parsed = fastavro.parse_schema(json.loads(schema), named_schemas=named)
    except (ValueError, TypeError, KeyError, fastavro.schema.SchemaParseException) as exc:
        raise SchemaError(f"Avro schema cannot be read: {_first_line(exc)}") from None
    reader = fastavro.schemaless_reader

    def decode(payload: bytes) -> str:
        try:
            datum = reader(io.BytesIO(payload), parsed, None)
        except Exception:  # fastavro raises EOFError, ValueError, IndexError... on bad bytes
            raise SchemaError("payload does not match its Avro schema") from None
        try:
            return orjson.dumps(datum, default=_jsonable, option=_OPTIONS).decode("utf-8")
        except orjson.JSONEncodeError as exc:
            raise SchemaError(f"decoded Avro value cannot be shown as JSON: {exc}") from None
    return decode


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
