"""OAUTHBEARER tokens for kafka-python: OIDC client credentials, AWS MSK IAM, unsecured JWTs.

One provider serves every client of the process, so a process fetches one token per lifetime,
not one per tail. A token is fetched when a connection authenticates and kept until 80 % of its
lifetime has passed: a connection made later never presents a token about to expire. No thread
of its own: the caller (a client's IO thread) waits for at most the request timeout.

librdkafka does OIDC itself (``clientconf.librdkafka``); MSK IAM reaches it through
``oauth_cb`` below.
"""
from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable

from kafka.net.sasl.oauth import AbstractTokenProvider

from ..clientprops import OAuth
from .failures import TokenError

REFRESH_AT = 0.8  # of a token's lifetime


class CachedToken(AbstractTokenProvider):
    """A token from ``fetch`` (returning the token and its lifetime in seconds), kept until
    ``REFRESH_AT`` of its lifetime; SASL extensions sent with it."""

    def __init__(self, fetch: Callable[[], tuple[str, float]],
                 extensions: dict[str, str] | None = None) -> None:
        super().__init__()
        self._fetch = fetch
        self._extensions = dict(extensions or {})
        self._lock = threading.Lock()
        self._token = ""
        self._refresh_at = 0.0
        self.expires_at = 0.0  # wall clock, as librdkafka's oauth_cb reports it
        self.fetched = 0

    def token(self) -> str:
        with self._lock:
            if time.monotonic() >= self._refresh_at:
                token, lifetime = self._fetch()
                self._token = token
                self._refresh_at = time.monotonic() + max(1.0, lifetime * REFRESH_AT)
                self.expires_at = time.time() + lifetime
                self.fetched += 1
            return self._token

    def extensions(self) -> dict[str, str]:
        return self._extensions


def oidc_fetcher(oauth: OAuth, timeout_s: float) -> Callable[[], tuple[str, float]]:
    """Client-credentials grant (RFC 6749 4.4) against the token endpoint."""
    def fetch() -> tuple[str, float]:
        form = {"grant_type": "client_credentials"}
        if oauth.scope:
            form["scope"] = oauth.scope
        basic = base64.b64encode(
            f"{urllib.parse.quote(oauth.client_id, safe='')}:"
            f"{urllib.parse.quote(oauth.client_secret, safe='')}".encode()).decode()
        request = urllib.request.Request(
            oauth.token_url, data=urllib.parse.urlencode(form).encode(), method="POST",
            headers={"Authorization": "Basic " + basic, "Accept": "application/json",
                     "Content-Type": "application/x-www-form-urlencoded"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                body = json.loads(response.read(1 << 20))
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the response's socket
            raise TokenError(f"OIDC token endpoint {_where(oauth.token_url)} answered HTTP "
                             f"{exc.code}") from None
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc.__class__.__name__
            raise TokenError(f"OIDC token endpoint {_where(oauth.token_url)}: {reason}") from None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise TokenError(f"OIDC token endpoint {_where(oauth.token_url)} sent no "
                             f"access_token")
        lifetime = body.get("expires_in")
        if not isinstance(lifetime, (int, float)) or lifetime <= 0:
            lifetime = _jwt_lifetime(token)
        return token, float(lifetime)
    return fetch


def _where(url: str) -> str:
    """The endpoint without any user info or query (where a secret could sit)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':%d' % parts.port if parts.port else ''}" \
           f"{parts.path}"


def _jwt_lifetime(token: str) -> float:
    try:
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        return float(claims["exp"]) - time.time()
    except (IndexError, KeyError, TypeError, ValueError):
        return 300.0


def unsecured_fetcher(principal: str, lifetime_s: int = 3600) -> Callable[[], tuple[str, float]]:
    """An unsigned JWT (``alg: none``) naming ``principal``: what Kafka's unsecured OAUTHBEARER
    validator (and librdkafka's ``sasl.oauthbearer.config``) accept, for test clusters."""
    def fetch() -> tuple[str, float]:
        def part(obj: dict) -> str:
            return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")
        now = int(time.time())
        return (part({"alg": "none"}) + "."
                + part({"sub": principal, "iat": now, "exp": now + lifetime_s}) + "."), lifetime_s
    return fetch


_MSK_REGION = re.compile(r"\.kafka(?:-serverless)?\.([a-z0-9-]+)\.amazonaws\.com")


def msk_region(bootstrap_servers: str) -> str:
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        return region
    found = _MSK_REGION.search(bootstrap_servers)
    if found:
        return found.group(1)
    raise TokenError("AWS_MSK_IAM: no region (set AWS_REGION, or use the cluster's "
                     "*.kafka.<region>.amazonaws.com bootstrap address)")


def msk_fetcher(region: str, profile: str = "") -> Callable[[], tuple[str, float]]:
    """A signed MSK IAM token from AWS's signer library (credentials from the usual AWS chain,
    or ``awsProfileName`` of sasl.jaas.config)."""
    def fetch() -> tuple[str, float]:
        from aws_msk_iam_sasl_signer import MSKAuthTokenProvider
        try:
            if profile:
                token, expiry_ms = MSKAuthTokenProvider.generate_auth_token_from_profile(
                    region, profile)
            else:
                token, expiry_ms = MSKAuthTokenProvider.generate_auth_token(region)
        except Exception as exc:  # botocore's credential errors have many classes
            raise TokenError(f"AWS_MSK_IAM: no token ({exc.__class__.__name__})") from None
        return token, max(1.0, expiry_ms / 1000 - time.time())
    return fetch
