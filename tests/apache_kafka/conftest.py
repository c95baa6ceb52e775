"""Tests of what only Apache Kafka can show: real SASL/TLS listeners and ACLs, transactions,
compaction, ListOffsets with multi-record batches. ``make test-kafka`` runs them (the session
broker is then Apache Kafka); on any other broker they skip, naming that target."""
from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@pytest.fixture(scope="session")
def apache(cluster):
    """The session's Apache Kafka launcher (listeners, users, test CA)."""
    if cluster.kind != "kafka":
        pytest.skip(f"needs Apache Kafka, the session runs on {cluster.describe()}: "
                    "make test-kafka (KAFKATAIL_TEST_BROKER=kafka)")
    return cluster.broker


class TokenEndpoint:
    """An OIDC token endpoint (client credentials) issuing the unsecured JWTs the test broker's
    OAUTHBEARER validator accepts; it counts the tokens it gave."""

    def __init__(self, client_id: str, secret: str, lifetime_s: int = 3600) -> None:
        self.client_id = client_id
        self.secret = secret
        self.issued = 0
        self.forms: list[str] = []
        self.tokens: list[str] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                expected = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.end_headers()
                    return
                endpoint.forms.append(body)
                endpoint.issued += 1
                now = int(time.time())

                def part(obj: dict) -> str:
                    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")
                token = (part({"alg": "none"}) + "."
                         + part({"sub": client_id, "iat": now, "exp": now + lifetime_s}) + ".")
                endpoint.tokens.append(token)
                data = json.dumps({"access_token": token, "token_type": "Bearer",
                                   "expires_in": lifetime_s}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_port}/oauth2/token"
        self.thread = threading.Thread(target=self.http.serve_forever, name="kt-test-oidc",
                                       kwargs={"poll_interval": 0.1})
        self.thread.start()

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.thread.join(5)


@pytest.fixture
def oidc():
    endpoint = TokenEndpoint("alice", "oidc-" + secrets.token_hex(8))
    yield endpoint
    endpoint.stop()
