"""conf/kafkatail.service: valid for systemd, consistent with kafkatail's config, and its
Type=notify is honoured (gunicorn's master sends READY=1 to $NOTIFY_SOCKET)."""
from __future__ import annotations

import configparser
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

from kafkatail.broker import free_port
from kafkatail.cli import build_parser
from kafkatail.config import Config

from helpers import unavailable

UNIT = Path(__file__).resolve().parents[2] / "conf" / "kafkatail.service"
INSTALLED = "/opt/kafkatail/bin/"
VENV_BIN = str(Path(sys.executable).parent) + "/"


def _service() -> configparser.SectionProxy:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read_string(UNIT.read_text())
    return unit["Service"]


def test_unit_matches_kafkatail():
    service = _service()
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == INSTALLED + "kafkatail"
    assert shutil.which("kafkatail", path=VENV_BIN), "the entry point the unit runs is installed"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "serve"
    defaults = Config()
    graceful_timeout = int(defaults.shutdown_grace_s) + 1  # as kafkatail.server sets it
    assert int(service["TimeoutStopSec"]) > graceful_timeout
    assert service["Type"] == "notify" and service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] == "mixed"  # SIGTERM to the master only; it stops the workers
    assert service["Restart"] == "on-failure"
    assert int(service["LimitNOFILE"]) >= 8 * defaults.max_tails
    for option in ("NoNewPrivileges", "DynamicUser", "PrivateTmp"):
        assert service[option] == "yes"
    assert service["ProtectSystem"] == "strict"


def test_systemd_analyze_verify(tmp_path):
    if not shutil.which("systemd-analyze"):
        unavailable("systemd-analyze is not installed (apt-get install systemd)")
    unit = tmp_path / "kafkatail.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED, VENV_BIN))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                       timeout=60)
    # Bad values are warnings with exit 0: any line about this unit fails the test.
    problems = [line for line in (r.stdout + r.stderr).splitlines() if "kafkatail" in line]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr


def test_serve_notifies_ready(tmp_path):
    """Type=notify: the service is "started" only when gunicorn's master says READY=1."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(path)
        notify.settimeout(30)
        proc = subprocess.Popen(
            [sys.executable, "-m", "kafkatail", "serve", "--bind", f"127.0.0.1:{free_port()}",
             "--bootstrap-servers", "127.0.0.1:1"],
            env={**os.environ, "NOTIFY_SOCKET": path}, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        try:
            assert b"READY=1" in notify.recv(4096).split(b"\n")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
