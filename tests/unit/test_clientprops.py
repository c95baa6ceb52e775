"""Kafka client properties: the sources and their order, Java properties syntax, JAAS lines,
``${env:}``/``${file:}`` secrets, the checks (each a one-line ConfigError naming the property)
and what each backend is given (kafkatail/clientprops.py, kafkatail/tail/clientconf.py)."""
from __future__ import annotations

import ssl
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kafkatail.clientprops import ClientProps, parse_jaas, parse_properties
from kafkatail.config import Config, ConfigError, effective_toml, load
from kafkatail.tail import clientconf

SCRAM = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
         "sasl.username": "alice", "sasl.password": "pw-1"}


def test_sources_in_order_table_then_file_then_flags(tmp_path):
    props = tmp_path / "client.properties"
    props.write_text("sasl.username = from-file\nsasl.password: pw-file\n")
    toml = tmp_path / "k.toml"
    toml.write_text(f'kafka_properties = "{props}"\n[kafka]\n"security.protocol" = "SASL_SSL"\n'
                    '"sasl.mechanism" = "PLAIN"\n"sasl.username" = "from-table"\n'
                    '"sasl.password" = "pw-table"\n')
    config = load(str(toml), env={}, properties=["sasl.password=pw-flag"])
    sec = config.kafka.resolve({})
    assert (sec.protocol, sec.mechanism, sec.username, sec.password) == (
        "SASL_SSL", "PLAIN", "from-file", "pw-flag")
    assert config.kafka.origin("sasl.username") == str(props)
    # The file may come from the environment too (KAFKATAIL_KAFKA_PROPERTIES).
    other = tmp_path / "other.properties"
    other.write_text("isolation.level=read_uncommitted\n")
    config = load(None, env={"KAFKATAIL_KAFKA_PROPERTIES": str(other)})
    assert config.kafka.resolve({}).isolation_level == "read_uncommitted"


def test_java_properties_syntax():
    text = ("# comment\n! also a comment\n  key1 = value one  \nkey2:v2\nkey3 v3\n"
            "key4 = a\\\n    b\\\n    c\nkey\\ 5 = x\\u0041\\ty\nkey6=\nkey7 = ends\\\\\n")
    assert parse_properties(text, "f") == {
        "key1": "value one  ", "key2": "v2", "key3": "v3", "key4": "abc", "key 5": "xA\ty",
        "key6": "", "key7": "ends\\"}
    with pytest.raises(ConfigError, match=r"f line 2: malformed \\u escape"):
        parse_properties("a=1\nb=\\u12x4\n", "f")


def test_jaas_lines_give_username_and_password():
    module, options = parse_jaas(
        'org.apache.kafka.common.security.plain.PlainLoginModule required username="key" '
        "password='p\"w;x' ;")
    assert module.endswith("PlainLoginModule") and options == {"username": "key",
                                                              "password": 'p"w;x'}
    config = load(None, env={}, properties=[
        "security.protocol=SASL_PLAINTEXT", "sasl.mechanism=SCRAM-SHA-256",
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="bob" password="secret-2";'])
    sec = config.kafka.resolve({})
    assert (sec.username, sec.password) == ("bob", "secret-2")


def test_secrets_from_env_and_files(tmp_path):
    (tmp_path / "pw").write_text("from-a-file\n")
    (tmp_path / "creds.properties").write_text("password = from-a-key\n")
    props = ClientProps({**SCRAM, "sasl.password": f"${{file:{tmp_path / 'pw'}}}"})
    assert props.resolve({}).password == "from-a-file"
    props = ClientProps({**SCRAM, "sasl.password": f"${{file:{tmp_path}/creds.properties:password}}"})
    assert props.resolve({}).password == "from-a-key"
    props = ClientProps({**SCRAM, "sasl.password": "${env:KT_PW}"})
    assert props.resolve({"KT_PW": " spaced "}).password == " spaced "  # a secret is not stripped
    with pytest.raises(ConfigError, match=r"sasl.password: \$\{env:KT_PW\} is not set"):
        props.resolve({})
    with pytest.raises(ConfigError, match="No such file"):
        ClientProps({**SCRAM, "sasl.password": "${file:/nonexistent/pw}"}).resolve({})


def test_secrets_are_never_shown():
    config = Config(kafka=ClientProps({**SCRAM, "sasl.password": "hunter2-xyz",
                                       "ssl.key.password": "key-pw-xyz"}))
    shown = effective_toml(config) + repr(config) + repr(config.kafka.resolve({}))
    assert "hunter2-xyz" not in shown and "key-pw-xyz" not in shown
    assert '"sasl.password" = "****"' in effective_toml(config)


@pytest.mark.parametrize("props,needle", [
    ({"sasl.mechansim": "PLAIN"}, "sasl.mechansim: unknown (from -X); did you mean sasl.mechanism?"),
    ({"security.protocol": "TLS"}, "security.protocol: 'TLS' must be one of PLAINTEXT"),
    ({"security.protocol": "SASL_SSL"}, "sasl.mechanism: needed with security.protocol SASL_SSL"),
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "GSSAPI"}, "'GSSAPI' must be one of"),
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": "a"},
     "sasl.password: needed for PLAIN"),
    ({"sasl.mechanism": "PLAIN"}, "sasl.mechanism: needs security.protocol SASL_SSL or "
                                  "SASL_PLAINTEXT (it is PLAINTEXT)"),
    ({"ssl.ca.location": "/x"}, "ssl.ca.location: needs security.protocol SSL"),
    ({"security.protocol": "SSL", "ssl.ca.location": "/nonexistent/ca.pem"},
     "ssl.ca.location: /nonexistent/ca.pem: No such file or directory"),
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER"},
     "OAUTHBEARER needs oidc"),
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER",
      "sasl.oauthbearer.method": "oidc", "sasl.oauthbearer.token.endpoint.url": "https://idp/t"},
     "sasl.oauthbearer.client.id and .secret: needed for OIDC"),
    ({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "AWS_MSK_IAM"},
     "AWS_MSK_IAM needs security.protocol SASL_SSL"),
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.jaas.config":
      'com.example.Login required username="a" password="b";'},
     "login module com.example.Login is not supported"),
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.jaas.config":
      'org.apache.kafka.common.security.scram.ScramLoginModule required username="a" '
      'password="b";'}, "ScramLoginModule does not do sasl.mechanism PLAIN"),
    ({"isolation.level": "read_all"}, "isolation.level: 'read_all' must be one of"),
    ({"ssl.endpoint.identification.algorithm": "dns"}, "must be https or none"),
])
def test_each_mistake_is_one_line_naming_the_property(props, needle):
    with pytest.raises(ConfigError) as e:
        load(None, env={}, properties=[f"{k}={v}" for k, v in props.items()])
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_a_java_keystore_gets_the_command_that_converts_it(tmp_path):
    jks = tmp_path / "truststore.jks"
    jks.write_bytes(b"\xfe\xed\xfe\xed" + b"\0" * 60)
    with pytest.raises(ConfigError) as e:
        load(None, env={}, properties=["security.protocol=SSL",
                                       f"ssl.truststore.location={jks}"])
    assert str(e.value) == (
        f"kafka property ssl.truststore.location: {jks} is a Java KeyStore; convert it to "
        f"PKCS#12 with: keytool -importkeystore -srckeystore {jks} -destkeystore "
        f"{tmp_path / 'truststore.p12'} -deststoretype PKCS12 (from -X)")


def test_a_wrong_store_password_is_named_without_the_password(tmp_path):
    from kafkatail.testing.certs import make_pki
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12
    pki = make_pki(tmp_path)
    ca = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    store = tmp_path / "trust.p12"
    store.write_bytes(pkcs12.serialize_key_and_certificates(
        None, None, None, [ca], BestAvailableEncryption(b"right-pw")))
    base = ["security.protocol=SSL", f"ssl.truststore.location={store}"]
    config = load(None, env={}, properties=base + ["ssl.truststore.password=right-pw"])
    ctx = clientconf.ssl_context(config.kafka.resolve({}))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert len(ctx.get_ca_certs()) == 1
    with pytest.raises(ConfigError) as e:
        load(None, env={}, properties=base + ["ssl.truststore.password=wrong-pw"])
    assert "does not open: wrong password" in str(e.value) and "wrong-pw" not in str(e.value)


def test_what_each_backend_is_given(tmp_path):
    from kafkatail.testing.certs import make_pki
    pki = make_pki(tmp_path)
    config = Config(bootstrap_servers="h:9093", kafka=ClientProps({
        **SCRAM, "ssl.ca.location": str(pki.ca), "ssl.endpoint.identification.algorithm": "none",
        "isolation.level": "read_uncommitted", "client.id": "viewer"}))
    kp = clientconf.kafka_python(config)
    assert kp["security_protocol"] == "SASL_SSL" and kp["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (kp["sasl_plain_username"], kp["sasl_plain_password"]) == ("alice", "pw-1")
    assert kp["ssl_context"].check_hostname is False
    assert clientconf.kafka_python(config)["ssl_context"] is kp["ssl_context"]  # built once
    rd = clientconf.librdkafka(config)
    assert rd == {"security.protocol": "sasl_ssl", "isolation.level": "read_uncommitted",
                  "ssl.endpoint.identification.algorithm": "none",
                  "ssl.ca.location": str(pki.ca), "sasl.mechanism": "SCRAM-SHA-512",
                  "sasl.username": "alice", "sasl.password": "pw-1"}


def test_plaintext_by_default():
    config = Config()
    assert clientconf.kafka_python(config) == {"security_protocol": "PLAINTEXT"}
    assert clientconf.librdkafka(config) == {"security.protocol": "plaintext",
                                             "isolation.level": "read_committed"}


def test_msk_iam_signs_with_the_aws_library(monkeypatch):
    pytest.importorskip("aws_msk_iam_sasl_signer")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    config = Config(bootstrap_servers="b-1.demo.abc123.c2.kafka.eu-west-1.amazonaws.com:9098",
                    kafka=ClientProps({"security.protocol": "SASL_SSL",
                                       "sasl.mechanism": "AWS_MSK_IAM"}))
    kp = clientconf.kafka_python(config)
    assert kp["sasl_mechanism"] == "OAUTHBEARER"
    import base64
    token = kp["sasl_oauth_token_provider"].token()
    url = base64.urlsafe_b64decode(token + "==").decode()
    assert url.startswith("https://kafka.eu-west-1.amazonaws.com/?Action=kafka-cluster")
    assert "not-a-real-secret" not in url


st_line = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(st.lists(st_line, max_size=8))
def test_fuzzed_property_files_load_or_fail_in_one_line(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("fuzz") / "client.properties"
    path.write_text("\n".join(lines))
    try:
        load(None, env={}, overrides={"kafka_properties": str(path)})
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc)


@pytest.mark.parametrize("content,needle", [
    (b"security.protocol=SASL_SSL\nsasl.mechanism=PLAIN\nbogus.key=1\n", "bogus.key: unknown"),
    (b"\xff\xfe not utf-8", "not UTF-8 text"),
    (b"a.b=\\uZZZZ", "malformed \\u escape"),
    (None, "No such file or directory"),
])
def test_a_bad_properties_file_exits_2_with_one_line(tmp_path, content, needle):
    path = tmp_path / "client.properties"
    if content is not None:
        path.write_bytes(content)
    done = subprocess.run([sys.executable, "-m", "kafkatail", "serve", "--kafka-properties",
                           str(path)], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and needle in done.stderr, done.stderr


def test_tokens_are_kept_until_80_percent_of_their_lifetime(monkeypatch):
    from kafkatail.tail import oauth
    now = [1000.0]
    monkeypatch.setattr(oauth.time, "monotonic", lambda: now[0])
    issued = []

    def fetch():
        issued.append(f"token-{len(issued)}")
        return issued[-1], 100.0
    provider = oauth.CachedToken(fetch, {"logicalCluster": "lkc-1"})
    assert provider.token() == "token-0" and provider.extensions() == {"logicalCluster": "lkc-1"}
    now[0] += 79
    assert provider.token() == "token-0"
    now[0] += 2  # past 80 s of its 100: a connection made now gets a fresh one
    assert provider.token() == "token-1" and provider.fetched == 2


def test_an_oidc_endpoint_that_refuses_is_named_without_the_secret():
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import threading
    from kafkatail.clientprops import OAuth
    from kafkatail.tail.oauth import TokenError, oidc_fetcher

    class Refuse(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.send_response(401)
            self.end_headers()

        def log_message(self, *args):
            pass
    http = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=http.serve_forever, name="kt-test-oidc",
                              kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        url = f"http://127.0.0.1:{http.server_port}/token?key=q-secret"
        fetch = oidc_fetcher(OAuth("oidc", token_url=url, client_id="kt",
                                   client_secret="s3cret-xyz"), timeout_s=5)
        with pytest.raises(TokenError) as e:
            fetch()
    finally:
        http.shutdown()
        http.server_close()
        thread.join(5)
    assert str(e.value) == (f"OIDC token endpoint http://127.0.0.1:{http.server_port}/token "
                            f"answered HTTP 401")


def test_msk_iam_on_librdkafka_is_an_oauth_callback(monkeypatch):
    pytest.importorskip("aws_msk_iam_sasl_signer")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
    monkeypatch.setenv("AWS_REGION", "us-east-2")
    config = Config(bootstrap_servers="b-1.x.kafka.us-east-2.amazonaws.com:9098",
                    kafka=ClientProps({"security.protocol": "SASL_SSL",
                                       "sasl.mechanism": "AWS_MSK_IAM"}))
    conf = clientconf.librdkafka(config)
    assert conf["sasl.mechanism"] == "OAUTHBEARER" and conf["ssl.ca.location"] == "probe"
    import time
    token, expires_at = conf["oauth_cb"]("")
    assert token and 60 < expires_at - time.time() <= 900
