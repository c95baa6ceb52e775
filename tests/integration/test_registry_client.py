"""kafkatail's registry client against the suite's registry: credentials from the URL, the
setting or a bearer token (``${env:}``/``${file:}`` too), TLS with a CA and a client
certificate, several URLs tried in turn, references resolved dependencies first, and errors
that never carry a secret."""
from __future__ import annotations

import json

import pytest

from kafkatail.config import Config, ConfigError, effective_toml, load
from kafkatail.schemas.connect import registry_client
from kafkatail.schemas.registry import RegistryError
from kafkatail.testing.certs import make_pki
from kafkatail.testing.registry import RegistryServer

AVRO = json.dumps({"type": "record", "name": "R", "fields": [{"name": "n", "type": "long"}]})


def client(**settings):
    return registry_client(Config(**settings), env={"SR_PASSWORD": "s3cret-pw"})


def hostport(url: str) -> str:
    return url.split("://", 1)[1]


@pytest.mark.parametrize("how", ["url", "setting", "env", "file"])
def test_basic_auth_from_the_url_the_setting_an_env_or_a_file(tmp_path, how):
    secret = tmp_path / "sr"
    secret.write_text("alice:s3cret-pw\n")
    with RegistryServer(users={"alice": "s3cret-pw"}) as server:
        schema_id = server.register("t-value", AVRO)
        settings = {
            "url": {"schema_registry_url": f"http://alice:s3cret-pw@{hostport(server.url)}"},
            "setting": {"schema_registry_url": server.url,
                        "schema_registry_basic_auth": "alice:s3cret-pw"},
            "env": {"schema_registry_url": server.url,
                    "schema_registry_basic_auth": "alice:${env:SR_PASSWORD}"},
            "file": {"schema_registry_url": server.url,
                     "schema_registry_basic_auth": f"${{file:{secret}}}"},
        }[how]
        c = client(**settings)
        try:
            assert c.fetch(schema_id).schema == AVRO
        finally:
            c.close()


def test_a_refused_login_is_final_and_names_no_secret():
    with RegistryServer(users={"alice": "s3cret-pw"}) as server:
        schema_id = server.register("t-value", AVRO)
        c = client(schema_registry_url=server.url, schema_registry_basic_auth="alice:wrong-pw")
        with pytest.raises(RegistryError) as caught:
            c.fetch(schema_id)
        c.close()
        assert "refused the credentials (401)" in str(caught.value)
        assert not caught.value.unknown and "wrong-pw" not in str(caught.value)


def test_a_bearer_token():
    with RegistryServer(tokens={"t0ken-value"}) as server:
        schema_id = server.register("t-value", AVRO)
        c = client(schema_registry_url=server.url, schema_registry_bearer_token="t0ken-value")
        assert c.fetch(schema_id).schema_type == "AVRO"
        c.close()


def test_tls_with_a_ca_and_a_client_certificate(tmp_path):
    pki = make_pki(tmp_path)
    with RegistryServer(tls=(pki.server_pem, None), client_ca=pki.ca) as server:
        schema_id = server.register("t-value", AVRO)
        url = server.url.replace("127.0.0.1", "localhost")
        c = client(schema_registry_url=url, schema_registry_ca=str(pki.ca),
                   schema_registry_certificate=str(pki.client_cert),
                   schema_registry_key=str(pki.client_key))
        assert c.fetch(schema_id).schema == AVRO
        c.close()
        # Without the client certificate the handshake fails: a reason, not a crash.
        bare = client(schema_registry_url=url, schema_registry_ca=str(pki.ca))
        with pytest.raises(RegistryError, match="unreachable"):
            bare.fetch(schema_id)
        bare.close()
        # Without the CA the server's certificate is not trusted.
        untrusting = client(schema_registry_url=url)
        with pytest.raises(RegistryError, match="TLS handshake failed|unreachable"):
            untrusting.fetch(schema_id)
        untrusting.close()


def test_several_urls_are_tried_in_turn():
    with RegistryServer() as down, RegistryServer() as up:
        schema_id = up.register("t-value", AVRO)
        down.down()
        c = client(schema_registry_url=f"{down.url}, {up.url}")
        assert c.fetch(schema_id).schema == AVRO
        c.close()


def test_references_are_resolved_dependencies_first(schema_registry):
    money = json.dumps({"type": "record", "name": "Money", "namespace": "kt",
                        "fields": [{"name": "cents", "type": "long"}]})
    line = json.dumps({"type": "record", "name": "Line", "namespace": "kt",
                       "fields": [{"name": "price", "type": "kt.Money"}]})
    order = json.dumps({"type": "record", "name": "Order", "namespace": "kt",
                        "fields": [{"name": "lines", "type": {"type": "array",
                                                              "items": "kt.Line"}}]})
    schema_registry.register("kt-money", money)
    schema_registry.register("kt-line", line, references=[
        {"name": "kt.Money", "subject": "kt-money", "version": 1}])
    order_id = schema_registry.register("kt-order", order, references=[
        {"name": "kt.Line", "subject": "kt-line", "version": 1}])
    c = client(schema_registry_url=schema_registry.url)
    fetched = c.fetch(order_id)
    c.close()
    assert list(fetched.references) == ["kt.Money", "kt.Line"]
    from kafkatail.schemas.avro import avro_decoder
    decode = avro_decoder(fetched.schema, fetched.references)
    assert json.loads(decode(b"\x02\x0a\x00")) == {"lines": [{"price": {"cents": 5}}]}


def test_an_unknown_id_is_unknown():
    with RegistryServer() as server:
        c = client(schema_registry_url=server.url)
        with pytest.raises(RegistryError) as caught:
            c.fetch(424242)
        c.close()
    assert caught.value.unknown and "not found" in str(caught.value)


def test_settings_are_checked_at_load_and_secrets_never_shown(tmp_path):
    with pytest.raises(ConfigError, match="schema_registry_url: .*http:// or https://"):
        load(env={"KAFKATAIL_SCHEMA_REGISTRY_URL": "ftp://u:pw-in-url@h"})
    with pytest.raises(ConfigError) as caught:
        load(env={"KAFKATAIL_SCHEMA_REGISTRY_URL": "http://h",
                  "KAFKATAIL_SCHEMA_REGISTRY_BASIC_AUTH": "${env:NOPE_NOT_SET}"})
    assert "schema_registry_basic_auth: ${env:NOPE_NOT_SET} is not set" in str(caught.value)
    with pytest.raises(ConfigError, match="schema_registry_basic_auth: must be USER:PASSWORD"):
        load(env={"KAFKATAIL_SCHEMA_REGISTRY_URL": "http://h",
                  "KAFKATAIL_SCHEMA_REGISTRY_BASIC_AUTH": "no-colon-secret"})
    with pytest.raises(ConfigError, match="schema_registry_certificate: client certificate"):
        load(env={"KAFKATAIL_SCHEMA_REGISTRY_URL": "https://h",
                  "KAFKATAIL_SCHEMA_REGISTRY_CERTIFICATE": str(tmp_path / "none.pem")})
    config = load(env={"KAFKATAIL_SCHEMA_REGISTRY_URL": "https://user:pw-in-url@h:8081/x",
                       "KAFKATAIL_SCHEMA_REGISTRY_BEARER_TOKEN": "tok-secret"})
    shown = effective_toml(config)
    assert 'schema_registry_url = "https://h:8081/x"' in shown
    assert 'schema_registry_bearer_token = "****"' in shown
    assert "pw-in-url" not in shown and "tok-secret" not in shown


def test_a_confluent_client_properties_file_names_the_registry(tmp_path):
    """Confluent Cloud hands out one client.properties for cluster and registry alike."""
    with RegistryServer(users={"SRKEY": "s3cret-pw"}) as server:
        schema_id = server.register("t-value", AVRO)
        props = tmp_path / "client.properties"
        props.write_text("bootstrap.servers=127.0.0.1:9092\n"
                         "session.timeout.ms=45000\n"
                         f"schema.registry.url={server.url}\n"
                         "basic.auth.credentials.source=USER_INFO\n"
                         "basic.auth.user.info=SRKEY:${env:SR_PASSWORD}\n")
        config = load(env={"KAFKATAIL_KAFKA_PROPERTIES": str(props),
                           "SR_PASSWORD": "s3cret-pw"})
        assert config.schema_registry_url == server.url
        c = registry_client(config, env={"SR_PASSWORD": "s3cret-pw"})
        assert c.fetch(schema_id).schema == AVRO
        c.close()
        assert "s3cret-pw" not in effective_toml(config)
