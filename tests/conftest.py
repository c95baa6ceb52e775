"""Fixtures shared by the suite: a real broker for the session, in-process servers (on each
consumer backend for a test that takes ``backend``) and nginx in front of two servers."""
from __future__ import annotations

import os
import shutil
import threading
from typing import Iterator

import pytest

from helpers import BACKENDS, InProcessServer, Nginx, NGINX_PING_S, close_all, unavailable
from kafkatail.config import Config
from kafkatail.testing.kafka import Cluster, start_cluster
from kafkatail.testing.server import ServerProcess


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


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """The consumer backend: a test that takes this runs once per backend, and the servers
    ``make_server_`` (and ``server``) build for it use that backend."""
    return request.param


@pytest.fixture
def make_server_(cluster, request):
    """Builds in-process servers (stopped after the test) with the suite's config and
    ``overrides``; under a test that takes ``backend``, with that consumer backend."""
    servers = []
    defaults = {}
    if "backend" in request.fixturenames:
        defaults["consumer_backend"] = request.getfixturevalue("backend")

    def make(port: int = 0, **overrides) -> InProcessServer:
        cfg = Config(bootstrap_servers=cluster.bootstrap, kafka=cluster.props,
                     poll_timeout_ms=200, ping_interval_s=5, status_interval_s=1,
                     request_timeout_ms=3000, feed_linger_s=0.5, **OPEN_ACCESS)
        server = InProcessServer(cfg.replace(**{**defaults, **overrides}), port)
        server.thread.start()
        servers.append(server)
        return server

    yield make
    close_all()  # before the servers: werkzeug's request threads drain until the client closes
    for s in servers:
        s.stop()


@pytest.fixture
def server(make_server_) -> InProcessServer:
    return make_server_()


@pytest.fixture
def nginx_stack(cluster, tmp_path) -> Iterator[tuple[Nginx, list[ServerProcess]]]:
    """A real nginx running conf/nginx.conf in front of two ``kafkatail serve`` instances."""
    if not shutil.which("nginx"):
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed; .ci/run installs it")
        pytest.skip("nginx is not installed (apt-get install nginx)")
    servers = [ServerProcess(cluster.bootstrap, "gthread", proxy_hops=1, ping_interval_s=NGINX_PING_S,
                             poll_timeout_ms=250) for _ in range(2)]
    nginx = Nginx(tmp_path, [s.port for s in servers])
    yield nginx, servers
    nginx.stop()
    for s in servers:
        s.stop()


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


from kafkatail.testing.registry import (ExternalRegistry, RegistryServer,  # noqa: E402
                                        registry_for_test, session_registry)


_REGISTRY = pytest.StashKey[str]()


@pytest.fixture(scope="session")
def real_registry(request) -> Iterator[tuple[str, str] | None]:
    """The real registry KAFKATAIL_TEST_SCHEMA_REGISTRY names for the session (``apicurio``: one
    started here, as the session's Apache Kafka is), or None."""
    yield from session_registry(lambda text: request.config.stash.__setitem__(_REGISTRY, text))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    """Which real registry the schema tests ran against, and what its log said went wrong."""
    said = config.stash.get(_REGISTRY, None)
    if said:
        terminalreporter.write_sep("-", "schema_registry")
        terminalreporter.write_line(said)


@pytest.fixture
def schema_registry(real_registry) -> Iterator[RegistryServer | ExternalRegistry]:
    """A Confluent-compatible schema registry for one test (``.url``, ``.register(...)``): the
    in-process test server, or the session's real one behind a proxy of the test's own
    (kafkatail/testing/registry.py)."""
    yield from registry_for_test(real_registry)
