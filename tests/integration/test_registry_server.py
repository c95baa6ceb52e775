"""The test schema registry (kafkatail.testing.registry) against confluent-kafka's own client,
serializers and deserializers: everything they call is served, in the shapes they expect; and the
server's auth, TLS, fault switches, counters and threads."""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from email.message import Message
from typing import Any, Callable
from urllib.parse import urlsplit

import pytest

from helpers import wait_for
from kafkatail.testing.certs import make_pki
from kafkatail.testing.registry import (CONNECTION_THREAD_NAME, CONTENT_TYPE,
                                        PROXY_THREAD_NAME, REGISTRY_ENV, THREAD_NAME,
                                        ExternalRegistry, RegistryProxy, RegistryServer,
                                        registry_for_test)

from confluent_kafka.schema_registry import (Schema, SchemaReference,  # noqa: E402
                                             SchemaRegistryClient, SchemaRegistryError)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer  # noqa: E402
# the httpx (or httpx2) the client uses, so its transport errors
from confluent_kafka.schema_registry.common._httpx_compat import httpx  # noqa: E402
from confluent_kafka.schema_registry.json_schema import (JSONDeserializer,  # noqa: E402
                                                         JSONSerializer)
from confluent_kafka.schema_registry.protobuf import (ProtobufDeserializer,  # noqa: E402
                                                      ProtobufSerializer)
from confluent_kafka.serialization import MessageField, SerializationContext  # noqa: E402
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # noqa: E402

ADDRESS = json.dumps({"type": "record", "name": "Address", "namespace": "kt",
                      "fields": [{"name": "city", "type": "string"}]})
ADDRESS_V2 = json.dumps({"type": "record", "name": "Address", "namespace": "kt",
                         "fields": [{"name": "city", "type": "string"},
                                    {"name": "zip", "type": "string", "default": ""}]})
READING = json.dumps({"type": "record", "name": "Reading", "namespace": "kt",
                      "fields": [{"name": "value", "type": "double"},
                                 {"name": "where", "type": "kt.Address"}]})
READING_JSON = json.dumps({"$schema": "http://json-schema.org/draft-07/schema#", "title": "Reading",
                           "type": "object", "required": ["value"],
                           "properties": {"value": {"type": "number"}}})
PLACE_PROTO = 'syntax = "proto3";\npackage kt.test;\n\nmessage Place {\n  string city = 1;\n}\n'
READING_PROTO = ('syntax = "proto3";\npackage kt.test;\n\nimport "kt/common.proto";\n\n'
                 'message Reading {\n  double value = 1;\n  Place where = 2;\n}\n')

# Every route the server serves, as RegistryServer.requests names them.
ROUTES = {"GET /schemas/ids/{id}", "GET /schemas/ids/{id}/versions", "GET /subjects",
          "GET /subjects/{subject}/versions", "GET /subjects/{subject}/versions/{version}",
          "POST /subjects/{subject}/versions", "POST /subjects/{subject}",
          "GET /associations/resources/{namespace}/{resource}"}


def unique(name: str) -> str:
    """A name of the test's own: a real registry (KAFKATAIL_TEST_SCHEMA_REGISTRY) keeps subjects."""
    return f"kt-registry-{name}-{uuid.uuid4().hex[:8]}"


def client(url: str, **conf: Any) -> SchemaRegistryClient:
    """confluent-kafka's client, failing at once instead of retrying."""
    return SchemaRegistryClient({"url": url, "max.retries": 0, **conf})


def fetch(url: str) -> tuple[int, Any, Message]:
    """GET ``url``: status, JSON body and headers, errors included."""
    try:
        response = urllib.request.urlopen(url, timeout=10)
    except urllib.error.HTTPError as exc:
        response = exc
    with response:
        return response.status, json.load(response), response.headers


def schema_id_of(data: bytes) -> int:
    """The id in Confluent's framing: magic byte 0, then the id as 4 bytes big-endian."""
    assert data[0] == 0, data[:5]
    return int.from_bytes(data[1:5], "big")


# --- the three formats, written and read back by confluent-kafka ---------------------------------


def avro_round_trip(registry, topic: str, conf: dict | None = None) -> bytes:
    """A record whose schema references another subject's named type (kt.Address), written
    by AvroSerializer and read back by AvroDeserializer (a client with an empty cache)."""
    address = f"{topic}-address"
    registry.register(address, ADDRESS)
    record = {"value": 1.5, "where": {"city": "Oslo"}}
    ctx = SerializationContext(topic, MessageField.VALUE)
    schema = Schema(READING, "AVRO", [SchemaReference("kt.Address", address, 1)])
    with client(registry.url) as writer:
        data = AvroSerializer(writer, schema, conf=conf)(record, ctx)
    with client(registry.url) as reader:
        assert AvroDeserializer(reader)(data, ctx) == record
    return data


def json_round_trip(registry, topic: str) -> bytes:
    ctx = SerializationContext(topic, MessageField.VALUE)
    with client(registry.url) as writer:
        data = JSONSerializer(READING_JSON, writer)({"value": 3}, ctx)
    with client(registry.url) as reader:
        assert JSONDeserializer(None, schema_registry_client=reader)(data, ctx) == {"value": 3}
    return data


def proto_classes() -> tuple[type, type]:
    """kt.test.Reading (kt/reading.proto), which imports kt.test.Place (kt/common.proto): the
    message classes of READING_PROTO and PLACE_PROTO, built in a descriptor pool of their own."""
    field = descriptor_pb2.FieldDescriptorProto
    common = descriptor_pb2.FileDescriptorProto(name="kt/common.proto", package="kt.test",
                                                syntax="proto3")
    common.message_type.add(name="Place").field.add(
        name="city", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    reading = descriptor_pb2.FileDescriptorProto(name="kt/reading.proto", package="kt.test",
                                                 syntax="proto3", dependency=["kt/common.proto"])
    message = reading.message_type.add(name="Reading")
    message.field.add(name="value", number=1, type=field.TYPE_DOUBLE, label=field.LABEL_OPTIONAL)
    message.field.add(name="where", number=2, type=field.TYPE_MESSAGE, type_name=".kt.test.Place",
                      label=field.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(common)
    pool.Add(reading)
    return tuple(message_factory.GetMessageClass(pool.FindMessageTypeByName(f"kt.test.{name}"))
                 for name in ("Reading", "Place"))


def protobuf_round_trip(registry, topic: str) -> bytes:
    reading_class, place_class = proto_classes()
    message = reading_class(value=2.5, where=place_class(city="Oslo"))
    ctx = SerializationContext(topic, MessageField.VALUE)
    with client(registry.url) as writer:
        data = ProtobufSerializer(reading_class, writer)(message, ctx)
    with client(registry.url) as reader:
        assert ProtobufDeserializer(reading_class, {}, reader)(data, ctx) == message
    return data


def test_avro_round_trip_with_a_reference(schema_registry):
    topic = unique("avro")
    schema_id = schema_id_of(avro_round_trip(schema_registry, topic))
    with client(schema_registry.url) as reader:
        schema = reader.get_schema(schema_id)
        latest = reader.get_latest_version(f"{topic}-value")
    assert schema.schema_type == "AVRO" and json.loads(schema.schema_str) == json.loads(READING)
    assert schema.references == [SchemaReference("kt.Address", f"{topic}-address", 1)]
    assert (latest.schema_id, latest.version) == (schema_id, 1)


def test_json_schema_round_trip(schema_registry):
    schema_id = schema_id_of(json_round_trip(schema_registry, unique("json")))
    with client(schema_registry.url) as reader:
        schema = reader.get_schema(schema_id)
    assert schema.schema_type == "JSON"
    assert json.loads(schema.schema_str) == json.loads(READING_JSON)


def skip_on_apicurio(registry, release: str, reason: str) -> None:
    """Skip when ``registry`` is the session's Apicurio (KAFKATAIL_TEST_SCHEMA_REGISTRY=apicurio)
    of a release starting with ``release``: ``reason`` is where it differs from Confluent's."""
    if getattr(registry, "name", "").startswith(f"Apicurio Registry {release}"):
        pytest.skip(f"{registry.name}: {reason}")


def test_protobuf_round_trip_registers_the_import_as_a_reference(schema_registry):
    skip_on_apicurio(schema_registry, "3.3", "ProtobufDeserializer asks GET /schemas/ids/{id}"
                     "?format=serialized, which Apicurio 3.3 answers with HTTP 500 for a schema "
                     "registered as a base64 FileDescriptorProto (it parses the stored base64 as "
                     ".proto text: 'Syntax error in Reading.proto:1:1: unexpected label')")
    schema_id = schema_id_of(protobuf_round_trip(schema_registry, unique("proto")))
    with client(schema_registry.url) as reader:
        schema = reader.get_schema(schema_id)
    assert schema.schema_type == "PROTOBUF"
    # ProtobufSerializer registers kt/common.proto under a subject of that name, then refers to it
    assert [(r.name, r.subject) for r in schema.references] == [("kt/common.proto",
                                                                "kt/common.proto")]


@pytest.mark.parametrize("round_trip", [avro_round_trip, json_round_trip, protobuf_round_trip])
def test_every_call_of_the_serializers_and_deserializers_is_served(
        round_trip: Callable[[Any, str], bytes]):
    """No call falls on a route the server lacks (that would be a 404 the client might swallow)."""
    with RegistryServer() as server:
        round_trip(server, unique("calls"))
        assert set(server.requests) <= ROUTES, server.requests
        assert server.requests["POST /subjects/{subject}/versions"] >= 1
        assert server.requests["GET /schemas/ids/{id}"] == 1  # the reader's one fetch


@pytest.mark.parametrize("conf", [{"auto.register.schemas": False},
                                  {"auto.register.schemas": False, "use.latest.version": True},
                                  {"normalize.schemas": True}],
                         ids=["lookup", "use-latest-version", "normalize"])
def test_avro_serializer_finds_a_registered_schema(schema_registry, conf):
    """Looked up (``POST /subjects/{subject}``), taken as the subject's latest version, or
    registered again normalized: the id is the one registered before."""
    topic = unique("avro-conf")
    schema_registry.register(f"{topic}-address", ADDRESS)
    references = [{"name": "kt.Address", "subject": f"{topic}-address", "version": 1}]
    registered = schema_registry.register(f"{topic}-value", READING, references=references)
    assert schema_id_of(avro_round_trip(schema_registry, topic, conf)) == registered


def test_ids_are_global_and_versions_per_subject(schema_registry):
    first, second = unique("first"), unique("second")
    schema_id = schema_registry.register(first, ADDRESS)
    assert schema_registry.register(first, ADDRESS) == schema_id  # again: no new version
    assert schema_registry.register(second, ADDRESS) == schema_id  # another subject: the same id
    newer = schema_registry.register(first, ADDRESS_V2)
    assert newer != schema_id
    with client(schema_registry.url) as registry:
        assert registry.get_versions(first) == [1, 2]
        assert registry.get_version(first, 1).schema_id == schema_id
        assert registry.get_latest_version(first).schema_id == newer
        usages = {(v.subject, v.version) for v in registry.get_schema_versions(schema_id)}
        assert {(first, 1), (second, 1)} <= usages  # a real registry may have it elsewhere too
        assert {first, second} <= set(registry.get_subjects())


def test_the_same_schema_whitespace_and_key_order_aside_keeps_its_id(schema_registry):
    skip_on_apicurio(schema_registry, "", "its ids are those of the schema text as sent, so "
                     "whitespace or key order makes a new one (Confluent's compares parsed schemas)")
    schema_id = schema_registry.register(unique("compact"), ADDRESS)
    reordered = json.dumps(dict(reversed(json.loads(ADDRESS).items())), indent=2)
    assert schema_registry.register(unique("indented"), reordered) == schema_id


def test_responses_have_confluents_shapes_and_error_codes():
    with RegistryServer() as server:
        avro = server.register("avro", ADDRESS)
        base = server.url
        status, body, headers = fetch(f"{base}/schemas/ids/{avro}")
        assert (status, body, headers["Content-Type"]) == (200, {"schema": ADDRESS}, CONTENT_TYPE)
        assert fetch(f"{base}/subjects/avro/versions/latest")[1] == {
            "subject": "avro", "version": 1, "id": avro, "schema": ADDRESS}
        assert fetch(f"{base}/schemas/ids/{avro}/versions")[1] == [{"subject": "avro",
                                                                     "version": 1}]
        assert fetch(f"{base}/subjects/avro/versions")[1] == [1]
        for path, status, code in [(f"/schemas/ids/{avro + 1}", 404, 40403),
                                   (f"/schemas/ids/{avro + 1}/versions", 404, 40403),
                                   ("/subjects/nothing/versions/1", 404, 40401),
                                   ("/subjects/avro/versions/2", 404, 40402),
                                   ("/subjects/avro/versions/first", 422, 42202)]:
            got, body, headers = fetch(base + path)
            assert (got, body["error_code"], headers["Content-Type"]) == (status, code,
                                                                          CONTENT_TYPE), path
        missing = avro + 1
        assert fetch(f"{base}/schemas/ids/{missing}")[1]["message"] == f"Schema {missing} not found"


def test_proto_text_is_served_as_registered():
    """A real registry serves .proto text; register() stores and serves it as given."""
    with RegistryServer() as server:
        server.register("kt/common.proto", PLACE_PROTO, "PROTOBUF")
        references = [{"name": "kt/common.proto", "subject": "kt/common.proto", "version": 1}]
        schema_id = server.register("readings-value", READING_PROTO, "PROTOBUF", references)
        assert fetch(f"{server.url}/schemas/ids/{schema_id}")[1] == {
            "schemaType": "PROTOBUF", "references": references, "schema": READING_PROTO}
        with client(server.url) as registry:
            schema = registry.get_schema(schema_id)
        assert (schema.schema_type, schema.schema_str) == ("PROTOBUF", READING_PROTO)


def test_basic_auth():
    with RegistryServer(users={"alice": "secret"}) as server:
        for credentials in [{}, {"basic.auth.user.info": "alice:wrong"},
                            {"basic.auth.user.info": "bob:secret"}]:
            with client(server.url, **credentials) as registry, \
                    pytest.raises(SchemaRegistryError) as refused:
                registry.get_subjects()
            assert (refused.value.http_status_code, refused.value.error_code) == (401, 401)
        with client(server.url, **{"basic.auth.user.info": "alice:secret"}) as registry:
            assert registry.get_subjects() == []
        status, body, headers = fetch(f"{server.url}/subjects")
        assert (status, body) == (401, {"error_code": 401, "message": "Unauthorized"})
        assert headers["WWW-Authenticate"].startswith("Basic ")


def test_bearer_token():
    bearer = {"bearer.auth.credentials.source": "STATIC_TOKEN",
              "bearer.auth.logical.cluster": "lsrc-test"}
    with RegistryServer(tokens={"t0k"}) as server:
        with client(server.url, **bearer, **{"bearer.auth.token": "t0k"}) as registry:
            assert registry.get_subjects() == []
        with client(server.url, **bearer, **{"bearer.auth.token": "other"}) as registry, \
                pytest.raises(SchemaRegistryError) as refused:
            registry.get_subjects()
        assert refused.value.http_status_code == 401


def test_tls_with_client_certificates(tmp_path):
    pki = make_pki(tmp_path)
    with RegistryServer(tls=(pki.server_pem, None), client_ca=pki.ca) as server:
        assert server.url.startswith("https://127.0.0.1:")
        trust = {"ssl.ca.location": str(pki.ca)}
        with client(server.url, **trust, **{"ssl.certificate.location": str(pki.client_cert),
                                            "ssl.key.location": str(pki.client_key)}) as registry:
            assert registry.get_subjects() == []
        with client(server.url, **trust) as registry, pytest.raises(httpx.TransportError):
            registry.get_subjects()  # no client certificate


def test_down_refuses_connections_and_up_serves_again_on_the_same_port():
    with RegistryServer() as server:
        server.register("kept", ADDRESS)
        url = server.url
        with client(url) as registry:
            assert registry.get_subjects() == ["kept"]  # a connection kept alive
            server.down()
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", urlsplit(url).port), timeout=5).close()
            with pytest.raises(httpx.TransportError):
                registry.get_subjects()
            server.up()
            assert server.url == url
            assert registry.get_subjects() == ["kept"]


def test_slow_delays_responses_and_stop_hangs_up_at_once():
    server = RegistryServer().start()
    try:
        server.slow(0.3)
        started = time.monotonic()
        assert fetch(f"{server.url}/subjects")[0] == 200
        assert time.monotonic() - started >= 0.3
        server.slow(60)
        failures: list[OSError] = []
        reader = threading.Thread(target=fetch_into, args=(f"{server.url}/subjects", failures),
                                  name="kt-test-slow-reader")
        reader.start()
        wait_for(lambda: server.requests["GET /subjects"] == 2, what="the slowed request")
        started = time.monotonic()
    finally:
        server.stop()
    assert time.monotonic() - started < 2
    reader.join(10)
    assert not reader.is_alive() and len(failures) == 1  # hung up on, no response


def fetch_into(url: str, failures: list[OSError]) -> None:
    try:
        fetch(url)
    except OSError as exc:
        failures.append(exc)


def registry_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith(THREAD_NAME))


def test_stop_leaves_no_thread_even_with_a_connection_kept_alive():
    server = RegistryServer().start()
    connection = http.client.HTTPConnection("127.0.0.1", urlsplit(server.url).port, timeout=10)
    try:
        connection.request("GET", "/subjects")
        connection.getresponse().read()
        assert registry_threads() == [THREAD_NAME, CONNECTION_THREAD_NAME]
        server.stop()
        assert registry_threads() == []
    finally:
        connection.close()
        server.stop()


def test_requests_are_counted_by_route_and_schema_id():
    with RegistryServer() as server:
        known = server.register("counted", ADDRESS)
        for schema_id in (known, 99, 99):
            fetch(f"{server.url}/schemas/ids/{schema_id}")
        fetch(f"{server.url}/subjects/counted/versions/latest")
        assert (server.hits(known), server.hits(99), server.hits(7)) == (1, 2, 0)
        assert server.requests == Counter({"GET /schemas/ids/{id}": 3,
                                           "GET /subjects/{subject}/versions/{version}": 1})


def test_a_real_registry_gets_the_fault_switches_through_a_proxy():
    """A session registry at an http:// URL (here one with basic auth, credentials in the URL)
    makes the fixture an ExternalRegistry behind a RegistryProxy of the test's own:
    down()/up() hold against the real registry, the counters skip."""
    with RegistryServer(users={"alice": "secret"}) as real:
        fixture = registry_for_test((real.url.replace("://", "://alice:secret@"), "real"))
        external = next(fixture)
        try:
            assert isinstance(external, ExternalRegistry) and external.proxy is not None
            assert external.url == external.proxy.url != real.url.replace("://", "://alice:secret@")
            assert external.url.startswith("http://alice:secret@127.0.0.1:")
            schema_id = external.register("external", ADDRESS)
            assert real.requests == Counter({"POST /subjects/{subject}/versions": 1})
            with client(external.url) as registry:
                assert json.loads(registry.get_schema(schema_id).schema_str) == json.loads(ADDRESS)
                external.down()
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection(("127.0.0.1", urlsplit(external.url).port), 5).close()
                with pytest.raises(httpx.TransportError):
                    registry.get_subjects()
                external.up()
                assert registry.get_subjects() == ["external"]
            with pytest.raises(pytest.skip.Exception, match=REGISTRY_ENV):
                external.hits(schema_id)
        finally:
            fixture.close()
        assert proxy_threads() == []


def test_an_https_registry_gets_no_proxy_and_its_fault_switches_skip(tmp_path):
    """A proxy in front of TLS would fail the client's check of the certificate's host name."""
    pki = make_pki(tmp_path)
    with RegistryServer(tls=(pki.server_pem, None)) as real:
        fixture = registry_for_test((real.url, "real"))
        external = next(fixture)
        assert (external.url, external.proxy) == (real.url, None)
        with pytest.raises(pytest.skip.Exception, match=REGISTRY_ENV):
            external.down()
        fixture.close()


def proxy_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith(PROXY_THREAD_NAME))


def test_proxy_slow_holds_requests_back_and_stop_hangs_up_at_once():
    with RegistryServer() as real:
        proxy = RegistryProxy(real.url).start()
        try:
            proxy.slow(0.3)
            started = time.monotonic()
            assert fetch(f"{proxy.url}/subjects")[:2] == (200, [])
            assert time.monotonic() - started >= 0.3
            proxy.slow(60)
            failures: list[OSError] = []
            reader = threading.Thread(target=fetch_into, args=(f"{proxy.url}/subjects", failures),
                                      name="kt-test-slow-reader")
            reader.start()
            wait_for(lambda: f"{PROXY_THREAD_NAME}-conn" in proxy_threads(),
                     what="the slowed request's connection")
            started = time.monotonic()
        finally:
            proxy.stop()
        assert time.monotonic() - started < 2
        reader.join(10)
        assert not reader.is_alive() and len(failures) == 1  # hung up on, no response
        assert real.requests["GET /subjects"] == 1  # the held-back request never reached it
        assert proxy_threads() == []


def test_proxy_stop_leaves_no_thread_even_with_a_connection_kept_alive():
    with RegistryServer() as real:
        proxy = RegistryProxy(real.url).start()
        connection = http.client.HTTPConnection("127.0.0.1", urlsplit(proxy.url).port, timeout=10)
        try:
            connection.request("GET", "/subjects")
            assert connection.getresponse().read() == b"[]"
            assert proxy_threads() == [PROXY_THREAD_NAME, f"{PROXY_THREAD_NAME}-conn"]
            proxy.stop()
            assert proxy_threads() == []
        finally:
            connection.close()
            proxy.stop()


def test_proxy_forwards_only_to_http():
    with pytest.raises(ValueError, match="http://"):
        RegistryProxy("https://registry.example:8081")
