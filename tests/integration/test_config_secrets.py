"""A config mistake in ``[tokens]`` is reported by key and reason, and prints no secret: the
likeliest mistake, a raw token pasted where its sha256 goes, must not reach stderr (and from
there the journal), nor may any other token's hash."""
from __future__ import annotations

import subprocess
import sys

import pytest

KT = [sys.executable, "-m", "kafkatail"]
RAW_TOKEN = "kt-raw-9f3b2c7d1e-pasted-as-its-hash"
OTHER_HASH = "c0ffee" + "0" * 58


@pytest.mark.parametrize("command", ["serve", "config"])
def test_raw_token_in_sha256_exits_2_without_echoing_secrets(tmp_path, command):
    config = tmp_path / "k.toml"
    config.write_text(f'[tokens.ops]\nsha256 = "{RAW_TOKEN}"\ntopics = ["**"]\n'
                      f'[tokens.ci]\nsha256 = "{OTHER_HASH}"\ntopics = ["ci.**"]\n')
    r = subprocess.run(KT + [command, "--config", str(config)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2, r.stderr
    assert "tokens: 'ops': sha256 must be 64 lowercase hex digits" in r.stderr
    for secret in (RAW_TOKEN, OTHER_HASH):
        assert secret not in r.stdout and secret not in r.stderr
    assert "Traceback" not in r.stderr
