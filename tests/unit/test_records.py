import base64
import json
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kafkatail.tail.records import Batch, decode_batch, encode_batch, schema_id, select
from kafkatail.tail.request import Matcher, compile_matcher


def rec(value, key=b"k", headers=(), offset=0, partition=0):
    return SimpleNamespace(
        partition=partition, offset=offset, timestamp=1000, key=key, value=value,
        headers=list(headers), serialized_key_size=len(key) if key is not None else -1,
        serialized_value_size=len(value) if value is not None else -1,
        serialized_header_size=sum(len(n) + len(v or b"") for n, v in headers))


def sent(items):
    """Records as a client reads them from the batch's frame."""
    return json.loads(f"[{Batch(items).json()}]")


CONTROLS = set(range(0x00, 0x09)) | {0x0b, 0x7f} | set(range(0x0e, 0x1b)) | set(range(0x1c, 0x20))


def one(value, fmt="auto", max_bytes=1000, **kw):
    out = encode_batch([rec(value, **kw)], fmt, Matcher(), max_bytes)
    assert len(out) == 1
    return sent(out)[0]


def test_auto_parses_json_and_keeps_text():
    assert one(b'{"a": [1, 2]}')["value"] == {"a": [1, 2]}
    assert one(b'{"a": [1, 2]}')["encoding"] == "json"
    r = one(b"2026-11-24 INFO hello")
    assert (r["value"], r["encoding"]) == ("2026-11-24 INFO hello", "text")


def test_binary_becomes_base64_in_every_text_format():
    raw = b"\xff\x00\xfe"
    for fmt in ("auto", "text", "json", "base64"):
        r = one(raw, fmt)
        assert r["encoding"] == "base64" and base64.b64decode(r["value"]) == raw


def test_explicit_formats():
    assert one(b'{"a":1}', "text")["value"] == '{"a":1}'
    assert one(b"plain", "json")["encoding"] == "text"
    assert one(b"plain", "base64")["value"] == base64.b64encode(b"plain").decode()


def test_null_value_key_and_headers():
    r = one(None, key=None, headers=[("h", b"v"), ("bin", b"\xff"), ("none", None)])
    assert r["value"] is None and r["encoding"] == "null" and r["key"] is None
    assert r["headers"] == [["h", "v"], ["bin", "/w==", "base64"], ["none", None]]


def test_binary_key_is_base64():
    r = one(b"v", key=b"\xff\xfe")
    assert r["key_encoding"] == "base64" and base64.b64decode(r["key"]) == b"\xff\xfe"


def test_oversized_value_truncated_even_mid_character():
    raw = ("é" * 100).encode()
    r = one(raw, max_bytes=51)
    assert r["truncated"] is True and r["value"] == "é" * 25 and r["encoding"] == "text"
    assert r["size"] == len(raw) + 1


def test_oversized_json_is_text_not_broken_json():
    raw = json.dumps({"a": "x" * 100}).encode()
    r = one(raw, max_bytes=20)
    assert r["encoding"] == "text" and r["truncated"]


def test_filter_drops_before_building():
    recs = [rec(b"error one", offset=0), rec(b"fine", offset=1), rec(b"ERROR two", offset=2)]
    out = encode_batch(recs, "auto", compile_matcher("error", None), 1000)
    assert [r["offset"] for r in out] == [0, 2]


def test_filter_matches_headers_in_both_decode_paths():
    recs = [rec(b"v", offset=0, headers=[("tenant", b"acme")]),
            rec(b"v", offset=1, headers=[("tenant", b"other")]),
            rec(b"acme", offset=2),
            rec(b"v", offset=3, headers=[("tenant", b"\xff\xfe")])]
    matcher = compile_matcher(None, r"^ac.e$")
    assert [r["offset"] for r in encode_batch(recs, "auto", matcher, 1000)] == [0, 2]
    decoded = decode_batch(recs, "auto", 1000)
    assert [r["offset"] for r in select(decoded, matcher)] == [0, 2]


def test_values_strict_json_cannot_carry_never_break_a_batch():
    """NaN/Infinity (Python's JSON extensions) would make the whole batch's frame unreadable to
    a browser's JSON.parse, for every viewer of a feed: such values go as text. A JSON value is
    framed as its own text, so a float past double range and an integer past 64 bits arrive
    exactly as produced."""
    values = [b'{"a": NaN}', b'[Infinity, -Infinity]', b'{"big": 1e400}', b'{"ok": 1.5}',
              b'{"id": 123456789012345678901234567890}']
    batch = Batch(encode_batch([rec(v, offset=i) for i, v in enumerate(values)], "auto",
                               Matcher(), 1000))
    got = json.loads(f"[{batch.json()}]", parse_constant=lambda c: pytest.fail(f"{c} sent"))
    assert [(r["encoding"], r["value"]) for r in got] == [
        ("text", '{"a": NaN}'), ("text", "[Infinity, -Infinity]"), ("json", {"big": 1e400}),
        ("json", {"ok": 1.5}), ("json", {"id": 123456789012345678901234567890})]
    assert '"value":{"big": 1e400}' in batch.json()


def _stdlib_says_json(text):
    try:
        json.loads(text, parse_constant=lambda c: 1 / 0)
    except (ValueError, ZeroDivisionError, RecursionError):
        return False
    return True


def test_deep_nesting_goes_as_text_and_never_raises():
    """A 2 KB value nested past the stdlib's recursion limit raised RecursionError out of the
    batch: the feed thread died and every viewer of the topic got 1011. Now it is text; nesting
    both checkers take (1,024) is still JSON."""
    assert one(b"[" * 100_000 + b"]" * 100_000, max_bytes=300_000)["encoding"] == "text"
    assert one(b"[" * 900 + b"]" * 900, max_bytes=2000)["encoding"] == "json"


# Texts near the edges where orjson (the fast check) and the stdlib disagree, and plain ones.
_EDGES = ["1e400", "-1e400", '"\\ud800"', '{"a": NaN}', "Infinity", '{"a":1,"a":2}', " [1] ",
          "[1,]", "00", "1.5e308", '"a\x01"', "123456789012345678901234567890", "{}", "[]",
          '{"a": [1, 2.5e-3, true, false, null, "\\u00e9"]}', "-0", "1.", ".5", "[" * 1100]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.sampled_from(_EDGES),
                 st.recursive(st.none() | st.booleans() | st.floats() | st.integers()
                              | st.text(), lambda c: st.lists(c) | st.dictionaries(st.text(), c),
                              max_leaves=8).map(lambda v: json.dumps(v)),
                 st.text(alphabet='{}[]",:0123456789.eE+-tfnaNI\\u ', max_size=12)))
def test_a_value_is_json_exactly_when_the_stdlib_says_so(text):
    """The fast check never lets through what the stdlib refuses, nor refuses what it takes."""
    want = _stdlib_says_json(text)
    raw = text.encode()
    got = decode_batch([rec(raw)], "json", len(raw) + 1)[0][0]["encoding"]
    binary = any(c in CONTROLS for c in raw)  # text with control bytes goes out as base64
    assert got == ("json" if want else "base64" if binary else "text"), text


def test_a_json_value_is_framed_as_its_own_text():
    """Spaces, key order and escapes as produced; the envelope's own strings are escaped."""
    value = '{ "z": 1,\n  "a": "\\u00e9 \\" é" }'.encode()
    key, header = 'k"\\\n\u2713', ("h\"", 'v\t\u001b[1m'.encode())
    items = encode_batch([rec(value, key=key.encode(), headers=[header])], "auto", Matcher(), 1000)
    text = Batch(items).json()
    assert value.decode() in text
    (r,) = json.loads(f"[{text}]")
    assert r["value"] == {"z": 1, "a": 'é " é'} and list(r["value"]) == ["z", "a"]
    assert (r["key"], r["headers"]) == (key, [list(header[:1]) + [header[1].decode()]])
    assert set(r) == {"partition", "offset", "timestamp", "key", "key_encoding", "value",
                      "encoding", "headers", "size"}


def test_auto_parses_a_scalar_only_when_the_whole_value_is_one(monkeypatch):
    """A log line that starts with a digit is text without a JSON parse being tried."""
    for value, parsed in [(b"42", 42), (b"-1.5e3\n", -1500.0), (b"true", True), (b"null", None)]:
        assert (one(value)["value"], one(value)["encoding"]) == (parsed, "json")
    assert one(b"2026-12-03", fmt="json")["encoding"] == "text"  # format=json tries, falls back
    import kafkatail.tail.records as records
    monkeypatch.setattr(records, "_loads", lambda text: pytest.fail(f"parsed {text!r}"))
    for line in (b"2026-12-03 07:50:01 INFO started", b"42 apples", b"-v", b"nullable", b"t"):
        assert one(line)["encoding"] == "text"


def test_a_filter_parses_only_the_records_it_keeps(monkeypatch):
    """A filter scan from earliest drops most records: it must not pay their JSON parse."""
    import kafkatail.tail.records as records
    parsed = []
    monkeypatch.setattr(records, "_check", lambda text: parsed.append(text) or json.loads(text))
    recs = [rec(json.dumps({"n": i, "level": "error" if i == 7 else "info"}).encode(), offset=i)
            for i in range(50)]
    out = encode_batch(recs, "auto", compile_matcher("error", None), 1000)
    assert [(r["offset"], r["encoding"], r["value"]["n"]) for r in sent(out)] == [(7, "json", 7)]
    assert len(parsed) == 1
    assert len(decode_batch(recs, "auto", 1000)) == 50 and len(parsed) == 51


# -- binary that is valid UTF-8, and the Confluent wire format (issue #24) ----------------------
AVRO_V1 = b"\x00\x00\x00\x00\x07" + b"\x0corder1\x02\x00\x00\x00\x00\x00\x00\x29\x40"


def test_a_confluent_framed_value_shows_its_schema_id_and_payload():
    """What confluent-kafka's AvroSerializer writes (magic 0, schema id 7, Avro) is valid UTF-8:
    it must not show as text. Without a registry it is the schema id and the payload."""
    wire = one(AVRO_V1)
    assert wire["encoding"] == "json" and wire["value_schema_id"] == 7
    assert wire["value"] == {"schema_id": 7,
                             "payload": base64.b64encode(AVRO_V1[5:]).decode()}
    assert wire["value_schema_id"] == 7 and "key_schema_id" not in wire


def test_a_framed_key_is_base64_with_its_schema_id():
    wire = one(b"x", key=b"\x00\x00\x00\x01\x2c\x02id")
    assert (wire["key_encoding"], wire["key_schema_id"]) == ("base64", 300)
    assert base64.b64decode(wire["key"]) == b"\x00\x00\x00\x01\x2c\x02id"
    assert "value_schema_id" not in wire


@pytest.mark.parametrize("raw", [b"\x00\x00\x00\x00\x00\x01", b"\x00\x00\x00", b"\x01\x00\x00\x00\x07x",
                                 b"\x00\xff\xfe\x01\x80\x0a"])
def test_schema_id_zero_negative_short_or_another_magic_is_not_framed(raw):
    assert schema_id(raw) is None
    r = one(raw)
    assert r["encoding"] == "base64" and "value_schema_id" not in r


@pytest.mark.parametrize("fmt", ["auto", "text", "json"])
def test_text_with_control_bytes_is_base64_in_every_format(fmt):
    """A Protobuf message of ASCII fields (tags 0x0a, 0x12) decodes as UTF-8; never text."""
    raw = b"\x0a\x05hello\x12\x03abc"
    r = one(raw, fmt=fmt)
    assert (r["value"], r["encoding"]) == (base64.b64encode(raw).decode(), "base64")


def test_log_lines_with_tabs_and_ansi_colours_stay_text():
    line = b"2026-12-06\tINFO\t\x1b[32mstarted\x1b[0m\r\n"
    assert (one(line)["value"], one(line)["encoding"]) == (line.decode(), "text")


def test_a_header_with_control_bytes_is_base64():
    r = one(b"v", headers=[("trace", b"\x00\x01ab"), ("ok", b"plain")])
    assert r["headers"] == [["trace", base64.b64encode(b"\x00\x01ab").decode(), "base64"],
                            ["ok", "plain"]]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_any_value_is_text_only_without_control_bytes_and_always_recoverable(raw):
    """Whatever the bytes: text only when they are control-free UTF-8, and the bytes can be had
    back from what the frame shows."""
    r = one(raw)
    if r["encoding"] == "text":
        assert not any(c in CONTROLS for c in raw) and r["value"].encode() == raw
    elif r["encoding"] == "base64":
        assert base64.b64decode(r["value"]) == raw
    elif "value_schema_id" in r:
        assert raw[:5] == b"\x00" + r["value_schema_id"].to_bytes(4, "big")
        assert base64.b64decode(r["value"]["payload"]) == raw[5:]
    else:
        assert r["encoding"] == "json" and json.loads(raw) == r["value"]
