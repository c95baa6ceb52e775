"""Connection failures named in plain words, and logged once (kafkatail/tail/failures.py): the
classification of what each client library raises or reports, as measured against Apache Kafka
(tests/apache_kafka/test_failures.py shows them end to end)."""
from __future__ import annotations

import logging
import ssl

import pytest
from kafka.errors import KafkaConnectionError, SaslAuthenticationFailedError

from kafkatail.tail.failures import Failure, Failures, TokenError, classify, classify_librdkafka


def verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    exc.verify_code, exc.verify_message = code, message
    return exc


def wrapped(inner: BaseException) -> KafkaConnectionError:
    """As kafka-python raises it: 'Handshake failed: ...' raised while handling the SSL error."""
    try:
        try:
            raise inner
        except Exception as e:
            raise KafkaConnectionError(f"Handshake failed: {e}")
    except KafkaConnectionError as outer:
        return outer


def test_each_failure_is_told_apart():
    assert classify(wrapped(verify_error(62, "Hostname mismatch, certificate is not valid for "
                                             "'127.1'."))).kind == "tls-hostname"
    untrusted = classify(wrapped(verify_error(20, "unable to get local issuer certificate")),
                         trust="ssl.ca.location (/etc/ca.pem)")
    assert untrusted == Failure("tls-untrusted", "TLS: the broker's certificate is not trusted "
                                "(unable to get local issuer certificate); check "
                                "ssl.ca.location (/etc/ca.pem)")
    alert = ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca")
    assert classify(KafkaConnectionError(alert)).kind == "tls-client"
    eof = ssl.SSLError(8, "EOF occurred in violation of protocol")
    assert classify(wrapped(eof)).kind == "tls"
    refused = SaslAuthenticationFailedError(
        "SaslAuthenticationFailedError: Authentication failed: Invalid username or password")
    assert classify(refused, "SASL_SSL PLAIN as alice") == Failure(
        "auth", "SASL login refused (SASL_SSL PLAIN as alice): Authentication failed: Invalid "
                "username or password")
    token = classify(TokenError("OIDC token endpoint https://idp/token answered HTTP 401"), "X")
    assert token == Failure("auth", "SASL login not possible (X): OIDC token endpoint "
                                    "https://idp/token answered HTTP 401")
    assert classify(ConnectionRefusedError(111, "Connection refused")).kind == "unreachable"
    assert classify(KafkaConnectionError("socket disconnected")).reason.startswith(
        "broker unavailable")


class RdKafkaError:
    """A stand-in for confluent_kafka.KafkaError: its name and text."""

    def __init__(self, name: str, text: str) -> None:
        self._name, self._text = name, text

    def name(self) -> str:
        return self._name

    def str(self) -> str:
        return self._text


def test_librdkafka_errors_are_told_apart():
    auth = classify_librdkafka(RdKafkaError(
        "_AUTHENTICATION", "sasl_ssl://127.0.0.1:9093/bootstrap: SASL authentication error: "
        "Authentication failed during authentication due to invalid credentials with SASL "
        "mechanism SCRAM-SHA-512 (after 302ms in state AUTH_REQ)"), "SASL_SSL X", "", "", None)
    assert auth == Failure("auth", "SASL login refused (SASL_SSL X): Authentication failed "
                                   "during authentication due to invalid credentials with SASL "
                                   "mechanism SCRAM-SHA-512")
    client = classify_librdkafka(RdKafkaError(
        "_SSL", "ssl://h:1/bootstrap: SSL handshake failed: ssl/tls alert unknown ca"), "", "",
        "", None)
    assert client.kind == "tls-client"
    other = classify_librdkafka(RdKafkaError("_ALL_BROKERS_DOWN", "1/1 brokers are down"),
                                "", "", "", None)
    assert other.kind == "unreachable"


def test_a_failure_is_logged_once_and_its_end_once(caplog):
    failures = Failures()
    refused = Failure("auth", "SASL login refused (X): bad")
    with caplog.at_level(logging.INFO, logger="kafkatail.tail.failures"):
        for _ in range(5):
            failures.failed(refused)
            # each refused attempt also ends in a dropped connection: it does not replace it
            failures.failed(Failure("unreachable", "broker unavailable: socket disconnected"))
        assert failures.current() == refused
        # The same failure in another library's words (the API's client is kafka-python's,
        # the tails' may be librdkafka's): the reason follows, the log does not repeat it.
        other_words = Failure("auth", "SASL login refused (X): in other words")
        failures.failed(other_words)
        assert failures.current() == other_words
        failures.connected()
        failures.connected()
    assert [r.getMessage() for r in caplog.records] == [
        "kafka: SASL login refused (X): bad",
        "kafka: connected again, after 11 failed attempts in 0 s"]
    assert failures.current() is None


def test_an_outage_alone_is_not_logged_here(caplog):
    """kafka-python's own lines tell of an unreachable broker; this adds none, nor a
    'connected again' for an idle connection the broker closed."""
    failures = Failures()
    with caplog.at_level(logging.INFO, logger="kafkatail.tail.failures"):
        failures.failed(Failure("unreachable", "broker unavailable: connection refused"))
        failures.connected()
    assert caplog.records == []


@pytest.mark.parametrize("n", [1, 1001])
def test_a_denied_topic_is_logged_once_until_read(caplog, n):
    failures = Failures()
    with caplog.at_level(logging.WARNING, logger="kafkatail.tail.failures"):
        for i in range(n):
            failures.denied(f"t{i}", "SASL_SSL PLAIN as alice")
        failures.denied("t0", "SASL_SSL PLAIN as alice")  # evicted from 1,001: news again
        failures.readable("t0")
        failures.denied("t0", "SASL_SSL PLAIN as alice")
    assert len(caplog.records) == n + (1 if n > 1000 else 0) + 1
