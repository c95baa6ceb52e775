"""Records written by confluent-kafka's own serializers (AvroSerializer, ProtobufSerializer,
JSONSerializer) through a Schema Registry reach a tail decoded, from ``earliest`` and live, on
both consumer backends; a registry that is down, refuses the credentials or does not know the
id costs a record its decoding, with the reason, and nothing else."""
from __future__ import annotations

import importlib.resources
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_tools import protoc

from helpers import WsClient, tail, wait_for
from kafkatail.testing.server import ServerProcess
from kafkatail.testing.registry import RegistryServer

CUSTOMER = {"type": "record", "name": "Customer", "namespace": "shop", "fields": [
    {"name": "name", "type": "string"},
    {"name": "since", "type": {"type": "int", "logicalType": "date"}}]}
ORDER_V1 = {"type": "record", "name": "Order", "namespace": "shop", "fields": [
    {"name": "id", "type": "long"},
    {"name": "status", "type": {"type": "enum", "name": "Status",
                                "symbols": ["NEW", "PAID", "FAILED"]}},
    {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 12,
                                "scale": 2}},
    {"name": "lines", "type": {"type": "array", "items": {
        "type": "record", "name": "Line", "fields": [{"name": "sku", "type": "string"},
                                                     {"name": "qty", "type": "int"}]}}},
    {"name": "tags", "type": {"type": "map", "values": "string"}},
    {"name": "note", "type": ["null", "string"], "default": None},
    {"name": "placed", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "customer", "type": CUSTOMER}]}
ORDER_V2 = {**ORDER_V1, "fields": ORDER_V1["fields"] + [
    {"name": "channel", "type": "string", "default": "web"}]}
PLACED_MS = 1796551800123  # 2026-12-06T10:10:00.123Z


def order(i: int, **extra) -> dict:
    return {"id": i, "status": "PAID" if i % 2 else "FAILED", "amount": Decimal("1234.50") + i,
            "lines": [{"sku": "a-1", "qty": 2}, {"sku": "b-2", "qty": 1}],
            "tags": {"region": "eu"}, "note": None if i % 2 else f"note {i}",
            "placed": PLACED_MS, "customer": {"name": "Ada", "since": 20000}, **extra}


def shown(i: int, **extra) -> dict:
    """``order(i)`` as a tail shows it: decimals exact, times in ISO 8601."""
    return {"id": i, "status": "PAID" if i % 2 else "FAILED", "amount": f"{1234.50 + i:.2f}",
            "lines": [{"sku": "a-1", "qty": 2}, {"sku": "b-2", "qty": 1}],
            "tags": {"region": "eu"}, "note": None if i % 2 else f"note {i}",
            "placed": "2026-12-06T10:10:00.123000Z",
            "customer": {"name": "Ada", "since": "2024-10-04"}, **extra}


MODES = ("earliest", "live")


@pytest.fixture(params=MODES)
def mode(request) -> str:
    return request.param


def read(server, topic: str, produce, mode: str, n: int, query: str = ""):
    """``n`` records of ``topic`` as a tail sees them: produced before a tail from ``earliest``,
    or after a tail has gone live."""
    if mode == "earliest":
        produce()
        c = tail(server, topic, "from=earliest" + query)
        return c, c.collect(n)
    c = tail(server, topic, query.lstrip("&"))
    c.status("live")
    # Serializing asks the registry, which may take seconds (a real one's client retries): the
    # tail keeps reading meanwhile, so the server's pings are answered and it stays open.
    with ThreadPoolExecutor(1, thread_name_prefix="kt-test-produce") as pool:
        produced = pool.submit(produce)
        try:
            recs = c.collect(n)
        finally:
            produced.result()  # when producing failed, that is what the test reports
    return c, recs


def serializer(kind, url: str, schema: str, **conf):
    return kind(SchemaRegistryClient({"url": url}), schema, conf=conf or None) \
        if kind is AvroSerializer else kind(schema, SchemaRegistryClient({"url": url}),
                                            conf=conf or None)


def value(topic: str) -> SerializationContext:
    return SerializationContext(topic, MessageField.VALUE)


@pytest.fixture
def registered(make_server_, schema_registry):
    """A server that decodes through the suite's registry."""
    return make_server_(schema_registry_url=schema_registry.url)


def test_avro_unions_enums_decimals_arrays_maps_and_nested_records(
        cluster, registered, schema_registry, backend, mode):
    t = cluster.create_topic()
    ser = serializer(AvroSerializer, schema_registry.url, json.dumps(ORDER_V1))
    produce = lambda: cluster.produce(t, [(f"k{i}", ser(order(i), value(t))) for i in range(4)])
    c, recs = read(registered, t, produce, mode, 4)
    assert [r["encoding"] for r in recs] == ["avro"] * 4
    assert [r["value"] for r in recs] == [shown(i) for i in range(4)]
    schema_id = recs[0]["value_schema_id"]
    assert schema_id > 0 and all("decode_error" not in r for r in recs)
    # Filters see the decoded form: a status and a decimal are found, the wire bytes are not.
    paid = tail(registered, t, "from=earliest&filter=PAID")
    assert [r["value"]["id"] for r in paid.collect(2)] == [1, 3]
    exact = tail(registered, t, "from=earliest&regex=%221236%5C.50%22")
    assert [r["value"]["id"] for r in exact.collect(1)] == [2]
    listing = json.loads(_get(registered, f"/api/schemas/{schema_id}"))
    # Ids are global: other tests' topics holding the same schema are listed too.
    assert (listing["id"], listing["encoding"]) == (schema_id, "avro")
    assert {"subject": f"{t}-value", "version": 1} in listing["subjects"]


def test_schema_evolution_v1_and_v2_in_one_topic(cluster, registered, schema_registry, backend,
                                                 mode):
    t = cluster.create_topic()
    v1 = serializer(AvroSerializer, schema_registry.url, json.dumps(ORDER_V1))
    v2 = serializer(AvroSerializer, schema_registry.url, json.dumps(ORDER_V2))
    produce = lambda: cluster.produce(t, [("a", v1(order(1), value(t))),
                                          ("b", v2(order(2, channel="app"), value(t))),
                                          ("c", v1(order(3), value(t)))])
    c, recs = read(registered, t, produce, mode, 3)
    assert [r["value"] for r in recs] == [shown(1), shown(2, channel="app"), shown(3)]
    ids = [r["value_schema_id"] for r in recs]
    assert ids[0] == ids[2] != ids[1]


def test_json_schema(cluster, registered, schema_registry, backend, mode):
    t = cluster.create_topic()
    schema = json.dumps({"type": "object", "properties": {
        "user": {"type": "object", "properties": {"id": {"type": "integer"}}},
        "event": {"type": "string"}}})
    ser = serializer(JSONSerializer, schema_registry.url, schema)
    produce = lambda: cluster.produce(
        t, [(None, ser({"user": {"id": i}, "event": "login"}, value(t))) for i in range(3)])
    c, recs = read(registered, t, produce, mode, 3)
    assert [(r["encoding"], r["value"]) for r in recs] == [
        ("json-schema", {"user": {"id": i}, "event": "login"}) for i in range(3)]


def test_schema_framed_keys_are_decoded(cluster, registered, schema_registry, backend, mode):
    t = cluster.create_topic()
    key_schema = {"type": "record", "name": "OrderKey", "fields": [{"name": "id", "type": "long"}]}
    keys = serializer(AvroSerializer, schema_registry.url, json.dumps(key_schema))
    values = serializer(AvroSerializer, schema_registry.url, json.dumps(ORDER_V1))
    produce = lambda: cluster.produce(t, [
        (keys({"id": i}, SerializationContext(t, MessageField.KEY)), values(order(i), value(t)))
        for i in range(2)])
    c, recs = read(registered, t, produce, mode, 2)
    assert [(r["key"], r["key_encoding"]) for r in recs] == [('{"id":0}', "avro"),
                                                             ('{"id":1}', "avro")]
    assert recs[0]["key_schema_id"] != recs[0]["value_schema_id"]
    assert [r["value"] for r in recs] == [shown(0), shown(1)]


def test_an_unknown_schema_id_goes_out_undecoded_with_the_reason(
        cluster, registered, schema_registry, backend, mode):
    t = cluster.create_topic()
    framed = b"\x00" + (987654).to_bytes(4, "big") + b"\x02\x04ab"
    produce = lambda: cluster.produce(t, [("k", framed), ("plain", "still text")])
    c, recs = read(registered, t, produce, mode, 2)
    assert recs[0]["value"] == {"schema_id": 987654, "payload": "AgRhYg=="}
    assert recs[0]["encoding"] == "json" and recs[0]["value_schema_id"] == 987654
    assert "schema 987654" in recs[0]["decode_error"] and "not found" in recs[0]["decode_error"]
    assert (recs[1]["value"], recs[1]["encoding"]) == ("still text", "text")


def test_a_registry_down_then_back(cluster, make_server_, schema_registry, backend, mode):
    if not hasattr(schema_registry, "down"):
        pytest.skip("a real registry (KAFKATAIL_TEST_SCHEMA_REGISTRY) cannot be taken down here")
    t = cluster.create_topic()
    ser = serializer(AvroSerializer, schema_registry.url, json.dumps(ORDER_V1))
    first = ser(order(1), value(t))
    server = make_server_(schema_registry_url=schema_registry.url)
    schema_registry.down()
    try:
        c, recs = read(server, t, lambda: cluster.produce(t, [("k", first)]), mode, 1)
    finally:
        schema_registry.up()
    assert recs[0]["encoding"] == "json" and set(recs[0]["value"]) == {"schema_id", "payload"}
    assert "unreachable" in recs[0]["decode_error"] and "retrying" in recs[0]["decode_error"]

    def decoded():
        cluster.produce(t, [("k", first)])
        c.recv(1.0)
        return [r for r in c.records if r["encoding"] == "avro"]
    # Records keep flowing (undecoded) while the failure is remembered, then decode.
    assert wait_for(decoded, 30, "a decoded record once the registry is back")[0]["value"] == \
        shown(1)


def test_registry_auth_failure_is_a_reason_and_the_password_never_shows(
        cluster, make_server_, backend, mode):
    with RegistryServer(users={"alice": "right-secret"}) as registry:
        good = f"http://alice:right-secret@{registry.url.split('://', 1)[1]}"
        t = cluster.create_topic()
        ser = serializer(AvroSerializer, good, json.dumps(ORDER_V1))
        payload = ser(order(1), value(t))
        wrong = make_server_(schema_registry_url=registry.url,
                             schema_registry_basic_auth="alice:wrong-secret")
        c, recs = read(wrong, t, lambda: cluster.produce(t, [("k", payload)]), mode, 1)
        assert "refused the credentials (401)" in recs[0]["decode_error"]
        assert not any("secret" in json.dumps(f) for f in c.frames)
        right = make_server_(schema_registry_url=good)
        ok = tail(right, t, "from=earliest")
        assert ok.collect(1)[0]["value"] == shown(1)


MONEY_PROTO = """\
syntax = "proto3";
package shared;
message Money { string currency = 1; int64 units = 2; }
"""
ORDER_PROTO = """\
syntax = "proto3";
package shop;
import "shared/money.proto";
import "google/protobuf/timestamp.proto";

message Ping { int32 n = 1; }
message Order {
  message Line { string sku = 1; uint32 qty = 2; }
  string id = 1;
  shared.Money price = 2;
  repeated Line lines = 3;
  google.protobuf.Timestamp placed_at = 4;
}
"""


def proto_classes(tmp_path) -> dict:
    """The message classes protoc makes of ORDER_PROTO (and its import), in a private pool."""
    for name, text in (("shared/money.proto", MONEY_PROTO), ("shop/order.proto", ORDER_PROTO)):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    out = tmp_path / "set.pb"
    assert protoc.main(["protoc", f"-I{tmp_path}",
                        f"-I{importlib.resources.files('grpc_tools') / '_proto'}",
                        f"--descriptor_set_out={out}", "--include_imports",
                        "shop/order.proto"]) == 0
    pool = descriptor_pool.DescriptorPool()
    for proto in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file:
        pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
            for name in ("shop.Order", "shop.Order.Line")}


def test_protobuf_nested_repeated_an_imported_type_and_non_zero_message_indexes(
        cluster, registered, schema_registry, backend, mode, tmp_path):
    classes = proto_classes(tmp_path)
    Order, Line = classes["shop.Order"], classes["shop.Order.Line"]
    order = Order(id="o-1")
    order.price.currency, order.price.units = "EUR", 1234
    order.lines.add(sku="a-1", qty=2)
    order.lines.add(sku="b-2")
    order.placed_at.FromMilliseconds(PLACED_MS)
    conf = {"use.deprecated.format": False}
    client = SchemaRegistryClient({"url": schema_registry.url})
    orders = ProtobufSerializer(Order, client, conf)
    lines = ProtobufSerializer(Line, client, conf)
    t = cluster.create_topic()
    produce = lambda: cluster.produce(t, [("o", orders(order, value(t))),
                                          ("l", lines(Line(sku="c-3", qty=5), value(t)))])
    c, recs = read(registered, t, produce, mode, 2)
    assert [r["encoding"] for r in recs] == ["protobuf", "protobuf"]
    assert recs[0]["value"] == {
        "id": "o-1", "price": {"currency": "EUR", "units": "1234"},
        "lines": [{"sku": "a-1", "qty": 2}, {"sku": "b-2", "qty": 0}],
        "placed_at": "2026-12-06T10:10:00.123Z"}
    assert recs[1]["value"] == {"sku": "c-3", "qty": 5}


def test_kafkatail_tail_prints_decoded_values(cluster, registered, schema_registry):
    t = cluster.create_topic()
    ser = serializer(AvroSerializer, schema_registry.url, json.dumps(ORDER_V1))
    cluster.produce(t, [(f"k{i}", ser(order(i), value(t))) for i in range(2)])
    kt = [sys.executable, "-m", "kafkatail", "tail", t, "--url",
          f"ws://127.0.0.1:{registered.port}", "-o", "earliest"]
    r = subprocess.run(kt + ["-c", "1", "-f", "%k %s\\n", "--filter", "FAILED"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    key, text = r.stdout.split(" ", 1)
    assert key == "k0" and json.loads(text) == shown(0)
    r = subprocess.run(kt + ["-c", "2", "--json"], capture_output=True, text=True, timeout=60)
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [(x["encoding"], x["value"]) for x in lines] == [("avro", shown(0)), ("avro", shown(1))]


@pytest.mark.parametrize("worker", ["gthread", "gevent"])
def test_a_gunicorn_worker_decodes_and_joins_its_registry_threads(cluster, schema_registry,
                                                                  worker):
    """The registry's threads under each worker (greenlets under gevent): records decode, and
    SIGTERM still ends the worker at once."""
    t = cluster.create_topic()
    ser = serializer(AvroSerializer, schema_registry.url, json.dumps(ORDER_V1))
    cluster.produce(t, [("k", ser(order(1), value(t)))])
    server = ServerProcess(cluster.bootstrap, worker, schema_registry_url=schema_registry.url)
    try:
        c = WsClient(server.ws_url(f"/ws/tail/{t}?from=earliest"))
        assert c.collect(1)[0]["value"] == shown(1)
        names = [th["name"] for th in json.loads(server.get("/debug/threads"))["threads"]]
        assert any(name.startswith("kt-registry") for name in names), names
    finally:
        code = server.stop()
    assert code == 0


def _get(server, path: str) -> str:
    import urllib.request
    return urllib.request.urlopen(server.url(path), timeout=10).read().decode()
