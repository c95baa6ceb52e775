"""The broker fixture layer: a real broker, or the cluster KAFKATAIL_TEST_BOOTSTRAP names."""
from __future__ import annotations

import psutil
from kafka import KafkaConsumer, TopicPartition

from kafkatail.testing.kafka import BOOTSTRAP_ENV, start_cluster

pytest_plugins = ["pytester"]


def consume_all(bootstrap: str, topic: str, n: int) -> list[bytes]:
    c = KafkaConsumer(bootstrap_servers=bootstrap, client_id="kt-test-consumer")
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek(tp, 0)
        out: list[bytes] = []
        for _ in range(50):
            for recs in c.poll(timeout_ms=200).values():
                out.extend(r.value for r in recs)
            if len(out) >= n:
                break
        return out
    finally:
        c.close()


def tansu_pids() -> set[int]:
    return {p.pid for p in psutil.process_iter(["name", "cmdline"])
            if "tansu" in " ".join(p.info["cmdline"] or [])}


def test_produce_and_consume_through_the_real_broker(cluster):
    topic = cluster.create_topic()
    cluster.produce(topic, [(b"k", b"v%d" % i) for i in range(5)])
    assert consume_all(cluster.bootstrap, topic, 5) == [b"v%d" % i for i in range(5)]


def test_external_bootstrap_is_honoured(cluster, monkeypatch):
    """Point the fixture layer at an existing cluster: it must start nothing and use that one."""
    monkeypatch.setenv(BOOTSTRAP_ENV, cluster.bootstrap)
    before = tansu_pids()
    gen = start_cluster()
    external = next(gen)
    try:
        assert external.external and external.broker is None
        assert external.bootstrap == cluster.bootstrap
        assert tansu_pids() == before
        topic = external.create_topic()
        external.produce(topic, [(None, b"through-external")])
        assert consume_all(cluster.bootstrap, topic, 1) == [b"through-external"]
    finally:
        gen.close()
    assert tansu_pids() == before


def test_embedded_broker_is_killed_and_reaped(monkeypatch):
    monkeypatch.delenv(BOOTSTRAP_ENV, raising=False)
    gen = start_cluster()
    own = next(gen)
    pid = own.broker.proc.pid
    assert psutil.pid_exists(pid)
    gen.close()
    assert not psutil.pid_exists(pid)


def test_embedded_broker_dies_with_a_killed_owner(tmp_path):
    """A test run killed outright (no finally) must not leave its broker running."""
    import subprocess
    import sys
    script = ("import sys; from kafkatail.broker import EmbeddedBroker; b = EmbeddedBroker().start(); "
              "print(b.proc.pid, flush=True); sys.stdin.read()")
    owner = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    broker = psutil.Process(int(owner.stdout.readline()))
    owner.kill()
    owner.wait()
    owner.stdin.close()
    owner.stdout.close()
    gone, alive = psutil.wait_procs([broker], timeout=10)
    assert not alive


def test_failing_broker_test_shows_the_broker_log(pytester):
    pytester.makeconftest("")
    pytester.makepyfile(test_inner="""
        def test_fails(kafka_cluster):
            assert kafka_cluster.bootstrap and False
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*kafka broker log*"])
