"""A cluster's security settings as each Kafka library takes them.

``clientprops.Security`` says how to connect; this module turns it into kafka-python keyword
arguments (``kafka_python``: one ``SSLContext`` and one token provider for every client of the
process) and a librdkafka configuration (``librdkafka``). Both are built once per set of
properties. The TLS context itself is ``clientprops.ssl_context``: the config opens the TLS
files when it reads the properties (in the gunicorn master, before gevent patches anything).
Nothing here imports kafka at module level.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from ..clientprops import ClientProps, Security, ssl_context, truststore_pem

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["security", "ssl_context", "token_provider", "kafka_python", "librdkafka"]


@functools.lru_cache(maxsize=8)
def security(props: ClientProps) -> Security:
    return props.resolve()


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
