#!/usr/bin/env python3
"""The README's flame graph, remade: ``kafkatail serve`` under demo load, profiled from inside.

    python scripts/flamegraph.py [--seconds 10] [--out flamegraph] [--png] [--worker-class gthread]

Starts the embedded broker (Tansu), the demo topics with a backlog (``--backlog`` records each on
demo.app-logs and demo.orders) and the demo traffic, one ``kafkatail serve`` (bench config: open
access), then 36 tails: 27 live (from the end, spread over the four demo topics) and 9 re-reading
demo.app-logs and demo.orders from earliest with regex and substring filters. Every
``--reopen`` seconds the earliest tails are closed and opened again, so some are always catching
up. Then ``scripts/leakcheck.py --profile SECONDS --url ... --out PREFIX`` takes the on-CPU
profile (``/debug/profile``, folded) and writes PREFIX.svg, PREFIX.folded and
PREFIX.speedscope.json; this prints its top functions and stacks, and the share per role and
thread group. ``--png`` also writes PREFIX.png, a screenshot of the SVG by headless Chromium
(``--chromium PATH``, default /usr/bin/chromium).

The README's docs/flamegraph.svg and .png are PREFIX.svg and PREFIX.png of a run with the
defaults.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchlib import Drain, Server, close_all, connect, raise_fd_limit, wait_until  # noqa: E402
from kafka import KafkaProducer  # noqa: E402

from kafkatail.broker import EmbeddedBroker  # noqa: E402
from kafkatail.demo_traffic import (AUDIT_TOPIC, LOGS_TOPIC, ORDERS_TOPIC,  # noqa: E402
                                    SENSOR_TOPIC, TrafficGenerator, create_demo_topics,
                                    make_log_line, make_order)
from kafkatail.ops.profiler import parse_folded  # noqa: E402
from kafkatail.ops.threads import thread_group  # noqa: E402

LIVE = [LOGS_TOPIC, ORDERS_TOPIC, SENSOR_TOPIC, AUDIT_TOPIC]
EARLIEST = [  # (topic, query): nine readers from the start, filtered
    (LOGS_TOPIC, {"regex": r"ERROR|WARN"}), (LOGS_TOPIC, {"filter": "checkout"}),
    (LOGS_TOPIC, {"regex": r"user-\d+7\b"}), (LOGS_TOPIC, {}), (LOGS_TOPIC, {"filter": "GET"}),
    (ORDERS_TOPIC, {"filter": "EUR"}), (ORDERS_TOPIC, {"regex": r'"total":\s*\d{3,}'}),
    (ORDERS_TOPIC, {}), (ORDERS_TOPIC, {"filter": "shipped"}),
]


def backlog(bootstrap: str, n: int) -> None:
    """n demo records each on the logs and orders topics, produced as fast as the broker takes."""
    import random

    rng = random.Random(12)
    p = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20, batch_size=1 << 18)
    try:
        now = time.time() - n
        for i in range(n):
            for topic, make in ((LOGS_TOPIC, make_log_line), (ORDERS_TOPIC, make_order)):
                key, value, headers = make(rng, now + i)
                p.send(topic, key=key, value=value, headers=headers)
        p.flush(120)
    finally:
        p.close(10)


class Rereaders(threading.Thread):
    """The nine earliest tails, closed and opened again every ``every`` seconds."""

    def __init__(self, server: Server, drain: Drain, every: float) -> None:
        super().__init__(name="flame-rereaders", daemon=True)
        self.server, self.drain, self.every = server, drain, every
        self.halt = threading.Event()
        self.sockets: list = []
        self.opened = 0

    def open_all(self) -> None:
        for topic, query in EARLIEST:
            q = urllib.parse.urlencode({"from": "earliest", **query})
            ws = connect(self.server.ws_url(f"/ws/tail/{topic}?{q}"))
            self.sockets.append(ws)
            self.drain.add(ws)
            self.opened += 1

    def run(self) -> None:
        while not self.halt.wait(self.every):
            old, self.sockets = self.sockets, []
            for ws in old:  # before the close: a new socket may get the same fd
                try:
                    self.drain._sel.unregister(ws.sock)
                except (KeyError, ValueError):
                    pass  # the drain saw it close
            close_all(old)
            self.open_all()

    def stop(self) -> None:
        self.halt.set()
        self.join(10)
        close_all(self.sockets)


def shares(folded: str) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """Total counts, counts per role, counts per role and thread group."""
    roles: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    total = 0
    for stack, n in parse_folded(folded):
        total += n
        roles[stack[0]] += n
        if len(stack) > 1:
            groups[f"{stack[0]} {thread_group(stack[1])}"] += n
    return total, roles.most_common(), groups.most_common(8)


def screenshot(chromium: str, svg: Path) -> Path:
    """PNG of the SVG at its own size, by headless Chromium."""
    head = svg.read_text()[:300]
    width = int(re.search(r'width="(\d+)"', head).group(1))
    height = int(re.search(r'height="(\d+)"', head).group(1))
    png = svg.with_suffix(".png")
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={png.resolve()}", f"--window-size={width},{height}",
                    svg.resolve().as_uri()], check=True, capture_output=True, timeout=120)
    return png


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10, help="profile length (default 10)")
    ap.add_argument("--hz", type=int, default=100, help="sampling rate (default 100)")
    ap.add_argument("--out", default="flamegraph",
                    help="PREFIX for .svg/.folded/.speedscope.json (and .png)")
    ap.add_argument("--png", action="store_true", help="also PREFIX.png, by headless Chromium")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--worker-class", default="gthread", choices=["gthread", "gevent"])
    ap.add_argument("--backlog", type=int, default=60_000,
                    help="records each on demo.app-logs and demo.orders (default 60000)")
    ap.add_argument("--reopen", type=float, default=3.0,
                    help="seconds between reopening the earliest tails (default 3)")
    ap.add_argument("--warmup", type=float, default=5.0,
                    help="seconds of load before the profile (default 5)")
    args = ap.parse_args(argv)
    raise_fd_limit()
    broker = EmbeddedBroker()
    broker.start()
    traffic = server = drain = rereaders = None
    live: list = []
    try:
        create_demo_topics(broker.bootstrap)
        backlog(broker.bootstrap, args.backlog)
        traffic = TrafficGenerator(broker.bootstrap, seed=7)
        traffic.start()
        # The drain reads frames whole (answers pings): the server sees real clients.
        drain = Drain(on_text=lambda *_: None)
        drain.start()
        server = Server(broker.bootstrap, args.worker_class)
        for i in range(27):
            ws = connect(server.ws_url(f"/ws/tail/{LIVE[i % len(LIVE)]}"))
            live.append(ws)
            drain.add(ws)
        rereaders = Rereaders(server, drain, args.reopen)
        rereaders.open_all()
        wait_until(lambda: server.tails() >= 36, 60, "36 tails open", 0.2)
        rereaders.start()
        time.sleep(args.warmup)
        cmd = [sys.executable, str(HERE / "leakcheck.py"), "--profile", f"{args.seconds:g}",
               "--hz", str(args.hz), "--url", server.url(""), "--out", args.out, "--top", "12"]
        print("$", " ".join(cmd), flush=True)
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 60)
        print(run.stdout, end="")
        print(run.stderr, end="", file=sys.stderr)
        if run.returncode != 0:
            return run.returncode
        total, roles, groups = shares(Path(f"{args.out}.folded").read_text())
        print(f"share per role ({total} counts):")
        for role, n in roles:
            print(f"  {100 * n / total:5.1f}% {n:>6}  {role}")
        print("share per thread group:")
        for group, n in groups:
            print(f"  {100 * n / total:5.1f}% {n:>6}  {group}")
        print(f"tails open {server.tails()}, earliest tails opened {rereaders.opened}")
        if args.png:
            print("wrote", screenshot(args.chromium, Path(f"{args.out}.svg")))
        return 0
    finally:
        if rereaders is not None:
            rereaders.stop()
        close_all(live)
        if drain is not None:
            drain.stop()
        if server is not None:
            server.stop()
        if traffic is not None:
            traffic.stop()
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
