"""The reaper: one named thread that samples every thread's CPU, joins orphaned tails and says so.

Each interval it takes a psutil sample (per-thread CPU% over the interval, like ``top -H``), joins
ConsumerThreads whose owning socket thread died without releasing them, reports threads that did
not stop (with their stacks) and threads nobody registered, and logs one cheap line. The latest
snapshot feeds ``/debug/threads``, ``/metrics`` and, if configured, a JSON file that tools such
as ``scripts/leakcheck.py`` read without ptrace.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections import deque
from typing import Any

from ..config import Config
from ..tail.pool import ConsumerPool
from . import greencpu
from .sampling import ProcessSample, ThreadSampler
from .threads import REGISTRY, set_os_thread_name, stack_of

log = logging.getLogger(__name__)

HOT_PCT = 80.0
HOT_INTERVALS = 3
GROWTH_INTERVALS = 5


def thread_table(sample: ProcessSample | None, green_cpu: dict[int, tuple[float, float]] | None = None,
                 stacks: bool = True) -> list[dict[str, Any]]:
    """Every thread of this process: OS view (tid, name, state, CPU) joined with Python's.

    Under gevent (``green_cpu`` given: ident -> (total s, %)), every "thread" is a greenlet on
    one OS thread; CPU comes from the switch tracer and stacks from the greenlets' frames.
    """
    if green_cpu is not None:
        return _green_table(green_cpu)
    frames = sys._current_frames() if stacks else {}
    by_tid = {t.native_id: t for t in threading.enumerate() if t.native_id}
    # Python 3.11 keeps the parent's native id on the main thread after fork (gunicorn
    # workers); the thread that survives a fork is the process's first, so its tid is the pid.
    by_tid.pop(threading.main_thread().native_id, None)
    by_tid[os.getpid()] = threading.main_thread()
    rows: list[dict[str, Any]] = []
    now = time.monotonic()
    seen: set[int] = set()
    for ts in (sample.top() if sample else []):
        seen.add(ts.tid)
        rows.append(_row(ts.tid, by_tid.get(ts.tid), frames, now, ts.comm, ts.state,
                         ts.cpu_pct, ts.cpu_s))
    for tid, t in by_tid.items():
        if tid not in seen:
            rows.append(_row(tid, t, frames, now, None, None, None, None))
    return rows


def _green_table(green_cpu: dict[int, tuple[float, float]]) -> list[dict[str, Any]]:
    acct = greencpu.installed()
    now = time.monotonic()
    pid = os.getpid()
    rows = []
    for t in threading.enumerate():
        frame = acct.frame(t.ident) if acct else None
        total, pct = green_cpu.get(t.ident, (None, None))
        rows.append(_row(pid, t, {t.ident: frame} if frame is not None else {}, now, "greenlet",
                         None, pct, total))
    return rows


def _row(tid: int, t: threading.Thread | None, frames: dict, now: float, comm: str | None,
         state: str | None, pct: float | None, total: float | None) -> dict[str, Any]:
    info = REGISTRY.info(t) if t is not None else REGISTRY.native_info(tid, comm)
    frame = frames.get(t.ident) if t is not None else None
    return {
        "native_id": tid, "nid": hex(tid), "os_name": comm, "name": t.name if t else None,
        "role": info.role, "owner": info.owner,
        "topic": info.topic if info else None, "client": info.client if info else None,
        "tail_id": info.tail_id if info else None, "daemon": t.daemon if t else None,
        "age_s": (round(now - info.started, 1)
                  if info.owner != "library" and (t is not None or info.owner) else None),
        "state": state, "cpu_pct": None if pct is None else round(pct, 1),
        "cpu_total_s": None if total is None else round(total, 3),
        "stack": stack_of(frame) if frame is not None else [],
    }


class Reaper(threading.Thread):
    def __init__(self, pool: ConsumerPool, config: Config) -> None:
        super().__init__(name="kt-reaper", daemon=True)
        self.pool = pool
        self.config = config
        self.sampler = ThreadSampler()
        self.latest: ProcessSample | None = None
        self.green_latest: dict[int, tuple[float, float]] | None = None
        self._green_prev: dict[int, float] = {}
        self.stuck: dict[int, list[str]] = {}
        self.unknown_counts: deque[int] = deque(maxlen=60)
        self._hot: dict[tuple[int, int], int] = {}
        self._counts: deque[int] = deque(maxlen=GROWTH_INTERVALS + 1)
        self._stop_event = threading.Event()
        self._wake = threading.Event()
        REGISTRY.register(self, "reaper", owner="app")

    def stop(self, timeout: float = 5.0) -> None:
        self._stop_event.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout)

    def refresh(self) -> None:
        """Tick now instead of at the end of the interval (SIGUSR2 in a server worker)."""
        self._wake.set()

    def run(self) -> None:
        set_os_thread_name(self.name)
        self.sampler.sample()
        while True:
            self._wake.wait(self.config.reaper_interval_s)
            self._wake.clear()
            if self._stop_event.is_set():
                return
            try:
                self.tick()
            except Exception:
                log.exception("reaper tick failed")

    def tick(self) -> ProcessSample:
        """One interval's work; public so tests can drive it without waiting for the timer."""
        sample = self.sampler.sample()
        self.latest = sample
        acct = greencpu.installed()
        if acct is not None:
            totals = acct.totals()
            self.green_latest = greencpu.percentages(self._green_prev, totals, sample.interval)
            self._green_prev = totals
        self._reap_orphans()
        unknown = [t.name for t in threading.enumerate() if REGISTRY.info(t).role == "unknown"]
        self.unknown_counts.append(len(unknown))
        self._log(sample, unknown)
        if self.config.snapshot_path:
            self.write_snapshot(self.config.snapshot_path)
        return sample

    def _reap_orphans(self) -> None:
        """The pool releases tails whose owner died; this logs what each used, or its stack."""
        grace = self.config.poll_timeout_ms / 1000 + 1.0
        for t, ok in self.pool.reap(grace):
            cpu = self._cpu_of(t.native_id)
            if ok:
                log.warning("reaped orphaned tail %s (%s, client %s): owner %s gone; it used %s",
                            t.name, t.request.topic, t.client, t.owner.name, cpu)
            else:
                frame = sys._current_frames().get(t.ident)
                self.stuck[t.tail_id] = stack_of(frame) if frame is not None else []
                log.error("tail %s is stuck after %.1fs; stack:\n  %s", t.name, grace,
                          "\n  ".join(self.stuck[t.tail_id]))

    def _cpu_of(self, tid: int | None) -> str:
        sample = self.latest
        for ts in (sample.threads.values() if sample and tid else ()):
            if ts.tid == tid:
                return f"{ts.cpu_s:.3f}s CPU ({ts.cpu_pct:.1f}% of a core last interval)"
        return "no CPU sample"

    def _log(self, sample: ProcessSample, unknown: list[str]) -> None:
        names = {t.native_id: t for t in threading.enumerate()}
        top = []
        for ts in sample.top(3):
            t = names.get(ts.tid)
            info = REGISTRY.info(t) if t else REGISTRY.native_info(ts.tid, ts.comm)
            label = f"{t.name if t else ts.comm}({info.role}"
            label += f",{info.topic})" if info and info.topic else ")"
            top.append(f"{label} {ts.cpu_pct:.1f}%")
        log.info("threads=%d fds=%d rss=%.0fMB cpu=%.1f%% tails=%d unknown=%d top: %s",
                 len(sample.threads), sample.fds, sample.rss / 2**20, sample.cpu_pct,
                 len(self.pool), len(unknown), ", ".join(top))
        for key, ts in sample.threads.items():
            hot = self._hot.get(key, 0) + 1 if ts.cpu_pct > HOT_PCT else 0
            self._hot[key] = hot
            if hot == HOT_INTERVALS:
                log.warning("thread %s (tid %d, %s) above %.0f%% of a core for %d intervals",
                            ts.comm, ts.tid, ts.nid, HOT_PCT, HOT_INTERVALS)
        self._hot = {k: v for k, v in self._hot.items() if k in sample.threads}
        self._counts.append(len(sample.threads))
        c = list(self._counts)
        if len(c) > GROWTH_INTERVALS and all(b > a for a, b in zip(c, c[1:])):
            log.warning("thread count grew for %d intervals: %s", GROWTH_INTERVALS,
                        " -> ".join(map(str, c)))
        if unknown:
            log.warning("%d unregistered threads: %s", len(unknown), ", ".join(sorted(unknown)[:10]))

    def write_snapshot(self, path: str) -> None:
        """Atomically write the thread table (with stacks) as JSON for tools outside."""
        data = {"pid": os.getpid(), "at": time.time(),
                "threads": thread_table(self.latest, self.green_latest)}
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)
