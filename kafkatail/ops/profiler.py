"""Flame graphs from inside the process: a named OS thread samples every thread's stack for a while.

``Profiler.run(seconds, hz)`` starts one sampler thread (a real OS thread even under gevent, or a
CPU-bound greenlet would starve it), which reads ``sys._current_frames()`` at ``hz`` until the time
is up and then stops by itself. Stacks are folded (one line per unique stack and its count), each
prefixed with the thread's role and name, and rendered as folded text, speedscope JSON or an SVG.
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

from .threads import REGISTRY, green

MIN_SECONDS, MAX_SECONDS = 0.1, 60.0
MIN_HZ, MAX_HZ = 1, 1000
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


def set_os_thread_name(name: str) -> None:
    """Name the calling OS thread (Linux ``comm``), also under gevent where it is a real thread
    that shares nothing with the greenlets."""
    try:
        with open("/proc/thread-self/comm", "wb") as fh:
            fh.write(name.encode()[:15])
    except OSError:
        pass


# Under gevent, OSThreads are invisible to (patched) threading: ident -> (role, name).
_GREEN_OS_THREADS: dict[int, tuple[str, str]] = {}


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
        set_os_thread_name(self.name)
        self.ident = threading.get_ident()
        self._target()

    def _run_green(self) -> None:
        self.ident = _originals()[2]()
        _GREEN_OS_THREADS[self.ident] = (self._role, self.name)
        try:
            set_os_thread_name(self.name)
            self._target()
        finally:
            del _GREEN_OS_THREADS[self.ident]
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
    each id to its code object (hashing ids is cheaper than hashing code objects)."""

    seconds: float
    hz: int
    samples: int = 0
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

    def folded_text(self) -> str:
        """Brendan Gregg's folded format: ``a;b;c count`` per line (flamegraph.pl, speedscope)."""
        return "".join(f"{';'.join(s.replace(';', ':') for s in stack)} {n}\n"
                       for stack, n in self.folded())

    def speedscope(self) -> dict[str, Any]:
        """speedscope's file format: one sampled profile per thread, frames shared."""
        frames: list[dict[str, Any]] = []
        index: dict[str, int] = {}
        by_thread: dict[str, list[tuple[list[int], int]]] = {}
        for stack, n in self.folded():
            ids = []
            for label in stack[2:]:
                if label not in index:
                    index[label] = len(frames)
                    name, _, where = label.partition(" (")
                    file, _, line = where.rstrip(")").rpartition(":")
                    frame: dict[str, Any] = {"name": name, "file": file}
                    if line.isdigit():
                        frame["line"] = int(line)
                    frames.append(frame)
                ids.append(index[label])
            by_thread.setdefault(f"{stack[0]}/{stack[1]}", []).append((ids, n))
        profiles = [{"type": "sampled", "name": thread, "unit": "none", "startValue": 0,
                     "endValue": sum(n for _, n in rows), "samples": [ids for ids, _ in rows],
                     "weights": [n for _, n in rows]}
                    for thread, rows in sorted(by_thread.items(),
                                               key=lambda kv: -sum(n for _, n in kv[1]))]
        return {"$schema": "https://www.speedscope.app/file-format-schema.json",
                "exporter": "kafkatail", "name": f"kafkatail pid {os.getpid()}",
                "activeProfileIndex": 0, "shared": {"frames": frames}, "profiles": profiles}

    def svg(self, width: int = 1200, row: int = 16) -> str:
        """A self-contained flame graph (root at the bottom), hover a box for its counts."""
        root: dict[str, Any] = {"n": 0, "kids": {}}
        stacks = self.folded()
        for stack, n in stacks:
            node = root
            node["n"] += n
            for label in stack:
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
        title = html.escape(f"kafkatail pid {os.getpid()}: {self.samples} samples at {self.hz} Hz "
                            f"over {self.seconds:g} s (role; thread; stack)")
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                f'font-family="monospace" font-size="11">'
                f'<rect width="100%" height="100%" fill="#fff"/>'
                f'<text x="4" y="{row - 4}">{title}</text>{"".join(boxes)}</svg>\n')

    def render(self, fmt: str) -> tuple[str, str]:
        """(body, mimetype) for ``folded``, ``speedscope`` or ``svg``."""
        if fmt == "folded":
            return self.folded_text(), "text/plain"
        if fmt == "speedscope":
            return json.dumps(self.speedscope()), "application/json"
        return self.svg(), "image/svg+xml"


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


class Profiler:
    """Takes one profile at a time; a second concurrent ``run`` raises ``Busy``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.profiles_taken = 0

    def run(self, seconds: float, hz: int, wait: Callable[[float], None] | None = None) -> Profile:
        """Sample every thread ``hz`` times a second for ``seconds``; blocks the caller (who
        waits with ``wait``, default ``time.sleep``, which is cooperative under gevent)."""
        if not (MIN_SECONDS <= seconds <= MAX_SECONDS and MIN_HZ <= hz <= MAX_HZ):
            raise ValueError(
                f"seconds must be {MIN_SECONDS}-{MAX_SECONDS} and hz {MIN_HZ}-{MAX_HZ}")
        if not self._lock.acquire(blocking=False):
            raise Busy("a profile is already running")
        try:
            profile = Profile(seconds, hz)
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
            self._lock.release()

    def _sample(self, profile: Profile, finished: list[bool]) -> None:
        _, sleep, get_ident, _ = _originals()
        me = get_ident()
        is_green = green()
        period = 1.0 / profile.hz
        stacks, known = profile.stacks, profile.codes
        end = time.monotonic() + profile.seconds
        next_at = time.monotonic()
        try:
            while True:
                for ident, frame in sys._current_frames().items():
                    if ident == me:
                        continue
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
                    stacks[(role, name, tuple(ids))] += 1
                profile.samples += 1
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
