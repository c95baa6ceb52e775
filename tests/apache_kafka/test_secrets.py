"""No password, client secret or token reaches anything kafkatail prints or serves: a real
``kafkatail serve`` (debug logging on) against Apache Kafka over SASL_SSL, run with the right
credentials and with wrong ones, everything it logged, every page and API answer and every tail
frame and close reason collected and searched."""
from __future__ import annotations

import base64
import secrets
import urllib.error
import urllib.request

import pytest

from apache_kafka.idp import oidc_properties
from helpers import Closed, WsClient
from kafkatail.testing.server import ServerProcess

PAGES = ["/", "/healthz", "/readyz", "/api/topics", "/debug/threads", "/debug/runtime",
         "/metrics", "/debug/profile?seconds=0.5&format=folded"]


LOGGING = """version = 1
[formatters.plain]
format = "%(asctime)s %(levelname)s %(name)s: %(message)s"
[handlers.console]
class = "logging.StreamHandler"
stream = "ext://sys.stderr"
formatter = "plain"
[root]
handlers = ["console"]
[loggers.kafka]
level = "DEBUG"
"""


def fetch(server: ServerProcess, path: str) -> str:
    try:
        with urllib.request.urlopen(server.url(path), timeout=30) as r:
            return r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return f"{exc.code} " + exc.read().decode("utf-8", "replace")


def served(server: ServerProcess, topic: str) -> str:
    """Everything a user can get out of the server: pages, a tail's frames and close."""
    out = [fetch(server, p) for p in PAGES + [f"/api/topics/{topic}"]]
    c = WsClient(server.ws_url(f"/ws/tail/{topic}?from=earliest"))
    try:
        while True:
            out.append(repr(c.recv(timeout=8)))
            if c.records:
                break
    except (Closed, OSError) as exc:
        out.append(repr(exc))
    except Exception as exc:  # a timeout: the frames so far are what the client saw
        out.append(repr(exc))
    out.append(f"{c.close_code} {c.close_reason}")
    c.ws.close()
    return "\n".join(out)


def forms(secret: str) -> list[str]:
    """The secret and the encodings a careless log line or frame could carry it in."""
    raw = secret.encode()
    return [secret, base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode(),
            raw.hex()]


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512", "OIDC"])
def test_no_secret_reaches_a_log_page_frame_or_error(apache, cluster, oidc, tmp_path,
                                                      mechanism, monkeypatch):
    topic = cluster.create_topic()
    cluster.produce(topic, [(None, "visible")])
    if mechanism == "OIDC":
        props = oidc_properties(apache, oidc, secret="${env:KT_TEST_SECRET}")
        right, wrong = oidc.secret, "oidc-" + secrets.token_hex(8)
    else:
        props = apache.properties("SASL_SSL", mechanism, user="alice")
        right, wrong = props["sasl.password"], "wrong-" + secrets.token_hex(8)
        props["sasl.password"] = "${env:KT_TEST_SECRET}"
    path = tmp_path / "client.properties"
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    logging_toml = tmp_path / "logging.toml"  # kafka-python's own debug lines too
    logging_toml.write_text(LOGGING)
    seen = []
    for secret in (right, wrong):
        monkeypatch.setenv("KT_TEST_SECRET", secret)
        server = ServerProcess(props["bootstrap.servers"], kafka_properties=path,
                               log_level="DEBUG", debug="true", request_timeout_ms=3000,
                               log_config=logging_toml)
        try:
            seen.append(served(server, topic))
        finally:
            server.stop()
        seen.append(server.output)
    text = "\n".join(seen)
    assert "visible" in seen[0]  # the right secret let the tail in: something was shown
    assert "Sending request" in text  # kafka-python's debug lines were there to search
    leaked = sum(f in text for s in [right, wrong, *oidc.tokens] for f in forms(s))
    assert leaked == 0, f"secrets found {leaked} times in {len(text)} characters"  # not shown
