"""Measure what observability costs: a log call with caller lookup on and off, and the sampler's CPU.

Log calls go through kafkatail's queue handler, as in ``kafkatail serve``; the cost measured is the
caller's (the listener's writing happens on its own thread). The profiler's overhead is the whole
process's CPU while it samples N idle threads with realistic stack depths, as % of one core, in
both modes (``cpu`` reads each thread's CPU clock and walks only the stacks of threads that ran;
``wall`` walks every stack every tick).

``--live`` adds the profiler measured on a real ``kafkatail serve`` (gthread, one worker) against
the embedded broker, with ``--tails`` idle tails open: the ``kt-profiler`` thread's own CPU at
100 Hz (from /proc), and the delivery rate of ``--records`` records from ``earliest`` to one client
without and with a profile running (median of ``--repeats`` alternating runs).
Prints an RST table; ``make bench`` runs it.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import ExitStack
from typing import Callable

from kafkatail.config import Config
from kafkatail.ops import logsetup
from kafkatail.ops.profiler import Profiler
from kafkatail.ops.sampling import sample_process


def _caller_cost(config: Config, calls: int, prefill: int = 0) -> float:
    """Microseconds per ``log.info`` call as the calling thread pays for it: the listener is
    stopped, so records wait in the queue (or are dropped once it is full) until the end."""
    pipeline = logsetup.setup(config, stream=io.StringIO())
    pipeline.stop()
    log = logging.getLogger("kafkatail.bench")
    for _ in range(prefill):
        log.info("fill")
    start = time.perf_counter()
    for i in range(calls):
        log.info("tail %d on %s delivered %d records", i, "orders", 500)
    took = time.perf_counter() - start
    pipeline.start()
    logsetup.teardown()
    return 1e6 * took / calls


def log_cost(debug: bool, calls: int) -> float:
    """Per call, with caller lookup on (debug) or off; the queue never fills."""
    return _caller_cost(Config(debug=debug, log_queue_size=calls + 10), calls)


def dropped_cost(calls: int) -> float:
    """Per call when the queue is full and the record is dropped."""
    return _caller_cost(Config(log_queue_size=10), calls, prefill=20)


def _deep(depth: int, stop: threading.Event) -> None:
    if depth:
        _deep(depth - 1, stop)
    else:
        stop.wait()


def profiler_overhead(threads: int, depth: int, hz: int, seconds: float,
                      mode: str) -> tuple[float, int]:
    """(% of one core the process used while sampling, samples taken) with ``threads`` idle
    threads ``depth`` frames deep."""
    stop = threading.Event()
    idle = [threading.Thread(target=_deep, args=(depth, stop), name=f"bench-idle-{i}")
            for i in range(threads)]
    for t in idle:
        t.start()
    try:
        before = time.process_time()
        start = time.monotonic()
        prof = Profiler().run(seconds, hz, mode=mode)
        cpu = time.process_time() - before
        return 100.0 * cpu / (time.monotonic() - start), prof.samples
    finally:
        stop.set()
        for t in idle:
            t.join()


class LiveServer:
    """``kafkatail serve`` (gthread, one worker) on a free port, against ``bootstrap``."""

    def __init__(self, bootstrap: str, threads: int) -> None:
        from kafkatail.broker import free_port, wait_for_port
        import psutil

        self.port = free_port()
        env = {**os.environ, "KAFKATAIL_ANONYMOUS_TOPICS": "**", "KAFKATAIL_DEBUG_ACCESS": "open",
               "KAFKATAIL_THREADS": str(threads), "KAFKATAIL_PING_INTERVAL_S": "300",
               "KAFKATAIL_MAX_TAILS_PER_CLIENT": str(threads),
               "KAFKATAIL_CONNECT_RATE_PER_CLIENT": "1000",
               "KAFKATAIL_CONNECT_BURST_PER_CLIENT": str(threads)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kafkatail", "serve", "--bootstrap-servers", bootstrap,
             "--bind", f"127.0.0.1:{self.port}", "--worker-class", "gthread"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for_port("127.0.0.1", self.port, 30):
            self.stop()
            raise RuntimeError("kafkatail serve did not start")
        deadline = time.monotonic() + 30
        while not psutil.Process(self.proc.pid).children():
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("no gunicorn worker")
            time.sleep(0.05)
        self.worker = psutil.Process(self.proc.pid).children()[0]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ws(self, path: str):
        import websocket
        return websocket.create_connection(f"ws://127.0.0.1:{self.port}{path}", timeout=30)

    def cpu_s(self) -> float:
        t = self.worker.cpu_times()
        return t.user + t.system

    def profiler_cpu_s(self) -> float | None:
        """CPU seconds of the worker's ``kt-profiler`` thread so far; None while there is none."""
        return next((t.cpu_s for t in sample_process(self.worker.pid).threads.values()
                     if t.comm == "kt-profiler"), None)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _frames_until(ws, pred: Callable[[dict], bool]) -> dict:
    while True:
        frame = json.loads(ws.recv())
        if pred(frame):
            return frame


class Profiling:
    """A ``/debug/profile`` request running on its own thread; the profile itself is known to
    run once the worker has a ``kt-profiler`` thread. ``join`` returns that thread's CPU."""

    def __init__(self, server: LiveServer, seconds: float, mode: str = "cpu") -> None:
        self.server = server
        self.cpu: float | None = None
        self.thread = threading.Thread(target=self._get, args=(seconds, mode), name="bench-profile")
        self.thread.start()
        _until(lambda: server.profiler_cpu_s() is not None, 10, "kt-profiler to start")
        self._watch = threading.Thread(target=self._follow, name="bench-profile-cpu")
        self._watch.start()

    def _get(self, seconds: float, mode: str) -> None:
        urllib.request.urlopen(self.server.url(
            f"/debug/profile?seconds={seconds:g}&hz=100&mode={mode}&format=folded"),
            timeout=seconds + 30).read()

    def _follow(self) -> None:
        # The thread's CPU is read from /proc until it ends: the last reading is its total.
        while self.thread.is_alive():
            cpu = self.server.profiler_cpu_s()
            self.cpu = cpu if cpu is not None else self.cpu
            time.sleep(0.2)

    def join(self) -> float:
        self.thread.join()
        self._watch.join()
        return self.cpu or 0.0


def live_rows(tails: int, records: int, seconds: float, repeats: int) -> list[tuple[str, str]]:
    """The profiler on a real server with ``tails`` idle tails open: its thread's CPU, and the
    delivery rate from earliest to one client with and without a profile running."""
    from kafkatail.broker import EmbeddedBroker
    from kafkatail.testing.kafka import Cluster

    with ExitStack() as stack:
        broker = stack.enter_context(EmbeddedBroker())
        cluster = Cluster(broker.bootstrap, broker)
        server = LiveServer(broker.bootstrap, threads=tails + 56)
        stack.callback(server.stop)
        idle_topics = [cluster.create_topic() for _ in range(10)]
        sockets = []
        stack.callback(lambda: [ws.close() for ws in sockets])
        for i in range(tails):
            ws = server.ws(f"/ws/tail/{idle_topics[i % len(idle_topics)]}")
            _frames_until(ws, lambda f: f["type"] == "status" and f["status"] == "live")
            sockets.append(ws)
        busy = cluster.create_topic()
        cluster.produce(busy, [(None, json.dumps({"n": i, "pad": "x" * 200}))
                               for i in range(records)])
        threads = len(sample_process(server.worker.pid).threads)

        def deliver() -> tuple[float, float]:
            """(records/s, worker CPU microseconds per record not counting the sampler's)."""
            ws = server.ws(f"/ws/tail/{busy}?from=earliest")
            try:
                _frames_until(ws, lambda f: f["type"] == "hello")
                start, got = time.monotonic(), 0
                cpu0, sampler0 = server.cpu_s(), server.profiler_cpu_s() or 0.0
                while got < records:
                    frame = json.loads(ws.recv())
                    if frame["type"] == "messages":
                        got += len(frame["messages"])
                rate = records / (time.monotonic() - start)
                sampler = (server.profiler_cpu_s() or sampler0) - sampler0
                return rate, 1e6 * (server.cpu_s() - cpu0 - sampler) / records
            finally:
                ws.close()

        rows = []
        for mode in ("cpu", "wall"):
            cpu0, t0 = server.cpu_s(), time.monotonic()
            time.sleep(seconds)     # the idle baseline window itself
            idle_pct = 100 * (server.cpu_s() - cpu0) / (time.monotonic() - t0)
            cpu0, t0 = server.cpu_s(), time.monotonic()
            sampler = Profiling(server, seconds, mode).join()
            took = time.monotonic() - t0
            rows.append((f"live, {tails} tails ({threads} threads): profiler 100 Hz mode={mode}",
                         f"{100 * sampler / seconds:.1f}% of a core (worker "
                         f"{idle_pct:.1f}% -> {100 * (server.cpu_s() - cpu0) / took:.1f}%)"))
        deliver()   # warm: the broker's and the worker's first read of the topic
        off, on = [], []
        for _ in range(repeats):
            off.append(deliver())
            budget = min(60.0, max(2.0, 3 * records / off[-1][0]))
            profiling = Profiling(server, budget)
            on.append(deliver())
            profiling.join()
        def spread(key: int, runs: list[tuple[float, float]], fmt: str) -> str:
            values = [run[key] for run in runs]
            return (f"{statistics.median(values):{fmt}} "
                    f"({min(values):{fmt}}-{max(values):{fmt}})")

        def compare(key: int, fmt: str, unit: str) -> str:
            change = statistics.median(v[key] for v in on) / statistics.median(
                v[key] for v in off) - 1
            return (f"{spread(key, off, fmt)} {unit}, profiling {spread(key, on, fmt)}: "
                    f"{100 * change:+.1f}%")

        rows.append((f"live: {records} records from earliest, 1 client, median of {repeats}",
                     compare(0, ",.0f", "rec/s")))
        rows.append(("live: worker CPU per record delivered (sampler's own excluded)",
                     compare(1, ".1f", "us")))
        return rows


def table(rows: list[tuple[str, str]]) -> str:
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    rule = f"{'=' * w0}  {'=' * w1}"
    lines = [rule] + [f"{a:<{w0}}  {b:>{w1}}" if i else f"{a:<{w0}}  {b:<{w1}}"
                      for i, (a, b) in enumerate(rows)]
    lines.insert(2, rule)
    return "\n".join(lines + [rule])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--live", action="store_true",
                    help="also measure on a real kafkatail serve with --tails open tails")
    ap.add_argument("--tails", type=int, default=200)
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    off = min(log_cost(False, args.calls) for _ in range(3))
    on = min(log_cost(True, args.calls) for _ in range(3))
    drop = min(dropped_cost(args.calls) for _ in range(3))
    rows = [("measurement", "result"),
            ("log.info, caller lookup off (production)", f"{off:.2f} us/call"),
            ("log.info, caller lookup on (debug = true)", f"{on:.2f} us/call"),
            ("log.info dropped (queue full)", f"{drop:.2f} us/call")]
    for threads, depth, hz in ((10, 20, 100), (100, 30, 100), (100, 30, 1000)):
        for mode in ("cpu", "wall"):
            pct, samples = profiler_overhead(threads, depth, hz, args.seconds, mode)
            rows.append((f"profiler {hz} Hz mode={mode}, {threads} idle threads x {depth} frames",
                         f"{pct:.1f}% of a core ({samples} ticks)"))
    if args.live:
        rows += live_rows(args.tails, args.records, args.seconds, args.repeats)
    print(table(rows))


if __name__ == "__main__":
    main()
