"""Soak kafkatail serve: churn, idle and live tails on real traffic, measured from outside.

Starts the embedded broker with the demo topics and traffic, ``kafkatail serve`` (a subprocess),
a set of long-lived ``kafkatail tail`` clients on live topics, and every interval opens and ends a
wave of short tails (clean close, FIN without a close frame, RST). Prints the server's threads,
fds, RSS and CPU per interval as an RST table; a healthy server's rows stay flat.

    python scripts/soak.py --minutes 10 --worker-class gthread
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.request

import psutil
import websocket

from kafkatail.broker import EmbeddedBroker, free_port, wait_for_port
from kafkatail.demo_traffic import TrafficGenerator, create_demo_topics

TOPICS = ["demo.app-logs", "demo.orders", "demo.sensor-bin", "demo.audit"]
# Open access (no tokens), and no per-address limits: every soak client is 127.0.0.1.
SOAK_ENV = {"KAFKATAIL_ANONYMOUS_TOPICS": "**", "KAFKATAIL_CONNECT_RATE_PER_CLIENT": "0",
            "KAFKATAIL_MAX_TAILS_PER_CLIENT": "5000"}


def tails(port: int) -> int:
    return json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10))["tails"]


def wave(port: int, n: int) -> None:
    """Open n tails across the topics, read their hello, end them three ways."""
    socks = [websocket.create_connection(
        f"ws://127.0.0.1:{port}/ws/tail/{TOPICS[i % len(TOPICS)]}?from=-5", timeout=10)
        for i in range(n)]
    for s in socks:
        s.recv()
    for i, s in enumerate(socks):
        if i % 3 == 0:
            s.close()
        elif i % 3 == 1:
            s.sock.shutdown(socket.SHUT_RDWR)
            s.sock.close()
        else:
            s.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.sock.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--interval", type=float, default=30, help="seconds between rows")
    ap.add_argument("--worker-class", default="gthread", choices=["gthread", "gevent"])
    ap.add_argument("--wave", type=int, default=60, help="short tails per interval")
    ap.add_argument("--live", type=int, default=12, help="long-lived kafkatail tail clients")
    args = ap.parse_args()

    broker = EmbeddedBroker().start()
    traffic = server = None
    clients: list[subprocess.Popen] = []
    try:
        create_demo_topics(broker.bootstrap)
        traffic = TrafficGenerator(broker.bootstrap)
        traffic.start()
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "kafkatail", "serve", "--bootstrap-servers", broker.bootstrap,
             "--bind", f"127.0.0.1:{port}", "--worker-class", args.worker_class,
             "--log-level", "WARNING"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, **SOAK_ENV})
        assert wait_for_port("127.0.0.1", port, 30), "server did not start"
        tails(port)
        procs = [psutil.Process(server.pid)] + psutil.Process(server.pid).children()
        clients = [subprocess.Popen(
            [sys.executable, "-m", "kafkatail", "tail", TOPICS[i % len(TOPICS)], "--url",
             f"ws://127.0.0.1:{port}", "-q", "-f", "%o\\n"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(args.live)]
        wave(port, args.wave)  # warm-up: gthread's pool keeps its threads at the peak
        rows = []
        cpu_prev, t_prev = sum(sum(p.cpu_times()[:2]) for p in procs), time.monotonic()
        end = t_prev + args.minutes * 60
        started = t_prev
        while time.monotonic() < end:
            wave(port, args.wave)
            deadline = time.monotonic() + args.interval
            while time.monotonic() < deadline:
                time.sleep(0.5)
            cpu, now = sum(sum(p.cpu_times()[:2]) for p in procs), time.monotonic()
            rows.append((round((now - started) / 60, 1), tails(port),
                         sum(p.num_threads() for p in procs), sum(p.num_fds() for p in procs),
                         round(sum(p.memory_info().rss for p in procs) / 2**20, 1),
                         round(100 * (cpu - cpu_prev) / (now - t_prev), 1)))
            cpu_prev, t_prev = cpu, now
            print(*rows[-1], sep="\t", file=sys.stderr, flush=True)
        head = ("minute", "open tails", "threads", "fds", "RSS MB", "CPU % of a core")
        widths = [max(len(h), 8) for h in head]
        line = "  ".join("=" * w for w in widths)
        print(f"kafkatail serve --worker-class {args.worker_class}: {args.live} live tails, "
              f"{args.wave} short tails per {args.interval:g} s, demo traffic\n")
        print(line)
        print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
        print(line)
        for r in rows:
            print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))
        print(line)
        return 0
    finally:
        for c in clients:
            c.terminate()
            c.wait(10)
        if server is not None:
            server.terminate()
            server.wait(20)
        if traffic is not None:
            traffic.stop()
        broker.stop()


if __name__ == "__main__":
    raise SystemExit(main())
