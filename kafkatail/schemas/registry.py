"""HTTP to a Confluent-compatible Schema Registry: schemas by id, with their references.

Only the read endpoints a viewer needs (``GET /schemas/ids/{id}``, ``GET /subjects/{s}/versions/
{v}``, ``GET /schemas/ids/{id}/versions``), over one urllib3 pool: keep-alive, TLS with a CA and
a client certificate, and per-request timeouts without a thread of its own. Several URLs are
tried in turn, as Confluent's clients do. Errors are ``RegistryError`` with a reason fit for a
frame: the URL's credentials never appear in it.
"""
from __future__ import annotations

import base64
import json
import ssl
from dataclasses import dataclass
from typing import Any, Sequence
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import urllib3

# Nested schema references followed before giving up (a registry's cycle, or a deep chain).
MAX_REFERENCE_DEPTH = 32
_ACCEPT = "application/vnd.schemaregistry.v1+json, application/json"


class RegistryError(Exception):
    """A lookup that failed. ``unknown`` is True when the registry answered that the schema does
    not exist (worth remembering for a while), False when it could not answer (retry soon)."""

    def __init__(self, reason: str, unknown: bool = False) -> None:
        super().__init__(reason)
        self.unknown = unknown


@dataclass(frozen=True)
class Fetched:
    """A schema as the registry holds it, with every schema it references, dependencies first
    (``references``: the import name of each, as the schema refers to it, to its text)."""

    schema_id: int
    schema_type: str
    schema: str
    references: dict[str, str]


@dataclass(frozen=True)
class Endpoint:
    """One registry URL with its credentials taken out of it (they go in a header)."""

    base: str
    authorization: str | None


def endpoints(urls: str, basic_auth: str = "", bearer_token: str = "") -> list[Endpoint]:
    """The comma-separated ``urls`` as endpoints. Credentials come from a URL's user info, else
    ``basic_auth`` (``user:password``), else ``bearer_token``; ``base`` has none of them."""
    out = []
    for url in (u.strip() for u in urls.split(",")):
        if not url:
            continue
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{_shown(parts)}: must be an http:// or https:// URL")
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        netloc = host + (f":{parts.port}" if parts.port else "")
        base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        auth = None
        if parts.username is not None:
            auth = _basic(f"{unquote(parts.username)}:{unquote(parts.password or '')}")
        elif basic_auth:
            auth = _basic(basic_auth)
        elif bearer_token:
            auth = f"Bearer {bearer_token}"
        out.append(Endpoint(base, auth))
    if not out:
        raise ValueError("no URL given")
    return out


def _basic(user_info: str) -> str:
    return "Basic " + base64.b64encode(user_info.encode("utf-8")).decode("ascii")


def _shown(parts: Any) -> str:
    return urlunsplit((parts.scheme, (parts.hostname or "") + (f":{parts.port}" if parts.port
                                                              else ""), parts.path, "", ""))


class RegistryClient:
    """Blocking lookups against one registry; the caller decides which thread waits."""

    def __init__(self, urls: Sequence[Endpoint], context: ssl.SSLContext | None = None,
                 timeout_s: float = 5.0, max_connections: int = 4) -> None:
        self.urls = list(urls)
        self._http = urllib3.PoolManager(
            num_pools=len(self.urls), maxsize=max_connections, ssl_context=context,
            retries=False, timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s))

    def fetch(self, schema_id: int) -> Fetched:
        """Schema ``schema_id`` with its references resolved, dependencies first."""
        body = self._get(f"/schemas/ids/{schema_id}", "")
        references: dict[str, str] = {}
        self._resolve(body.get("references") or [], references, set(), 0)
        return Fetched(schema_id, body.get("schemaType") or "AVRO", _text(body), references)

    def versions(self, schema_id: int) -> list[dict[str, Any]]:
        """The subjects and versions that hold schema ``schema_id``."""
        found = self._get(f"/schemas/ids/{schema_id}/versions", "")
        if not isinstance(found, list):
            raise RegistryError("registry answered something other than a list of versions")
        return [{"subject": v.get("subject"), "version": v.get("version")} for v in found
                if isinstance(v, dict)]

    def close(self) -> None:
        self._http.clear()

    def _resolve(self, refs: list, out: dict[str, str], seen: set, depth: int) -> None:
        """Add each reference's schema to ``out`` after its own references (post-order)."""
        if depth > MAX_REFERENCE_DEPTH:
            raise RegistryError(f"schema references nest deeper than {MAX_REFERENCE_DEPTH}")
        for ref in refs:
            if not isinstance(ref, dict) or "subject" not in ref or "name" not in ref:
                raise RegistryError("registry answered a malformed schema reference")
            key = (ref["subject"], ref.get("version", "latest"))
            if key in seen:
                continue
            seen.add(key)
            subject = quote(str(ref["subject"]), safe="")
            what = f"reference {ref['name']!r} ({ref['subject']} v{key[1]})"
            body = self._get(f"/subjects/{subject}/versions/{quote(str(key[1]), safe='')}", what)
            self._resolve(body.get("references") or [], out, seen, depth + 1)
            out[str(ref["name"])] = _text(body)

    def _get(self, path: str, what: str) -> Any:
        """GET ``path`` from the first URL that answers; a 404 is final, other failures try the
        next URL. ``what`` names a referenced schema in errors ("": the one asked for)."""
        failure = RegistryError("registry unreachable")
        for url in self.urls:
            try:
                status, data = self._request(url, path)
            except urllib3.exceptions.HTTPError as exc:
                failure = RegistryError(f"registry {url.base} unreachable: {_why(exc)}")
                continue
            if status == 200:
                try:
                    return json.loads(data)
                except ValueError:
                    failure = RegistryError(f"registry {url.base} answered {what or 'it'} "
                                            "with no JSON")
                    continue
            if status == 404:
                raise RegistryError(f"{what or 'id'} not found in the registry", unknown=True)
            failure = RegistryError(_refusal(url.base, status))
            if status in (401, 403):
                raise failure
        raise failure

    def _request(self, url: Endpoint, path: str) -> tuple[int, bytes]:
        """(status, body), the response closed: an error raised later must not keep its socket
        open through a traceback."""
        resp = self._http.request("GET", url.base + path, headers=_headers(url), redirect=False)
        try:
            return resp.status, resp.data
        finally:
            resp.release_conn()
            resp.close()


def _headers(url: Endpoint) -> dict[str, str]:
    headers = {"Accept": _ACCEPT}
    if url.authorization:
        headers["Authorization"] = url.authorization
    return headers


def _text(body: Any) -> str:
    if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
        raise RegistryError("registry answered without a schema")
    return body["schema"]


def _refusal(shown: str, status: int) -> str:
    if status == 401:
        return f"registry {shown} refused the credentials (401)"
    if status == 403:
        return f"registry {shown} denies access to this schema (403)"
    return f"registry {shown} answered HTTP {status}"


def _why(exc: Exception) -> str:
    """The cause of a connection failure in a few words (urllib3 wraps the socket error)."""
    reason = getattr(exc, "reason", None) or exc
    if isinstance(reason, urllib3.exceptions.NewConnectionError):
        return "connection refused" if "refused" in str(reason).lower() else "cannot connect"
    if isinstance(reason, (urllib3.exceptions.ConnectTimeoutError,
                           urllib3.exceptions.ReadTimeoutError)):
        return "timed out"
    if isinstance(reason, urllib3.exceptions.SSLError):
        return "TLS handshake failed"
    return type(reason).__name__
