"""Cross-site WebSocket hijacking defence: the handshake's Origin must be this site or allowed.

Browsers always send Origin on a WebSocket handshake and cookies ride along, so a page on any
other site could open a tail with the user's session. Non-browser clients send no Origin and
are not affected by this check.
"""
from __future__ import annotations

from urllib.parse import urlsplit


def parse_allowed(raw: str) -> frozenset[str]:
    """``"https://a.example, http://b:8080"`` -> normalised origins; ``*`` allows any."""
    return frozenset(_normalise(o) for o in raw.split(",") if o.strip())


def _normalise(origin: str) -> str:
    origin = origin.strip().rstrip("/").lower()
    if origin == "*":
        return origin
    parts = urlsplit(origin)
    return f"{parts.scheme}://{parts.netloc}"


def origin_allowed(origin: str | None, host: str | None, allowed: frozenset[str]) -> bool:
    """True when there is no Origin, it names the Host the request came to, or it is allowed."""
    if not origin:
        return True
    if "*" in allowed:
        return True
    normal = _normalise(origin)
    if normal in allowed:
        return True
    return bool(host) and urlsplit(normal).netloc == host.lower()
