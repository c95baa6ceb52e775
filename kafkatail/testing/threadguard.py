"""Find the threads and file descriptors a test left behind, and say where they came from.

A :class:`Guard` takes a baseline, and after the code under test has cleaned up it waits with
backoff until the process is back at or below that baseline (as CPython's
``test.support.threading_helper`` and Go's goleak do): a thread that stops within the grace
period is not a leak. Otherwise its report names each leftover thread, its native id, CPU,
stack and the line that started it. Native threads and fds are read through
``kafkatail.ops.procfs`` (Linux).
"""
from __future__ import annotations

import _thread
import concurrent.futures
import functools
import os
import re
import sys
import threading
import time
import traceback
import weakref
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import psutil

from ..ops.procfs import comm, fd_target, open_fds, task_ids, thread_cpu
from ..ops.threads import group_prefix

Ignore = tuple[re.Pattern, str]
"""A thread-name pattern (searched in the Python name and the OS name) and why it may stay."""

Site = tuple[tuple[str, int, str], ...]
"""Where a thread was started: up to three (file, line, function) frames, innermost first."""

_SITE_DEPTH = 3
_MAX_STACK = 20


# --- reading a process (through procfs and psutil; shared with probe.py) ---------------------

def child_processes(pid: int | str = "self") -> frozenset[tuple[int, float]]:
    """Running descendants of a process, as (pid, start time): a pid alone may be reused. An
    exited child its parent has not reaped yet (a zombie) holds nothing and is left out."""
    try:
        children = psutil.Process(os.getpid() if pid == "self" else int(pid)).children(
            recursive=True)
    except psutil.Error:
        return frozenset()
    out = set()
    for child in children:
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                out.add((child.pid, child.create_time()))
        except psutil.Error:
            pass
    return frozenset(out)


def describe_process(pid: int) -> str:
    try:
        proc = psutil.Process(pid)
        cmdline = " ".join(proc.cmdline()) or proc.name()
    except psutil.Error:
        return f"pid {pid} (gone)"
    return f"pid {pid} {cmdline[:200]}{'...' if len(cmdline) > 200 else ''}"


def describe_fds(pid: int | str, fds: Iterable[int]) -> list[tuple[int, str]]:
    """Each fd with its target; sockets also with their addresses and state, when known."""
    proc = psutil.Process(os.getpid() if pid == "self" else int(pid))
    connections = getattr(proc, "net_connections", None) or proc.connections  # psutil < 6
    try:
        by_fd = {c.fd: c for c in connections(kind="all")}
    except psutil.Error:
        by_fd = {}
    out = []
    for fd in fds:
        parts, conn = [fd_target(pid, fd)], by_fd.get(fd)
        if conn is not None:
            parts.append(_addr(conn.laddr))
            if conn.raddr:
                parts.append(f"-> {_addr(conn.raddr)}")
            if conn.status != psutil.CONN_NONE:
                parts.append(conn.status)
        out.append((fd, " ".join(p for p in parts if p)))
    return out


def _addr(addr: object) -> str:
    """``ip:port`` for an internet socket address, the path for a unix one."""
    return f"{addr.ip}:{addr.port}" if hasattr(addr, "ip") else str(addr or "")


def wait_until(clean: Callable[[], bool], grace: float) -> tuple[bool, float]:
    """Call ``clean`` until it is true or ``grace`` seconds passed; returns (clean, seconds).

    Waits 1 ms, then twice as long each turn up to 100 ms (goleak's backoff): a thread that
    is just exiting is seen within a millisecond, a slow one costs at most 100 ms extra.
    """
    start = time.monotonic()
    deadline = start + grace
    delay = 0.001
    while True:
        if clean():
            return True, time.monotonic() - start
        left = deadline - time.monotonic()
        if left <= 0:
            return False, time.monotonic() - start
        time.sleep(min(delay, left))
        delay = min(delay * 2, 0.1)


def cpu_note(cpu: float, wall: float) -> str:
    """CPU seconds, and as a share of one core over ``wall`` seconds when that is known."""
    if wall <= 0:
        return f"cpu={cpu:.2f}s"
    return f"cpu={cpu:.2f}s ({100 * cpu / wall:.0f}% of a core over {wall:.2f}s)"


# --- where threads were started -----------------------------------------------------------

_thread_sites: weakref.WeakKeyDictionary[threading.Thread, Site] = weakref.WeakKeyDictionary()
_raw_sites: dict[int, Site] = {}
_originals: dict[str, Callable] = {}
_depth = 0  # start_recording() calls not yet undone
_SKIP_FILES = (threading.__file__, os.path.dirname(concurrent.futures.__file__))
_RUNNER_DIRS = (f"{os.sep}_pytest{os.sep}", f"{os.sep}pluggy{os.sep}", f"{os.sep}unittest{os.sep}")


def _site(frame) -> Site:
    """The first frames outside threading and concurrent.futures, up to the test runner's."""
    while frame is not None and frame.f_code.co_filename.startswith(_SKIP_FILES):
        frame = frame.f_back
    out = []
    while frame is not None and len(out) < _SITE_DEPTH:
        filename = frame.f_code.co_filename
        if out and any(runner in filename for runner in _RUNNER_DIRS):
            break
        out.append((filename, frame.f_lineno, frame.f_code.co_name))
        frame = frame.f_back
    return tuple(out)


def format_site(site: Site | None) -> str:
    """``file:line in function``, then the callers that led there."""
    if not site:
        return "unknown (started while the guard was off)"
    head, *callers = (f"{f}:{line} in {fn}" for f, line, fn in site)
    return head + "".join(f"\n      called from {c}" for c in callers)


def start_recording() -> None:
    """Wrap ``Thread.start`` and ``_thread.start_new_thread`` to note their caller's file:line.

    Costs one frame walk per started thread, and only while a guard is on. Nests: each call
    needs its own ``stop_recording``.
    """
    global _depth
    _depth += 1
    if _depth > 1:
        return
    start = _originals["start"] = threading.Thread.start
    start_new = _originals["start_new_thread"] = _thread.start_new_thread

    @functools.wraps(start)
    def recording_start(self: threading.Thread) -> None:
        _thread_sites[self] = _site(sys._getframe(1))
        start(self)

    @functools.wraps(start_new)
    def recording_start_new_thread(function, args, kwargs=None):
        ident = start_new(function, args) if kwargs is None else start_new(function, args, kwargs)
        _raw_sites[ident] = _site(sys._getframe(1))
        return ident

    threading.Thread.start = recording_start
    _thread.start_new_thread = recording_start_new_thread


def stop_recording() -> None:
    """Undo one ``start_recording``; the last one puts the originals back."""
    global _depth
    if _depth == 0:
        return
    _depth -= 1
    if _depth:
        return
    threading.Thread.start = _originals.pop("start")
    _thread.start_new_thread = _originals.pop("start_new_thread")
    _raw_sites.clear()


# --- snapshots and comparison ---------------------------------------------------------------

@dataclass(frozen=True)
class Snapshot:
    """What this process holds at one moment."""

    at: float
    threads: frozenset[threading.Thread]
    tids: frozenset[int]
    fds: frozenset[int] | None
    frame_idents: frozenset[int]
    procs: frozenset[tuple[int, float]] | None = None

    @classmethod
    def take(cls, fds: bool, procs: bool = False) -> "Snapshot":
        return cls(time.monotonic(), frozenset(threading.enumerate()), task_ids(),
                   open_fds() if fds else None, frozenset(sys._current_frames()),
                   child_processes() if procs else None)

    def joined(self, other: "Snapshot") -> "Snapshot":
        """This baseline plus what ``other`` holds: used to adopt what a wider fixture made."""
        return Snapshot(self.at, self.threads | other.threads, self.tids | other.tids,
                        None if self.fds is None else self.fds | (other.fds or frozenset()),
                        self.frame_idents | other.frame_idents,
                        None if self.procs is None else self.procs | (other.procs or frozenset()))


def _is_dead_dummy(thread: threading.Thread, tids: frozenset[int]) -> bool:
    """A ``_DummyThread`` whose OS thread is gone: 3.11 never removes those from the table."""
    return isinstance(thread, threading._DummyThread) and thread.native_id not in tids


@dataclass
class Comparison:
    """Now against the baseline, allow-listed threads left out of the counts."""

    py: tuple[int, int]
    native: tuple[int, int]
    fd: tuple[int, int] | None
    threads: list[threading.Thread]
    native_only: list[int]
    new_fds: list[int]
    allowed: list[tuple[str, str]]
    new_procs: list[int] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.new_procs and all(
            now <= base for now, base in (self.py, self.native, self.fd or (0, 0)))


@dataclass
class Result:
    """The outcome of :meth:`Guard.settle`: ``ok``, the seconds waited and a report."""

    ok: bool
    elapsed: float
    comparison: Comparison | None = None
    details: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: what was left behind."""
        if self.ok:
            return f"threadguard: clean after {self.elapsed:.3f}s"
        c = self.comparison
        parts = []
        if c.threads:
            t = c.threads[0]
            site = _thread_sites.get(t)
            where = f" started at {os.path.basename(site[0][0])}:{site[0][1]}" if site else ""
            more = f" and {len(c.threads) - 1} more" if len(c.threads) > 1 else ""
            parts.append(f"thread {t.name!r}{where}{more}")
        if c.native_only:
            parts.append(f"{len(c.native_only)} native thread(s) with no threading.Thread")
        if c.new_fds:
            parts.append(f"{len(c.new_fds)} fd(s)")
        if c.new_procs:
            parts.append(f"{len(c.new_procs)} child process(es)")
        if not parts:
            parts.append("thread or fd counts above baseline")
        return f"threadguard: left behind after {self.elapsed:.2f}s: " + ", ".join(parts)

    def report(self) -> str:
        """The summary line, the counts, then one paragraph per leftover thread or fd."""
        if self.ok:
            return self.summary()
        c = self.comparison
        lines = [self.summary(),
                 f"  python threads: {c.py[0]} (baseline {c.py[1]})",
                 f"  native threads: {c.native[0]} (baseline {c.native[1]})"]
        if c.fd is not None:
            lines.append(f"  open fds: {c.fd[0]} (baseline {c.fd[1]})")
        for name, reason in c.allowed:
            lines.append(f"  allowed: {name!r} ({reason})")
        lines += self.details
        example = _allow_example(c.threads[0].name) if c.threads else "name-prefix"
        lines += ["", "Stop and join these threads (close these fds) in the code under test or in"
                  " its fixture's teardown. If one is meant to outlive the test, allow it:",
                  f"  @pytest.mark.threadguard(allow=[r\"^{_escape(example)}\"], reason=\"why\")"
                  " or the ini key threadguard_exclude."]
        return "\n".join(lines)


class Guard:
    """Baseline this process, then wait for it to give back every thread (and fd) it gained.

    ``ignore`` lists (pattern, reason) pairs for threads that may stay; ``fds`` adds the open
    file descriptors to the check, ``procs`` the running child processes (a broker's JVM, a
    server) and theirs.
    """

    def __init__(self, fds: bool = False, ignore: Sequence[Ignore] = (),
                 procs: bool = False) -> None:
        self.fds = fds
        self.procs = procs
        self.ignore: list[Ignore] = list(ignore)
        self.base: Snapshot | None = None

    def start(self) -> Snapshot:
        """Take the baseline and start noting where threads are started."""
        start_recording()
        self.base = Snapshot.take(self.fds, self.procs)
        return self.base

    def stop(self) -> None:
        """Stop noting where threads are started (the baseline stays usable)."""
        stop_recording()

    def allow(self, ignore: Iterable[Ignore]) -> None:
        """Let threads whose names match these patterns stay."""
        self.ignore.extend(ignore)

    def adopt(self, before: Snapshot) -> None:
        """Count what appeared since ``before`` as baseline (a wider-scoped fixture's threads)."""
        now = Snapshot.take(self.fds, self.procs)
        gained = Snapshot(now.at, now.threads - before.threads, now.tids - before.tids,
                          None if now.fds is None else now.fds - (before.fds or frozenset()),
                          now.frame_idents - before.frame_idents,
                          None if now.procs is None else now.procs - (before.procs or frozenset()))
        self.base = self.base.joined(gained)

    def _ignored(self, *names: str) -> str | None:
        for pattern, reason in self.ignore:
            if any(pattern.search(n) for n in names):
                return reason
        return None

    def _quick_clean(self) -> bool:
        base = self.base
        return (threading.active_count() <= len(base.threads)
                and len(task_ids()) <= len(base.tids)
                and (base.fds is None or len(open_fds()) <= len(base.fds))
                and (base.procs is None or child_processes() <= base.procs))

    def compare(self) -> Comparison:
        """Where the process stands against the baseline now."""
        base = self.base
        tids = task_ids()
        threads = [t for t in threading.enumerate() if not _is_dead_dummy(t, tids)]
        allowed: list[tuple[str, str]] = []
        leaked: list[threading.Thread] = []
        allowed_tids: set[int] = set()
        for t in threads:
            if t in base.threads:
                continue
            reason = self._ignored(t.name, comm("self", t.native_id)) if self.ignore else None
            if reason is None:
                leaked.append(t)
            else:
                allowed.append((t.name, reason))
                allowed_tids.add(t.native_id)
        named = {t.native_id for t in threads}
        native_only = []
        for tid in sorted(tids - base.tids - named):
            reason = self._ignored(comm("self", tid)) if self.ignore else None
            if reason is None:
                native_only.append(tid)
            else:
                allowed.append((f"tid {tid} {comm('self', tid)}", reason))
                allowed_tids.add(tid)
        fd = new_fds = None
        if base.fds is not None:
            fds = open_fds()
            fd, new_fds = (len(fds), len(base.fds)), sorted(fds - base.fds)
        new_procs = ([] if base.procs is None
                     else sorted(pid for pid, _ in child_processes() - base.procs))
        return Comparison(py=(len(threads) - len(allowed_tids & named), len(base.threads)),
                          native=(len(tids) - len(allowed_tids), len(base.tids)),
                          fd=fd, threads=leaked, native_only=native_only,
                          new_fds=new_fds or [], allowed=allowed, new_procs=new_procs)

    def settle(self, grace: float) -> Result:
        """Wait up to ``grace`` seconds for the process to be back at its baseline."""
        last: list[Comparison] = []

        def clean() -> bool:
            if self._quick_clean():
                return True
            last[:] = [self.compare()]
            return last[0].clean

        ok, elapsed = wait_until(clean, grace)
        if ok:
            return Result(True, elapsed)
        return Result(False, elapsed, last[0], self._details(last[0]))

    def _details(self, c: Comparison) -> list[str]:
        wall = time.monotonic() - self.base.at
        frames = sys._current_frames()
        out: list[str] = []
        unnamed = comm("self", os.getpid())
        for t in c.threads:
            nid = t.native_id
            os_name = comm("self", nid)
            out += ["", f"Thread {t.name!r} nid={nid} (nid={nid:#x}) daemon={t.daemon} "
                        f"{cpu_note(thread_cpu('self', nid), wall)}"
                        + (f" os-name={os_name!r}" if os_name not in (t.name, unnamed) else ""),
                    f"  started at {format_site(_thread_sites.get(t))}"]
            out += _stack(frames.get(t.ident))
        for tid in c.native_only:
            out += ["", f"Native thread tid={tid} (nid={tid:#x}) comm={comm('self', tid)!r} "
                        f"{cpu_note(thread_cpu('self', tid), wall)}: no threading.Thread "
                        "(started by _thread.start_new_thread or C code)"]
        if c.native_only:
            known = {t.ident for t in threading.enumerate()}
            for ident in sorted(set(frames) - known - self.base.frame_idents):
                out += ["", f"Python code in a thread with no threading.Thread, ident={ident:#x}",
                        f"  started at {format_site(_raw_sites.get(ident))}"]
                out += _stack(frames[ident])
        if c.new_procs:
            out += ["", "Child processes still running:"]
            out += [f"  {describe_process(pid)}" for pid in c.new_procs]
        if c.new_fds:
            out += ["", "New file descriptors:"]
            out += [f"  fd {fd} -> {target}" for fd, target in describe_fds("self", c.new_fds)]
        return out


def _allow_example(name: str) -> str:
    """The name prefix of a thread's group (``threads.group_prefix``), for an allow pattern; the
    whole name when its group does not start with it (``Thread-7 (run)``)."""
    prefix = group_prefix(name)
    return prefix if name.startswith(prefix) else name


def _escape(name: str) -> str:
    """``re.escape`` without escaping ``-``, which only matters inside brackets."""
    return re.escape(name).replace("\\-", "-")


def _stack(frame) -> list[str]:
    """A thread's current Python stack below the threading machinery, innermost call last."""
    if frame is None:
        return ["  (no Python stack: the thread is exiting or runs no Python code)"]
    stack = traceback.extract_stack(frame)
    while len(stack) > 1 and stack[0].filename == threading.__file__:
        del stack[0]  # Thread._bootstrap and friends: the same for every thread
    entries = traceback.format_list(stack[-_MAX_STACK:])
    return ["  stack (most recent call last):"] + [
        "  " + line for entry in entries for line in entry.rstrip("\n").split("\n")]
