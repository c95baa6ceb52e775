from pathlib import Path

import pytest

from kafkatail.config import Config, ConfigError, documented_toml, load

ROOT = Path(__file__).resolve().parents[2]


def test_documented_file_lists_every_key_with_its_default():
    assert (ROOT / "conf" / "kafkatail.toml").read_text() == documented_toml()
    assert load(str(ROOT / "conf" / "kafkatail.toml"), env={}).as_dict() == Config().as_dict()


def test_precedence_file_env_flags(tmp_path):
    f = tmp_path / "k.toml"
    f.write_text('bind = "0.0.0.0:1"\npoll_timeout_ms = 100\nworkers = 3\n')
    cfg = load(str(f), env={"KAFKATAIL_POLL_TIMEOUT_MS": "250", "KAFKATAIL_WORKERS": "2"},
               overrides={"workers": "4"})
    assert (cfg.bind, cfg.poll_timeout_ms, cfg.workers) == ("0.0.0.0:1", 250, 4)


@pytest.mark.parametrize("env,needle", [
    ({"KAFKATAIL_POLL_TIMEOUT_MS": "0"}, "poll_timeout_ms: 0 must be greater than 0"),
    ({"KAFKATAIL_WORKERS": "two"}, "workers: 'two' is not a valid int"),
    ({"KAFKATAIL_BIND": "nowhere"}, "bind: 'nowhere' must look like HOST:PORT"),
    ({"KAFKATAIL_OUTBOX_FULL_POLICY": "block"}, "outbox_full_policy"),
    ({"KAFKATAIL_BOOTSTRAP_SERVERS": "a:1,b"}, "bootstrap_servers"),
])
def test_errors_name_key_and_source(env, needle):
    with pytest.raises(ConfigError) as e:
        load(None, env=env)
    assert needle in str(e.value) and "KAFKATAIL_" in str(e.value)


def test_unknown_key_in_file(tmp_path):
    f = tmp_path / "k.toml"
    f.write_text("pol_timeout = 5\n")
    with pytest.raises(ConfigError, match="pol_timeout: unknown key"):
        load(str(f), env={})


def test_bad_toml_and_missing_file(tmp_path):
    f = tmp_path / "k.toml"
    f.write_text("bind = \n")
    with pytest.raises(ConfigError, match="config file"):
        load(str(f), env={})
    with pytest.raises(ConfigError, match="No such file"):
        load(str(tmp_path / "nope.toml"), env={})


RAW_TOKEN = "kt-raw-token-pasted-where-its-hash-goes"
OTHER_HASH = "ab" * 32


@pytest.mark.parametrize("tokens", [
    {"ops": {"sha256": RAW_TOKEN}, "ci": {"sha256": OTHER_HASH}},
    {"ops": {"sha256": OTHER_HASH, "topics": RAW_TOKEN}},
    RAW_TOKEN,
])
def test_token_errors_name_the_key_not_the_values(tokens):
    with pytest.raises(ConfigError) as e:
        Config(tokens=tokens)
    assert str(e.value).startswith("tokens: ")
    assert RAW_TOKEN not in str(e.value) and OTHER_HASH not in str(e.value)


def test_kafka_errors_do_not_quote_the_table():
    with pytest.raises(ConfigError) as e:
        Config(kafka=f"sasl.password={RAW_TOKEN}")
    assert str(e.value).startswith("kafka: ") and RAW_TOKEN not in str(e.value)
