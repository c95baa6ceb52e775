"""Measure what observability costs: a log call with caller lookup on and off, and the sampler's CPU.

Log calls go through kafkatail's queue handler, as in ``kafkatail serve``; the cost measured is the
caller's (the listener's writing happens on its own thread). The profiler's overhead is the whole
process's CPU while it samples N idle threads with realistic stack depths, as % of one core.
Prints an RST table; ``make bench`` runs it.
"""
from __future__ import annotations

import argparse
import io
import logging
import threading
import time

from kafkatail.config import Config
from kafkatail.ops import logsetup
from kafkatail.ops.profiler import Profiler


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


def profiler_overhead(threads: int, depth: int, hz: int, seconds: float) -> tuple[float, int]:
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
        prof = Profiler().run(seconds, hz)
        cpu = time.process_time() - before
        return 100.0 * cpu / (time.monotonic() - start), prof.samples
    finally:
        stop.set()
        for t in idle:
            t.join()


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
    args = ap.parse_args()
    off = min(log_cost(False, args.calls) for _ in range(3))
    on = min(log_cost(True, args.calls) for _ in range(3))
    drop = min(dropped_cost(args.calls) for _ in range(3))
    rows = [("measurement", "result"),
            ("log.info, caller lookup off (production)", f"{off:.2f} us/call"),
            ("log.info, caller lookup on (debug = true)", f"{on:.2f} us/call"),
            ("log.info dropped (queue full)", f"{drop:.2f} us/call")]
    for threads, depth, hz in ((10, 20, 100), (100, 30, 100), (100, 30, 1000)):
        pct, samples = profiler_overhead(threads, depth, hz, args.seconds)
        rows.append((f"profiler {hz} Hz, {threads} threads x {depth} frames",
                     f"{pct:.1f}% of a core ({samples} samples)"))
    print(table(rows))


if __name__ == "__main__":
    main()
