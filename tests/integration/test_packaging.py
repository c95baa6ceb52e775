"""A user's install: ``pip install .`` into an empty virtualenv, without the dev extras."""
from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_plain_install_has_the_command_and_the_page(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", str(ROOT)], check=True,
                   timeout=600)
    out = subprocess.run([str(env_dir / "bin" / "kafkatail"), "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "demo" in out and "serve" in out
    check = ("import kafkatail.web.page as p, importlib.util as u; "
             "assert (p.STATIC / 'index.html').is_file() and (p.STATIC / 'app.js').is_file(); "
             "assert u.find_spec('pytest') is None, 'dev extra leaked into the plain install'")
    subprocess.run([str(py), "-c", check], check=True, cwd=tmp_path)
