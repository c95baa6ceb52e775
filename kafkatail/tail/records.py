"""Turn a batch of Kafka ConsumerRecords into protocol dicts, filtering as it goes, and those
into one frame's JSON.

Batch-shaped on purpose: the format, matcher and size limit are looked up once per batch, a
record that does not match is dropped before its value is parsed, and a JSON value is checked,
not re-encoded: it goes into the frame as its own text.
"""
from __future__ import annotations

import base64
import json
import re
import time
from json.encoder import encode_basestring
from typing import Any, Iterable, Protocol

import orjson

from ..schemas import SchemaError
from ..schemas.decoding import Schemas
from .frames import dumps, messages_joined
from .masking import Masker
from .request import Matcher

_b64 = base64.b64encode


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


# NaN and Infinity are Python's extensions, not JSON: such a value stays text (frames are
# strict JSON, so a browser's JSON.parse can read them).
_loads = json.JSONDecoder(parse_constant=_not_json).decode
# The check a value is JSON: orjson's, 3.5x the stdlib's. It refuses a few JSON texts the stdlib
# takes (1e400, a lone surrogate, nesting past 1,024), so a refusal is decided by the stdlib.
_check = orjson.loads
_Refused = orjson.JSONDecodeError
_CONTAINER_START = frozenset(b'{["')
# In auto format a value not opening a container is JSON only if it is one whole scalar: a log
# line starting with a date would otherwise be parsed (and fail, raising) on every record.
_SCALAR = re.compile(r"(?:-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null)\s*").fullmatch


def _text(raw: bytes, truncated: bool = False) -> str | None:
    """UTF-8 text (once truncated, tolerating a multi-byte character the cut split); None if
    binary."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if truncated and exc.start >= len(raw) - 3 and exc.reason == "unexpected end of data":
            return raw[:exc.start].decode("utf-8")
        return None


# Control bytes no text holds: TAB, LF, FF, CR and ESC (ANSI colours in logs) are text; the rest
# (NUL above all) mark a binary value that happens to be valid UTF-8, such as Avro or Protobuf.
_CONTROLS = bytes([*range(0x00, 0x09), 0x0b, *range(0x0e, 0x1b), *range(0x1c, 0x20), 0x7f])
# The Confluent wire format (Schema Registry serializers): magic byte 0, a 4-byte schema id.
_FRAMED_HEAD = 5


def _binary(raw: bytes, text: str) -> bool:
    """Does ``raw`` (whose UTF-8 decoding is ``text``) hold a control byte (see ``_CONTROLS``)?
    Printable text, the usual key and log line, is answered by one C scan; the rest costs
    about 0.7 us per KB."""
    return not text.isprintable() and len(raw.translate(None, _CONTROLS)) != len(raw)


def schema_id(raw: bytes) -> int | None:
    """The schema id of a value or key in the Confluent wire format, None if it is not framed."""
    if raw[:1] != b"\x00" or len(raw) < _FRAMED_HEAD:
        return None
    found = int.from_bytes(raw[1:_FRAMED_HEAD], "big")
    # Registries number schemas from 1, in a signed 32-bit int: other bytes are not framed.
    return found if 0 < found < 1 << 31 else None


def _base64(raw: bytes) -> str:
    return _b64(raw).decode("ascii")


class _Framed:
    """Reads framed keys and values of one batch through the registry's decoders, waiting for
    a new schema until one deadline for the whole batch (``Schemas.wait_s`` from its start)."""

    __slots__ = ("schemas", "deadline")

    def __init__(self, schemas: Schemas | None) -> None:
        self.schemas = schemas
        self.deadline = 0.0 if schemas is None else time.monotonic() + schemas.wait_s

    def read(self, raw: bytes, framed: int, truncated: bool) -> tuple[str, str, str | None]:
        """(JSON text, encoding, None), or, undecoded, (``{"schema_id","payload"}``, ``json``,
        the reason)."""
        if self.schemas is None:
            reason = "no schema registry configured (schema_registry_url)"
        elif truncated:
            reason = "over max_value_bytes: cut, so not decoded"
        else:
            try:
                decoder = self.schemas.decoder(framed, self.deadline)
                return decoder.decode(raw[_FRAMED_HEAD:]), decoder.encoding, None
            except SchemaError as exc:
                reason = str(exc)
        return (f'{{"schema_id":{framed},"payload":"{_base64(raw[_FRAMED_HEAD:])}"}}', "json",
                reason)


# What _key answers for a null key, the usual one: taken without the call.
_NO_KEY = (None, None, None, None)


def _key(raw: bytes | None, framing: _Framed) -> tuple[str | None, str | None, int | None,
                                                       str | None]:
    """(key, its encoding, its schema id if framed, why a framed key is not decoded)."""
    if raw is None:
        return None, None, None, None
    # The first byte alone rules out most keys without a call (a text key never starts at 0).
    framed = schema_id(raw) if raw[:1] == b"\x00" else None
    if framed is not None:
        text, encoding, reason = framing.read(raw, framed, False)
        if reason is None:
            return text, encoding, framed, None
        return _base64(raw), "base64", framed, reason
    text = _text(raw)
    if text is None or _binary(raw, text):
        return _base64(raw), "base64", None, None
    return text, "text", None, None


def _headers(headers: list[tuple[str, bytes | None]]) -> list[list[Any]]:
    out = []
    for name, raw in headers:
        if raw is None:
            out.append([name, None])
            continue
        text = _text(raw)
        out.append([name, text] if text is not None and not _binary(raw, text)
                   else [name, _base64(raw), "base64"])
    return out


# Encodings whose value is JSON text, spliced into the frame as it is.
JSON_ENCODINGS = frozenset({"json", "avro", "protobuf", "json-schema"})
# _value's encoding for a text that may be JSON: checked only once the record matches.
_MAYBE_JSON = "json?"


def _value(raw: bytes, fmt: str, truncated: bool,
           framing: _Framed) -> tuple[Any, str, str, int | None, str | None]:
    """(value, encoding, text filters see, schema id, why a framed value is not decoded);
    encoding ``_MAYBE_JSON`` leaves the check to ``_json_or_binary``, so a filter that drops the
    record never pays for it. Filters see the value as the frame shows it.

    A value in the Confluent wire format is decoded through the registry (encoding ``avro``,
    ``protobuf`` or ``json-schema``), or shown as ``{"schema_id": N, "payload": base64}``
    (encoding ``json``) with the reason; a value that is not text, or text holding control
    bytes, as base64."""
    if fmt == "base64":
        return (shown := _base64(raw)), "base64", shown, None, None
    framed = schema_id(raw) if raw[:1] == b"\x00" else None
    if framed is not None:
        shown, encoding, reason = framing.read(raw, framed, truncated)
        return shown, encoding, shown, framed, reason
    text = _text(raw, truncated)
    if text is None:
        return (shown := _base64(raw)), "base64", shown, None, None
    if fmt == "text" or truncated or not raw or (
            fmt == "auto" and raw[0] not in _CONTAINER_START and _SCALAR(text) is None):
        if _binary(raw, text):
            return (shown := _base64(raw)), "base64", shown, None, None
        return text, "text", text, None, None
    # Checked for control bytes only if it is not JSON (which holds none): the scan costs more
    # than the JSON check on a typical value. Filters see its text meanwhile.
    return text, _MAYBE_JSON, text, None, None


def _json_or_binary(raw: bytes, text: str) -> tuple[str, str]:
    """(value, encoding) of a whole value that may be JSON: itself as JSON or text, or base64
    when it is neither and holds a control byte.

    A JSON value is framed as its own text, not encoded again from the parse: that cost more
    than the parse, and a round trip would change integers past 64 bits, ``1e400`` and the order
    of keys."""
    try:
        _check(text)
        return text, "json"
    except _Refused:
        pass
    try:
        _loads(text)
        return text, "json"
    except (ValueError, RecursionError):
        pass
    return (_base64(raw), "base64") if _binary(raw, text) else (text, "text")


Decoded = tuple[dict[str, Any], "str | None", "str | None"]


def encode_batch(records: Iterable[Any], fmt: str, matcher: Matcher, max_value_bytes: int,
                 schemas: Schemas | None = None,
                 masker: Masker | None = None) -> list[dict[str, Any]]:
    """Matching records of one poll() batch as protocol dicts, in the order given."""
    return [d[0] for d in decode_batch(records, fmt, max_value_bytes, matcher, schemas, masker)]


def select(decoded: list[Decoded], matcher: Matcher) -> list[dict[str, Any]]:
    """The records of a decoded batch that a viewer's filter keeps: no decoding again."""
    if not matcher.selective:
        return [d[0] for d in decoded]
    if matcher.pattern is not None:
        matcher.begin_batch(sum(item["size"] for item, _, _ in decoded))
    matches, where = matcher.matches, matcher.where
    return [item for item, key, text in decoded if matches(key, text, item["headers"])
            and (where is None or where.matches(item, text))]


def decode_batch(records: Iterable[Any], fmt: str, max_value_bytes: int,
                 matcher: Matcher | None = None, schemas: Schemas | None = None,
                 masker: Masker | None = None) -> list[Decoded]:
    """Each record as (protocol dict, key text, value text): filters see these texts and headers.

    With a ``matcher``, a record that does not match is dropped before its dict is built.
    A feed decodes a poll once per format (and masking) and lets each viewer ``select`` from
    it. Framed keys and values are decoded with ``schemas`` (see ``_Framed``), then ``masker``
    masks the record, before any filter sees it.
    """
    out: list[Decoded] = []
    active = matcher is not None and matcher.active
    where = matcher.where if matcher is not None else None
    if active and matcher.pattern is not None:
        records = _begin_regex(matcher, records)
    framing = _Framed(schemas)
    for rec in records:
        key, key_encoding, key_schema, key_reason = (
            _NO_KEY if rec.key is None else _key(rec.key, framing))
        raw = rec.value
        truncated = raw is not None and len(raw) > max_value_bytes
        if raw is None:
            value, encoding, text, value_schema, reason = None, "null", None, None, None
        else:
            value, encoding, text, value_schema, reason = _value(
                raw[:max_value_bytes] if truncated else raw, fmt, truncated, framing)
        headers = _headers(rec.headers) if rec.headers else []
        if masker is not None:
            if encoding is _MAYBE_JSON:
                value, encoding = _json_or_binary(raw, text)
            key, key_encoding, value, encoding, headers = masker.record(
                key, key_encoding, value, encoding, headers)
            text = value if isinstance(value, str) else None
        if active and not matcher.matches(key, text, headers):
            continue
        if encoding is _MAYBE_JSON:
            value, encoding = _json_or_binary(raw, text)
        # max(size, 0) each, without three calls: -1 stands for a null key, value or headers.
        key_size, value_size, header_size = (
            rec.serialized_key_size, rec.serialized_value_size, rec.serialized_header_size)
        item = {
            "partition": rec.partition,
            "offset": rec.offset,
            "timestamp": rec.timestamp,
            "key": key,
            "key_encoding": key_encoding,
            "value": value,
            "encoding": encoding,
            "headers": headers,
            "size": (key_size if key_size > 0 else 0) + (value_size if value_size > 0 else 0)
            + (header_size if header_size > 0 else 0),
        }
        if truncated:
            item["truncated"] = True
        if key_schema is not None or value_schema is not None:
            _schema_fields(item, key_schema, key_reason, value_schema, reason)
        if where is not None and not where.matches(item, text):
            continue
        out.append((item, key, text))
    return out


def _begin_regex(matcher: Matcher, records: Iterable[Any]) -> list[Any]:
    """Start a regex matcher's time budget for a batch, sized by its keys and values."""
    records = list(records)
    matcher.begin_batch(sum(max(r.serialized_key_size, 0) + max(r.serialized_value_size, 0)
                            for r in records))
    return records


def _schema_fields(item: dict[str, Any], key_schema: int | None, key_reason: str | None,
                   value_schema: int | None, reason: str | None) -> None:
    """A framed key's or value's schema id, and why it was not decoded if it was not."""
    if key_schema is not None:
        item["key_schema_id"] = key_schema
        if key_reason is not None:
            item["key_decode_error"] = key_reason
    if value_schema is not None:
        item["value_schema_id"] = value_schema
        if reason is not None:
            item["decode_error"] = reason


class Framing(Protocol):
    """How one socket frames a message (``web.wire.Wire``): ``key`` names the format, the same
    for every socket whose frames are the same bytes."""

    key: str

    def frame(self, text: str) -> bytes: ...


class Batch:
    """Encoded records on their way to one or many outboxes.

    A shared feed hands the same Batch to every viewer that takes the whole poll unfiltered,
    so its JSON is built once however many sockets send it, and its WebSocket frame once per
    wire format. Both are built lazily, by the first socket to need them; two sockets racing
    both build the same value.
    """

    __slots__ = ("records", "size", "_json", "_frames")

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records
        self.size = sum(r["size"] for r in records)
        self._json: str | None = None
        self._frames: dict[str, bytes] = {}

    def __len__(self) -> int:
        return len(self.records)

    def json(self) -> str:
        """The records as the inside of a JSON array (no brackets), ready to join."""
        if self._json is None:
            self._json = ",".join(map(record_json, self.records))
        return self._json

    def frame(self, wire: Framing) -> bytes:
        """This batch as one ``messages`` frame, framed for ``wire`` (built once per format)."""
        data = self._frames.get(wire.key)
        if data is None:
            data = self._frames[wire.key] = wire.frame(messages_joined([self.json()]))
        return data


_RECORD = ('{"partition":%d,"offset":%d,"timestamp":%d,"key":%s,"key_encoding":%s,"value":%s,'
           '"encoding":"%s","headers":%s,"size":%d%s}')


def _str(text: str | None) -> str:
    return "null" if text is None else encode_basestring(text)


def record_json(rec: dict[str, Any]) -> str:
    """One protocol record as JSON, a JSON value spliced in as its own text.

    Formatted, not ``dumps``: a call of the encoder per record cost more than the whole record
    takes this way, and every field's type is known.
    """
    key, key_encoding = rec["key"], rec["key_encoding"]
    value = rec["value"]
    encoding = rec["encoding"]
    headers = rec["headers"]
    return _RECORD % (
        rec["partition"], rec["offset"], rec["timestamp"],
        "null" if key is None else encode_basestring(key),
        "null" if key_encoding is None else encode_basestring(key_encoding),
        value if encoding in JSON_ENCODINGS else _str(value),
        encoding, dumps(headers) if headers else "[]", rec["size"],
        "" if len(rec) == 9 else _extra(rec))


def _extra(rec: dict[str, Any]) -> str:
    """The optional fields, present only when they say something (most records have none:
    nine fields)."""
    out = ',"truncated":true' if "truncated" in rec else ""
    for name in ("key_schema_id", "value_schema_id"):
        if name in rec:
            out += f',"{name}":{rec[name]}'
    for name in ("key_decode_error", "decode_error"):
        if name in rec:
            out += f',"{name}":{encode_basestring(rec[name])}'
    return out
