"""Per-thread CPU of any Linux process, from /proc: what ``top -H -p PID`` shows, as data.

A ``ThreadSampler`` keeps the previous sample and turns two samples into CPU% per thread over
monotonic time (percent of one core), never lifetime averages. Threads are keyed by tid *and*
start time, so a tid the kernel reuses does not inherit the old thread's history. Used by the
in-process reaper and by ``scripts/leakcheck.py`` against another pid.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class ThreadSample:
    tid: int
    comm: str
    state: str
    cpu_s: float          # user + system, lifetime
    start_ticks: int      # start time in clock ticks since boot: (tid, start) is unique
    cpu_pct: float = 0.0  # over the last interval, percent of one core

    @property
    def key(self) -> tuple[int, int]:
        return (self.tid, self.start_ticks)

    @property
    def nid(self) -> str:
        return hex(self.tid)


@dataclass
class ProcessSample:
    pid: int
    at: float
    threads: dict[tuple[int, int], ThreadSample] = field(default_factory=dict)
    fds: int = 0
    rss: int = 0
    cpu_s: float = 0.0
    cpu_pct: float = 0.0
    interval: float = 0.0

    def top(self, n: int | None = None) -> list[ThreadSample]:
        ranked = sorted(self.threads.values(), key=lambda t: (t.cpu_pct, t.cpu_s), reverse=True)
        return ranked if n is None else ranked[:n]


def _read_stat(path: str) -> tuple[str, str, float, int] | None:
    """(comm, state, cpu seconds, start ticks) from a /proc stat file; None if it is gone."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    # comm is in parentheses and may itself contain spaces or ')'.
    lpar, rpar = raw.index(b"("), raw.rindex(b")")
    comm = raw[lpar + 1:rpar].decode("utf-8", "replace")
    rest = raw[rpar + 2:].split()
    utime, stime, start = int(rest[11]), int(rest[12]), int(rest[19])
    return comm, rest[0].decode(), (utime + stime) / _TICKS, start


def sample_process(pid: int) -> ProcessSample:
    """One snapshot of a process: every thread's CPU so far, fd count and RSS."""
    now = time.monotonic()
    out = ProcessSample(pid=pid, at=now)
    base = f"/proc/{pid}"
    try:
        tids = os.listdir(f"{base}/task")
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    for tid in tids:
        st = _read_stat(f"{base}/task/{tid}/stat")
        if st is not None:
            t = ThreadSample(int(tid), st[0], st[1], st[2], st[3])
            out.threads[t.key] = t
    try:
        out.fds = len(os.listdir(f"{base}/fd"))
    except PermissionError:
        out.fds = -1
    proc = _read_stat(f"{base}/stat")
    if proc is not None:
        out.cpu_s = proc[2]
    try:
        with open(f"{base}/statm") as fh:
            out.rss = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        pass
    return out


class ThreadSampler:
    """Successive samples of one process; each new sample carries CPU% since the previous."""

    def __init__(self, pid: int | None = None) -> None:
        self.pid = pid or os.getpid()
        self.last: ProcessSample | None = None

    def sample(self) -> ProcessSample:
        cur = sample_process(self.pid)
        prev = self.last
        if prev is not None:
            dt = cur.at - prev.at
            if dt > 0:
                cur.interval = dt
                cur.cpu_pct = 100.0 * (cur.cpu_s - prev.cpu_s) / dt
                for key, t in cur.threads.items():
                    old = prev.threads.get(key)
                    # A thread new since the last sample: all its CPU happened in this interval.
                    used = t.cpu_s - old.cpu_s if old is not None else t.cpu_s
                    t.cpu_pct = 100.0 * used / dt
        self.last = cur
        return cur
