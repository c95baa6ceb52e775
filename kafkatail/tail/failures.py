"""Why the cluster does not let kafkatail in, in plain words, logged once per distinct cause.

Every client of the process connects to one cluster with one set of properties, so a failure
is the process's, not a tail's: ``FAILURES`` keeps the current one. The clients feed it:
kafka-python through the ``Connection failed`` records of its connection manager (a logging
filter that also keeps those per-retry lines out of the log), librdkafka through ``error_cb``;
a client that connects clears it. ``/readyz`` answers with ``FAILURES.current()``, and a tail
that cannot open is closed with its reason.

A failure is logged once when it starts (and again if its cause changes), and once more when
the cluster accepts again, with how many attempts failed meanwhile.
"""
from __future__ import annotations

import functools
import logging
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# OpenSSL's verify codes for a certificate that does not name the host (or IP) dialled.
_NAME_MISMATCH = {62, 64}


SPECIFIC = ("tls-untrusted", "tls-hostname", "tls-client", "tls", "auth")
# The alerts a broker sends when it does not accept the client's certificate (or wants one).
_CLIENT_REFUSED = re.compile(r"alert[ _](unknown[ _]ca|bad[ _]certificate|certificate[ _]required|"
                             r"access[ _]denied|certificate[ _]unknown)", re.I)
# A TLS or SASL failure stays the reason over plain disconnects for this long after it was last
# seen: each refused attempt also ends in a dropped connection.
STICKY_S = 30.0
DENIED_KEPT = 1000


class TokenError(Exception):
    """An OAUTHBEARER token could not be had (``oauth.py``); the message names the endpoint or
    signer, never a secret."""


@dataclass(frozen=True)
class Failure:
    """``kind``: tls-untrusted, tls-hostname, tls-client, tls, auth or unreachable."""
    kind: str
    reason: str


def classify(exc: BaseException, security: str = "",
             trust: str = "ssl.ca.location or ssl.truststore.location") -> Failure:
    """The failure an exception from a Kafka client's connect stands for. ``security`` names
    the settings to check (e.g. ``SASL_SSL SCRAM-SHA-512 as alice``), ``trust`` where the
    trusted CAs come from."""
    chain: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(chain) < 8:  # causes, contexts, and exceptions wrapped as arguments
        seen = todo.pop(0)
        chain.append(seen)
        todo += [a for a in (seen.__cause__, seen.__context__, *seen.args)
                 if isinstance(a, BaseException) and a not in chain]
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError):
            if e.verify_code in _NAME_MISMATCH:
                return Failure("tls-hostname", f"TLS: the broker's certificate does not name the "
                                               f"address dialled ({e.verify_message}); check "
                                               f"bootstrap_servers, or "
                                               f"ssl.endpoint.identification.algorithm")
            return Failure("tls-untrusted", f"TLS: the broker's certificate is not trusted "
                                            f"({e.verify_message}); check {trust}")
    for e in chain:
        if isinstance(e, ssl.SSLError) and _CLIENT_REFUSED.search(str(e)):
            return _client_refused(str(getattr(e, "reason", None) or e))
        if isinstance(e, ssl.SSLError):
            return Failure("tls", f"TLS handshake failed ({getattr(e, 'reason', None) or e}); "
                                  f"is it a TLS listener, and does it want a client "
                                  f"certificate?")
    text = " ".join(str(e) for e in chain)
    for e in chain:
        if isinstance(e, TokenError):
            return Failure("auth", f"SASL login not possible ({security}): {e}")
        if "AuthenticationFailed" in type(e).__name__:
            # str() is "[Error 58] SaslAuthenticationFailedError: ..." once or twice over.
            detail = str(e).rsplit("Error: ", 1)[-1].strip() or type(e).__name__
            return Failure("auth", f"SASL login refused ({security}): {detail[:160]}")
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return Failure("tls-untrusted", f"TLS: the broker's certificate is not trusted; check "
                                        f"{trust}")
    if isinstance(exc, ConnectionRefusedError) or "Connection refused" in text:
        return Failure("unreachable", "broker unavailable: connection refused (check "
                                      "bootstrap_servers)")
    return Failure("unreachable", f"broker unavailable: {text[:160]}")


def classify_librdkafka(err: Any, security: str, trust: str, address: str,
                        context: ssl.SSLContext | None) -> Failure:
    """The failure a librdkafka ``KafkaError`` (from ``error_cb``) stands for. librdkafka says
    "certificate verify failed" for an untrusted and a misnamed certificate alike, so that one
    is told apart by a handshake of Python's own (``probe_tls``), once per distinct error."""
    name, text = err.name(), err.str()
    if "OAUTHBEARER" in text and "token" in text.lower() and name != "_AUTHENTICATION":
        return Failure("auth", f"SASL login not possible ({security}): {text[:160]}")
    if name == "_AUTHENTICATION":
        detail = text.split("SASL authentication error:", 1)[-1].split(" (after ", 1)[0]
        return Failure("auth", f"SASL login refused ({security}): {detail.strip()[:160]}")
    if _CLIENT_REFUSED.search(text):
        return _client_refused(_CLIENT_REFUSED.search(text).group(0))
    if name == "_SSL":
        if "verify failed" in text and context is not None:
            found = _probe(address, context, trust, text)
            if found is not None:
                return found
        detail = text.split("SSL handshake failed:", 1)[-1].split(" (after ", 1)[0]
        return Failure("tls", f"TLS handshake failed ({detail.strip()[:120]}); is it a TLS "
                              f"listener, and does it want a client certificate?")
    return Failure("unreachable", f"broker unavailable: {text[:160]}")


@functools.lru_cache(maxsize=16)
def _probe(address: str, context: ssl.SSLContext, trust: str, _error: str) -> Failure | None:
    """A TLS handshake with ``address`` as kafka-python would make it: the precise failure if
    its certificate check fails, else None."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=host):
                return None
    except ssl.SSLCertVerificationError as exc:
        return classify(exc, trust=trust)
    except (OSError, ValueError):
        return None


class UndecodableBatch(Exception):
    """A batch of records the client cannot decompress (a codec library missing, or a codec it
    does not know): where it is, and the codec in plain words."""

    def __init__(self, topic: str, partition: int, offset: int, codec: str) -> None:
        super().__init__(f"records of {topic} partition {partition} from offset {offset} are "
                         f"compressed with {codec}, which this server cannot decode")
        self.topic, self.partition, self.offset, self.codec = topic, partition, offset, codec


def _client_refused(detail: str) -> Failure:
    return Failure("tls-client", f"TLS: the broker refused the client certificate ({detail}); "
                                 f"check ssl.certificate.location or ssl.keystore.location")


class Failures:
    """The process's current connection failure, if any; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: Failure | None = None
        self._since = 0.0
        self._specific_at = 0.0
        self._attempts = 0
        self._denied: dict[str, None] = {}  # topics whose denial was logged, oldest first

    def failed(self, failure: Failure) -> None:
        """Record a failed attempt; log it if it is a TLS or SASL failure not yet logged (the
        client library's own lines tell of an unreachable broker)."""
        now = time.monotonic()
        with self._lock:
            self._attempts += 1
            if failure.kind in SPECIFIC:
                self._specific_at = now
            elif self._current is not None and self._current.kind in SPECIFIC and (
                    now - self._specific_at < STICKY_S):
                return  # the dropped connection that follows a refused login or handshake
            if failure == self._current:
                return
            if self._current is None:
                self._since = now
            # Each library words the same failure its own way (the API's client is always
            # kafka-python's): a new kind of failure is news, a new wording of it is not.
            news = failure.kind in SPECIFIC and (
                self._current is None or self._current.kind != failure.kind)
            self._current = failure
        if news:
            log.warning("kafka: %s", failure.reason)

    def connected(self) -> None:
        with self._lock:
            if self._current is None:
                return
            logged = self._current.kind in SPECIFIC
            attempts, seconds = self._attempts, time.monotonic() - self._since
            self._current, self._attempts = None, 0
        if logged:
            log.info("kafka: connected again, after %d failed attempts in %.0f s", attempts,
                     seconds)

    def current(self) -> Failure | None:
        return self._current

    def specific(self) -> bool:
        """Is a TLS or SASL failure the current one (and recent)?"""
        current = self._current
        return current is not None and current.kind in SPECIFIC and (
            time.monotonic() - self._specific_at < STICKY_S)

    def denied(self, topic: str, security: str) -> str:
        """The reason a topic is refused by the cluster's ACLs, logged once per topic until a
        tail of it reads again."""
        reason = f"the cluster's ACLs do not let {security} read {topic}"
        with self._lock:
            new = topic not in self._denied
            self._denied[topic] = None
            while len(self._denied) > DENIED_KEPT:
                self._denied.pop(next(iter(self._denied)))
        if new:
            log.warning("kafka: %s", reason)
        return reason

    def readable(self, topic: str) -> None:
        """A tail of the topic read from it: a later denial is news again."""
        if topic in self._denied:
            with self._lock:
                self._denied.pop(topic, None)


FAILURES = Failures()


class _KafkaPythonFilter(logging.Filter):
    """On kafka-python's ``kafka.net`` loggers. A connect attempt that fails is logged up to
    five times there (transport, connection, manager, bootstrap), once per retry; its
    exception, read from the record, feeds ``FAILURES``. TLS and SASL failures are then left
    to ``FAILURES`` (one line); the transport's lines, which repeat the connection's, always
    go."""

    describe = ""
    trust = ""

    def filter(self, record: logging.LogRecord) -> bool:
        msg, args = record.msg, record.args if isinstance(record.args, tuple) else ()
        if record.name == "kafka.net.transport":
            return msg not in ("%s: socket disconnected", "%s: Abort (%s)",
                               "%s: Error receiving network data closing socket")
        if record.name in ("kafka.consumer.fetcher", "kafka.cluster"):  # FAILURES.denied says it
            return msg not in ("Not authorized to read from topic %s.",
                               "Topic %s is not authorized for this client")
        exc = next((a for a in args if isinstance(a, BaseException)), None)
        if exc is not None and msg in ("Connection failed: %s", "%s: Connection lost: %s",
                                       "Bootstrap connection to %s failed: %s (backoff %.2f secs)"):
            failure = classify(exc, self.describe, self.trust)
            FAILURES.failed(failure)
            if failure.kind in SPECIFIC or FAILURES.specific():
                return False
            return msg != "Connection failed: %s"  # the connection's line says it too
        if msg.startswith(("Bootstrap %s not ready", "Bootstrap failed", "%s: Request timed out")):
            # the rest of a retry series: a refused login can also end in a bootstrap deadline
            return not FAILURES.specific()
        return True


class _SaslRedactFilter(logging.Filter):
    """kafka-python logs each request and response at DEBUG, and the raw bytes it sends and
    receives: a SASL login's carry a PLAIN password or an OAuth token in clear. SASL requests
    and responses are shown by name only, raw bytes by their length."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(_secretive(a) for a in args):
            record.args = tuple(_shown(a) if _secretive(a) else a for a in args)
        return True


def _secretive(arg: object) -> bool:
    return isinstance(arg, (bytes, bytearray, memoryview)) or type(arg).__name__.startswith(
        "Sasl")


def _shown(arg: object) -> str:
    if isinstance(arg, (bytes, bytearray, memoryview)):
        return f"<{len(arg)} bytes>"
    return f"<{type(arg).__name__} ****>"


class _LibrdkafkaFilter(logging.Filter):
    """On the logger librdkafka writes to (``%s [%s] %s``: facility, client, text): its lines
    of a TLS or SASL failure repeat at every reconnect, and ``error_cb`` has told ``FAILURES``
    the same; they go. Other lines (an unreachable broker) stay."""

    FACILITIES = ("FAIL", "SASL", "SASLAUTH", "SASLMECHS", "AUTH", "OAUTHBEARER")
    FAILURE = re.compile(r"SSL handshake failed|SASL authentication error|mechanism handshake "
                         r"failed|OAUTHBEARER|certificate|alert", re.I)

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.msg == "%s [%s] %s" and isinstance(args, tuple) and len(args) == 3:
            if args[0] == "SSL":  # OpenSSL's error queue, dumped before each FAIL line
                return False
            return not (args[0] in self.FACILITIES and self.FAILURE.search(str(args[2])))
        return True


_FILTER = _KafkaPythonFilter()
_RDKAFKA = _LibrdkafkaFilter()
_REDACT = _SaslRedactFilter()


def install(describe: str, trust: str) -> None:
    """Route kafka-python's connection failures through ``FAILURES`` and keep SASL bytes out
    of its debug lines (idempotent); ``describe`` names the connection settings in the reason
    of a refused login."""
    _FILTER.describe, _FILTER.trust = describe, trust
    for names, flt in (
            (("kafka.net.transport", "kafka.net.connection", "kafka.net.manager",
              "kafka.consumer.fetcher", "kafka.cluster"), _FILTER),
            (("kafka.net.connection", "kafka.protocol.parser"), _REDACT),
            (("kafkatail.tail.backend",), _RDKAFKA)):
        for name in names:
            logger = logging.getLogger(name)
            if flt not in logger.filters:
                logger.addFilter(flt)
