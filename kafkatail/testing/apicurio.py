"""Apicurio Registry for tests: a real Confluent-compatible Schema Registry, fetched from Maven
Central and started as a child JVM (issue #24).

``Apicurio().start()`` resolves the release once with Maven into the cache Apache Kafka's
launcher uses (later starts need no network), then starts it on free ports of ``127.0.0.1``
with a bounded heap and in-memory storage (H2, empty at every start). Its Confluent-compatible
API is at ``url`` (``.../apis/ccompat/v7``), what Confluent's clients and kafkatail's
``schema_registry_url`` take.

Which release depends on the Java found: 3.3.3 needs Java 21 or newer (JAVA_HOME, the ``java``
on PATH, then each JDK in ``/usr/lib/jvm``); without one, 3.0.9 runs on Java 17. Both are the
finished Quarkus application Apicurio publishes (``apicurio-registry-app:<v>:tar.gz:all``), so
nothing is built here. ``stop()`` ends the JVM (SIGTERM, SIGKILL after a deadline) and removes
its files; so does dropping the object or leaving the interpreter (``weakref.finalize``), and if
the owner is killed outright the kernel kills the JVM (``PR_SET_PDEATHSIG``).

``python -m kafkatail.testing.apicurio`` starts one, prints its URL and waits for Ctrl-C.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from dataclasses import dataclass
from pathlib import Path

from ..broker import BrokerError, die_with_parent, free_port, terminate
from .apache_kafka import cache_root, java_binary

RELEASES = {"3.3.3": 21, "3.0.9": 17}
"""The releases the launcher runs, preferred first, with the oldest Java each runs on: 3.3.3's
classes are Java 21's; 3.0.9 is the 3.0 release whose finished app Maven Central has."""
CCOMPAT_PATH = "/apis/ccompat/v7"
_ARTIFACT = "io.apicurio:apicurio-registry-app"
JVM_DIRS = Path("/usr/lib/jvm")
_FOLDER_PREFIX = "kafkatail-apicurio-"
_OWNER_FILE = "owner.pid"
_STARTED = re.compile(r"apicurio-registry-app (\S+) on JVM .* started in")

# --- Java ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Java:
    """A ``java`` binary and its feature release (17, 21, 25...)."""

    path: str
    major: int


def java_major(java: str) -> int:
    """The feature release of a ``java``: from its JDK's ``release`` file, else ``-version``."""
    release = Path(os.path.realpath(java)).parent.parent / "release"
    try:
        text = release.read_text()
    except OSError:
        done = subprocess.run([java, "-version"], stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=30)
        text = done.stderr
    found = re.search(r'version\s*=?\s*"(\d+)(?:\.(\d+))?', text, re.IGNORECASE)
    if found is None:
        return 0
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def installed_javas() -> list[Java]:
    """The default ``java`` (JAVA_HOME, else PATH) first, then each JDK in ``/usr/lib/jvm``,
    newest first; each binary once."""
    candidates = []
    try:
        candidates.append(java_binary())
    except BrokerError:
        pass
    homes = sorted(JVM_DIRS.iterdir()) if JVM_DIRS.is_dir() else []
    candidates += [str(home / "bin" / "java") for home in homes]
    seen: set[str] = set()
    found: list[Java] = []
    for java in candidates:
        real = os.path.realpath(java)
        if real in seen or not os.access(real, os.X_OK):
            continue
        seen.add(real)
        found.append(Java(java, java_major(java)))
    return found[:1] + sorted(found[1:], key=lambda j: j.major, reverse=True)


def choose(javas: list[Java], version: str | None = None) -> tuple[str, Java]:
    """The release to run and the Java to run it on: the first of ``RELEASES`` (or ``version``)
    that one of ``javas`` can run, on the first Java that can."""
    for release, needs in RELEASES.items():
        if version not in (None, release):
            continue
        for java in javas:
            if java.major >= needs:
                return release, java
    shown = ", ".join(f"{j.path} (Java {j.major})" for j in javas) or "none"
    wanted = (f"Apicurio Registry {version} needs Java {RELEASES[version]}+" if version
              else f"Apicurio Registry needs Java {min(RELEASES.values())}+")
    raise BrokerError(f"{wanted}; Java found: {shown}")


# --- the release ---------------------------------------------------------------------------------


def launch_jar(app: Path) -> Path | None:
    """The jar that starts an unpacked release: ``quarkus-run.jar`` (3.1 and later, fast-jar) or
    ``apicurio-registry-app-<v>-runner.jar`` (3.0, legacy-jar); None when there is none."""
    if (app / "quarkus-run.jar").is_file():
        return app / "quarkus-run.jar"
    return next(iter(sorted(app.glob("*-runner.jar"))), None)


def fetch_apicurio(version: str, timeout: float = 900.0) -> Path:
    """The folder of the unpacked release, fetched with Maven on first use and cached after.

    Maven copies the tarball (``dependency:copy``: it needs no project and, unlike the plugin's
    3.x ``unpack``, not the POM of the artifact's parent, which Maven Central did not serve for
    3.0.9 when this was written); Python unpacks it (Maven's unpacker truncates PAX long names)
    beside its final name, and the folder is renamed when complete, so an unpacking cut short is
    never taken for a release.
    """
    app = cache_root() / f"apicurio-registry-{version}"
    if launch_jar(app) is not None:
        return app
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(f"Apicurio Registry {version} is not cached in {app} and there is no "
                          "`mvn` to fetch it: install Maven")
    app.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fetch-apicurio-", dir=app.parent))
    try:
        try:
            done = subprocess.run(
                [mvn, "-B", "-q", "dependency:copy", f"-Dartifact={_ARTIFACT}:{version}:tar.gz:all",
                 f"-DoutputDirectory={work}"], cwd=work, stdin=subprocess.DEVNULL,
                capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BrokerError(f"fetching Apicurio Registry {version} with Maven took over "
                              f"{timeout:.0f} s") from None
        tarball = work / f"apicurio-registry-app-{version}-all.tar.gz"
        if done.returncode != 0 or not tarball.is_file():
            out = (done.stdout + done.stderr).strip().splitlines()[-15:]
            raise BrokerError(f"Maven could not fetch Apicurio Registry {version} "
                              f"(exit {done.returncode}):\n" + "\n".join(out))
        with tarfile.open(tarball) as archive:
            archive.extractall(work / "app", filter="data")
        if launch_jar(work / "app") is None:
            raise BrokerError(f"{tarball.name} holds no quarkus-run.jar nor *-runner.jar")
        try:
            (work / "app").rename(app)
        except OSError:
            if launch_jar(app) is None:  # else another process fetched it meanwhile
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return app


def sweep_orphans() -> None:
    """Remove the folders of registries whose owner died without stopping them (killed
    outright: the kernel killed their JVM, but no ``finally`` removed their files)."""
    import psutil
    for folder in Path(tempfile.gettempdir()).glob(_FOLDER_PREFIX + "*"):
        try:
            owner = int((folder / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or still being made
        if not psutil.pid_exists(owner):
            shutil.rmtree(folder, ignore_errors=True)


def _release(proc: subprocess.Popen | None, folder: Path | None, timeout: float = 15.0) -> None:
    """End the JVM and remove its folder (what ``stop()`` and the finalizer do)."""
    terminate(proc, timeout)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


# --- the registry --------------------------------------------------------------------------------


class Apicurio:
    """One Apicurio Registry, in memory, on free ports of ``host``.

    ``version`` and ``java`` are chosen by :func:`choose` unless given. Once started: ``url``
    (the Confluent-compatible API), ``version`` (as the registry logged it, else as asked),
    ``java``, ``fetch_seconds`` (finding or fetching the release) and ``start_seconds`` (launch
    to ready, or to the end of a ``wait_ready()`` called later). ``spawn()`` and
    ``wait_ready()`` split ``start()`` for an owner that has something to do while the JVM
    boots.
    """

    def __init__(self, host: str = "127.0.0.1", heap_mb: int = 256, version: str | None = None,
                 java: Java | None = None) -> None:
        self.host = host
        self.heap_mb = heap_mb
        self.requested_version = version
        self.version = ""
        self.java = java
        self.fetch_seconds = 0.0
        self.start_seconds = 0.0
        self.port = 0
        self.management_port = 0
        self.folder: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._launched = 0.0
        self._last_log = ""
        self._finalizer: weakref.finalize | None = None

    @property
    def url(self) -> str:
        """The Confluent-compatible API: ``http://127.0.0.1:<port>/apis/ccompat/v7``."""
        if not self.port:
            raise RuntimeError("the registry has not been started")
        return f"http://{self.host}:{self.port}{CCOMPAT_PATH}"

    @property
    def name(self) -> str:
        java = f" on Java {self.java.major}" if self.java else ""
        return f"Apicurio Registry {self.version or self.requested_version or ''}{java}"

    @property
    def log_path(self) -> str:
        return str(self.folder / "registry.log") if self.folder else ""

    # --- life ------------------------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> "Apicurio":
        """Fetch (once), launch, and wait until the API answers, in ``timeout`` seconds after
        the fetch."""
        return self.spawn().wait_ready(timeout)

    def spawn(self) -> "Apicurio":
        """Fetch the release if it is not cached and launch the JVM, without waiting for it."""
        began = time.monotonic()
        if self.java is None:
            self.requested_version, self.java = choose(installed_javas(), self.requested_version)
        elif self.requested_version is None:
            self.requested_version = choose([self.java])[0]
        app = fetch_apicurio(self.requested_version)
        self.fetch_seconds = time.monotonic() - began
        sweep_orphans()
        self.folder = Path(tempfile.mkdtemp(prefix=_FOLDER_PREFIX))
        try:
            (self.folder / _OWNER_FILE).write_text(str(os.getpid()))
            (self.folder / "tmp").mkdir()
            self.port, self.management_port = free_port(self.host), free_port(self.host)
            with open(self.log_path, "ab") as log:
                self._launched = time.monotonic()
                self.proc = subprocess.Popen(
                    self._command(app), cwd=self.folder, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
        except BaseException:
            _release(self.proc, self.folder)
            self.proc = self.folder = None
            raise
        self._finalizer = weakref.finalize(self, _release, self.proc, self.folder)
        return self

    def _command(self, app: Path) -> list[str]:
        """The JVM's command line: heap, temporary files in the folder, loopback ports."""
        props = {
            "java.io.tmpdir": self.folder / "tmp",
            "quarkus.http.host": self.host, "quarkus.http.port": self.port,
            "quarkus.management.host": self.host, "quarkus.management.port": self.management_port,
        }
        return [self.java.path, f"-Xmx{self.heap_mb}m", "-XX:+UseSerialGC",
                "-Djava.awt.headless=true", *(f"-D{k}={v}" for k, v in props.items()),
                "-jar", str(launch_jar(app))]

    def wait_ready(self, timeout: float = 90.0) -> "Apicurio":
        """Wait until the API lists subjects (HTTP 200), the JVM exits, or ``timeout`` passes;
        polls with backoff. Stops the JVM when it does not get ready."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        try:
            while not self._answers():
                if self.proc is None or self.proc.poll() is not None:
                    code = None if self.proc is None else self.proc.returncode
                    raise BrokerError(f"{self.name} exited with {code} while starting: "
                                      f"{self.log_tail(30)}")
                if time.monotonic() > deadline:
                    raise BrokerError(f"{self.name} did not answer {self.url}/subjects within "
                                      f"{timeout:.0f} s: {self.log_tail(30)}")
                time.sleep(delay)
                delay = min(delay * 2, 0.25)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - self._launched
        found = _STARTED.search(self._log_text())  # may lag the first answer by a moment
        self.version = found.group(1) if found else self.requested_version
        return self

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/subjects", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout: float = 15.0) -> None:
        """End the JVM (SIGTERM; SIGKILL after ``timeout`` seconds), reap it and remove its
        files; the log stays readable through ``log_tail``."""
        found = self._finalizer.detach() if self._finalizer is not None else None
        if found is not None:  # (self, _release, (proc, folder), {})
            proc, folder = found[2]
            terminate(proc, timeout)
            self._last_log = self._log_text()  # with the shutdown, before the folder goes
            shutil.rmtree(folder, ignore_errors=True)
        self._finalizer = self.proc = self.folder = None

    def _log_text(self) -> str:
        """The registry's log; once stopped, what it held when its folder was removed."""
        if self.folder is None:
            return self._last_log
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self._log_text().splitlines()[-lines:])

    def __enter__(self) -> "Apicurio":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> int:
    """Start a registry, print its URL and version, stop it on Ctrl-C or SIGTERM."""
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    registry = Apicurio()
    try:
        print(f"starting Apicurio Registry (fetched with Maven into {cache_root()} once)...",
              flush=True)
        registry.start()
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # start() has stopped what it had started
        return 130
    try:
        print(f"{registry.name} ({registry.java.path}) ready in {registry.start_seconds:.1f} s "
              f"(pid {registry.proc.pid}, fetch {registry.fetch_seconds:.1f} s)")
        print(f"  Confluent-compatible API  {registry.url}")
        print("Ctrl-C stops it and removes its files.", flush=True)
        while not stop and registry.proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        registry.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
