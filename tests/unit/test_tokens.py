"""Bearer tokens: hashing, where a token may come from, constant-time lookup, config checks."""
from __future__ import annotations

import hashlib
import io

import pytest

from kafkatail.config import Config, ConfigError, load
from kafkatail.security import tokens
from kafkatail.security.tokens import (ANONYMOUS, Authenticator, Unauthenticated, check_tokens,
                                       hash_token, presented_token)

OPS, VIEWER = "ops-secret-token", "viewer-token"
TOKENS = {
    "ops": {"sha256": hash_token(OPS), "topics": ["**"], "admin": True},
    "viewer": {"sha256": hash_token(VIEWER), "topics": ["orders.*.eu", "logs.**", "!logs.audit.**"]},
}


def test_hash_is_sha256_hex_of_utf8():
    assert hash_token("é") == hashlib.sha256("é".encode()).hexdigest()


@pytest.mark.parametrize("headers, token", [
    ({"Authorization": "Bearer abc"}, "abc"),
    ({"Authorization": "bearer  abc "}, "abc"),
    ({"Sec-WebSocket-Protocol": "kafkatail.bearer.abc, kafkatail"}, "abc"),
    ({"Sec-WebSocket-Protocol": "kafkatail, kafkatail.bearer.abc"}, "abc"),
    ({"Sec-WebSocket-Protocol": "kafkatail"}, None),
    ({"Sec-WebSocket-Protocol": "kafkatail.bearer."}, None),
    ({"Authorization": "Basic Zm9vOmJhcg=="}, None),
    ({"Authorization": "Bearer "}, None),
    ({}, None),
])
def test_presented_token(headers, token):
    assert presented_token(headers) == token


def test_identify_by_header_or_subprotocol():
    auth = Authenticator(TOKENS, "")
    ops = auth.identify({"Authorization": f"Bearer {OPS}"})
    assert ops.name == "ops" and ops.admin and ops.may_tail("anything.at.all")
    viewer = auth.identify({"Sec-WebSocket-Protocol": f"kafkatail.bearer.{VIEWER}, kafkatail"})
    assert viewer.name == "viewer" and not viewer.admin
    assert viewer.may_tail("orders.web.eu") and viewer.may_tail("logs.app")
    assert not viewer.may_tail("orders.web.us") and not viewer.may_tail("logs.audit.login")


def test_no_token_is_anonymous_only_when_configured():
    assert Authenticator(TOKENS, "").identify({}) is None
    anon = Authenticator(TOKENS, "demo.** !demo.secret").identify({})
    assert anon.name == ANONYMOUS and not anon.admin
    assert anon.may_tail("demo.orders") and not anon.may_tail("demo.secret")
    assert not anon.may_tail("orders")


def test_a_wrong_token_is_refused_not_downgraded_to_anonymous():
    auth = Authenticator(TOKENS, "**")
    with pytest.raises(Unauthenticated, match="invalid token"):
        auth.identify({"Authorization": "Bearer nope"})


def test_tokens_are_compared_with_compare_digest(monkeypatch):
    calls = []
    real = tokens.hmac.compare_digest
    monkeypatch.setattr(tokens.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    Authenticator(TOKENS, "").identify({"Authorization": f"Bearer {OPS}"})
    assert len(calls) == len(TOKENS)  # every entry, whichever matches


def test_config_tokens_table(tmp_path):
    f = tmp_path / "k.toml"
    f.write_text(f'anonymous_topics = "demo.**"\n[tokens.ops]\nsha256 = "{hash_token(OPS)}"\n'
                 'topics = ["logs.**", "!logs.audit.**"]\nadmin = true\n')
    cfg = load(str(f), env={})
    assert cfg.tokens["ops"]["admin"] is True and cfg.anonymous_topics == "demo.**"
    assert Authenticator.from_config(cfg).identify({"Authorization": f"Bearer {OPS}"}).admin


@pytest.mark.parametrize("spec, needle", [
    ({"sha256": "abc", "topics": []}, "64 lowercase hex"),
    ({"sha256": hash_token("x"), "topics": "logs.**"}, "list of patterns"),
    ({"sha256": hash_token("x"), "topics": ["!"]}, "empty"),
    ({"sha256": hash_token("x"), "admin": "yes"}, "admin must be"),
    ({"sha256": hash_token("x"), "token": "x"}, "unknown keys"),
    ("plain", "must be a table"),
])
def test_bad_token_tables_are_config_errors(spec, needle):
    assert needle in check_tokens({"t": spec})
    with pytest.raises(ConfigError, match="tokens: "):
        Config(tokens={"t": spec})


def test_bad_patterns_in_flat_keys_are_config_errors():
    with pytest.raises(ConfigError, match="anonymous_topics"):
        load(None, env={"KAFKATAIL_ANONYMOUS_TOPICS": "!"})
    with pytest.raises(ConfigError, match="debug_access"):
        load(None, env={"KAFKATAIL_DEBUG_ACCESS": "everyone"})


def test_hash_helper(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret\n"))
    assert tokens.main(["hash"]) == 0
    assert capsys.readouterr().out.strip() == f'sha256 = "{hash_token("s3cret")}"'
    assert tokens.main(["new"]) == 0
    out = capsys.readouterr()
    token = out.err.split("token:", 1)[1].strip()
    assert out.out.strip() == f'sha256 = "{hash_token(token)}"' and len(token) >= 40
