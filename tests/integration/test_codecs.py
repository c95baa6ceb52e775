"""Every compression codec real producers write, through both consumer backends: records
written by librdkafka and by kafka-python with gzip, snappy, lz4 and zstd, many to a batch,
reach a tail from earliest whole and in order (wheels only: kafka-python's codec extras)."""
from __future__ import annotations

import pytest
from kafka import KafkaProducer

from .wsclient import TailClient

confluent_kafka = pytest.importorskip("confluent_kafka")

CODECS = ["gzip", "snappy", "lz4", "zstd"]
N = 50


def produce_librdkafka(bootstrap: str, topic: str, codec: str, values: list[str]) -> None:
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "compression.type": codec,
                                         "linger.ms": 200, "client.id": "kt-test-codec"})
    for v in values:
        producer.produce(topic, value=v.encode(), key=b"k")
    assert producer.flush(15) == 0


def produce_kafka_python(bootstrap: str, topic: str, codec: str, values: list[str]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type=codec, linger_ms=200,
                             client_id="kt-test-codec")
    try:
        for v in values:
            producer.send(topic, value=v.encode(), key=b"k")
        producer.flush(15)
    finally:
        producer.close(timeout=5)


PRODUCERS = {"librdkafka": produce_librdkafka, "kafka-python": produce_kafka_python}


@pytest.mark.parametrize("backend", ["kafka-python", "confluent"])
@pytest.mark.parametrize("producer", sorted(PRODUCERS))
@pytest.mark.parametrize("codec", CODECS)
def test_every_codec_reaches_a_tail(cluster, make_server_, codec, producer, backend):
    topic = cluster.create_topic()
    values = [f"{codec}-{i:03d}-" + "abc" * 40 for i in range(N)]
    PRODUCERS[producer](cluster.bootstrap, topic, codec, values)
    server = make_server_(consumer_backend=backend)
    c = TailClient(server.ws_url(f"/ws/tail/{topic}?from=earliest"))
    c.hello()
    c.collect(N)
    c.status("caught-up")
    assert [r["value"] for r in c.records] == values
    assert [r["offset"] for r in c.records] == list(range(N))
    assert not [f for f in c.frames if f["type"] == "error"]
