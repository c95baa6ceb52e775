"""Per-thread CPU of any Linux process: what ``top -H -p PID`` shows, as data.

CPU times come from psutil (``Process.threads()``, user + system per tid; the process's CPU, fds
and RSS); a thread's OS name, state and start time, which psutil does not give per thread, from
``procfs``. A ``ThreadSampler`` keeps the previous sample and turns two samples into CPU% per
thread over monotonic time (percent of one core), never lifetime averages. Threads are keyed by
tid *and* start time, so a tid the kernel reuses does not inherit the old thread's history. Used
by the in-process reaper, ``/debug/threads`` and ``kafkatail.leakcheck`` against another pid.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import psutil

from . import procfs


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


def sample_process(pid: int, proc: psutil.Process | None = None) -> ProcessSample:
    """One snapshot of a process: every thread's CPU so far, fd count and RSS.
    ProcessLookupError if it is gone, PermissionError if it may not be read."""
    now = time.monotonic()
    out = ProcessSample(pid=pid, at=now)
    try:
        proc = proc or psutil.Process(pid)
        threads = proc.threads()
        cpu = proc.cpu_times()
        out.rss = proc.memory_info().rss
    except psutil.NoSuchProcess:
        raise ProcessLookupError(pid) from None
    except psutil.AccessDenied as exc:
        raise PermissionError(f"{exc.msg or 'access denied'} (pid {pid})") from None
    out.cpu_s = cpu.user + cpu.system
    for pt in threads:
        st = procfs.task_stat(pid, pt.id)
        if st is not None:   # else it ended since psutil listed it
            t = ThreadSample(pt.id, st.comm, st.state, pt.user_time + pt.system_time,
                             st.start_ticks)
            out.threads[t.key] = t
    try:
        out.fds = proc.num_fds()
    except psutil.AccessDenied:
        out.fds = -1
    except psutil.NoSuchProcess:
        raise ProcessLookupError(pid) from None
    return out


class ThreadSampler:
    """Successive samples of one process; each new sample carries CPU% since the previous."""

    def __init__(self, pid: int | None = None) -> None:
        self.pid = pid or os.getpid()
        self.last: ProcessSample | None = None
        self._proc: psutil.Process | None = None

    def sample(self) -> ProcessSample:
        if self._proc is None:
            try:
                self._proc = psutil.Process(self.pid)
            except psutil.NoSuchProcess:
                raise ProcessLookupError(self.pid) from None
        cur = sample_process(self.pid, self._proc)
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
