"""Apicurio Registry, the real Confluent-compatible registry the suite starts on this machine
(kafkatail/testing/apicurio.py): what confluent-kafka's serializers register through its ccompat
API, kafkatail's own registry client fetches by id with its references and kafkatail's decoders
read; and the launcher picks its release by the Java found and leaves no process or file behind.
"""
from __future__ import annotations

import base64
import gc
import json
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from helpers import unavailable
from kafkatail.broker import BrokerError
from kafkatail.schemas.avro import avro_decoder
from kafkatail.schemas.protobuf import protobuf_decoder
from kafkatail.schemas.registry import RegistryClient, RegistryError, endpoints
from kafkatail.testing.apicurio import CCOMPAT_PATH, RELEASES, Apicurio, Java, choose, sweep_orphans

pytest.importorskip("confluent_kafka.schema_registry.avro", reason="needs confluent-kafka[avro]")
from confluent_kafka.schema_registry import (Schema, SchemaReference,  # noqa: E402
                                             SchemaRegistryClient)
from confluent_kafka.schema_registry.avro import AvroSerializer  # noqa: E402
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer  # noqa: E402
from confluent_kafka.serialization import MessageField, SerializationContext  # noqa: E402
from google.protobuf import descriptor_pb2  # noqa: E402

from integration.test_registry_server import (ADDRESS, PLACE_PROTO, READING,  # noqa: E402
                                              READING_PROTO, proto_classes)


def start_apicurio() -> Apicurio:
    """A registry of the test's own; skipped without Java or Maven, failed under CI."""
    try:
        return Apicurio().start()
    except BrokerError as exc:
        unavailable(f"Apicurio Registry could not start: {exc}")


@pytest.fixture(scope="module")
def apicurio() -> Iterator[Apicurio]:
    registry = start_apicurio()
    yield registry
    registry.stop()


@pytest.fixture
def writer(apicurio: Apicurio) -> Iterator[SchemaRegistryClient]:
    """confluent-kafka's client, as the serializers use it; no retries."""
    with SchemaRegistryClient({"url": apicurio.url, "max.retries": 0}) as client:
        yield client


@pytest.fixture
def reader(apicurio: Apicurio) -> Iterator[RegistryClient]:
    """kafkatail's own client, as a server's ``schema_registry_url`` makes it."""
    client = RegistryClient(endpoints(apicurio.url))
    yield client
    client.close()


def unique(name: str) -> str:
    return f"kt-apicurio-{name}-{uuid.uuid4().hex[:8]}"


def schema_id_of(data: bytes) -> int:
    assert data[0] == 0, data[:5]
    return int.from_bytes(data[1:5], "big")


def test_the_release_fits_the_java_and_is_reported(apicurio):
    print(f"{apicurio.name} ({apicurio.java.path}) ready in {apicurio.start_seconds:.1f} s")
    assert apicurio.version in RELEASES and apicurio.java.major >= RELEASES[apicurio.version]
    assert apicurio.name == f"Apicurio Registry {apicurio.version} on Java {apicurio.java.major}"
    assert apicurio.url == f"http://127.0.0.1:{apicurio.port}{CCOMPAT_PATH}"
    assert 0 < apicurio.start_seconds < 90
    rss = psutil.Process(apicurio.proc.pid).memory_info().rss
    assert rss < 1 << 30, f"registry RSS {rss >> 20} MB"


def test_avro_registered_by_the_serializer_is_fetched_with_its_reference(writer, reader):
    topic = unique("avro")
    address = f"{topic}-address"
    writer.register_schema(address, Schema(ADDRESS, "AVRO"))
    record = {"value": 1.5, "where": {"city": "Oslo"}}
    schema = Schema(READING, "AVRO", [SchemaReference("kt.Address", address, 1)])
    data = AvroSerializer(writer, schema)(record, SerializationContext(topic, MessageField.VALUE))
    fetched = reader.fetch(schema_id_of(data))
    assert fetched.schema_type == "AVRO"
    assert json.loads(fetched.schema) == json.loads(READING)
    assert {name: json.loads(text) for name, text in fetched.references.items()} == {
        "kt.Address": json.loads(ADDRESS)}
    assert reader.versions(fetched.schema_id) == [{"subject": f"{topic}-value", "version": 1}]
    decode = avro_decoder(fetched.schema, fetched.references)
    assert json.loads(decode(data[5:])) == record


def test_protobuf_registered_by_the_serializer_is_served_as_registered(writer, reader):
    """ProtobufSerializer registers each file as a base64 FileDescriptorProto (the import as a
    reference under its own subject); Apicurio serves both so, not as .proto text, and
    kafkatail's decoder reads the record from them."""
    reading_class, place_class = proto_classes()
    message = reading_class(value=2.5, where=place_class(city="Oslo"))
    topic = unique("proto")
    data = ProtobufSerializer(reading_class, writer)(
        message, SerializationContext(topic, MessageField.VALUE))
    fetched = reader.fetch(schema_id_of(data))
    assert fetched.schema_type == "PROTOBUF"
    assert list(fetched.references) == ["kt/common.proto"]
    files = {name: descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(text))
             for name, text in [("kt/reading.proto", fetched.schema), *fetched.references.items()]}
    assert {name: file.name for name, file in files.items()} == {
        "kt/reading.proto": "kt/reading.proto", "kt/common.proto": "kt/common.proto"}
    decode = protobuf_decoder(fetched.schema, fetched.references)
    assert json.loads(decode(data[5:])) == {"value": 2.5, "where": {"city": "Oslo"}}


def test_protobuf_registered_as_proto_text_is_served_as_text(writer, reader):
    """A .proto registered as text comes back as that text, its import too; kafkatail compiles
    both with protoc and reads a record written with the same messages."""
    common = unique("common")
    writer.register_schema(common, Schema(PLACE_PROTO, "PROTOBUF"))
    reading = Schema(READING_PROTO, "PROTOBUF", [SchemaReference("kt/common.proto", common, 1)])
    schema_id = writer.register_schema(unique("reading"), reading)
    fetched = reader.fetch(schema_id)
    assert (fetched.schema_type, fetched.schema) == ("PROTOBUF", READING_PROTO)
    assert fetched.references == {"kt/common.proto": PLACE_PROTO}
    reading_class, place_class = proto_classes()
    payload = b"\x00" + reading_class(value=2.5, where=place_class(city="Oslo")).SerializeToString()
    decode = protobuf_decoder(fetched.schema, fetched.references)
    assert json.loads(decode(payload)) == {"value": 2.5, "where": {"city": "Oslo"}}


def test_an_unknown_id_is_not_found(reader):
    """Apicurio's 404 (error code 40403) is the final "not found", not a retry."""
    with pytest.raises(RegistryError, match="not found") as missing:
        reader.fetch(987654)
    assert missing.value.unknown


def test_stop_leaves_no_process_port_or_file_behind():
    registry = start_apicurio()
    pid, folder, port = registry.proc.pid, registry.folder, registry.port
    assert psutil.Process(pid).cmdline()[0] == registry.java.path
    registry.stop()
    assert registry.proc is None and not folder.exists()
    assert not psutil.pid_exists(pid)  # ended and reaped
    assert pid not in {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert "stopped in" in registry.log_tail(5)  # a clean shutdown on SIGTERM, logged
    registry.stop()  # again: nothing left to do


def test_a_registry_dropped_without_stop_is_stopped_when_collected():
    registry = start_apicurio()
    pid, folder = registry.proc.pid, registry.folder
    del registry
    gc.collect()
    assert not psutil.pid_exists(pid) and not folder.exists()


JAVA_17, JAVA_21, JAVA_25 = (Java(f"/jdk{n}/bin/java", n) for n in (17, 21, 25))


@pytest.mark.parametrize("javas, expected", [
    ([JAVA_17, JAVA_25], ("3.3.3", JAVA_25)),  # the default java is too old for 3.3.3
    ([JAVA_21, JAVA_25], ("3.3.3", JAVA_21)),  # the default java first when it will do
    ([JAVA_17], ("3.0.9", JAVA_17)),
])
def test_the_release_is_chosen_by_the_java_found(javas, expected):
    assert choose(javas) == expected


def test_no_java_new_enough_is_an_error_naming_what_was_found():
    with pytest.raises(BrokerError, match=r"needs Java 17\+; Java found: /j/bin/java \(Java 11\)"):
        choose([Java("/j/bin/java", 11)])
    with pytest.raises(BrokerError, match=r"3\.3\.3 needs Java 21\+"):
        choose([JAVA_17], "3.3.3")


def test_sweep_removes_only_the_folders_of_dead_owners():
    dead = subprocess.Popen(["true"])
    dead.wait()
    folders = {}
    for owner in ("dead", "alive"):
        folder = Path(tempfile.mkdtemp(prefix="kafkatail-apicurio-"))
        (folder / "owner.pid").write_text(str(dead.pid if owner == "dead" else os.getpid()))
        folders[owner] = folder
    try:
        sweep_orphans()
        assert not folders["dead"].exists() and folders["alive"].exists()
    finally:
        for folder in folders.values():
            shutil.rmtree(folder, ignore_errors=True)
