"""A stand-in OIDC identity provider for the Apache Kafka tests: a token endpoint (client
credentials) issuing the unsecured JWTs the test broker's OAUTHBEARER validator accepts, and the
client properties that reach the broker through it."""
from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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


def oidc_properties(apache, oidc: TokenEndpoint, secret: str | None = None) -> dict[str, str]:
    """SASL_SSL OAUTHBEARER through the test's OIDC endpoint, as alice (``secret``: the client
    secret to give, by default the right one)."""
    props = apache.properties("SASL_SSL", "OAUTHBEARER", user="alice")
    del props["sasl.oauthbearer.config"]
    return {**props, "sasl.oauthbearer.method": "oidc",
            "sasl.oauthbearer.token.endpoint.url": oidc.url,
            "sasl.oauthbearer.client.id": oidc.client_id,
            "sasl.oauthbearer.client.secret": oidc.secret if secret is None else secret}
