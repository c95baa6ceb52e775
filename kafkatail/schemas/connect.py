"""The registry client and decoder cache a configuration asks for: URLs, credentials (each may
be ``${env:NAME}`` or ``${file:/path}``, as for the cluster's secrets) and TLS. Called at load,
so a mistake stops the process before it serves, and again when the app starts."""
from __future__ import annotations

import os
import ssl
from typing import Any, Mapping

from ..clientprops import expand
from ..errors import ConfigError
from .decoding import Schemas
from .registry import RegistryClient, endpoints


def registry_client(config: Any, env: Mapping[str, str] | None = None) -> RegistryClient:
    """A client for ``config.schema_registry_url``; ConfigError naming the key at fault."""
    env = os.environ if env is None else env
    basic = expand(config.schema_registry_basic_auth, env, "schema_registry_basic_auth")
    if basic and ":" not in basic:
        raise ConfigError("schema_registry_basic_auth: must be USER:PASSWORD")
    token = expand(config.schema_registry_bearer_token, env, "schema_registry_bearer_token")
    try:
        urls = endpoints(config.schema_registry_url, basic, token)
    except ValueError as exc:
        raise ConfigError(f"schema_registry_url: {exc}") from None
    context = _tls(config, env) if any(u.base.startswith("https:") for u in urls) else None
    return RegistryClient(urls, context, timeout_s=config.schema_registry_timeout_ms / 1000)


def schemas(config: Any, env: Mapping[str, str] | None = None) -> Schemas | None:
    """The decoder cache, or None when no registry is configured."""
    if not config.schema_registry_url:
        return None
    return Schemas(registry_client(config, env), wait_s=config.schema_registry_wait_ms / 1000,
                   cache_size=config.schema_cache_size)


def _tls(config: Any, env: Mapping[str, str]) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=config.schema_registry_ca or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"schema_registry_ca: {config.schema_registry_ca}: "
                          f"{getattr(exc, 'strerror', None) or 'holds no PEM certificate'}") from None
    if config.schema_registry_certificate:
        password = expand(config.schema_registry_key_password, env,
                          "schema_registry_key_password")
        try:
            context.load_cert_chain(config.schema_registry_certificate,
                                    config.schema_registry_key or None, password or None)
        except (OSError, ssl.SSLError):
            raise ConfigError("schema_registry_certificate: client certificate and key do not "
                              "load (a missing file, a wrong key password, a key that does not "
                              "match, or not PEM)") from None
    return context
