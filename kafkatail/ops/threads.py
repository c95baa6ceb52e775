"""Know every thread: OS-visible names, and the registry of what each thread is for.

Linux keeps 15 bytes of a thread's name (``/proc/PID/task/TID/comm``); Python 3.11 never sets
it, so every Python thread would show the interpreter's name in ``top -H``. ``set_native_name``
and ``rename`` set it. ``REGISTRY`` records each thread's role, owner and tail.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
import time
import traceback
import weakref
from dataclasses import dataclass, field
from typing import Any

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


def set_native_name(name: str) -> None:
    """Set the calling thread's OS name (no-op off Linux, and under gevent: it would rename
    the one OS thread every greenlet shares)."""
    if not green():
        set_os_thread_name(name)


def set_os_thread_name(name: str) -> None:
    """Set the calling OS thread's name, greenlets or not: for real threads under gevent."""
    if _libc is not None:
        _libc.prctl(_PR_SET_NAME, ctypes.c_char_p(native_name(name)), 0, 0, 0)


def rename(thread: threading.Thread, name: str) -> None:
    """Name another, already running thread: its Python name and, through /proc, its OS name."""
    thread.name = name
    if thread.native_id is None or green():
        return
    try:
        with open(f"/proc/self/task/{thread.native_id}/comm", "wb") as fh:
            fh.write(native_name(name))
    except OSError:
        pass


def name_pool_thread(thread: threading.Thread | None = None) -> None:
    """A ThreadPoolExecutor thread (gunicorn gthread's request pool) as ``kt-http-N``, OS name
    too; the executor's default leaves the interpreter's name on every one."""
    thread = thread or threading.current_thread()
    if thread.name.startswith("ThreadPoolExecutor-"):
        rename(thread, "kt-http-" + thread.name.rpartition("_")[2])


ROLES = ("consumer", "kafka-io", "websocket", "reaper", "server", "unknown")

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


class ThreadRegistry:
    """The one place that says what each thread is: the reaper, /debug/threads, /metrics and
    the test guard all ask it. Entries die with their threads (weak keys)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._info: "weakref.WeakKeyDictionary[threading.Thread, ThreadInfo]" = (
            weakref.WeakKeyDictionary())

    def register(self, thread: threading.Thread, role: str, **info: Any) -> None:
        with self._lock:
            self._info[thread] = ThreadInfo(role, **info)

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
