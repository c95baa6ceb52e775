"""kafkatail against a cluster that needs TLS, SASL or OAuth: every client it makes (the tails'
consumers on both backends, the metadata client behind ``/api`` and ``/readyz``) connects with
the ``[kafka]`` client properties, and a tail carries the records."""
from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest

from apache_kafka.idp import oidc_properties
from helpers import WsClient
from kafkatail.clientprops import ClientProps
from kafkatail.testing.apache_kafka import java_binary

def keytool(*args: str) -> None:
    tool = os.path.join(os.path.dirname(os.path.realpath(java_binary())), "keytool")
    subprocess.run([tool, *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def stores(apache, tmp_path_factory) -> dict[str, Path]:
    """The test CA as a PKCS#12 truststore and as a JKS one (both made by keytool, as a Java
    team has them), and the client certificate as a PKCS#12 keystore."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import (BestAvailableEncryption,
                                                              load_pem_private_key, pkcs12)
    folder = tmp_path_factory.mktemp("stores")
    out = {"p12": folder / "truststore.p12", "jks": folder / "truststore.jks",
           "keystore": folder / "client.p12"}
    keytool("-importcert", "-noprompt", "-alias", "kt-test-ca", "-file", str(apache.pki.ca),
            "-keystore", str(out["p12"]), "-storetype", "PKCS12", "-storepass", "trust-pw")
    keytool("-importcert", "-noprompt", "-alias", "kt-test-ca", "-file", str(apache.pki.ca),
            "-keystore", str(out["jks"]), "-storetype", "JKS", "-storepass", "trust-pw")
    cert = x509.load_pem_x509_certificate(apache.pki.client_cert.read_bytes())
    key = load_pem_private_key(apache.pki.client_key.read_bytes(), None)
    out["keystore"].write_bytes(pkcs12.serialize_key_and_certificates(
        b"kt-client", key, cert, None, BestAvailableEncryption(b"key-pw")))
    return out


def case_properties(apache, stores, oidc, case: str) -> dict[str, str]:
    if case in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"):
        return apache.properties("SASL_SSL", case, user="alice")
    if case == "OIDC":
        return {**oidc_properties(apache, oidc), "sasl.oauthbearer.scope": "kafka"}
    if case == "JAAS-SCRAM":
        props = apache.properties("SASL_SSL", "SCRAM-SHA-512", user="alice")
        password = props.pop("sasl.password")
        del props["sasl.username"]
        props["sasl.jaas.config"] = ("org.apache.kafka.common.security.scram.ScramLoginModule "
                                     f'required username="alice" password="{password}";')
        return props
    if case == "mTLS":
        return apache.properties("SSL", client_cert=True)
    if case == "mTLS-PKCS12":
        props = apache.properties("SSL")
        return {**props, "ssl.keystore.location": str(stores["keystore"]),
                "ssl.keystore.password": "key-pw"}
    if case == "TLS-CA":
        return apache.properties("SSL")
    if case == "TLS-PKCS12":
        props = apache.properties("SSL")
        del props["ssl.ca.location"]
        return {**props, "ssl.truststore.location": str(stores["p12"]),
                "ssl.truststore.password": "trust-pw", "ssl.truststore.type": "PKCS12"}
    raise AssertionError(case)


CASES = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "OIDC", "JAAS-SCRAM", "mTLS",
         "mTLS-PKCS12", "TLS-CA", "TLS-PKCS12"]


@pytest.mark.parametrize("case", CASES)
def test_a_secured_cluster_serves_api_readiness_and_tails(apache, cluster, stores, oidc,
                                                           make_server_, case, backend):
    topic = cluster.create_topic(partitions=2)
    cluster.produce(topic, [(f"k{i}", f"{case}-{i}", i % 2) for i in range(6)])
    props = case_properties(apache, stores, oidc, case)
    server = make_server_(kafka=ClientProps(props), bootstrap_servers=props["bootstrap.servers"],
                          consumer_backend=backend)
    with urllib.request.urlopen(server.url("/readyz"), timeout=20) as r:
        assert json.loads(r.read())["status"] == "ready"
    with urllib.request.urlopen(server.url(f"/api/topics/{topic}"), timeout=20) as r:
        assert [p["latest"] for p in json.loads(r.read())["partitions"]] == [3, 3]
    c = WsClient(server.ws_url(f"/ws/tail/{topic}?from=earliest"))
    c.hello()
    c.collect(6)
    assert sorted(r["value"] for r in c.records) == [f"{case}-{i}" for i in range(6)]
    if case == "OIDC" and backend == "kafka-python":
        # One token for the process (metadata client and consumer), asked with its scope.
        assert oidc.issued == 1 and "scope=kafka" in oidc.forms[0]


@pytest.mark.parametrize("case", ["SCRAM-SHA-512", "OIDC", "mTLS-PKCS12"])
def test_the_gevent_worker_connects_over_tls_and_sasl(apache, cluster, stores, oidc, tmp_path,
                                                      case):
    """``kafkatail serve`` under gevent, with the properties from a file: TLS contexts and
    token fetches made after the worker's monkey-patching work there too."""
    from kafkatail.testing.server import ServerProcess
    topic = cluster.create_topic()
    cluster.produce(topic, [(None, f"gevent-{case}")])
    props = case_properties(apache, stores, oidc, case)
    path = tmp_path / "client.properties"
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    server = ServerProcess(props["bootstrap.servers"], worker_class="gevent",
                           kafka_properties=path)
    try:
        with urllib.request.urlopen(server.url("/readyz"), timeout=20) as r:
            assert json.loads(r.read())["status"] == "ready"
        c = WsClient(server.ws_url(f"/ws/tail/{topic}?from=earliest"))
        c.collect(1)
        assert c.records[0]["value"] == f"gevent-{case}"
        c.close()
    finally:
        server.stop()


def test_the_demo_pointed_at_a_secured_cluster(apache, tmp_path):
    """``kafkatail demo --kafka-properties FILE``: no embedded broker; the demo topics, their
    traffic and the server all reach the cluster over SASL_SSL with the file's properties."""
    import re
    import signal
    import sys

    import psutil
    props = apache.properties("SASL_SSL", "SCRAM-SHA-256", user="alice")
    path = tmp_path / "client.properties"
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    proc = subprocess.Popen([sys.executable, "-m", "kafkatail", "demo", "--port", "0",
                             "--kafka-properties", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    try:
        url = None
        for line in proc.stdout:
            found = re.search(r"(http://\S+)", line)
            if found:
                url = found.group(1)
                break
        assert url, "demo printed no URL"
        children = psutil.Process(proc.pid).children(recursive=True)
        assert "tansu" not in " ".join(" ".join(c.cmdline()) for c in children)
        c = WsClient(url.split("/?")[0].replace("http", "ws") + "/ws/tail/demo.orders")
        assert all(isinstance(r["value"], dict) for r in c.collect(3, timeout=30))
        c.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
