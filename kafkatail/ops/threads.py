"""Know every thread: OS-visible names, the group a name puts a thread in, and the registry of
what each thread is for.

Linux keeps 15 bytes of a thread's name (``/proc/PID/task/TID/comm``); Python 3.11 never sets
it, so every Python thread would show the interpreter's name in ``top -H``.
``set_os_thread_name`` (the one place that names the calling OS thread) and ``rename`` (another
thread) set it.
``thread_group`` is the one rule for which threads are "the same kind" (the guard, the probe,
leakcheck and the profiler's flame graph). ``REGISTRY`` records each thread's role, owner and
tail.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import sys
import threading
import time
import traceback
import weakref
from dataclasses import dataclass, field
from typing import Any

from . import procfs

_PR_SET_NAME = 15
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform == "linux" else None


def native_name(name: str) -> bytes:
    """The 15-byte OS name for a Python thread name: keep the head and the unique tail."""
    raw = name.encode("utf-8", "replace")
    if len(raw) <= 15:
        return raw
    return raw[:9] + b"~" + raw[-5:]


def green() -> bool:
    """True under gevent's monkey-patching: "threads" are greenlets sharing one OS thread."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("threading")


def set_os_thread_name(name: str, os_thread: bool = False) -> None:
    """Set the calling OS thread's name (``prctl(PR_SET_NAME)``; no-op off Linux). Under gevent
    a ``threading.Thread`` is a greenlet and naming it would rename the one OS thread they all
    share, so it is skipped unless ``os_thread``: a real OS thread (the profiler's sampler,
    gevent's threadpool)."""
    if _libc is not None and (os_thread or not green()):
        _libc.prctl(_PR_SET_NAME, ctypes.c_char_p(native_name(name)), 0, 0, 0)


def rename(thread: threading.Thread, name: str) -> None:
    """Name another, already running thread: its Python name and, through procfs, its OS name."""
    thread.name = name
    if thread.native_id is not None and not green():
        procfs.set_comm(thread.native_id, native_name(name))


def name_pool_thread(thread: threading.Thread | None = None) -> None:
    """A ThreadPoolExecutor thread (gunicorn gthread's request pool) as ``kt-http-N``, OS name
    too; the executor's default leaves the interpreter's name on every one."""
    thread = thread or threading.current_thread()
    if thread.name.startswith("ThreadPoolExecutor-"):
        rename(thread, "kt-http-" + thread.name.rpartition("_")[2])


# A trailing id: numbers after a separator (``-12``, ``-7-0``, ``-0_12``, ``-3.0.12``), numbers
# glued to the name (``worker12``) or a hex id of 6+ characters, before an optional Python
# default-name suffix such as `` (target)`` in ``Thread-7 (target)``.
ID_SEPARATORS = "-_.:~ "
_ID_TAIL = re.compile(r"(?:(?<=[-_.:~ ])\d+(?:[-_.:~ ]\d+)*|\d+(?:[._:]\d+)*"
                      r"|(?<=[-_.:~])[0-9a-f]{6,})(?=(?: \([\w.<>]*\))?$)")


def thread_group(name: str, wildcard: str = "*") -> str:
    """The group a thread's name puts it in: the name with its trailing id replaced by
    ``wildcard``: ``kt-tail-t-17`` -> ``kt-tail-t-*``, ``Thread-7 (run)`` -> ``Thread-* (run)``,
    ``kafka-io-7-0`` -> ``kafka-io-*``. A name with no id (or nothing but one) is its own group.
    leakcheck shows groups with ``wildcard=""`` (``kafka-io-kt-``), the flame graph with ``*``."""
    found = _ID_TAIL.search(name)
    if found is None or (found.start() == 0 and found.end() == len(name)):
        return name
    return name[:found.start()] + wildcard + name[found.end():]


def group_prefix(name: str) -> str:
    """A thread's group as a plain name, with no id and no trailing separator: ``kafka-io-kt-17``
    -> ``kafka-io-kt``, ``Thread-7 (run)`` -> ``Thread- (run)`` (the probe's report, the
    guard's allow pattern)."""
    return thread_group(name, "").rstrip(ID_SEPARATORS) or name


# Threads kafkatail does not start itself but expects, by the names their libraries give them.
_LIBRARY_ROLES = (
    ("kt-http-", "server"),              # gunicorn gthread's request pool (name_pool_thread)
    ("ThreadPoolExecutor-", "server"),
    ("MainThread", "server"),
    ("kt-test-http", "server"),
    ("Thread-", "server"),               # werkzeug's per-request threads (tests, dev server)
    ("Dummy-", "server"),                # gevent worker: request greenlets seen by threading
    ("kt-shutdown", "server"),
)


@dataclass
class ThreadInfo:
    """What kafkatail knows of a thread: its role, who owns it, and what it serves."""

    role: str
    owner: str = ""
    topic: str | None = None
    client: str | None = None
    tail_id: int | None = None
    started: float = field(default_factory=time.monotonic)


# Native tasks with no threading.Thread, by the OS names their libraries give them.
_NATIVE_ROLES = (
    ("rdk:", "kafka-io"),                # librdkafka (consumer_backend = "confluent")
)


def native_role(comm: str | None) -> str:
    """The role of a native task (no threading.Thread) from its OS name; "native" if unknown."""
    for prefix, role in _NATIVE_ROLES:
        if comm and comm.startswith(prefix):
            return role
    return "native"


def native_tasks() -> dict[int, str]:
    """This process's OS tasks with no threading.Thread (tid -> OS name): librdkafka's, say."""
    if sys.platform != "linux":
        return {}
    known = {t.native_id for t in threading.enumerate()}
    known.add(os.getpid())
    return procfs.comms("self", procfs.task_ids() - known)


class ThreadRegistry:
    """The one place that says what each thread is: the reaper, /debug/threads, /metrics and
    the test guard all ask it. Entries die with their threads (weak keys)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._info: "weakref.WeakKeyDictionary[threading.Thread, ThreadInfo]" = (
            weakref.WeakKeyDictionary())
        self._native: dict[int, ThreadInfo] = {}

    def register(self, thread: threading.Thread, role: str, **info: Any) -> None:
        with self._lock:
            self._info[thread] = ThreadInfo(role, **info)

    def register_native(self, tids: "set[int] | frozenset[int]", role: str, **info: Any) -> None:
        """Native tasks a library started for an owner (librdkafka's rdk:* for one client).
        Entries of tasks that are gone are dropped here and by ``native_info``."""
        with self._lock:
            for tid in list(self._native):
                if not procfs.task_exists(tid):
                    del self._native[tid]
            for tid in tids:
                self._native[tid] = ThreadInfo(role, **info)

    def native_tids(self) -> set[int]:
        with self._lock:
            return set(self._native)

    def forget_native(self, owner: str) -> None:
        """Drop an owner's native tasks (its client was destroyed, which joined them)."""
        with self._lock:
            self._native = {tid: i for tid, i in self._native.items() if i.owner != owner}

    def native_info(self, tid: int, comm: str | None) -> ThreadInfo:
        """What a native task (no threading.Thread) is: registered, else by its OS name."""
        role = native_role(comm)
        with self._lock:
            known = self._native.get(tid)
            if known is not None and (role == known.role):
                return known
            self._native.pop(tid, None)
        return ThreadInfo(role, owner="library" if role != "native" else "")

    def info(self, thread: threading.Thread) -> ThreadInfo:
        with self._lock:
            known = self._info.get(thread)
        if known is not None:
            return known
        for prefix, role in _LIBRARY_ROLES:
            if thread.name.startswith(prefix):
                return ThreadInfo(role, owner="library")
        return ThreadInfo("unknown")


REGISTRY = ThreadRegistry()


def stack_of(frame: Any, limit: int = 40) -> list[str]:
    """A thread's Python stack, innermost last, as ``file:line in function`` lines."""
    return [f"{fs.filename}:{fs.lineno} in {fs.name}" for fs in
            traceback.extract_stack(frame, limit=limit)]
