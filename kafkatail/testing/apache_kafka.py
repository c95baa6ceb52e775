"""Apache Kafka for tests: a real 4.x broker fetched from Maven Central, started as a child JVM.

``ApacheKafka().start()`` resolves the pinned release once into a cache (later starts need no
network), formats KRaft storage in a temporary folder and starts one combined broker and
controller with a bounded heap on free ports, with four client listeners side by side:

=================  ============================================================================
``PLAINTEXT``      no authentication (principal ``User:ANONYMOUS``, a super user)
``SASL_PLAINTEXT`` PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and (unsecured, test-only) OAUTHBEARER
``SSL``            server certificate from a test CA; a client certificate is asked for, so
                   mutual TLS gives the principal ``User:CN=kt-client``, none gives ANONYMOUS
``SASL_SSL``       the SASL mechanisms above, over TLS
=================  ============================================================================

Users (PLAIN and both SCRAMs) get fresh random passwords at every start: ``admin`` (a super
user), ``alice`` and ``bob``. The StandardAuthorizer is on, and a topic without ACLs is open to
everyone, so tests can restrict one topic to one principal. ``stop()`` ends the JVM and removes
every file; if the owner dies without stopping it, the kernel kills the JVM (``PR_SET_PDEATHSIG``).

``python -m kafkatail.testing.apache_kafka`` (``make kafka``) starts one, prints how to reach it
and waits for Ctrl-C.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..broker import BrokerError, die_with_parent, free_port, terminate, wait_for_port

KAFKA_VERSION = os.environ.get("KAFKATAIL_KAFKA_VERSION", "4.4.0")
"""The pinned release. 4.4.0 was the newest to resolve with all its dependencies (2026-12)."""

# Kafka 4.x ships log4j2 behind the slf4j 1.x API; this is the binding its own distribution uses.
_LOG4J_VERSION = "2.24.3"
USERS = ("admin", "alice", "bob")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL")


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kafkatail"


_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>kafkatail.testing</groupId><artifactId>apache-kafka</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version></dependency>
  </dependencies>
</project>
"""


def fetch_kafka(version: str = KAFKA_VERSION, timeout: float = 600.0) -> Path:
    """The folder of the release's jars, resolved with Maven on first use and cached after.

    The folder is filled beside its final name and renamed when complete, so a fetch cut short
    is never taken for a release.
    """
    libs = cache_root() / f"kafka-{version}" / "libs"
    if libs.is_dir():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(f"Apache Kafka {version} is not cached in {libs.parent} and there is no "
                          "`mvn` to fetch it: install Maven (and a JDK 17+)")
    libs.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fetch-", dir=libs.parent))
    try:
        (work / "pom.xml").write_text(_POM.format(kafka=version, log4j=_LOG4J_VERSION))
        try:
            done = subprocess.run(
                [mvn, "-B", "-q", "-f", str(work / "pom.xml"), "dependency:copy-dependencies",
                 f"-DoutputDirectory={work / 'libs'}"],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BrokerError(f"fetching Apache Kafka {version} with Maven took over "
                              f"{timeout:.0f} s") from None
        if done.returncode != 0 or not any((work / "libs").glob(f"kafka_2.13-{version}.jar")):
            out = (done.stdout + done.stderr).strip().splitlines()[-15:]
            raise BrokerError(f"Maven could not fetch Apache Kafka {version} "
                              f"(exit {done.returncode}):\n" + "\n".join(out))
        try:
            (work / "libs").rename(libs)
        except OSError:
            if not libs.is_dir():  # else another process fetched it meanwhile
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return libs


_FOLDER_PREFIX = "kafkatail-kafka-"
_OWNER_FILE = "owner.pid"


def sweep_orphans() -> None:
    """Remove the folders of brokers whose owner died without stopping them (killed outright:
    the kernel killed their JVM, but no ``finally`` removed their files)."""
    import psutil
    for folder in Path(tempfile.gettempdir()).glob(_FOLDER_PREFIX + "*"):
        try:
            owner = int((folder / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or still being made
        if not psutil.pid_exists(owner):
            shutil.rmtree(folder, ignore_errors=True)


def java_binary() -> str:
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    if not java or not os.access(java, os.X_OK):
        raise BrokerError("Apache Kafka needs Java 17 or newer: no `java` on PATH or in JAVA_HOME")
    return java


@dataclass(frozen=True)
class Listener:
    protocol: str
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


_LOG4J2 = """status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.out.ref = out
logger.appinfo.name = org.apache.kafka.common.utils.internals.AppInfoParser
logger.appinfo.level = info
logger.appinfo3.name = org.apache.kafka.common.utils.AppInfoParser
logger.appinfo3.level = info
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = info
"""


class ApacheKafka:
    """One Apache Kafka broker (KRaft, combined broker and controller) in a temporary folder.

    Attributes once started: ``listeners`` (protocol -> :class:`Listener`), ``passwords``
    (user -> password, the same for PLAIN and SCRAM), ``pki`` (the test CA and the server and
    client certificates), ``version`` (as the broker logged it), ``start_seconds`` (format to
    ready) and ``fetch_seconds`` (finding or fetching the jars).
    """

    def __init__(self, host: str = "127.0.0.1", heap_mb: int = 512,
                 version: str = KAFKA_VERSION) -> None:
        self.host = host
        self.heap_mb = heap_mb
        self.requested_version = version
        self.version = ""
        self.start_seconds = 0.0
        self.fetch_seconds = 0.0
        self.folder: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.listeners: dict[str, Listener] = {}
        self.passwords: dict[str, str] = {}
        self.pki = None
        self._controller_port = 0
        self._last_log = ""

    # --- where it is -------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """The PLAINTEXT listener: what a test without security connects to."""
        return self.listeners["PLAINTEXT"].address

    @property
    def users_file(self) -> Path:
        return self.folder / "users.properties"

    @property
    def log_path(self) -> str:
        return str(self.folder / "broker.log") if self.folder else ""

    @property
    def name(self) -> str:
        return f"Apache Kafka {self.version or self.requested_version}"

    def properties(self, protocol: str, mechanism: str | None = None, user: str = "admin",
                   client_cert: bool = False) -> dict[str, str]:
        """Kafka client properties (standard names, as kafkatail's ``[kafka]`` table takes
        them) for one listener, SASL mechanism, user and client certificate. OAUTHBEARER gets
        an unsecured token naming ``user``."""
        props = {"bootstrap.servers": self.listeners[protocol].address,
                 "security.protocol": protocol}
        if protocol.endswith("SSL"):
            props["ssl.ca.location"] = str(self.pki.ca)
            if client_cert:
                props["ssl.certificate.location"] = str(self.pki.client_cert)
                props["ssl.key.location"] = str(self.pki.client_key)
        if protocol.startswith("SASL"):
            props["sasl.mechanism"] = mechanism or "PLAIN"
            if props["sasl.mechanism"] == "OAUTHBEARER":
                props["sasl.oauthbearer.config"] = f"principal={user}"
            else:
                props["sasl.username"] = user
                props["sasl.password"] = self.passwords[user]
        return props

    def client_config(self, protocol: str, mechanism: str | None = None, user: str = "admin",
                      client_cert: bool = False) -> dict:
        """kafka-python settings for one listener (and SASL mechanism, user, client cert), as
        kafkatail's own clients would be made from ``properties``."""
        from ..clientprops import ClientProps
        from ..config import Config
        from ..tail.clientconf import kafka_python
        props = self.properties(protocol, mechanism, user, client_cert)
        config = Config(kafka=ClientProps(props), bootstrap_servers=props["bootstrap.servers"])
        return {"bootstrap_servers": config.bootstrap_servers, **kafka_python(config)}

    # --- life --------------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> "ApacheKafka":
        began = time.monotonic()
        libs = fetch_kafka(self.requested_version)
        self.fetch_seconds = time.monotonic() - began
        began += self.fetch_seconds
        java = java_binary()
        from .certs import make_pki
        sweep_orphans()
        self.folder = Path(tempfile.mkdtemp(prefix=_FOLDER_PREFIX))
        try:
            (self.folder / _OWNER_FILE).write_text(str(os.getpid()))
            self.pki = make_pki(self.folder / "tls")
            self.passwords = {u: secrets.token_urlsafe(12) for u in USERS}
            ports = {p: free_port(self.host) for p in PROTOCOLS}
            self.listeners = {p: Listener(p, self.host, port) for p, port in ports.items()}
            self._controller_port = free_port(self.host)
            self.users_file.write_text("".join(f"{u}={p}\n" for u, p in self.passwords.items()))
            self.users_file.chmod(0o600)
            props = self.folder / "server.properties"
            props.write_text(self._server_properties())
            (self.folder / "log4j2.properties").write_text(
                _LOG4J2.format(level=os.environ.get("KAFKATAIL_KAFKA_LOG_LEVEL", "warn")))
            classpath = os.path.join(str(libs), "*")
            self._format(java, classpath, props, timeout)
            self._launch(java, classpath, props)
            self._wait_ready(began + timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def _jvm(self, java: str, classpath: str, heap_mb: int) -> list[str]:
        return [java, f"-Xmx{heap_mb}m", f"-Xms{min(heap_mb, 128)}m", "-XX:+UseG1GC",
                "-XX:MaxMetaspaceSize=192m", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.folder / 'log4j2.properties'}",
                "-cp", classpath]

    def _format(self, java: str, classpath: str, props: Path, timeout: float) -> None:
        scram = []
        for user, password in self.passwords.items():
            for mech in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                scram += ["--add-scram", f"{mech}=[name={user},password={password}]"]
        cmd = self._jvm(java, classpath, 256) + [
            "kafka.tools.StorageTool", "format", "--standalone", "-t", _cluster_id(),
            "-c", str(props), *scram]
        try:
            done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=timeout, preexec_fn=die_with_parent)
        except subprocess.TimeoutExpired:
            raise BrokerError(f"formatting Kafka storage took over {timeout:.0f} s") from None
        if done.returncode != 0:
            out = _redact((done.stdout + done.stderr).strip(), self.passwords.values())
            raise BrokerError(f"kafka-storage format failed (exit {done.returncode}): "
                              f"{out[-2000:]}")

    def _launch(self, java: str, classpath: str, props: Path) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self._jvm(java, classpath, self.heap_mb) + ["kafka.Kafka", str(props)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent)

    def _wait_ready(self, deadline: float) -> None:
        """Ready once the broker logs it started and answers a metadata request."""
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError
        started = re.compile(r"Kafka Server started|\[KafkaRaftServer nodeId=\d+\] Kafka Server")
        version = re.compile(r"Kafka version: (\S+)")
        delay = 0.05
        while True:
            if self.proc.poll() is not None:
                raise BrokerError(f"Apache Kafka exited with {self.proc.returncode} while "
                                  f"starting: {self.log_tail(30)}")
            text = self._log_text()
            if not self.version and (m := version.search(text)):
                self.version = m.group(1)
            if started.search(text):
                break
            if time.monotonic() > deadline:
                raise BrokerError(f"Apache Kafka did not start in time: {self.log_tail(30)}")
            time.sleep(delay)
            delay = min(delay * 2, 0.25)
        if not wait_for_port(self.host, self.listeners["PLAINTEXT"].port,
                             max(0.5, deadline - time.monotonic())):
            raise BrokerError(f"Apache Kafka logged its start but {self.bootstrap} refuses")
        try:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="kt-kafka-ready",
                                     request_timeout_ms=int(max(1, deadline - time.monotonic())
                                                            * 1000))
            try:
                admin.list_topics()
            finally:
                admin.close()
        except KafkaError as exc:
            raise BrokerError(f"Apache Kafka does not answer metadata: {exc!r}") from None

    def stop(self, timeout: float = 15.0) -> None:
        """End the JVM (SIGTERM, a controlled shutdown; SIGKILL after ``timeout``), then remove
        every file it had."""
        proc, self.proc = self.proc, None
        terminate(proc, timeout)
        folder, self.folder = self.folder, None
        if folder is not None:
            self._last_log = self._log_text(folder)
            shutil.rmtree(folder, ignore_errors=True)

    def _log_text(self, folder: Path | None = None) -> str:
        """The broker's log; once stopped, what it held when its folder was removed."""
        folder = folder or self.folder
        if folder is None:
            return self._last_log
        try:
            return (folder / "broker.log").read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self._log_text().splitlines()[-lines:])

    def __enter__(self) -> "ApacheKafka":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- configuration -----------------------------------------------------------------------

    def _server_properties(self) -> str:
        h, listeners = self.host, self.listeners
        jaas_plain = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
                      + " ".join(f'user_{u}="{p}"' for u, p in self.passwords.items()) + ";")
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{h}:{self._controller_port}",
            "controller.listener.names": "CONTROLLER",
            "listeners": ",".join([f"{p}://{l.address}" for p, l in listeners.items()]
                                  + [f"CONTROLLER://{h}:{self._controller_port}"]),
            "advertised.listeners": ",".join(f"{p}://{l.address}" for p, l in listeners.items()),
            "listener.security.protocol.map": ",".join(
                [f"{p}:{p}" for p in PROTOCOLS] + ["CONTROLLER:PLAINTEXT"]),
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.folder / "data"),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Compaction tests roll and clean small segments within seconds, not minutes.
            "log.cleaner.backoff.ms": "250",
            "log.retention.check.interval.ms": "1000",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.pki.server_pem),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.pki.ca),
            "listener.name.ssl.ssl.client.auth": "requested",
            "sasl.enabled.mechanisms": ",".join(SASL_MECHANISMS),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": "User:ANONYMOUS;User:admin",
            "allow.everyone.if.no.acl.found": "true",
        }
        for listener in ("sasl_plaintext", "sasl_ssl"):
            base = f"listener.name.{listener}"
            props[f"{base}.plain.sasl.jaas.config"] = jaas_plain
            for mech in ("scram-sha-256", "scram-sha-512"):
                props[f"{base}.{mech}.sasl.jaas.config"] = (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;")
            props[f"{base}.oauthbearer.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;")
            props[f"{base}.oauthbearer.sasl.server.callback.handler.class"] = (
                "org.apache.kafka.common.security.oauthbearer.internals.unsecured."
                "OAuthBearerUnsecuredValidatorCallbackHandler")
        return "".join(f"{k}={_escape(v)}\n" for k, v in props.items())


def _escape(value: str) -> str:
    """A value as java.util.Properties reads it back (backslashes, and ``=``/``:`` are safe)."""
    return value.replace("\\", "\\\\")


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (22 characters),
    not starting with ``-`` (the storage tool would read it as an option)."""
    import base64
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _redact(text: str, secrets_: object) -> str:
    for s in secrets_:
        text = text.replace(s, "***")
    return text


def main(argv: list[str] | None = None) -> int:
    """``make kafka``: start a broker, print its listeners and users, stop it on Ctrl-C."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    fetched = (cache_root() / f"kafka-{KAFKA_VERSION}" / "libs").is_dir()
    print(f"starting Apache Kafka {KAFKA_VERSION} "
          f"({'cached in' if fetched else 'fetching it with Maven into'} {cache_root()})...",
          flush=True)
    broker = ApacheKafka()
    try:
        broker.start()
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # start() has stopped what it had started
        return 130
    try:
        print(f"{broker.name} ready in {broker.start_seconds:.1f} s (pid {broker.proc.pid})")
        for listener in broker.listeners.values():
            print(f"  {listener.protocol:<15} {listener.address}")
        print(f"  SASL mechanisms  {', '.join(SASL_MECHANISMS)} (OAUTHBEARER: unsecured tokens)")
        print(f"  users            {', '.join(USERS)} (passwords in {broker.users_file})")
        print(f"  CA               {broker.pki.ca}")
        print(f"  client cert/key  {broker.pki.client_cert} {broker.pki.client_key} "
              f"({broker.pki.client_dn})")
        print("Ctrl-C stops it and removes its files.", flush=True)
        while not stop and broker.proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
