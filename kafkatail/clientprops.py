"""Kafka client properties: how kafkatail connects to a cluster that needs TLS, SASL or OAuth.

Keys are the standard client property names, as a team already writes them in a Java
``client.properties`` or as kcat's ``-X``, so an existing file works as it is. Sources, later
over earlier: the config file's ``[kafka]`` table, the file named by ``kafka_properties`` (Java
properties syntax), then ``-X key=value`` flags. Any value may hold ``${env:NAME}`` or
``${file:/path}`` (the file's text; ``${file:/path:key}`` reads one key of a properties file).

``ClientProps`` keeps the raw values, never the substituted secrets, and shows secret ones as
``****``; ``resolve()`` substitutes, checks the whole set against what kafkatail can honour
and returns a ``Security`` that the backends translate (``tail/clientconf.py``). Every mistake
is a ``ConfigError`` naming the property and where it came from, and none quotes a secret.
TLS files are opened here, as ``ssl_context`` does for every client, so that a file that
cannot make a context is a config error, not a failed connection.
"""
from __future__ import annotations

import difflib
import importlib.util
import os
import re
import ssl
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

from .errors import ConfigError

REDACTED = "****"

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "AWS_MSK_IAM")

# name -> what it is (the help of ``kafkatail config --properties``).
PROPERTIES: dict[str, str] = {
    "bootstrap.servers": "the cluster's bootstrap servers (the same as bootstrap_servers)",
    "client.id": "client id the brokers see (logs, quotas); default kt-<role>-<n> per client",
    "isolation.level": "read_committed (default: aborted transactions never shown) or "
                       "read_uncommitted",
    "security.protocol": "PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL",
    "sasl.mechanism": "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM",
    "sasl.username": "PLAIN and SCRAM user (or an API key)",
    "sasl.password": "PLAIN and SCRAM password (or an API secret)",
    "sasl.jaas.config": "the Java form: PlainLoginModule / ScramLoginModule (username, "
                        "password), OAuthBearerLoginModule (clientId, clientSecret, scope, "
                        "extension_*), IAMLoginModule (awsProfileName)",
    "sasl.oauthbearer.method": "oidc: fetch tokens with client credentials; default: an "
                               "unsecured token from sasl.oauthbearer.config (test clusters)",
    "sasl.oauthbearer.token.endpoint.url": "OIDC token endpoint",
    "sasl.oauthbearer.client.id": "OIDC client id",
    "sasl.oauthbearer.client.secret": "OIDC client secret",
    "sasl.oauthbearer.scope": "OIDC scope (optional)",
    "sasl.oauthbearer.extensions": "SASL extensions, key=value,key=value (Confluent Cloud: "
                                   "logicalCluster=lkc-...,identityPoolId=pool-...)",
    "sasl.oauthbearer.config": "unsecured tokens: principal=NAME (only clusters that accept "
                               "unsecured JWTs)",
    "sasl.login.callback.handler.class": "accepted for Kafka's own OIDC handler, which "
                                         "kafkatail's OIDC client replaces",
    "sasl.client.callback.handler.class": "accepted for AWS's IAMClientCallbackHandler (AWS's "
                                          "MSK IAM file), which kafkatail's signer replaces",
    "ssl.ca.location": "PEM file (or directory) of the CAs that signed the brokers' "
                       "certificates; default: the system's",
    "ssl.certificate.location": "client certificate, PEM (mutual TLS)",
    "ssl.key.location": "client private key, PEM",
    "ssl.key.password": "password of an encrypted client key (PEM or keystore)",
    "ssl.endpoint.identification.algorithm": "https (default): the broker's certificate "
                                             "must name the host; none: not checked",
    "ssl.truststore.location": "CA store: PKCS#12 or PEM (JKS: convert it, see the error)",
    "ssl.truststore.password": "the truststore's password",
    "ssl.truststore.type": "PKCS12 or PEM",
    "ssl.keystore.location": "client certificate and key, PKCS#12 (mutual TLS)",
    "ssl.keystore.password": "the keystore's password",
    "ssl.keystore.type": "PKCS12",
}
ALIASES = {"sasl.mechanisms": "sasl.mechanism"}  # librdkafka's (and Confluent Cloud's) spelling
SECRETS = frozenset({"sasl.password", "sasl.jaas.config", "sasl.oauthbearer.client.secret",
                     "ssl.key.password", "ssl.truststore.password", "ssl.keystore.password",
                     "basic.auth.user.info", "bearer.auth.token"})
# A Confluent client.properties (Confluent Cloud's included) names its Schema Registry too:
# these stand for kafkatail's own settings when those are not set.
REGISTRY_PROPERTIES = {"schema.registry.url": "schema_registry_url",
                       "basic.auth.user.info": "schema_registry_basic_auth",
                       "bearer.auth.token": "schema_registry_bearer_token"}
# Producer and group settings that files made for other clients carry (Confluent Cloud's
# client.properties has acks and session.timeout.ms): a group-less reader has no use for them.
IGNORED = frozenset({
    "acks", "linger.ms", "batch.size", "compression.type", "retries", "retry.backoff.ms",
    "enable.idempotence", "max.in.flight.requests.per.connection", "delivery.timeout.ms",
    "group.id", "group.instance.id", "session.timeout.ms", "heartbeat.interval.ms",
    "enable.auto.commit", "auto.commit.interval.ms", "auto.offset.reset",
    "key.serializer", "value.serializer", "key.deserializer", "value.deserializer",
    "client.dns.lookup", "basic.auth.credentials.source", "bearer.auth.credentials.source",
})
_KNOWN_HANDLERS = (
    "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginCallbackHandler",
    "org.apache.kafka.common.security.oauthbearer.secured.OAuthBearerLoginCallbackHandler",
    "software.amazon.msk.auth.iam.IAMClientCallbackHandler",
)
_REFERENCE = re.compile(r"\$\{(env|file):([^}]*)\}")


@dataclass(frozen=True)
class OAuth:
    """OAUTHBEARER settings: OIDC client credentials, or an unsecured principal."""
    method: str  # "oidc" or "unsecured"
    token_url: str = ""
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    scope: str = ""
    extensions: tuple[tuple[str, str], ...] = ()
    principal: str = ""


@dataclass(frozen=True)
class Store:
    """A PKCS#12 (or PEM) file named by ssl.truststore.* / ssl.keystore.*."""
    location: str
    kind: str  # "PKCS12" or "PEM"
    password: str = field(default="", repr=False)


@dataclass(frozen=True)
class Security:
    """The resolved settings every Kafka client kafkatail makes is built from."""
    protocol: str = "PLAINTEXT"
    mechanism: str = ""
    username: str = ""
    password: str = field(default="", repr=False)
    oauth: OAuth | None = None
    aws_profile: str = ""
    ca_location: str = ""
    cert_location: str = ""
    key_location: str = ""
    key_password: str = field(default="", repr=False)
    check_hostname: bool = True
    truststore: Store | None = None
    keystore: Store | None = None
    isolation_level: str = "read_committed"
    client_id: str = ""
    bootstrap_servers: str = ""
    ignored: tuple[str, ...] = ()

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def trust(self) -> str:
        """Where the CAs that vouch for the brokers come from, by property name."""
        if self.truststore:
            return f"ssl.truststore.location ({self.truststore.location})"
        if self.ca_location:
            return f"ssl.ca.location ({self.ca_location})"
        return "the system's CAs (set ssl.ca.location)"

    def describe(self) -> str:
        """One line for the log and ``hello``: how kafkatail connects, no secrets."""
        parts = [self.protocol]
        if self.sasl:
            parts.append(self.mechanism + (f" as {self.username}" if self.username else ""))
        if self.tls and (self.cert_location or self.keystore):
            parts.append("client certificate")
        return " ".join(parts)


class ClientProps(Mapping[str, str]):
    """Kafka client properties as written (secret references unresolved), with where each came
    from. Immutable and hashable, so the clients built from it can be cached."""

    __slots__ = ("_values", "_origins")

    def __init__(self, values: Mapping[str, Any] | None = None, source: str = "argument",
                 origins: Mapping[str, str] | None = None) -> None:
        if values is not None and not isinstance(values, Mapping):
            raise TypeError("a table of properties")
        if isinstance(values, ClientProps):
            origins = values._origins
        clean: dict[str, str] = {}
        where: dict[str, str] = {}
        for raw_key, raw in (values or {}).items():
            key = ALIASES.get(str(raw_key).strip(), str(raw_key).strip())
            origin = (origins or {}).get(raw_key, source)
            if key not in PROPERTIES and key not in IGNORED and key not in REGISTRY_PROPERTIES:
                raise ConfigError(_unknown(key, origin))
            if isinstance(raw, bool):
                raw = "true" if raw else "false"
            if not isinstance(raw, (str, int, float)):
                raise ConfigError(f"kafka property {key}: must be a string (from {origin})")
            clean[key] = str(raw)
            where[key] = origin
        self._values = clean
        self._origins = where

    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __hash__(self) -> int:
        return hash(frozenset(self._values.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClientProps) and self._values == other._values

    def origin(self, key: str) -> str:
        return self._origins.get(key, "argument")

    def merged(self, other: "ClientProps") -> "ClientProps":
        """These properties with ``other``'s on top."""
        return ClientProps({**self._values, **other._values},
                           origins={**self._origins, **other._origins})

    def redacted(self) -> dict[str, str]:
        """The values as shown anywhere (effective config, debug pages): secrets as ****."""
        return {k: REDACTED if k in SECRETS else v for k, v in sorted(self._values.items())}

    def __repr__(self) -> str:
        return f"ClientProps({self.redacted()!r})"

    def resolve(self, env: Mapping[str, str] | None = None) -> Security:
        """Substitute ``${env:}``/``${file:}``, check the set and return the Security."""
        return _Resolver(self, os.environ if env is None else env).security()


def _unknown(key: str, origin: str) -> str:
    close = difflib.get_close_matches(key, list(PROPERTIES), n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"kafka property {key}: unknown (from {origin}){hint}"


# -- sources -----------------------------------------------------------------------------------
def read_properties(path: str) -> dict[str, str]:
    """A Java properties file (``key=value``, ``key: value`` or ``key value``; ``#``/``!``
    comments; ``\\`` continues a line; ``\\uXXXX`` escapes), as a dict. ConfigError on a
    file that cannot be read or decoded, naming the file and line."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError(f"kafka_properties {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"kafka_properties {path}: not UTF-8 text "
                          f"(byte {exc.start})") from None
    return parse_properties(text, path)


def parse_properties(text: str, where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        number = i + 1
        line = lines[i].lstrip(" \t\f")
        i += 1
        if not line or line[0] in "#!":
            continue
        while _continues(line) and i < len(lines):
            line = line[:-1] + lines[i].lstrip(" \t\f")
            i += 1
        if _continues(line):
            line = line[:-1]
        key, value = _split(line)
        try:
            out[_unescape(key)] = _unescape(value)
        except ValueError as exc:
            raise ConfigError(f"kafka_properties {where} line {number}: {exc}") from None
    return out


def _continues(line: str) -> bool:
    return (len(line) - len(line.rstrip("\\"))) % 2 == 1


def _split(line: str) -> tuple[str, str]:
    j = 0
    while j < len(line):
        c = line[j]
        if c == "\\":
            j += 2
            continue
        if c in "=: \t\f":
            break
        j += 1
    key, rest = line[:j], line[j:].lstrip(" \t\f")
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(" \t\f")
    return key, rest


_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _unescape(s: str) -> str:
    if "\\" not in s:
        return s
    out = []
    j = 0
    while j < len(s):
        c = s[j]
        if c != "\\" or j + 1 >= len(s):
            out.append(c)
            j += 1
            continue
        nxt = s[j + 1]
        if nxt == "u":
            digits = s[j + 2:j + 6]
            if len(digits) != 4 or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise ValueError(f"malformed \\u escape {s[j:j + 6]!r}")
            out.append(chr(int(digits, 16)))
            j += 6
            continue
        out.append(_ESCAPES.get(nxt, nxt))
        j += 2
    return "".join(out)


def parse_assignments(items: Iterable[str], source: str = "-X") -> dict[str, str]:
    """``-X key=value`` flags as a dict (ConfigError on one without ``=``)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{source} {item.split('=')[0]!r}: expected key=value")
        out[key.strip()] = value
    return out


# -- resolution --------------------------------------------------------------------------------
_JAAS = re.compile(r"""\s*([\w.$]+)\s+(required|requisite|sufficient|optional)\s*(.*?);?\s*$""",
                   re.S)
_JAAS_OPTION = re.compile(r"""([\w.]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|(\S+?))"""
                          r"""(?=\s|;|$)""", re.S)
_MODULES = {
    "org.apache.kafka.common.security.plain.PlainLoginModule": ("PLAIN",),
    "org.apache.kafka.common.security.scram.ScramLoginModule": ("SCRAM-SHA-256", "SCRAM-SHA-512"),
    "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule": ("OAUTHBEARER",),
    "software.amazon.msk.auth.iam.IAMLoginModule": ("AWS_MSK_IAM",),
}


def parse_jaas(text: str) -> tuple[str, dict[str, str]]:
    """``LoginModule required key="value" ...;`` as (module, options); ValueError otherwise.
    Messages name the module and option keys, never a value."""
    m = _JAAS.match(text)
    if not m:
        raise ValueError("expected '<LoginModule> required key=\"value\" ...;'")
    module, _flag, rest = m.groups()
    options: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        if rest[pos].isspace():
            pos += 1
            continue
        om = _JAAS_OPTION.match(rest, pos)
        if not om:
            raise ValueError(f"{module}: cannot read the options after "
                             f"{list(options)[-1] if options else 'the flag'}")
        value = next(v for v in om.groups()[1:] if v is not None)
        options[om.group(1)] = re.sub(r"\\(.)", r"\1", value)
        pos = om.end()
    return module, options


def dereference(kind: str, name: str, env: Mapping[str, str]) -> str:
    """The value ``${env:NAME}`` or ``${file:/path}`` (or ``${file:/path.properties:key}``)
    stands for; ValueError saying what is missing, never the value."""
    if kind == "env":
        if name not in env:
            raise ValueError(f"${{env:{name}}} is not set")
        return env[name]
    path = name
    if not os.path.exists(path) and ":" in name:
        path, _, wanted = name.rpartition(":")
        if os.path.isfile(path):
            values = read_properties(path)
            if wanted not in values:
                raise ValueError(f"${{file:{name}}}: {path} has no key {wanted}")
            return values[wanted]
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ValueError(f"${{file:{name}}}: {reason}") from None


def expand(raw: str, env: Mapping[str, str], what: str) -> str:
    """``raw`` with each ``${env:...}`` and ``${file:...}`` replaced; ConfigError naming
    ``what`` and the missing reference."""
    def one(m: re.Match) -> str:
        try:
            return dereference(m.group(1), m.group(2), env)
        except ValueError as exc:
            raise ConfigError(f"{what}: {exc}") from None
    return _REFERENCE.sub(one, raw)


class _Resolver:
    def __init__(self, props: ClientProps, env: Mapping[str, str]) -> None:
        self.props = props
        self.env = env

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"kafka property {key}: {problem} (from {self.props.origin(key)})")

    def get(self, key: str, default: str = "") -> str:
        raw = self.props.get(key)
        if raw is None:
            return default
        value = _REFERENCE.sub(lambda m: self.reference(key, m.group(1), m.group(2)), raw)
        return value if key in SECRETS else value.strip()

    def reference(self, key: str, kind: str, name: str) -> str:
        try:
            return dereference(kind, name, self.env)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(key, default).upper().replace("-", "_") if key == "security.protocol" \
            else self.get(key, default)
        if key == "sasl.mechanism":
            value = value.upper()
        if value not in choices:
            raise self.error(key, f"{value!r} must be one of " + ", ".join(choices))
        return value

    def readable(self, key: str, directory_ok: bool = False) -> str:
        path = self.get(key)
        if not path:
            return ""
        if directory_ok and os.path.isdir(path):
            return path
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise self.error(key, f"{path}: {exc.strerror}") from None
        return path

    def security(self) -> Security:
        get = self.get
        protocol = self.choice("security.protocol", PROTOCOLS, "PLAINTEXT")
        isolation = self.choice("isolation.level", ("read_committed", "read_uncommitted"),
                                "read_committed")
        algorithm = get("ssl.endpoint.identification.algorithm", "https").lower()
        if algorithm not in ("https", "none", ""):
            raise self.error("ssl.endpoint.identification.algorithm",
                             f"{algorithm!r} must be https or none")
        for key in ("sasl.login.callback.handler.class", "sasl.client.callback.handler.class"):
            handler = get(key)
            if handler and handler not in _KNOWN_HANDLERS:
                raise self.error(key, f"{handler} cannot be loaded by a Python client; OIDC "
                                      f"and AWS_MSK_IAM need no handler")
        sec = dict(protocol=protocol, isolation_level=isolation, client_id=get("client.id"),
                   bootstrap_servers=get("bootstrap.servers"),
                   check_hostname=algorithm == "https",
                   ignored=tuple(sorted(k for k in self.props if k in IGNORED)))
        sec.update(self.tls_settings(protocol))
        sec.update(self.sasl_settings(protocol))
        return Security(**sec)

    def tls_settings(self, protocol: str) -> dict[str, Any]:
        tls_keys = [k for k in self.props if k.startswith("ssl.")
                    and k != "ssl.endpoint.identification.algorithm"]
        if protocol not in ("SSL", "SASL_SSL"):
            if tls_keys:
                raise self.error(tls_keys[0], f"needs security.protocol SSL or SASL_SSL "
                                              f"(it is {protocol})")
            return {}
        out: dict[str, Any] = dict(
            ca_location=self.readable("ssl.ca.location", directory_ok=True),
            cert_location=self.readable("ssl.certificate.location"),
            key_location=self.readable("ssl.key.location"),
            key_password=self.get("ssl.key.password"),
            truststore=self.store("truststore"),
            keystore=self.store("keystore"))
        if out["cert_location"] and not out["key_location"]:
            # A PEM file may hold both; the key is looked for in the certificate's file then.
            out["key_location"] = out["cert_location"]
        if out["key_location"] and not out["cert_location"]:
            raise self.error("ssl.key.location", "needs ssl.certificate.location")
        if out["ca_location"] and out["truststore"]:
            raise self.error("ssl.truststore.location", "give ssl.ca.location or a truststore, "
                                                        "not both")
        if out["cert_location"] and out["keystore"]:
            raise self.error("ssl.keystore.location", "give ssl.certificate.location or a "
                                                      "keystore, not both")
        if out["keystore"] and out["keystore"].kind != "PKCS12":
            raise self.error("ssl.keystore.type", "must be PKCS12")
        problem = check_tls_files(**out)
        if problem:
            raise self.error(*problem)
        return out

    def store(self, which: str) -> Store | None:
        key = f"ssl.{which}.location"
        path = self.readable(key)
        password = self.get(f"ssl.{which}.password")
        kind = self.get(f"ssl.{which}.type").upper()
        if not path:
            for k in (f"ssl.{which}.password", f"ssl.{which}.type"):
                if k in self.props:
                    raise self.error(k, f"needs {key}")
            return None
        with open(path, "rb") as fh:
            magic = fh.read(4)
        if magic in (b"\xfe\xed\xfe\xed", b"\xce\xce\xce\xce") or kind in ("JKS", "JCEKS"):
            target = os.path.splitext(path)[0] + ".p12"
            raise self.error(key, f"{path} is a Java KeyStore; convert it to PKCS#12 with: "
                                  f"keytool -importkeystore -srckeystore {path} "
                                  f"-destkeystore {target} -deststoretype PKCS12")
        if not kind:
            kind = "PEM" if magic.startswith(b"-----") else "PKCS12"
        if kind not in ("PKCS12", "PEM"):
            raise self.error(f"ssl.{which}.type", f"{kind!r} must be PKCS12 or PEM")
        return Store(path, kind, password)

    def sasl_settings(self, protocol: str) -> dict[str, Any]:
        sasl_keys = [k for k in self.props if k.startswith("sasl.")]
        if protocol not in ("SASL_PLAINTEXT", "SASL_SSL"):
            if sasl_keys:
                raise self.error(sasl_keys[0], f"needs security.protocol SASL_SSL or "
                                               f"SASL_PLAINTEXT (it is {protocol})")
            return {}
        if "sasl.mechanism" not in self.props:
            raise ConfigError(f"kafka property sasl.mechanism: needed with security.protocol "
                              f"{protocol} (from {self.props.origin('security.protocol')})")
        mechanism = self.choice("sasl.mechanism", MECHANISMS, "")
        module, jaas = "", {}
        if "sasl.jaas.config" in self.props:
            try:
                module, jaas = parse_jaas(self.get("sasl.jaas.config"))
            except ValueError as exc:
                raise self.error("sasl.jaas.config", str(exc)) from None
            if module not in _MODULES:
                raise self.error("sasl.jaas.config", f"login module {module} is not supported")
            if mechanism not in _MODULES[module]:
                raise self.error("sasl.jaas.config", f"{module.rsplit('.', 1)[-1]} does not "
                                                     f"do sasl.mechanism {mechanism}")
        out: dict[str, Any] = {"mechanism": mechanism}
        if mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            out["username"] = self.get("sasl.username") or jaas.get("username", "")
            out["password"] = self.get("sasl.password") or jaas.get("password", "")
            for key, name in (("sasl.username", "username"), ("sasl.password", "password")):
                if not out[name]:
                    raise ConfigError(f"kafka property {key}: needed for {mechanism} (or "
                                      f"{name}=\"...\" in sasl.jaas.config)")
        elif mechanism == "OAUTHBEARER":
            out["oauth"] = self.oauth(jaas)
        else:
            if protocol != "SASL_SSL":
                raise self.error("sasl.mechanism", "AWS_MSK_IAM needs security.protocol "
                                                   "SASL_SSL")
            if importlib.util.find_spec("aws_msk_iam_sasl_signer") is None:
                raise self.error("sasl.mechanism", "AWS_MSK_IAM needs the msk extra: pip "
                                                   "install 'kafkatail[msk]'")
            out["aws_profile"] = jaas.get("awsProfileName", "")
        return out

    def oauth(self, jaas: dict[str, str]) -> OAuth:
        get = self.get
        method = get("sasl.oauthbearer.method").lower() or (
            "oidc" if get("sasl.oauthbearer.token.endpoint.url") else "default")
        extensions = {k[len("extension_"):]: v for k, v in jaas.items()
                      if k.startswith("extension_")}
        for item in filter(None, get("sasl.oauthbearer.extensions").split(",")):
            name, sep, value = item.partition("=")
            if not sep or not name.strip():
                raise self.error("sasl.oauthbearer.extensions", "expected key=value,key=value")
            extensions[name.strip()] = value.strip()
        if method == "oidc":
            url = get("sasl.oauthbearer.token.endpoint.url")
            client_id = get("sasl.oauthbearer.client.id") or jaas.get("clientId", "")
            secret = get("sasl.oauthbearer.client.secret") or jaas.get("clientSecret", "")
            if not url.startswith(("https://", "http://")):
                raise ConfigError("kafka property sasl.oauthbearer.token.endpoint.url: needed "
                                  "for OIDC, an http(s) URL")
            if not client_id or not secret:
                raise ConfigError("kafka property sasl.oauthbearer.client.id and .secret: "
                                  "needed for OIDC (or clientId/clientSecret in "
                                  "sasl.jaas.config)")
            return OAuth("oidc", token_url=url, client_id=client_id, client_secret=secret,
                         scope=get("sasl.oauthbearer.scope") or jaas.get("scope", ""),
                         extensions=tuple(sorted(extensions.items())))
        if method != "default":
            raise self.error("sasl.oauthbearer.method", f"{method!r} must be oidc or default")
        principal = jaas.get("unsecuredLoginStringClaim_sub", "")
        for item in get("sasl.oauthbearer.config").split():
            name, _, value = item.partition("=")
            if name == "principal":
                principal = value
        if not principal:
            raise ConfigError("kafka property sasl.oauthbearer.method: OAUTHBEARER needs "
                              "oidc (token endpoint, client id and secret), or an unsecured "
                              "principal (sasl.oauthbearer.config = principal=NAME)")
        return OAuth("unsecured", principal=principal,
                     extensions=tuple(sorted(extensions.items())))


# -- TLS: the files a Security names, made into a client context (the config checks them here)

class TlsProblem(Exception):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key
        self.problem = problem


def _pkcs12(store: Store, key: str) -> Any:
    from cryptography.hazmat.primitives.serialization import pkcs12
    with open(store.location, "rb") as fh:
        data = fh.read()
    try:
        return pkcs12.load_pkcs12(data, store.password.encode() or None)
    except ValueError:
        raise TlsProblem(key, f"{store.location} does not open: wrong password, or not "
                              f"PKCS#12") from None


def _pem(certificates: list[Any]) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding
    return "".join(c.public_bytes(Encoding.PEM).decode() for c in certificates)


def truststore_pem(store: Store) -> str:
    """The CA certificates of a PKCS#12 truststore, as PEM text."""
    p12 = _pkcs12(store, "ssl.truststore.location")
    certs = [c.certificate for c in p12.additional_certs]
    if p12.cert is not None:
        certs.insert(0, p12.cert.certificate)
    if not certs:
        raise TlsProblem("ssl.truststore.location", f"{store.location} holds no certificate")
    return _pem(certs)


def keystore_pem(store: Store, key_password: str) -> tuple[str, str]:
    """A PKCS#12 keystore's certificate chain and private key, as PEM texts."""
    from cryptography.hazmat.primitives.serialization import (
        Encoding, NoEncryption, PrivateFormat)
    if key_password and key_password != store.password:
        raise TlsProblem("ssl.key.password", "a PKCS#12 keystore's key password must be its "
                                             "store password")
    p12 = _pkcs12(store, "ssl.keystore.location")
    if p12.key is None or p12.cert is None:
        raise TlsProblem("ssl.keystore.location", f"{store.location} holds no private key "
                                                   f"with its certificate")
    chain = _pem([p12.cert.certificate] + [c.certificate for c in p12.additional_certs])
    key = p12.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    return chain, key


def ssl_context(sec: Security) -> ssl.SSLContext:
    """The TLS client context: the given CAs (else the system's), hostname checked unless
    ``ssl.endpoint.identification.algorithm`` is none, and the client certificate if any."""
    if sec.ca_location or sec.truststore:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            if sec.truststore and sec.truststore.kind == "PKCS12":
                ctx.load_verify_locations(cadata=truststore_pem(sec.truststore))
            else:
                where = sec.truststore.location if sec.truststore else sec.ca_location
                if os.path.isdir(where):
                    ctx.load_verify_locations(capath=where)
                else:
                    ctx.load_verify_locations(cafile=where)
        except ssl.SSLError:
            key = "ssl.truststore.location" if sec.truststore else "ssl.ca.location"
            raise TlsProblem(key, "holds no PEM certificate") from None
    else:
        ctx = ssl.create_default_context()
    ctx.check_hostname = sec.check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if sec.keystore:
        chain, key = keystore_pem(sec.keystore, sec.key_password)
        _load_chain_from_text(ctx, chain + key)
    elif sec.cert_location:
        try:
            ctx.load_cert_chain(sec.cert_location, sec.key_location,
                                password=sec.key_password or None)
        except ssl.SSLError as exc:
            key = "ssl.key.password" if "bad decrypt" in str(exc).lower() or (
                sec.key_password and "PEM lib" in str(exc)) else "ssl.certificate.location"
            raise TlsProblem(key, "client certificate and key do not load (wrong key "
                                  "password, a key that does not match, or not PEM)") from None
    return ctx


def _load_chain_from_text(ctx: ssl.SSLContext, pem: str) -> None:
    """``load_cert_chain`` takes paths only: a private file, read and removed at once."""
    fd, path = tempfile.mkstemp(prefix="kafkatail-key-", suffix=".pem")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(pem)
        ctx.load_cert_chain(path)
    finally:
        os.unlink(path)


def check_tls_files(**tls: Any) -> tuple[str, str] | None:
    """(property, problem) if the TLS files named cannot make a context, else None."""
    try:
        ssl_context(Security(protocol="SSL", **tls))
    except TlsProblem as exc:
        return exc.key, exc.problem
    return None
