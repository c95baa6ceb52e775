"""Baseline, settle and report the threads and fds of another process, e.g. a server under test.

The guard's method for a process seen only from outside: threads are told apart by native tid
across snapshots and named by their OS name (``/proc/PID/task/TID/comm``, through ``procfs``);
with ``include_children`` the whole process tree (gunicorn's workers) is counted. New threads are
reported by group (``threads.group_prefix``, the rule leakcheck and the profiler use).
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import psutil

from ..ops.procfs import comm, open_fds, task_ids, thread_cpu
from ..ops.threads import group_prefix
from .threadguard import cpu_note, describe_fds, wait_until


@dataclass(frozen=True)
class ProcessState:
    """One process at one moment: its thread ids and (if counted) open fd numbers."""

    pid: int
    name: str
    tids: frozenset[int]
    fds: frozenset[int] | None


@dataclass(frozen=True)
class ProcessCounts:
    """One process's counts now and at the baseline (0 for a process that is new or gone)."""

    pid: int
    name: str
    threads: int
    baseline_threads: int
    fds: int | None
    baseline_fds: int | None

    def line(self) -> str:
        fds = "" if self.fds is None else f", fds {self.fds} (baseline {self.baseline_fds})"
        return f"pid {self.pid} {self.name}: threads {self.threads} " \
               f"(baseline {self.baseline_threads}){fds}"


@dataclass(frozen=True)
class NewThread:
    """A thread id that was not there at the baseline."""

    pid: int
    tid: int
    name: str
    cpu: float


@dataclass
class ProbeResult:
    """The outcome of :meth:`ProcessProbe.settle`: ``ok``, totals, per-process counts, report."""

    ok: bool
    elapsed: float
    wall: float
    threads: int
    baseline_threads: int
    fds: int | None
    baseline_fds: int | None
    processes: list[ProcessCounts]
    new_threads: list[NewThread]
    new_fds: list[tuple[int, int, str]]

    def report(self) -> str:
        """Totals, each process's counts, new threads by group, new fds."""
        verdict = "settled" if self.ok else "NOT settled"
        fds = "" if self.fds is None else f", fds {self.fds} (baseline {self.baseline_fds})"
        lines = [f"ProcessProbe {verdict} after {self.elapsed:.2f}s: threads {self.threads} "
                 f"(baseline {self.baseline_threads}){fds}"]
        lines += [f"  {p.line()}" for p in self.processes]
        if self.new_threads:
            lines.append("new threads by name:")

            def group_of(t: NewThread) -> str:
                return group_prefix(t.name)

            for label, members in itertools.groupby(sorted(self.new_threads, key=group_of),
                                                    group_of):
                group = list(members)
                lines.append(f"  {label} x{len(group)}")
                lines += [f"    {t.name!r} pid {t.pid} tid {t.tid} (nid={t.tid:#x}) "
                          f"{cpu_note(t.cpu, self.wall)}" for t in group]
        if self.new_fds:
            lines.append("new fds:")
            lines += [f"  pid {pid} fd {fd} -> {target}" for pid, fd, target in self.new_fds]
        return "\n".join(lines)


class ProcessProbe:
    """Watch another process (and, with ``include_children``, its descendants) for leftovers.

    ``baseline()`` first, then drive the process, then ``settle(grace)`` or
    ``assert_settled(grace)``: passes once thread (and fd) totals are back at or below it.
    """

    def __init__(self, pid: int, include_children: bool = False, fds: bool = True) -> None:
        self.pid = pid
        self.include_children = include_children
        self.fds = fds
        self.base: dict[int, ProcessState] = {}
        self.base_at = 0.0

    def snapshot(self) -> dict[int, ProcessState]:
        """The current state of the process (and its descendants), by pid."""
        root = psutil.Process(self.pid)
        procs = [root] + (root.children(recursive=True) if self.include_children else [])
        states = {}
        for proc in procs:
            try:
                states[proc.pid] = ProcessState(proc.pid, proc.name(), task_ids(proc.pid),
                                                open_fds(proc.pid) if self.fds else None)
            except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
                continue  # exited between listing and reading: it holds nothing now
        return states

    def baseline(self) -> dict[int, ProcessState]:
        """Record what the process holds now; ``settle`` compares against this."""
        self.base = self.snapshot()
        self.base_at = time.monotonic()
        return self.base

    def _totals(self, states: dict[int, ProcessState]) -> tuple[int, int]:
        return (sum(len(s.tids) for s in states.values()),
                sum(len(s.fds) for s in states.values() if s.fds is not None))

    def settle(self, grace: float = 5.0) -> ProbeResult:
        """Wait up to ``grace`` seconds for the totals to be back at or below the baseline."""
        if not self.base:
            raise RuntimeError("ProcessProbe.settle() before baseline()")
        base_threads, base_fds = self._totals(self.base)
        last: list[dict[int, ProcessState]] = []

        def clean() -> bool:
            last[:] = [self.snapshot()]
            threads, fds = self._totals(last[0])
            return threads <= base_threads and fds <= base_fds

        ok, elapsed = wait_until(clean, grace)
        return self._result(ok, elapsed, last[0])

    def assert_settled(self, grace: float = 5.0) -> ProbeResult:
        """``settle``, raising AssertionError with the report if the process did not settle."""
        result = self.settle(grace)
        if not result.ok:
            raise AssertionError(result.report())
        return result

    def _result(self, ok: bool, elapsed: float, now: dict[int, ProcessState]) -> ProbeResult:
        threads, fds = self._totals(now)
        base_threads, base_fds = self._totals(self.base)
        empty = ProcessState(0, "", frozenset(), frozenset() if self.fds else None)
        processes, new_threads, new_fds = [], [], []
        for pid in sorted(self.base.keys() | now.keys()):
            b, n = self.base.get(pid, empty), now.get(pid, empty)
            name = n.name or f"{b.name} (gone)"
            if pid not in self.base:
                name += " (new)"
            processes.append(ProcessCounts(pid, name, len(n.tids), len(b.tids),
                                           None if n.fds is None else len(n.fds),
                                           None if b.fds is None else len(b.fds)))
            new_threads += [NewThread(pid, tid, comm(pid, tid), thread_cpu(pid, tid))
                            for tid in sorted(n.tids - b.tids)]
            if n.fds is not None:
                new_fds += [(pid, fd, target) for fd, target
                            in describe_fds(pid, sorted(n.fds - (b.fds or frozenset())))]
        return ProbeResult(ok, elapsed, time.monotonic() - self.base_at, threads, base_threads,
                           fds if self.fds else None, base_fds if self.fds else None,
                           processes, new_threads, new_fds)
