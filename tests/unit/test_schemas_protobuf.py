"""kafkatail.schemas.protobuf: records as confluent-kafka's ProtobufSerializer writes them, read
back as JSON from the schema in both forms a registry may serve (.proto text, base64
FileDescriptorProto), with the imports the references carry and the builtins they do not."""
from __future__ import annotations

import base64
import datetime
import importlib.resources
import json
import os
import sys
import threading
import time

import orjson
import pytest
from confluent_kafka.schema_registry._sync.mock_schema_registry_client import (
    MockSchemaRegistryClient,
)
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.type import date_pb2
from grpc_tools import protoc
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kafkatail.schemas import SchemaError
from kafkatail.schemas.protobuf import protobuf_decoder

MONEY = """\
syntax = "proto3";
package shared;
message Money { string currency = 1; int64 units = 2; }
"""

ORDER = """\
syntax = "proto3";
package shop;
import "shared/money.proto";
import "google/protobuf/timestamp.proto";
import "google/type/date.proto";

message Ping { int32 n = 1; }

message Order {
  enum State { NEW = 0; PAID = 1; SHIPPED = 2; }
  message Line {
    string sku = 1;
    uint32 qty = 2;
    message Note { string text = 1; bool urgent = 2; }
    Note note = 3;
  }
  string id = 1;
  int64 total_cents = 2;
  shared.Money price = 3;
  google.protobuf.Timestamp placed_at = 4;
  repeated Line lines = 5;
  map<string, int32> counts = 6;
  bytes blob = 7;
  State state = 8;
  double ratio = 9;
  google.type.Date due = 10;
}
"""

SOURCES = {"shared/money.proto": MONEY, "shop/order.proto": ORDER}
WELL_KNOWN = str(importlib.resources.files("grpc_tools") / "_proto")
CTX = SerializationContext("orders", MessageField.VALUE)


def _pool(tmp_path, sources):
    """A private pool of the compiled sources (no clash with other tests' files of one name)."""
    for name, text in sources.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    given = tmp_path / "given.pb"  # protoc finds google/type only in a descriptor set
    given.write_bytes(descriptor_pb2.FileDescriptorSet(file=[
        descriptor_pb2.FileDescriptorProto.FromString(date_pb2.DESCRIPTOR.serialized_pb)
    ]).SerializeToString())
    out = tmp_path / "out.pb"
    assert protoc.main(["protoc", f"-I{tmp_path}", f"-I{WELL_KNOWN}",
                        f"--descriptor_set_in={given}", f"--descriptor_set_out={out}",
                        "--include_imports", *sources]) == 0
    pool = descriptor_pool.DescriptorPool()
    for proto in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file:
        pool.Add(proto)
    return pool


@pytest.fixture
def pool(tmp_path):
    return _pool(tmp_path, SOURCES)


def _cls(pool, name):
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


def _order(pool):
    Order = _cls(pool, "shop.Order")
    order = Order(id="o-1", total_cents=2**53 + 1, blob=b"\x00\xffhi", ratio=0.25)
    order.state = Order.State.Value("PAID")
    order.price.currency, order.price.units = "EUR", -7
    order.placed_at.FromDatetime(datetime.datetime(2024, 5, 6, 7, 8, 9, 123000,
                                                   tzinfo=datetime.timezone.utc))
    order.lines.add(sku="a", qty=2).note.text = "fragile"
    order.lines.add(sku="b")
    order.counts["x"] = 3
    order.due.year, order.due.month, order.due.day = 2024, 6, 1
    return order


ORDER_JSON = {
    "id": "o-1", "total_cents": str(2**53 + 1),
    "price": {"currency": "EUR", "units": "-7"},
    "placed_at": "2024-05-06T07:08:09.123Z",
    "lines": [{"sku": "a", "qty": 2, "note": {"text": "fragile", "urgent": False}},
              {"sku": "b", "qty": 0}],
    "counts": {"x": 3}, "blob": base64.b64encode(b"\x00\xffhi").decode(), "state": "PAID",
    "ratio": 0.25, "due": {"year": 2024, "month": 6, "day": 1},
}


def _serialize(message):
    """The record the reference serializer writes, and the registry it registered into."""
    client = MockSchemaRegistryClient({"url": "mock://"})
    return ProtobufSerializer(type(message), client)(message, CTX), client


def _registered(client, record):
    """The schema of the record's id as registered (base64), with its references resolved
    transitively into one flat mapping, as the registry client hands them over."""
    schema = client.get_schema(int.from_bytes(record[1:5], "big"))
    refs, pending = {}, list(schema.references)
    while pending:
        ref = pending.pop()
        if ref.name not in refs:
            version = client.get_version(ref.subject, ref.version)
            refs[ref.name] = version.schema.schema_str
            pending.extend(version.schema.references)
    return schema.schema_str, refs


def _decode(decoder, record):
    assert record[0] == 0
    return json.loads(decoder(record[5:]))


def test_what_the_serializer_registers(pool):
    record, client = _serialize(_order(pool))
    schema, refs = _registered(client, record)
    # base64 FileDescriptorProto; a reference for the user's import, none for builtins
    assert descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(schema)).name \
        == "shop/order.proto"
    assert list(refs) == ["shared/money.proto"]
    assert record[5:7] == b"\x02\x02"  # one index: Order, the second message of the file


def test_registered_base64_form(pool):
    record, client = _serialize(_order(pool))
    decoder = protobuf_decoder(*_registered(client, record))
    assert _decode(decoder, record) == ORDER_JSON


def test_proto_text_form(pool):
    record, _ = _serialize(_order(pool))
    decoder = protobuf_decoder(ORDER, {"shared/money.proto": MONEY})
    assert _decode(decoder, record) == ORDER_JSON
    assert decoder(record[5:]) == json.dumps(ORDER_JSON, separators=(",", ":"))  # compact


def test_mixed_forms(pool):
    record, client = _serialize(_order(pool))
    schema, refs = _registered(client, record)
    assert _decode(protobuf_decoder(schema, {"shared/money.proto": MONEY}), record) == ORDER_JSON
    assert _decode(protobuf_decoder(ORDER, refs), record) == ORDER_JSON


def test_first_message_and_defaults(pool):
    record, client = _serialize(_cls(pool, "shop.Ping")())
    assert record[5:] == b"\x00"  # the [0] shortcut, and an empty message
    assert _decode(protobuf_decoder(*_registered(client, record)), record) == {"n": 0}
    empty = _decode(protobuf_decoder(ORDER, {"shared/money.proto": MONEY}),
                    _serialize(_cls(pool, "shop.Order")())[0])
    assert empty == {"id": "", "total_cents": "0", "lines": [], "counts": {}, "blob": "",
                     "state": "NEW", "ratio": 0.0}


@pytest.mark.parametrize("path, indexes", [(["lines", 0], b"\x04\x02\x00"),
                                           (["lines", 0, "note"], b"\x06\x02\x00\x00")])
def test_nested_message_types(pool, path, indexes):
    message, expected = _order(pool), ORDER_JSON
    for step in path:
        message, expected = (message[step], expected[step]) if isinstance(step, int) else (
            getattr(message, step), expected[step])
    record, client = _serialize(message)
    assert record[5:5 + len(indexes)] == indexes
    for decoder in (protobuf_decoder(*_registered(client, record)),
                    protobuf_decoder(ORDER, {"shared/money.proto": MONEY})):
        assert _decode(decoder, record) == expected


def test_transitive_references_and_a_reference_named_like_the_root(tmp_path):
    sources = {"a/base.proto": 'syntax = "proto3"; package a; message Base { sint64 v = 1; }',
               "schema.proto": 'syntax = "proto3"; package b; import "a/base.proto";'
                               ' message Mid { a.Base base = 1; }',
               "c/top.proto": 'syntax = "proto3"; package c; import "schema.proto";'
                              ' message Top { b.Mid mid = 1; }'}
    pool = _pool(tmp_path, sources)
    top = _cls(pool, "c.Top")()
    top.mid.base.v = -3
    record, client = _serialize(top)
    schema, refs = _registered(client, record)
    assert sorted(refs) == ["a/base.proto", "schema.proto"]
    text_refs = {n: sources[n] for n in refs}
    for decoder in (protobuf_decoder(schema, refs), protobuf_decoder(sources["c/top.proto"],
                                                                     text_refs)):
        assert _decode(decoder, record) == {"mid": {"base": {"v": "-3"}}}


def test_confluent_builtin_import_without_a_reference():
    text = ('syntax = "proto3"; import "confluent/meta.proto";'
            ' message P { string email = 1 [(confluent.field_meta).tags = "PII"]; }')
    decoder = protobuf_decoder(text, {})
    assert json.loads(decoder(b"\x00\x0a\x01@")) == {"email": "@"}


def test_unparsable_proto_text_gives_protocs_reason(capfd):
    with pytest.raises(SchemaError) as err:
        protobuf_decoder('syntax = "proto3";\nmessage A { int32 x = 1 }\n', {})
    assert str(err.value) == 'protoc: schema.proto:2:25: Expected ";".'
    assert capfd.readouterr().err == ""  # captured, not left on the server's stderr


def test_missing_import(pool):
    with pytest.raises(SchemaError, match='Import "shared/money.proto" was not found'):
        protobuf_decoder(ORDER, {})
    record, client = _serialize(_order(pool))
    with pytest.raises(SchemaError, match="import shared/money.proto is missing"):
        protobuf_decoder(_registered(client, record)[0], {})


@pytest.mark.parametrize("name", ["../escape.proto", "/abs.proto", "a//b.proto", "./a.proto"])
def test_an_import_name_outside_the_sources_is_refused(name):
    with pytest.raises(SchemaError, match="not a relative path"):
        protobuf_decoder(f'syntax = "proto3"; import "{name}";', {name: MONEY})


def test_not_a_descriptor():
    with pytest.raises(SchemaError, match="neither .proto text nor a FileDescriptorProto"):
        protobuf_decoder("////", {})


def test_concurrent_builds_each_get_their_schema():
    results, errors = [], []

    def build(i):
        try:
            text = f'syntax = "proto3"; message M{i} {{ int32 f{i} = 1; }}'
            results.append((i, protobuf_decoder(text, {})(b"\x00")))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
    threads = [threading.Thread(target=build, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == [(i, f'{{"f{i}":0}}') for i in range(8)]


@pytest.fixture(scope="module")
def order_decoder():
    return protobuf_decoder(ORDER, {"shared/money.proto": MONEY})


@pytest.mark.parametrize("payload, reason", [
    (b"", "message indexes are not valid"),
    (b"\x02", "message indexes are not valid"),  # count 1, index missing
    (b"\x02\x06", r"message index \[3\] is not in the schema"),
    (b"\x02\x01", r"message index \[-1\] is not in the schema"),
    (b"\x04\x02\x08", r"message index \[1, 4\] is not in the schema"),
    (b"\x10" + b"\x00" * 8, "message indexes are not valid"),  # deeper than any type
    (b"\x02" + b"\xff" * 11, "message indexes are not valid"),  # overlong varint
    (b"\x03\x00", "message indexes are not valid"),  # negative count
    (b"\x02\x02\x0a\x05ab", "payload does not match"),  # string field cut short
    (b"\x02\x02\xff\xff", "payload does not match"),
])
def test_unreadable_payloads(order_decoder, payload, reason):
    with pytest.raises(SchemaError, match=reason):
        order_decoder(payload)


def test_corrupt_record(pool, order_decoder):
    record, _ = _serialize(_order(pool))
    with pytest.raises(SchemaError, match="payload does not match"):
        order_decoder(record[5:-3])


PREFIXES = [b"\x00", b"\x02\x02", b"\x04\x02\x00", b"\x06\x02\x00\x00", b"\x02\x00"]


@settings(max_examples=1000, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), payload=st.one_of(st.binary(max_size=300), st.builds(
    bytes.__add__, st.sampled_from(PREFIXES), st.binary(max_size=300))))
def test_random_bytes_only_ever_raise_schema_error(order_decoder, sinks, data, payload):
    decoder = data.draw(st.sampled_from([order_decoder] + [case[0] for case in sinks]))
    try:
        json.loads(decoder(payload))
    except SchemaError:
        pass


@pytest.fixture(scope="module")
def sink_descriptor(tmp_path_factory):
    pool = _pool(tmp_path_factory.mktemp("fdp"), {"root.proto": SINK})
    proto = descriptor_pb2.FileDescriptorProto()
    pool.FindFileByName("root.proto").CopyToProto(proto)
    return proto.SerializeToString()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_corrupt_descriptor_only_ever_raises_schema_error(sink_descriptor, data):
    """Bytes changed here and there in a registered FileDescriptorProto: the schema is refused
    with a SchemaError (names that are not UTF-8, a map entry without its value...) or builds
    into a decoder that raises nothing else either."""
    corrupt = bytearray(sink_descriptor)
    for _ in range(data.draw(st.integers(1, 6))):
        corrupt[data.draw(st.integers(0, len(corrupt) - 1))] = data.draw(st.integers(0, 255))
    try:
        decoder = protobuf_decoder(base64.b64encode(corrupt).decode(), {})
        decoder(data.draw(st.sampled_from(PREFIXES)) + data.draw(st.binary(max_size=100)))
    except SchemaError:
        pass


def test_fields_named_like_message_methods():
    # json_format.MessageToDict fails on these (AttributeError: the field hides DESCRIPTOR)
    decoder = protobuf_decoder('syntax = "proto3"; message A { int32 DESCRIPTOR = 1;'
                               ' optional int32 HasField = 2; string from = 3; }', {})
    assert json.loads(decoder(b"\x00\x08\x05\x10\x06")) == {"DESCRIPTOR": 5, "HasField": 6,
                                                             "from": ""}


def test_protoc_reason_holds_protocs_lines_alone(monkeypatch, capfd):
    """Another thread's write to stderr during protoc's call goes back to stderr, not into the
    reason shown to a viewer."""
    def main(args):
        os.write(2, b"another thread's log line\n")
        os.write(2, f"{args[-1]}:1:1: boom\n".encode())
        return 1
    monkeypatch.setattr(protoc, "main", main)
    with pytest.raises(SchemaError) as err:
        protobuf_decoder('syntax = "proto3";', {})
    assert str(err.value) == "protoc: schema.proto:1:1: boom"
    assert capfd.readouterr().err == "another thread's log line\n"


SINK = """\
syntax = "proto3";
package sink;
import "google/protobuf/any.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/empty.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

enum Color { RED = 0; GREEN = 1; BLUE = 5; }
message Leaf { string s = 1; sint32 n = 2; }
message Sink {
  double d = 1; float f = 2; int32 i32 = 3; int64 i64 = 4; uint32 u32 = 5; uint64 u64 = 6;
  sint32 s32 = 7; sint64 s64 = 8; fixed32 fx32 = 9; fixed64 fx64 = 10; sfixed32 sf32 = 11;
  sfixed64 sf64 = 12; bool b = 13; string s = 14; bytes by = 15; Color color = 16;
  optional int32 opt = 17; optional Color opt_color = 18;
  oneof choice { string one_s = 19; Leaf one_leaf = 20; int64 one_i = 21; }
  repeated double rd = 22; repeated float rf = 23; repeated int64 ri64 = 24;
  repeated uint64 ru64 = 25; repeated bytes rby = 26; repeated Color rcolor = 27;
  repeated Leaf rleaf = 28; repeated string rs = 29; repeated bool rb = 30;
  map<string, Leaf> m_leaf = 31; map<bool, int64> m_bool = 32; map<int64, Color> m_i64 = 33;
  map<uint32, bytes> m_u32 = 34; map<sint64, float> m_s64 = 35;
  map<string, google.protobuf.Value> m_value = 36;
  google.protobuf.Timestamp ts = 37; google.protobuf.Duration dur = 38;
  google.protobuf.Struct st = 39; google.protobuf.Value val = 40;
  google.protobuf.ListValue lv = 41; google.protobuf.Any any = 42;
  google.protobuf.FieldMask fm = 43; google.protobuf.Int64Value w_i64 = 44;
  google.protobuf.StringValue w_s = 45; google.protobuf.BytesValue w_by = 46;
  google.protobuf.FloatValue w_f = 47; google.protobuf.BoolValue w_b = 48;
  google.protobuf.UInt32Value w_u32 = 49; google.protobuf.Empty empty = 50;
  Sink child = 51; repeated google.protobuf.Timestamp rts = 52;
  google.protobuf.NullValue null = 53; map<string, google.protobuf.DoubleValue> m_w = 54;
}
"""

LEGACY = """\
syntax = "proto2";
package legacy;
enum Closed { A = 1; B = 2; }
message Old {
  optional int32 req = 1; optional string name = 2 [default = "x"];
  optional Closed c = 3 [default = B]; repeated int32 packed = 4 [packed = true];
  optional group G = 5 { optional int32 g = 6; optional bytes gb = 7; }
  optional bytes raw = 8; optional float f = 9 [default = 1.5]; repeated Closed cs = 10;
  extensions 100 to 200;
}
message Req { required int64 id = 1; optional Old old = 2; }
extend Old { optional int32 ext_i = 100; repeated string ext_s = 101; }
"""

T = descriptor_pb2.FieldDescriptorProto
_WIRE_TYPE = {T.TYPE_DOUBLE: 1, T.TYPE_FIXED64: 1, T.TYPE_SFIXED64: 1, T.TYPE_FLOAT: 5,
              T.TYPE_FIXED32: 5, T.TYPE_SFIXED32: 5, T.TYPE_STRING: 2, T.TYPE_BYTES: 2,
              T.TYPE_MESSAGE: 2, T.TYPE_GROUP: 3}
_NUMBERS = st.one_of(st.integers(0, 6), st.integers(0, 2**64 - 1))


def _varint(n):
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


@st.composite
def _wire(draw, descriptor, depth=0):
    """Valid wire bytes for ``descriptor``: fields (extensions too) of random values, nested
    messages, groups and map entries included, a few levels deep."""
    fields = list(descriptor.fields) + [x for x in descriptor.file.extensions_by_name.values()
                                        if x.containing_type is descriptor]
    out = b""
    for _ in range(draw(st.integers(0, 8 if depth < 3 and fields else 0))):
        field = draw(st.sampled_from(fields))
        wire = _WIRE_TYPE.get(field.type, 0)
        if wire == 0:
            value = _varint(draw(_NUMBERS))
        elif wire in (1, 5):
            value = draw(st.binary(min_size=8 if wire == 1 else 4, max_size=8 if wire == 1 else 4))
        elif wire == 3:
            value = draw(_wire(field.message_type, depth + 1)) + _varint(field.number << 3 | 4)
        else:
            body = (draw(_wire(field.message_type, depth + 1)) if field.message_type
                    else draw(st.text(max_size=6)).encode() if field.type == T.TYPE_STRING
                    else draw(st.binary(max_size=6)))
            value = _varint(len(body)) + body
        out += _varint(field.number << 3 | wire) + value
    return out


@pytest.fixture(scope="module")
def sinks(tmp_path_factory):
    """(decoder, pool of the same schema built apart, message name, its indexes) for each
    message the differential test writes."""
    cases = []
    for text, names in ((SINK, ["sink.Sink", "sink.Leaf"]), (LEGACY, ["legacy.Old", "legacy.Req"])):
        decoder = protobuf_decoder(text, {})
        pool = _pool(tmp_path_factory.mktemp("sink"), {"root.proto": text})
        top = [m.full_name for m in
               pool.FindFileByName("root.proto").message_types_by_name.values()]
        cases += [(decoder, pool, n, b"\x02" + bytes([2 * top.index(n)])) for n in names]
    return cases


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_json_is_what_json_format_makes(sinks, data):
    """The writer is json_format.MessageToDict's equal (keys aside, which it orders as the
    .proto does): same JSON for every message, an error where json_format has one."""
    decoder, pool, name, indexes = data.draw(st.sampled_from(sinks))
    cls = _cls(pool, name)
    body = data.draw(_wire(cls.DESCRIPTOR))
    try:
        message = cls.FromString(body)
    except Exception:  # a proto3 string not UTF-8, a required field missing
        event(f"{name}: unparsable")
        with pytest.raises(SchemaError, match="payload does not match"):
            decoder(indexes + body)
        return
    try:
        expected = json.loads(orjson.dumps(json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True,
            descriptor_pool=pool)))
    except Exception:
        expected = SchemaError
    try:
        got = json.loads(decoder(indexes + body))
    except SchemaError:
        got = SchemaError
    event(f"{name}: {'error' if expected is SchemaError else 'json'}")
    assert got == expected


def test_keys_come_in_declaration_order(sinks):
    decoder, _, _, indexes = sinks[0]
    shown = json.loads(decoder(indexes + b"\x80\x01\x01"))  # color = GREEN, all else unset
    assert shown["color"] == "GREEN"
    assert list(shown)[:5] == ["d", "f", "i32", "i64", "u32"]


def test_decode_cost(pool, order_decoder):
    """Not an assertion on time: prints the per-record cost for the report (-s to see it)."""
    payload = _serialize(_order(pool))[0][5:]
    n, best = 2000, float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            order_decoder(payload)
        best = min(best, (time.perf_counter() - start) / n)
    print(f"\nprotobuf decode: {best * 1e6:.1f} us/record ({len(payload)} bytes)", file=sys.stderr)
