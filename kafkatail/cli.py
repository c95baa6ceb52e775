"""The ``kafkatail`` command: ``demo`` (everything on this machine), ``serve`` (production),
``config``, ``tail`` (a topic in the terminal) and ``leakcheck`` (a server's threads, from
outside)."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from typing import Any, Sequence

from . import __version__
from .config import FIELDS, Config, ConfigError, check_backend, effective_toml, load


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="PATH", help="TOML config file (see conf/kafkatail.toml)")
    p.add_argument("--bootstrap-servers", metavar="HOST:PORT[,...]")
    p.add_argument("--bind", metavar="HOST:PORT")
    p.add_argument("--workers", metavar="N")
    p.add_argument("--threads", metavar="N")
    p.add_argument("--worker-class", metavar="gthread|gevent")
    p.add_argument("--log-level", metavar="LEVEL")
    p.add_argument("--kafka-properties", metavar="FILE",
                   help="Kafka client properties file (Java syntax: security.protocol, sasl.*, "
                        "ssl.*); see kafkatail config --properties")
    p.add_argument("-X", dest="properties", action="append", default=[], metavar="KEY=VALUE",
                   help="one Kafka client property, over the file's (repeatable), as kcat -X")


def _config(args: argparse.Namespace, **extra: object) -> Config:
    overrides = {f.name: getattr(args, f.name, None) for f in FIELDS}
    overrides.update(extra)
    return load(args.config, overrides=overrides, properties=args.properties)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kafkatail", description="Live-tail Kafka topics in the browser over WebSocket.")
    parser.add_argument("--version", action="version", version=f"kafkatail {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo", help="embedded broker + sample traffic + server; prints the URL",
        description="Sample traffic and a server, on an embedded broker; given a cluster "
                    "(--bootstrap-servers, --kafka-properties or -X), the demo topics and their "
                    "traffic go there instead, with the same client properties.")
    _add_config_flags(demo)
    demo.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080; 0 = any free)")
    serve = sub.add_parser("serve", help="serve tails from a configured Kafka cluster (gunicorn)")
    _add_config_flags(serve)
    show = sub.add_parser("config", help="print the effective configuration (secrets as ****)",
                          description="Print the configuration the other commands would run "
                                      "with, from all its sources, as TOML; secret values show "
                                      "as ****. Exit 2 on a config error.")
    _add_config_flags(show)
    show.add_argument("--properties", dest="list_properties", action="store_true",
                      help="list the Kafka client properties kafkatail takes instead")
    tail = sub.add_parser(
        "tail", help="tail a topic in the terminal, through a kafkatail server",
        description="Print a topic's records through a kafkatail server, kcat style; reconnects "
                    "and resumes without gaps or duplicates.")
    tail.add_argument("topic")
    tail.add_argument("--url", default=os.environ.get("KAFKATAIL_URL", "ws://127.0.0.1:8080"),
                      help="server base URL (default $KAFKATAIL_URL or ws://127.0.0.1:8080)")
    tail.add_argument("-o", "--from", dest="start", default="latest",
                      help="latest, earliest, -N, ts:<ms|ISO-8601>, offsets:<p>:<o>,...")
    tail.add_argument("-p", "--partitions", help="comma list of partitions (default all)")
    tail.add_argument("--filter", help="case-insensitive substring on key or value")
    tail.add_argument("--regex", help="Python regex on key or value")
    tail.add_argument("--where", help='CEL over the record, e.g. \'value.user.id == 42 && '
                                      'headers["trace-id"] == "abc"\'')
    tail.add_argument("--until", help="end at ts:<ms|ISO-8601> or offsets:<p>:<o>,... (exit 0)")
    tail.add_argument("-c", "--max", type=int, help="exit after this many records")
    tail.add_argument("--value-format", default="auto", choices=["auto", "text", "json", "base64"])
    out = tail.add_mutually_exclusive_group()
    out.add_argument("-f", "--format", dest="fmt", default="%s\\n",
                     help="kcat-style: %%t topic %%p partition %%o offset %%T timestamp %%k key "
                          "%%s value %%h headers %%S size, \\n \\t (default '%%s\\n')")
    out.add_argument("--json", action="store_true", help="one JSON record per line")
    tail.add_argument("-q", "--quiet", action="store_true", help="no status lines on stderr")
    tail.add_argument("--timeout", type=float, default=10.0, metavar="S",
                      help="seconds to connect and finish the WebSocket handshake, per try "
                           "(default 10)")
    tail.add_argument("--token-file", metavar="PATH",
                      help="read the bearer token from this file (default: $KAFKATAIL_TOKEN); "
                           "sent as a header, never in the URL or on the command line")
    # Listed here for --help only: main() hands every argument after it to leakcheck's parser.
    sub.add_parser("leakcheck", add_help=False,
                   help="check a running server for leaked threads and fds, or profile it "
                        "(kafkatail leakcheck --help)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["leakcheck"]:
        return leakcheck(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            from .server import serve
            serve(_config(args))
            return 0
        if args.command == "tail":
            return tail(args)
        if args.command == "config":
            if args.list_properties:
                print(_properties_help())
                return 0
            config = _config(args)
            check_backend(config)
            print(effective_toml(config))
            return 0
        return demo(args)
    except ConfigError as exc:
        print(f"kafkatail: config error: {exc}", file=sys.stderr)
        return 2


class _DemoFailed(Exception):
    """A demo step that failed: its message is printed after ``kafkatail: ``, exit 1."""


def demo(args: argparse.Namespace) -> int:
    """Broker, topics, traffic and a ``kafkatail serve`` child; Ctrl-C stops all three."""
    from .broker import EmbeddedBroker, free_port
    from .demo_traffic import TrafficGenerator

    port = args.port or free_port()
    if not args.bind and not _port_free(port):
        print(f"kafkatail: port {port} is busy; try --port 0", file=sys.stderr)
        return 2
    bind = args.bind or f"127.0.0.1:{port}"
    config = _config(args, bind=bind)  # fail on a bad config before starting anything
    stop = threading.Event()
    # Installed explicitly: a shell that starts us in the background leaves SIGINT ignored.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    # Given a cluster (its address or client properties), the demo's topics and traffic go
    # there, with the same properties as the server's; else to an embedded broker.
    external = bool(args.bootstrap_servers or args.kafka_properties or args.properties)
    broker = None if external else EmbeddedBroker()
    traffic = None
    server = None
    try:
        bootstrap, security = _demo_cluster(config, broker)
        traffic = TrafficGenerator(bootstrap, security=security)
        traffic.start()
        server = _demo_server(args, config, bootstrap, bind)
        return _demo_run(server, bind, bootstrap, stop)
    except _DemoFailed as exc:
        print(f"kafkatail: {exc}", file=sys.stderr)
        return 1
    finally:
        _demo_stop(server, traffic, broker)


def _demo_cluster(config: Config, broker: Any) -> tuple[str, dict]:
    """The demo's cluster, its topics created: the embedded ``broker`` started, or (None) the
    configured cluster; returns its bootstrap address and kafka-python security settings."""
    from kafka.errors import KafkaError

    from .broker import BrokerError
    from .demo_traffic import create_demo_topics

    security: dict = {}
    if broker is not None:
        try:
            broker.start()
        except BrokerError as exc:
            raise _DemoFailed(str(exc)) from None
        bootstrap = broker.bootstrap
    else:
        from .tail.clientconf import kafka_python
        bootstrap, security = config.bootstrap_servers, kafka_python(config)
    try:
        create_demo_topics(bootstrap, security=security)
    except KafkaError as exc:
        raise _DemoFailed(f"creating the demo topics on {bootstrap} failed: {exc}") from None
    return bootstrap, security


def _demo_server(args: argparse.Namespace, config: Config, bootstrap: str,
                 bind: str) -> subprocess.Popen:
    """``kafkatail serve`` as a child, with the demo's cluster and the user's config flags."""
    cmd = [sys.executable, "-m", "kafkatail", "serve", "--bootstrap-servers", bootstrap,
           "--bind", bind]
    if args.config:
        cmd += ["--config", args.config]
    if args.kafka_properties:
        cmd += ["--kafka-properties", args.kafka_properties]
    for item in args.properties:
        cmd += ["-X", item]
    env = dict(os.environ)
    if not config.anonymous_topics:  # the demo is for looking around: no token unless configured
        env["KAFKATAIL_ANONYMOUS_TOPICS"] = "**"
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env=env)


def _demo_run(server: subprocess.Popen, bind: str, bootstrap: str,
              stop: threading.Event) -> int:
    """Wait for the server to listen, print the URL, then run until ``stop`` (0) or until the
    server exits (1)."""
    from .broker import wait_for_port

    host, _, hport = bind.rpartition(":")
    if not wait_for_port(host, int(hport), 30) or server.poll() is not None:
        raise _DemoFailed("the server did not start")
    print(f"\nkafkatail demo is running: http://{host}:{hport}/?topic=demo.orders&from=-50\n"
          f"broker {bootstrap}; topics demo.app-logs demo.orders demo.sensor-bin "
          f"demo.audit\nPress Ctrl-C to stop.", flush=True)
    while not stop.wait(0.5):
        if server.poll() is not None:
            raise _DemoFailed("the server exited")
    return 0


def _demo_stop(server: subprocess.Popen | None, traffic: Any, broker: Any) -> None:
    """Stop what the demo started, the server first (SIGTERM, then SIGKILL after 15 s)."""
    if server is not None and server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if traffic is not None:
        traffic.stop()
    if broker is not None:
        broker.stop()


def leakcheck(argv: list[str]) -> int:
    """``kafkatail leakcheck --pid PID [--children] [--url BASE | --snapshot FILE] ...``: the
    leak check (or ``--profile N``) of ``kafkatail.leakcheck``, with its own options."""
    from .leakcheck import main as leakcheck_main  # psutil and the samplers: only when asked

    return leakcheck_main(argv)


def _properties_help() -> str:
    from .clientprops import PROPERTIES, SECRETS
    width = max(map(len, PROPERTIES))
    return "\n".join(f"{name:<{width}}  {text}{' (secret)' if name in SECRETS else ''}"
                     for name, text in PROPERTIES.items())


def tail(args: argparse.Namespace) -> int:
    """``kafkatail tail``: records to stdout, markers to stderr, Ctrl-C ends it cleanly."""
    from .client import Formatter, TailClient, TailEnded

    client = TailClient(args.url, args.topic, start=args.start, partitions=args.partitions,
                        filter=args.filter, regex=args.regex, where=args.where,
                        until=args.until, max_records=args.max,
                        format=args.value_format, token=_token(args.token_file),
                        timeout=args.timeout)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: client.stop())
    render = Formatter(args.topic, None if args.json else
                       args.fmt.replace("\\n", "\n").replace("\\t", "\t"))
    out = sys.stdout
    try:
        for event in client.events():
            if event.kind == "record":
                out.write(render(event.record))
                if client.remaining == 0:
                    out.flush()
                    return 0
            elif not args.quiet and event.kind in (
                    "reconnected", "disconnected", "retry", "dropped", "status"):
                detail = {k: v for k, v in event.detail.items() if k != "type"}
                print(f"% {event.kind} {json.dumps(detail)}", file=sys.stderr, flush=True)
            if event.kind == "batch-end":
                out.flush()
    except TailEnded as end:
        out.flush()
        if end.code == 1000:
            return 0
        print(f"kafkatail: tail ended: {end}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    finally:
        out.flush()
    return 0


def _token(path: str | None) -> str | None:
    """The bearer token for ``kafkatail tail``: a file, else $KAFKATAIL_TOKEN, else none."""
    if path:
        with open(path) as fh:
            return fh.read().strip()
    return os.environ.get("KAFKATAIL_TOKEN") or None


def _port_free(port: int) -> bool:
    import socket
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


if __name__ == "__main__":
    raise SystemExit(main())
