"""The Apache Kafka launcher: every listener and SASL mechanism answers, ACLs bite, a wrong
password is refused, and the broker leaves no process or file behind (kafkatail/testing/
apache_kafka.py)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import (ACL, ACLOperation, ACLPermissionType, KafkaAdminClient, ResourcePattern,
                         ResourceType)
from kafka.errors import TopicAuthorizationFailedError

from kafkatail.testing.apache_kafka import KAFKA_VERSION


def read(cfg: dict, topic: str, n: int, timeout: float = 15.0) -> list[bytes]:
    consumer = KafkaConsumer(client_id="kt-test-launcher", **cfg)
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        got: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=200).values():
                got += [r.value for r in recs]
        return got
    finally:
        consumer.close()


def write(cfg: dict, topic: str, value: bytes) -> None:
    producer = KafkaProducer(client_id="kt-test-launcher", **cfg)
    try:
        producer.send(topic, value=value).get(timeout=15)
    finally:
        producer.close(timeout=5)


def test_version_and_start_are_reported(apache, cluster):
    assert apache.version == KAFKA_VERSION and apache.name == f"Apache Kafka {KAFKA_VERSION}"
    assert 0 < apache.start_seconds < 120
    assert cluster.describe().startswith(f"Apache Kafka {KAFKA_VERSION} at {cluster.bootstrap}")
    rss = psutil.Process(apache.proc.pid).memory_info().rss
    assert rss < 1 << 30, f"broker RSS {rss >> 20} MB"


LISTENERS = [
    ("PLAINTEXT", None, False),
    ("SASL_PLAINTEXT", "PLAIN", False),
    ("SASL_PLAINTEXT", "SCRAM-SHA-256", False),
    ("SASL_PLAINTEXT", "SCRAM-SHA-512", False),
    ("SASL_PLAINTEXT", "OAUTHBEARER", False),
    ("SSL", None, False),
    ("SSL", None, True),
    ("SASL_SSL", "PLAIN", False),
    ("SASL_SSL", "SCRAM-SHA-512", False),
    ("SASL_SSL", "OAUTHBEARER", False),
]


@pytest.mark.parametrize("protocol,mechanism,client_cert", LISTENERS)
def test_every_listener_and_mechanism_carries_records(apache, cluster, protocol, mechanism,
                                                      client_cert):
    topic = cluster.create_topic()
    cfg = apache.client_config(protocol, mechanism, user="alice", client_cert=client_cert)
    value = f"{protocol}/{mechanism}/{client_cert}".encode()
    write(cfg, topic, value)
    assert read(cfg, topic, 1) == [value]


REFUSED = """
import json, sys
from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kafkatail.clientprops import ClientProps
from kafkatail.config import Config
from kafkatail.tail.clientconf import kafka_python
props = json.loads(sys.argv[1])
config = Config(kafka=ClientProps(props), bootstrap_servers=props["bootstrap.servers"])
try:
    KafkaConsumer(client_id="kt-test-refused", request_timeout_ms=5000,
                  bootstrap_timeout_ms=5000, bootstrap_servers=config.bootstrap_servers,
                  **kafka_python(config)).close()
except KafkaError as exc:
    print(f"{type(exc).__name__}: {exc}")
    sys.exit(0)
sys.exit("the broker let the client in")
"""


def refused(props: dict) -> str:
    """The message of the error a consumer's construction raises, tried in a child process:
    kafka-python leaves the socket of a failed TLS handshake open (CLOSE_WAIT, held by the
    error's traceback), which the thread guard would rightly report here."""
    done = subprocess.run([sys.executable, "-c", REFUSED, json.dumps(props)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_a_wrong_password_is_refused(apache, mechanism):
    props = apache.properties("SASL_PLAINTEXT", mechanism, user="alice")
    password = props["sasl.password"]
    props["sasl.password"] = "not-" + password
    assert password not in refused(props)


def test_tls_without_the_test_ca_is_refused(apache):
    props = apache.properties("SSL")
    del props["ssl.ca.location"]  # the system's trust store does not know the test CA
    refused(props)


def test_acls_restrict_a_topic_to_one_principal(apache, cluster):
    topic = cluster.create_topic()
    cluster.produce(topic, [(None, b"for-alice")])
    admin = KafkaAdminClient(client_id="kt-test-acl", **apache.client_config("SASL_PLAINTEXT",
                                                                              "SCRAM-SHA-512"))
    try:
        acl = ACL(principal="User:alice", host="*", operation=ACLOperation.READ,
                  permission_type=ACLPermissionType.ALLOW,
                  resource_pattern=ResourcePattern(ResourceType.TOPIC, topic))
        result = admin.create_acls([acl])
        assert not result["failed"], result
    finally:
        admin.close()
    alice = apache.client_config("SASL_PLAINTEXT", "SCRAM-SHA-256", user="alice")
    bob = apache.client_config("SASL_PLAINTEXT", "SCRAM-SHA-256", user="bob")
    assert read(alice, topic, 1) == [b"for-alice"]
    assert read(bob, topic, 1, timeout=3) == []
    with pytest.raises(TopicAuthorizationFailedError):
        write(bob, topic, b"from-bob")  # no WRITE for anyone but the super users now


OWNER = """
import sys
from kafkatail.testing.apache_kafka import ApacheKafka
b = ApacheKafka().start()
print(b.proc.pid, b.folder, flush=True)
sys.stdin.read()
"""


def test_a_killed_owner_leaves_no_jvm_and_the_next_start_sweeps_its_files(apache):
    """A test run killed outright (no finally) must not leave its broker running; its folder,
    which no finally could remove, goes at the next launcher start."""
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        line = owner.stdout.readline()
        assert line, "the owner could not start a broker"
        pid, folder = line.split()
        jvm = psutil.Process(int(pid))
        assert "kafka.Kafka" in jvm.cmdline()
    finally:
        owner.kill()
        owner.wait()
        owner.stdin.close()
        owner.stdout.close()
    _gone, alive = psutil.wait_procs([jvm], timeout=15)
    assert not alive
    assert Path(folder).is_dir()
    from kafkatail.testing.apache_kafka import sweep_orphans
    sweep_orphans()
    assert not Path(folder).exists()
    assert apache.folder.is_dir(), "a live broker's folder must be left alone"


def test_stop_ends_the_jvm_and_removes_every_file(apache):
    from kafkatail.testing.apache_kafka import ApacheKafka
    broker = ApacheKafka().start()
    pid, folder = broker.proc.pid, broker.folder
    assert (folder / "data").is_dir() and (folder / "tls" / "ca.pem").is_file()
    broker.stop()
    assert not psutil.pid_exists(pid) and not folder.exists()
    broker.stop()  # twice is harmless
