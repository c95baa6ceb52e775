"""Fixtures shared by the suite: a real broker for the session and an in-process server."""
from __future__ import annotations

import gc
import os
import threading
import time
from typing import Iterator, NoReturn

import pytest
from werkzeug.serving import make_server

from kafkatail.app import create_app, shutdown
from kafkatail.config import Config
from kafkatail.testing.kafka import Cluster, start_cluster

from integration.wsclient import close_all


@pytest.fixture(scope="session")
def cluster(kafka_cluster) -> Cluster:
    """The plugin's session broker (embedded Tansu, or KAFKATAIL_TEST_BOOTSTRAP)."""
    return kafka_cluster


@pytest.fixture(scope="session")
def apache_kafka(cluster) -> Iterator[Cluster]:
    """Apache Kafka, for what only it can show (SASL and TLS listeners, ACLs, transactions,
    DeleteRecords): the session's broker when it is one (``make test-kafka``), else one started
    for these tests alone, so a default run tests them instead of skipping. A module or
    directory hands it to its tests by overriding ``cluster`` with it."""
    if cluster.kind == "kafka":
        yield cluster
        return
    if cluster.kind == "external":
        pytest.skip(f"needs Apache Kafka's launcher; the session runs on {cluster.describe()}")
    try:
        clusters = start_cluster("kafka")
        kafka = next(clusters)
    except RuntimeError as exc:  # BrokerError: no Java or Maven
        unavailable(f"Apache Kafka could not start: {exc}")
    yield kafka
    clusters.close()


def unavailable(reason: str) -> NoReturn:
    """Skip a test whose program or privilege this machine lacks; fail instead under CI
    (``.ci/run`` sets CI=1 and installs everything), where a skip would hide a broken install."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; .ci/run should have provided it")
    pytest.skip(reason)


# The suite's servers, in-process and subprocesses alike, admit anonymous tails, open /debug and
# do not limit the connection or request rate, as before access rules existed (tests open hundreds of tails
# from one address); the tests of those rules (test_auth.py, ...) configure their own.
OPEN_ACCESS = {"anonymous_topics": "**", "debug_access": "open", "connect_rate_per_client": "0",
               "api_rate_per_client": "0"}


@pytest.fixture(scope="session", autouse=True)
def _open_access_for_subprocess_servers() -> Iterator[None]:
    env = {f"KAFKATAIL_{k.upper()}": v for k, v in OPEN_ACCESS.items()}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Tests may leave WebSocket clients open; close them so the thread guard sees real leaks."""
    yield
    close_all()


class LiveServer:
    """The app on a real socket in this process, so tests can count this process's threads."""

    def __init__(self, config: Config, port: int = 0) -> None:
        self.app = create_app(config)
        self.config = config
        self.http = make_server("127.0.0.1", port, self.app, threaded=True)
        self.port = self.http.server_port
        self.thread = threading.Thread(target=self.http.serve_forever, name="kt-test-http",
                                       kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def pool(self):
        return self.app.extensions["kafkatail"]["pool"]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        shutdown(self.app, timeout=5)
        self.http.shutdown()
        self.http.server_close()
        self.thread.join(5)
        # Werkzeug does not join its request threads, and its post-request drain leaves an epoll
        # selector to the cyclic GC when the socket is already closed. Production (gunicorn) has
        # neither; here, wait for the threads and collect, so the thread guard sees our leaks only.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(
                t.name.endswith("(process_request_thread)") for t in threading.enumerate()):
            time.sleep(0.02)
        gc.collect()


@pytest.fixture
def make_server_(cluster):
    servers = []

    def make(port: int = 0, **overrides) -> LiveServer:
        cfg = Config(bootstrap_servers=cluster.bootstrap, kafka=cluster.props,
                     poll_timeout_ms=200, ping_interval_s=5, status_interval_s=1,
                     request_timeout_ms=3000, feed_linger_s=0.5, **OPEN_ACCESS)
        server = LiveServer(cfg.replace(**overrides), port)
        server.thread.start()
        servers.append(server)
        return server

    yield make
    close_all()  # before the servers: werkzeug's request threads drain until the client closes
    for s in servers:
        s.stop()


@pytest.fixture
def server(make_server_) -> LiveServer:
    return make_server_()


@pytest.fixture
def hot_thread() -> Iterator[threading.Thread]:
    """A thread named kt-test-hot burning a core in ``spin`` until the test ends."""
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    hot = threading.Thread(target=spin, name="kt-test-hot")
    hot.start()
    yield hot
    stop.set()
    hot.join()
