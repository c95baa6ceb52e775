"""A small Confluent-compatible Schema Registry for kafkatail's tests (issue #24): tests only, not
a product registry.

Records written by confluent-kafka's reference serializers (Avro, Protobuf, JSON Schema) carry a
schema id that a reader resolves through a registry's REST API. By default the suite serves,
in-process, the part of that API the serializers, their deserializers and kafkatail's decoder
call, with Confluent's JSON shapes, error codes and content type
(``application/vnd.schemaregistry.v1+json``):

- ``GET /schemas/ids/{id}``, ``GET /schemas/ids/{id}/versions``
- ``GET /subjects``, ``GET /subjects/{subject}/versions``,
  ``GET /subjects/{subject}/versions/{version|latest}``
- ``POST /subjects/{subject}/versions`` (register), ``POST /subjects/{subject}`` (look up)
- ``GET /associations/resources/{namespace}/{resource}``: always none

Ids are global, as Confluent's: one id per (schema type, schema, references), whichever subject
registers it; Avro and JSON schemas are compared as parsed JSON, so whitespace and key order make
no new id. Like Confluent's registries before 8.0, responses leave out ``schemaType`` for Avro and
``references`` when there are none (8.0 sends ``"schemaType": "AVRO"``; readers take a missing one
as Avro). Schemas live in memory; every schema is compatible, nothing is deleted, and the
``subject``, ``format``, ``normalize`` and ``deleted`` query parameters are accepted and ignored.

A schema is served exactly as it was registered. A real registry serves Protobuf schemas as
``.proto`` text (and converts to a base64 ``FileDescriptorProto`` for ``format=serialized``, which
the Python ``ProtobufDeserializer`` asks for) even when the Python ``ProtobufSerializer``
registered the base64 form; this one serves what it was given, so a test chooses the form its
reader sees: ``register()`` of ``.proto`` text, or the serializer's base64.

Tests of a reader's failure handling get fault switches: ``down()``/``up()`` (connections refused,
then served again on the same port), ``slow(seconds)``, and request counters (``requests``,
``hits()``). HTTP basic auth, bearer tokens and TLS (optionally with client certificates) stand
for the deployments a reader must reach.

``registry_for_test`` is the suite's ``schema_registry`` fixture: this server, or the real
registry ``KAFKATAIL_TEST_SCHEMA_REGISTRY`` names: a URL, or ``apicurio`` for one Apicurio
Registry the session starts (``kafkatail.testing.apicurio``; ``make test-kafka``). A real
registry at an ``http://`` URL gets each test a :class:`RegistryProxy` in front of it, so the
fault switches ``down()``/``up()``/``slow()`` hold against it too; the counters do not.
"""
from __future__ import annotations

import base64
import hmac
import http.server
import json
import logging
import os
import re
import select
import socket
import socketserver
import ssl
import sys
import threading
import urllib.request
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, NoReturn, Self
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pytest

log = logging.getLogger(__name__)

REGISTRY_ENV = "KAFKATAIL_TEST_SCHEMA_REGISTRY"
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
SCHEMA_TYPES = ("AVRO", "PROTOBUF", "JSON")
THREAD_NAME = "kt-test-registry"
CONNECTION_THREAD_NAME = f"{THREAD_NAME}-conn"
PROXY_THREAD_NAME = "kt-test-registry-proxy"
PROXY_BUFFER = 65536
APICURIO = "apicurio"  # KAFKATAIL_TEST_SCHEMA_REGISTRY's value for the session's Apicurio
IDLE_TIMEOUT_S = 30  # a kept-alive connection idle this long is closed, as real servers do
JOIN_TIMEOUT_S = 5  # the longest down()/stop() waits for one connection's thread

Reference = tuple[str, str, int]
"""A schema reference: (name, subject, version)."""

PathLike = str | os.PathLike


class RegistryError(Exception):
    """A request the registry refuses, with Confluent's HTTP status, error code and message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# --- the schemas ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Schema:
    """One registered schema: its global id and what was registered, as given."""

    id: int
    type: str
    text: str
    references: tuple[Reference, ...]

    def fields(self) -> dict[str, Any]:
        """The schema's part of a response, with Confluent's omissions."""
        out: dict[str, Any] = {}
        if self.type != "AVRO":
            out["schemaType"] = self.type
        if self.references:
            out["references"] = [{"name": name, "subject": subject, "version": version}
                                 for name, subject, version in self.references]
        out["schema"] = self.text
        return out


def _identity(schema_type: str, text: str, references: tuple[Reference, ...]) -> tuple:
    """What makes two registrations the same schema, hence the same id."""
    if schema_type not in SCHEMA_TYPES:
        raise RegistryError(422, 42201, f"Invalid schema type {schema_type}")
    if schema_type != "PROTOBUF":
        try:
            text = json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
        except ValueError as exc:
            raise RegistryError(422, 42201, f"Invalid schema: {exc}") from None
    return schema_type, text, references


def _references(items: Iterable[Mapping[str, Any]]) -> tuple[Reference, ...]:
    """References given as Confluent's JSON objects ``{"name", "subject", "version"}``."""
    return tuple((r["name"], r["subject"], int(r["version"])) for r in items)


class _Store:
    """The registry's schemas and subjects, in memory; safe to use from every handler thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_identity: dict[tuple, _Schema] = {}
        self._by_id: dict[int, _Schema] = {}
        self._subjects: dict[str, list[int]] = {}  # version n's schema id at [n - 1]

    def register(self, subject: str, schema_type: str, text: str,
                 references: tuple[Reference, ...]) -> _Schema:
        """The schema, added under ``subject`` unless it is there already (no new version)."""
        identity = _identity(schema_type, text, references)
        with self._lock:
            self._check_references(references)
            schema = self._by_identity.get(identity)
            if schema is None:
                schema = _Schema(len(self._by_id) + 1, schema_type, text, references)
                self._by_identity[identity] = self._by_id[schema.id] = schema
            versions = self._subjects.setdefault(subject, [])
            if schema.id not in versions:
                versions.append(schema.id)
            return schema

    def lookup(self, subject: str, schema_type: str, text: str,
               references: tuple[Reference, ...]) -> tuple[_Schema, int]:
        """The schema as registered under ``subject``, and its version there."""
        identity = _identity(schema_type, text, references)
        with self._lock:
            versions = self._versions(subject)
            schema = self._by_identity.get(identity)
            if schema is None or schema.id not in versions:
                raise RegistryError(404, 40403, "Schema not found")
            return schema, versions.index(schema.id) + 1

    def schema(self, schema_id: int) -> _Schema:
        with self._lock:
            if schema_id not in self._by_id:
                raise RegistryError(404, 40403, f"Schema {schema_id} not found")
            return self._by_id[schema_id]

    def usages(self, schema_id: int) -> list[tuple[str, int]]:
        """Every (subject, version) the schema is registered as."""
        with self._lock:
            if schema_id not in self._by_id:
                raise RegistryError(404, 40403, "Schema not found")
            return [(subject, n + 1) for subject, ids in sorted(self._subjects.items())
                    for n, i in enumerate(ids) if i == schema_id]

    def subjects(self) -> list[str]:
        with self._lock:
            return sorted(self._subjects)

    def versions(self, subject: str) -> list[int]:
        with self._lock:
            return list(range(1, len(self._versions(subject)) + 1))

    def version(self, subject: str, version: str) -> tuple[_Schema, int]:
        """A subject's schema at ``version``: a number, ``latest`` or ``-1`` (latest too)."""
        wanted = _version_number(version)
        with self._lock:
            ids = self._versions(subject)
            number = len(ids) if wanted == -1 else wanted
            if number > len(ids):
                raise RegistryError(404, 40402, f"Version {number} not found.")
            return self._by_id[ids[number - 1]], number

    def _versions(self, subject: str) -> list[int]:
        """A subject's schema ids by version (with the lock held)."""
        if subject not in self._subjects:
            raise RegistryError(404, 40401, f"Subject '{subject}' not found.")
        return self._subjects[subject]

    def _check_references(self, references: tuple[Reference, ...]) -> None:
        """Every reference names a registered subject version, as Confluent checks (lock held)."""
        for name, subject, version in references:
            if not 1 <= version <= len(self._subjects.get(subject, ())):
                raise RegistryError(422, 42201, f"Invalid schema: reference {name!r} to subject "
                                                f"{subject!r} version {version} not found")


def _version_number(version: str) -> int:
    """A version path segment as Confluent reads it; -1 for the latest."""
    if version.strip().lower() == "latest":
        return -1
    try:
        number = int(version)
    except ValueError:
        number = 0
    if number <= 0 and number != -1:
        raise RegistryError(422, 42202, f"The specified version '{version}' is not a valid version "
                                        "id. Allowed values are between [1, 2^31-1] and the string "
                                        '"latest"')
    return number


# --- the API: each route's handler gets the store, the path parameters and the request body -----


def _schema_request(body: bytes) -> tuple[str, str, tuple[Reference, ...]]:
    """A register or look-up request's (schema type, schema, references)."""
    try:
        request = json.loads(body)
        return (request.get("schemaType") or "AVRO", request["schema"],
                _references(request.get("references") or ()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RegistryError(422, 42201, f"Invalid schema request: {exc!r}") from None


def _subject_version(subject: str, version: int, schema: _Schema) -> dict[str, Any]:
    return {"subject": subject, "version": version, "id": schema.id, **schema.fields()}


def _get_schema(store: _Store, params: dict[str, str], body: bytes) -> Any:
    return store.schema(int(params["id"])).fields()


def _get_schema_versions(store: _Store, params: dict[str, str], body: bytes) -> Any:
    return [{"subject": s, "version": v} for s, v in store.usages(int(params["id"]))]


def _get_subjects(store: _Store, params: dict[str, str], body: bytes) -> Any:
    return store.subjects()


def _get_versions(store: _Store, params: dict[str, str], body: bytes) -> Any:
    return store.versions(params["subject"])


def _get_version(store: _Store, params: dict[str, str], body: bytes) -> Any:
    schema, version = store.version(params["subject"], params["version"])
    return _subject_version(params["subject"], version, schema)


def _get_associations(store: _Store, params: dict[str, str], body: bytes) -> Any:
    """No associations: this registry makes none. (confluent-kafka 2.16's default subject name
    strategy asks for them, then falls back to ``<topic>-key``/``<topic>-value``.)"""
    return []


def _register(store: _Store, params: dict[str, str], body: bytes) -> Any:
    return {"id": store.register(params["subject"], *_schema_request(body)).id}


def _lookup(store: _Store, params: dict[str, str], body: bytes) -> Any:
    schema, version = store.lookup(params["subject"], *_schema_request(body))
    return _subject_version(params["subject"], version, schema)


_Handler = Callable[[_Store, dict[str, str], bytes], Any]

_API: tuple[tuple[str, str, _Handler], ...] = (
    ("GET", "/schemas/ids/{id}", _get_schema),
    ("GET", "/schemas/ids/{id}/versions", _get_schema_versions),
    ("GET", "/subjects", _get_subjects),
    ("GET", "/subjects/{subject}/versions", _get_versions),
    ("GET", "/subjects/{subject}/versions/{version}", _get_version),
    ("POST", "/subjects/{subject}/versions", _register),
    ("POST", "/subjects/{subject}", _lookup),
    ("GET", "/associations/resources/{namespace}/{resource}", _get_associations),
)


def _pattern(template: str) -> re.Pattern[str]:
    """A route template as a regular expression: ``{id}`` digits, another ``{name}`` a segment."""
    return re.compile(re.sub(r"\{(\w+)\}", lambda m: r"(?P<id>\d+)" if m[1] == "id"
                             else rf"(?P<{m[1]}>[^/]+)", template))


_ROUTES = [(method, template, _pattern(template), handler) for method, template, handler in _API]


def _route(method: str, path: str) -> tuple[str, _Handler | None, dict[str, str]]:
    """The route template a request matches (its key in ``requests``), its handler and its
    path parameters; an unknown route is its own template, with no handler."""
    for route_method, template, pattern, handler in _ROUTES:
        found = pattern.fullmatch(path)
        if found and route_method == method:
            return template, handler, {k: unquote(v) for k, v in found.groupdict().items()}
    return unquote(path), None, {}


class _Service:
    """What every connection shares: the store, the credentials, the counters and the delay."""

    def __init__(self, users: Mapping[str, str] | None, tokens: Iterable[str]) -> None:
        self.store = _Store()
        self.users = dict(users or {})
        self.tokens = tuple(tokens)
        self.delay = 0.0
        self._lock = threading.Lock()
        self._routes: Counter[str] = Counter()
        self._paths: Counter[str] = Counter()

    def count(self, method: str, route: str, path: str) -> None:
        with self._lock:
            self._routes[f"{method} {route}"] += 1
            self._paths[f"{method} {unquote(path)}"] += 1

    def counts(self) -> tuple[Counter[str], Counter[str]]:
        """Copies of the requests by route template and by path."""
        with self._lock:
            return Counter(self._routes), Counter(self._paths)

    def respond(self, handler: _Handler | None, params: dict[str, str], body: bytes,
                authorization: str | None) -> tuple[int, Any, dict[str, str]]:
        """A request's status, JSON payload and extra headers."""
        if not self._authorized(authorization or ""):
            challenge = 'Basic realm="kt-test-registry"' if self.users else "Bearer"
            return 401, {"error_code": 401, "message": "Unauthorized"}, {
                "WWW-Authenticate": challenge}
        if handler is None:
            return 404, {"error_code": 404, "message": "HTTP 404 Not Found"}, {}
        try:
            return 200, handler(self.store, params, body), {}
        except RegistryError as exc:
            return exc.status, {"error_code": exc.code, "message": exc.message}, {}

    def _authorized(self, authorization: str) -> bool:
        if not self.users and not self.tokens:
            return True
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer":
            return any(_same(credentials, token) for token in self.tokens)
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(credentials, validate=True).decode().partition(":")
        except ValueError:  # not base64 (binascii.Error), or not UTF-8
            return False
        return user in self.users and _same(password, self.users[user])


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


# --- HTTP ----------------------------------------------------------------------------------------


class _RequestHandler(http.server.BaseHTTPRequestHandler):
    """One connection's requests, HTTP/1.1 kept alive as httpx expects."""

    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_S
    server: _TCPServer

    def do_GET(self) -> None:
        listener = self.server.listener
        service = listener.service
        url = urlsplit(self.path)
        route, handler, params = _route(self.command, url.path)
        service.count(self.command, route, url.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if listener.closing.wait(service.delay):  # down() or stop() during slow(): hang up
            self.close_connection = True
            return
        status, payload, headers = service.respond(handler, params, body,
                                                   self.headers.get("Authorization"))
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_POST = do_PUT = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _TCPServer(socketserver.TCPServer):
    """The listening socket; its listener serves each accepted connection on a thread."""

    allow_reuse_address = True  # up() binds the port again while old connections are in TIME_WAIT
    request_queue_size = 128

    def __init__(self, listener: _Listener, port: int) -> None:
        self.listener = listener
        super().__init__(("127.0.0.1", port), _RequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.listener.spawn(request, client_address)


class _Listener:
    """One listening socket and its threads: the accept loop (named ``name``) and one thread per
    connection (``name-conn``), which runs ``handle``.

    ``close()`` refuses new connections, cuts the open ones (ending any ``slow()`` wait) and joins
    every thread; ``up()`` makes a new listener on the same port."""

    def __init__(self, port: int, name: str) -> None:
        self.closing = threading.Event()
        self._name = name
        self._lock = threading.Lock()
        self._connections: dict[threading.Thread, socket.socket] = {}
        self._server = _TCPServer(self, port)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name=name,
                                        kwargs={"poll_interval": 0.05})
        self._thread.start()

    def handle(self, sock: socket.socket, address: Any) -> None:
        """Serve one connection, on its own thread, until it ends."""
        raise NotImplementedError

    def spawn(self, sock: socket.socket, address: Any) -> None:
        """Serve a new connection on its own thread (the accept loop calls this)."""
        with self._lock:
            if self.closing.is_set():
                sock.close()
                return
            thread = threading.Thread(target=self._serve, args=(sock, address),
                                      name=f"{self._name}-conn")
            self._connections[thread] = sock
            thread.start()

    def _serve(self, sock: socket.socket, address: Any) -> None:
        try:
            self.handle(sock, address)
        except OSError:  # the client left, its TLS handshake failed, or close() cut the line
            pass
        finally:
            with self._lock:  # close() shuts what is in the table: close it under the same lock
                self._connections.pop(threading.current_thread()).close()

    def swap(self, wrap: Callable[[socket.socket], socket.socket]) -> socket.socket:
        """Replace this connection's socket by ``wrap(socket)`` (TLS takes over its descriptor)
        under the lock ``close()`` cuts with, so it cuts the new one."""
        with self._lock:
            me = threading.current_thread()
            self._connections[me] = wrap(self._connections[me])
            return self._connections[me]

    def close(self) -> None:
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        with self._lock:
            threads = list(self._connections)
            for sock in self._connections.values():
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:  # already gone
                    pass
        for thread in threads:
            thread.join(JOIN_TIMEOUT_S)


class _HTTPListener(_Listener):
    """The in-process registry's listener: HTTP (over TLS when ``tls``) on each connection."""

    def __init__(self, service: _Service, port: int, tls: ssl.SSLContext | None) -> None:
        self.service = service
        self._tls = tls
        super().__init__(port, THREAD_NAME)

    def handle(self, sock: socket.socket, address: Any) -> None:
        if self._tls is not None:  # handshake on this thread: a stalled client holds up only itself
            tls = self._tls
            sock = self.swap(lambda raw: tls.wrap_socket(raw, server_side=True,
                                                         do_handshake_on_connect=False))
            sock.do_handshake()
        self._server.finish_request(sock, address)


def _server_context(tls: tuple[PathLike, PathLike | None], client_ca: PathLike | None
                    ) -> ssl.SSLContext:
    certfile, keyfile = tls
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile, keyfile)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
    return context


# --- the servers a test gets ---------------------------------------------------------------------


class _Switched:
    """``start``/``stop`` and the ``up``/``down`` fault switches over a listener of the
    subclass's (``_listen``), on a free port the first time and the same port after."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listener: _Listener | None = None
        self._port = 0

    def _listen(self, port: int) -> _Listener:
        raise NotImplementedError

    def start(self) -> Self:
        self.up()
        return self

    def stop(self) -> None:
        """Close the socket and every connection, and join every thread."""
        self.down()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def up(self) -> None:
        """Listen: on a free port the first time, on the same port after ``down()``."""
        with self._lock:
            if self._listener is None:
                self._listener = self._listen(self._port)
                self._port = self._listener.port

    def down(self) -> None:
        """Refuse connections (the listening socket is closed) and cut the open ones; what the
        registry holds stays for ``up()``. Requests waiting out ``slow()`` are hung up on."""
        with self._lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None

    def _address(self) -> str:
        if not self._port:
            raise RuntimeError(f"the {type(self).__name__} has not been started")
        return f"127.0.0.1:{self._port}"


class RegistryServer(_Switched):
    """The in-process registry on ``127.0.0.1`` (a free port), for one test or one module.

    ``users`` turns on HTTP basic auth (user -> password) and ``tokens`` bearer tokens; with either,
    a request without valid credentials gets 401. ``tls=(certfile, keyfile)`` serves HTTPS
    (``keyfile`` None when the key is in ``certfile``, as in ``certs.make_pki``'s ``server_pem``);
    ``client_ca`` then requires client certificates that CA signed.
    """

    def __init__(self, *, users: Mapping[str, str] | None = None, tokens: Iterable[str] = (),
                 tls: tuple[PathLike, PathLike | None] | None = None,
                 client_ca: PathLike | None = None) -> None:
        if client_ca is not None and tls is None:
            raise ValueError("client_ca needs tls")
        super().__init__()
        self._service = _Service(users, tokens)
        self._tls = _server_context(tls, client_ca) if tls is not None else None

    def _listen(self, port: int) -> _Listener:
        return _HTTPListener(self._service, port, self._tls)

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://{self._address()}"

    def slow(self, seconds: float) -> None:
        """Delay every response by ``seconds`` (0 for none); ``down()`` and ``stop()`` still
        finish at once."""
        self._service.delay = seconds

    @property
    def requests(self) -> Counter[str]:
        """Requests received (answered or not) by method and route template, e.g.
        ``requests["GET /schemas/ids/{id}"]``; a copy."""
        return self._service.counts()[0]

    def hits(self, schema_id: int) -> int:
        """How many times ``GET /schemas/ids/{schema_id}`` was asked (known id or not)."""
        return self._service.counts()[1][f"GET /schemas/ids/{schema_id}"]

    def register(self, subject: str, schema_str: str, schema_type: str = "AVRO",
                 references: Iterable[Mapping[str, Any]] = ()) -> int:
        """Register directly (no HTTP, not counted) and return the schema's id; ``references``
        as Confluent's ``{"name", "subject", "version"}`` objects. Raises RegistryError."""
        return self._service.store.register(subject, schema_type, schema_str,
                                            _references(references)).id


# --- a real registry -----------------------------------------------------------------------------


class _ProxyListener(_Listener):
    """The proxy's listener: each connection is copied to a connection of its own to the
    registry, both ways, until either side closes or it idles for ``IDLE_TIMEOUT_S``."""

    def __init__(self, proxy: RegistryProxy, port: int) -> None:
        self.proxy = proxy
        super().__init__(port, PROXY_THREAD_NAME)

    def handle(self, sock: socket.socket, address: Any) -> None:
        with socket.create_connection(self.proxy.upstream, timeout=IDLE_TIMEOUT_S) as upstream:
            sock.settimeout(IDLE_TIMEOUT_S)
            poller = select.poll()
            peers = {sock.fileno(): (sock, upstream), upstream.fileno(): (upstream, sock)}
            for fd in peers:
                poller.register(fd, select.POLLIN)
            requesting = False  # the client has sent bytes the registry has not answered yet
            while events := poller.poll(IDLE_TIMEOUT_S * 1000):
                for fd, _ in events:
                    source, target = peers[fd]
                    data = source.recv(PROXY_BUFFER)
                    if not data:
                        return
                    if source is upstream:
                        requesting = False
                    elif not requesting:  # a request begins: slow() holds it back
                        requesting = True
                        if self.closing.wait(self.proxy.delay):
                            return
                    target.sendall(data)


class RegistryProxy(_Switched):
    """A TCP proxy on ``127.0.0.1`` (a free port) in front of a real registry at an ``http://``
    URL, for the in-process server's fault switches: ``down()``/``up()`` (connections refused,
    then forwarded again on the same port) and ``slow(seconds)``. Bytes pass unchanged, so does
    the URL's path; ``url`` keeps its credentials.

    Not for ``https://``: clients would check the registry's certificate against 127.0.0.1."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"RegistryProxy forwards to an http:// URL, not {parts.scheme}://")
        super().__init__()
        self._parts = parts
        self.upstream = (parts.hostname, parts.port or 80)
        self.delay = 0.0

    def _listen(self, port: int) -> _Listener:
        return _ProxyListener(self, port)

    @property
    def url(self) -> str:
        userinfo = self._parts.netloc.rpartition("@")[0]
        return urlunsplit(("http", f"{userinfo}@{self._address()}" if userinfo
                           else self._address(), self._parts.path, "", ""))

    def slow(self, seconds: float) -> None:
        """Hold back each request for ``seconds`` (0 for none) before forwarding it; ``down()``
        and ``stop()`` still finish at once."""
        self.delay = seconds


class ExternalRegistry:
    """A real registry behind the same ``url`` and ``register()`` as the in-process server.

    With a :class:`RegistryProxy` in front (``url`` is then the proxy's) ``down()``, ``up()`` and
    ``slow()`` work through it; without one they skip the test, as the request counters always
    do. ``name`` tells a test which registry it is (``Apicurio Registry 3.3.3 on Java 25``). It
    keeps what tests register: they use subjects of their own."""

    def __init__(self, url: str, proxy: RegistryProxy | None = None,
                 name: str = "a real registry") -> None:
        self.url = (proxy.url if proxy is not None else url).rstrip("/")
        self.proxy = proxy
        self.name = name

    def register(self, subject: str, schema_str: str, schema_type: str = "AVRO",
                 references: Iterable[Mapping[str, Any]] = ()) -> int:
        parts = urlsplit(self.url)
        host = parts.netloc.rpartition("@")[2]
        request = urllib.request.Request(
            f"{parts.scheme}://{host}{parts.path}/subjects/{quote(subject, safe='')}/versions",
            method="POST", headers={"Content-Type": CONTENT_TYPE},
            data=json.dumps({"schema": schema_str, "schemaType": schema_type,
                             "references": [dict(r) for r in references]}).encode())
        if parts.username:
            userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            request.add_header("Authorization",
                               "Basic " + base64.b64encode(userinfo.encode()).decode())
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)["id"]

    def down(self) -> None:
        self._switches("down()").down()

    def up(self) -> None:
        self._switches("up()").up()

    def slow(self, seconds: float) -> None:
        self._switches("slow()").slow(seconds)

    def _switches(self, what: str) -> RegistryProxy:
        if self.proxy is None:
            pytest.skip(f"{what} needs the in-process test registry or a proxy, and {REGISTRY_ENV} "
                        "names an https:// registry (a proxy would fail its certificate check)")
        return self.proxy

    @property
    def requests(self) -> Counter[str]:
        _needs_test_server("requests")

    def hits(self, schema_id: int) -> int:
        _needs_test_server("hits()")


def _needs_test_server(what: str) -> NoReturn:
    pytest.skip(f"{what} needs the in-process test registry; {REGISTRY_ENV} points the suite at "
                "a real one")


def session_registry(report: Callable[[str], None] = lambda text: print(text, file=sys.stderr)
                     ) -> Iterator[tuple[str, str] | None]:
    """The session-scoped registry fixture: None for an in-process server per test, else the
    (URL, name) of the real registry ``KAFKATAIL_TEST_SCHEMA_REGISTRY`` names; for ``apicurio``
    an Apicurio Registry started here, stopped when the session ends, and then named to
    ``report`` with the warnings and errors of its log."""
    named = os.environ.get(REGISTRY_ENV)
    if named != APICURIO:
        yield (named, "a real registry") if named else None
        return
    from ..broker import BrokerError
    from .apicurio import Apicurio
    registry = Apicurio()
    try:
        registry.start()
    except BrokerError as exc:  # asked for by name: every test that needs it fails, saying why
        registry.stop()
        pytest.fail(f"{REGISTRY_ENV}={APICURIO}: {exc}", pytrace=False)
    try:
        yield registry.url, registry.name
    finally:
        registry.stop()
        # What the registry itself said went wrong: the tests only see a client's error.
        said = [line[:300] for line in registry.log_tail(100_000).splitlines()
                if any(word in line for word in (" WARN ", " ERROR ", "Exception", "Error:"))]
        report(f"{REGISTRY_ENV}={APICURIO}: schema tests ran against {registry.name} "
               f"({registry.java.path}); its log has {len(said)} warnings and errors"
               + "".join(f"\n  {line}" for line in said[-20:]))


def registry_for_test(real: tuple[str, str] | None) -> Iterator[RegistryServer | ExternalRegistry]:
    """The ``schema_registry`` fixture: a fresh in-process server, stopped after the test; or the
    session's real registry (``session_registry``), behind a :class:`RegistryProxy` of the
    test's own when it is http://, so its fault switches work."""
    if real is None:
        with RegistryServer() as server:
            yield server
        return
    url, name = real
    if urlsplit(url).scheme != "http":
        yield ExternalRegistry(url, name=name)
        return
    with RegistryProxy(url) as proxy:
        yield ExternalRegistry(url, proxy, name)
