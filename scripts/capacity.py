"""How many idle tails one ``kafkatail serve`` worker holds, per worker class, from outside.

For each case it starts the embedded broker (or uses ``--bootstrap``), ``kafkatail serve`` with
one worker, opens idle tails spread over ``--topics`` topics, and reports the worker's RSS,
threads and fds, its CPU over an idle window, ``/healthz`` latency with every tail open, that a
record produced to each topic reaches every tail, and the SIGTERM exit time. Each case opens
exactly the cap (gthread ``threads``, gevent ``worker_connections``, minus the slots kept for
HTTP) and checks that one more tail is refused with 1013. Not run in CI: it takes a minute or two
and wants a quiet machine.

    python scripts/capacity.py                                   # gthread 128, gevent 534
    python scripts/capacity.py --gthread-threads 128,512 --gevent-slots 534,2134 --idle-s 20
"""
from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field

import psutil
import websocket
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from kafkatail.broker import EmbeddedBroker, free_port, wait_for_port
from kafkatail.config import FIELDS
from kafkatail.server import http_reserve

OPEN_LIMITS = {  # one client address opens every tail: lift the per-client guards
    "max_tails": 100_000, "max_tails_per_client": 100_000, "max_tails_per_topic": 100_000,
    "connect_rate_per_client": 0, "anonymous_topics": "**", "debug_access": "open",
}


@dataclass
class Socket:
    ws: websocket.WebSocket
    topic: str
    messages: int = 0
    close_code: int | None = None


@dataclass
class Reader:
    """One thread reading every tail socket (websocket-client answers pings inside recv)."""

    sockets: list[Socket] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="kt-capacity-reader")
        self.thread.start()

    def add(self, s: Socket) -> None:
        with self.lock:
            self.sockets.append(s)
            self.selector.register(s.ws.sock, selectors.EVENT_READ, s)

    def _run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                ready = self.selector.select(0) if self.sockets else []
            if not ready:
                self.stop.wait(0.05)
                continue
            for key, _ in ready:
                self._read(key.data)

    def _read(self, s: Socket) -> None:
        try:
            opcode, data = s.ws.recv_data(control_frame=True)
        except (OSError, websocket.WebSocketException):
            opcode, data = websocket.ABNF.OPCODE_CLOSE, b""
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            s.close_code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1006
            with self.lock:
                self.selector.unregister(s.ws.sock)
        elif opcode == websocket.ABNF.OPCODE_TEXT and json.loads(data)["type"] == "messages":
            s.messages += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.selector.close()
        for s in self.sockets:
            s.ws.shutdown()


def _get(port: int, path: str, timeout: float = 10) -> dict:
    return json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout))


def _open_tail(port: int, topic: str) -> tuple[websocket.WebSocket, int | None]:
    """Open a tail and read until it is live (None) or closed (the close code)."""
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws/tail/{topic}", timeout=30)
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            ws.shutdown()
            return ws, int.from_bytes(data[:2], "big")
        if opcode == websocket.ABNF.OPCODE_TEXT:
            frame = json.loads(data)
            if frame["type"] == "status" and frame["status"] == "live":
                return ws, None


def _cpu(procs: list[psutil.Process]) -> float:
    return sum(p.cpu_times().user + p.cpu_times().system for p in procs)


def _idle_cpu(procs: list[psutil.Process], seconds: float) -> float:
    """CPU of the server's processes over a window, in % of one core."""
    cpu0, w0 = _cpu(procs), time.monotonic()
    time.sleep(seconds)  # the measurement window itself
    return 100 * (_cpu(procs) - cpu0) / (time.monotonic() - w0)


def _wait(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def run_case(bootstrap: str, topics: list[str], worker_class: str, slots: int,
             idle_s: float) -> dict:
    known = {f.name for f in FIELDS}
    config = {k: v for k, v in OPEN_LIMITS.items() if k in known}
    if worker_class == "gthread":
        config.update(threads=slots, worker_connections=max(1000, slots))
    else:
        config.update(worker_connections=slots)
    tails = slots - http_reserve(slots)
    env = {**os.environ, **{f"KAFKATAIL_{k.upper()}": str(v) for k, v in config.items()}}
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kafkatail", "serve", "--bootstrap-servers", bootstrap, "--bind",
         f"127.0.0.1:{port}", "--worker-class", worker_class],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    drain = threading.Thread(target=lines.extend, args=(proc.stdout,), name="kt-capacity-drain")
    drain.start()
    reader = Reader()
    row: dict = {"worker_class": worker_class, "slots": slots, "tails": tails}
    try:
        assert wait_for_port("127.0.0.1", port, 30), "".join(lines)
        _wait(lambda: _ok(port), 30)
        worker = psutil.Process(proc.pid).children()[0]
        procs = [psutil.Process(proc.pid), worker]
        row["rss_mb_0"] = worker.memory_info().rss / 2**20
        row["cpu_pct_0"] = _idle_cpu(procs, idle_s / 3)
        t0 = time.monotonic()
        for i in range(tails):
            ws, code = _open_tail(port, topics[i % len(topics)])
            assert code is None, f"tail {i + 1} closed {code}"
            reader.add(Socket(ws, topics[i % len(topics)]))
        row["open_s"] = time.monotonic() - t0
        _, code = _open_tail(port, topics[0])
        row["one_more"] = code
        assert _get(port, "/healthz")["tails"] == tails
        time.sleep(2)  # let the opening burst settle before the idle window
        row["cpu_pct"] = _idle_cpu(procs, idle_s)
        row["rss_mb"] = worker.memory_info().rss / 2**20
        row["os_threads"], row["fds"] = worker.num_threads(), worker.num_fds()
        latencies = []
        for _ in range(5):
            h0 = time.monotonic()
            _get(port, "/healthz", timeout=5)
            latencies.append(time.monotonic() - h0)
        row["healthz_ms"] = 1000 * max(latencies)
        producer = KafkaProducer(bootstrap_servers=bootstrap, client_id="kt-capacity")
        p0 = time.monotonic()
        for t in topics:
            producer.send(t, b"ping")
        producer.flush()
        producer.close()
        delivered = _wait(lambda: all(s.messages for s in reader.sockets), 60)
        row["delivered"] = sum(1 for s in reader.sockets if s.messages)
        row["deliver_s"] = time.monotonic() - p0 if delivered else None
        s0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        row["exit_code"] = proc.wait(60)
        row["exit_s"] = time.monotonic() - s0
        _wait(lambda: all(s.close_code for s in reader.sockets), 10)
        row["closed_1001"] = sum(1 for s in reader.sockets if s.close_code == 1001)
        return row
    finally:
        reader.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        drain.join(10)
        proc.stdout.close()


def _ok(port: int) -> bool:
    try:
        _get(port, "/healthz", timeout=2)
        return True
    except OSError:
        return False


def make_topics(bootstrap: str, n: int) -> list[str]:
    names = [f"capacity.{os.getpid()}.{i}" for i in range(n)]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="kt-capacity")
    try:
        admin.create_topics([NewTopic(t, 1, 1) for t in names])
    finally:
        admin.close()
    return names


def table(rows: list[dict]) -> str:
    head = ("worker", "tails", "open s", "RSS MB (0 → N)", "KB/tail", "threads", "fds",
            "idle CPU % (0 → N)", "healthz ms", "delivered", "SIGTERM", "1001s")
    out = []
    for r in rows:
        unit = "threads" if r["worker_class"] == "gthread" else "connections"
        worker = f"{r['worker_class']} ({r['slots']} {unit})"
        tails = f"{r['tails']} (+1: {r['one_more']})"
        per_tail = 1024 * (r["rss_mb"] - r["rss_mb_0"]) / r["tails"]
        rss = f"{r['rss_mb_0']:.1f} → {r['rss_mb']:.1f}"
        out.append((worker, tails, f"{r['open_s']:.1f}", rss, f"{per_tail:.0f}",
                    str(r["os_threads"]), str(r["fds"]),
                    f"{r['cpu_pct_0']:.1f} → {r['cpu_pct']:.1f}", f"{r['healthz_ms']:.0f}",
                    f"{r['delivered']} in {r['deliver_s']:.1f} s" if r["deliver_s"] else
                    str(r["delivered"]),
                    f"exit {r['exit_code']} in {r['exit_s']:.1f} s", str(r["closed_1001"])))
    widths = [max(len(x) for x in col) for col in zip(head, *out)]
    rule = "  ".join("=" * w for w in widths)
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(line.rstrip() for line in [rule, fmt.format(*head), rule,
                                                *(fmt.format(*r) for r in out), rule])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", help="an existing broker (default: start the embedded one)")
    ap.add_argument("--topics", type=int, default=10, help="topics the tails spread over")
    ap.add_argument("--gthread-threads", default="128",
                    help="comma list; each case opens the cap: threads minus the HTTP reserve")
    ap.add_argument("--gevent-slots", default="534",
                    help="comma list of worker_connections; each case opens the cap likewise")
    ap.add_argument("--idle-s", type=float, default=15, help="idle CPU window (under 2 pings)")
    args = ap.parse_args()
    cases = [("gthread", int(t)) for t in args.gthread_threads.split(",") if t]
    cases += [("gevent", int(n)) for n in args.gevent_slots.split(",") if n]
    rows = []
    with ExitStack() as stack:
        bootstrap = args.bootstrap
        if not bootstrap:
            broker = EmbeddedBroker().start()
            stack.callback(broker.stop)
            bootstrap = broker.bootstrap
        topics = make_topics(bootstrap, args.topics)
        for worker_class, slots in cases:
            row = run_case(bootstrap, topics, worker_class, slots, args.idle_s)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"\n{psutil.cpu_count()} CPUs, Python {sys.version.split()[0]}, {args.topics} topics, "
          f"idle window {args.idle_s:g} s\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
