"""One configuration for the whole process: defaults < file < KAFKATAIL_* env < CLI flags.

Every key is declared once in ``FIELDS`` with its type, default and check, so the file
loader, the environment loader, the CLI and the documentation in ``conf/kafkatail.toml``
cannot drift apart. A bad value raises ``ConfigError`` naming the key and the reason.
"""
from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .clientprops import REGISTRY_PROPERTIES, ClientProps, parse_assignments, read_properties
from .errors import ConfigError
from .security.origin import check_hosts
from .tail.masking import check_masks
from .security.tokens import check_patterns, check_tokens

__all__ = ["Config", "ConfigError", "FIELDS", "load"]

ENV_PREFIX = "KAFKATAIL_"
# Errors name these keys and the problem, never their values: a raw token pasted as a sha256
# would be printed with every other token's hash, a [kafka] table with its passwords.
_SECRET_FIELDS = frozenset({"tokens", "kafka", "mask_hash_key", "schema_registry_url",
                            "schema_registry_basic_auth", "schema_registry_bearer_token",
                            "schema_registry_key_password"})


@dataclass(frozen=True)
class Field:
    name: str
    type: type
    default: Any
    help: str
    check: Callable[[Any], str | None] | None = None


def _positive(v: Any) -> str | None:
    return None if v > 0 else "must be greater than 0"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else "must be 0 or more"


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v in choices else "must be one of " + ", ".join(choices)
    return check


def _host_port(v: str) -> str | None:
    host, sep, port = v.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        return "must look like HOST:PORT"
    return None


def _registry_urls(v: str) -> str | None:
    from .schemas.registry import endpoints
    if not v.strip():
        return None
    try:
        endpoints(v)
    except ValueError as exc:
        return str(exc)
    return None


def _servers(v: str) -> str | None:
    parts = [p.strip() for p in v.split(",") if p.strip()]
    if not parts:
        return "must name at least one HOST:PORT"
    for p in parts:
        if _host_port(p):
            return f"{p!r} must look like HOST:PORT"
    return None


FIELDS: tuple[Field, ...] = (
    Field("bootstrap_servers", str, "localhost:9092",
          "Kafka bootstrap servers, comma separated HOST:PORT.", _servers),
    Field("consumer_backend", str, "kafka-python",
          "Kafka client library behind each tail. kafka-python: pure Python (the default); "
          "confluent: librdkafka through confluent-kafka (pip install 'kafkatail[confluent]'), "
          "faster, with its own native rdk:* threads; gthread worker only (its poll would block "
          "the gevent hub).", _one_of("kafka-python", "confluent")),
    Field("kafka_properties", str, "",
          "A Kafka client properties file (Java syntax, as in client.properties): how to reach "
          "a cluster that needs TLS, SASL or OAuth. Its properties override the [kafka] table; "
          "-X key=value flags override both."),
    Field("bind", str, "127.0.0.1:8080", "Address the HTTP/WebSocket server listens on.", _host_port),
    Field("workers", int, 1, "Server worker processes.", _positive),
    Field("worker_class", str, "gthread",
          "gthread: a pool thread per open socket; gevent: greenlets, up to worker_connections "
          "sockets per worker. A sixteenth of those slots (at least 1) is kept for plain HTTP "
          "such as /healthz, so tails per worker are capped at the rest (and at max_tails).",
          _one_of("gthread", "gevent")),
    Field("threads", int, 128,
          "gthread worker: threads per worker; each open tail holds one.", _positive),
    Field("worker_connections", int, 1000,
          "Most simultaneous connections per worker (gevent; gthread stops accepting there too).",
          _positive),
    Field("header_timeout_s", float, 5.0,
          "Time a client has, from connecting, to send the request line and headers; then it "
          "gets 408 and is closed (on a kept-alive connection: from the next request's first "
          "byte under gthread, from the previous response and at most keepalive under "
          "gevent). Under gthread a connection takes a pool thread only once its headers are "
          "complete, so slow clients (slowloris) cannot hold the threads kept for HTTP.",
          _positive),
    Field("header_conns_per_client", int, 32,
          "Connections one client address may have that have not finished their request "
          "headers; more get 429 and are closed at once. 0: no limit. Not applied when "
          "proxy_hops is set (every connection then comes from the proxy, which bounds its "
          "own clients' headers).", _non_negative),
    Field("poll_timeout_ms", int, 500,
          "Longest a ConsumerThread waits in poll(); bounds stop latency. Never 0.", _positive),
    Field("max_poll_records", int, 500, "Most records fetched per poll, i.e. per batch.", _positive),
    Field("request_timeout_ms", int, 5000,
          "Kafka request timeout: metadata, offset lookups, bootstrap.", _positive),
    Field("outbox_max_records", int, 5000,
          "Records buffered per socket before the full policy applies.", _positive),
    Field("outbox_max_bytes", int, 4 << 20,
          "Record bytes queued per client (as for outbox_max_records, whichever is reached "
          "first); a historical tail reads ahead at most half of it.", _positive),
    Field("outbox_total_bytes", int, 256 << 20,
          "Record bytes queued for all clients of a worker together; beyond it the full policy "
          "applies to each client that has a queue.", _positive),
    Field("outbox_full_policy", str, "drop-oldest",
          "For viewers of a shared live feed, when their outbox is full. drop-oldest: discard "
          "the oldest buffered records and send a 'dropped' frame; disconnect: close the slow "
          "client with 1008. A historical tail never needs it: its thread waits for the client.",
          _one_of("drop-oldest", "disconnect")),
    Field("send_timeout_s", float, 10.0,
          "A client that does not accept a frame within this time is disconnected.", _positive),
    Field("ping_interval_s", float, 20.0,
          "WebSocket ping interval; a peer silent for two intervals is dropped. "
          "Keep well under nginx proxy_read_timeout (60 s).", _positive),
    Field("max_inbound_bytes", int, 65536,
          "Largest control frame a client may send (close 1009 beyond it).", _positive),
    Field("max_value_bytes", int, 262144,
          "Values larger than this are truncated and marked truncated: true.", _positive),
    Field("allowed_origins", str, "",
          "Comma list of extra browser origins (https://host[:port]) allowed to open tails; "
          "the server's own origin is always allowed, * allows any (close 4403 otherwise). "
          "An origin matches by scheme, host and port: http pages for a plain server, https "
          "behind a TLS proxy (X-Forwarded-Proto, with proxy_hops)."),
    Field("allowed_hosts", str, "",
          "Host names this server answers to, comma or space separated, each with an optional "
          ":port (without one, any port). A request whose Host header is not on the list gets "
          "HTTP 400 before any other check, page, API and WebSocket alike: a page whose own "
          "name was made to resolve here (DNS rebinding) cannot reach the server. Empty: any "
          "Host (set it when the port is reachable from browsers without a proxy that checks "
          "Host).", check_hosts),
    Field("anonymous_topics", str, "",
          "Topic patterns anyone may tail without a token, e.g. \"**\" (all) or \"demo.** "
          "!demo.secret\" (* one segment, ** any, ! denies and always wins). Empty: every tail "
          "and /api call needs a token (close 4401). kafkatail demo sets \"**\".",
          check_patterns),
    Field("auth_exempt_paths", str, "/ /healthz /readyz /static/**",
          "HTTP paths served without a token (the page, its files, health checks); / separated "
          "segments, * and ** as for topics.", lambda v: check_patterns(v, "/")),
    Field("debug_access", str, "admin",
          "admin: /debug/* and /metrics need a token with admin = true (403 otherwise); open: "
          "anyone who can reach the port (then bind it to a private address).",
          _one_of("admin", "open")),
    Field("connect_rate_per_client", float, 20.0,
          "New WebSocket connections per second per client address, sustained (HTTP 429 beyond); "
          "0 turns the limit off.", _non_negative),
    Field("connect_burst_per_client", int, 100,
          "New WebSocket connections a client address may open at once before the rate applies.",
          _positive),
    Field("api_rate_per_client", float, 10.0,
          "HTTP requests per second a client address may make to /api, /debug and /metrics, "
          "sustained (HTTP 429 with Retry-After beyond; the page and health checks are not "
          "counted); 0 turns the limit off.", _non_negative),
    Field("api_burst_per_client", int, 30,
          "HTTP requests a client address may make at once before api_rate_per_client applies.",
          _positive),
    Field("control_rate_per_socket", float, 20.0,
          "Control frames (pause, resume, filter) per second per socket, sustained (close 1008 "
          "beyond); 0 turns the limit off.", _non_negative),
    Field("control_burst_per_socket", int, 50,
          "Control frames a socket may send at once before the rate applies.", _positive),
    Field("tokens", dict, {},
          "Bearer tokens, one table each (tables go at the end of the file). Hash a token with\n"
          "python -m kafkatail.security.tokens new (or: echo TOKEN | ... hash). Example:\n"
          "[tokens.ops]\n"
          "sha256 = \"<64 hex digits>\"\n"
          "topics = [\"orders.*.eu\", \"logs.**\", \"!audit.**\"]\n"
          "admin = true    # may read /debug/* and /metrics\n"
          "unmasked = true # sees records before the [[mask]] rules", check_tokens),
    Field("kafka", ClientProps, ClientProps(),
          "Kafka client properties, by their standard names (kafkatail config --properties\n"
          "lists them). Any value may be ${env:NAME} or ${file:/path}. Example:\n"
          "[kafka]\n"
          "\"security.protocol\" = \"SASL_SSL\"\n"
          "\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n"
          "\"sasl.username\" = \"kafkatail\"\n"
          "\"sasl.password\" = \"${file:/run/secrets/kafka-password}\"\n"
          "\"ssl.ca.location\" = \"/etc/kafkatail/ca.pem\""),
    Field("schema_registry_url", str, "",
          "Schema Registry (Confluent's API: Confluent Platform and Cloud, Apicurio's ccompat, "
          "Karapace), comma separated URLs tried in turn; credentials may go in the URL "
          "(https://user:password@host). Set, keys and values in the Confluent wire format are "
          "shown decoded (Avro, Protobuf, JSON Schema); unset, as {\"schema_id\", \"payload\"}.",
          _registry_urls),
    Field("schema_registry_basic_auth", str, "",
          "USER:PASSWORD for the registry (Confluent Cloud: API key and secret), or "
          "${env:NAME} / ${file:/path}; the URL's own user info wins."),
    Field("schema_registry_bearer_token", str, "",
          "Bearer token for the registry, or ${env:NAME} / ${file:/path} (used when no basic "
          "auth is given)."),
    Field("schema_registry_ca", str, "",
          "PEM file of the CAs that sign the registry's certificate (empty: the system's)."),
    Field("schema_registry_certificate", str, "",
          "PEM client certificate for a registry that asks for one (with schema_registry_key)."),
    Field("schema_registry_key", str, "", "PEM private key of schema_registry_certificate."),
    Field("schema_registry_key_password", str, "",
          "Password of schema_registry_key, or ${env:NAME} / ${file:/path}."),
    Field("schema_registry_wait_ms", int, 250,
          "Longest a feed waits for a schema it has not seen (once per schema); records go out "
          "undecoded with the reason until the registry answers.", _non_negative),
    Field("schema_registry_timeout_ms", int, 5000,
          "Timeout of one registry request (connect and read), on the registry's own threads.",
          _positive),
    Field("schema_cache_size", int, 1000, "Schemas kept decoded, by id.", _positive),
    Field("export_max_records", int, 100_000,
          "Most records one GET /api/topics/<topic>/export returns (its max= may ask fewer).",
          _positive),
    Field("export_max_bytes", int, 64 << 20,
          "Most bytes of NDJSON or CSV one export writes; it ends there (NDJSON: with an end line "
          "saying so).", _positive),
    Field("mask", list, [],
          "Masking rules, [[mask]] tables (at the end of the file): what no viewer sees, replaced "
          "on the server before filters, frames and downloads. Example:\n"
          "[[mask]]\n"
          "topics = [\"payments.**\"]\n"
          "fields = [\"value.card.number\", \"value.*.email\", \"key\", \"headers.authorization\"]\n"
          "pattern = \"\\\\d{13,19}\"   # optional: mask only what it matches\n"
          "action = \"redact\"          # redact (***), hash (keyed, stable) or remove\n"
          "A token with unmasked = true sees records unmasked.", check_masks),
    Field("mask_hash_key", str, "",
          "Key of the masking action hash (HMAC-SHA256), or ${env:NAME} / ${file:/path}. Empty: "
          "a random key per process, so hashed values differ after a restart."),
    Field("proxy_hops", int, 0,
          "Reverse proxies in front (nginx: 1). The client address for per-client limits and logs "
          "is then taken from X-Forwarded-For that many hops back.", _non_negative),
    Field("max_tails", int, 1000, "Open tails allowed in one process (1013 beyond).", _positive),
    Field("max_tails_per_client", int, 100, "Open tails per client address.", _positive),
    Field("max_tails_per_topic", int, 500, "Open tails per topic.", _positive),
    Field("share_live_feeds", bool, True,
          "Tails of the same topic and partitions that read live share one consumer (a feed); "
          "historical tails get their own until they catch up, then join the feed."),
    Field("feed_linger_s", float, 3.0,
          "How long a feed with no viewers keeps consuming, so a page reload does not restart "
          "it.", _non_negative),
    Field("feed_writes_per_s", int, 4000,
          "Socket writes per second a shared feed aims to stay under, across its viewers: it "
          "delivers at most once every viewers / this many seconds (200 viewers: 50 ms), the "
          "polls that come sooner gathered into one frame per viewer; a poll after a quiet spell "
          "goes out at once. A write costs ~20 us, so 4,000/s is ~8 % of a core. 0: every poll.",
          _non_negative),
    Field("feed_max_delay_ms", int, 100,
          "Longest a shared feed holds records to gather them (caps the delay above).",
          _non_negative),
    Field("feed_replay_records", int, 2000,
          "Recent records a feed keeps per partition, so a resumed or catching-up viewer joins "
          "it with no gap; further behind, it reads on its own consumer first. Memory: each "
          "held record's size plus ~0.5 KB, times partitions, for as long as the feed lives.",
          _positive),
    Field("shutdown_grace_s", float, 10.0,
          "On SIGTERM, time allowed for closing sockets and joining threads.", _positive),
    Field("status_interval_s", float, 5.0,
          "How often an idle tail re-checks the broker and the end offsets.", _positive),
    Field("reaper_interval_s", float, 10.0,
          "How often the reaper samples per-thread CPU, joins orphaned tails and logs a line.",
          _positive),
    Field("snapshot_path", str, "",
          "If set, the reaper writes its thread table (names, roles, CPU, stacks) here as JSON "
          "each interval, for tools that cannot attach to the process."),
    Field("log_level", str, "INFO", "Python logging level.",
          _one_of("DEBUG", "INFO", "WARNING", "ERROR")),
    Field("log_queue_size", int, 10000,
          "Log records buffered for the log writer thread; when full, records below ERROR are "
          "dropped and counted (kafkatail_log_records_dropped), a tenth is kept for ERROR.",
          _positive),
    Field("log_config", str, "",
          "Logging config file (TOML in logging.config.dictConfig's schema, see "
          "conf/logging.toml): the handlers and formatters behind the log queue, and levels per "
          "logger. Empty: one line per record on stderr."),
    Field("debug", bool, False,
          "Debug logging format: caller file:line, function and thread in every line (a stack "
          "walk per log call, off in production)."),
)

_BY_NAME = {f.name: f for f in FIELDS}


class Config:
    """Resolved configuration: attribute access, immutable after load."""

    __slots__ = tuple(f.name for f in FIELDS)

    def __init__(self, **values: Any) -> None:
        for f in FIELDS:
            object.__setattr__(self, f.name, f.default)
        for name, raw in values.items():
            object.__setattr__(self, name, _coerce(name, raw, "argument"))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Config is immutable; use replace()")

    def replace(self, **values: Any) -> "Config":
        return Config(**{**self.as_dict(), **values})

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in FIELDS}

    def __repr__(self) -> str:
        return f"Config({self.as_dict()!r})"


def _coerce(name: str, raw: Any, source: str) -> Any:
    field = _BY_NAME.get(name)
    if field is None:
        raise ConfigError(f"{name}: unknown key (from {source})")
    try:
        if field.type is bool and isinstance(raw, str):
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            value = raw.lower() in ("1", "true", "yes", "on")
        elif field.type in (int, float) and isinstance(raw, bool):
            raise ValueError(raw)
        elif field.type is ClientProps:
            value = ClientProps(raw, source=source)
        else:
            value = field.type(raw)
    except (TypeError, ValueError):
        shown = "its value" if name in _SECRET_FIELDS else repr(raw)
        raise ConfigError(
            f"{name}: {shown} is not a valid {field.type.__name__} (from {source})") from None
    if field.check is not None:
        problem = field.check(value)
        if problem:
            shown = "" if name in _SECRET_FIELDS else f"{value!r} "
            raise ConfigError(f"{name}: {shown}{problem} (from {source})")
    return value


def check_backend(config: Config) -> None:
    """Raise ConfigError if the configured consumer backend cannot run here: confluent-kafka
    not installed, or the gevent worker (librdkafka's poll blocks inside C, so it would stall
    the gevent hub and every socket on the worker). Imports nothing: the gunicorn master calls
    it before forking gevent workers."""
    if config.consumer_backend != "confluent":
        return
    import importlib.util
    try:
        found = importlib.util.find_spec("confluent_kafka") is not None
    except ValueError:  # in sys.modules as None (blocked)
        found = False
    if not found:
        raise ConfigError("consumer_backend: 'confluent' needs confluent-kafka; install it with "
                          "pip install 'kafkatail[confluent]'")
    if config.worker_class == "gevent":
        raise ConfigError("consumer_backend: 'confluent' does not run under worker_class = "
                          "'gevent' (librdkafka's poll blocks the gevent hub); use gthread or "
                          "the kafka-python backend")


def read_toml(path: str, where: str) -> dict[str, Any]:
    """A TOML file's contents, or a one-line ConfigError that starts with ``where``."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{where}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load(path: str | None = None, env: Mapping[str, str] | None = None,
         overrides: Mapping[str, Any] | None = None, properties: Sequence[str] = ()) -> Config:
    """Build the Config from an optional TOML file, the environment and CLI overrides.

    Kafka client properties come from the file's ``[kafka]`` table, then the
    ``kafka_properties`` file, then ``properties`` (``-X key=value``); they are resolved and
    checked here, so a mistake stops the process before it serves."""
    values: dict[str, Any] = {}
    if path:
        for name, raw in read_toml(path, f"config file {path}").items():
            values[name] = _coerce(name, raw, path)
    env = os.environ if env is None else env
    for key, raw in env.items():
        if key.startswith(ENV_PREFIX):
            name = key[len(ENV_PREFIX):].lower()
            if name in _BY_NAME:
                values[name] = _coerce(name, raw, key)
    for name, raw in (overrides or {}).items():
        if raw is not None:
            values[name] = _coerce(name, raw, "--" + name.replace("_", "-"))
    props = values.get("kafka", ClientProps())
    if values.get("kafka_properties"):
        where = values["kafka_properties"]
        props = props.merged(ClientProps(read_properties(where), source=where))
    if properties:
        props = props.merged(ClientProps(parse_assignments(properties), source="-X"))
    values["kafka"] = props
    for prop, name in REGISTRY_PROPERTIES.items():
        if prop in props and not values.get(name):
            values[name] = _coerce(name, props[prop], props.origin(prop))
    if "bootstrap.servers" in props:
        servers = _coerce("bootstrap_servers", props["bootstrap.servers"],
                          props.origin("bootstrap.servers"))
        if values.get("bootstrap_servers", servers) != servers:
            raise ConfigError(f"bootstrap_servers and kafka property bootstrap.servers "
                              f"disagree (from {props.origin('bootstrap.servers')}); set one")
        values["bootstrap_servers"] = servers
    config = Config(**values)
    props.resolve(env)
    if config.schema_registry_url:
        from .schemas.connect import registry_client
        registry_client(config, env).close()
    return config


# Kinds of value written as TOML tables, after every plain key.
_TABLES = (dict, ClientProps, list)


def documented_toml() -> str:
    """The text of ``conf/kafkatail.toml``: every key, its default and what it does."""
    lines = ["# kafkatail configuration. Every key is optional; the value shown is the default.",
             "# Precedence: this file < environment (KAFKATAIL_<KEY>, e.g. KAFKATAIL_BIND) < flags.",
             "# Use it with: kafkatail serve --config conf/kafkatail.toml", ""]
    for f in FIELDS:
        if f.type not in _TABLES:
            lines += [f"# {f.help}", f"{f.name} = {_toml_value(f.default)}", ""]
    for f in FIELDS:
        if f.type in _TABLES:  # a TOML table: shown as a commented example after every plain key
            lines += ["# " + line for line in f.help.splitlines()] + [""]
    return "\n".join(lines)


def effective_toml(config: Config) -> str:
    """The resolved configuration as TOML (``kafkatail config``): secret values as ****."""
    from .security.tokens import redacted_tokens
    lines = []
    for f in FIELDS:
        if f.type not in _TABLES:
            lines.append(f"{f.name} = {_toml_value(_redacted(f.name, getattr(config, f.name)))}")
    if config.kafka:
        lines += ["", "[kafka]"] + [f"{_toml_value(k)} = {_toml_value(v)}"
                                    for k, v in config.kafka.redacted().items()]
    for name, table in redacted_tokens(config.tokens).items():
        lines += ["", f"[tokens.{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    for table in config.mask:
        lines += ["", "[[mask]]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines)


def _redacted(name: str, value: Any) -> Any:
    """A secret setting as kafkatail config shows it: URLs without their credentials."""
    if name not in _SECRET_FIELDS or not value:
        return value
    if name == "schema_registry_url":
        from .schemas.registry import endpoints
        return ", ".join(e.base for e in endpoints(value))
    return "****"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)
