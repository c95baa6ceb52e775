"""Who a request is for and where it comes from: the Host allow-list and the Origin check.

Cross-site WebSocket hijacking: browsers always send Origin on a WebSocket handshake and
cookies ride along, so a page on any other site could open a tail with the user's session.
The Origin must therefore be this site (same scheme, host and port as the request) or one of
``allowed_origins``. Non-browser clients send no Origin and are not affected by this check.

DNS rebinding: a page on ``evil.example`` whose name is made to resolve to the server sends
``Host: evil.example`` and ``Origin: http://evil.example``, which agree, so the Origin check
alone passes it. ``allowed_hosts`` closes that: a request whose Host is not a name this server
is known by is refused before anything else.
"""
from __future__ import annotations

from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
# A WebSocket URL's scheme and the HTTP scheme of the page that opens it name the same site.
SCHEMES = {"http": "http", "ws": "http", "https": "https", "wss": "https"}

Site = tuple[str, str, int]  # (scheme, host, port), as in RFC 6454


def parse_allowed(raw: str) -> frozenset[Site | str]:
    """``"https://a.example, http://b:8080"`` -> normalised origins; ``*`` allows any.
    Entries that are not an origin (``null``, no scheme) are dropped: they would match nothing."""
    out: set[Site | str] = set()
    for item in raw.split(","):
        item = item.strip()
        if item == "*":
            out.add("*")
        elif item:
            site = _site(item)
            if site is not None:
                out.add(site)
    return frozenset(out)


def _split_host(netloc: str) -> tuple[str, int | None] | None:
    """``"Name:8080"`` -> ("name", 8080); ``"[::1]"`` -> ("::1", None); None when malformed."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        name, sep, rest = netloc[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    else:
        name, _, port = netloc.partition(":")
        if ":" in port:
            return None
    name = name.rstrip(".")  # "tail.example." names the same host
    if not name or "@" in name or "/" in name:
        return None
    if not port:
        return name, None
    if not port.isdigit() or not 0 < int(port) <= 65535:
        return None
    return name, int(port)


def _site(origin: str) -> Site | None:
    """An Origin header (or URL) -> (scheme, host, port) with the default port filled in;
    None for ``null``, an unknown scheme or a malformed host."""
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return None
    scheme = SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        return None
    hp = _split_host(parts.netloc)
    if hp is None:
        return None
    name, port = hp
    return scheme, name, port if port is not None else DEFAULT_PORTS[scheme]


def origin_allowed(origin: str | None, host: str | None, allowed: frozenset[Site | str],
                   scheme: str) -> bool:
    """True when there is no Origin, it is this site (the request's ``scheme``, as Flask's
    ``request.scheme`` gives it, and its ``Host``: name and port, default ports normalised), or
    it is on the allow-list."""
    if not origin:
        return True
    if "*" in allowed:
        return True
    site = _site(origin)
    if site is None:
        return False
    if site in allowed:
        return True
    if not host:
        return False
    here = _site(f"{scheme}://{host}")
    return here is not None and here == site


def parse_hosts(raw: str) -> frozenset[tuple[str, int | None]]:
    """``allowed_hosts``: names with an optional port, comma or space separated. A name without
    a port allows it on any port. Raises ValueError naming a malformed entry."""
    out = set()
    for item in raw.replace(",", " ").split():
        hp = _split_host(item)
        if hp is None:
            raise ValueError(f"{item!r} is not a host name with an optional :port")
        out.add(hp)
    return frozenset(out)


def check_hosts(raw: str) -> str | None:
    """A config check for ``allowed_hosts``: None, or what is wrong."""
    try:
        parse_hosts(raw)
    except ValueError as exc:
        return str(exc)
    return None


def host_allowed(host: str | None, hosts: frozenset[tuple[str, int | None]]) -> bool:
    """True when no allow-list is set, or the Host header names an allowed host (and port)."""
    if not hosts:
        return True
    hp = _split_host(host or "")
    if hp is None:
        return False
    name, port = hp
    return (name, None) in hosts or (port is not None and (name, port) in hosts)
