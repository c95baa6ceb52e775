"""Flame graphs from inside the process: a named OS thread samples every thread's stack for a while.

``Profiler.run(seconds, hz, mode)`` starts one sampler thread (a real OS thread even under gevent,
or a CPU-bound greenlet would starve it), which reads ``sys._current_frames()`` at ``hz`` until the
time is up and then stops by itself. Stacks are folded (one line per unique stack and its count),
each prefixed with the thread's role and name, and rendered as folded text, speedscope JSON or SVG.

``mode="cpu"`` (the default) is an on-CPU profile: each tick reads every thread's CPU clock
(Linux per-thread ``CLOCK_THREAD_CPUTIME_ID`` by tid, one ``clock_gettime`` and no file IO) and
charges the thread's current stack with the CPU it used since the previous tick, in units of one
tick (``1/hz`` s of CPU), carrying fractions over. A thread parked in ``wait``/``select`` uses no
CPU and never appears; the counts add up to CPU time, as a CPU-clock profiler's would.
``mode="wall"`` counts every thread at every tick, parked or not (where the time goes).

Known bias: the sampler needs the GIL to read stacks, and a thread gives the GIL up either at the
switch interval (a CPU-bound thread, caught mid-work: exact) or when it blocks. So a thread that
runs in short bursts is charged its true CPU, but often at the call where it parked (``wait``,
``select``) rather than at the code that burned it; its outer frames still say which loop it was.
"""
from __future__ import annotations

import html
import json
import os
import sys
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import Any, Callable

from .threads import REGISTRY, green, set_os_thread_name, thread_group

MIN_SECONDS, MAX_SECONDS = 0.1, 60.0
MIN_HZ, MAX_HZ = 1, 1000
MODES = ("cpu", "wall")
_MAX_DEPTH = 128
_BOOTSTRAP = {"_bootstrap", "_bootstrap_inner"}
_THREADING_FILE = threading.__file__


class Busy(Exception):
    """A profile is already being taken: one sampler at a time."""


def _originals() -> tuple[Callable[..., Any], Callable[[float], None], Callable[[], int],
                          Callable[[], Any]]:
    """(start_new_thread, sleep, get_ident, allocate_lock) of the OS, also under gevent."""
    if green():
        from gevent.monkey import get_original
        return (get_original("_thread", "start_new_thread"), get_original("time", "sleep"),
                get_original("_thread", "get_ident"), get_original("_thread", "allocate_lock"))
    import _thread
    return _thread.start_new_thread, time.sleep, _thread.get_ident, _thread.allocate_lock


# Under gevent, OSThreads are invisible to (patched) threading: ident -> (role, name).
_GREEN_OS_THREADS: dict[int, tuple[str, str]] = {}
# Under gevent, OS thread ident -> native id of the OS threads whose CPU clock can be read:
# OSThreads, and the thread the greenlets run on (recorded by ``Profiler.run``).
_GREEN_NATIVE_IDS: dict[int, int] = {}


def thread_cpu_clock(native_id: int) -> int:
    """The clock id of a thread's CPU clock by its tid (what glibc's ``pthread_getcpuclockid``
    computes, without reading a ``pthread_t`` that may already be freed): reading it for a thread
    that has exited raises OSError instead of reading someone else's clock."""
    return (~native_id << 3) | 6   # Linux MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)


def cpu_mode_supported() -> bool:
    """True where per-thread CPU clocks can be read by tid (Linux)."""
    try:
        time.clock_gettime_ns(thread_cpu_clock(threading.get_native_id()))
    except (OSError, AttributeError):
        return False
    return True


class OSThread:
    """One owned OS thread that is never a greenlet: ``start``, then ``join`` (it ends itself).

    Off gevent it is an ordinary ``threading.Thread`` registered in ``REGISTRY`` under ``role``;
    under gevent it is started with the original ``start_new_thread`` and is visible by its OS
    name only (``threading`` there lists greenlets).
    """

    def __init__(self, name: str, target: Callable[[], None], role: str, owner: str) -> None:
        self.name = name
        self._target = target
        self._role, self._owner = role, owner
        self._thread: threading.Thread | None = None
        self._done: Any = None
        self.ident: int | None = None

    def start(self) -> None:
        if green():
            start_new, _, _, allocate = _originals()
            self._done = allocate()
            self._done.acquire()
            start_new(self._run_green, ())
        else:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            REGISTRY.register(self._thread, self._role, owner=self._owner)
            self._thread.start()

    def _run(self) -> None:
        set_os_thread_name(self.name, os_thread=True)
        self.ident = threading.get_ident()
        self._target()

    def _run_green(self) -> None:
        self.ident = _originals()[2]()
        _GREEN_OS_THREADS[self.ident] = (self._role, self.name)
        _GREEN_NATIVE_IDS[self.ident] = threading.get_native_id()
        try:
            set_os_thread_name(self.name, os_thread=True)
            self._target()
        finally:
            del _GREEN_OS_THREADS[self.ident], _GREEN_NATIVE_IDS[self.ident]
            self._done.release()

    def join(self, timeout: float) -> bool:
        """Wait for the thread to end; True if it did. Under gevent this blocks the hub, so
        callers first wait cooperatively for the target to finish."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        if self._done is not None and self._done.acquire(timeout=timeout):
            self._done.release()
            return True
        return self._done is None


@dataclass
class Profile:
    """Sampled stacks: (role, thread name, code ids outermost first) -> count; ``codes`` maps
    each id to its code object (hashing ids is cheaper than hashing code objects). ``samples`` is
    the number of ticks; in ``cpu`` mode a count is CPU time in ticks (``1/hz`` s of CPU), and
    ``unclocked`` counts thread-ticks skipped because the thread's CPU clock was unknown."""

    seconds: float
    hz: int
    samples: int = 0
    mode: str = "wall"
    unclocked: int = 0
    stacks: Counter = field(default_factory=Counter)
    codes: dict[int, CodeType] = field(default_factory=dict)

    def add(self, role: str, thread: str, codes: list[CodeType], n: int = 1) -> None:
        """Count one stack (outermost frame first)."""
        for c in codes:
            self.codes[id(c)] = c
        self.stacks[(role, thread, tuple(map(id, codes)))] += n

    def folded(self) -> list[tuple[list[str], int]]:
        """Each unique stack as [role, thread, frame, ..., leaf] with its count, hottest first."""
        out = [([role, name, *(_label(self.codes[c]) for c in ids)], n)
               for (role, name, ids), n in self.stacks.items()]
        out.sort(key=lambda item: (-item[1], item[0]))
        return out

    def title(self) -> str:
        what = (f"on-CPU, 1 = {1000 / self.hz:g} ms of CPU" if self.mode == "cpu"
                else "wall-clock, every thread every tick")
        if self.unclocked:
            what += f", {self.unclocked} thread-ticks left out (no CPU clock)"
        return (f"kafkatail pid {os.getpid()}: {self.samples} ticks at {self.hz} Hz over "
                f"{self.seconds:g} s, {what} (role; thread; stack)")

    def render(self, fmt: str) -> tuple[str, str]:
        """(body, mimetype) for ``folded``, ``speedscope`` or ``svg``."""
        return render(self.folded(), fmt, self.title())


Folded = list[tuple[list[str], int]]


def folded_text(stacks: Folded) -> str:
    """``a;b;c count`` per stack (``;`` inside a frame becomes ``:``)."""
    return "".join(f"{';'.join(s.replace(';', ':') for s in stack)} {n}\n" for stack, n in stacks)


def parse_folded(text: str) -> Folded:
    """The stacks of a folded file (this module's or ``py-spy record --format raw``), hottest
    first; lines that are not ``stack count`` are skipped."""
    out = []
    for line in text.splitlines():
        stack, _, n = line.rstrip().rpartition(" ")
        if stack and n.isdigit():
            out.append((stack.split(";"), int(n)))
    out.sort(key=lambda item: (-item[1], item[0]))
    return out


def speedscope(stacks: Folded, name: str) -> dict[str, Any]:
    """speedscope's file format: one sampled profile per (first two frames: role and thread),
    frames shared; frame labels ``name (file:line)`` are split into their fields."""
    frames: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    by_thread: dict[str, list[tuple[list[int], int]]] = {}
    for stack, n in stacks:
        ids = []
        for label in stack[2:]:
            if label not in index:
                index[label] = len(frames)
                fname, _, where = label.partition(" (")
                file, _, line = where.rstrip(")").rpartition(":")
                frame: dict[str, Any] = {"name": fname, "file": file}
                if line.isdigit():
                    frame["line"] = int(line)
                frames.append(frame)
            ids.append(index[label])
        by_thread.setdefault("/".join(stack[:2]), []).append((ids, n))
    profiles = [{"type": "sampled", "name": thread, "unit": "none", "startValue": 0,
                 "endValue": sum(n for _, n in rows), "samples": [ids for ids, _ in rows],
                 "weights": [n for _, n in rows]}
                for thread, rows in sorted(by_thread.items(),
                                           key=lambda kv: -sum(n for _, n in kv[1]))]
    return {"$schema": "https://www.speedscope.app/file-format-schema.json",
            "exporter": "kafkatail", "name": name,
            "activeProfileIndex": 0, "shared": {"frames": frames}, "profiles": profiles}


def flame_svg(stacks: Folded, title: str, width: int = 1200, row: int = 16) -> str:
    """A self-contained flame graph (root at the bottom, the first two levels, role and thread
    group, in grey); hover a box for its counts. Threads of one group (``kt-tail-t-*``, by
    ``threads.thread_group``) share a flame, or a server with 200 tails would draw 200 slivers;
    folded and speedscope keep them apart."""
    root: dict[str, Any] = {"n": 0, "kids": {}}
    for stack, n in stacks:
        node = root
        node["n"] += n
        for label in [stack[0], thread_group(stack[1]), *stack[2:]] if len(stack) > 1 else stack:
            node = node["kids"].setdefault(label, {"n": 0, "kids": {}})
            node["n"] += n
    depth = max((len(s) for s, _ in stacks), default=0)
    height = (depth + 2) * row
    total = root["n"] or 1
    boxes: list[str] = []

    def draw(node: dict[str, Any], x: float, level: int) -> None:
        for label, kid in sorted(node["kids"].items()):
            w = width * kid["n"] / total
            if w >= 0.5:
                y = height - (level + 2) * row
                # role and thread rows in grey, frames in warm colours (stable per name)
                fill = ("hsl(210,15%,80%)" if level < 2 else
                        f"hsl({20 + zlib.crc32(label.encode()) % 40},90%,60%)")
                share = 100 * kid["n"] / total
                tip = html.escape(f"{label}: {kid['n']} samples ({share:.1f}%)")
                text = html.escape(label[: int(w / 7)]) if w > 21 else ""
                boxes.append(
                    f'<g><title>{tip}</title><rect x="{x:.1f}" y="{y}" width="{w:.1f}" '
                    f'height="{row - 1}" fill="{fill}"/>'
                    f'<text x="{x + 3:.1f}" y="{y + row - 4}">{text}</text></g>')
                draw(kid, x, level + 1)
            x += w

    draw(root, 0.0, 0)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="monospace" font-size="11">'
            f'<rect width="100%" height="100%" fill="#fff"/>'
            f'<text x="4" y="{row - 4}">{html.escape(title)}</text>{"".join(boxes)}</svg>\n')


def render(stacks: Folded, fmt: str, title: str) -> tuple[str, str]:
    """(body, mimetype) for ``folded``, ``speedscope`` or ``svg``."""
    if fmt == "folded":
        return folded_text(stacks), "text/plain"
    if fmt == "speedscope":
        return json.dumps(speedscope(stacks, title)), "application/json"
    return flame_svg(stacks, title), "image/svg+xml"


def _label(code: CodeType) -> str:
    return f"{code.co_name} ({os.path.basename(code.co_filename)}:{code.co_firstlineno})"


def _who(ident: int, bottom: FrameType, is_green: bool) -> tuple[str, str]:
    """(role, name) of the thread (or, under gevent, running greenlet) that owns a stack."""
    thread = threading._active.get(ident)  # type: ignore[attr-defined]
    code = bottom.f_code
    if is_green and code.co_name in _BOOTSTRAP and code.co_filename == _THREADING_FILE:
        # One OS thread runs whichever greenlet is current: its Thread is the bootstrap's self.
        candidate = bottom.f_locals.get("self")
        if isinstance(candidate, threading.Thread):
            thread = candidate
    if thread is None:
        if not is_green:
            return "native", f"tid-{ident}"
        # An OSThread, or a greenlet that is not a Thread (gunicorn's handlers, the hub).
        return _GREEN_OS_THREADS.get(ident) or (
            "server", f"greenlet@{os.path.basename(code.co_filename)}")
    return REGISTRY.info(thread).role, thread.name


class _CpuClocks:
    """Per-thread CPU since the previous tick, in ticks with the fractions carried over.

    Keyed by ident, with the clock of the thread's native id resolved once: when that thread
    exits its clock raises, and the ident (which the next thread may reuse) is resolved again.
    Every ``forget_all_but`` re-resolves everything, so a reused ident is caught within 100 ticks
    even in the rare case that its old tid was reused too. The common case, a parked thread whose
    clock did not move, is one ``clock_gettime`` and one comparison.
    """

    def __init__(self, period_ns: float, is_green: bool) -> None:
        self.period_ns = period_ns
        self.is_green = is_green
        self.clock: dict[int, int] = {}               # ident -> CPU clock id
        self.last: dict[int, int] = {}                # ident -> CPU ns at the previous tick
        self.carry: dict[int, float] = {}             # ident -> fraction of a tick owed
        self.started = False    # after the first tick, a thread seen first is new: all its CPU
        #                         was used since the previous tick

    def _resolve(self, ident: int) -> int | None:
        if self.is_green:   # threading lists greenlets there; OS threads are known by ident
            nid = _GREEN_NATIVE_IDS.get(ident)
        else:
            thread = threading._active.get(ident)  # type: ignore[attr-defined]
            nid = thread.native_id if thread is not None else None
        if nid is None:
            return None
        self.clock[ident] = clock = thread_cpu_clock(nid)
        return clock

    def ticks(self, ident: int) -> int | None:
        """Whole ticks of CPU ``ident`` used since it was last seen (0 on first sight); None if
        its CPU clock cannot be read."""
        clock = self.clock.get(ident)
        try:
            if clock is None:
                raise OSError
            now = time.clock_gettime_ns(clock)
        except OSError:     # not resolved yet, or its thread exited and the ident is reused
            self.last.pop(ident, None)
            clock = self._resolve(ident)
            if clock is None:
                return None
            try:
                now = time.clock_gettime_ns(clock)
            except OSError:     # exited since sys._current_frames() listed it
                return None
        prev = self.last.get(ident)
        if prev == now:
            return 0
        self.last[ident] = now
        if prev is None:
            self.carry[ident] = 0.0
            if not self.started:
                return 0
            prev = 0
        owed = self.carry[ident] + (now - prev) / self.period_ns
        n = int(owed)
        self.carry[ident] = owed - n
        return n

    def forget_all_but(self, idents: Any) -> None:
        """Drop threads that are gone and re-resolve the rest (see the class docstring)."""
        for ident in self.clock.keys() - idents:
            del self.clock[ident]
            self.last.pop(ident, None)
            self.carry.pop(ident, None)
        for ident in list(self.clock):
            old = self.clock.pop(ident)
            if self._resolve(ident) != old:     # gone, or the ident now names another thread
                self.last.pop(ident, None)


class Profiler:
    """Takes one profile at a time; a second concurrent ``run`` raises ``Busy``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.profiles_taken = 0

    def run(self, seconds: float, hz: int, wait: Callable[[float], None] | None = None,
            mode: str = "cpu") -> Profile:
        """Sample every thread ``hz`` times a second for ``seconds``; blocks the caller (who
        waits with ``wait``, default ``time.sleep``, which is cooperative under gevent)."""
        if not (MIN_SECONDS <= seconds <= MAX_SECONDS and MIN_HZ <= hz <= MAX_HZ):
            raise ValueError(
                f"seconds must be {MIN_SECONDS}-{MAX_SECONDS} and hz {MIN_HZ}-{MAX_HZ}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if mode == "cpu" and not cpu_mode_supported():
            raise ValueError("mode=cpu needs Linux per-thread CPU clocks; use mode=wall")
        if not self._lock.acquire(blocking=False):
            raise Busy("a profile is already running")
        try:
            caller = _originals()[2]()
            if green():   # the greenlets' OS thread, which is the caller's
                _GREEN_NATIVE_IDS[caller] = threading.get_native_id()
            profile = Profile(seconds, hz, mode=mode)
            finished: list[bool] = []
            sampler = OSThread("kt-profiler", lambda: self._sample(profile, finished),
                               role="profiler", owner="profiler")
            sampler.start()
            wait = wait or time.sleep
            deadline = time.monotonic() + seconds + 5
            while not finished and time.monotonic() < deadline:
                wait(min(0.05, seconds))
            sampler.join(5)
            self.profiles_taken += 1
            return profile
        finally:
            _GREEN_NATIVE_IDS.pop(caller, None)
            self._lock.release()

    def _sample(self, profile: Profile, finished: list[bool]) -> None:
        _, sleep, get_ident, _ = _originals()
        me = get_ident()
        is_green = green()
        period = 1.0 / profile.hz
        clocks = _CpuClocks(1e9 * period, is_green) if profile.mode == "cpu" else None
        stacks, known = profile.stacks, profile.codes
        clock_of, last_of = (clocks.clock.get, clocks.last.get) if clocks else (None, None)
        read = time.clock_gettime_ns
        end = time.monotonic() + profile.seconds
        next_at = time.monotonic()
        try:
            while True:
                current = sys._current_frames()
                for ident, frame in current.items():
                    if ident == me:
                        continue
                    n = 1
                    if clocks is not None:
                        clock = clock_of(ident)
                        if clock is not None:   # inline fast path: a parked thread, clock still
                            try:
                                if read(clock) == last_of(ident):
                                    continue
                            except OSError:
                                pass
                        ticks = clocks.ticks(ident)
                        if ticks is None:
                            profile.unclocked += 1
                            continue
                        if not ticks:
                            continue
                        n = ticks
                    ids = []
                    bottom = frame
                    f: FrameType | None = frame
                    while f is not None and len(ids) < _MAX_DEPTH:
                        code = f.f_code
                        ids.append(id(code))
                        known.setdefault(id(code), code)
                        bottom = f
                        f = f.f_back
                    role, name = _who(ident, bottom, is_green)
                    ids.reverse()
                    stacks[(role, name, tuple(ids))] += n
                profile.samples += 1
                if clocks is not None:
                    clocks.started = True
                    if profile.samples % 100 == 0:
                        clocks.forget_all_but(current.keys())
                next_at += period
                now = time.monotonic()
                if now >= end:
                    return
                if next_at > now:
                    sleep(min(next_at, end) - now)
                else:
                    next_at = now  # fell behind: do not burst to catch up
        finally:
            finished.append(True)
