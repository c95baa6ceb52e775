"""A cluster's security settings as each Kafka library takes them.

``clientprops.Security`` says how to connect; this module turns it into kafka-python keyword
arguments (``kafka_python``: one ``SSLContext`` and one token provider for every client of the
process) and a librdkafka configuration (``librdkafka``). Both are built once per set of
properties. Nothing here imports kafka at module level: the config checks TLS files in the
gunicorn master, before gevent patches anything.
"""
from __future__ import annotations

import functools
import os
import ssl
import tempfile
from typing import TYPE_CHECKING, Any

from ..clientprops import ClientProps, Security, Store

if TYPE_CHECKING:
    from ..config import Config


class TlsProblem(Exception):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key
        self.problem = problem


@functools.lru_cache(maxsize=8)
def security(props: ClientProps) -> Security:
    return props.resolve()


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


@functools.lru_cache(maxsize=8)
def token_provider(sec: Security, bootstrap: str, timeout_ms: int) -> Any:
    """The process's one OAUTHBEARER token provider for these settings."""
    from .oauth import CachedToken, msk_fetcher, msk_region, oidc_fetcher, unsecured_fetcher
    if sec.mechanism == "AWS_MSK_IAM":
        return CachedToken(msk_fetcher(msk_region(bootstrap), sec.aws_profile))
    oauth = sec.oauth
    assert oauth is not None
    extensions = dict(oauth.extensions)
    if oauth.method == "oidc":
        return CachedToken(oidc_fetcher(oauth, timeout_ms / 1000), extensions)
    return CachedToken(unsecured_fetcher(oauth.principal), extensions)


def kafka_python(config: "Config") -> dict[str, Any]:
    """kafka-python keyword arguments for the cluster's security (every client uses them)."""
    return dict(_kafka_python(config.kafka, config.bootstrap_servers, config.request_timeout_ms))


@functools.lru_cache(maxsize=8)
def _kafka_python(props: ClientProps, bootstrap: str, timeout_ms: int) -> dict[str, Any]:
    sec = security(props)
    out: dict[str, Any] = {"security_protocol": sec.protocol}
    if sec.tls:
        out["ssl_context"] = ssl_context(sec)
    if sec.sasl:
        if sec.mechanism in ("OAUTHBEARER", "AWS_MSK_IAM"):
            out["sasl_mechanism"] = "OAUTHBEARER"
            out["sasl_oauth_token_provider"] = token_provider(sec, bootstrap, timeout_ms)
        else:
            out.update(sasl_mechanism=sec.mechanism, sasl_plain_username=sec.username,
                       sasl_plain_password=sec.password)
    return out


def librdkafka(config: "Config") -> dict[str, Any]:
    """librdkafka properties for the cluster's security (the confluent backend)."""
    sec = security(config.kafka)
    out: dict[str, Any] = {"security.protocol": sec.protocol.lower(),
                           "isolation.level": sec.isolation_level}
    if sec.tls:
        out["ssl.endpoint.identification.algorithm"] = "https" if sec.check_hostname else "none"
        if sec.truststore and sec.truststore.kind == "PKCS12":
            out["ssl.ca.pem"] = truststore_pem(sec.truststore)
        else:
            where = sec.truststore.location if sec.truststore else sec.ca_location
            out["ssl.ca.location"] = where or "probe"
        if sec.keystore:
            out["ssl.keystore.location"] = sec.keystore.location
            out["ssl.keystore.password"] = sec.keystore.password
        elif sec.cert_location:
            out["ssl.certificate.location"] = sec.cert_location
            out["ssl.key.location"] = sec.key_location
            if sec.key_password:
                out["ssl.key.password"] = sec.key_password
    if sec.sasl:
        if sec.mechanism == "AWS_MSK_IAM":
            provider = token_provider(sec, config.bootstrap_servers, config.request_timeout_ms)
            out["sasl.mechanism"] = "OAUTHBEARER"
            out["oauth_cb"] = lambda _conf: (provider.token(), provider.expires_at)
        elif sec.mechanism == "OAUTHBEARER":
            oauth = sec.oauth
            assert oauth is not None
            out["sasl.mechanism"] = "OAUTHBEARER"
            extensions = ",".join(f"{k}={v}" for k, v in oauth.extensions)
            if oauth.method == "oidc":
                out.update({"sasl.oauthbearer.method": "oidc",
                            "sasl.oauthbearer.token.endpoint.url": oauth.token_url,
                            "sasl.oauthbearer.client.id": oauth.client_id,
                            "sasl.oauthbearer.client.secret": oauth.client_secret})
                if oauth.scope:
                    out["sasl.oauthbearer.scope"] = oauth.scope
                if extensions:
                    out["sasl.oauthbearer.extensions"] = extensions
            else:
                out["enable.sasl.oauthbearer.unsecure.jwt"] = True
                out["sasl.oauthbearer.config"] = " ".join(
                    [f"principal={oauth.principal}"]
                    + [f"extension_{k}={v}" for k, v in oauth.extensions])
        else:
            out.update({"sasl.mechanism": sec.mechanism, "sasl.username": sec.username,
                        "sasl.password": sec.password})
    return out
