"""Who is calling: bearer tokens from config, stored as SHA-256 hex and compared in constant time.

A token arrives as ``Authorization: Bearer <token>`` or, from a browser (which cannot set
headers on a WebSocket), as the subprotocol ``kafkatail.bearer.<token>`` offered next to
``kafkatail``. Never in the URL: query strings land in proxy access logs.

Config (``conf/kafkatail.toml``)::

    anonymous_topics = ""                  # patterns anyone may tail without a token
    [tokens.ops]
    sha256 = "<python -m kafkatail.security.tokens hash>"
    topics = ["orders.*.eu", "logs.**", "!audit.**"]
    admin = true                           # may read /debug/* and /metrics
    unmasked = true                        # sees records before the [[mask]] rules

Hash a token with ``python -m kafkatail.security.tokens hash`` (reads it from stdin) or make a
new one with ``python -m kafkatail.security.tokens new``.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import re
import secrets
import sys
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .trie import PatternError, PatternTrie, split_patterns

SUBPROTOCOL = "kafkatail"
BEARER_SUBPROTOCOL = "kafkatail.bearer."
ANONYMOUS = "anonymous"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TOKEN_KEYS = {"sha256", "topics", "admin", "unmasked"}


class Unauthenticated(Exception):
    """A token was presented and is not one of ours; the message is the reason sent back."""


@dataclass(frozen=True)
class Identity:
    """A caller: its name (for logs), the topics it may tail, whether it may read /debug, and
    whether it sees records unmasked."""

    name: str
    topics: PatternTrie
    admin: bool = False
    unmasked: bool = False

    def may_tail(self, topic: str) -> bool:
        return self.topics.match(topic)


@dataclass(frozen=True)
class _Token:
    sha256: str
    identity: Identity


def hash_token(token: str) -> str:
    """The form a token is stored in: SHA-256 of its UTF-8 bytes, lowercase hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def presented_token(headers: Mapping[str, str]) -> str | None:
    """The bearer token from the Authorization header or the WebSocket subprotocol, if any."""
    auth = headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    for proto in headers.get("Sec-WebSocket-Protocol", "").split(","):
        proto = proto.strip()
        if proto.startswith(BEARER_SUBPROTOCOL) and len(proto) > len(BEARER_SUBPROTOCOL):
            return proto[len(BEARER_SUBPROTOCOL):]
    return None


class Authenticator:
    """Maps a request's headers to an Identity: token, else anonymous (when configured), else None."""

    def __init__(self, tokens: Mapping[str, Mapping[str, Any]], anonymous_topics: str) -> None:
        self._tokens = tuple(
            _Token(spec["sha256"], Identity(name, PatternTrie(spec.get("topics", ())),
                                            bool(spec.get("admin", False)),
                                            bool(spec.get("unmasked", False))))
            for name, spec in sorted(tokens.items()))
        anonymous = PatternTrie(split_patterns(anonymous_topics))
        self.anonymous = Identity(ANONYMOUS, anonymous) if anonymous else None

    @classmethod
    def from_config(cls, config: Any) -> "Authenticator":
        return cls(config.tokens, config.anonymous_topics)

    def identify(self, headers: Mapping[str, str]) -> Identity | None:
        """The caller's Identity; None when it presents nothing and anonymous access is off.

        Raises Unauthenticated for a token that is not configured: a wrong token is an error to
        report, not a quiet fall-back to anonymous.
        """
        token = presented_token(headers)
        if token is None:
            return self.anonymous
        digest = hash_token(token)
        found = None
        for entry in self._tokens:  # every entry, so the time does not depend on which matched
            if hmac.compare_digest(digest, entry.sha256):
                found = entry.identity
        if found is None:
            raise Unauthenticated("invalid token")
        return found


def check_tokens(tokens: Mapping[str, Any]) -> str | None:
    """Config check for the ``[tokens.NAME]`` tables; the problem as text, or None."""
    for name, spec in tokens.items():
        if not isinstance(spec, Mapping):
            return f"{name!r} must be a table with sha256, topics and admin"
        unknown = set(spec) - _TOKEN_KEYS
        if unknown:
            return f"{name!r} has unknown keys {sorted(unknown)}"
        if not isinstance(spec.get("sha256"), str) or not _HEX64.fullmatch(spec["sha256"]):
            return (f"{name!r}: sha256 must be 64 lowercase hex digits "
                    "(python -m kafkatail.security.tokens hash)")
        topics = spec.get("topics", [])
        if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
            return f"{name!r}: topics must be a list of patterns"
        for flag in ("admin", "unmasked"):
            if not isinstance(spec.get(flag, False), bool):
                return f"{name!r}: {flag} must be true or false"
        problem = check_patterns(topics)
        if problem:
            return f"{name!r}: {problem}"
    return None


def check_patterns(patterns: Sequence[str] | str, sep: str = ".") -> str | None:
    """Config check for a pattern list (or a comma/space separated string of them)."""
    if isinstance(patterns, str):
        patterns = split_patterns(patterns)
    try:
        PatternTrie(patterns, sep)
    except PatternError as exc:
        return str(exc)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m kafkatail.security.tokens hash|new``: the sha256 line for the config."""
    parser = argparse.ArgumentParser(prog="python -m kafkatail.security.tokens",
                                     description="Hash a bearer token for [tokens.NAME] sha256.")
    parser.add_argument("command", choices=["hash", "new"],
                        help="hash: read a token from stdin; new: make a random token")
    args = parser.parse_args(argv)
    if args.command == "new":
        token = secrets.token_urlsafe(32)
        print(f"token:  {token}", file=sys.stderr)
    else:
        token = sys.stdin.readline().strip()
        if not token:
            print("no token on stdin", file=sys.stderr)
            return 2
    print(f'sha256 = "{hash_token(token)}"')
    return 0


if __name__ == "__main__":
    sys.exit(main())


def redacted_tokens(tokens: dict) -> dict[str, dict]:
    """The ``[tokens.*]`` tables as shown (``kafkatail config``): hashes as ****."""
    return {name: {k: "****" if k == "sha256" else v for k, v in table.items()}
            for name, table in tokens.items()}
