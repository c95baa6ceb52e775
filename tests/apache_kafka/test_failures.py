"""A cluster that will not let kafkatail in says why, in plain words, in every place a user looks:
``/readyz`` (503 with the reason), a tail (a ``status`` naming it, then a close with it, not
1011) and the log (one line per distinct failure, not one per retry); and once the cluster
accepts, kafkatail is back without a restart."""
from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request

import psutil
import pytest
from kafka.admin import (ACL, ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType,
                         KafkaAdminClient, ResourcePattern, ResourcePatternFilter, ResourceType,
                         ScramMechanism, UserScramCredentialUpsertion)

from apache_kafka.idp import oidc_properties
from helpers import Closed, WsClient
from kafkatail.testing.certs import make_pki
from kafkatail.testing.server import ServerProcess

def readyz(server: ServerProcess) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(server.url("/readyz"), timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def tail_ending(server: ServerProcess, topic: str) -> tuple[list[dict], int | None, str]:
    c = WsClient(server.ws_url(f"/ws/tail/{topic}"), timeout=30)
    try:
        while True:
            c.recv(timeout=30)
    except Closed:
        pass
    finally:
        c.ws.close()
    return c.frames, c.close_code, c.close_reason


def serve(props: dict[str, str], tmp_path, backend: str) -> ServerProcess:
    path = tmp_path / f"client-{secrets.token_hex(4)}.properties"
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    return ServerProcess(props["bootstrap.servers"], kafka_properties=path,
                         consumer_backend=backend, request_timeout_ms=3000)


def check_told(server: ServerProcess, topic: str, needle: str) -> str:
    """The reason, as /readyz, a tail and the log give it: the same, and logged once."""
    code, body = readyz(server)
    assert code == 503 and body["status"] == "broker unavailable", body
    reason = body["reason"]
    assert needle in reason, reason
    frames, close_code, close_reason = tail_ending(server, topic)
    status = [f for f in frames if f["type"] == "status"]
    assert status and status[-1]["status"] == "broker-unavailable", frames
    assert needle in status[-1]["reason"], status
    assert close_code == 1013 and needle in close_reason, (close_code, close_reason)
    assert readyz(server)[0] == 503  # retried: still one line in the log
    lines = [ln for ln in server.output.splitlines() if needle in ln]
    assert len(lines) == 1, "\n".join(lines)
    # Nor do the client libraries repeat it at every retry (3 opens, several attempts each).
    noise = [ln for ln in server.output.splitlines()
             if (" WARNING " in ln or " ERROR " in ln) and needle not in ln]
    assert len(noise) <= 2, "\n".join(noise[:10])
    return reason


def test_a_refused_login_is_told_and_recovers_when_the_user_exists(apache, cluster, tmp_path,
                                                                  backend):
    topic = cluster.create_topic()
    cluster.produce(topic, [(None, "after")])
    user, password = f"carol-{secrets.token_hex(3)}", secrets.token_hex(12)
    props = apache.properties("SASL_SSL", "SCRAM-SHA-512", user="alice")
    props.update({"sasl.username": user, "sasl.password": password})
    server = serve(props, tmp_path, backend)
    try:
        reason = check_told(server, topic, "SASL login refused")
        assert f"as {user}" in reason and "SCRAM-SHA-512" in reason
        assert password not in server.output
        # While it keeps failing (a tail tried now and then), the server idles.
        cpu0, t0 = sum(server.worker.cpu_times()[:2]), time.monotonic()
        for _ in range(3):
            tail_ending(server, topic)
        cpu = (sum(server.worker.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0)
        assert cpu < 0.10, f"{cpu:.0%} of a core while the login keeps failing"
        admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap, client_id="kt-test-users")
        try:
            assert admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
                user, ScramMechanism.SCRAM_SHA_512, password)]) == {user: None}
        finally:
            admin.close()
        deadline = time.monotonic() + 30
        while readyz(server)[0] != 200:
            assert time.monotonic() < deadline, "not ready after the user was made"
            time.sleep(0.5)
        c = WsClient(server.ws_url(f"/ws/tail/{topic}?from=earliest"))
        c.collect(1)
        assert c.records[0]["value"] == "after"
        c.close()
        assert server.output.count("kafka: connected again") == 1
    finally:
        server.stop()


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "OAUTHBEARER"])
def test_a_wrong_secret_is_told(apache, cluster, oidc, tmp_path, mechanism, backend):
    """A wrong password for each mechanism; for OAUTHBEARER, a wrong OIDC client secret (the
    token endpoint refuses it)."""
    topic = cluster.create_topic()
    if mechanism == "OAUTHBEARER":
        props = oidc_properties(apache, oidc, secret="not-" + oidc.secret)
    else:
        props = apache.properties("SASL_SSL", mechanism, user="alice")
        props["sasl.password"] = "not-" + props["sasl.password"]
    server = serve(props, tmp_path, backend)
    try:
        reason = check_told(server, topic, "SASL login")
        assert f"SASL_SSL {mechanism}" in reason
        secret = props.get("sasl.password") or props["sasl.oauthbearer.client.secret"]
        assert secret not in server.output
    finally:
        server.stop()


def pkcs12_truststore(ca_pem, path, password: str):
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12
    ca = x509.load_pem_x509_certificate(ca_pem.read_bytes())
    path.write_bytes(pkcs12.serialize_key_and_certificates(
        None, None, None, [ca], BestAvailableEncryption(password.encode())))
    return path


@pytest.mark.parametrize("trust", ["ssl.ca.location", "ssl.truststore.location"])
def test_an_untrusted_certificate_is_told(apache, cluster, tmp_path, backend, trust):
    topic = cluster.create_topic()
    other = make_pki(tmp_path / "other-ca")
    props = apache.properties("SSL")
    if trust == "ssl.ca.location":
        props["ssl.ca.location"] = str(other.ca)
    else:
        del props["ssl.ca.location"]
        props.update({"ssl.truststore.location": str(pkcs12_truststore(
            other.ca, tmp_path / "other.p12", "pw")), "ssl.truststore.password": "pw"})
    server = serve(props, tmp_path, backend)
    try:
        reason = check_told(server, topic, "certificate is not trusted")
        assert trust in reason
        broker_port = int(props["bootstrap.servers"].rpartition(":")[2])
        assert [c for c in psutil.Process(server.worker.pid).net_connections()
                if c.raddr and c.raddr.port == broker_port
                and c.status == psutil.CONN_CLOSE_WAIT] == []  # kafkafix 4
    finally:
        server.stop()


def test_a_certificate_for_another_name_is_told(apache, cluster, tmp_path, backend):
    topic = cluster.create_topic()
    props = apache.properties("SSL")
    port = props["bootstrap.servers"].rpartition(":")[2]
    # 127.1 is 127.0.0.1 to the resolver, but a name the certificate (localhost, 127.0.0.1)
    # does not hold.
    props["bootstrap.servers"] = f"127.1:{port}"
    server = serve(props, tmp_path, backend)
    try:
        check_told(server, topic, "does not name the address dialled")
    finally:
        server.stop()


def test_a_plaintext_client_on_a_tls_listener_is_told(apache, cluster, tmp_path, backend):
    topic = cluster.create_topic()
    props = {"bootstrap.servers": apache.listeners["SASL_SSL"].address,
             "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
             "sasl.username": "alice", "sasl.password": apache.passwords["alice"]}
    server = serve(props, tmp_path, backend)
    try:
        code, body = readyz(server)
        assert code == 503 and body["reason"].startswith("broker unavailable"), body
        frames, close_code, close_reason = tail_ending(server, topic)
        assert close_code == 1013 and close_reason.startswith("broker unavailable")
    finally:
        server.stop()


def acls(admin: KafkaAdminClient, topic: str, denied: str, add: bool) -> None:
    """Deny alice ``denied`` on the topic. Any ACL on a topic ends "allow everyone if no ACL
    is found" for it, so denying READ alone would take DESCRIBE too: that case allows it."""
    entries = [(ACLOperation[denied], ACLPermissionType.DENY)]
    if denied == "READ":
        entries.append((ACLOperation.DESCRIBE, ACLPermissionType.ALLOW))
    if add:
        result = admin.create_acls([ACL(
            principal="User:alice", host="*", operation=op, permission_type=permission,
            resource_pattern=ResourcePattern(ResourceType.TOPIC, topic))
            for op, permission in entries])
        assert not result["failed"], result
    else:
        admin.delete_acls([ACLFilter(
            principal="User:alice", host="*", operation=op, permission_type=permission,
            resource_pattern=ResourcePatternFilter(ResourceType.TOPIC, topic,
                                                   ACLResourcePatternType.LITERAL))
            for op, permission in entries])


def api_topic(server: ServerProcess, topic: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(server.url(f"/api/topics/{topic}"), timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("operation", ["READ", "DESCRIBE"])
def test_a_topic_the_acls_deny_is_told_and_readable_once_allowed(apache, cluster, tmp_path,
                                                                 backend, operation):
    topic = cluster.create_topic()
    cluster.produce(topic, [(None, "allowed now")])
    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap, client_id="kt-test-acl")
    server = serve(apache.properties("SASL_SSL", "SCRAM-SHA-512", user="alice"), tmp_path,
                   backend)
    try:
        acls(admin, topic, operation, add=True)
        needle = f"the cluster's ACLs do not let SASL_SSL SCRAM-SHA-512 as alice read {topic}"
        for _ in range(2):  # told each time, logged once
            frames, close_code, close_reason = tail_ending(server, topic)
            assert [f.get("reason") for f in frames if f.get("status") == "denied"] == [needle]
            assert (close_code, close_reason) == (4403, needle[:120])
        assert readyz(server)[0] == 200  # the cluster lets kafkatail in: one topic is refused
        code, body = api_topic(server, topic)
        if operation == "DESCRIBE":
            assert (code, body) == (403, {"error": needle})
        else:
            assert code == 200, body  # its offsets may be described, not read
        assert len([ln for ln in server.output.splitlines() if needle in ln]) == 1
        acls(admin, topic, operation, add=False)
        deadline = time.monotonic() + 30
        while True:  # the broker's ACL cache catches up within moments
            c = WsClient(server.ws_url(f"/ws/tail/{topic}?from=earliest"))
            try:
                c.collect(1, timeout=10)
                break
            except (Closed, AssertionError):
                assert time.monotonic() < deadline, c.frames
            finally:
                c.close()
        assert c.records[0]["value"] == "allowed now"
    finally:
        server.stop()
        admin.close()


def test_a_client_certificate_the_broker_does_not_trust_is_told(apache, cluster, tmp_path,
                                                               backend):
    """Mutual TLS with a client certificate from another CA: the broker refuses it."""
    topic = cluster.create_topic()
    other = make_pki(tmp_path / "other-ca")
    props = {**apache.properties("SSL"), "ssl.certificate.location": str(other.client_cert),
             "ssl.key.location": str(other.client_key)}
    server = serve(props, tmp_path, backend)
    try:
        check_told(server, topic, "the broker refused the client certificate")
    finally:
        server.stop()
