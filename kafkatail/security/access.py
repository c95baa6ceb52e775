"""The access rules applied to kafkatail's own routes (never to a host app's).

- Host: with ``allowed_hosts`` set, a request whose Host header is not on it gets 400 before
  any other check, HTTP and WebSocket handshake alike (DNS rebinding).
- HTTP: paths matching ``auth_exempt_paths`` (the page, its static files, health checks) are
  open; the rest is rate-limited per client address (429), ``/debug/*`` and ``/metrics`` need
  an admin token unless ``debug_access = "open"``, and everything else needs an identity (401,
  or 403 when it may not see that). Errors are JSON.
- WebSocket: the connection rate per client address is checked before the upgrade (429); who
  is calling and what it may tail is checked after it, so a browser sees the close code and
  reason (4401, 4403) instead of a bare failed handshake.

Identity: a bearer token when one is presented; else the host app's ``authorize(request)``
(embedding: ``init_app(app, config, authorize=...)``); else anonymous when configured.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from flask import Request, g, jsonify, request

from ..tail.request import RegexCharge
from .limits import Ledger, RateLimiter, TokenBucket
from .origin import host_allowed, parse_hosts
from .tokens import ANONYMOUS, Authenticator, Identity, Unauthenticated, presented_token
from .trie import PatternTrie, split_patterns

log = logging.getLogger(__name__)

Authorize = Callable[[Request], "Identity | None"]
DEBUG_PATHS = PatternTrie(["/debug/**", "/metrics"], sep="/")
TOKEN_PARAMS = ("token", "access_token")
URL_TOKEN = ("token: never in the URL (it lands in access logs); send an Authorization: Bearer "
             "header or the kafkatail.bearer.<token> subprotocol")


class Access:
    """Built once per app from the config (and the host's authorize callable, if any)."""

    def __init__(self, config: Any, authorize: Authorize | None = None, prefix: str = "") -> None:
        self.auth = Authenticator.from_config(config)
        self.authorize = authorize
        self.prefix = prefix.rstrip("/")
        self.exempt = PatternTrie(split_patterns(config.auth_exempt_paths), sep="/")
        self.debug_open = config.debug_access == "open"
        self.connects = RateLimiter(config.connect_rate_per_client,
                                    config.connect_burst_per_client)
        self.requests = RateLimiter(config.api_rate_per_client, config.api_burst_per_client)
        self.regex_charges: Ledger[RegexCharge] = Ledger(RegexCharge)
        self.control_rate = config.control_rate_per_socket
        self.control_burst = config.control_burst_per_socket
        self.hosts = parse_hosts(config.allowed_hosts)

    def identify(self, req: Request) -> Identity | None:
        """Token, else the host's authorize, else anonymous; raises Unauthenticated on a bad token."""
        if self.authorize is not None and presented_token(req.headers) is None:
            identity = self.authorize(req)
            if identity is not None:
                return identity
        return self.auth.identify(req.headers)

    def guard(self) -> Any:
        """``before_request`` for kafkatail's blueprints: None lets the request through."""
        if not host_allowed(request.host, self.hosts):
            # First, before any limit or route: a name this server is not known by (DNS
            # rebinding) gets nothing, not even a WebSocket upgrade.
            log.info("refused %s %s from %s: Host %r not in allowed_hosts", request.method,
                     request.path, request.remote_addr, request.host)
            return _error(400, "Host not allowed: not a name this server answers to")
        path = request.path[len(self.prefix):] or "/"
        if path.startswith("/ws/"):
            wait = self.connects.take(request.remote_addr or "")
            if wait:
                log.info("connection rate exceeded by %s", request.remote_addr)
                return _error(429, "too many connections from this address; retry later",
                              {"Retry-After": str(max(1, round(wait)))})
            return None
        if self.exempt.match(path):
            return None
        wait = self.requests.take(request.remote_addr or "")
        if wait:
            return _error(429, "too many requests from this address; retry later",
                          {"Retry-After": str(max(1, round(wait)))})
        if any(p in request.args for p in TOKEN_PARAMS):
            return _error(400, URL_TOKEN)
        debug = DEBUG_PATHS.match(path)
        if debug and self.debug_open:
            return None
        try:
            identity = self.identify(request)
        except Unauthenticated as exc:
            return _error(401, str(exc), {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if identity is None:
            return _error(401, "authentication required", {"WWW-Authenticate": "Bearer"})
        if debug and not identity.admin:
            return _error(403, "admin only: /debug and /metrics need a token with admin = true")
        g.kafkatail_identity = identity
        return None

    def regex_charge(self, identity: Identity, client: str) -> RegexCharge:
        """The account a caller's regex overruns are charged to: its identity's, shared by
        every socket it opens (anonymous callers: their address's)."""
        return self.regex_charges[identity.name if identity.name != ANONYMOUS
                                  else f"{ANONYMOUS}@{client}"]

    def control_bucket(self) -> TokenBucket:
        """A fresh control-frame budget for one socket."""
        return TokenBucket(self.control_rate, self.control_burst)


def current_identity() -> Identity | None:
    """The identity ``Access.guard`` admitted for this request (None on an exempt path)."""
    return g.get("kafkatail_identity")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Any:
    response = jsonify(error=message)
    response.status_code = status
    response.headers.update(headers or {})
    return response
